"""The edge (robot) node: camera frame → head → encoder → wire frame on ``features``.

::

    image (sensor_msgs/Image, CAMERA_QOS depth 1)        receipts (Float64MultiArray)
    or image/compressed (CompressedImage)                bandwidth_bps, bandwidth_lower_bound
          │ np.frombuffer, converted only if processed          │
          ▼                                                      ▼
    pipeline.edge.EdgePipeline.process: rate limit ─▶ backpressure (thesis §4.3) ─▶ head ─▶
          codec ─▶ wire.pack          (every decision, counter and configuration lives there)
          │
          ▼
    features (sensor_msgs/CompressedImage, FEATURE_QOS): header = camera header unchanged,
              format = "split_infer/1; <codec spec>", data = wire frame bytes

This node only translates between ROS and :class:`~split_infer.pipeline.edge.EdgePipeline`.

Topics (relative, so one namespace per robot works):

* subscribes ``image`` (``input_type:=raw``) or ``image/compressed`` (``input_type:=compressed``,
  PNG/JPEG), ``receipts`` (from the cloud: acknowledgements and server time) and
  ``bandwidth_estimate`` (the bandwidth monitor's estimate in bit/s with its lower-bound flag,
  one message: a lower bound, what an unsaturated link delivered, is not used for pacing);
* publishes ``features``, ``metrics/*`` (``std_msgs/Float64``, 1 Hz, :data:`EDGE_METRICS`:
  per-frame values as the period's mean; ``received_fps``, ``camera_share``: the camera frames
  that reached it before its own drops, per second and as a share of the camera's;
  ``edge_cpu_ms`` and ``fallback_cpu_ms``: the process's CPU per frame of the active
  configuration and of the fallback, ``PeriodReport``) and ``/diagnostics`` at 1 Hz; with
  ``fallback:=edge_only`` also ``results`` (the cloud's format, ``split_point`` -1) for the
  frames it classified itself (``fallback_fps`` of them); ``companion_fps`` and
  ``companion_cpu_ms``: the frames sent with the companion configuration, and their CPU each.

Parameters (``ros2 param describe`` shows ranges): ``bundle`` (required, read-only),
``split_point`` and ``ratio`` (the active configuration; change them together with
``set_parameters_atomically``, as the scheduler does), ``backend``, ``input_type``,
``max_rate``, ``backpressure``, ``fallback``, ``max_in_flight``, ``ack_timeout``,
``server_rate_limit_ms``, ``companion`` and ``companion_share`` (a second configuration on a
share of the frames, :mod:`split_infer.pipeline.edge`; live settings in
:mod:`.edge_parameters`), ``preload``, ``threads``, ``auth_key_file`` and ``auth_key_id``.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header

from split_infer.adaptation.configurations import initial_configuration
from split_infer.bundle import Bundle
from split_infer.frame_auth import KeyFileError, load_key_file, single_key
from split_infer.pipeline.edge import (
    EDGE_ONLY_SPLIT,
    EdgeConfigError,
    EdgePipeline,
    FrameOutcome,
    parse_preload,
)
from split_infer.pipeline.engine import EdgeConfig
from split_infer.pipeline.images import SerializedCamera
from split_infer.ros.common import (
    MetricPublishers,
    NodeConfigError,
    declare_float,
    declare_int,
    declare_str,
    declare_str_array,
    diagnostic_status,
    guarded_timer,
    publish_diagnostics,
    rejected,
    run_node,
    shutting_down,
)
from split_infer.ros.edge_parameters import declare_edge_settings
from split_infer.ros.messages import (
    CAMERA_QOS,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    ESTIMATE_READER_QOS,
    FEATURE_QOS,
    RECEIPTS_QOS,
    RESULT_QOS,
    parse_estimate,
    parse_receipts,
    results_message,
)
from split_infer.wire import format_string

__all__ = ["EdgeNode", "main"]

INPUT_TYPES = ("raw", "compressed")
EDGE_METRICS = ("fps", "received_fps", "camera_share", "bytes_per_frame", "drop_rate", "edge_ms",
                "active_split", "active_ratio", "fallback_fps", "fallback_cpu_ms", "edge_cpu_ms",
                "companion_fps", "companion_cpu_ms")
_LOG_THROTTLE_S = 5.0


class EdgeNode(Node):
    """Runs the head and encoder of a bundle on camera frames; see the module docstring."""
    EXECUTOR_KIND = "single"  # frames may take longer than the camera interval: executor_kind

    def __init__(self, **kwargs) -> None:
        super().__init__("edge_node", **kwargs)
        bundle_path = declare_str(self, "bundle", "", "path of the bundle directory (required)",
                                  read_only=True)
        split_point = declare_int(self, "split_point", -1, -1, 0xFFFF,
                                  "active split point; -1 at start-up: the preloaded "
                                  "configuration with the best effective accuracy on a link "
                                  "that carries just the smallest frames (for the given "
                                  "ratio, if any)")
        ratio = declare_float(self, "ratio", 0.0, 0.0, 1e6,
                              "active compression ratio; 0 at start-up: the configuration "
                              "chosen as for split_point -1 (at the given split point, if any)")
        settings = declare_edge_settings(self)
        input_type = declare_str(self, "input_type", "raw", "raw: sensor_msgs/Image on "
                                 "'image'; compressed: CompressedImage on 'image/compressed'",
                                 choices=INPUT_TYPES, read_only=True)
        preload = declare_str_array(self, "preload", ["all"],
                                    "configurations to load, as 'split:ratio' entries, or "
                                    "['all']", read_only=True)
        threads = declare_int(self, "threads", 0, 0, 256,
                              "ONNX Runtime intra-op threads; 0 = its default", read_only=True)
        key_file = declare_str(self, "auth_key_file", "", "sign every frame with a key of "
                               "this file (split_infer.frame_auth); '' = off", read_only=True)
        key_id = declare_int(self, "auth_key_id", -1, -1, 0xFFFFFFFF, "the key to sign with; "
                             "-1: the file's only key", read_only=True)
        if not bundle_path:
            raise NodeConfigError("parameter 'bundle' is required: the path of a bundle "
                                  "directory (manifest.json + ONNX parts)")
        if input_type not in INPUT_TYPES:
            raise NodeConfigError(f"input_type {input_type!r}: choose one of {INPUT_TYPES}")
        bundle = Bundle.load(bundle_path)
        try:
            configs = parse_preload(bundle, preload)
            initial = initial_configuration(configs, split_point, ratio)
            signer = single_key(load_key_file(key_file), key_id) if key_file else None
            self._pipeline = EdgePipeline(bundle, configs, initial.key, settings,
                                          threads=threads or None, signer=signer,
                                          clock_ns=lambda: self.get_clock().now().nanoseconds)
        except (EdgeConfigError, KeyFileError, LookupError) as exc:
            raise NodeConfigError(str(exc)) from None

        # Frames are processed one at a time (one head, one engine); receipts, estimates and
        # the diagnostics timer run in a second group so they are never stuck behind a frame.
        frames, aux = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self._features_pub = self.create_publisher(CompressedImage, "features", FEATURE_QOS)
        # The fallback's results go where the cloud publishes this robot's results.
        self._results_pub = self.create_publisher(DiagnosticArray, "results", RESULT_QOS)
        self._metrics = MetricPublishers(self, EDGE_METRICS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                      DIAGNOSTICS_QOS)
        # Camera messages arrive serialized (raw=True) and are read in place: deserialising a
        # camera frame into a Python message copied every pixel twice (bench/results/cpu).
        self._compressed = input_type == "compressed"
        if input_type == "raw":
            self.create_subscription(Image, "image", self._on_image, CAMERA_QOS,
                                     callback_group=frames, raw=True)
        else:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image,
                                     CAMERA_QOS, callback_group=frames, raw=True)
        self.create_subscription(Float64MultiArray, "receipts", self._on_receipts,
                                 RECEIPTS_QOS, callback_group=aux)
        self.create_subscription(Float64MultiArray, "bandwidth_estimate", self._on_estimate,
                                 ESTIMATE_READER_QOS, callback_group=aux)
        self.create_timer(1.0, guarded_timer(self, self._report), callback_group=aux)

        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Show the configuration actually chosen (the -1/0 start-up defaults are resolved).
        self.set_parameters_atomically([
            Parameter("split_point", Parameter.Type.INTEGER, initial.split_point),
            Parameter("ratio", Parameter.Type.DOUBLE, float(initial.ratio)),
        ])
        self.get_logger().info(
            f"bundle {bundle.path} ({bundle.model_name}), {len(configs)} configurations "
            f"preloaded, active split {initial.split_point} ratio {initial.ratio:g} "
            f"({initial.codec}), input {input_type}, backend {settings.backend}")

    @property
    def pipeline(self) -> EdgePipeline:
        """The ROS-free pipeline this node feeds (counters, active configuration)."""
        return self._pipeline

    @property
    def active(self) -> EdgeConfig:
        return self._pipeline.active  # what the next frame will be encoded with

    def stats(self) -> dict[str, object]:
        return self._pipeline.stats()  # see EdgePipeline.stats

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        try:
            for line in self._pipeline.reconfigure(**{p.name: p.value for p in params
                                                      if p.name != "bundle"}):
                self.get_logger().info(line)
        except EdgeConfigError as exc:
            return rejected(str(exc))
        return SetParametersResult(successful=True)

    # -- frames ---------------------------------------------------------------------------------
    def _on_image(self, raw: bytes) -> None:
        """One serialized camera frame: the pipeline decides (and reads the pixels only if it
        keeps the frame); publish what it made of it, log what went wrong."""
        camera = SerializedCamera(raw, self._compressed)
        outcome = self._pipeline.process(camera.frame, stamp_s=camera.stamp_s())
        try:
            if outcome.kind in ("sent", "classified"):  # the camera header rides along
                header = Header(frame_id=camera.header.frame_id)
                header.stamp.sec, header.stamp.nanosec = camera.header.sec, camera.header.nanosec
            if outcome.kind == "sent":
                out = CompressedImage(header=header, format=format_string(
                    outcome.config.codec.spec, self._pipeline.wire_version))
                out.data = outcome.data
                with self._pipeline.times.stage("publish"):
                    self._features_pub.publish(out)
                self._metrics.add(bytes_per_frame=len(outcome.data),
                                  edge_ms=outcome.edge_s * 1e3)
            elif outcome.kind == "classified":
                bundle = self._pipeline.bundle
                self._results_pub.publish(results_message(
                    header, outcome.logits, min(5, len(bundle.classes)), bundle.classes,
                    self.get_namespace(), outcome.seq, EDGE_ONLY_SPLIT, 1.0))
            elif outcome.error is not None:
                self._log_drop(outcome)
        except Exception as exc:  # a callback must never take the executor down
            if shutting_down(self):
                return  # a frame in flight at shutdown is not an error
            self._pipeline.drops.add("internal_error")
            self.get_logger().error(f"publishing a frame failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=_LOG_THROTTLE_S)

    def _log_drop(self, outcome: FrameOutcome) -> None:
        error, log = outcome.error, self.get_logger()
        if outcome.reason != "internal_error":  # image_* or encode_*: bad input, counted
            log.warning(f"dropped a frame: {error}", throttle_duration_sec=_LOG_THROTTLE_S)
        elif not shutting_down(self):
            log.error(f"frame failed: {type(error).__name__}: {error}",
                      throttle_duration_sec=_LOG_THROTTLE_S)

    # -- feedback -------------------------------------------------------------------------------
    def _on_receipts(self, msg: Float64MultiArray) -> None:
        try:
            self._pipeline.receipts(parse_receipts(msg))
        except (ValueError, TypeError, OverflowError) as exc:
            self._pipeline.ignored.add("bad_receipt")
            self.get_logger().warning(f"ignored a malformed receipt: {exc}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)

    def _on_estimate(self, msg: Float64MultiArray) -> None:
        try:
            estimate = parse_estimate(msg)
        except ValueError:
            self._pipeline.ignored.add("bad_bandwidth")
            return
        self._pipeline.set_bandwidth(estimate.bandwidth_bps, estimate.lower_bound)

    # -- reporting ------------------------------------------------------------------------------
    def _report(self) -> None:
        report = self._pipeline.period_report()
        split, ratio = self._pipeline.active_key
        self._metrics.flush(fps=report.fps, received_fps=report.received_fps,
                            camera_share=report.camera_share, drop_rate=report.drop_rate,
                            active_split=split, active_ratio=ratio,
                            fallback_fps=report.fallback_fps, companion_fps=report.companion_fps,
                            **report.cpu_ms())
        # Rate limiting and backpressure are the pipeline doing its job; anything else means
        # the input (or the node) is broken and raises the diagnostics level.
        level = DiagnosticStatus.WARN if report.bad_frames else DiagnosticStatus.OK
        publish_diagnostics(self, self._diagnostics_pub, [diagnostic_status(
            self, "edge", level, report.message(split, ratio), report.values)])


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer edge_node --ros-args -p bundle:=DIR``; exit 2 on a bad config."""
    return run_node(EdgeNode, "edge_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
