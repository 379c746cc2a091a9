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

from dataclasses import dataclass

import numpy as np

from split_infer.bundle import Bundle, BundleConfiguration, check_chain, link_problem
from split_infer.config_key import ConfigKey, config_key
from split_infer.pipeline.engine import CloudEngine, EdgeConfig, EdgeEngine, Route
from split_infer.pipeline.parts import segment_backend
from split_infer.wire import Frame

__all__ = ["StageEngine"]


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
        problem = link_problem(output_config)
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
    def input_key(self) -> ConfigKey:
        return self.inbound.routes[0]

    @property
    def output_key(self) -> ConfigKey:
        return config_key(self.outbound.split_point, self.outbound.ratio)

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
