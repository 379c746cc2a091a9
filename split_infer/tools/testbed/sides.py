"""One process of ``split-infer testbed``: one node, as on a robot or a server.

    python -m split_infer.tools.testbed.sides CONFIG.json

``CONFIG["role"]`` says which node the process runs (the testbed starts it inside its
network namespace and its cgroup):

* ``camera`` (harness, edge namespace) — the bag player, held by its gate until ``GO``;
* ``edge`` (product, edge namespace) — the edge node; for ``cloud_only`` the JPEG sender (the
  camera frame), for ``cloud_only_crop`` the JPEG sender of the model's input crop, for
  ``edge_only`` the whole model (:mod:`.references`);
* ``monitor`` (product, edge namespace; split strategies) — the bandwidth monitor;
* ``scheduler`` (product, edge namespace; ``adaptive`` only) — the scheduler;
* ``prober`` (product, edge namespace; split strategies with ``probing``) — the link prober;
* ``recorder`` (harness, edge namespace) — records labels, sent frames, estimates, the active
  configuration, and the results and receipts coming back from the cloud;
* ``cloud`` (product, cloud namespace) — only the serving node (the cloud node; ``cloud_only``
  and ``cloud_only_crop``: the whole model on JPEG frames; ``edge_only``: nothing), so that a
  fault test can kill it;
* ``probe_echo`` (product, cloud namespace; with ``prober``) — the probe echo.

Every process spins its one node on a ``SingleThreadedExecutor`` of its own
(:class:`~split_infer.ros.common.ExecutorPerNode`), and every model runs with one ONNX
Runtime intra-op thread (:data:`MODEL_THREADS`), whatever the strategy. A product process
times its frame callbacks with the thread's CPU clock (:class:`FrameCost`): the per-frame
compute the testbed's physical bound is made of.

Protocol with the testbed (stdout/stdin, one line each):

* the process prints ``READY {"pub": [...], "sub": [...]}`` (its node's topics) once its node
  is up;
* ``SYNC {"pub": {topic: n}, "sub": {topic: n}}`` → ``SYNCED`` once each of its publishers
  has matched n readers and each subscription n writers (and its service clients see their
  servers), or ``ERROR ...`` naming what is missing after ``timeout_s``. The testbed derives n
  from every process's ``READY`` line and shapes the link only after all answered, so no
  discovery crosses the shaped link;
* ``GO`` opens the camera's gate;
* SIGTERM, SIGINT or the end of stdin (the testbed is gone) stop the process; it writes its
  records (wall-clock times, ``time.time()``, shared by both namespaces) to ``out`` as JSON.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterEvent
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_parameter_events
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64, Float64MultiArray

from split_infer.ros.common import ExecutorPerNode, freeze_heap, until_signalled
from split_infer.ros.messages import (
    FEATURE_QOS,
    RECEIPTS_QOS,
    edge_configuration_change,
    parse_estimate,
    parse_receipts,
)
from split_infer.tools.bag.storage import header_stamp_ns
from split_infer.wire import decode_frame

__all__ = [
    "CLOUD_ONLY_STRATEGIES",
    "CLOUD_ROLES",
    "CONTROL_ROLES",
    "CONTROL_SIDES",
    "MODEL_THREADS",
    "REFERENCE_STRATEGIES",
    "ROLE_GROUP",
    "EdgeRecorder",
    "FrameCost",
    "cloud_roles",
    "edge_roles",
    "main",
    "role_group",
    "role_side",
    "run_role",
]

ROBOT = "robot"
_QOS = QoSProfile(depth=200)
_RESULTS_QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)
#: What cloud-only sends: the camera frame as ``image_transport/compressed`` does, or the
#: model's input (the bundle's resize and centre crop) — both JPEG.
CLOUD_ONLY_STRATEGIES = ("cloud_only", "cloud_only_crop")
REFERENCE_STRATEGIES = (*CLOUD_ONLY_STRATEGIES, "edge_only")
#: ONNX Runtime intra-op threads of every model node, whatever the strategy: the robot's
#: budget is a fraction of one core, and one thread keeps the frame work on the thread that
#: :class:`FrameCost` times.
MODEL_THREADS = 1
#: The cgroup (and CPU report side) of each role: the robot's product processes, the server's,
#: and the harness (camera and recorder), which must not eat the robot's CPU.
ROLE_GROUP = {"edge": "edge", "monitor": "edge", "scheduler": "edge", "prober": "edge",
              "cloud": "cloud", "probe_echo": "cloud", "camera": "harness",
              "recorder": "harness"}
#: Roles that run in the cloud namespace.
CLOUD_ROLES = ("cloud", "probe_echo")
#: The control plane: nodes that need neither the camera nor the link's sending end, so a
#: deployment may run them on the server (``control_side="server"``), where the CPU is.
CONTROL_ROLES = ("monitor", "scheduler")
#: Where the control plane may run: beside the edge node, or beside the cloud node.
CONTROL_SIDES = ("robot", "server")


def role_side(role: str, control_side: str = "robot") -> str:
    """The side (``"edge"`` or ``"cloud"``: namespace, and cgroup for the product's roles) of
    ``role`` when the control plane runs on ``control_side``.

    On the server, the monitor reads the receipts and probe echoes where the cloud writes them
    and the scheduler decides there; the estimate and the parameter requests cross back over
    the unshaped direction, and only the edge's 1-Hz metrics (and its parameter events) cross
    the shaped link. The robot keeps the edge node and the prober, which must send."""
    if control_side not in CONTROL_SIDES:
        raise ValueError(f"control side {control_side!r}: use one of {CONTROL_SIDES}")
    if role in CLOUD_ROLES or (control_side == "server" and role in CONTROL_ROLES):
        return "cloud"
    return "edge"


def role_group(role: str, control_side: str = "robot") -> str:
    """The cgroup (and CPU report side) of ``role``: :data:`ROLE_GROUP`, with the control
    plane on the server's CPUs when it runs there (:func:`role_side`)."""
    return "cloud" if role in CONTROL_ROLES and role_side(role, control_side) == "cloud" \
        else ROLE_GROUP[role]


def edge_roles(strategy: str, probing: bool = False) -> list[str]:
    """The edge namespace's processes for ``strategy``, camera first (it stops first)."""
    roles = ["camera", "edge"]
    if strategy not in REFERENCE_STRATEGIES:
        # Every split strategy has the monitor: the edge's backpressure paces by its estimate,
        # and a fixed configuration without it would be limited to max_in_flight frames per
        # round trip. Only the adaptive one has a scheduler. With probing, every split
        # strategy probes (the same estimate paces them all).
        roles.append("monitor")
        if probing:
            roles.append("prober")
    if strategy == "adaptive":
        roles.append("scheduler")
    return [*roles, "recorder"]


def cloud_roles(strategy: str, probing: bool = False) -> list[str]:
    """The cloud namespace's processes for ``strategy``."""
    return ["cloud", "probe_echo"] if probing and strategy not in REFERENCE_STRATEGIES \
        else ["cloud"]


class EdgeRecorder(Node):
    """Everything the testbed measures, recorded on the robot: labels, the frames sent (with
    the configuration their wire header names), estimates, the active configuration, and the
    results and receipts coming back from the cloud (over the unshaped direction). Recording
    on the edge keeps the cloud process a plain serving node that a fault test can kill.

    Rows are (wall time, ...) per topic, only appended to, read with :meth:`snapshot`."""

    def __init__(self, features_topic: str = "features", **kwargs) -> None:
        super().__init__("testbed_edge_recorder", namespace=ROBOT, **kwargs)
        self.rows: dict[str, list] = {}
        self._lock = threading.Lock()
        self._features_topic = features_topic
        self.create_subscription(DiagnosticArray, "labels", self._on_label, _QOS)
        self.create_subscription(CompressedImage, features_topic, self._on_features,
                                 FEATURE_QOS)
        # Best effort, like the product's receipt readers: a reliable reader here would send
        # the cloud an ACKNACK per result across the uplink it measures.
        self.results = self.create_subscription(DiagnosticArray, "results", self._on_result,
                                                _RESULTS_QOS)
        self.create_subscription(Float64MultiArray, "receipts", self._on_receipts,
                                 RECEIPTS_QOS)
        self.create_subscription(Float64MultiArray, "bandwidth_estimate", self._on_estimate,
                                 _QOS)
        self.create_subscription(Float64, "metrics/active_split", lambda m: self._add(
            "active_split", [time.time(), float(m.data)]), _QOS)
        self.create_subscription(Float64, "metrics/active_ratio", lambda m: self._add(
            "active_ratio", [time.time(), float(m.data)]), _QOS)
        # How the robot compares with its plan: the edge's CPU time per frame and the factor
        # the scheduler plans unrun configurations with.
        self.create_subscription(Float64, "metrics/edge_cpu_ms", lambda m: self._add(
            "edge_cpu_ms", [time.time(), float(m.data)]), _QOS)
        self.create_subscription(Float64, "metrics/robot_factor", lambda m: self._add(
            "robot_factor", [time.time(), float(m.data)]), _QOS)
        # The moment the edge node takes a new configuration (its parameter event): the
        # start of a switch, for the switch cost (frames until the first frame in it).
        self._edge_config: dict[str, float | str] = {}
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_parameters,
                                 qos_profile_parameter_events)

    def _add(self, key: str, row: list) -> None:
        with self._lock:
            self.rows.setdefault(key, []).append(row)

    def snapshot(self) -> dict[str, list]:
        """A copy of every row recorded so far, by topic key."""
        with self._lock:
            return {k: list(v) for k, v in self.rows.items()}

    def _on_label(self, msg: DiagnosticArray) -> None:
        values = {kv.key: kv.value for status in msg.status for kv in status.values}
        if "class_id" in values:
            self._add("labels", [time.time(), header_stamp_ns(msg.header),
                                 int(values["class_id"])])

    def _on_features(self, msg: CompressedImage) -> None:
        split = ratio = None
        if self._features_topic == "features":
            frame = decode_frame(msg.data)
            split, ratio = frame.split_point, frame.ratio
        self._add("sent", [time.time(), header_stamp_ns(msg.header), len(msg.data), split,
                           ratio])

    def _on_result(self, msg: DiagnosticArray) -> None:
        top = next((s for s in msg.status if s.message == "rank 1"), None)
        if top is not None:
            values = {kv.key: kv.value for kv in top.values}
            self._add("results", [time.time(), header_stamp_ns(msg.header),
                                  int(values["class_id"]), float(values["split_point"]),
                                  float(values["ratio"])])

    def _on_estimate(self, msg: Float64MultiArray) -> None:
        try:
            estimate = parse_estimate(msg)
        except ValueError:
            return  # a malformed estimate is not recorded
        now = time.time()
        self._add("estimates", [now, estimate.bandwidth_bps])
        self._add("lower_bound", [now, estimate.lower_bound])

    def _on_parameters(self, event: ParameterEvent) -> None:
        change = edge_configuration_change(event, f"/{ROBOT}/edge_node", self._edge_config)
        if change is not None:
            self._add("edge_config", [time.time(), *change])

    def _on_receipts(self, msg: Float64MultiArray) -> None:
        for row in parse_receipts(msg):
            self._add("receipts", [time.time(), row["bytes"], row["receive_stamp_s"]])


class FrameCost:
    """CPU time of a node's frame callbacks, on the CPU clock of the thread running them.

    It wraps the callbacks of ``node``'s subscriptions to ``topics``. A single-threaded
    executor runs them one at a time on one thread, and every model runs on that thread too
    (:data:`MODEL_THREADS`), so the thread's clock holds exactly the frames' work (conversion,
    preprocessing, model, codec, publishing), and neither the other threads' work (DDS) nor
    the executor's own (waiting, taking and deserialising the message before the callback).
    Unlike wall time it does not grow when a CPU budget throttles the process."""

    def __init__(self, node: Node, topics: tuple[str, ...]) -> None:
        self.cpu_ns = 0
        self.calls = 0
        self.topics = [s.topic_name for s in node.subscriptions if s.topic_name in topics]
        for subscription in node.subscriptions:
            if subscription.topic_name in topics:
                subscription.callback = self._timed(subscription.callback)

    def _timed(self, callback: Callable) -> Callable:
        def timed(*args):
            start = time.thread_time_ns()
            try:
                return callback(*args)
            finally:
                self.cpu_ns += time.thread_time_ns() - start
                self.calls += 1

        # rclpy passes the message info only to callbacks whose signature takes two
        # arguments, so the wrapper keeps the wrapped callback's arity.
        try:
            inspect.signature(callback).bind(object())
        except TypeError:
            return lambda msg, info: timed(msg, info)
        return lambda msg: timed(msg)

    def record(self, frames: int) -> dict[str, object]:
        """``frames`` (those that did the work: sent, classified), the callbacks' CPU
        seconds and calls, and the CPU ms per frame."""
        return {"topics": self.topics, "frames": frames, "callbacks": self.calls,
                "cpu_s": self.cpu_ns / 1e9,
                "ms_per_frame": self.cpu_ns / 1e6 / frames if frames else None}


# -- the nodes of each role -------------------------------------------------------------------


def _camera(config: dict, context, gate: threading.Event) -> Node:
    from split_infer.tools.bag.player import BagPlayer

    # Created before READY, so its discovery crosses the link before it is shaped; it plays
    # once GO opens the gate.
    return BagPlayer(gate=gate, context=context, parameter_overrides=[
        Parameter("bag", value=config["bag"]), Parameter("loop", value=True),
        Parameter("rate", value=float(config.get("playback_rate", 1.0))),
        # A compressed camera bag plays as a camera driver publishes: decoded frames.
        Parameter("decompress", value=True)],
        cli_args=["--ros-args", "-r", f"/camera/image_raw:=/{ROBOT}/image",
                  "-r", f"/camera/labels:=/{ROBOT}/labels"])


def _edge(config: dict, context, gate: threading.Event) -> Node:
    from split_infer.tools.testbed.references import FullModelNode, JpegSender

    strategy = config["strategy"]
    if strategy in CLOUD_ONLY_STRATEGIES:
        crop = None
        if strategy == "cloud_only_crop":
            from split_infer.bundle import Bundle
            from split_infer.data import Preprocessing

            crop = Preprocessing.from_dict(Bundle.load(config["bundle"]).manifest["preprocessing"])
        return JpegSender(int(config.get("jpeg_quality", 90)), crop=crop, namespace=ROBOT,
                          context=context)
    if strategy == "edge_only":
        return FullModelNode(config["bundle"], compressed=False, threads=MODEL_THREADS,
                             namespace=ROBOT, context=context)
    from split_infer.ros.edge_node import EdgeNode

    params = [Parameter("bundle", value=config["bundle"]),
              Parameter("fallback", value=config.get("fallback", "drop")),
              Parameter("companion", value=config.get("companion", "")),
              Parameter("companion_share", value=float(config.get("companion_share", 0.0))),
              Parameter("threads", value=MODEL_THREADS),
              Parameter("auth_key_file", value=config.get("auth_key_file", ""))]
    adaptive = strategy == "adaptive"
    first = config.get("initial", "") if adaptive else strategy
    if first:
        split, _, ratio = first.partition(":")
        params += [Parameter("split_point", value=int(split)),
                   Parameter("ratio", value=float(ratio))]
    if not adaptive:
        params.append(Parameter("preload", value=[strategy, *(
            [config["companion"]] if config.get("companion") else [])]))
    return EdgeNode(namespace=ROBOT, parameter_overrides=params, context=context)


def _monitor(config: dict, context, gate: threading.Event) -> Node:
    from split_infer.ros.bandwidth_monitor import BandwidthMonitor

    return BandwidthMonitor(namespace=ROBOT, context=context)


def _scheduler(config: dict, context, gate: threading.Event) -> Node:
    from split_infer.ros.scheduler import Scheduler

    return Scheduler(namespace=ROBOT, context=context, parameter_overrides=[
        Parameter("bundle", value=config["bundle"]),
        Parameter("objective", value=config.get("objective", "effective_accuracy")),
        Parameter("frame_rate", value=float(config.get("frame_rate", 30.0))),
        # The robot's own times (split-infer plan --edge-cpu) and edge-only among the choices:
        # a weak robot's trade of compute against bytes.
        Parameter("edge_timing", value=config.get("edge_timing", "")),
        Parameter("edge_only", value=bool(config.get("scheduler_edge_only", False))),
        Parameter("mixing", value=bool(config.get("scheduler_mixing", False)))])


def _prober(config: dict, context, gate: threading.Event) -> Node:
    from split_infer.ros.link_prober import LinkProber

    # Quiet until GO: trains over the unshaped link would measure the veth, not the trace,
    # and would keep the testbed's wait for a quiet link from ending.
    node = LinkProber(namespace=ROBOT, context=context,
                      parameter_overrides=[Parameter("enabled", value=False)])

    def enable() -> None:
        gate.wait()
        node.set_parameters([Parameter("enabled", value=True)])

    threading.Thread(target=enable, daemon=True, name="prober_gate").start()
    return node


def _probe_echo(config: dict, context, gate: threading.Event) -> Node:
    from split_infer.ros.probe_echo import ProbeEcho

    return ProbeEcho(namespace=ROBOT, context=context)


def _recorder(config: dict, context, gate: threading.Event) -> Node:
    topic = "image/compressed" if config["strategy"] in CLOUD_ONLY_STRATEGIES else "features"
    return EdgeRecorder(features_topic=topic, context=context)


def _cloud(config: dict, context, gate: threading.Event) -> Node | None:
    strategy = config["strategy"]
    if strategy == "edge_only":
        return None  # nothing crosses the link
    if strategy in CLOUD_ONLY_STRATEGIES:
        from split_infer.tools.testbed.references import FullModelNode

        return FullModelNode(config["bundle"], compressed=True, threads=MODEL_THREADS,
                             namespace=ROBOT, context=context)
    from split_infer.ros.cloud_node import CloudNode

    # Both namespaces share the host clock, so the cloud can refuse frames that arrive too
    # late to be of use (the testbed's definition of a stale result).
    return CloudNode(namespace=ROBOT, context=context, parameter_overrides=[
        Parameter("bundle", value=config["bundle"]),
        Parameter("threads", value=MODEL_THREADS),
        Parameter("max_frame_age", value=float(config.get("max_frame_age", 0.0))),
        Parameter("auth_key_file", value=config.get("auth_key_file", ""))])


_BUILDERS: dict[str, Callable[[dict, object, threading.Event], Node | None]] = {
    "camera": _camera, "edge": _edge, "monitor": _monitor, "scheduler": _scheduler,
    "recorder": _recorder, "cloud": _cloud, "prober": _prober, "probe_echo": _probe_echo}

#: The topics whose callbacks are a product process's per-frame work.
_FRAME_TOPICS = {"edge": (f"/{ROBOT}/image",),
                 "cloud": (f"/{ROBOT}/features", f"/{ROBOT}/image/compressed")}


def _frames_worked(node: Node) -> int:
    """Frames the node did its work on (not those it dropped before the work)."""
    from split_infer.ros.edge_node import EdgeNode
    from split_infer.tools.testbed.references import FullModelNode, JpegSender

    if isinstance(node, EdgeNode):  # sent, or classified by its fallback
        stats = node.stats()
        return int(stats["sent"]) + int(stats["edge_only"])
    if isinstance(node, JpegSender):
        return int(node.sent)
    if isinstance(node, FullModelNode):
        return int(node.frames)
    return sum(int(s["frames"]) for s in node.stats().values())  # the cloud node's streams


def _records(role: str, node: Node | None, cost: FrameCost | None) -> dict:
    times = os.times()
    records: dict = {"role": role, "pid": os.getpid(),
                     "process_cpu_s": times.user + times.system}
    if node is None:
        return records
    if isinstance(node, EdgeRecorder):
        records.update(node.snapshot())
    if cost is not None:
        records["compute"] = cost.record(_frames_worked(node))
    if role in ("edge", "cloud"):
        key = f"{role}_stats"
        if hasattr(node, "drops"):  # the references count their frames and drops
            records[key] = {"frames": _frames_worked(node), "drops": node.drops.snapshot()}
        elif role == "edge":
            records[key] = node.stats()
        else:
            records[key] = {k: {**v, "last_config": list(v["last_config"] or [])}
                            for k, v in node.stats().items()}
    if role == "camera":
        records["published"] = int(node.published)
    if role == "prober":
        records["probe_stats"] = node.stats()
    if role == "monitor":
        records["monitor_stats"] = node.stats()
    if role == "probe_echo":
        records["echo_stats"] = {"received": node.received, "trains": node.trains,
                                 "malformed": node.malformed}
    return records


# -- the protocol -----------------------------------------------------------------------------


def endpoints(node: Node | None) -> dict[str, list[str]]:
    """The topics ``node`` publishes and subscribes to (one entry per endpoint)."""
    if node is None:
        return {"pub": [], "sub": []}
    return {"pub": [p.topic_name for p in node.publishers],
            "sub": [s.topic_name for s in node.subscriptions]}


def wait_discovered(node: Node | None, expect: dict, stop: threading.Event,
                    timeout_s: float = 30.0) -> str | None:
    """Wait until every publisher of ``node`` on a topic of ``expect["pub"]`` has matched that
    many readers, every subscription that many writers, and every service client its server;
    None, or what is still missing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while node is not None and not stop.is_set():
        missing = []
        for publisher in node.publishers:
            want = expect.get("pub", {}).get(publisher.topic_name, 0)
            have = publisher.get_subscription_count()
            if have < want:
                missing.append(f"{publisher.topic_name} readers {have}/{want}")
        for subscription in node.subscriptions:
            want = expect.get("sub", {}).get(subscription.topic_name, 0)
            have = subscription.get_publisher_count()
            if have < want:
                missing.append(f"{subscription.topic_name} writers {have}/{want}")
        missing += [f"service {getattr(c, 'srv_name', '?')}" for c in node.clients
                    if not c.service_is_ready()]
        if not missing:
            return None
        if time.monotonic() > deadline:
            return f"{node.get_name()} did not discover {', '.join(missing)}"
        time.sleep(0.05)
    return None


def _follow_commands(stop: threading.Event, node: Node | None, gate: threading.Event) -> None:
    for line in sys.stdin:
        command = line.strip()
        if command.startswith("SYNC "):
            expect = json.loads(command[len("SYNC "):])
            problem = wait_discovered(node, expect, stop, float(expect.get("timeout_s", 30.0)))
            print("SYNCED" if problem is None else f"ERROR {problem}", flush=True)
        elif command == "GO":
            gate.set()
    stop.set()  # the testbed closed stdin (or died): nobody is left to stop this process


def _one_thread() -> None:
    """The same thread settings for every strategy's nodes: image conversion and JPEG coding
    on the calling thread (OpenCV's pool would run beside the callback, unseen by
    :class:`FrameCost`)."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def run_role(config: dict) -> int:
    """Run the node of ``config["role"]`` until SIGTERM/SIGINT or the end of stdin; write its
    records to ``config["out"]``."""
    role = config["role"]
    if role not in _BUILDERS:
        print(f"ERROR unknown role {role!r}; use one of {sorted(_BUILDERS)}", flush=True)
        return 2
    if role in _FRAME_TOPICS:
        _one_thread()
    context = rclpy.Context()
    gate = threading.Event()
    with until_signalled(context=context) as stop:
        node: Node | None = None
        cost: FrameCost | None = None
        executor = ExecutorPerNode(context)
        try:
            node = _BUILDERS[role](config, context, gate)
            freeze_heap()  # as run_node does
            if node is not None:
                if role in _FRAME_TOPICS:
                    cost = FrameCost(node, _FRAME_TOPICS[role])
                executor.add_node(node)
            print(f"READY {json.dumps(endpoints(node))}", flush=True)
            threading.Thread(target=_follow_commands, args=(stop, node, gate),
                             daemon=True).start()
            while not stop.wait(0.1):
                pass
            return 0
        finally:
            try:
                # Written before the executor stops: the testbed stops the camera first, so
                # nothing is in flight, and a failing shutdown cannot lose the records.
                Path(config["out"]).write_text(json.dumps(_records(role, node, cost)))
            finally:
                executor.shutdown(timeout_sec=5.0)
                if node is not None:
                    node.destroy_node()


def main(argv: list[str] | None = None) -> int:
    """``python -m split_infer.tools.testbed.sides CONFIG.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m split_infer.tools.testbed.sides CONFIG.json", file=sys.stderr)
        return 2
    return run_role(json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    raise SystemExit(main())
