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
  :data:`~split_infer.ros.messages.RECEIPT_FIELDS`), also for frames rejected after the header
  (unknown configuration, corrupt payload: the bytes did cross the link), but not for replays;
* publishes ``<ns>/metrics/e2e_latency_ms`` (now − camera stamp, after the tail),
  ``<ns>/metrics/cloud_ms`` (decode + tail) and ``<ns>/metrics/fps``, at 1 Hz (per-frame
  values as the period's mean);
* publishes ``/diagnostics`` at 1 Hz: per stream fps, frames, rejects by
  :class:`~split_infer.errors.FrameError` reason (plus ``replayed`` and ``internal_error``),
  the last configuration seen; and the node's backend and loaded routes.

Parameters: ``bundle`` (required, read-only), ``edge_namespaces`` (read-only), ``top_k``,
``backend``, ``replay_window`` and ``future_tolerance`` (the freshness rules of
:mod:`split_infer.pipeline.freshness`), ``max_frame_age`` (frames captured longer ago than
this are refused as ``stale``: a late answer is a wrong one), ``threads`` and
``auth_key_file`` (read-only; accept only frames signed with one of its keys, each bound to
the robots it names: :mod:`split_infer.frame_auth`).

The receiving half (streams, replay check, receipts, reject counts, diagnostics) is
:class:`~split_infer.ros.receiver.FeatureReceiverNode`, shared with the middle stages of an
n-stage chain (:mod:`split_infer.ros.stage_node`): the cloud node is the last stage.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CompressedImage

from split_infer.pipeline.engine import CloudEngine
from split_infer.ros.common import (
    declare_int,
    declare_str_array,
    diagnostic_status,
    join_topic,
    run_node,
)
from split_infer.ros.messages import RESULT_QOS, results_message
from split_infer.ros.receiver import FeatureReceiverNode, FeatureStream
from split_infer.wire import Frame

__all__ = ["CloudNode", "main"]

CLOUD_METRICS = ("e2e_latency_ms", "cloud_ms", "fps")


class CloudNode(FeatureReceiverNode):
    """Decodes feature frames and runs the tail for every configured edge stream."""

    STREAM_METRICS = CLOUD_METRICS
    STAGE_MS_METRIC = "cloud_ms"

    def __init__(self, **kwargs) -> None:
        super().__init__("cloud_node", **kwargs)
        namespaces = declare_str_array(self, "edge_namespaces", [""],
                                       "edge namespaces to serve; '' = this node's own",
                                       read_only=True)
        self._classes = self._bundle.classes
        # top_k's range depends on the bundle, so it is declared once the bundle is loaded.
        self._top_k = declare_int(self, "top_k", min(5, len(self._classes)), 1,
                                  len(self._classes), "classes reported per frame")
        self._engine = CloudEngine.from_bundle(self._bundle, threads=self._threads or None,
                                               backend=self._backend)
        self._start(namespaces, "edge_namespaces")  # validates them
        self._results = {s.namespace: self.create_publisher(
            DiagnosticArray, join_topic(s.namespace, "results"), RESULT_QOS)
            for s in self._streams}
        streams = ", ".join(s.topic for s in self._streams)
        self.get_logger().info(f"bundle {self._bundle.path} ({self._bundle.model_name}), "
                               f"{len(self._engine.routes)} configurations, serving {streams}")

    def _apply_parameters(self, changes: dict) -> None:
        if "top_k" in changes:
            self._top_k = int(changes["top_k"])

    def _rebuild_engine(self, backend: str) -> None:
        self._engine = CloudEngine.from_bundle(self._bundle, threads=self._threads or None,
                                               backend=backend)

    def _decode(self, frame: Frame) -> tuple[Frame, np.ndarray]:
        return self._engine.decode(frame)

    def _deliver(self, stream: FeatureStream, msg: CompressedImage, frame: Frame,
                 logits: np.ndarray) -> None:
        self._results[stream.namespace].publish(results_message(
            msg.header, logits, self._top_k, self._classes, stream.label, frame.seq,
            frame.split_point, frame.ratio))

    def _status(self) -> DiagnosticStatus:
        return diagnostic_status(self, "cloud", DiagnosticStatus.OK, "serving", {
            "backend": self._backend,
            "top_k": self._top_k,
            "configurations": " ".join(f"{s}:{r:g}" for s, r in self._engine.routes),
            "bundle": str(self._bundle.path),
            "model": self._bundle.model_name,
        })


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer cloud_node --ros-args -p bundle:=DIR``; exit status 2 on a bad
    configuration (fatal log, no traceback)."""
    return run_node(CloudNode, "cloud_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
