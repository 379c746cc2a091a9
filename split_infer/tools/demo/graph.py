"""``split-infer demo``: the whole graph in one process, each node on its own executor.

::

    bag_player ──/robot/image──▶ edge_node ──features_uplink──▶ link (trace-shaped FIFO)
       │  (loop, restamped)        ▲     ▲                               │
       │                           │     │ bandwidth_bps              features
       └──/robot/labels──┐         │     └───────── bandwidth_monitor ◀─ receipts ─┐
                         │         │ SetParametersAtomically                       │
                         │         └──────────────── scheduler                 cloud_node
                         ▼                                                         │
                   demo recorder ◀──────────────── results, metrics ───────────────┘

The link between the edge and the cloud is an in-process token-bucket/FIFO model that follows
a bandwidth trace from ``config/traces/`` (``runtime.link``); every other piece is the real
node a robot runs. The recorder pairs each camera frame's label with the result that came
back for it (by header stamp), so a frame that was dropped anywhere counts as wrong: the
effective accuracy ν_eff = T·ν/T_gen of Hu & Krishnamachari.

It prints a status line every second and writes ``report.json`` and ``timeline.png``
(bandwidth, configuration, latency and ν_eff over time) to the output directory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterEvent
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_parameter_events
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64MultiArray

from split_infer.bundle import Bundle
from split_infer.config_key import EDGE_ONLY_SPLIT
from split_infer.ros.bandwidth_monitor import BandwidthMonitor
from split_infer.ros.cloud_node import CloudNode
from split_infer.ros.common import ExecutorPerNode, freeze_heap
from split_infer.ros.edge_node import EdgeNode
from split_infer.ros.link_prober import LinkProber
from split_infer.ros.messages import (
    FEATURE_QOS,
    PROBE_QOS,
    edge_configuration_change,
    link_bytes,
    parse_estimate,
)
from split_infer.ros.probe_echo import ProbeEcho
from split_infer.ros.scheduler import Scheduler
from split_infer.tools.bag.player import BagPlayer
from split_infer.tools.bag.storage import header_stamp_ns
from split_infer.tools.link import EmulatedLink, LinkShaper, Trace, load_trace
from split_infer.tools.plan.edge_timing import emulated_robot_timing
from split_infer.tools.testbed.report import switch_costs

__all__ = ["DemoSettings", "FrameLedger", "plot_timeline", "run_demo"]

ROBOT = "robot"


@dataclass
class DemoSettings:
    bundle: Path
    bag: Path
    trace: Path
    duration_s: float = 45.0
    out_dir: Path = Path("out/demo")
    objective: str = "effective_accuracy"
    frame_rate: float = 30.0
    playback_rate: float = 1.0
    window_s: float = 2.0
    status: bool = True
    domain_id: int | None = None  # None: ROS_DOMAIN_ID from the environment
    override: str = ""  # pin the scheduler to "split:ratio" (empty: adapt)
    probing: bool = True  # the link prober and probe echo run (adaptation.probing)
    #: the edge's compute stretched this many times (an emulated slower robot); the
    #: scheduler plans with each configuration's time per frame measured at start × this
    #: (:func:`~split_infer.tools.plan.edge_timing.emulated_robot_timing`)
    robot_slowdown: float = 1.0
    edge_only: bool = False  # the scheduler may choose the whole model on the robot
    #: called about five times a second with (elapsed s, generated, delivered, correct frames
    #: so far): how a soak test samples throughput while the demo runs
    on_tick: Callable[[float, int, int, int], None] | None = None


class LinkRelay(Node):
    """Carries feature frames and probe packets from the edge to the cloud through the
    trace-shaped link: one FIFO, so probe trains measure what the frames share.

    The link runs its own thread, which sleeps until the next delivery is due: probe trains
    are timed by their reception stamps, and a polling timer would deliver them in
    quantised bunches. Frames and probe packets are charged their size on the wire (what the
    receipts and the probe echo report, :func:`~split_infer.ros.messages.link_bytes`).

    That thread shares one interpreter with every other node of the graph: while it waits
    for the GIL, packets due meanwhile go out late, in a bunch, and a probe train's second
    half lasts about 10 ms. So while a relay runs, the interpreter switches threads every
    ``SWITCH_INTERVAL_S`` instead of Python's default 5 ms (restored when the last relay is
    destroyed). With a busy thread in the same process, the probe test's 2-Mbit/s link read
    1.1 to 2 Mbit/s, or silent, at the default, and within its tolerance at the shorter
    interval."""

    SWITCH_INTERVAL_S = 0.0005
    _running = 0
    _saved_interval_s = 0.0

    def __init__(self, trace: Trace, **kwargs) -> None:
        super().__init__("link", namespace=ROBOT, **kwargs)
        if LinkRelay._running == 0:
            LinkRelay._saved_interval_s = sys.getswitchinterval()
            sys.setswitchinterval(self.SWITCH_INTERVAL_S)
        LinkRelay._running += 1
        self._holds_interval = True
        self.trace = trace
        self._out = {"features": self.create_publisher(CompressedImage, "features",
                                                       FEATURE_QOS),
                     "probe": self.create_publisher(CompressedImage, "probe", PROBE_QOS)}
        self.link = EmulatedLink(LinkShaper(trace), deliver=self._deliver)
        self.sent = self.dropped = self.probe_packets = 0
        self.create_subscription(CompressedImage, "features_uplink", self._on_frame,
                                 FEATURE_QOS)
        self.create_subscription(CompressedImage, "probe_uplink", self._on_probe, PROBE_QOS)
        self.link.start()

    def elapsed_s(self) -> float:
        """Seconds since the trace started (the demo's time axis)."""
        return self.link.now_s()

    def _deliver(self, item: tuple[str, CompressedImage]) -> None:
        self._out[item[0]].publish(item[1])

    def _on_frame(self, msg: CompressedImage) -> None:
        self.sent += 1
        if self.link.send(("features", msg), link_bytes(msg)) is None:
            self.dropped += 1

    def _on_probe(self, msg: CompressedImage) -> None:
        self.probe_packets += 1
        self.link.send(("probe", msg), link_bytes(msg))

    def destroy_node(self) -> None:
        self.link.stop()
        if self._holds_interval:
            self._holds_interval = False
            LinkRelay._running -= 1
            if LinkRelay._running == 0:
                sys.setswitchinterval(LinkRelay._saved_interval_s)
        super().destroy_node()


class SlowRobotEdgeNode(EdgeNode):
    """The edge node on an emulated slower robot: every camera frame's work (the callback's
    CPU time on its own thread, the model on one ONNX Runtime thread) is stretched to
    ``slowdown`` × by sleeping for the rest, so the node takes frames as a robot that much
    slower would. The demo's stand-in for the testbed's real CPU budget (``--edge-cpu``),
    which needs root and cgroups; a sleep costs this machine nothing. The time per frame it
    reports (``metrics/edge_ms``, which the scheduler plans with) is stretched alike."""

    def __init__(self, slowdown: float, **kwargs) -> None:
        if not slowdown >= 1.0:
            raise ValueError("slowdown must be >= 1")
        self.slowdown = float(slowdown)
        super().__init__(**kwargs)
        add = self._metrics.add

        def add_stretched(**values: float) -> None:
            if "edge_ms" in values:
                values["edge_ms"] *= self.slowdown
            add(**values)

        self._metrics.add = add_stretched  # type: ignore[method-assign]

    def _on_image(self, raw: bytes) -> None:
        start = time.thread_time()
        try:
            super()._on_image(raw)
        finally:
            time.sleep(max(time.thread_time() - start, 0.0) * (self.slowdown - 1.0))


@dataclass
class _Sample:
    t: float
    rate_bps: float
    estimate_bps: float | None
    lower_bound: bool
    stale: bool
    split_point: float | None
    ratio: float | None
    generated: int
    correct: int
    delivered: int


class FrameLedger:
    """Pairs each labelled camera frame with the result that came back for it, in memory that
    stays small however long the demo runs (an hour at 30 fps is 108,000 frames).

    A frame waits in a dict only until it settles: its result arrived, or ``settle_s`` passed
    without one (then it was dropped somewhere and counts as wrong). Settled frames move into
    packed columns (32 bytes each, so 58 kB a minute at 30 fps) and running totals keep the
    counts O(1). A result whose label never came within ``settle_s`` is counted, not lost.
    Thread-safe: label and result callbacks run on different executor threads.
    """

    _COLUMNS = (("t_s", "d"), ("bag_index", "i"), ("label", "i"), ("predicted", "i"),
                ("split_point", "f"), ("ratio", "f"), ("latency_ms", "f"))

    def __init__(self, settle_s: float = 30.0) -> None:
        self.settle_s = settle_s
        self._columns = {name: array(code) for name, code in self._COLUMNS}
        self._waiting: dict[int, tuple[float, int, int]] = {}  # stamp → (t, index, label)
        # results that came before their label: stamp → (t, class, split, ratio, latency)
        self._early: dict[int, tuple[float, int, float, float, float]] = {}
        self.generated = self.delivered = self.correct = 0
        self.results_without_label = 0
        self._lock = threading.Lock()

    def label(self, stamp: int, t_s: float, bag_index: int, class_id: int) -> None:
        with self._lock:
            self.generated += 1
            early = self._early.pop(stamp, None)
            if early is None:
                self._waiting[stamp] = (t_s, bag_index, class_id)
            else:
                self._settle(t_s, bag_index, class_id, *early[1:])

    def result(self, stamp: int, t_s: float, class_id: int, split_point: float, ratio: float,
               latency_ms: float) -> None:
        with self._lock:
            waiting = self._waiting.pop(stamp, None)
            if waiting is None:
                self._early[stamp] = (t_s, class_id, split_point, ratio, latency_ms)
            else:
                self._settle(*waiting, class_id, split_point, ratio, latency_ms)

    def expire(self, now_s: float) -> None:
        """Settle frames labelled more than ``settle_s`` ago that got no result."""
        with self._lock:
            for stamp, (t_s, index, label) in list(self._waiting.items()):
                if now_s - t_s > self.settle_s:
                    del self._waiting[stamp]
                    self._settle(t_s, index, label, -1, np.nan, np.nan, np.nan)
            for stamp, row in list(self._early.items()):
                if now_s - row[0] > self.settle_s:
                    del self._early[stamp]
                    self.results_without_label += 1

    def _settle(self, t_s: float, bag_index: int, label: int, predicted: int,
                split_point: float, ratio: float, latency_ms: float) -> None:
        for (name, _), value in zip(self._COLUMNS, (t_s, bag_index, label, predicted,
                                                   split_point, ratio, latency_ms),
                                    strict=True):
            self._columns[name].append(value)
        if predicted >= 0:
            self.delivered += 1
            self.correct += int(predicted == label)

    def counts(self, since_s: float = 0.0) -> tuple[int, int, int]:
        """(generated, delivered, correct) for frames labelled at or after ``since_s``."""
        with self._lock:
            if since_s <= 0.0:
                return self.generated, self.delivered, self.correct
            t = np.frombuffer(self._columns["t_s"], dtype=np.float64)
            recent = t >= since_s
            predicted = np.frombuffer(self._columns["predicted"], dtype=np.int32)[recent]
            labels = np.frombuffer(self._columns["label"], dtype=np.int32)[recent]
            waiting = sum(1 for t_s, _, _ in self._waiting.values() if t_s >= since_s)
            delivered = predicted >= 0
            return (int(recent.sum()) + waiting, int(delivered.sum()),
                    int((predicted[delivered] == labels[delivered]).sum()))

    def frames(self, until_s: float) -> list[dict]:
        """Every frame labelled up to ``until_s``, in label order, as report rows (frames
        still waiting for a result count as not delivered)."""
        with self._lock:
            # Frames still waiting join as not delivered: one concatenation per column, not a
            # copy of the whole column per waiting frame.
            waiting = [(t_s, index, label, -1, np.nan, np.nan, np.nan)
                       for t_s, index, label in self._waiting.values()]
            extra = list(zip(*waiting, strict=True)) if waiting else [()] * len(self._COLUMNS)
            columns = {name: np.concatenate([np.frombuffer(values, dtype=np.dtype(code)),
                                             np.asarray(more, dtype=np.dtype(code))])
                       for (name, code), values, more in zip(
                           self._COLUMNS, self._columns.values(), extra, strict=True)}
        order = np.argsort(columns["t_s"], kind="stable")
        order = order[columns["t_s"][order] <= until_s]
        rows = []
        for i in order:
            delivered = columns["predicted"][i] >= 0
            rows.append({
                "t_s": round(float(columns["t_s"][i]), 3),
                "bag_index": int(columns["bag_index"][i]),
                "label": int(columns["label"][i]),
                "predicted": int(columns["predicted"][i]) if delivered else None,
                "split_point": float(columns["split_point"][i]) if delivered else None,
                "ratio": float(columns["ratio"][i]) if delivered else None,
                "latency_ms": round(float(columns["latency_ms"][i]), 3) if delivered
                else None,
            })
        return rows


class DemoRecorder(Node):
    """Listens to labels, results and estimates; keeps the timeline the report is made of."""

    def __init__(self, relay: LinkRelay, **kwargs) -> None:
        super().__init__("demo_recorder", namespace=ROBOT, **kwargs)
        self.relay = relay
        self.ledger = FrameLedger()
        self.samples: list[_Sample] = []
        self.frame_bytes_total = 0
        self.frames_sent = 0
        self.recent_bytes: deque[int] = deque(maxlen=30)
        self._estimate: float | None = None
        self._lower_bound = False
        self._stale = False
        self._split: float | None = None
        self._ratio: float | None = None
        qos = QoSProfile(depth=100)
        self.create_subscription(DiagnosticArray, "labels", self._on_label, qos)
        self.create_subscription(DiagnosticArray, "results", self._on_result, qos)
        self.create_subscription(CompressedImage, "features_uplink", self._on_features,
                                 FEATURE_QOS)
        self.create_subscription(Float64MultiArray, "bandwidth_estimate", self._on_estimate, qos)
        # When the edge node takes a configuration (its parameter event, on the demo's time
        # axis): the timeline's configuration, and the start of a switch, for its cost
        # (testbed.report.switch_costs). Not the edge's metrics/active_* topics: their timer
        # runs between frames, and a robot busy with every frame publishes them late.
        self.edge_configs: list[list[float]] = []
        self._edge_config: dict[str, float | str] = {}
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_parameters,
                                 qos_profile_parameter_events)
        self.create_timer(0.5, self._sample)

    def restart(self) -> None:
        """Forget what was recorded before the trace (re)started: the time axis starts
        again."""
        self.samples.clear()
        self.edge_configs.clear()

    def _on_parameters(self, event: ParameterEvent) -> None:
        change = edge_configuration_change(event, f"/{ROBOT}/edge_node", self._edge_config)
        if change is not None:
            self._split, self._ratio = change
            self.edge_configs.append([self.relay.elapsed_s(), self._split, self._ratio])

    def _on_features(self, msg: CompressedImage) -> None:
        size = len(msg.data)
        self.frame_bytes_total += size
        self.frames_sent += 1
        self.recent_bytes.append(size)

    def _on_estimate(self, msg: Float64MultiArray) -> None:
        with contextlib.suppress(ValueError):  # a malformed estimate is not drawn
            estimate = parse_estimate(msg)
            self._estimate, self._lower_bound = estimate.bandwidth_bps, estimate.lower_bound
            self._stale = estimate.stale

    def _on_label(self, msg: DiagnosticArray) -> None:
        values = {kv.key: kv.value for status in msg.status for kv in status.values}
        if "class_id" in values:
            self.ledger.label(header_stamp_ns(msg.header), self.relay.elapsed_s(),
                              int(values.get("index", -1)), int(values["class_id"]))

    def _on_result(self, msg: DiagnosticArray) -> None:
        top = next((s for s in msg.status if s.message == "rank 1"), None)
        if top is None:
            return
        values = {kv.key: kv.value for kv in top.values}
        latency_ms = (self.get_clock().now().nanoseconds - header_stamp_ns(msg.header)) / 1e6
        self.ledger.result(header_stamp_ns(msg.header), self.relay.elapsed_s(),
                           int(values["class_id"]), float(values["split_point"]),
                           float(values["ratio"]), latency_ms)

    def counts(self, since_s: float = 0.0) -> tuple[int, int, int]:
        """(generated, delivered, correct) for frames labelled after ``since_s``."""
        return self.ledger.counts(since_s)

    def _sample(self) -> None:
        now = self.relay.elapsed_s()
        self.ledger.expire(now)
        generated, delivered, correct = self.counts(0.0)
        self.samples.append(_Sample(now, self.relay.trace.rate_at(now), self._estimate,
                                    self._lower_bound, self._stale, self._split, self._ratio,
                                    generated, correct, delivered))


def _window_series(samples: list[_Sample], window_s: float) -> list[dict]:
    rows = []
    first_index = 0
    for sample in samples:
        while samples[first_index].t < sample.t - window_s:
            first_index += 1
        first = samples[first_index]
        generated = sample.generated - first.generated
        delivered = sample.delivered - first.delivered
        correct = sample.correct - first.correct
        span = max(sample.t - first.t, 1e-9)
        rows.append({
            "t_s": round(sample.t, 3),
            "link_rate_bps": sample.rate_bps,
            "estimate_bps": sample.estimate_bps,
            "estimate_is_lower_bound": sample.lower_bound,
            "estimate_is_silence_cap": sample.stale,
            "split_point": sample.split_point,
            "ratio": sample.ratio,
            "delivered_fps": delivered / span if sample.t > first.t else None,
            "effective_accuracy": correct / generated if generated else None,
        })
    return rows


def plot_timeline(report: dict, path: Path) -> None:
    """Bandwidth, configuration, latency and ν_eff over time (``report`` as the demo writes
    it; the testbed writes the same structure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["timeline"]
    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    axes[0].plot(t, [r["link_rate_bps"] / 1e6 for r in rows], label="shaped link rate",
                 drawstyle="steps-post")
    axes[0].plot(t, [(r["estimate_bps"] or np.nan) / 1e6 for r in rows],
                 label="monitor estimate")
    # Samples where the estimate was only a lower bound (older reports lack the flag).
    bounds = [r for r in rows if r.get("estimate_is_lower_bound") and r["estimate_bps"]]
    if bounds:
        axes[0].plot([r["t_s"] for r in bounds], [r["estimate_bps"] / 1e6 for r in bounds],
                     "x", color="C1", markersize=4, label="estimate is a lower bound")
    axes[0].set(ylabel="Mbit/s", title="bandwidth")
    axes[0].legend(loc="upper right")
    axes[1].plot(t, [r["split_point"] if r["split_point"] is not None else np.nan
                     for r in rows], drawstyle="steps-post", color="C2", label="split point")
    axes[1].set_ylabel("split point")
    twin = axes[1].twinx()
    twin.plot(t, [r["ratio"] if r["ratio"] is not None else np.nan for r in rows],
              drawstyle="steps-post", color="C3", linestyle="--", label="ratio")
    twin.set_ylabel("ratio")
    axes[1].set_title("active configuration (split point: green, ratio: red dashed)")
    frames = report["frames"]
    axes[2].plot([f["t_s"] for f in frames if f["latency_ms"] is not None],
                 [f["latency_ms"] for f in frames if f["latency_ms"] is not None],
                 ".", markersize=2)
    axes[2].set(ylabel="ms", title="end-to-end latency per delivered frame", yscale="log")
    axes[3].plot(t, [r["effective_accuracy"] if r["effective_accuracy"] is not None else np.nan
                     for r in rows], label="ν_eff (window)")
    axes[3].set(ylabel="ν_eff", xlabel="time (s)", ylim=(0, 1),
                title=f"effective accuracy over {report['settings']['window_s']:g}-s windows")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _status_line(recorder: DemoRecorder, window_s: float, probing: bool) -> str:
    """One line of what the demo does now. The estimate reads as the link's capacity: with
    probing on, trains measure it even when the frames use a sliver, so the lower-bound flag
    (``≥``) is shown only when probing is off; a silence cap (nothing crossed the link for a
    while) is marked ``(silent)``."""
    sample = recorder.samples[-1] if recorder.samples else None
    generated, delivered, correct = recorder.counts(recorder.relay.elapsed_s() - window_s)
    if sample is None:
        return "starting…"
    estimate = "-" if sample.estimate_bps is None else f"{sample.estimate_bps / 1e6:.2f}"
    bound = "≥" if sample.lower_bound and not probing else ""
    if sample.stale:
        estimate += " (silent)"
    nu = f"{correct / generated:.2f}" if generated else "-"
    size = f"{np.mean(recorder.recent_bytes):.0f}" if recorder.recent_bytes else "-"
    split = "-" if sample.split_point is None else f"{sample.split_point:.0f}"
    ratio = "-" if sample.ratio is None else f"{sample.ratio:.3g}"
    if sample.split_point == EDGE_ONLY_SPLIT:
        split, ratio = "edge-only", "-"
    return (f"t={sample.t:5.1f}s link {sample.rate_bps / 1e6:5.2f} Mbit/s "
            f"est {bound}{estimate} | split {split} ratio {ratio} | "
            f"{delivered / window_s:4.1f} fps | {size} B/frame | ν_eff {nu}")


def run_demo(settings: DemoSettings) -> dict:
    """Run the graph for ``settings.duration_s`` and write the report; returns it."""
    bundle = Bundle.load(settings.bundle)  # fail fast, with the bundle's own error
    trace = load_trace(settings.trace)
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timing = None
    if settings.robot_slowdown > 1.0:
        if settings.status:
            print(f"timing the robot's {len(bundle.configurations)} configurations…", flush=True)
        timing = emulated_robot_timing(bundle.path, settings.robot_slowdown, out)
    context = rclpy.Context()
    if settings.domain_id is None:
        rclpy.init(context=context)
    else:
        rclpy.init(context=context, domain_id=settings.domain_id)
    executor = ExecutorPerNode(context)
    nodes: list[Node] = []
    try:
        common = {"context": context}
        relay = LinkRelay(trace, **common)
        recorder = DemoRecorder(relay, **common)
        nodes += [relay, recorder]
        nodes.append(CloudNode(namespace=ROBOT, parameter_overrides=[
            Parameter("bundle", value=str(settings.bundle))], **common))
        nodes.append(BandwidthMonitor(namespace=ROBOT, **common))
        if settings.probing:
            nodes.append(ProbeEcho(namespace=ROBOT, **common))
        edge_parameters = [Parameter("bundle", value=str(settings.bundle))]
        edge_args = {"namespace": ROBOT, "cli_args": [
            "--ros-args", "-r", "features:=features_uplink"], **common}
        if settings.robot_slowdown > 1.0:
            edge = SlowRobotEdgeNode(settings.robot_slowdown, parameter_overrides=[
                *edge_parameters, Parameter("threads", value=1)], **edge_args)
        else:
            edge = EdgeNode(parameter_overrides=edge_parameters, **edge_args)
        nodes.append(edge)
        nodes.append(Scheduler(namespace=ROBOT, parameter_overrides=[
            Parameter("bundle", value=str(settings.bundle)),
            Parameter("objective", value=settings.objective),
            Parameter("frame_rate", value=float(settings.frame_rate)),
            Parameter("override", value=settings.override),
            Parameter("edge_time_scale", value=float(settings.robot_slowdown)),
            Parameter("edge_timing", value=str(timing or "")),
            Parameter("edge_only", value=bool(settings.edge_only))], **common))
        for node in nodes:
            executor.add_node(node)
        freeze_heap()  # the models are loaded: out of the garbage collector's scans
        player = BagPlayer(parameter_overrides=[
            Parameter("bag", value=str(settings.bag)), Parameter("loop", value=True),
            Parameter("rate", value=float(settings.playback_rate)),
            # A compressed camera bag is played as a camera driver publishes: decoded frames.
            Parameter("decompress", value=True),
            Parameter("start_delay", value=0.5)],
            cli_args=["--ros-args", "-r", f"/camera/image_raw:=/{ROBOT}/image",
                      "-r", f"/camera/labels:=/{ROBOT}/labels"], **common)
        nodes.append(player)
        executor.add_node(player)
        relay.link.restart()
        recorder.restart()
        # What the edge runs as the trace starts: its start-up choice is no switch.
        initial = edge.pipeline.active_key
        prober = None
        if settings.probing:  # after the restart, which drops whatever the link holds
            prober = LinkProber(namespace=ROBOT, cli_args=[
                "--ros-args", "-r", "probe:=probe_uplink"], **common)
            nodes.append(prober)
            executor.add_node(prober)
        tty = sys.stdout.isatty()
        last_print = 0.0
        while relay.elapsed_s() < settings.duration_s:
            time.sleep(0.2)
            if settings.on_tick is not None:
                settings.on_tick(relay.elapsed_s(), *recorder.counts(0.0))
            if settings.status and relay.elapsed_s() - last_print >= (1.0 if tty else 5.0):
                last_print = relay.elapsed_s()
                line = _status_line(recorder, settings.window_s, settings.probing)
                print(f"\r{line}\033[K" if tty else line, end="" if tty else "\n", flush=True)
        if settings.status and tty:
            print()
        report = _report(settings, bundle, recorder, relay, prober, initial)
    finally:
        # Stop taking new work, let the callbacks in flight finish, and only then destroy the
        # nodes: a handle destroyed under a queued callback fails that callback's task.
        executor.shutdown(timeout_sec=5.0)
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_timeline(report, out / "timeline.png")
    return report


def _probe_summary(recorder: DemoRecorder, relay: LinkRelay,
                   prober: LinkProber | None) -> dict:
    """What probing cost: payload bits/s of the trains, and that as a fraction of the mean
    estimate (the budget is 5 % of it)."""
    if prober is None:
        return {"probing": False}
    sent = int(prober.stats()["probe_bytes_sent"])
    probe_bps = 8.0 * sent / max(relay.elapsed_s(), 1e-9)
    estimates = [s.estimate_bps for s in recorder.samples if s.estimate_bps]
    mean = float(np.mean(estimates)) if estimates else None
    return {"probing": True, "probe_bps": round(probe_bps, 1),
            "probe_fraction_of_estimate": round(probe_bps / mean, 4) if mean else None}


def _report(settings: DemoSettings, bundle: Bundle, recorder: DemoRecorder,
            relay: LinkRelay, prober: LinkProber | None = None,
            initial: tuple[int, float] | None = None) -> dict:
    # Frames labelled in the last second may still be in flight: leave them out.
    cutoff = relay.elapsed_s() - 1.0
    frames = recorder.ledger.frames(until_s=cutoff)
    delivered = [f for f in frames if f["predicted"] is not None]
    correct = sum(f["predicted"] == f["label"] for f in delivered)
    latencies = [f["latency_ms"] for f in delivered]
    configs = [(f["split_point"], f["ratio"]) for f in delivered]
    switches = sum(1 for a, b in itertools.pairwise(configs) if a != b)
    switch_rows = switch_costs(recorder.edge_configs, frames, 0.0, initial)
    summary = {
        "bundle": str(settings.bundle),
        "model": bundle.model_name,
        "trace": str(settings.trace),
        "duration_s": settings.duration_s,
        "frames_generated": len(frames),
        "frames_delivered": len(delivered),
        "delivered_fps": round(len(delivered) / max(cutoff, 1e-9), 2),
        "top1_on_delivered_percent": round(100 * correct / len(delivered), 2) if delivered
        else None,
        "effective_accuracy": round(correct / len(frames), 4) if frames else None,
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
        "bytes_per_frame_mean": round(recorder.frame_bytes_total / recorder.frames_sent, 1)
        if recorder.frames_sent else None,
        "results_without_label": recorder.ledger.results_without_label,
        "link_frames_dropped": relay.dropped,
        "configuration_switches": switches,
        "switch_frames_until_first_max": max(
            (c["frames_until_first"] for c in switch_rows
             if c["frames_until_first"] is not None), default=None),
        **_probe_summary(recorder, relay, prober),
        "configurations_used": sorted({f"{s:.0f}:{r:g}" for s, r in configs}),
    }
    return {"summary": summary,
            "settings": {k: str(v) if isinstance(v, Path) else v
                         for k, v in settings.__dict__.items() if not callable(v)},
            "timeline": _window_series(recorder.samples, settings.window_s),
            "switches": switch_rows,
            "frames": frames}
