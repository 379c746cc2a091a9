"""Small helpers every split_infer node shares: parameter descriptors, QoS, metrics,
diagnostics, topic names, counters. Nothing here knows about models or codecs."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import Float64, Float64MultiArray, MultiArrayDimension

from split_infer.adaptation.estimator import RECEIPT_COLUMNS, RECEIPT_LABEL

__all__ = [
    "CAMERA_QOS",
    "DIAGNOSTICS_QOS",
    "DIAGNOSTICS_TOPIC",
    "FEATURE_QOS",
    "RECEIPTS_QOS",
    "RECEIPT_FIELDS",
    "RECEIPT_LABEL",
    "RESULT_QOS",
    "MetricPublishers",
    "NodeConfigError",
    "ReasonCounts",
    "declare_bool",
    "declare_float",
    "declare_int",
    "declare_str",
    "declare_str_array",
    "diagnostic_status",
    "guarded_timer",
    "join_topic",
    "make_receipt",
    "parse_receipts",
    "publish_diagnostics",
    "rejected",
    "run_node",
]

#: Camera input: sensor-data QoS, keep only the newest frame (stale frames are worthless).
CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)

#: Feature frames: reliable with a short queue. Frames are small (well under 64 KB) and the
#: edge's backpressure keeps at most a frame or two in flight, so reliability costs no
#: staleness, while best effort lost most large samples in DESIGN.md's measurement.
FEATURE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=4)

#: Results (and the cloud's receipts publisher): reliable, a few frames deep. A lost result is
#: a lost frame.
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)

#: Receipt *readers* (the edge's backpressure, the bandwidth monitor): best effort, which
#: matches the reliable publisher. A reliable reader answers the publisher's heartbeats with an
#: ACKNACK on the uplink, about one per receipt: measured on the testbed at 100 kbit/s, best
#: effort delivered 5-8 % more frames. A lost receipt only widens one dispersion gap (the
#: estimate errs low, never high) and leaves its frame in flight until ``ack_timeout``.
RECEIPTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                          reliability=ReliabilityPolicy.BEST_EFFORT)

#: ``/diagnostics`` is absolute: diagnostic aggregators listen there whatever the namespace.
DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)


#: Columns of a receipt row, in order. The cloud publishes one row per received frame on
#: ``<ns>/receipts`` (``std_msgs/Float64MultiArray``, ``layout.dim[0].label`` = RECEIPT_LABEL);
#: the edge's backpressure and the bandwidth monitor consume them. Stamps are seconds of the
#: ROS clock: ``send_stamp_s`` is the wire frame's stamp (edge clock, just before packing),
#: ``receive_stamp_s`` the cloud's clock at callback entry; ``cloud_ms`` is decode + tail.
#: One definition of the columns, in the ROS-free estimator that consumes them.
RECEIPT_FIELDS: tuple[str, ...] = RECEIPT_COLUMNS


def make_receipt(values: Iterable[float]) -> Float64MultiArray:
    """One receipt row (the values of :data:`RECEIPT_FIELDS`, in order) as a message."""
    row = [float(v) for v in values]
    if len(row) != len(RECEIPT_FIELDS):
        raise ValueError(f"a receipt has {len(RECEIPT_FIELDS)} values, got {len(row)}")
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=RECEIPT_LABEL, size=len(row), stride=len(row))]
    msg.data = row
    return msg


def parse_receipts(msg: Float64MultiArray) -> list[dict[str, float]]:
    """The rows of a receipt message as dicts; ValueError if it is not a receipt.

    Accepts several rows in one message (``len(data)`` a multiple of the row length) so a
    batching publisher stays compatible.
    """
    dims = msg.layout.dim
    if not dims or dims[0].label != RECEIPT_LABEL:
        raise ValueError(f"layout.dim[0].label must be {RECEIPT_LABEL!r}")
    data = list(msg.data)
    width = len(RECEIPT_FIELDS)
    if not data or len(data) % width:
        raise ValueError(f"{len(data)} values is not a whole number of {width}-value rows")
    return [dict(zip(RECEIPT_FIELDS, data[i:i + width])) for i in range(0, len(data), width)]


class NodeConfigError(ValueError):
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
    """One ``std_msgs/Float64`` topic per metric under ``metrics/`` (rqt_plot-friendly)."""

    def __init__(self, node: Node, names: Iterable[str], prefix: str = "metrics") -> None:
        self._publishers = {name: node.create_publisher(Float64, f"{prefix}/{name}", 10)
                            for name in names}

    def publish(self, **values: float) -> None:
        for name, value in values.items():
            self._publishers[name].publish(Float64(data=float(value)))


class ReasonCounts:
    """Thread-safe event counts by reason (drops, rejects), for diagnostics.

    Callbacks on different executor threads add to the same counts, so every access holds a
    lock; :meth:`snapshot` returns a copy the diagnostics timer can format at leisure.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._counts[reason] += count

    def __getitem__(self, reason: str) -> int:
        with self._lock:
            return self._counts[reason]

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


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


def publish_diagnostics(node: Node, publisher, statuses: list[DiagnosticStatus]) -> None:
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(msg)


def run_node(node_class: type[Node], name: str, args: list[str] | None = None,
             multithreaded: bool = False) -> int:
    """The ``main`` of every split_infer node: init, spin until Ctrl-C or shutdown, clean up.

    A configuration problem found while constructing the node (a bad bundle or bag path, an
    out-of-range or mistyped parameter: all ``ValueError``s; or the middleware refusing it,
    e.g. SROS2 without security plugins) is logged as fatal and gives exit status 2 instead of
    a traceback.
    """
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.exceptions import (
        InvalidParameterTypeException,
        InvalidParameterValueException,
    )
    from rclpy.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )

    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        executor = MultiThreadedExecutor() if multithreaded else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
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
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
