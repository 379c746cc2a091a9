"""In-process ROS graph: simulated link → receipts → bandwidth monitor → scheduler → edge.

A fake edge node declares ``split_point``/``ratio`` and validates every request the way the
real edge must (the pair has to exist in the bundle; a test can make it refuse one). It sends
frames of its current configuration's size through a :class:`LinkShaper`; the deliveries become
the cloud's ``receipts``. Every node runs on simulated time (``use_sim_time`` + ``/clock``
published by the test), so dwell times and link time pass without sleeping.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from std_msgs.msg import Bool, Float64, Float64MultiArray, MultiArrayDimension  # noqa: E402
from test_scheduler import T_GEN, make_bundle  # noqa: E402

from split_infer.adaptation.configurations import configurations_from_bundle  # noqa: E402
from split_infer.adaptation.estimator import RECEIPT_COLUMNS, RECEIPT_LABEL  # noqa: E402
from split_infer.config_key import config_key  # noqa: E402
from split_infer.tools.link import LinkShaper, Trace, step_trace  # noqa: E402

# One DDS domain per test process, so parallel runs never see each other's graphs.
DOMAIN_ID = 100 + os.getpid() % 100
NAMESPACE = "/robot1"
SIM = [Parameter("use_sim_time", value=True)]


class FakeEdge(Node):
    """Declares the edge's configuration parameters and (unless told otherwise, like an edge
    of an older release) its fallback, and validates the pair like the real edge."""

    def __init__(self, allowed: set[tuple[int, float]], with_fallback: bool = True,
                 with_companion: bool = False, **kwargs) -> None:
        super().__init__("edge_node", **kwargs)
        self.declare_parameter("split_point", 2)
        self.declare_parameter("ratio", 1.0)
        if with_fallback:
            self.declare_parameter("fallback", "drop")
        if with_companion:
            self.declare_parameter("companion", "")
            self.declare_parameter("companion_share", 0.0)
        self.allowed = allowed
        self.refuse: set[tuple[int, float]] = set()
        self.requests: list[tuple[float, tuple[int, float], int, bool]] = []
        self.applied: list[tuple[float, tuple[int, float]]] = []
        self.add_on_set_parameters_callback(self._validate)
        self.add_post_set_parameters_callback(self._record)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @property
    def key(self) -> tuple[int, float]:
        return config_key(self.get_parameter("split_point").value,
                          self.get_parameter("ratio").value)

    def _validate(self, parameters: list[Parameter]) -> SetParametersResult:
        names = {p.name for p in parameters}
        if not names & {"split_point", "ratio"}:
            return SetParametersResult(successful=True)
        split, ratio = self.key
        for p in parameters:
            if p.name == "split_point":
                split = p.value
            elif p.name == "ratio":
                ratio = p.value
        pair = config_key(split, ratio)
        ok = pair in self.allowed and pair not in self.refuse
        self.requests.append((self.now_s(), pair, len(parameters), ok))
        return SetParametersResult(successful=ok,
                                   reason="" if ok else f"refusing {pair} (test edge)")

    def _record(self, parameters: list[Parameter]) -> None:
        if {p.name for p in parameters} & {"split_point", "ratio"}:
            self.applied.append((self.now_s(), self.key))


class Harness:
    """The graph plus a simulated link and the clock that drives everything."""

    def __init__(self, context: Context, bundle_dir: Path, trace: Trace,
                 edge_with_fallback: bool = True, edge_with_companion: bool = False,
                 extra_configurations=(), **scheduler_params) -> None:
        from split_infer.ros.bandwidth_monitor import BandwidthMonitor
        from split_infer.ros.scheduler import Scheduler

        bundle = make_bundle(bundle_dir, extra=extra_configurations)
        configs, _ = configurations_from_bundle(bundle)
        self.by_key = {config_key(c.split_point, c.ratio): c for c in configs}
        common = dict(context=context, namespace=NAMESPACE)
        self.driver = Node("driver", context=context, namespace=NAMESPACE)
        self.edge = FakeEdge(set(self.by_key), with_fallback=edge_with_fallback,
                             with_companion=edge_with_companion, parameter_overrides=SIM,
                             **common)
        self.monitor = BandwidthMonitor(parameter_overrides=SIM, **common)
        params = {"bundle": str(bundle_dir), "frame_rate": T_GEN, "min_dwell_s": 3.0,
                  "period_s": 0.25, "probe_interval_s": 10.0, "retry_backoff_s": 4.0,
                  # The synthetic bundle's configurations are a point or two of ν_eff apart.
                  "margin": 0.01, **scheduler_params}
        self.scheduler = Scheduler(
            parameter_overrides=SIM + [Parameter(k, value=v) for k, v in params.items()],
            **common)
        self.nodes = [self.driver, self.edge, self.monitor, self.scheduler]
        self.executor = SingleThreadedExecutor(context=context)
        for node in self.nodes:
            self.executor.add_node(node)
        self.clock_pub = self.driver.create_publisher(Clock, "/clock", 10)
        self.receipts_pub = self.driver.create_publisher(Float64MultiArray, "receipts", 100)
        self.bandwidth: list[tuple[float, float]] = []
        self.lower_bound: list[bool] = []
        self.driver.create_subscription(
            Float64, "bandwidth_bps", lambda m: self.bandwidth.append((self.t, m.data)), 10)
        self.driver.create_subscription(
            Bool, "bandwidth_lower_bound", lambda m: self.lower_bound.append(m.data), 10)
        self.shaper = LinkShaper(trace, queue_limit_bytes=200_000)
        self.t = 0.0
        self.seq = 0
        self.in_flight: list[tuple[float, int, int, float]] = []

    def run_until(self, end_s: float, dt: float = 0.05) -> None:
        while self.t < end_s - 1e-9:
            self.t += dt
            sec = int(self.t)
            self.clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=int((self.t - sec) * 1e9))))
            while self.seq / T_GEN <= self.t + 1e-9:
                sent = self.seq / T_GEN
                size = int(self.by_key[self.edge.key].bytes_per_frame)
                arrival = self.shaper.send(sent, size)
                if arrival is not None and math.isfinite(arrival):
                    self.in_flight.append((arrival, self.seq, size, sent))
                self.seq += 1
            due = [f for f in self.in_flight if f[0] <= self.t]
            self.in_flight = [f for f in self.in_flight if f[0] > self.t]
            if due:
                self.publish_receipts(due)
            for _ in range(4):
                self.executor.spin_once(timeout_sec=0.002)

    def publish_receipts(self, due) -> None:
        split, ratio = self.edge.key
        msg = Float64MultiArray()
        msg.layout.dim = [MultiArrayDimension(label=RECEIPT_LABEL, size=len(due),
                                              stride=len(due) * len(RECEIPT_COLUMNS)),
                          MultiArrayDimension(label="value", size=len(RECEIPT_COLUMNS),
                                              stride=len(RECEIPT_COLUMNS))]
        for arrival, seq, size, sent in sorted(due):
            msg.data.extend([float(seq), float(size), sent, arrival, float(split), ratio, 5.0])
        self.receipts_pub.publish(msg)

    def edge_config_name(self) -> str:
        return self.by_key[self.edge.key].name

    def close(self) -> None:
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()


@pytest.fixture
def ros_context():
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture
def harness_factory(ros_context, tmp_path):
    made: list[Harness] = []

    def make(trace: Trace, **params) -> Harness:
        harness = Harness(ros_context, tmp_path / f"bundle{len(made)}", trace, **params)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            harness.close()


def test_a_bandwidth_drop_moves_the_edge_to_fewer_bytes_respecting_the_dwell(harness_factory):
    h = harness_factory(step_trace([(0, 8e6), (15, 1e6)]))
    h.run_until(14.5)
    assert h.edge_config_name() == "s2g1"  # 6.4 Mbit/s fits the 8 Mbit/s link
    assert h.bandwidth and h.lower_bound[-1]  # not saturated: only a lower bound so far
    h.run_until(30.0)
    final = h.by_key[h.edge.key]
    assert final.bytes_per_frame < h.by_key[(2, 1.0)].bytes_per_frame
    assert final.split_point > 2 or final.ratio > 1.0
    assert final.bytes_per_frame * 8 * T_GEN <= 1e6
    late = [bps for t, bps in h.bandwidth if t > 22]
    assert late and all(abs(bps / 1e6 - 1) < 0.15 for bps in late)
    scheduler_requests = [r for r in h.edge.requests if r[0] > 0]
    assert scheduler_requests and all(n == 2 for _, _, n, _ in scheduler_requests)  # atomic
    times = [t for t, _ in h.edge.applied]
    assert all(b - a >= 3.0 - 1e-6 for a, b in itertools.pairwise(times))  # min_dwell_s
    loop = h.scheduler.loop
    assert loop.active == final and loop.rejections == 0


def test_the_scheduler_plans_with_the_edge_s_fallback_as_the_edge_sets_it(harness_factory):
    h = harness_factory(step_trace([(0, 8e6)]))
    h.run_until(2.0)
    loop = h.scheduler.loop
    assert loop.active is not None and loop.edge_fallback is False
    assert h.edge.set_parameters([Parameter("fallback", value="edge_only")])[0].successful
    h.run_until(3.0)
    assert loop.edge_fallback is True
    assert h.edge.set_parameters([Parameter("fallback", value="drop")])[0].successful
    h.run_until(4.0)
    assert loop.edge_fallback is False


def test_an_edge_without_a_fallback_parameter_is_still_adapted(harness_factory):
    """The scheduler asks for ``fallback`` apart from the configuration: an edge that does
    not declare it (one that answers a request naming it with nothing) is still read and
    moved, and planned without the fallback."""
    h = harness_factory(step_trace([(0, 8e6), (6, 1e6)]), edge_with_fallback=False)
    h.run_until(2.0)
    loop = h.scheduler.loop
    assert loop.active is not None and loop.edge_fallback is False
    assert loop.active == h.by_key[h.edge.key]
    # Read, not guessed: the edge already runs what 8 Mbit/s calls for, and is left alone.
    assert h.edge.requests == [], h.edge.requests
    h.run_until(14.0)
    assert h.by_key[h.edge.key].bytes_per_frame * 8 * T_GEN <= 1e6
    assert h.edge.applied and loop.rejections == 0


def test_the_scheduler_sets_a_companion_with_the_pair_in_one_request(harness_factory):
    """A late split the robot runs at 6.7 frames/s (150 ms) and cheaper ones (5 ms) that are
    less accurate: at 1 Mbit/s and 10 frames/s the late one on 65.5 % of the frames and the
    most accurate cheap one the link still carries (s2g4, 20 kB) on the rest keep the camera's
    rate (robot 0.15 − 0.145·x s per frame = 0.1 at x = 0.05 / 0.145), more accurate than any
    configuration alone."""
    from split_infer.bundle import BundleConfiguration

    late = BundleConfiguration(
        id="s4g8", split_point=4, split_name="layer4", ratio=8.0, codec="quant:bits=8",
        feature_shape=(64, 8, 8), edge_onnx="onnx/edge_4.onnx", cloud_onnx="onnx/cloud_4.onnx",
        accuracy=0.90, bytes_per_frame=2000.0, edge_ms=150.0, cloud_ms=5.0)
    h = harness_factory(step_trace([(0, 8e6), (4, 1e6)]), edge_with_companion=True,
                        extra_configurations=[late], mixing=True)
    h.run_until(16.0)
    edge = h.edge
    assert edge.key == (4, 8.0)
    assert edge.get_parameter("companion").value == "2:4"
    assert edge.get_parameter("companion_share").value == pytest.approx(0.05 / 0.145, abs=0.05)
    scheduler_requests = [r for r in edge.requests if r[0] > 0]
    assert scheduler_requests and all(n == 4 for _, _, n, _ in scheduler_requests)  # atomic
    loop = h.scheduler.loop
    assert loop.active.name == "s4g8+s2g4" and loop.edge_companion


def test_override_pins_and_refusals_back_off(harness_factory):
    h = harness_factory(step_trace([(0, 8e6)]), probe_interval_s=5.0)
    h.run_until(5.0)
    assert h.edge_config_name() == "s2g1"

    bad = h.scheduler.set_parameters([Parameter("override", value="7:1")])[0]
    assert not bad.successful and "no configuration" in bad.reason
    assert h.scheduler.set_parameters([Parameter("override", value="3:4")])[0].successful
    h.run_until(8.0)
    assert h.edge.key == (3, 4.0)
    h.run_until(18.0)
    assert h.edge.key == (3, 4.0)  # pinned although 8 Mbit/s would call for s2g1

    # The edge refuses the next pin: the scheduler backs off instead of hammering.
    h.edge.refuse.add((2, 8.0))
    asked_before = len(h.edge.requests)
    assert h.scheduler.set_parameters([Parameter("override", value="2:8")])[0].successful
    h.run_until(28.0)
    refused = [r for r in h.edge.requests[asked_before:] if r[1] == (2, 8.0)]
    assert 1 <= len(refused) <= 3 and not any(ok for *_, ok in refused)
    assert h.edge.key == (3, 4.0) and h.scheduler.loop.rejections == len(refused)
    assert "refused" in h.scheduler.diagnostics().message

    # Unpinned, the policy takes over. The link never saturated, so all it knows is a lower
    # bound (the 0.64 Mbit/s s3g4 needs); it climbs back one probe at a time.
    assert h.scheduler.set_parameters([Parameter("override", value="")])[0].successful
    probes_before = h.scheduler.loop.probes
    h.run_until(45.0)
    assert h.edge_config_name() == "s2g1"
    assert h.scheduler.loop.probes - probes_before == 3  # s2g4, s2g2, s2g1


def test_live_parameters_are_validated_and_bad_receipts_counted(harness_factory):
    h = harness_factory(step_trace([(0, 8e6)]))
    results = h.scheduler.set_parameters([
        Parameter("objective", value="speed"), Parameter("frame_rate", value=-1.0),
        Parameter("bundle", value="/nonexistent/bundle"), Parameter("edge_node", value="x"),
    ])
    assert not any(r.successful for r in results)
    assert h.scheduler.set_parameters([Parameter("objective", value="latency")])[0].successful
    assert h.scheduler.loop.settings.objective == "latency"
    assert not h.scheduler.set_parameters([Parameter("variation_window_s", value=-1.0)])[0] \
        .successful
    assert h.scheduler.set_parameters([Parameter("variation_window_s", value=4.0)])[0].successful
    assert h.scheduler.loop.capacity.window_s == 4.0
    bad = h.monitor.set_parameters([Parameter("window_s", value=30.0)])[0]
    assert not bad.successful  # larger than max_window_s
    assert h.monitor.set_parameters([Parameter("publish_period_s", value=0.5)])[0].successful
    h.run_until(3.0)
    assert h.bandwidth  # still publishing on the new timer

    # Receipts with the wrong layout are counted, never fatal.
    wrong = Float64MultiArray(data=[1.0, 2.0, 3.0])
    wrong.layout.dim = [MultiArrayDimension(label="seq,bytes,stamp", size=1, stride=3)]
    h.receipts_pub.publish(wrong)
    h.run_until(4.0)
    values = {kv.key: kv.value for kv in h.monitor.diagnostics().values}
    assert values["malformed_messages"] == "1" and "label" in values["last_error"]
    h.run_until(5.0)
    assert h.bandwidth[-1][0] > 4.0  # and it carries on


def test_the_shipped_parameter_files_load(ros_context, tmp_path):
    import yaml

    from split_infer.ros.bandwidth_monitor import BandwidthMonitor
    from split_infer.ros.scheduler import Scheduler

    config = Path(__file__).resolve().parents[1] / "config"
    nodes = []
    try:
        for cls, name in ((BandwidthMonitor, "bandwidth_monitor"), (Scheduler, "scheduler")):
            document = yaml.safe_load((config / f"{name}.yaml").read_text())
            values = document[f"/**/{name}"]["ros__parameters"]
            node = cls(context=ros_context, namespace=NAMESPACE,
                       cli_args=["--ros-args", "--params-file", str(config / f"{name}.yaml")])
            nodes.append(node)
            for key, value in values.items():
                assert node.has_parameter(key), f"{name}.yaml: {key} is not a parameter"
                assert node.get_parameter(key).value == value
        # The files really apply (wildcard namespace included): a changed copy changes the node.
        document = yaml.safe_load((config / "bandwidth_monitor.yaml").read_text())
        document["/**/bandwidth_monitor"]["ros__parameters"]["min_pairs"] = 5
        changed = tmp_path / "monitor.yaml"
        changed.write_text(yaml.safe_dump(document))
        node = BandwidthMonitor(context=ros_context, namespace="/robot7",
                                cli_args=["--ros-args", "--params-file", str(changed)])
        nodes.append(node)
        assert node.get_parameter("min_pairs").value == 5
        scheduler = nodes[1]
        assert scheduler.loop is None  # the shipped file names no bundle: it waits and says so
        assert "no bundle" in scheduler.diagnostics().message
    finally:
        for node in nodes:
            node.destroy_node()


def test_a_level_change_is_decided_on_when_its_estimate_arrives(ros_context, tmp_path):
    """A rise from a steady link is decided on when its estimate arrives, not at the next
    tick (up to period_s later); the monitor's republished value, estimates inside the band
    and falls wait for the tick."""
    from split_infer.adaptation.scheduling import LinkState
    from split_infer.ros.messages import make_estimate
    from split_infer.ros.scheduler import Scheduler

    make_bundle(tmp_path)
    scheduler = Scheduler(context=ros_context, namespace=NAMESPACE, parameter_overrides=[
        Parameter("bundle", value=str(tmp_path)), Parameter("frame_rate", value=T_GEN)])
    try:
        ticks = []
        scheduler._tick = lambda: ticks.append(scheduler._bandwidth[0])
        for k in range(10):  # a steady 4-Mbit/s window
            scheduler.loop.step(0.5 * k, LinkState(4e6, 0.02))
        for bps in (4.05e6, 1e6, 9e6, 9e6):
            scheduler._on_estimate(make_estimate(bps, False))
        assert ticks == [9e6]  # the rise, once
        scheduler._on_estimate(make_estimate(12e6, True))  # a lower bound above the band
        assert ticks == [9e6, 12e6]
    finally:
        scheduler.destroy_node()


def test_a_fallback_change_alone_is_no_configuration_switch():
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterEvent, ParameterType, ParameterValue

    from split_infer.ros.messages import edge_configuration_change

    def event(node: str, **values) -> ParameterEvent:
        params = []
        for name, value in values.items():
            if isinstance(value, str):
                v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
            elif isinstance(value, int):
                v = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
            else:
                v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            params.append(ParameterMsg(name=name, value=v))
        return ParameterEvent(node=node, changed_parameters=params)

    state: dict = {}
    edge = "/robot/edge_node"
    # The edge declares its parameters one event at a time: a switch once both are known.
    assert edge_configuration_change(event(edge, split_point=9), edge, state) is None
    assert edge_configuration_change(event(edge, fallback="drop"), edge, state) is None
    assert edge_configuration_change(event(edge, ratio=20.8), edge, state) == (9, 20.8)
    assert edge_configuration_change(event(edge, fallback="edge_only"), edge, state) is None
    assert state["fallback"] == "edge_only"
    assert edge_configuration_change(event("/other", split_point=6), edge, state) is None
    assert edge_configuration_change(event(edge, split_point=6, ratio=21.0), edge,
                                     state) == (6, 21.0)
    assert edge_configuration_change(event(edge, split_point=6), edge, state) is None
