"""The two alternatives a robotics user would pick instead of a split, as nodes the testbed and
its benchmark run side by side with the split graph, on the same bag and backbone:

* **cloud-only** — :class:`JpegSender` on the robot compresses each camera frame to JPEG and
  publishes it as ``image/compressed`` the way ``image_transport/compressed`` does (reliable,
  depth 10, no backpressure), or, with ``crop``, first cuts the model's input out of it (the
  bundle's resize and centre crop: what a user who knows the model would send);
  :class:`FullModelNode` on the server decodes it and runs the whole
  model (the bundle's ``client_only`` ONNX part). The thesis's "server-only" strategy.
* **edge-only** — :class:`FullModelNode` on the robot runs the whole model on the raw frames.

Both publish ``results`` in the cloud node's format (:func:`.cloud_node.results_message`), with
``split_point`` 0 (cloud-only: the cut is before the first block) or -1 (edge-only: no cut)
and ``ratio`` 1.
"""

from __future__ import annotations

import threading

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile
from sensor_msgs.msg import CompressedImage, Image

from split_infer.bundle import Bundle
from split_infer.data import Preprocessing
from split_infer.pipeline.backends import OrtBackend
from split_infer.pipeline.counters import ReasonCounts
from split_infer.pipeline.images import ImageError, compressed_to_rgb, image_to_rgb
from split_infer.ros.messages import CAMERA_QOS, RESULT_QOS, results_message

__all__ = ["IMAGE_TRANSPORT_QOS", "FullModelNode", "JpegSender"]

#: What ``image_transport`` publishers use by default: reliable, keep last 10.
IMAGE_TRANSPORT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)


class JpegSender(Node):
    """``image`` (raw) → JPEG at ``quality`` → ``image/compressed``, header kept. ``crop``: the
    recipe whose resize and centre crop (not its normalisation) the frame goes through first;
    the receiver's preprocessing then leaves a frame of the input size as it is."""

    def __init__(self, quality: int = 90, crop: Preprocessing | None = None, **kwargs) -> None:
        super().__init__("jpeg_sender", **kwargs)
        self.quality = int(quality)
        self.crop = crop
        self.drops = ReasonCounts()
        self.sent = 0
        self._out = self.create_publisher(CompressedImage, "image/compressed",
                                          IMAGE_TRANSPORT_QOS)
        self.create_subscription(Image, "image", self._on_image, CAMERA_QOS)

    @property
    def publisher(self):
        return self._out

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except ImageError as exc:
            self.drops.add(f"image_{exc.reason}")
            return
        if self.crop is not None:
            rgb = self.crop.resize_camera_frame(rgb)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            self.drops.add("jpeg_encode")
            return
        out = CompressedImage()
        out.header = msg.header
        out.format = "rgb8; jpeg compressed bgr8"
        out.data = buf.tobytes()
        self._out.publish(out)
        self.sent += 1


class FullModelNode(Node):
    """The whole model of a bundle on ``image`` (raw) or ``image/compressed`` frames.

    ``threads``: ONNX Runtime intra-op threads (None: its default), so that the testbed can
    give it the same thread setting as the split's nodes."""

    def __init__(self, bundle: str, compressed: bool, top_k: int = 5,
                 threads: int | None = None, **kwargs) -> None:
        super().__init__("full_model", **kwargs)
        self._bundle = Bundle.load(bundle)
        client = self._bundle.manifest.get("client_only") or {}
        if "onnx" not in client:
            raise ValueError(f"{bundle}: the manifest has no client_only ONNX (whole model)")
        self._model = OrtBackend(self._bundle.read(client["onnx"]), intra_op_threads=threads)
        self._preprocessing = Preprocessing.from_dict(self._bundle.manifest["preprocessing"])
        self._classes = self._bundle.classes
        self._top_k = min(top_k, len(self._classes))
        self._compressed = compressed
        # Cloud-only cuts before the first block; edge-only never cuts (-1).
        self._split_point = 0 if compressed else -1
        self.drops = ReasonCounts()
        self.frames = 0
        self._lock = threading.Lock()
        self._results = self.create_publisher(DiagnosticArray, "results", RESULT_QOS)
        if compressed:
            self.create_subscription(CompressedImage, "image/compressed", self._on_compressed,
                                     IMAGE_TRANSPORT_QOS)
        else:
            self.create_subscription(Image, "image", self._on_image, CAMERA_QOS)

    def _on_image(self, msg: Image) -> None:
        self._run(msg, image_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._run(msg, compressed_to_rgb)

    def _run(self, msg, convert) -> None:
        try:
            rgb = convert(msg)
        except ImageError as exc:
            self.drops.add(f"image_{exc.reason}")
            return
        logits = self._model(self._preprocessing(rgb))[0]
        with self._lock:
            seq = self.frames
            self.frames += 1
        self._results.publish(results_message(msg.header, logits, self._top_k, self._classes,
                                              self.get_namespace(), seq, self._split_point,
                                              1.0))
