"""In-process ROS graph: link prober → emulated link → probe echo → bandwidth monitor.

No frames at all: the monitor's estimate comes from the probe trains alone, and must read
the emulated link's rate (the demo's link relay, a FIFO at the trace's rate), not a lower
bound. Real time: the echo's reception stamps are the middleware's.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray  # noqa: E402

from split_infer.ros.bandwidth_monitor import BandwidthMonitor  # noqa: E402
from split_infer.ros.common import ExecutorPerNode  # noqa: E402
from split_infer.ros.link_prober import LinkProber  # noqa: E402
from split_infer.ros.messages import ESTIMATE_READER_QOS, parse_estimate  # noqa: E402
from split_infer.ros.probe_echo import ProbeEcho  # noqa: E402
from split_infer.tools.demo.graph import ROBOT, LinkRelay  # noqa: E402
from split_infer.tools.link import step_trace  # noqa: E402

DOMAIN_ID = 150 + os.getpid() % 50


class Listener(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("probe_test_listener", namespace=ROBOT, **kwargs)
        self.lock = threading.Lock()
        self.estimates: list[tuple[float, float, bool]] = []
        self.probe_bps: list[float] = []
        self.create_subscription(Float64MultiArray, "bandwidth_estimate", self._on_estimate,
                                 ESTIMATE_READER_QOS)
        self.create_subscription(Float64, "metrics/probe_bps",
                                 lambda m: self.probe_bps.append(m.data), 10)

    def _on_estimate(self, msg: Float64MultiArray) -> None:
        estimate = parse_estimate(msg)
        with self.lock:
            self.estimates.append((time.monotonic(), estimate.bandwidth_bps,
                                   estimate.lower_bound))


def test_probe_trains_alone_measure_the_link_and_follow_a_step_up():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = ExecutorPerNode(context)
    nodes = []
    try:
        relay = LinkRelay(step_trace([(0.0, 2e6), (6.0, 6e6)], delay_ms=5.0), context=context)
        monitor = BandwidthMonitor(namespace=ROBOT, context=context, parameter_overrides=[
            Parameter("publish_period_s", value=0.1)])
        echo = ProbeEcho(namespace=ROBOT, context=context)
        prober = LinkProber(namespace=ROBOT, context=context,
                            cli_args=["--ros-args", "-r", "probe:=probe_uplink"])
        listener = Listener(context=context)
        # Stands in for the edge node: the prober follows its configuration.
        edge = Node("edge_node", namespace=ROBOT, context=context)
        edge.declare_parameter("split_point", 6)
        edge.declare_parameter("ratio", 4.0)
        nodes = [relay, monitor, echo, prober, listener, edge]
        for node in nodes:
            executor.add_node(node)
        relay.link.restart()
        start = time.monotonic()
        time.sleep(12.0)
        with listener.lock:
            estimates = [(t - start, b, lower) for t, b, lower in listener.estimates]
        if os.environ.get("PROBE_DEBUG"):
            print([(round(t, 2), round(b / 1e6, 3), lower) for t, b, lower in estimates])
        before = [(b, lower) for t, b, lower in estimates if 4.0 <= t < 6.0]
        after = [(b, lower) for t, b, lower in estimates if 9.0 <= t < 12.0]
        assert before and after, estimates
        # Wide enough for a shared, busy test machine; the benchmark measures it exactly.
        assert all(not lower and abs(b - 2e6) <= 0.2 * 2e6 for b, lower in before), before
        assert all(not lower and abs(b - 6e6) <= 0.2 * 6e6 for b, lower in after), after
        status = monitor.diagnostics()
        values = {kv.key: kv.value for kv in status.values}
        assert int(values["probe_trains"]) >= 5 and values["source"] == "probe"
        assert int(values["receipts"]) == 0  # no frame crossed: the trains did it alone
        stats = prober.stats()
        # The budget: 5 % of what the link was believed to carry, plus the full first bucket.
        assert 8 * stats["probe_bytes_sent"] / 12.0 <= 0.05 * 6e6
        assert echo.trains >= stats["trains_sent"] - 2 and echo.malformed == 0
        assert relay.probe_packets > 0 and relay.sent == 0
        def edge_only() -> str:
            return {kv.key: kv.value for kv in prober.diagnostics().values}["edge_only"]

        assert edge_only() == "False"
        edge.set_parameters([Parameter("split_point", value=-1)])
        deadline = time.monotonic() + 5.0
        while edge_only() != "True" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert edge_only() == "True", "the prober missed the edge-only switch"
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_the_link_relay_switches_threads_often_while_it_runs():
    """The relay's delivery thread shares the interpreter with the other nodes: at Python's
    default 5-ms switch interval a busy thread beside it held packets back and bunched them
    (the probe test above then read its 2-Mbit/s link as 1.1, or as silent)."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    before = sys.getswitchinterval()
    trace = step_trace([(0.0, 2e6)], delay_ms=5.0)
    try:
        first = LinkRelay(trace, context=context)
        second = LinkRelay(trace, context=context)
        assert sys.getswitchinterval() == pytest.approx(LinkRelay.SWITCH_INTERVAL_S)
        first.destroy_node()
        first.destroy_node()  # twice: no effect
        assert sys.getswitchinterval() == pytest.approx(LinkRelay.SWITCH_INTERVAL_S)
        second.destroy_node()
        assert sys.getswitchinterval() == before
    finally:
        sys.setswitchinterval(before)
        rclpy.try_shutdown(context=context)


def test_frames_that_cross_faster_call_a_train_the_budget_would_hold_back():
    """The monitor's ``metrics/faster_frames`` (frames crossed faster than slightly smaller
    ones had: the link may have stepped up) sends the next train on credit; not while the
    prober is disabled."""
    from split_infer.ros.messages import make_estimate

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        prober = LinkProber(namespace=ROBOT, context=context)  # not spun: no timer runs
        try:
            prober._on_estimate(make_estimate(1e6, False))
            assert prober.stats()["trains_sent"] == 1
            time.sleep(1.1 * prober._planner.settings.interval_s)
            prober._on_estimate(make_estimate(1e6, False))  # the budget holds it back
            assert prober.stats()["trains_sent"] == 1
            prober.set_parameters([Parameter("enabled", value=False)])
            prober._on_faster_frames(Float64(data=1.0))
            assert prober.stats()["trains_sent"] == 1
            prober.set_parameters([Parameter("enabled", value=True)])
            prober._on_faster_frames(Float64(data=1.0))
            assert prober.stats()["trains_sent"] == 2
        finally:
            prober.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_an_estimate_is_when_a_train_is_planned():
    """The prober has no fast timer: a new estimate plans the next train; a malformed one is
    counted and plans nothing."""
    from split_infer.ros.messages import make_estimate

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        prober = LinkProber(namespace=ROBOT, context=context)  # not spun: no timer runs
        try:
            bad = Float64MultiArray()
            bad.data = [1.0]
            prober._on_estimate(bad)
            assert prober.stats()["trains_sent"] == 0
            assert {kv.key: kv.value for kv in prober.diagnostics().values}[
                "bad_estimates"] == "1"
            prober._on_estimate(make_estimate(5e6, False))
            assert prober.stats()["trains_sent"] == 1
            prober._on_estimate(make_estimate(5e6, False))  # within interval_s: no second
            assert prober.stats()["trains_sent"] == 1
        finally:
            prober.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
