"""The edge (robot) node: camera frame → head → encoder → wire frame on ``features``.

::

    image (sensor_msgs/Image, CAMERA_QOS depth 1)            receipts (Float64MultiArray)
    or image/compressed (CompressedImage)                    bandwidth_bps (std_msgs/Float64)
          │                                                         │ acknowledgements,
          ▼                                                         ▼ estimates
    rate limit (max_rate) ─▶ backpressure (thesis §4.3) ◀──── Backpressure state
          │ drop: counted by reason, never queued                   ▲
          ▼                                                         │ sent bytes, edge time
    images.image_to_rgb ─▶ Preprocessing ─▶ head (ONNX Runtime) ─▶ codec ─▶ wire.pack
          │                                   (active configuration, snapshot once per frame)
          ▼
    features (sensor_msgs/CompressedImage, FEATURE_QOS): header = camera header unchanged,
              format = "split_infer/1; <codec spec>", data = wire frame bytes

Topics (relative, so one namespace per robot works):

* subscribes ``image`` (``input_type:=raw``) or ``image/compressed`` (``input_type:=compressed``,
  PNG/JPEG), ``receipts`` (from the cloud: acknowledgements and server time) and
  ``bandwidth_bps`` (the bandwidth monitor's estimate, bit/s) and ``bandwidth_lower_bound``
  (``std_msgs/Bool``: the estimate is only what an unsaturated link delivered, so it is not
  used for pacing);
* publishes ``features``, ``metrics/{fps,bytes_per_frame,drop_rate,active_split,active_ratio,
  edge_ms}`` (``std_msgs/Float64``) and ``/diagnostics`` at 1 Hz; with ``fallback:=edge_only``
  also ``results`` (the cloud's results format, ``split_point`` -1) for the frames it
  classified itself.

Parameters (``ros2 param describe`` shows ranges): ``bundle`` (required, read-only),
``split_point`` and ``ratio`` (the active configuration; change them together with
``set_parameters_atomically``, as the scheduler does), ``backend``, ``input_type``,
``max_rate``, ``backpressure``, ``fallback``, ``max_in_flight``, ``ack_timeout``,
``server_rate_limit_ms``, ``preload`` and ``threads``.

Switching is race-free: the parameter callback validates the requested (split, ratio) pair
against the preloaded configurations and swaps the engine's active configuration under a lock,
and the frame callback reads that configuration exactly once and uses the same object for the
head, the codec, the frame header and the format string, so every frame is encoded entirely
with either the old or the new configuration and says which.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float64, Float64MultiArray

from split_infer.adaptation.scheduling import startup_configuration
from split_infer.bundle import Bundle, BundleConfiguration, BundleError
from split_infer.data import Preprocessing
from split_infer.errors import EncodeError
from split_infer.pipeline.backends import BACKENDS, OrtBackend, backend_problem
from split_infer.pipeline.backpressure import Backpressure, RateLimiter
from split_infer.pipeline.engine import EdgeConfig, EdgeEngine
from split_infer.pipeline.images import ImageError, compressed_to_rgb, image_to_rgb
from split_infer.ros.cloud_node import results_message
from split_infer.ros.common import (
    CAMERA_QOS,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    FEATURE_QOS,
    RECEIPTS_QOS,
    RESULT_QOS,
    MetricPublishers,
    NodeConfigError,
    ReasonCounts,
    declare_bool,
    declare_float,
    declare_int,
    declare_str,
    declare_str_array,
    diagnostic_status,
    guarded_timer,
    parse_receipts,
    publish_diagnostics,
    rejected,
    run_node,
)
from split_infer.wire import format_string

__all__ = ["EdgeNode", "main", "parse_preload"]

INPUT_TYPES = ("raw", "compressed")
FALLBACKS = ("drop", "edge_only")
#: ``split_point`` of results the edge-only fallback publishes (no cut: the whole model).
EDGE_ONLY_SPLIT = -1
EDGE_METRICS = ("fps", "bytes_per_frame", "drop_rate", "active_split", "active_ratio",
                "edge_ms")

# The monitor's estimate is a latest-value signal. Best effort + volatile is compatible with
# any publisher QoS (the monitor's is reliable and transient-local).
_ESTIMATE_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
_LOG_THROTTLE_S = 5.0


def _key(split_point: int, ratio: float) -> tuple[int, float]:
    return int(split_point), float(np.float32(ratio))


def parse_preload(bundle: Bundle, entries: list[str]) -> list[BundleConfiguration]:
    """``preload`` entries (``"split:ratio"``, or the single entry ``"all"``) → configurations.

    Raises :class:`NodeConfigError` naming the bad entry and the bundle's configurations.
    """
    if entries == ["all"]:
        return list(bundle.configurations)
    chosen: list[BundleConfiguration] = []
    for entry in entries:
        split_text, sep, ratio_text = entry.partition(":")
        try:
            if not sep:
                raise ValueError("expected 'split:ratio'")
            config = bundle.configuration(int(split_text), float(ratio_text))
        except (ValueError, BundleError) as exc:
            valid = ", ".join(f"{c.split_point}:{c.ratio:g}" for c in bundle.configurations)
            raise NodeConfigError(f"preload entry {entry!r}: {exc}; valid entries: {valid} "
                                  "(or the single entry 'all')") from None
        if config not in chosen:
            chosen.append(config)
    if not chosen:
        raise NodeConfigError("preload is empty; list 'split:ratio' entries or use ['all']")
    return chosen


class EdgeNode(Node):
    """Runs the head and encoder of a bundle on camera frames; see the module docstring."""

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
        backend = declare_str(self, "backend", "onnxruntime", "inference backend",
                              choices=BACKENDS)
        input_type = declare_str(self, "input_type", "raw", "raw: sensor_msgs/Image on "
                                 "'image'; compressed: CompressedImage on 'image/compressed'",
                                 choices=INPUT_TYPES, read_only=True)
        max_rate = declare_float(self, "max_rate", 0.0, 0.0, 1000.0,
                                 "most frames processed per second; 0 = unlimited")
        backpressure = declare_bool(self, "backpressure", True,
                                    "drop frames the link or server cannot take in time "
                                    "(thesis §4.3 should_process_frame)")
        fallback = declare_str(self, "fallback", "drop",
                               "what happens to a frame backpressure holds back (the link or "
                               "server cannot take it, e.g. in an outage): drop it (counted), "
                               "or edge_only: classify it here with the bundle's whole model "
                               "and publish the result on 'results'", choices=FALLBACKS)
        max_in_flight = declare_int(self, "max_in_flight", 2, 1, 64,
                                    "without a bandwidth estimate: most unacknowledged frames")
        ack_timeout = declare_float(self, "ack_timeout", 1.0, 0.01, 60.0,
                                    "seconds after which an unacknowledged frame counts as lost")
        server_rate_limit_ms = declare_float(self, "server_rate_limit_ms", 0.0, 0.0, 60000.0,
                                             "server time per frame; 0 = learn it from receipts")
        preload = declare_str_array(self, "preload", ["all"],
                                    "configurations to load, as 'split:ratio' entries, or "
                                    "['all']", read_only=True)
        threads = declare_int(self, "threads", 0, 0, 256,
                              "ONNX Runtime intra-op threads; 0 = its default", read_only=True)

        if not bundle_path:
            raise NodeConfigError("parameter 'bundle' is required: the path of a bundle "
                                  "directory (manifest.json + ONNX parts)")
        problem = backend_problem(backend)
        if problem:
            raise NodeConfigError(problem)
        if input_type not in INPUT_TYPES:
            raise NodeConfigError(f"input_type {input_type!r}: choose one of {INPUT_TYPES}")
        self._bundle = Bundle.load(bundle_path)
        configs = parse_preload(self._bundle, preload)
        self._preprocessing = Preprocessing.from_dict(self._bundle.manifest["preprocessing"])
        self._configs = configs
        self._threads = threads or None
        self._engine = EdgeEngine.from_bundle(self._bundle, configs, threads=self._threads,
                                              backend=backend)
        self._by_key = {c.key: c for c in configs}
        initial = self._initial_configuration(configs, split_point, ratio)
        self._engine.activate(*initial.key)

        self._param_lock = threading.Lock()  # validate + apply a configuration change as one
        self._backend = backend
        self._backpressure_enabled = backpressure
        self._fallback = fallback
        self._full_model: OrtBackend | None = None
        self._edge_only = 0  # frames classified on the robot by the fallback
        problem = self._fallback_problem(fallback)
        if problem:
            raise NodeConfigError(problem)
        self._rate = RateLimiter(max_rate)
        self._pressure = Backpressure(
            max_in_flight=max_in_flight, ack_timeout_s=ack_timeout,
            server_rate_limit_s=server_rate_limit_ms / 1e3 if server_rate_limit_ms > 0 else None)
        self._drops = ReasonCounts()
        self._ignored = ReasonCounts()  # malformed receipts / estimates
        self._seq = 0
        self._received = self._sent = 0
        # (t, received, sent, dropped, bad frames) at the last diagnostics tick
        self._window = (time.monotonic(), 0, 0, 0, 0)

        # Frames are processed one at a time (one head, one engine); receipts, estimates and
        # the diagnostics timer run in a second group so they are never stuck behind a frame.
        self._frame_group = MutuallyExclusiveCallbackGroup()
        self._aux_group = MutuallyExclusiveCallbackGroup()
        self._features_pub = self.create_publisher(CompressedImage, "features", FEATURE_QOS)
        # The fallback's results go where the cloud publishes this robot's results.
        self._results_pub = self.create_publisher(DiagnosticArray, "results", RESULT_QOS)
        self._metrics = MetricPublishers(self, EDGE_METRICS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                      DIAGNOSTICS_QOS)
        if input_type == "raw":
            self._image_sub = self.create_subscription(
                Image, "image", self._on_image, CAMERA_QOS, callback_group=self._frame_group)
        else:
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, CAMERA_QOS,
                callback_group=self._frame_group)
        self._receipt_sub = self.create_subscription(
            Float64MultiArray, "receipts", self._on_receipts, RECEIPTS_QOS,
            callback_group=self._aux_group)
        self._bandwidth_sub = self.create_subscription(
            Float64, "bandwidth_bps", self._on_bandwidth, _ESTIMATE_QOS,
            callback_group=self._aux_group)
        self._bandwidth_is_lower_bound = False
        self._lower_bound_sub = self.create_subscription(
            Bool, "bandwidth_lower_bound", self._on_lower_bound, _ESTIMATE_QOS,
            callback_group=self._aux_group)
        self._timer = self.create_timer(1.0, guarded_timer(self, self._report),
                                        callback_group=self._aux_group)

        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Show the configuration actually chosen (the -1/0 start-up defaults are resolved).
        self.set_parameters_atomically([
            Parameter("split_point", Parameter.Type.INTEGER, initial.split_point),
            Parameter("ratio", Parameter.Type.DOUBLE, float(initial.ratio)),
        ])
        self.get_logger().info(
            f"bundle {self._bundle.path} ({self._bundle.model_name}), "
            f"{len(configs)} configurations preloaded, active split {initial.split_point} "
            f"ratio {initial.ratio:g} ({initial.codec}), input {input_type}, backend {backend}")

    # -- configuration --------------------------------------------------------------------------
    def _initial_configuration(self, configs: list[BundleConfiguration], split_point: int,
                               ratio: float) -> BundleConfiguration:
        candidates = [c for c in configs
                      if (split_point == -1 or c.split_point == split_point)
                      and (ratio == 0.0 or c.key[1] == _key(0, ratio)[1])]
        if not candidates:
            raise NodeConfigError(
                f"no preloaded configuration matches split_point={split_point}, "
                f"ratio={ratio:g}; preloaded (split_point, ratio): {self._valid_pairs()}")
        # Before anything is known about the link: the best effective accuracy on a link
        # that carries just the smallest frames at the camera rate (see the function).
        return startup_configuration(candidates)

    def _valid_pairs(self) -> str:
        return ", ".join(f"({s}, {r:g})" for s, r in self._engine.available)

    @property
    def active(self) -> EdgeConfig:
        """The engine's active configuration (what the next frame will be encoded with)."""
        return self._engine.active

    def stats(self) -> dict[str, object]:
        """Counters so far: ``received``, ``sent``, ``edge_only`` (classified here by the
        fallback), ``drops`` (by reason), ``ignored``
        (malformed receipts/estimates by reason), ``acknowledged`` and ``expired`` frames."""
        return {"received": self._received, "sent": self._sent, "edge_only": self._edge_only,
                "drops": self._drops.snapshot(), "ignored": self._ignored.snapshot(),
                "acknowledged": self._pressure.acknowledged, "expired": self._pressure.expired}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate every change first, then apply them all, under one lock (atomic pairs)."""
        changes = {p.name: p.value for p in params}
        with self._param_lock:
            if "backend" in changes:
                problem = backend_problem(changes["backend"])
                if problem:
                    return rejected(problem)
            if "fallback" in changes:
                problem = self._fallback_problem(changes["fallback"])
                if problem:
                    return rejected(problem)
            pair = None
            if "split_point" in changes or "ratio" in changes:
                current = self._engine.active
                split = int(changes.get("split_point", current.split_point))
                ratio = float(changes.get("ratio", current.ratio))
                if split == -1 or ratio == 0.0:
                    return rejected("split_point -1 and ratio 0 only select a default at "
                                    "start-up; name a preloaded configuration")
                pair = _key(split, ratio)
                if pair not in self._by_key:
                    hint = ""
                    if len({"split_point", "ratio"} & changes.keys()) == 1:
                        hint = (" (to change split_point and ratio together, set both in one "
                                "set_parameters_atomically call)")
                    return rejected(f"no preloaded configuration split_point={split}, "
                                    f"ratio={ratio:g}; valid (split_point, ratio) pairs: "
                                    f"{self._valid_pairs()}{hint}")
            if "backend" in changes and changes["backend"] != self._backend:
                # Load every preloaded configuration on the new backend first, then swap
                # the engine with the same active configuration; a failure keeps the old one.
                try:
                    engine = EdgeEngine.from_bundle(self._bundle, self._configs,
                                                    threads=self._threads,
                                                    backend=changes["backend"])
                    active = self._engine.active
                    engine.activate(active.split_point, active.ratio)
                except Exception as exc:
                    return rejected(f"backend {changes['backend']!r}: "
                                    f"{type(exc).__name__}: {exc}")
                self._engine = engine
                self._backend = changes["backend"]
            # Everything is valid: apply.
            active = self._engine.active
            if pair is not None and pair != _key(active.split_point, active.ratio):
                config = self._engine.activate(*pair)
                self.get_logger().info(f"active configuration: split {config.split_point}, "
                                       f"ratio {config.ratio:g} ({config.codec.spec})")
            if "max_rate" in changes:
                self._rate.set_rate(float(changes["max_rate"]))
            if "backpressure" in changes:
                self._backpressure_enabled = bool(changes["backpressure"])
            if "fallback" in changes:
                self._fallback = changes["fallback"]
            if "max_in_flight" in changes:
                self._pressure.max_in_flight = int(changes["max_in_flight"])
            if "ack_timeout" in changes:
                self._pressure.ack_timeout_s = float(changes["ack_timeout"])
            if "server_rate_limit_ms" in changes:
                limit_ms = float(changes["server_rate_limit_ms"])
                self._pressure.set_server_rate_limit(limit_ms / 1e3 if limit_ms > 0 else None)
        return SetParametersResult(successful=True)

    # -- frames ---------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self._process(msg, image_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._process(msg, compressed_to_rgb)

    def _process(self, msg, convert) -> None:
        """One camera frame; every failure is counted by reason and logged, never raised."""
        start = time.perf_counter()
        now = time.monotonic()
        self._received += 1
        try:
            if not self._rate.allow(now):
                self._drops.add("rate_limit")
                return
            if self._backpressure_enabled:
                decision = self._pressure.should_process_frame(now)
                if not decision.process:
                    if self._fallback == "edge_only":
                        self._classify_here(msg, convert)
                    else:
                        self._drops.add(f"backpressure_{decision.reason}")
                    return
            rgb = convert(msg)
            x = self._preprocessing(rgb)
            config = self._engine.active  # read once: this frame uses exactly this config
            features = self._engine.features(x, config)
            seq = self._seq
            self._seq += 1
            # The send stamp is taken after the head, just before packing, so the receipts'
            # receive - send difference measures the link (plus the codec), not the head.
            stamp_ns = self.get_clock().now().nanoseconds
            data = self._engine.pack_features(config, features, seq, stamp_ns)
            out = CompressedImage()
            out.header = msg.header
            out.format = format_string(config.codec.spec)
            out.data = data
            self._features_pub.publish(out)
            edge_s = time.perf_counter() - start
            self._sent += 1
            self._pressure.frame_sent(seq, len(data), time.monotonic())
            self._pressure.frame_processed(edge_s)
            self._metrics.publish(bytes_per_frame=len(data), edge_ms=edge_s * 1e3)
        except ImageError as exc:
            self._drops.add(f"image_{exc.reason}")
            self.get_logger().warning(f"dropped a camera frame: {exc}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)
        except EncodeError as exc:
            self._drops.add(f"encode_{exc.reason}")
            self.get_logger().warning(f"could not encode a frame: {exc}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)
        except Exception as exc:  # a callback must never take the executor down
            self._drops.add("internal_error")
            self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=_LOG_THROTTLE_S)

    def _fallback_problem(self, fallback: str) -> str | None:
        """Why ``fallback`` cannot be used with this bundle (loading its whole model), or None."""
        if fallback not in FALLBACKS:
            return f"fallback {fallback!r}: choose one of {list(FALLBACKS)}"
        if fallback == "edge_only" and self._full_model is None:
            onnx = (self._bundle.manifest.get("client_only") or {}).get("onnx")
            if not onnx:
                return ("fallback 'edge_only' needs the bundle's whole model (manifest "
                        "client_only.onnx), and this bundle has none")
            self._full_model = OrtBackend(self._bundle.file(onnx), self._threads)
        return None

    def _classify_here(self, msg, convert) -> None:
        """The edge-only fallback: the whole model on this frame, result on ``results``."""
        x = self._preprocessing(convert(msg))
        logits = self._full_model(x)[0]
        self._results_pub.publish(results_message(
            msg.header, logits, min(5, len(self._bundle.classes)), self._bundle.classes,
            self.get_namespace(), self._edge_only, EDGE_ONLY_SPLIT, 1.0))
        self._edge_only += 1

    # -- feedback -------------------------------------------------------------------------------
    def _on_receipts(self, msg: Float64MultiArray) -> None:
        try:
            rows = parse_receipts(msg)
            for row in rows:
                seq, cloud_ms = row["seq"], row["cloud_ms"]
                if not (math.isfinite(seq) and seq >= 0 and seq == int(seq)):
                    raise ValueError(f"seq {seq} is not a frame number")
                self._pressure.receipt(int(seq), cloud_ms / 1e3 if cloud_ms >= 0 else None)
        except (ValueError, TypeError, OverflowError) as exc:
            self._ignored.add("bad_receipt")
            self.get_logger().warning(f"ignored a malformed receipt: {exc}",
                                      throttle_duration_sec=_LOG_THROTTLE_S)

    def _on_bandwidth(self, msg: Float64) -> None:
        if not self._pressure.set_bandwidth(float(msg.data), time.monotonic(),
                                            lower_bound=self._bandwidth_is_lower_bound):
            self._ignored.add("bad_bandwidth")

    def _on_lower_bound(self, msg: Bool) -> None:
        self._bandwidth_is_lower_bound = bool(msg.data)

    # -- reporting ------------------------------------------------------------------------------
    def _report(self) -> None:
        now = time.monotonic()
        drops = self._drops.snapshot()
        dropped = sum(drops.values())
        # Rate limiting and backpressure are the node doing its job; anything else means the
        # input (or the node) is broken and raises the diagnostics level.
        bad = sum(n for reason, n in drops.items()
                  if not reason.startswith(("rate_limit", "backpressure_")))
        t0, received0, sent0, dropped0, bad0 = self._window
        self._window = (now, self._received, self._sent, dropped, bad)
        elapsed = max(now - t0, 1e-9)
        fps = (self._sent - sent0) / elapsed
        arrived = self._received - received0
        drop_rate = (dropped - dropped0) / arrived if arrived else 0.0
        config = self._engine.active
        self._metrics.publish(fps=fps, drop_rate=drop_rate, active_split=config.split_point,
                              active_ratio=config.ratio)
        frames, nbytes = self._pressure.in_flight(now)
        bandwidth = self._pressure.bandwidth_bps(now)
        client = self._pressure.client_latency_s
        server = self._pressure.server_rate_limit_s
        bundle_config = self._by_key[_key(config.split_point, config.ratio)]
        values: dict[str, object] = {
            "fps": f"{fps:.2f}",
            "drop_rate": f"{drop_rate:.3f}",
            "frames_received": self._received,
            "frames_sent": self._sent,
            "frames_dropped": dropped,
            **{f"drops.{reason}": n for reason, n in drops.items()},
            **{f"ignored.{reason}": n for reason, n in self._ignored.snapshot().items()},
            "active_split": config.split_point,
            "active_ratio": f"{config.ratio:g}",
            "active_configuration": bundle_config.id,
            "codec": config.codec.spec,
            "backend": self._backend,
            "backpressure": self._backpressure_enabled,
            "fallback": self._fallback,
            "frames_edge_only": self._edge_only,
            "max_rate": f"{self._rate.max_rate_hz:g}",
            "in_flight_frames": frames,
            "in_flight_bytes": nbytes,
            "acknowledged": self._pressure.acknowledged,
            "expired": self._pressure.expired,
            "bandwidth_bps": "unknown" if bandwidth is None else f"{bandwidth:.0f}",
            "edge_latency_ms": "unknown" if client is None else f"{client * 1e3:.2f}",
            "server_rate_limit_ms": "unknown" if server is None else f"{server * 1e3:.2f}",
            "bundle": str(self._bundle.path),
            "model": self._bundle.model_name,
        }
        errors = bad - bad0
        level = DiagnosticStatus.WARN if errors else DiagnosticStatus.OK
        message = (f"split {config.split_point} ratio {config.ratio:g}, {fps:.1f} fps"
                   + (f", {errors} bad frames in the last period" if errors else ""))
        publish_diagnostics(self, self._diagnostics_pub,
                            [diagnostic_status(self, "edge", level, message, values)])


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer edge_node --ros-args -p bundle:=DIR``; exit status 2 on a bad
    configuration (fatal log, no traceback)."""
    return run_node(EdgeNode, "edge_node", args, multithreaded=True)


if __name__ == "__main__":
    raise SystemExit(main())
