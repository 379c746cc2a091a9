"""Small helpers every split_infer node shares: parameter descriptors, metrics and diagnostics
publishing, topic names, ``main``. Nothing here knows about models or codecs; the messages and
QoS profiles themselves are in :mod:`split_infer.ros.messages`."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node
from std_msgs.msg import Float64

from split_infer.errors import UserError

__all__ = [
    "EXECUTOR_ENV",
    "ExecutorPerNode",
    "MetricPublishers",
    "NodeConfigError",
    "declare_bool",
    "declare_float",
    "declare_int",
    "declare_str",
    "declare_str_array",
    "diagnostic_status",
    "executor_kind",
    "freeze_heap",
    "guarded_timer",
    "join_topic",
    "make_executor",
    "node_fqn",
    "publish_diagnostics",
    "rejected",
    "run_node",
    "shutting_down",
    "tune_allocator",
    "until_signalled",
]

class NodeConfigError(UserError, ValueError):
    """A node cannot start with the parameters it was given (the message says which and why).

    ``main`` catches it, logs it as fatal and exits non-zero instead of printing a traceback.
    """


def rejected(reason: str) -> SetParametersResult:
    """A parameter-callback result that refuses the change with ``reason``."""
    return SetParametersResult(successful=False, reason=reason)


def join_topic(namespace: str, name: str) -> str:
    """``name`` under ``namespace``: ``""`` keeps it relative to the node, ``"/"`` puts it at
    the root, ``"/r1"``/``"r1"`` prefix it (absolute or relative to the node's namespace)."""
    if namespace == "":
        return name
    stripped = namespace.rstrip("/")
    return f"{stripped}/{name}" if stripped else f"/{name}"


def node_fqn(node: Node, name: str) -> str:
    """The fully qualified name of node ``name``: absolute as it is, relative in ``node``'s
    namespace (how ``/parameter_events`` names the node that changed)."""
    if name.startswith("/"):
        return name
    namespace = node.get_namespace().rstrip("/")
    return f"{namespace}/{name}"


def _descriptor(name: str, description: str, read_only: bool = False,
                **ranges: object) -> ParameterDescriptor:
    return ParameterDescriptor(name=name, description=description, read_only=read_only,
                               **ranges)


def declare_float(node: Node, name: str, default: float, low: float, high: float,
                  description: str, read_only: bool = False) -> float:
    """Declare a double parameter with a range; returns its (possibly overridden) value."""
    rng = FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
    node.declare_parameter(name, float(default), _descriptor(
        name, description, read_only, floating_point_range=[rng]))
    return float(node.get_parameter(name).value)


def declare_int(node: Node, name: str, default: int, low: int, high: int,
                description: str, read_only: bool = False) -> int:
    rng = IntegerRange(from_value=int(low), to_value=int(high), step=1)
    node.declare_parameter(name, int(default), _descriptor(
        name, description, read_only, integer_range=[rng]))
    return int(node.get_parameter(name).value)


def declare_str(node: Node, name: str, default: str, description: str,
                choices: Iterable[str] | None = None, read_only: bool = False) -> str:
    constraints = f"one of: {', '.join(choices)}" if choices else ""
    descriptor = _descriptor(name, description, read_only)
    descriptor.additional_constraints = constraints
    node.declare_parameter(name, str(default), descriptor)
    return str(node.get_parameter(name).value)


def declare_str_array(node: Node, name: str, default: list[str], description: str,
                      read_only: bool = False) -> list[str]:
    """Declare a string-array parameter. ``default`` must not be empty: ROS cannot type an
    empty list (neither rclpy nor the YAML parameter parser), so use a sentinel entry."""
    if not default:
        raise ValueError(f"{name}: an empty default cannot be typed; use a sentinel entry")
    descriptor = _descriptor(name, description, read_only)
    descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
    node.declare_parameter(name, [str(v) for v in default], descriptor)
    return [str(v) for v in node.get_parameter(name).value]


def declare_bool(node: Node, name: str, default: bool, description: str,
                 read_only: bool = False) -> bool:
    node.declare_parameter(name, bool(default), _descriptor(name, description, read_only))
    return bool(node.get_parameter(name).value)


class MetricPublishers:
    """One ``std_msgs/Float64`` topic per metric under ``metrics/`` (rqt_plot-friendly).

    Per-frame values are :meth:`add`-ed and published as means once per report period
    (:meth:`flush`): a publish per metric per frame cost more CPU than some of the work it
    measured, and rqt_plot draws a mean per second just as well.
    """

    def __init__(self, node: Node, names: Iterable[str], prefix: str = "metrics") -> None:
        self._publishers = {name: node.create_publisher(Float64, f"{prefix}/{name}", 10)
                            for name in names}
        self._lock = threading.Lock()
        self._sums: dict[str, list[float]] = {}  # name → [sum, count] since the last flush

    def publish(self, **values: float | None) -> None:
        """Publish each value now; None (unknown this period) publishes nothing."""
        for name, value in values.items():
            if value is not None:
                self._publishers[name].publish(Float64(data=float(value)))

    def add(self, **values: float) -> None:
        """Accumulate per-frame values for the next :meth:`flush`."""
        with self._lock:
            for name, value in values.items():
                entry = self._sums.setdefault(name, [0.0, 0])
                entry[0] += float(value)
                entry[1] += 1

    def flush(self, **values: float | None) -> None:
        """Publish ``values``, then the mean of every metric added since the last flush (a
        subscriber combining the two reads the period's values first)."""
        with self._lock:
            sums, self._sums = self._sums, {}
        self.publish(**values, **{name: total / count for name, (total, count) in sums.items()})


def diagnostic_status(node: Node, name: str, level: bytes, message: str,
                      values: Mapping[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level, name=f"{node.get_fully_qualified_name()}: {name}", message=message,
        hardware_id=node.get_fully_qualified_name(),
        values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])


def guarded_timer(node: Node, report, what: str = "diagnostics", throttle_s: float = 5.0):
    """A timer callback running ``report()`` that logs (throttled) instead of raising: a
    periodic report must never take the executor down."""
    def callback() -> None:
        try:
            report()
        except Exception as exc:
            node.get_logger().error(f"{what} failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=throttle_s)
    return callback


def shutting_down(node: Node) -> bool:
    """Whether ``node``'s context is shutting down (Ctrl-C, launch stopping it): publishers
    and timers may already be invalid, and a callback still running is not an error."""
    try:
        return not node.context.ok()
    except Exception:  # the context itself is gone
        return True


def publish_diagnostics(node: Node, publisher, statuses: list[DiagnosticStatus]) -> None:
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(msg)


#: Environment variable choosing the executor of every split_infer process: ``events``
#: (default where rclpy has it) or ``single``.
EXECUTOR_ENV = "SPLIT_INFER_EXECUTOR"


def executor_kind(node: Node | type[Node] | None = None) -> str:
    """``events`` (rclpy's EventsExecutor) unless :data:`EXECUTOR_ENV` says ``single``, this
    rclpy has none, or ``node`` (a node or its class) sets ``EXECUTOR_KIND = "single"``: a node
    whose callbacks need ``MessageInfo`` (the probe echo's reception stamps), or one whose
    frames may take longer than they arrive (the edge node). The events executor queues one
    event per message and runs them in order, the parameter service's requests behind them:
    when each camera frame takes longer than the camera interval (a weak robot classifying
    edge-only), that queue only grows, a request waits behind it until the scheduler gives up,
    and the robot stayed edge-only on a 4-Mbit/s link. A wait-set executor takes the newest
    frame and every pending request on each pass."""
    if getattr(node, "EXECUTOR_KIND", None) == "single":
        return "single"
    if os.environ.get(EXECUTOR_ENV, "events") == "single":
        return "single"
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
    except ImportError:
        return "single"
    return "events"


def make_executor(context=None, node: Node | type[Node] | None = None):
    """The executor one split_infer node spins on (one per node, each polled with
    ``spin_once``).

    rclpy's EventsExecutor waits on events instead of rebuilding a wait set of every entity
    on each pass: a relay that only forwards messages cost 0.59 ms of CPU per message
    against 0.97 ms on the SingleThreadedExecutor (bench/results/cpu). Two limits of its
    rclpy implementation shape how split_infer uses it: ``spin()`` busy-looped without
    running anything, while ``spin_once`` works, in any thread; and a subscription callback
    that takes ``MessageInfo`` fails (``SystemError``), so no split_infer callback asks for it
    under this executor (:func:`executor_kind`; a node that needs it says so and gets the
    single-threaded one).
    """
    if executor_kind(node) == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor(context=context)


class ExecutorPerNode:
    """Spins every node on an executor of its own (:func:`make_executor`), each in its own
    thread:
    how split_infer runs several nodes in one process (the demo, the testbed's sides, tests).

    Why not one ``MultiThreadedExecutor``: rclpy's Python executors rebuild the wait set of
    every entity they hold on each pass, and the multi-threaded one re-submits every waiting
    callback to its thread pool on each pass too. With a camera stream that bookkeeping, not
    the frames, took the interpreter: the demo graph delivered 3.9 of 30 fps at 383 ms p50 on
    a 20 Mbit/s link. One executor per node waits on a small wait set with the GIL released;
    the same graph then delivers the camera rate (measured: ``bench/results/cpu``). Within a
    node, callbacks run one at a time, which is also what a robot's single-node process does.
    """

    def __init__(self, context=None, poll_s: float = 0.1) -> None:
        self._context = context
        self._poll_s = poll_s
        self._spinning: dict[Node, tuple[object, threading.Thread, threading.Event]] = {}

    def add_node(self, node: Node) -> None:
        executor = make_executor(self._context, node)
        executor.add_node(node)
        stop = threading.Event()
        thread = threading.Thread(target=self._spin, args=(node, executor, stop), daemon=True,
                                  name=f"spin:{node.get_name()}")
        self._spinning[node] = (executor, thread, stop)
        thread.start()

    def _spin(self, node: Node, executor, stop: threading.Event) -> None:
        from rclpy.executors import ExternalShutdownException

        while not stop.is_set():
            try:
                executor.spin_once(timeout_sec=self._poll_s)
            except ExternalShutdownException:
                return
            except Exception as exc:  # one callback's failure must not stop its node
                if stop.is_set() or shutting_down(node):
                    return
                node.get_logger().error(f"callback failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)

    def remove_node(self, node: Node, timeout_sec: float = 5.0) -> None:
        """Stop spinning ``node`` (it can be destroyed afterwards)."""
        executor, thread, stop = self._spinning.pop(node)
        stop.set()
        thread.join(timeout=timeout_sec)
        executor.shutdown(timeout_sec=timeout_sec)

    def shutdown(self, timeout_sec: float = 5.0) -> None:
        """Stop spinning, let callbacks in flight finish, then shut the executors down (the
        nodes stay: destroy them afterwards)."""
        for _, _, stop in self._spinning.values():
            stop.set()
        for node in list(self._spinning):
            self.remove_node(node, timeout_sec)


#: glibc ``mallopt`` parameters and the values set by :func:`tune_allocator`.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 64 << 20
_TRIM_THRESHOLD_BYTES = 128 << 20


def tune_allocator() -> bool:
    """Keep camera-size buffers in the heap instead of fresh ``mmap``s (glibc only).

    Every camera message allocates a few buffers of its size (DDS history, the C message,
    the Python one) and frees them a frame later. Above glibc's mmap threshold (128 KiB by
    default, adapting up to 32 MiB) each becomes a new mapping, and every page of it a page
    fault on first touch: measured with a 640×480 camera this was about half of the node's
    CPU beyond the model (``bench/results/cpu``). Raising the thresholds makes the allocator
    reuse those blocks. Returns False where it cannot (not glibc); never raises.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


def freeze_heap() -> None:
    """Take every object the process holds now out of the cyclic garbage collector's scans
    (:func:`gc.freeze`, after one last collection): call it once the nodes are built.

    What a node holds from then on (the imported libraries, every preloaded configuration's
    models and codecs) lives as long as the process, yet each full collection, which the
    allocations of every frame set off again and again, walks all of it. On the testbed's
    quarter-core robot with all 23 configurations preloaded this cost 14–18 ms of CPU per
    frame where 11–12 sufficed (``bench/README.md``, "The garbage collector on a weak
    robot"). Frozen objects are still freed when their last reference goes; only reference
    cycles among them would stay.
    """
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def until_signalled(args: list[str] | None = None, context=None) -> Iterator[threading.Event]:
    """rclpy initialised for a process that runs until stopped: SIGINT (Ctrl-C) and SIGTERM
    (launch, systemd, kill) set the yielded event; the caller spins until it is set.

    rclpy's own handlers shut the context down under whatever the main thread is doing and
    raise KeyboardInterrupt there (an executor half constructed, a publisher mid-call), which
    turned a normal stop into tracebacks and error lines; a stop is a normal end here.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield stop
    finally:
        rclpy.try_shutdown(context=context)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_node(node_class: type[Node], name: str, args: list[str] | None = None) -> int:
    """The ``main`` of every split_infer node: init, spin until Ctrl-C or SIGTERM, clean up.

    A configuration problem found while constructing the node (a bad bundle or bag path, an
    out-of-range or mistyped parameter: all ``ValueError``s; or the middleware refusing it,
    e.g. SROS2 without security plugins) is logged as fatal and gives exit status 2 instead of
    a traceback. A stop by signal is status 0.
    """
    tune_allocator()
    with until_signalled(args) as stop:
        return _run(node_class, name, stop)


def _run(node_class: type[Node], name: str, stop: threading.Event) -> int:
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.exceptions import (
        InvalidParameterTypeException,
        InvalidParameterValueException,
    )
    from rclpy.executors import ExternalShutdownException

    node = executor = None
    try:
        node = node_class()
        freeze_heap()
        # One node per process, one executor (see ExecutorPerNode for why not rclpy's
        # multi-threaded one), woken twice a second to notice a stop.
        executor = make_executor(node=node)
        executor.add_node(node)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.5)
    except (ValueError, InvalidParameterTypeException, InvalidParameterValueException) as exc:
        if node is not None:  # a runtime failure, not a configuration problem
            raise
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        return 2
    except RCLError as exc:
        if node is not None:
            raise
        hint = ""
        if os.environ.get("ROS_SECURITY_ENABLE", "").lower() == "true":
            hint = (" (ROS_SECURITY_ENABLE=true: SROS2 needs a DDS built with its security "
                    "plugins and an enclave for this node; see the README's SROS2 section)")
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}{hint}")
        return 2
    except ExternalShutdownException:  # the context was shut down from outside
        pass
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
    return 0
