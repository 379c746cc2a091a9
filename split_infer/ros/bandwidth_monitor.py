"""Bandwidth monitor node: the cloud's receipts in, bandwidth and RTT estimates out.

A thin rclpy shell over :class:`split_infer.adaptation.estimator.BandwidthEstimator` (the design
— capacity from the dispersion of queued frames, throughput as an honest lower bound, silence,
RTT — is documented there).

Topics (relative names, one namespace per robot):

* subscribes ``receipts`` (``std_msgs/Float64MultiArray``, ``layout.dim[0].label`` =
  ``seq,bytes,send_stamp_s,receive_stamp_s,split_point,ratio,cloud_ms``, one row per frame)
  and ``probe_receipts`` (the probe echo's rows, ``train,index,count,bytes,send_stamp_s,
  receive_stamp_s``, one message per train: :mod:`split_infer.ros.link_probe`);
* publishes ``bandwidth_bps`` (``std_msgs/Float64``, bits/s: the value to plan with — the
  edge's backpressure consumes it), ``rtt_ms`` (``std_msgs/Float64``) and
  ``bandwidth_lower_bound`` (``std_msgs/Bool``: True when the link was not saturated, so the
  capacity may be higher than ``bandwidth_bps``); all reliable, transient-local, depth 1, so a
  late subscriber gets the latest value;
* publishes ``metrics/capacity_bps``, ``metrics/throughput_bps``, ``metrics/one_way_delay_ms``,
  ``metrics/queued_fraction``, ``metrics/silence_s``, ``metrics/probe_rate_bps`` (the newest
  train's measurement) (``std_msgs/Float64``, for rqt_plot) and ``/diagnostics``;
* publishes ``metrics/faster_frames`` (``std_msgs/Float64``, a count) as soon as it rises:
  two frames within five crossed faster than the slightly smaller frames of the delay window
  did, so the link may have got faster, and the link prober checks it with a train as soon as
  its interval allows (:mod:`split_infer.adaptation.estimator`).

Parameters (all live-changeable): ``window_s``, ``max_window_s``, ``min_pairs``,
``rtt_window_s``, ``max_busy_s``, ``silence_min_s``, ``server_margin_s``, ``probe_valid_s``,
``faster_margin_s`` (see
:class:`~split_infer.adaptation.estimator.EstimatorConfig`), ``publish_period_s`` and
``diagnostics_period_s``.
"""

from __future__ import annotations

import dataclasses

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Bool, Float64, Float64MultiArray

from split_infer.adaptation.estimator import (
    RECEIPT_LABEL,
    BandwidthEstimate,
    BandwidthEstimator,
    EstimatorConfig,
    parse_receipts,
)
from split_infer.adaptation.probing import (
    TrainMeasurement,
    analyze_train,
    parse_probe_receipts,
)
from split_infer.ros.common import (
    MetricPublishers,
    declare_float,
    declare_int,
    diagnostic_status,
    publish_diagnostics,
    run_node,
)
from split_infer.ros.messages import (
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    ESTIMATE_QOS,
    RECEIPTS_QOS,
    make_estimate,
)

__all__ = ["BandwidthMonitor", "main"]

METRICS = ("capacity_bps", "throughput_bps", "one_way_delay_ms", "queued_fraction", "silence_s",
           "probe_rate_bps", "faster_frames")

_ESTIMATOR_FLOATS = {
    # name: (default, low, high, description)
    "window_s": (1.0, 0.05, 60.0, "capacity/throughput window (s)"),
    "max_window_s": (10.0, 0.1, 600.0, "how far back a slow saturated link may reach (s)"),
    "rtt_window_s": (10.0, 0.1, 600.0, "min-filter window of the one-way delay (s)"),
    "max_busy_s": (60.0, 0.0, 3600.0, "longest a busy period holds the delay window (s)"),
    "silence_min_s": (1.0, 0.05, 600.0, "no receipts for this long (at least) is silence (s)"),
    "server_margin_s": (0.001, 0.0, 1.0, "gap within cloud_ms + this is server-bound (s)"),
    "probe_valid_s": (4.0, 0.1, 600.0, "a probe train's measurement counts this long (s)"),
    "faster_margin_s": (0.002, 0.0, 1.0, "a frame this far under the delay floor is faster (s)"),
}


class BandwidthMonitor(Node):
    """Estimates the link's bandwidth and RTT from the cloud's receipts."""

    def __init__(self, **kwargs) -> None:
        super().__init__("bandwidth_monitor", **kwargs)
        values = {name: declare_float(self, name, *spec)
                  for name, spec in _ESTIMATOR_FLOATS.items()}
        values["min_pairs"] = declare_int(self, "min_pairs", 3, 1, 1000,
                                          "queued pairs needed for a capacity measurement")
        self._publish_period = declare_float(self, "publish_period_s", 0.2, 0.01, 60.0,
                                             "period of the estimate topics (s)")
        self._diagnostics_period = declare_float(self, "diagnostics_period_s", 1.0, 0.1, 60.0,
                                                 "period of /diagnostics (s)")
        self._estimator = BandwidthEstimator(EstimatorConfig(**values))
        self._malformed = 0
        self._skipped_rows = 0
        self._last_estimate: BandwidthEstimate | None = None
        self._last_probe: TrainMeasurement | None = None
        self._probe_rows_skipped = 0
        self._last_error = ""

        self._bandwidth_pub = self.create_publisher(Float64, "bandwidth_bps", ESTIMATE_QOS)
        self._rtt_pub = self.create_publisher(Float64, "rtt_ms", ESTIMATE_QOS)
        self._lower_pub = self.create_publisher(Bool, "bandwidth_lower_bound", ESTIMATE_QOS)
        self._estimate_pub = self.create_publisher(Float64MultiArray, "bandwidth_estimate",
                                                   ESTIMATE_QOS)
        self._metrics = MetricPublishers(self, METRICS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                      DIAGNOSTICS_QOS)
        self.create_subscription(Float64MultiArray, "receipts", self._on_receipts, RECEIPTS_QOS)
        self.create_subscription(Float64MultiArray, "probe_receipts", self._on_probe_receipts,
                                 RECEIPTS_QOS)
        self._timer = self.create_timer(self._publish_period, self._publish)
        self._diagnostics_timer = self.create_timer(self._diagnostics_period,
                                                    self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    # -- time ----------------------------------------------------------------------------
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- parameters ----------------------------------------------------------------------
    def _config_with(self, parameters: list[Parameter]) -> EstimatorConfig:
        changes = {p.name: p.value for p in parameters
                   if p.name in _ESTIMATOR_FLOATS or p.name == "min_pairs"}
        return dataclasses.replace(self._estimator.config, **changes)

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            self._config_with(parameters)
        except (TypeError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        try:
            self._estimator.reconfigure(self._config_with(parameters))
            for p in parameters:
                if p.name == "publish_period_s":
                    self._publish_period = float(p.value)
                    self.destroy_timer(self._timer)
                    self._timer = self.create_timer(self._publish_period, self._publish)
                elif p.name == "diagnostics_period_s":
                    self._diagnostics_period = float(p.value)
                    self.destroy_timer(self._diagnostics_timer)
                    self._diagnostics_timer = self.create_timer(self._diagnostics_period,
                                                                self._publish_diagnostics)
        except Exception as exc:  # validated already; never let a callback raise
            self._last_error = f"applying parameters failed: {exc}"
            self.get_logger().error(self._last_error)

    # -- receipts ------------------------------------------------------------------------
    def _on_receipts(self, msg: Float64MultiArray) -> None:
        self._take("receipts", msg, self._add_receipts)

    def _on_probe_receipts(self, msg: Float64MultiArray) -> None:
        self._take("probe receipts", msg, self._add_probe_receipts)

    def _take(self, what: str, msg: Float64MultiArray, handle) -> None:
        """Hand a receipts message's rows to ``handle``; a malformed one (ValueError) is
        counted and logged, never raised."""
        try:
            handle(msg.data, msg.layout.dim[0].label if msg.layout.dim else None)
        except ValueError as exc:  # ReceiptError included
            self._malformed += 1
            self._last_error = str(exc)
            self.get_logger().warning(f"dropping a {what} message: {exc}",
                                      throttle_duration_sec=5.0)
        except Exception as exc:
            self._malformed += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"{what} callback failed: {self._last_error}",
                                    throttle_duration_sec=5.0)

    def _add_receipts(self, data, label: str | None) -> None:
        receipts, skipped = parse_receipts(data, label)
        self._skipped_rows += skipped
        faster = self._estimator.faster_frames
        self._estimator.add_many(receipts, self._now_s())
        if self._estimator.faster_frames > faster:  # now, not at the next estimate
            self._metrics.publish(faster_frames=self._estimator.faster_frames)

    def _add_probe_receipts(self, data, label: str | None) -> None:
        packets, skipped = parse_probe_receipts(data, label)
        self._probe_rows_skipped += skipped
        trains: dict[int, list] = {}
        for packet in packets:
            trains.setdefault(packet.train, []).append(packet)
        now = self._now_s()
        for train in sorted(trains):
            measurement = analyze_train(trains[train])
            if measurement is not None:
                self._last_probe = measurement
                self._estimator.add_probe(measurement, now)

    # -- output --------------------------------------------------------------------------
    def _publish(self) -> None:
        try:
            estimate = self._estimator.estimate(self._now_s())
            self._last_estimate = estimate
            # The metrics go first: the link prober plans a train when an estimate arrives,
            # with the queued fraction it has by then (no train while the frames queue).
            metrics = {"queued_fraction": estimate.queued_fraction,
                       "silence_s": estimate.silence_s}
            if estimate.capacity_bps is not None:
                metrics["capacity_bps"] = estimate.capacity_bps
            if estimate.throughput_bps is not None:
                metrics["throughput_bps"] = estimate.throughput_bps
            if estimate.one_way_delay_s is not None:
                metrics["one_way_delay_ms"] = estimate.one_way_delay_s * 1e3
            if self._last_probe is not None and not self._last_probe.lower_bound:
                metrics["probe_rate_bps"] = self._last_probe.rate_bps
            if estimate.receipts or estimate.bandwidth_bps is not None:
                self._metrics.publish(**metrics)
            if estimate.bandwidth_bps is not None:
                # Bandwidth and flag travel together here; the single-value topics below are
                # for rqt_plot.
                self._estimate_pub.publish(make_estimate(
                    estimate.bandwidth_bps, estimate.lower_bound,
                    None if estimate.rtt_s is None else estimate.rtt_s * 1e3, estimate.stale))
                self._bandwidth_pub.publish(Float64(data=float(estimate.bandwidth_bps)))
                self._lower_pub.publish(Bool(data=bool(estimate.lower_bound)))
            if estimate.rtt_s is not None:
                self._rtt_pub.publish(Float64(data=estimate.rtt_s * 1e3))
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"estimate failed: {self._last_error}",
                                    throttle_duration_sec=5.0)

    def stats(self) -> dict[str, int]:
        """Counts so far: receipts, queued pairs, probe trains measured, frames that crossed
        faster than the slightly smaller frames before them (``faster_frames``, in pairs
        within five frames) and malformed messages."""
        est = self._estimator
        return {"receipts": est.received, "queued_pairs": est.queued_pairs,
                "probe_trains": est.probe_trains, "faster_frames": est.faster_frames,
                "malformed_messages": self._malformed}

    def diagnostics(self) -> DiagnosticStatus:
        """The monitor's health as one status (also published on ``/diagnostics``)."""
        e = self._last_estimate
        est = self._estimator
        values: dict[str, object] = {
            **self.stats(), "duplicates": est.duplicates, "out_of_order": est.out_of_order,
            "server_bound_pairs": est.server_bound_pairs,
            "pairs_across_loss": est.pairs_across_loss,
            "pairs_across_probe": est.pairs_across_probe, "skipped_rows": self._skipped_rows,
            "receipts_label": RECEIPT_LABEL,
            "probe_trains_stamped_late": est.probe_trains_stamped_late,
            "probe_rows_skipped": self._probe_rows_skipped,
        }
        probe = self._last_probe
        if probe is not None:
            values.update({"last_probe_bps": f"{probe.rate_bps:.6g}",
                           "last_probe_unresolved": probe.lower_bound,
                           "last_probe_packets": f"{probe.packets}/{probe.sent}"})
        if e is None or e.bandwidth_bps is None:
            level, message = DiagnosticStatus.WARN, "no estimate yet: waiting for receipts"
        else:
            values.update({
                "bandwidth_bps": f"{e.bandwidth_bps:.6g}", "source": e.source,
                "lower_bound": e.lower_bound, "capacity_bps": e.capacity_bps,
                "held_capacity_bps": e.held_capacity_bps, "throughput_bps": e.throughput_bps,
                "rtt_ms": None if e.rtt_s is None else f"{e.rtt_s * 1e3:.3f}",
                "pairs_in_window": e.pairs, "queued_fraction": f"{e.queued_fraction:.3f}",
                "silence_s": f"{e.silence_s:.3f}",
            })
            if e.stale:
                level = DiagnosticStatus.WARN
                message = (f"no receipts for {e.silence_s:.1f} s: link down or sender idle; "
                           "bandwidth capped accordingly")
            elif e.clock_suspect:
                level = DiagnosticStatus.WARN
                message = "negative one-way delay: edge and cloud clocks disagree, RTT unreliable"
            elif e.lower_bound:
                level = DiagnosticStatus.OK
                message = (f"lower bound ({e.source}): link not saturated, capacity may be "
                           "higher")
            elif e.source == "probe":
                level, message = DiagnosticStatus.OK, "capacity measured by probe trains"
            else:
                level, message = DiagnosticStatus.OK, "capacity measured from dispersion"
        if self._last_error:
            values["last_error"] = self._last_error
        return diagnostic_status(self, "bandwidth", level, message, values)

    def _publish_diagnostics(self) -> None:
        try:
            publish_diagnostics(self, self._diagnostics_pub, [self.diagnostics()])
        except Exception as exc:
            self.get_logger().error(f"diagnostics failed: {exc}", throttle_duration_sec=5.0)


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer bandwidth_monitor``."""
    return run_node(BandwidthMonitor, "bandwidth_monitor", args)


if __name__ == "__main__":
    raise SystemExit(main())
