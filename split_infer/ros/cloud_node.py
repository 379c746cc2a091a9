"""The cloud (server) node: wire frames from one or more robots → decoder → tail → top-k.

::

    <ns>/features (CompressedImage)           one stream per entry of edge_namespaces,
          │                                   each in its own callback group
          ▼
    parse_format ─▶ wire.decode_frame ─▶ replay check ─▶ CloudEngine.decode ─▶ softmax, top-k
     (foreign         (layout, CRC,      (seq, stamp      (the frame's own       │
      formats)         caps)              seen before)     configuration picks   │
          │ reject: counted by reason                      decoder + tail)       │
          ▼                                                                      ▼
    <ns>/receipts (Float64MultiArray: seq, bytes, stamps, config, cloud_ms)   <ns>/results
    <ns>/metrics/{e2e_latency_ms, cloud_ms, fps}                        (DiagnosticArray)

Topics, for each namespace ``<ns>`` in the ``edge_namespaces`` parameter (``""`` = the
node's own namespace, ``"/r1"`` absolute, ``"r1"`` relative to the node's):

* subscribes ``<ns>/features`` (``sensor_msgs/CompressedImage``, see :mod:`split_infer.wire`);
* publishes ``<ns>/results``: ``diagnostic_msgs/DiagnosticArray`` whose header is the camera
  frame's header (stamp preserved) and which holds one ``DiagnosticStatus`` per top-k class:
  ``name`` = class label, ``message`` = ``"rank <r>"`` (1 = best), ``values`` = ``class_id``,
  ``score`` (softmax probability), ``seq``, ``split_point``, ``ratio`` (all strings);
* publishes ``<ns>/receipts``: one row per frame whose header decoded (see
  :data:`~split_infer.ros.common.RECEIPT_FIELDS`), also for frames rejected after the header
  (unknown configuration, corrupt payload: the bytes did cross the link), but not for replays;
* publishes ``<ns>/metrics/e2e_latency_ms`` (now − camera stamp, after the tail),
  ``<ns>/metrics/cloud_ms`` (decode + tail) and ``<ns>/metrics/fps`` (1 Hz);
* publishes ``/diagnostics`` at 1 Hz: per stream fps, frames, rejects by
  :class:`~split_infer.errors.FrameError` reason (plus ``replayed`` and ``internal_error``),
  the last configuration seen; and the node's backend and loaded routes.

Parameters: ``bundle`` (required, read-only), ``edge_namespaces`` (read-only), ``top_k``,
``backend``, ``replay_window`` and ``threads``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import (
    InvalidTopicNameException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64MultiArray

from ..bundle import Bundle
from ..errors import FrameError
from ..runtime.engine import CloudEngine
from ..wire import Frame, decode_frame, parse_format
from .common import (
    BACKENDS,
    DIAGNOSTICS_QOS,
    DIAGNOSTICS_TOPIC,
    FEATURE_QOS,
    RESULT_QOS,
    MetricPublishers,
    NodeConfigError,
    ReasonCounts,
    backend_problem,
    declare_float,
    declare_int,
    declare_str,
    declare_str_array,
    diagnostic_status,
    join_topic,
    make_receipt,
    publish_diagnostics,
    rejected,
    run_node,
)

__all__ = ["CloudNode", "main", "softmax", "top_k"]

CLOUD_METRICS = ("e2e_latency_ms", "cloud_ms", "fps")
_LOG_THROTTLE_S = 5.0
_SEEN_FRAMES = 1024  # (seq, stamp) pairs remembered per stream for replay detection


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D logit vector, in float64."""
    z = np.asarray(logits, np.float64).ravel()
    e = np.exp(z - z.max())
    return e / e.sum()


def top_k(probabilities: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` largest values, best first (ties: lower index first)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")
    return [int(i) for i in order[:k]]


class _Stream:
    """Per-namespace publishers, counters and replay state; only its own callback (one
    mutually exclusive group) mutates it, the diagnostics timer only reads."""

    def __init__(self, node: CloudNode, namespace: str) -> None:
        self.namespace = namespace
        self.label = namespace or node.get_namespace()
        self.group = MutuallyExclusiveCallbackGroup()
        self.results = node.create_publisher(DiagnosticArray, join_topic(namespace, "results"),
                                             RESULT_QOS)
        self.receipts = node.create_publisher(Float64MultiArray,
                                              join_topic(namespace, "receipts"), RESULT_QOS)
        self.metrics = MetricPublishers(node, CLOUD_METRICS,
                                        prefix=join_topic(namespace, "metrics"))
        self.topic = node.resolve_topic_name(join_topic(namespace, "features"))
        self.subscription = node.create_subscription(
            CompressedImage, join_topic(namespace, "features"),
            lambda msg, info: node._on_features(self, msg, info), FEATURE_QOS,
            callback_group=self.group)
        self.rejects = ReasonCounts()
        self.frames = 0
        self.last_config: tuple[int, float] | None = None
        self.window = (time.monotonic(), 0, 0)  # (t, frames, rejects) at the last tick
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._newest_stamp: int | None = None

    def is_replay(self, frame: Frame, window_ns: int) -> bool:
        """True for a (seq, stamp) already seen, or (``window_ns`` > 0) a stamp older than the
        newest by more than ``window_ns``; otherwise remember the frame. A restarted edge (seq
        from 0, fresh stamps) is not a replay."""
        key = (frame.seq, frame.stamp_ns)
        if key in self._seen:
            return True
        if (window_ns > 0 and self._newest_stamp is not None
                and frame.stamp_ns < self._newest_stamp - window_ns):
            return True
        self._seen[key] = None
        if len(self._seen) > _SEEN_FRAMES:
            self._seen.popitem(last=False)
        if self._newest_stamp is None or frame.stamp_ns > self._newest_stamp:
            self._newest_stamp = frame.stamp_ns
        return False


class CloudNode(Node):
    """Decodes feature frames and runs the tail for every configured edge stream."""

    def __init__(self, **kwargs) -> None:
        super().__init__("cloud_node", **kwargs)
        bundle_path = declare_str(self, "bundle", "", "path of the bundle directory (required)",
                                  read_only=True)
        namespaces = declare_str_array(self, "edge_namespaces", [""],
                                       "edge namespaces to serve; '' = this node's own",
                                       read_only=True)
        backend = declare_str(self, "backend", "onnxruntime", "inference backend",
                              choices=BACKENDS)
        threads = declare_int(self, "threads", 0, 0, 256,
                              "ONNX Runtime intra-op threads; 0 = its default", read_only=True)
        replay_window = declare_float(self, "replay_window", 10.0, 0.0, 3600.0,
                                      "reject frames stamped this many seconds before the "
                                      "newest of their stream (0: only exact repeats)")
        if not bundle_path:
            raise NodeConfigError("parameter 'bundle' is required: the path of a bundle "
                                  "directory (manifest.json + ONNX parts)")
        problem = backend_problem(backend)
        if problem:
            raise NodeConfigError(problem)
        if len(set(namespaces)) != len(namespaces):
            raise NodeConfigError(f"edge_namespaces has duplicates: {namespaces}")
        self._bundle = Bundle.load(bundle_path)
        self._classes = self._bundle.classes
        # top_k's range depends on the bundle, so it is declared once the bundle is loaded.
        top = declare_int(self, "top_k", min(5, len(self._classes)), 1, len(self._classes),
                          "classes reported per frame")
        self._engine = CloudEngine.from_bundle(self._bundle, threads=threads or None)

        self._lock = threading.Lock()
        self._top_k = top
        self._backend = backend
        self._replay_window_ns = int(replay_window * 1e9)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC,
                                                      DIAGNOSTICS_QOS)
        try:
            self._streams = [_Stream(self, ns) for ns in namespaces]
        except InvalidTopicNameException as exc:
            raise NodeConfigError(f"edge_namespaces {namespaces}: {exc}") from None
        self._timer = self.create_timer(1.0, self._on_timer,
                                        callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        streams = ", ".join(s.topic for s in self._streams)
        self.get_logger().info(f"bundle {self._bundle.path} ({self._bundle.model_name}), "
                               f"{len(self._engine.routes)} configurations, serving {streams}")

    def stats(self) -> dict[str, dict[str, object]]:
        """Per stream (keyed by its resolved features topic): ``frames`` decoded, ``rejects``
        by reason, and the ``last_config`` seen."""
        return {s.topic: {"frames": s.frames, "rejects": s.rejects.snapshot(),
                          "last_config": s.last_config}
                for s in self._streams}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        if "backend" in changes:
            problem = backend_problem(changes["backend"])
            if problem:
                return rejected(problem)
        with self._lock:
            if "backend" in changes:
                self._backend = changes["backend"]
            if "top_k" in changes:
                self._top_k = int(changes["top_k"])
            if "replay_window" in changes:
                self._replay_window_ns = int(float(changes["replay_window"]) * 1e9)
        return SetParametersResult(successful=True)

    # -- frames ---------------------------------------------------------------------------------
    def _on_features(self, stream: _Stream, msg: CompressedImage,
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
                                    f"{exc}", throttle_duration_sec=_LOG_THROTTLE_S)

    def _reject(self, stream: _Stream, reason: str, detail: str) -> None:
        stream.rejects.add(reason)
        self.get_logger().warning(f"{stream.label}: rejected a frame ({reason}): {detail}",
                                  throttle_duration_sec=_LOG_THROTTLE_S)

    def _receipt(self, stream: _Stream, frame: Frame, nbytes: int, receive_ns: int,
                 start: float) -> float:
        cloud_ms = (time.perf_counter() - start) * 1e3
        stream.receipts.publish(make_receipt((
            frame.seq, nbytes, frame.stamp_ns / 1e9, receive_ns / 1e9, frame.split_point,
            frame.ratio, cloud_ms)))
        return cloud_ms

    def _handle(self, stream: _Stream, msg: CompressedImage, receive_ns: int,
                start: float) -> None:
        data = msg.data
        try:
            parse_format(msg.format)
            header = decode_frame(data)
        except FrameError as exc:
            self._reject(stream, exc.reason, exc.message)
            return
        if stream.is_replay(header, self._replay_window_ns):
            self._reject(stream, "replayed", f"seq {header.seq} stamp {header.stamp_ns}")
            return
        try:
            frame, logits = self._engine.decode(header)
        except FrameError as exc:
            self._reject(stream, exc.reason, exc.message)
            self._receipt(stream, header, len(data), receive_ns, start)
            return
        probabilities = softmax(logits)
        top = top_k(probabilities, self._top_k)
        cloud_ms = self._receipt(stream, frame, len(data), receive_ns, start)
        self._publish_results(stream, msg, frame, probabilities, top)
        stream.frames += 1
        stream.last_config = frame.config
        stamp = msg.header.stamp
        metrics = {"cloud_ms": cloud_ms}
        if stamp.sec or stamp.nanosec:  # an unstamped camera frame has no latency to report
            now_ns = self.get_clock().now().nanoseconds
            metrics["e2e_latency_ms"] = (now_ns - (stamp.sec * 10**9 + stamp.nanosec)) / 1e6
        stream.metrics.publish(**metrics)

    def _publish_results(self, stream: _Stream, msg: CompressedImage, frame: Frame,
                         probabilities: np.ndarray, top: list[int]) -> None:
        out = DiagnosticArray()
        out.header = msg.header
        common = [KeyValue(key="seq", value=str(frame.seq)),
                  KeyValue(key="split_point", value=str(frame.split_point)),
                  KeyValue(key="ratio", value=format(frame.ratio, ".9g"))]
        for rank, class_id in enumerate(top, start=1):
            label = self._classes[class_id] if class_id < len(self._classes) else str(class_id)
            out.status.append(DiagnosticStatus(
                level=DiagnosticStatus.OK, name=label, message=f"rank {rank}",
                hardware_id=stream.label,
                values=[KeyValue(key="class_id", value=str(class_id)),
                        KeyValue(key="score", value=repr(float(probabilities[class_id]))),
                        *common]))
        stream.results.publish(out)

    # -- reporting ------------------------------------------------------------------------------
    def _on_timer(self) -> None:
        try:
            self._report()
        except Exception as exc:  # reporting must never take the executor down
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=_LOG_THROTTLE_S)

    def _report(self) -> None:
        now = time.monotonic()
        statuses = []
        for stream in self._streams:
            rejects = stream.rejects.snapshot()
            total_rejects = sum(rejects.values())
            t0, frames0, rejects0 = stream.window
            stream.window = (now, stream.frames, total_rejects)
            fps = (stream.frames - frames0) / max(now - t0, 1e-9)
            stream.metrics.publish(fps=fps)
            new_rejects = total_rejects - rejects0
            config = stream.last_config
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
        statuses.append(diagnostic_status(self, "cloud", DiagnosticStatus.OK, "serving", {
            "backend": self._backend,
            "top_k": self._top_k,
            "configurations": " ".join(f"{s}:{r:g}" for s, r in self._engine.routes),
            "bundle": str(self._bundle.path),
            "model": self._bundle.model_name,
        }))
        publish_diagnostics(self, self._diagnostics_pub, statuses)


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer cloud_node --ros-args -p bundle:=DIR``; exit status 2 on a bad
    configuration (fatal log, no traceback)."""
    return run_node(CloudNode, "cloud_node", args, multithreaded=True)


if __name__ == "__main__":
    raise SystemExit(main())
