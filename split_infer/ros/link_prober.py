"""The link prober (robot side): packet trains that let the monitor measure the link's
headroom. A thin shell over :mod:`split_infer.adaptation.probing` (design and budget there).

::

    robot                                                      server
    link_prober ── probe (CompressedImage, best effort) ──▶ probe_echo
       ▲  trains of back-to-back packets, sized and          │ middleware reception stamp per
       │  budgeted from the estimate                         │ packet; one message per train
       │                                                     ▼
       └── bandwidth_estimate ◀── bandwidth_monitor ◀── probe_receipts (Float64MultiArray)

Topics (relative, one namespace per robot; the node runs beside the edge node):

* subscribes ``bandwidth_estimate`` (the monitor's estimate: trains are sized for it, and the
  budget is a fraction of it; a silence cap is probed as if nothing were known; each new
  estimate is when a train is planned, see :attr:`LinkProber.FALLBACK_TICK_S`),
  ``metrics/queued_fraction`` (the monitor's: while the frames queue, they measure the link
  themselves and no train is sent), ``metrics/faster_frames`` (the monitor's: frames crossed
  faster than the slightly smaller ones before them, and the link is checked by a train as soon
  as ``interval_s`` allows, on credit,
  :meth:`~split_infer.adaptation.probing.ProbePlanner.check_link`) and
  ``/parameter_events`` (the edge node's configuration:
  while it runs edge-only, no frame can wait behind a train);
* publishes ``probe`` (``sensor_msgs/CompressedImage``: ``header.stamp`` = send time,
  ``format`` = ``split_infer/probe; train=T; index=I; count=N``, ``data`` = padding),
  ``metrics/probe_bps`` (probe bits per second over the last second, for rqt_plot) and
  ``/diagnostics``.

Parameters (live): ``enabled``, ``budget_fraction``, ``interval_s``, ``train_s``,
``min_train_bytes``, ``max_train_bytes``; read-only ``edge_node`` (the edge node to follow,
relative names in this node's namespace).

The server side is :mod:`split_infer.ros.probe_echo`. Probe packets are not authenticated: a
forged train can raise the estimate, which costs accuracy until the frames queue, and queued
frames' own dispersion wins over any train (:mod:`split_infer.adaptation.estimator`); SROS2
covers the topic like every other.
"""

from __future__ import annotations

import dataclasses
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterEvent, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_parameter_events
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64, Float64MultiArray

from split_infer.adaptation.probing import (
    QUEUED_ENOUGH,
    ProbePlanner,
    ProbeSettings,
    probe_format,
)
from split_infer.config_key import EDGE_ONLY_SPLIT
from split_infer.ros.common import (
    MetricPublishers,
    declare_bool,
    declare_float,
    declare_int,
    declare_str,
    diagnostic_status,
    guarded_timer,
    node_fqn,
    publish_diagnostics,
    rejected,
    run_node,
)
from split_infer.ros.messages import (
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    ESTIMATE_READER_QOS,
    PROBE_QOS,
    LinkEstimate,
    edge_configuration_event,
    parse_estimate,
)

__all__ = ["LinkProber", "main"]

#: Live parameters: each is the ProbeSettings field of its name, (low, high, description).
_PROBER_FLOATS = {
    "budget_fraction": (0.001, 0.5,
                        "probe bytes on the wire as a fraction of the estimated bandwidth"),
    "interval_s": (0.02, 60.0, "at most one train this often (s)"),
    "train_s": (0.001, 1.0, "a train lasts this long at 1.5 x the estimate (s)"),
}
_PROBER_INTS = {
    "min_train_bytes": (1_000, 10_000_000,
                        "smallest train (bytes): at least twice the shaper's burst"),
    "max_train_bytes": (1_000, 10_000_000, "largest train (bytes)"),
}


class LinkProber(Node):
    """Sends the packet trains that let the monitor measure the link's headroom."""

    #: Trains are planned when an estimate arrives (the monitor publishes every 0.2 s, its
    #: queued fraction just before) and on this timer, for while no estimate comes (before
    #: the first receipt, a monitor that stopped). A 20-Hz timer planned them before: each
    #: wake of an rclpy executor costs about as much CPU as a small message, and those wakes
    #: were most of the prober's CPU, inside the robot's budget (bench/README.md, "The
    #: robot's own plan, 2026-12-07").
    FALLBACK_TICK_S = 0.5

    def __init__(self, **kwargs) -> None:
        super().__init__("link_prober", **kwargs)
        defaults = ProbeSettings()
        values: dict[str, object] = {}
        for name, (low, high, text) in _PROBER_FLOATS.items():
            values[name] = declare_float(self, name, getattr(defaults, name), low, high, text)
        for name, (low, high, text) in _PROBER_INTS.items():
            values[name] = declare_int(self, name, getattr(defaults, name), low, high, text)
        self._enabled = declare_bool(self, "enabled", True, "send probe trains")
        self._edge_fqn = node_fqn(self, declare_str(
            self, "edge_node", "edge_node", "the edge node whose configuration is followed",
            read_only=True))
        self._edge_config: dict[str, float] = {}
        self._planner = ProbePlanner(ProbeSettings(**values))
        self._estimate: LinkEstimate | None = None
        self._padding = b""  # the last train's packet payload, reused while its size holds
        self._window: list[tuple[float, int]] = []  # (monotonic s, bytes) of the last second
        self._bad_estimates = 0
        self._last_error = ""
        self._probe_pub = self.create_publisher(CompressedImage, "probe", PROBE_QOS)
        self._metrics = MetricPublishers(self, ("probe_bps",))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                      DIAGNOSTICS_QOS)
        self.create_subscription(Float64MultiArray, "bandwidth_estimate", self._on_estimate,
                                 ESTIMATE_READER_QOS)
        # The monitor's share of frame pairs that queued: frames that fill the link measure
        # it themselves (no train then).
        self._queued: tuple[float, float] | None = None  # (value, monotonic s)
        self.create_subscription(Float64, "metrics/queued_fraction", self._on_queued, 10)
        self.create_subscription(Float64, "metrics/faster_frames", self._on_faster_frames, 10)
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_parameter_event,
                                 qos_profile_parameter_events)
        self.create_timer(self.FALLBACK_TICK_S, self._tick)
        self.create_timer(1.0, guarded_timer(self, self._report, "probe report"))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    # -- parameters ------------------------------------------------------------------------
    def _settings_with(self, parameters: list[Parameter]) -> ProbeSettings:
        changes = {p.name: p.value for p in parameters
                   if p.name in _PROBER_FLOATS or p.name in _PROBER_INTS}
        return dataclasses.replace(self._planner.settings, **changes)

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            self._settings_with(parameters)
        except (TypeError, ValueError) as exc:
            return rejected(str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        self._planner.update_settings(self._settings_with(parameters))
        for p in parameters:
            if p.name == "enabled":
                self._enabled = bool(p.value)

    # -- input -----------------------------------------------------------------------------
    def _on_estimate(self, msg: Float64MultiArray) -> None:
        try:
            self._estimate = parse_estimate(msg)
        except ValueError as exc:
            self._bad_estimates += 1
            self._last_error = str(exc)
            return
        self._tick()  # a new estimate is what a train is sized and budgeted for

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        try:
            edge_configuration_event(event, self._edge_fqn, self._edge_config)
        except Exception as exc:  # a malformed event must not take the executor down
            self._last_error = f"parameter event: {exc}"

    def _link_idle(self) -> bool:
        """The edge runs edge-only: no frames use the link."""
        return self._edge_config.get("split_point") == EDGE_ONLY_SPLIT

    def _on_queued(self, msg: Float64) -> None:
        self._queued = (float(msg.data), time.monotonic())

    def _on_faster_frames(self, msg: Float64) -> None:
        if self._enabled:  # the frames crossed faster: the link may have stepped up
            self._planner.check_link(time.monotonic())
            self._tick()

    def _frames_queue(self, now: float) -> bool:
        if self._queued is None:
            return False
        value, when = self._queued
        return now - when <= 1.0 and value >= QUEUED_ENOUGH

    # -- trains ----------------------------------------------------------------------------
    def _tick(self) -> None:
        if not self._enabled:
            return
        try:
            estimate = self._estimate
            now = time.monotonic()
            train = self._planner.due(
                now, None if estimate is None else estimate.bandwidth_bps,
                True if estimate is None else estimate.lower_bound, self._frames_queue(now),
                stale=estimate is not None and estimate.stale, link_idle=self._link_idle())
            if train is None:
                return
            if len(self._padding) != train.packet_bytes:
                self._padding = bytes(train.packet_bytes)
            msg = CompressedImage()
            msg.data = self._padding
            clock = self.get_clock()
            for index in range(train.packets):
                msg.format = probe_format(train.train, index, train.packets)
                # Each packet's own send time: a robot out of CPU may send a train as slowly
                # as the link would drain it, and only the send gaps tell (analyze_train).
                msg.header.stamp = clock.now().to_msg()
                self._probe_pub.publish(msg)
            self._window.append((now, train.payload_bytes))
        except Exception as exc:  # a timer must never take the executor down
            self._last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"probe train failed: {self._last_error}",
                                    throttle_duration_sec=5.0)

    def _report(self) -> None:
        now = time.monotonic()
        self._window = [(t, n) for t, n in self._window if now - t <= 1.0]
        self._metrics.publish(probe_bps=8.0 * sum(n for _, n in self._window))
        publish_diagnostics(self, self._diagnostics_pub, [self.diagnostics()])

    def stats(self) -> dict[str, object]:
        """Trains sent so far, their payload bytes and their bytes on the wire."""
        return {"trains_sent": self._planner.trains_sent,
                "probe_bytes_sent": self._planner.bytes_sent,
                "probe_wire_bytes_sent": self._planner.wire_bytes_sent}

    def diagnostics(self) -> DiagnosticStatus:
        """Trains and bytes sent, and what they were sized for."""
        planner = self._planner
        values: dict[str, object] = {
            "enabled": self._enabled, "trains_sent": planner.trains_sent,
            "probe_bytes_sent": planner.bytes_sent,
            "budget_fraction": planner.settings.budget_fraction,
            "estimate_bps": (None if self._estimate is None
                             else f"{self._estimate.bandwidth_bps:.6g}"),
            "estimate_stale": self._estimate is not None and self._estimate.stale,
            "edge_only": self._link_idle(),
            "bad_estimates": self._bad_estimates,
        }
        if self._last_error:
            values["last_error"] = self._last_error
        if not self._enabled:
            level, message = DiagnosticStatus.OK, "probing off"
        elif self._estimate is None or self._estimate.stale:
            level, message = DiagnosticStatus.OK, (
                "trains sized for the floor rate: "
                + ("no estimate yet" if self._estimate is None else "the link is silent"))
        else:
            level, message = DiagnosticStatus.OK, "probing"
        return diagnostic_status(self, "link prober", level, message, values)


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer link_prober``."""
    return run_node(LinkProber, "link_prober", args)


if __name__ == "__main__":
    raise SystemExit(main())
