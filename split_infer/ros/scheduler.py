"""Scheduler node: bandwidth and RTT estimates in, the edge's (split point, ratio) out.

A thin rclpy shell over :class:`split_infer.adaptation.scheduling.SchedulingLoop`, which holds
the policy (``planning.choose_configuration`` + ``planning.Hysteresis``, lower-bound handling,
probing, rejection back-off, override).

Topics (relative names, one namespace per robot):

* subscribes ``bandwidth_estimate`` (``std_msgs/Float64MultiArray``: bandwidth, lower-bound
  flag and RTT in one message) from the bandwidth monitor, the edge's ``metrics/edge_ms``
  (its measured time per frame: what the running configuration really costs, see
  ``SchedulingLoop.observe_edge_time``) or, when ``edge_timing`` has ``measured_cpu_ms``,
  ``metrics/edge_cpu_ms`` (its CPU time per frame, ``SchedulingLoop.observe_edge_cpu``;
  ``metrics/companion_cpu_ms`` times a running mix's companion), ``metrics/received_fps`` and
  ``metrics/camera_share`` (the camera frames it took: a robot that loses frames is slower
  than its time per frame says), ``metrics/bytes_per_frame`` (the frames' real size, which
  the scene sets: ``SchedulingLoop.observe_frame_bytes``), ``metrics/fallback_cpu_ms`` (what
  each frame its fallback classified on board cost, ``SchedulingLoop.observe_fallback``) and
  ``/parameter_events`` (to follow what the edge really runs and whether its ``fallback``
  fills the robot's spare time, ``SchedulingLoop.set_edge_fallback``, whoever changed them);
* publishes ``metrics/split_point``, ``metrics/ratio``, ``metrics/companion_share`` (0: the
  configuration alone),
  ``metrics/predicted_effective_accuracy``, ``metrics/predicted_latency_ms``,
  ``metrics/decision_bandwidth_bps``, ``metrics/rtt_ms``, ``metrics/probing``,
  ``metrics/switches``, ``metrics/rejections``, ``metrics/robot_factor`` (how much slower,
  above 1, or faster than planned the robot has run) (``std_msgs/Float64``) and ``/diagnostics``.

It decides every ``period_s`` and, besides, when an estimate arrives that shows a rise from a
steady link (:meth:`~split_infer.adaptation.variation.CapacityWindow.acts_at_once`), so a step
up moves the edge as soon as a second measurement confirms it.

It applies a decision by setting the edge node's ``split_point`` (int) and ``ratio`` (double)
**in one SetParametersAtomically request**, so the edge's parameter callback sees both values
together and validates the pair. (rclpy's plain ``set_parameters`` service sets the listed
parameters one by one: the edge would see a new split with the old ratio first.)

Parameters: ``bundle`` (path), ``edge_node`` (read-only; relative names resolve in this node's
namespace), ``edge_only`` (read-only: also choose the edge-only configuration ``-1:1``, the
whole model on the robot), ``edge_timing`` (read-only: edge times measured on the robot,
``edge_timing.json`` of ``split-infer plan --edge-cpu``, instead of the bundle's profile),
``edge_time_scale`` (read-only: without a file, the profile's edge times × this),
``objective`` (``effective_accuracy`` | ``latency`` | ``accuracy``), ``frame_rate`` (T_gen,
Hz), ``deadline_ms`` (0 = none), ``margin``, ``min_dwell_s``, ``override`` (``"split:ratio"``
or empty), ``probe_interval_s`` (0 = never), ``probe_gain``, ``retry_backoff_s``,
``max_accuracy_loss`` (1 = no constraint), ``link_share`` (of a capacity estimate, what the
frames are planned for), ``variation_window_s`` (plan for the capacity estimates of this long,
restarted at a level change; 0 = the newest estimate only), ``mixing`` (off by default: also
plan a companion configuration on a share of the frames, set with the pair in the same atomic
request as the edge's ``companion`` and ``companion_share``, where the edge has them; with
``mixing`` off the scheduler leaves those two alone and follows the edge's primary),
``period_s``,
``request_timeout_s``, ``estimate_timeout_s``. All but the read-only ones are live-changeable.
"""

from __future__ import annotations

import json
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterEvent, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import qos_profile_parameter_events
from rclpy.task import Future
from std_msgs.msg import Float64, Float64MultiArray

from split_infer.adaptation.configurations import (
    configurations_from_bundle,
    parse_override,
    planned_cpu_times,
    with_edge_timing,
)
from split_infer.adaptation.explaining import describe, explain_step
from split_infer.adaptation.policy import OBJECTIVES
from split_infer.adaptation.scheduling import LinkState, SchedulerSettings, SchedulingLoop, Step
from split_infer.bundle import Bundle
from split_infer.config_key import format_config_key, parse_config_key
from split_infer.planning.mixing import MixedConfiguration
from split_infer.ros.common import (
    MetricPublishers,
    declare_bool,
    declare_float,
    declare_str,
    diagnostic_status,
    node_fqn,
    publish_diagnostics,
    run_node,
)
from split_infer.ros.messages import (
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    ESTIMATE_READER_QOS,
    edge_configuration_event,
    parse_estimate,
)

__all__ = ["Scheduler", "main"]


METRICS = ("split_point", "ratio", "companion_share", "predicted_effective_accuracy",
           "predicted_latency_ms", "decision_bandwidth_bps", "rtt_ms", "probing", "switches",
           "rejections", "robot_factor")

_SETTINGS_FLOATS = {
    # parameter: (default, low, high, description)
    "frame_rate": (10.0, 0.01, 1000.0, "camera frame rate T_gen (Hz)"),
    "deadline_ms": (0.0, 0.0, 3.6e6, "latency deadline (ms); 0 = none"),
    "margin": (0.03, 0.0, 1.0, "hysteresis: score gain needed to switch (objective units)"),
    "min_dwell_s": (2.0, 0.0, 3600.0, "hysteresis: least time between switches (s)"),
    "probe_interval_s": (10.0, 0.0, 3600.0, "probe for more bandwidth this often (s); 0 = never"),
    "probe_gain": (2.0, 1.01, 16.0, "a probe looks up by this factor per rung (> 1)"),
    "retry_backoff_s": (5.0, 0.01, 600.0, "first back-off after the edge refuses (s)"),
    "max_accuracy_loss": (1.0, 0.0, 1.0, "exclude configs this far below the best; 1 = off"),
    "link_share": (0.85, 0.1, 1.0, "plan frames for this share of a capacity estimate (probes "
                   "and headers take the rest)"),
    "variation_window_s": (30.0, 0.0, 600.0, "plan for the expected effective accuracy over the "
                           "capacity estimates of this long (s); 0 = the newest estimate only"),
}
_NODE_FLOATS = {
    "period_s": (0.5, 0.01, 60.0, "decision period (s)"),
    "request_timeout_s": (5.0, 0.05, 600.0, "give up on an unanswered parameter request (s)"),
    "estimate_timeout_s": (5.0, 0.05, 3600.0, "ignore bandwidth estimates older than this (s)"),
}


def _settings_from(values: dict[str, object]) -> SchedulerSettings:
    deadline_ms = float(values["deadline_ms"])  # type: ignore[arg-type]
    loss = float(values["max_accuracy_loss"])  # type: ignore[arg-type]
    retry = float(values["retry_backoff_s"])  # type: ignore[arg-type]
    return SchedulerSettings(
        objective=str(values["objective"]),
        frame_rate_hz=float(values["frame_rate"]),  # type: ignore[arg-type]
        deadline_s=deadline_ms / 1e3 if deadline_ms > 0 else None,
        margin=float(values["margin"]),  # type: ignore[arg-type]
        min_dwell_s=float(values["min_dwell_s"]),  # type: ignore[arg-type]
        probe_interval_s=float(values["probe_interval_s"]),  # type: ignore[arg-type]
        probe_gain=float(values["probe_gain"]),  # type: ignore[arg-type]
        retry_backoff_s=retry,
        max_retry_backoff_s=max(60.0, retry),
        max_accuracy_loss=loss if loss < 1.0 else None,
        link_share=float(values["link_share"]),  # type: ignore[arg-type]
        variation_window_s=float(values["variation_window_s"]),  # type: ignore[arg-type]
        mixing=bool(values["mixing"]),
    )


class Scheduler(Node):
    """Chooses the edge's split point and ratio from the live estimates and the bundle."""

    def __init__(self, **kwargs) -> None:
        super().__init__("scheduler", **kwargs)
        self._values: dict[str, object] = {
            name: declare_float(self, name, *spec) for name, spec in _SETTINGS_FLOATS.items()}
        self._values["objective"] = declare_str(
            self, "objective", "effective_accuracy",
            "effective_accuracy (Hu & K ν_eff), latency (thesis eq. 4.1) or accuracy",
            choices=OBJECTIVES)
        self._values["mixing"] = declare_bool(
            self, "mixing", False, "also plan each configuration with a companion on a share "
            "of the frames (the edge's companion/companion_share, where it has them): a late "
            "split that keeps a weak robot busy and an early one that fills the link")
        self._node_values = {name: declare_float(self, name, *spec)
                             for name, spec in _NODE_FLOATS.items()}
        bundle_path = declare_str(self, "bundle", "", "path of the bundle directory")
        edge_node = declare_str(self, "edge_node", "edge_node",
                                "the edge node whose split_point/ratio are set", read_only=True)
        override = declare_str(self, "override", "",
                               "pin a configuration: 'split:ratio' ('-1:1': edge-only), or "
                               "empty for the policy")
        self._edge_timing = declare_str(
            self, "edge_timing", "", "edge times measured on this robot (edge_timing.json of "
            "'split-infer plan --edge-cpu', or any {measured_ms: {id: ms}}); empty: the "
            "bundle's profile", read_only=True)
        self._edge_time_scale = declare_float(
            self, "edge_time_scale", 1.0, 0.01, 1000.0, "the robot's edge times as a multiple "
            "of the bundle's profile, when there is no edge_timing file (e.g. 4: a robot four "
            "times slower than the machine that profiled the bundle)", read_only=True)
        self._edge_only = declare_bool(self, "edge_only", False,
                                       "also choose the edge-only configuration (-1, 1): the "
                                       "bundle's whole model on the robot, nothing sent; the "
                                       "edge node must be able to load it", read_only=True)
        self._settings = _settings_from(self._values)  # ValueError here: bad launch values

        self._loop: SchedulingLoop | None = None
        self._staged: tuple[SchedulingLoop, list[str]] | None = None
        self._bundle_error = ""
        self._skipped: list[str] = []
        if bundle_path:
            try:
                self._loop, self._skipped = self._load(bundle_path)
            except Exception as exc:  # a bad path must not kill the node: say so, stay up
                self._bundle_error = str(exc)
                self.get_logger().error(f"cannot use bundle {bundle_path!r}: {exc}")
        else:
            self._bundle_error = "parameter 'bundle' is empty"
        if override and self._loop is not None:
            try:
                self._loop.set_override(parse_override(override))
            except (KeyError, ValueError) as exc:
                self.get_logger().error(f"ignoring override {override!r}: {exc}")

        self._edge_fqn = node_fqn(self, edge_node)
        self._client = AsyncParameterClient(self, edge_node)
        self._bandwidth: tuple[float, float] | None = None  # (bps, received at)
        self._rtt_s = 0.0
        self._lower_bound = False
        self._request: tuple[int, Future, float] | None = None  # (id, future, sent at)
        self._request_ids = 0
        self._edge_params: dict[str, float | str] = {}
        self._reading_edge = False
        self._last_step: Step | None = None
        self._last_error = ""

        self.create_subscription(Float64MultiArray, "bandwidth_estimate", self._on_estimate,
                                 ESTIMATE_READER_QOS)
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_parameter_event,
                                 qos_profile_parameter_events)
        edge_namespace = self._edge_fqn.rsplit("/", 1)[0]  # the edge's relative topics' root
        self.create_subscription(Float64, f"{edge_namespace}/metrics/edge_ms", self._on_edge_ms,
                                 10)
        # Before edge_cpu_ms: the edge publishes a period's fallback figure first, and the
        # loop must know of the fallback's frames when it credits that period's CPU time.
        self.create_subscription(Float64, f"{edge_namespace}/metrics/fallback_cpu_ms",
                                 self._on_fallback_cpu_ms, 10)
        self.create_subscription(Float64, f"{edge_namespace}/metrics/edge_cpu_ms",
                                 self._on_edge_cpu_ms, 10)
        self.create_subscription(Float64, f"{edge_namespace}/metrics/companion_cpu_ms",
                                 self._on_companion_cpu_ms, 10)
        self.create_subscription(Float64, f"{edge_namespace}/metrics/bytes_per_frame",
                                 self._on_bytes_per_frame, 10)
        self._received_fps: float | None = None  # the edge's, until its camera_share comes
        self.create_subscription(Float64, f"{edge_namespace}/metrics/received_fps",
                                 self._on_received_fps, 10)
        self.create_subscription(Float64, f"{edge_namespace}/metrics/camera_share",
                                 self._on_camera_share, 10)
        self._metrics = MetricPublishers(self, METRICS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                      DIAGNOSTICS_QOS)
        self._timer = self.create_timer(float(self._node_values["period_s"]), self._tick)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    # -- helpers -------------------------------------------------------------------------
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _load(self, path: str) -> tuple[SchedulingLoop, list[str]]:
        bundle = Bundle.load(Path(path))
        configs, skipped = configurations_from_bundle(bundle,
                                                      include_edge_only=self._edge_only)
        planned_cpu_s: dict[str, float] = {}
        if self._edge_timing:
            timing = json.loads(Path(self._edge_timing).read_text())
            if not isinstance(timing, dict) or not isinstance(timing.get("measured_ms"), dict):
                raise ValueError(f"{self._edge_timing}: expected {{\"measured_ms\": {{id: ms}}}}")
            configs = with_edge_timing(configs, timing["measured_ms"],
                                       timing.get("edge_time_scale"))
            planned_cpu_s = planned_cpu_times(configs, timing.get("measured_cpu_ms") or {})
        elif self._edge_time_scale != 1.0:
            configs = with_edge_timing(configs, {}, self._edge_time_scale)
        if skipped:
            self.get_logger().warning(f"bundle configurations without measured numbers are not "
                                      f"scheduled: {', '.join(skipped)}")
        return SchedulingLoop(configs, self._settings, planned_cpu_s), skipped

    @property
    def loop(self) -> SchedulingLoop | None:
        """The decision loop (None while no usable bundle is loaded)."""
        return self._loop

    # -- parameters ----------------------------------------------------------------------
    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            values = dict(self._values)
            for p in parameters:
                if p.name in values:
                    values[p.name] = p.value
            _settings_from(values)
            for p in parameters:
                if p.name == "bundle":
                    # Load now, so a bad path is refused instead of leaving the node without one.
                    self._staged = self._load(str(p.value)) if p.value else None
                elif p.name == "override":
                    key = parse_override(str(p.value))
                    loop = self._staged_loop(parameters)
                    if key is not None and (loop is None or loop.lookup(*key) is None):
                        known = ([f"{c.split_point}:{c.ratio:g}" for c in loop.configurations]
                                 if loop is not None else [])
                        return SetParametersResult(
                            successful=False,
                            reason=f"no configuration {p.value!r} in the bundle; known: {known}")
        except Exception as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _staged_loop(self, parameters: list[Parameter]) -> SchedulingLoop | None:
        if any(p.name == "bundle" for p in parameters):
            return self._staged[0] if self._staged else None
        return self._loop

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        try:
            for p in parameters:
                if p.name in self._values:
                    self._values[p.name] = p.value
                elif p.name in self._node_values:
                    self._node_values[p.name] = float(p.value)
            self._settings = _settings_from(self._values)
            names = {p.name for p in parameters}
            if "bundle" in names:
                staged = self._staged
                self._loop, self._skipped = staged if staged else (None, [])
                self._bundle_error = "" if staged else "parameter 'bundle' is empty"
                self._staged = None
                override = str(self.get_parameter("override").value)
                if self._loop is not None and "override" not in names and override:
                    key = parse_override(override)
                    if key is not None and self._loop.lookup(*key) is not None:
                        self._loop.set_override(key)
                self._observe_edge()  # what the edge runs, in the new bundle's terms
            if self._loop is not None:
                self._loop.update_settings(self._settings)
            for p in parameters:
                if p.name == "override" and self._loop is not None:
                    self._loop.set_override(parse_override(str(p.value)))
                elif p.name == "period_s":
                    self.destroy_timer(self._timer)
                    self._timer = self.create_timer(float(p.value), self._tick)
        except Exception as exc:  # validated already; never let a callback raise
            self._last_error = f"applying parameters failed: {exc}"
            self.get_logger().error(self._last_error)

    # -- inputs --------------------------------------------------------------------------
    def _on_estimate(self, msg: Float64MultiArray) -> None:
        try:
            estimate = parse_estimate(msg)
        except ValueError as exc:
            self._last_error = f"ignored an estimate: {exc}"
            return
        # A silence cap is planned with as it is: nothing crossed the link for a while, and
        # the smallest configuration (or edge-only) is right until something does.
        previous = self._bandwidth
        self._bandwidth = (estimate.bandwidth_bps, self._now_s())
        self._lower_bound = estimate.lower_bound
        if estimate.rtt_ms is not None:
            self._rtt_s = estimate.rtt_ms / 1e3
        # A rise from a steady link is decided on at once, not up to period_s later; the same
        # value again is the same measurement (the monitor republishes it every period).
        if (self._loop is not None and (previous is None or previous[0] != estimate.bandwidth_bps)
                and self._loop.capacity.acts_at_once(estimate.bandwidth_bps)):
            self._tick()

    def _on_edge_ms(self, msg: Float64) -> None:
        if self._loop is not None:
            self._loop.observe_edge_time(self._now_s(), float(msg.data) / 1e3)

    def _on_edge_cpu_ms(self, msg: Float64) -> None:
        if self._loop is not None:
            self._loop.observe_edge_cpu(self._now_s(), float(msg.data) / 1e3)

    def _on_companion_cpu_ms(self, msg: Float64) -> None:
        if self._loop is not None:
            self._loop.observe_edge_cpu(self._now_s(), float(msg.data) / 1e3, companion=True)

    def _on_bytes_per_frame(self, msg: Float64) -> None:
        if self._loop is not None:
            self._loop.observe_frame_bytes(self._now_s(), float(msg.data))

    def _on_received_fps(self, msg: Float64) -> None:
        self._received_fps = float(msg.data)  # the edge publishes its camera_share next

    def _on_camera_share(self, msg: Float64) -> None:
        if self._loop is not None and self._received_fps is not None:
            self._loop.observe_received(self._now_s(), self._received_fps, float(msg.data))

    def _on_fallback_cpu_ms(self, msg: Float64) -> None:
        if self._loop is not None:
            self._loop.observe_fallback(self._now_s(), float(msg.data) / 1e3)

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        try:
            if edge_configuration_event(event, self._edge_fqn, self._edge_params):
                self._observe_edge()
        except Exception as exc:
            self._last_error = f"parameter event: {exc}"

    def _observe_edge(self) -> None:
        if self._loop is None:
            return
        params = self._edge_params
        self._loop.set_edge_fallback(params.get("fallback") == "edge_only")
        self._loop.set_edge_companion("companion" in params)
        if "split_point" not in params or "ratio" not in params:
            return
        companion = str(params.get("companion", ""))
        try:
            partner = parse_config_key(companion) if companion else None
        except ValueError:
            partner = None
        config = self._loop.observe_edge(self._now_s(), int(params["split_point"]),
                                         float(params["ratio"]), partner,
                                         float(params.get("companion_share", 0.0)))
        if config is None:
            self._last_error = (f"the edge runs split {params['split_point']}, ratio "
                                f"{params['ratio']:g}, which the bundle does not have")

    def _read_edge(self) -> None:
        """Ask the edge once what it runs (parameter events only tell about changes), then
        its ``fallback`` and its companion apart: an edge without one of those parameters
        answers a request naming it with nothing at all."""
        self._reading_edge = True

        def done(future: Future) -> None:
            self._reading_edge = False
            try:
                values = future.result().values
                if len(values) == 2 and values[0].type == ParameterType.PARAMETER_INTEGER:
                    self._edge_params.update(split_point=values[0].integer_value,
                                             ratio=values[1].double_value)
                    self._observe_edge()
                    for what, names in (("fallback", ["fallback"]),
                                        ("companion", ["companion", "companion_share"])):
                        self._client.get_parameters(names, optional_done(what, names))
            except Exception as exc:
                self._last_error = f"reading the edge's parameters failed: {exc}"

        def optional_done(what: str, names: list[str]):
            """A read of parameters an older edge may not have (string first): kept where the
            edge has them, unless a parameter event came first."""
            def read(future: Future) -> None:
                try:
                    values = future.result().values
                    if (len(values) == len(names)
                            and values[0].type == ParameterType.PARAMETER_STRING):
                        for name, value in zip(names, values, strict=True):
                            self._edge_params.setdefault(name, parameter_value_to_python(value))
                        self._observe_edge()
                except Exception as exc:
                    self._last_error = f"reading the edge's {what} failed: {exc}"
            return read

        self._client.get_parameters(["split_point", "ratio"], done)

    # -- the decision tick ---------------------------------------------------------------
    def _link_state(self, now_s: float) -> LinkState | None:
        if self._bandwidth is None:
            return None
        bps, at = self._bandwidth
        if now_s - at > float(self._node_values["estimate_timeout_s"]):
            return None
        return LinkState(bps, self._rtt_s, self._lower_bound)

    def _tick(self) -> None:
        try:
            self._decide()
        except Exception as exc:  # never let the timer die
            self._last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"decision failed: {self._last_error}",
                                    throttle_duration_sec=5.0)
        try:
            self._publish()
        except Exception as exc:
            self.get_logger().error(f"publishing failed: {exc}", throttle_duration_sec=5.0)

    def _decide(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = self._now_s()
        if self._request is not None:
            _, future, sent = self._request
            if now - sent > float(self._node_values["request_timeout_s"]):
                future.cancel()
                self._request = None
                if loop.pending is not None:
                    loop.request_done(now, loop.pending, False, "no answer (timeout)")
            return
        if not self._client.services_are_ready():
            return  # diagnostics report the edge as unreachable
        if loop.active is None and not self._reading_edge:
            self._read_edge()
        step = loop.step(now, self._link_state(now))
        self._last_step = step
        if step.apply and step.target is not None:
            self._send(step)

    def _send(self, step: Step) -> None:
        loop = self._loop
        target = step.target
        assert loop is not None and target is not None
        now = self._now_s()
        try:
            why = explain_step(loop, step, loop.active)
        except Exception as exc:  # only the log line's; the request goes out regardless
            why = f"no explanation: {exc}"
        loop.request_sent(now, target)
        self._request_ids += 1
        request_id = self._request_ids
        parameters = [
            Parameter("split_point", Parameter.Type.INTEGER, int(target.split_point or 0)),
            Parameter("ratio", Parameter.Type.DOUBLE, float(target.ratio)),
        ]
        if loop.mixes:  # the companion with them, in one request (mixing off: not ours to set)
            mixed = isinstance(target, MixedConfiguration)
            parameters += [
                Parameter("companion", Parameter.Type.STRING, format_config_key(
                    target.companion.split_point, target.companion.ratio) if mixed else ""),
                Parameter("companion_share", Parameter.Type.DOUBLE,
                          float(target.share) if mixed else 0.0)]
        described = describe(target)

        def done(future: Future) -> None:
            try:
                if self._request is None or self._request[0] != request_id or loop.pending is None:
                    return  # timed out already, or the bundle was swapped meanwhile
                self._request = None
                when = self._now_s()
                if future.cancelled() or future.exception() is not None:
                    loop.request_done(when, target, False, f"request failed: "
                                      f"{future.exception() or 'cancelled'}")
                    return
                result = future.result().result
                loop.request_done(when, target, bool(result.successful), result.reason)
                if result.successful:
                    self.get_logger().info(f"edge now runs {described} ({step.reason}"
                                           f"{'; ' + why if why else ''})")
                else:
                    self.get_logger().warning(
                        f"edge refused {described}: {result.reason or 'no reason given'}; "
                        "backing off")
            except Exception as exc:
                self._last_error = f"handling the edge's answer failed: {exc}"

        future = self._client.set_parameters_atomically(parameters)
        self._request = (request_id, future, now)
        future.add_done_callback(done)

    # -- output --------------------------------------------------------------------------
    def _publish(self) -> None:
        step = self._last_step
        loop = self._loop
        if step is not None and loop is not None and step.target is not None:
            target = step.target
            values: dict[str, float] = {
                "split_point": float(target.split_point or 0), "ratio": target.ratio,
                "companion_share": target.share if isinstance(target, MixedConfiguration)
                else 0.0,
                "probing": float(step.probing), "switches": float(loop.switches),
                "rejections": float(loop.rejections), "robot_factor": loop.robot_factor,
            }
            if step.bandwidth_bps is not None:
                values["decision_bandwidth_bps"] = step.bandwidth_bps
                nu = step.predicted_effective_accuracy(self._settings.frame_rate_hz)
                if nu is not None:
                    values["predicted_effective_accuracy"] = nu
            if step.decision is not None:
                values["predicted_latency_ms"] = step.decision.latency_s * 1e3
            if step.rtt_s is not None:
                values["rtt_ms"] = step.rtt_s * 1e3
            self._metrics.publish(**values)
        publish_diagnostics(self, self._diagnostics_pub, [self.diagnostics()])

    def diagnostics(self) -> DiagnosticStatus:
        """The scheduler's state as one status (also published on ``/diagnostics``)."""
        loop = self._loop
        if loop is None:
            return diagnostic_status(self, "scheduler", DiagnosticStatus.ERROR,
                                     f"no bundle: {self._bundle_error}",
                                     {"edge_node": self._edge_fqn})
        step = self._last_step
        values: dict[str, object] = {
            "edge_node": self._edge_fqn, "objective": self._settings.objective,
            "active": loop.active.name if loop.active else "unknown",
            "target": step.target.name if step and step.target else "",
            "reason": step.reason if step else "",
            "override": loop.override.name if loop.override else "",
            "bandwidth_lower_bound": self._lower_bound, "switches": loop.switches,
            "probes": loop.probes, "failed_probes": loop.failed_probes,
            "rejections": loop.rejections, "last_rejection": loop.last_rejection,
            "unscheduled_configurations": ",".join(self._skipped),
            "capacity_window_estimates": len(loop.capacity),
            "capacity_window_sd_bps": round(loop.capacity.spread_bps()),
            "capacity_window_restarts": loop.capacity.restarts,
            "capacity_outliers_left_out": loop.capacity.outliers,
            "robot_factor": round(loop.robot_factor, 3),
            "robot_timed_by": "cpu" if loop.cpu_timed else "wall",
            "edge_fallback_planned": loop.fallback is not None,
            "edge_companion_planned": loop.mixes,
        }
        if self._last_error:
            values["last_error"] = self._last_error
        level = DiagnosticStatus.OK
        message = step.reason if step else "starting"
        if self._bandwidth is None and loop.override is None:
            level, message = DiagnosticStatus.WARN, "no bandwidth estimate yet"
        elif not self._client.services_are_ready():
            level, message = DiagnosticStatus.WARN, f"{self._edge_fqn} is not reachable"
        elif loop.last_rejection and (step is None or step.target != loop.active):
            level = DiagnosticStatus.WARN
            message = f"edge refused {loop.last_rejection}"
        return diagnostic_status(self, "scheduler", level, message, values)


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer scheduler --ros-args -p bundle:=DIR``."""
    return run_node(Scheduler, "scheduler", args)


if __name__ == "__main__":
    raise SystemExit(main())

