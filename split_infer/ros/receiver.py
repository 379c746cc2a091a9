"""The receiving half every downstream stage shares: the cloud node and the middle stages of an
n-stage chain (``stage_node``) both take wire frames from upstream namespaces, check them, run
their part, and acknowledge every frame to the sender.

::

    <ns>/features (CompressedImage)     one stream per upstream namespace, each in its own
          │                             mutually exclusive callback group
          ▼
    pipeline.receiving.StreamReceiver: [frame_auth.verify] ─▶ parse_format ─▶ decode_frame ─▶
          freshness (replayed / future) ─▶ age ─▶ engine (decoder + this stage's part)
          │ reject: counted by reason                    │ served
          ▼                                              ▼
    <ns>/receipts (seq, bytes, stamps,     subclass._deliver: results (cloud) or the next
    config, stage ms)                      wire frame (middle stage)

A subclass provides the engine (``decode(Frame) -> (Frame, output)``), ``_deliver`` and its
own diagnostics status; this class owns streams (each a ROS-free
:class:`~split_infer.pipeline.receiving.StreamReceiver` plus its publishers), receipts and
the 1 Hz diagnostics/fps timer. Receipts go to ``<ns>/receipts`` so the sender's
backpressure and the link's bandwidth monitor work on every link of a chain alike.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidTopicNameException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64MultiArray

from split_infer.bundle import Bundle
from split_infer.frame_auth import KeyFileError, load_key_file
from split_infer.pipeline.backends import BACKENDS, backend_problem
from split_infer.pipeline.freshness import FreshnessSettings
from split_infer.pipeline.receiving import StreamReceiver
from split_infer.ros.common import (
    MetricPublishers,
    NodeConfigError,
    declare_float,
    declare_int,
    declare_str,
    diagnostic_status,
    executor_kind,
    guarded_timer,
    join_topic,
    publish_diagnostics,
    rejected,
)
from split_infer.ros.messages import (
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    FEATURE_QOS,
    RESULT_QOS,
    link_bytes,
    make_receipt,
)
from split_infer.wire import Frame

__all__ = ["FeatureReceiverNode", "FeatureStream"]

LOG_THROTTLE_S = 5.0


class FeatureStream:
    """Per-upstream publishers and the ROS-free receiving state (checks, freshness, counters);
    only its own callback (one mutually exclusive group) mutates it, the diagnostics timer
    only reads."""

    def __init__(self, node: FeatureReceiverNode, namespace: str) -> None:
        self.namespace = namespace
        self.label = namespace or node.get_namespace()
        self.group = MutuallyExclusiveCallbackGroup()
        self.receipts = node.create_publisher(Float64MultiArray,
                                              join_topic(namespace, "receipts"), RESULT_QOS)
        self.metrics = MetricPublishers(node, node.STREAM_METRICS,
                                        prefix=join_topic(namespace, "metrics"))
        self.topic = node.resolve_topic_name(join_topic(namespace, "features"))
        self.receiver = StreamReceiver(self.topic.rsplit("/", 1)[0] or "/", keys=node._keys,
                                       freshness=node._freshness, max_age_s=node._max_age_s)
        self.window = (time.monotonic(), 0, 0)  # (t, frames, rejects) at the last tick
        # The middleware's reception stamp (MessageInfo) where the executor can pass it; the
        # EventsExecutor cannot, and runs callbacks as samples arrive (common.make_executor).
        if executor_kind() == "events":
            def callback(msg):
                node._on_features(self, msg)
        else:
            def callback(msg, info):
                node._on_features(self, msg, info)
        self.subscription = node.create_subscription(
            CompressedImage, join_topic(namespace, "features"), callback, FEATURE_QOS,
            callback_group=self.group)

    @property
    def frames(self) -> int:
        return self.receiver.frames

    @property
    def rejects(self):
        return self.receiver.rejects


class FeatureReceiverNode(Node):
    """Base of the nodes that receive wire frames; see the module docstring.

    Subclasses set ``STREAM_METRICS`` (per-stream ``std_msgs/Float64`` metric names, which
    must include ``fps``) and ``STAGE_MS_METRIC`` (the per-frame processing time metric), call
    :meth:`_start` at the end of their ``__init__`` and implement :meth:`_decode`,
    :meth:`_deliver` and :meth:`_status`.
    """

    STREAM_METRICS: tuple[str, ...] = ("fps",)
    STAGE_MS_METRIC = "stage_ms"

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        bundle_path = declare_str(self, "bundle", "", "path of the bundle directory (required)",
                                  read_only=True)
        self._backend = declare_str(self, "backend", "onnxruntime", "inference backend",
                                    choices=BACKENDS)
        self._threads = declare_int(self, "threads", 0, 0, 256,
                                    "ONNX Runtime intra-op threads; 0 = its default",
                                    read_only=True)
        self._freshness = FreshnessSettings(
            window=declare_float(self, "replay_window", 10.0, 0.0, 3600.0,
                                 "reject frames stamped this many seconds before the newest "
                                 "served frame of their stream and not newer in seq (0: only "
                                 "exact repeats)"),
            future_tolerance=declare_float(self, "future_tolerance", 2.0, 0.0, 3600.0,
                                           "reject frames stamped more than this many seconds "
                                           "ahead of this node's clock (0: never); keep it "
                                           "below replay_window"))
        self._max_age_s = declare_float(self, "max_frame_age", 0.0, 0.0, 3600.0,
                                        "reject frames whose camera stamp is older than this "
                                        "many seconds on arrival: a late answer is a wrong one "
                                        "for a moving robot (0: never; needs synced clocks)")
        key_file = declare_str(self, "auth_key_file", "",
                               "accept only frames signed with a key of this file "
                               "('<id> <hex key> [namespace ...]' per line; see "
                               "split_infer.frame_auth); '' = authentication off",
                               read_only=True)
        if not bundle_path:
            raise NodeConfigError("parameter 'bundle' is required: the path of a bundle "
                                  "directory (manifest.json + ONNX parts)")
        problem = backend_problem(self._backend)
        if problem:
            raise NodeConfigError(problem)
        self._bundle = Bundle.load(bundle_path)
        try:
            self._keys = load_key_file(key_file) if key_file else None
        except KeyFileError as exc:
            raise NodeConfigError(str(exc)) from None
        self._lock = threading.Lock()
        self._streams: list[FeatureStream] = []

    def _start(self, namespaces: list[str], parameter: str) -> None:
        """Subscribe to ``<ns>/features`` for every upstream namespace (given by the parameter
        named ``parameter``, for error messages) and start reporting."""
        if len(set(namespaces)) != len(namespaces):
            raise NodeConfigError(f"{parameter} has duplicates: {namespaces}")
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                      DIAGNOSTICS_QOS)
        try:
            self._streams = [FeatureStream(self, ns) for ns in namespaces]
        except InvalidTopicNameException as exc:
            raise NodeConfigError(f"{parameter} {namespaces}: {exc}") from None
        self._timer = self.create_timer(1.0, guarded_timer(self, self._report),
                                        callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def stats(self) -> dict[str, dict[str, object]]:
        """Per stream (keyed by its resolved features topic): ``frames`` processed, ``rejects``
        by reason, and the ``last_config`` seen."""
        return {s.topic: {"frames": s.frames, "rejects": s.rejects.snapshot(),
                          "last_config": s.receiver.last_config}
                for s in self._streams}

    # -- parameters -----------------------------------------------------------------------------
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        if "backend" in changes:
            problem = backend_problem(changes["backend"])
            if problem:
                return rejected(problem)
        with self._lock:
            if "backend" in changes and changes["backend"] != self._backend:
                try:
                    self._rebuild_engine(changes["backend"])
                except Exception as exc:  # the old engine keeps serving
                    return rejected(f"backend {changes['backend']!r}: {type(exc).__name__}: "
                                    f"{exc}")
                self._backend = changes["backend"]
            # The streams share the settings object: a change applies to the next frame.
            if "replay_window" in changes:
                self._freshness.window = float(changes["replay_window"])
            if "future_tolerance" in changes:
                self._freshness.future_tolerance = float(changes["future_tolerance"])
            if "max_frame_age" in changes:
                self._max_age_s = float(changes["max_frame_age"])
                for stream in self._streams:
                    stream.receiver.max_age_s = self._max_age_s
            self._apply_parameters(changes)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, changes: dict[str, Any]) -> None:
        """Subclass hook: apply already validated changes of its own parameters."""

    def _rebuild_engine(self, backend: str) -> None:
        """Subclass hook: load this stage's parts on ``backend`` and swap them in (frames
        in flight finish on the old parts); raise to refuse the change."""
        raise NotImplementedError

    # -- frames ---------------------------------------------------------------------------------
    def _on_features(self, stream: FeatureStream, msg: CompressedImage,
                     info: MessageInfo | None = None) -> None:
        # The receipt's stamp is when the middleware received the sample, not when the
        # executor got round to this callback: on a busy host callbacks bunch up, and
        # bunched stamps would make the bandwidth monitor see a faster link than there is.
        received = (info or {}).get("received_timestamp") or 0
        receive_ns = received if received > 0 else self.get_clock().now().nanoseconds
        start = time.perf_counter()
        try:
            self._handle(stream, msg, receive_ns, start)
        except Exception as exc:  # a callback must never take the executor down
            stream.rejects.add("internal_error")
            self.get_logger().error(f"{stream.label}: frame failed: {type(exc).__name__}: "
                                    f"{exc}", throttle_duration_sec=LOG_THROTTLE_S)

    def _receipt(self, stream: FeatureStream, frame: Frame, nbytes: int, receive_ns: int,
                 start: float) -> float:
        stage_ms = (time.perf_counter() - start) * 1e3
        stream.receipts.publish(make_receipt((
            frame.seq, nbytes, frame.stamp_ns / 1e9, receive_ns / 1e9, frame.split_point,
            frame.ratio, stage_ms)))
        return stage_ms

    def _handle(self, stream: FeatureStream, msg: CompressedImage, receive_ns: int,
                start: float) -> None:
        stamp = msg.header.stamp
        captured_ns = stamp.sec * 10**9 + stamp.nanosec
        # Age and freshness now, not at reception: on a busy host the callback can run well
        # after the middleware received the sample, and the answer would be that much later.
        now_ns = self.get_clock().now().nanoseconds
        received = stream.receiver.receive(msg.data, msg.format, captured_ns, now_ns,
                                           self._decode)
        if received.kind == "rejected":
            self.get_logger().warning(f"{stream.label}: rejected a frame ({received.reason}): "
                                      f"{received.detail}", throttle_duration_sec=LOG_THROTTLE_S)
        with stream.receiver.times.stage("publish"):
            stage_ms = (self._receipt(stream, received.header, link_bytes(msg), receive_ns,
                                      start) if received.receipt else 0.0)
            if received.kind == "rejected":
                return
            self._deliver(stream, msg, received.header, received.output)
        metrics = {self.STAGE_MS_METRIC: stage_ms}
        if "e2e_latency_ms" in self.STREAM_METRICS and captured_ns:
            # An unstamped camera frame has no latency to report.
            now_ns = self.get_clock().now().nanoseconds
            metrics["e2e_latency_ms"] = (now_ns - captured_ns) / 1e6
        stream.metrics.add(**metrics)

    def _decode(self, frame: Frame) -> tuple[Frame, Any]:
        """This stage's work on a decoded header → (header, output: logits, or the next wire
        frame's bytes); FrameError on bad input.
        Its time is the receipt's stage time (the sender's backpressure learns from it), so
        everything but publishing belongs here."""
        raise NotImplementedError

    def _deliver(self, stream: FeatureStream, msg: CompressedImage, frame: Frame,
                 output: Any) -> None:
        """Publish what this stage makes of one frame (``msg`` is the received message)."""
        raise NotImplementedError

    # -- reporting ------------------------------------------------------------------------------
    def _report(self) -> None:
        now = time.monotonic()
        statuses = []
        for stream in self._streams:
            rejects = stream.rejects.snapshot()
            total_rejects = sum(rejects.values())
            t0, frames0, rejects0 = stream.window
            stream.window = (now, stream.frames, total_rejects)
            fps = (stream.frames - frames0) / max(now - t0, 1e-9)
            stream.metrics.flush(fps=fps)
            new_rejects = total_rejects - rejects0
            config = stream.receiver.last_config
            values: dict[str, object] = {
                "fps": f"{fps:.2f}",
                "frames": stream.frames,
                "rejected": total_rejects,
                **{f"rejects.{reason}": n for reason, n in rejects.items()},
                "last_split": "none" if config is None else config[0],
                "last_ratio": "none" if config is None else f"{config[1]:g}",
            }
            level = DiagnosticStatus.WARN if new_rejects else DiagnosticStatus.OK
            message = f"{fps:.1f} fps" + (f", {new_rejects} rejected frames in the last period"
                                          if new_rejects else "")
            statuses.append(diagnostic_status(self, f"stream {stream.topic}", level, message,
                                              values))
        statuses.append(self._status())
        publish_diagnostics(self, self._diagnostics_pub, statuses)

    def _status(self) -> DiagnosticStatus:
        """The node's own diagnostics status (beside one per stream)."""
        raise NotImplementedError
