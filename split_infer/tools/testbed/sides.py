"""One side of ``split-infer testbed``, run by the testbed inside its network namespace.

    python -m split_infer.tools.testbed.sides CONFIG.json

* ``"side": "edge"`` — bag player → edge node and bandwidth monitor (+ the scheduler when the
  strategy is ``adaptive``) and a recorder of labels, sent frames, estimates and the active
  configuration; for ``cloud_only`` a JPEG sender instead of the edge node, for ``edge_only``
  the whole model and a recorder of its results (:mod:`.references`).
* ``"side": "cloud"`` — only the serving node (the cloud node; ``cloud_only``: the whole
  model on JPEG frames; ``edge_only``: nothing), so that a fault test can kill it: results and
  receipts come back to the robot and are recorded there.

Protocol with the testbed (stdout/stdin, one line each): the side prints ``READY`` once its
nodes are up (the edge also waits until the cloud's subscription is matched across the link);
the edge starts the bag player when it reads ``GO`` (and afterwards takes ``KILL scheduler``);
both stop on SIGTERM or SIGINT and write their records (wall-clock times, ``time.time()``,
shared by both namespaces) to ``out`` as JSON before exiting.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64, Float64MultiArray

from split_infer.ros.bandwidth_monitor import BandwidthMonitor
from split_infer.ros.cloud_node import CloudNode
from split_infer.ros.common import ExecutorPerNode
from split_infer.ros.edge_node import EdgeNode
from split_infer.ros.messages import (
    FEATURE_QOS,
    RECEIPTS_QOS,
    parse_estimate,
    parse_receipts,
)
from split_infer.ros.scheduler import Scheduler
from split_infer.tools.bag.player import BagPlayer
from split_infer.tools.bag.storage import header_stamp_ns
from split_infer.tools.testbed.references import FullModelNode, JpegSender
from split_infer.wire import decode_frame

__all__ = ["main"]

ROBOT = "robot"
_QOS = QoSProfile(depth=200)


class _Recorder(Node):
    """Appends (wall time, ...) rows per topic; the lists are only appended to, and read
    after the executor stopped."""

    def __init__(self, side: str, **kwargs) -> None:
        super().__init__(f"testbed_{side}_recorder", namespace=ROBOT, **kwargs)
        self.rows: dict[str, list] = {}
        self._lock = threading.Lock()

    def _add(self, key: str, row: list) -> None:
        with self._lock:
            self.rows.setdefault(key, []).append(row)

    def snapshot(self) -> dict[str, list]:
        with self._lock:
            return {k: list(v) for k, v in self.rows.items()}


class EdgeRecorder(_Recorder):
    """Everything the testbed measures, recorded on the robot: labels, the frames sent (with
    the configuration their wire header names), estimates, the active configuration, and the
    results and receipts coming back from the cloud (over the unshaped direction). Recording
    on the edge keeps the cloud process a plain serving node that a fault test can kill."""

    def __init__(self, features_topic: str = "features", **kwargs) -> None:
        super().__init__("edge", **kwargs)
        self._features_topic = features_topic
        self.create_subscription(DiagnosticArray, "labels", self._on_label, _QOS)
        self.create_subscription(CompressedImage, features_topic, self._on_features,
                                 FEATURE_QOS)
        self.results = self.create_subscription(DiagnosticArray, "results", self._on_result,
                                                _QOS)
        self.create_subscription(Float64MultiArray, "receipts", self._on_receipts,
                                 RECEIPTS_QOS)
        self.create_subscription(Float64MultiArray, "bandwidth_estimate", self._on_estimate,
                                 _QOS)
        self.create_subscription(Float64, "metrics/active_split", lambda m: self._add(
            "active_split", [time.time(), float(m.data)]), _QOS)
        self.create_subscription(Float64, "metrics/active_ratio", lambda m: self._add(
            "active_ratio", [time.time(), float(m.data)]), _QOS)

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
            bandwidth, lower_bound, _ = parse_estimate(msg)
        except ValueError:
            return  # a malformed estimate is not recorded
        now = time.time()
        self._add("estimates", [now, bandwidth])
        self._add("lower_bound", [now, lower_bound])

    def _on_receipts(self, msg: Float64MultiArray) -> None:
        for row in parse_receipts(msg):
            self._add("receipts", [time.time(), row["bytes"], row["receive_stamp_s"]])


REFERENCE_STRATEGIES = ("cloud_only", "edge_only")


def _edge_nodes(config: dict, context) -> tuple[list[Node], Node | None]:
    """The edge side's nodes and the one whose publisher must reach the cloud (None when
    nothing crosses the link)."""
    bundle = config["bundle"]
    strategy = config["strategy"]
    common = {"context": context}
    if strategy == "cloud_only":
        sender = JpegSender(int(config.get("jpeg_quality", 90)), namespace=ROBOT, **common)
        return [EdgeRecorder(features_topic="image/compressed", **common), sender], sender
    if strategy == "edge_only":
        return [EdgeRecorder(**common),
                FullModelNode(bundle, compressed=False, namespace=ROBOT, **common)], None
    params = [Parameter("bundle", value=bundle),
              Parameter("fallback", value=config.get("fallback", "drop")),
              Parameter("auth_key_file", value=config.get("auth_key_file", ""))]
    adaptive = strategy == "adaptive"
    first = config.get("initial", "") if adaptive else strategy
    if first:
        split, _, ratio = first.partition(":")
        params += [Parameter("split_point", value=int(split)),
                   Parameter("ratio", value=float(ratio))]
    if not adaptive:
        params.append(Parameter("preload", value=[strategy]))
    edge = EdgeNode(namespace=ROBOT, parameter_overrides=params, **common)
    # Every split strategy has the monitor: the edge's backpressure paces by its estimate, and
    # a fixed configuration without it would be limited to max_in_flight frames per round
    # trip. Only the adaptive one has a scheduler.
    nodes: list[Node] = [EdgeRecorder(**common), edge, BandwidthMonitor(namespace=ROBOT,
                                                                          **common)]
    if adaptive:
        nodes.append(Scheduler(namespace=ROBOT, parameter_overrides=[
            Parameter("bundle", value=bundle),
            Parameter("objective", value=config.get("objective", "effective_accuracy")),
            Parameter("frame_rate", value=float(config.get("frame_rate", 30.0)))], **common))
    return nodes, edge


def _cloud_nodes(config: dict, context) -> list[Node]:
    strategy = config["strategy"]
    if strategy == "edge_only":
        return []  # nothing crosses the link
    if strategy == "cloud_only":
        return [FullModelNode(config["bundle"], compressed=True, namespace=ROBOT,
                              context=context)]
    # Both namespaces share the host clock, so the cloud can refuse frames that arrive too
    # late to be of use (the testbed's definition of a stale result).
    return [CloudNode(namespace=ROBOT, context=context, parameter_overrides=[
        Parameter("bundle", value=config["bundle"]),
        Parameter("max_frame_age", value=float(config.get("max_frame_age", 0.0))),
        Parameter("auth_key_file", value=config.get("auth_key_file", ""))])]


def _follow_commands(stop: threading.Event, executor, nodes: list[Node]) -> None:
    """Edge stdin after GO: ``KILL scheduler`` removes the scheduler as a crash would (the
    edge keeps its last configuration); EOF or anything else is ignored."""
    for line in sys.stdin:
        if line.strip() == "KILL scheduler":
            for node in [n for n in nodes if isinstance(n, Scheduler)]:
                executor.remove_node(node)
                node.destroy_node()
                nodes.remove(node)
            print("KILLED scheduler", flush=True)
        if stop.is_set():
            return


#: Topics the cloud publishes to readers on the robot.
CLOUD_PUBLISHED = ("receipts", "results")


def _answer_expect(stop: threading.Event, nodes: list[Node], timeout_s: float = 30.0) -> None:
    """Cloud stdin: ``EXPECT {"topic": n, ...}`` → print ``MATCHED`` once this process has
    discovered n readers of each topic (an ERROR line after ``timeout_s``)."""
    for line in sys.stdin:
        if not line.startswith("EXPECT "):
            continue
        expect = json.loads(line[len("EXPECT "):])
        deadline = time.monotonic() + timeout_s
        while nodes and not stop.is_set():
            missing = {topic: n for topic, n in expect.items()
                       if nodes[0].count_subscribers(f"/{ROBOT}/{topic}") < n}
            if not missing:
                break
            if time.monotonic() > deadline:
                print(f"ERROR the cloud did not discover the robot's readers of {missing}",
                      flush=True)
                return
            time.sleep(0.05)
        print("MATCHED", flush=True)
        return


def run_side(config: dict) -> int:
    """Run one side until SIGTERM/SIGINT; write its records to ``config["out"]``."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(config["domain_id"]))
    executor = ExecutorPerNode(context)
    nodes: list[Node] = []
    try:
        if config["side"] == "edge":
            nodes, sender = _edge_nodes(config, context)
        else:
            nodes = _cloud_nodes(config, context)
        for node in nodes:
            executor.add_node(node)
        if config["side"] == "edge":
            # Every node, the player included, exists before READY, so all discovery crosses
            # the link before it is shaped; the player plays once GO opens the gate.
            gate = threading.Event()
            player = BagPlayer(gate=gate, context=context, parameter_overrides=[
                Parameter("bag", value=config["bag"]), Parameter("loop", value=True),
                Parameter("rate", value=float(config.get("playback_rate", 1.0)))],
                cli_args=["--ros-args", "-r", f"/camera/image_raw:=/{ROBOT}/image",
                          "-r", f"/camera/labels:=/{ROBOT}/labels"])
            nodes.append(player)
            executor.add_node(player)
            publisher = None if sender is None else (
                sender.publisher if isinstance(sender, JpegSender) else sender._features_pub)
            deadline = time.monotonic() + float(config.get("discovery_timeout_s", 30.0))
            # Both directions must be matched before frames flow: once a slow link is
            # saturated, discovery traffic queues behind the frames for seconds.
            recorder = next(n for n in nodes if isinstance(n, EdgeRecorder))
            while publisher is not None and not stop.is_set() and (
                    publisher.get_subscription_count() < 1
                    or recorder.results.get_publisher_count() < 1):
                if time.monotonic() > deadline:
                    print("ERROR the cloud's subscription and results were not discovered "
                          "across the link", flush=True)
                    return 3
                time.sleep(0.05)
            # The matches above are this side's view. The cloud must also have discovered the
            # readers here that it publishes to, or those announcements (and their repairs)
            # would cross the shaped link later; the testbed passes this line to the cloud
            # and starts once it answers MATCHED.
            expect = {topic: recorder.count_subscribers(f"/{ROBOT}/{topic}")
                      for topic in CLOUD_PUBLISHED}
            print(f"EXPECT {json.dumps(expect)}", flush=True)
            print("READY", flush=True)
            line = sys.stdin.readline()
            if line.strip() != "GO":
                return 0 if stop.is_set() else 4
            gate.set()
            threading.Thread(target=_follow_commands, args=(stop, executor, nodes),
                             daemon=True).start()
        else:
            print("READY", flush=True)
            threading.Thread(target=_answer_expect, args=(stop, nodes), daemon=True).start()
        while not stop.wait(0.1):
            pass
        return 0
    finally:
        executor.shutdown(timeout_sec=5.0)
        records: dict = {}
        for node in nodes:
            if isinstance(node, _Recorder):
                records = node.snapshot()
            if isinstance(node, EdgeNode):
                records["edge_stats"] = node.stats()
            if isinstance(node, CloudNode):
                records["cloud_stats"] = {k: {**v, "last_config": list(v["last_config"] or [])}
                                          for k, v in node.stats().items()}
        Path(config["out"]).write_text(json.dumps(records))
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m split_infer.tools.testbed.sides CONFIG.json", file=sys.stderr)
        return 2
    return run_side(json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    raise SystemExit(main())
