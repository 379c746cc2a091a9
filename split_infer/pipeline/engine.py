"""ROS-free edge and cloud engines: the per-frame work the nodes wrap.

::

    camera frame (preprocessed, 1×3×H×W)
          │
    EdgeEngine.encode ─ edge part ─▶ features ─▶ [first k channels] ─▶ codec ─▶ wire.pack ─▶ bytes
                                                                                           │
    CloudEngine.decode ◀─ cloud part ◀─ [fill channels k..C] ◀─ codec ◀─ wire.unpack ◀─────┘
          │
      logits (1×classes)

Every frame names its configuration (split point, ratio), so the cloud picks the matching
decoder and tail per frame: switching needs no handshake and survives reordering. A rateless
configuration sends a channel prefix; the cloud fills the missing channels with calibrated
per-channel means (the thesis's §3.2 concealment), or zeros when the bundle has none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from split_infer.bundle import Bundle, BundleConfiguration
from split_infer.codecs import Codec
from split_infer.config_key import ConfigKey, config_key
from split_infer.errors import FrameError
from split_infer.pipeline.backends import Backend
from split_infer.pipeline.parts import PartLoader
from split_infer.pipeline.timing import StageTimes
from split_infer.wire import Frame, decode_frame, decode_tensor, pack

__all__ = ["CloudEngine", "EdgeConfig", "EdgeEngine", "Route", "softmax", "top_k"]

@dataclass(frozen=True)
class EdgeConfig:
    """What the edge needs for one configuration."""

    part: Backend
    codec: Codec
    split_point: int
    ratio: float = 1.0
    keep_channels: int | None = None
    #: The edge part is the identity (split point 0: the input image is what is sent) and the
    #: codec encodes images directly: :meth:`EdgeEngine.pack_image` skips the float tensor.
    sends_input: bool = False


class EdgeEngine:
    """Edge part + encoder; holds every preloaded configuration, one of them active.

    Switching (:meth:`activate`) only swaps a reference, so it is safe between two frames.
    """

    def __init__(self, configs: dict[ConfigKey, EdgeConfig],
                 active: ConfigKey | None = None) -> None:
        if not configs:
            raise ValueError("EdgeEngine needs at least one configuration")
        self._configs = dict(configs)
        first = next(iter(self._configs.values()))
        self._active = self._configs[active] if active is not None else first

    @classmethod
    def single(cls, part: Backend, codec: Codec, split_point: int, ratio: float = 1.0,
               keep_channels: int | None = None) -> EdgeEngine:
        config = EdgeConfig(part, codec, split_point, ratio, keep_channels)
        return cls({config_key(split_point, ratio): config})

    @classmethod
    def from_bundle(cls, bundle: Bundle, configs: Iterable[BundleConfiguration] | None = None,
                    threads: int | None = None, backend: str = "onnxruntime") -> EdgeEngine:
        """Preload the edge parts (shared parts load once) and codecs of ``configs`` (default
        all), on ONNX Runtime (the bundle's ONNX files) or torch (rebuilt from its
        safetensors, :class:`PartLoader`)."""
        parts = PartLoader(bundle, backend, threads)
        loaded = {}
        for config in configs if configs is not None else bundle.configurations:
            codec = bundle.codec(config)
            sends_input = (config.split_point == 0 and config.keep_channels is None
                           and codec.encodes_images)
            loaded[config.key] = EdgeConfig(parts.edge(config), codec, config.split_point,
                                            config.ratio, config.keep_channels, sends_input)
        return cls(loaded)

    @property
    def active(self) -> EdgeConfig:
        return self._active

    @property
    def available(self) -> list[ConfigKey]:
        return sorted(self._configs)

    def config(self, split_point: int, ratio: float) -> EdgeConfig:
        """A preloaded configuration, active or not; KeyError naming the loaded ones."""
        config = self._configs.get(config_key(split_point, ratio))
        if config is None:
            raise KeyError(f"configuration split={split_point}, ratio={ratio} is not loaded; "
                           f"loaded: {self.available}")
        return config

    def activate(self, split_point: int, ratio: float) -> EdgeConfig:
        self._active = self.config(split_point, ratio)
        return self._active

    def warm_up(self, x: np.ndarray) -> None:
        """Run every configuration once on ``x`` (one preprocessed frame), results dropped:
        backends allocate on their first run."""
        for config in self._configs.values():
            self.encode(x, 0, 0, config)

    def features(self, x: np.ndarray, config: EdgeConfig | None = None) -> np.ndarray:
        """Edge-part output for one preprocessed frame ``(1, 3, H, W)`` → what goes on the wire."""
        config = config or self._active
        out = config.part(x)[0]
        if config.keep_channels is not None:
            out = out[: config.keep_channels]
        return out

    def encode(self, x: np.ndarray, seq: int, stamp_ns: int,
               config: EdgeConfig | None = None) -> bytes:
        """One preprocessed frame → one wire frame, with the active (or given) configuration."""
        config = config or self._active
        return self.pack_features(config, self.features(x, config), seq, stamp_ns)

    @staticmethod
    def pack_features(config: EdgeConfig, features: np.ndarray, seq: int,
                      stamp_ns: int) -> bytes:
        """Features already cut to what is sent → one wire frame naming ``config``."""
        return pack(config.codec, features, split_point=config.split_point,
                    ratio=config.ratio, seq=seq, stamp_ns=stamp_ns)

    @staticmethod
    def pack_image(config: EdgeConfig, crop: np.ndarray, order: str, values: np.ndarray,
                   seq: int, stamp_ns: int) -> bytes:
        """A configuration that :attr:`~EdgeConfig.sends_input`: one input crop (uint8, in
        channel ``order``, normalized by ``values`` as
        :meth:`~split_infer.codecs.Codec.compress_image` describes) → the wire frame
        :meth:`pack_features` makes of the normalized crop, byte for byte."""
        return pack(config.codec, config.codec.compress_image(crop, order, values),
                    split_point=config.split_point, ratio=config.ratio, seq=seq,
                    stamp_ns=stamp_ns)


@dataclass(frozen=True)
class Route:
    codec: Codec
    part: Backend
    full_channels: int | None = None  # rateless: channels the cloud part expects
    fill: np.ndarray | None = None  # per-channel values for the channels not sent


class CloudEngine:
    """Decoder + cloud part for every configuration it was given, chosen per frame."""

    def __init__(self) -> None:
        self._routes: dict[ConfigKey, Route] = {}
        self.times = StageTimes()  # CPU per stage: codec (decode + fill), model (the part)

    def add_route(self, split_point: int, ratio: float, route: Route) -> None:
        self._routes[config_key(split_point, ratio)] = route

    @classmethod
    def from_bundle(cls, bundle: Bundle, configs: Iterable[BundleConfiguration] | None = None,
                    threads: int | None = None, backend: str = "onnxruntime") -> CloudEngine:
        """Routes for ``configs`` (default all) on ONNX Runtime or torch, like
        :meth:`EdgeEngine.from_bundle`."""
        engine = cls()
        parts = PartLoader(bundle, backend, threads)
        for config in configs if configs is not None else bundle.configurations:
            full = config.feature_shape[0] if config.keep_channels is not None else None
            engine.add_route(config.split_point, config.ratio,
                             Route(bundle.codec(config), parts.cloud(config), full,
                                   bundle.fill_values(config)))
        return engine

    @property
    def routes(self) -> list[ConfigKey]:
        return sorted(self._routes)

    def route(self, split_point: int, ratio: float) -> Route:
        """The decoder and cloud part loaded for a configuration; KeyError if none."""
        route = self._routes.get(config_key(split_point, ratio))
        if route is None:
            raise KeyError(f"no route for split {split_point}, ratio {ratio:g}; loaded: "
                           f"{self.routes}")
        return route

    def _route(self, frame: Frame) -> Route:
        route = self._routes.get(frame.config)
        if route is None:
            raise FrameError(
                "unknown_config",
                f"no decoder for split point {frame.split_point}, ratio {frame.ratio:g}; "
                f"loaded: {self.routes}",
            )
        if route.codec.codec_id != frame.codec_id:
            raise FrameError(
                "unknown_codec",
                f"configuration {frame.config} uses codec {route.codec.codec_id:#06x}, "
                f"the frame says {frame.codec_id:#06x}",
            )
        return route

    def _decode(self, data: bytes | Frame) -> tuple[Frame, Route, np.ndarray]:
        # A caller that already parsed the header (the cloud node, for its replay check)
        # passes the Frame, so the CRC and layout are checked once per frame.
        frame = data if isinstance(data, Frame) else decode_frame(data)
        route = self._route(frame)
        with self.times.stage("codec"):
            features = self._features(frame, route)
        return frame, route, features

    @staticmethod
    def _features(frame: Frame, route: Route) -> np.ndarray:
        features = decode_tensor(frame, {frame.codec_id: route.codec})
        if route.full_channels is not None and features.shape[0] < route.full_channels:
            missing = route.full_channels - features.shape[0]
            if route.fill is not None:
                fill = np.broadcast_to(route.fill[features.shape[0]:, None, None],
                                       (missing, *features.shape[1:]))
            else:
                fill = np.zeros((missing, *features.shape[1:]), np.float32)
            features = np.concatenate([features, fill.astype(np.float32)], axis=0)
        return features[None]

    def features(self, data: bytes | Frame) -> tuple[Frame, np.ndarray]:
        """Wire bytes (or a decoded frame) → (header, cloud-part input ``(1, C, H, W)``)."""
        frame, _, features = self._decode(data)
        return frame, features

    def decode(self, data: bytes | Frame) -> tuple[Frame, np.ndarray]:
        """Wire bytes (or a decoded frame) → (header, logits ``(1, classes)``); FrameError on
        bad input."""
        frame, route, features = self._decode(data)
        with self.times.stage("model"):
            return frame, route.part(features)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D logit vector, in float64."""
    z = np.asarray(logits, np.float64).ravel()
    e = np.exp(z - z.max())
    return e / e.sum()


def top_k(probabilities: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` largest values, best first (ties: lower index first)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")
    return [int(i) for i in order[:k]]
