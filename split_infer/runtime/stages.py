"""n-stage pipelines: the middle stages between the edge and the cloud engine.

Hu & Krishnamachari run one CNN on a chain of devices (four Raspberry Pis); device ``i`` runs
layers ``(s_{i-1}, s_i]``. Here the first device is an :class:`~.engine.EdgeEngine` (camera
frame → layers ``(0, s_1]`` → wire frame), the last a :class:`~.engine.CloudEngine` (wire
frame → layers ``(s_{n-1}, m]`` → logits), and every device in between a
:class:`StageEngine`, which is the two of them joined::

    wire frame (split s_{i-1}) ─▶ CloudEngine: codec⁻¹ ─▶ layers (s_{i-1}, s_i]
                                                              │
    wire frame (split s_i)    ◀─ EdgeEngine.pack_features ◀── codec of the split-s_i config

Every link is a configuration of the bundle (a split point and a codec calibrated there), so
frames name their configuration exactly as on a two-device split and any stage can decode
them without a handshake. Only baseline codecs can sit between two stages: a learned
bottleneck's decoder is fused with the tail it was trained with in the bundle's cloud part,
so a learned configuration can only be the last link of a chain.

The middle segment itself is not in the bundle's ONNX parts (those are head and tail of each
split); it is cut from the bundle's backbone weights (safetensors) and run with ONNX Runtime
(exported in memory) or torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..bundle import Bundle, BundleConfiguration
from ..wire import Frame
from .backends import Backend
from .engine import CloudEngine, EdgeConfig, EdgeEngine, Route

__all__ = ["StageEngine", "check_chain", "is_link_configuration", "load_backbone",
           "segment_backend"]


def load_backbone(bundle: Bundle):
    """The bundle's backbone as a :class:`~split_infer.models.SplittableModel` (eval mode),
    from its verified safetensors weights (slimmed widths included)."""
    from ..codecs.learned.bbnet import load_slimmed_weights
    from ..models import get_model

    model = get_model(bundle.model_name, num_classes=len(bundle.classes))
    load_slimmed_weights(model, bundle.file(bundle.manifest["model"]["weights"]))
    return model.eval()


def segment_backend(bundle: Bundle, start: int, end: int | None, *, backend: str = "onnxruntime",
                    threads: int | None = None, model=None) -> Backend:
    """A backend running the backbone's blocks ``(start, end]`` (``end=None``: to the logits).

    ``model`` reuses an already loaded backbone (:func:`load_backbone`)."""
    import torch

    from .backends import make_backend

    model = model if model is not None else load_backbone(bundle)
    part = model.segment(start, end)
    with torch.no_grad():
        example = model.segment(0, start)(torch.zeros(1, *model.input_shape)) if start else \
            torch.zeros(1, *model.input_shape)
    return make_backend(backend, part, example, threads=threads)


def is_link_configuration(config: BundleConfiguration) -> bool:
    """Whether ``config`` can sit between two stages: a baseline codec on the plain features
    (a learned decoder is fused with its trained tail; a rateless prefix needs its fill)."""
    return config.method == "baseline" and config.keep_channels is None


def _chain_problem(config: BundleConfiguration) -> str | None:
    if not is_link_configuration(config):
        return (f"configuration {config.id} ({config.method}) cannot link two stages: only "
                "baseline codecs can (a learned decoder is fused with its trained tail)")
    return None


def check_chain(configs: Sequence[BundleConfiguration]) -> None:
    """Raise ValueError unless ``configs`` can be the links of one chain, in order: split
    points strictly increasing, and every link but the last a baseline codec."""
    if not configs:
        raise ValueError("a chain needs at least one link configuration")
    for config in configs[:-1]:
        problem = _chain_problem(config)
        if problem:
            raise ValueError(problem)
    splits = [c.split_point for c in configs]
    if any(b <= a for a, b in itertools.pairwise(splits)):
        raise ValueError(f"link split points must increase along the chain, got {splits}")


@dataclass(frozen=True)
class StageEngine:
    """A middle stage: decodes frames of ``inbound``'s one configuration, runs its segment,
    and encodes the result with ``outbound``'s codec, naming ``outbound``'s configuration."""

    inbound: CloudEngine
    outbound: EdgeConfig

    @classmethod
    def from_bundle(cls, bundle: Bundle, input_config: BundleConfiguration,
                    output_config: BundleConfiguration, *, backend: str = "onnxruntime",
                    threads: int | None = None, model=None) -> StageEngine:
        """Stage ``(input_config.split_point, output_config.split_point]`` of ``bundle``."""
        # Both links are baseline: the output too, because a learned encoder is only in the
        # bundle fused with the head that starts at the input image.
        check_chain([input_config, output_config])
        problem = _chain_problem(output_config)
        if problem:
            raise ValueError(problem)
        part = segment_backend(bundle, input_config.split_point, output_config.split_point,
                               backend=backend, threads=threads, model=model)
        inbound = CloudEngine()
        inbound.add_route(input_config.split_point, input_config.ratio,
                          Route(bundle.codec(input_config), part))
        outbound = EdgeConfig(part, bundle.codec(output_config), output_config.split_point,
                              output_config.ratio)
        return cls(inbound, outbound)

    @property
    def input_key(self) -> tuple[int, float]:
        return self.inbound.routes[0]

    @property
    def output_key(self) -> tuple[int, float]:
        return self.outbound.split_point, float(np.float32(self.outbound.ratio))

    def run(self, data: bytes | Frame) -> tuple[Frame, np.ndarray]:
        """Wire bytes (or a decoded frame) of the input configuration → (its header, this
        stage's output features ``(C, H, W)``); FrameError on bad input."""
        frame, out = self.inbound.decode(data)
        return frame, out[0]

    def encode(self, features: np.ndarray, seq: int, stamp_ns: int) -> bytes:
        """This stage's output features → the wire frame for the next stage."""
        return EdgeEngine.pack_features(self.outbound, features, seq, stamp_ns)

    def forward(self, data: bytes | Frame, stamp_ns: int) -> bytes:
        """Decode, run and re-encode one frame, keeping its sequence number."""
        frame, features = self.run(data)
        return self.encode(features, frame.seq, stamp_ns)
