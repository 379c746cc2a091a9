"""ROS-free edge and cloud engines: the per-frame work the nodes wrap.

::

    camera frame (preprocessed, 1×3×H×W)
          │
    EdgeEngine.encode ── head backend ─▶ features ─▶ codec.compress ─▶ wire.pack ─▶ bytes
                                                                                  │
    CloudEngine.decode ◀─ tail backend ◀─ codec.decompress ◀─ wire.unpack ◀───────┘
          │
      logits (1×classes)

Every frame names its configuration (split point, codec id, ratio), so the cloud picks the
matching decoder and tail per frame: switching needs no handshake and survives reordering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codecs import Codec
from ..errors import FrameError
from ..wire import Frame, pack, unpack
from .backends import Backend

__all__ = ["CloudEngine", "EdgeEngine", "Route"]


class EdgeEngine:
    """Head + encoder of one configuration."""

    def __init__(self, head: Backend, codec: Codec, split_point: int, ratio: float = 1.0) -> None:
        self.head = head
        self.codec = codec
        self.split_point = split_point
        self.ratio = ratio

    def features(self, x: np.ndarray) -> np.ndarray:
        """Head output for one preprocessed frame ``(1, 3, H, W)`` → ``(C, H', W')``."""
        return self.head(x)[0]

    def encode(self, x: np.ndarray, seq: int, stamp_ns: int) -> bytes:
        """One preprocessed frame → one wire frame."""
        return pack(
            self.codec,
            self.features(x),
            split_point=self.split_point,
            ratio=self.ratio,
            seq=seq,
            stamp_ns=stamp_ns,
        )


@dataclass(frozen=True)
class Route:
    codec: Codec
    tail: Backend


class CloudEngine:
    """Decoder + tail for every configuration it was given, chosen per frame."""

    def __init__(self) -> None:
        self._routes: dict[tuple[int, int], Route] = {}

    def add_route(self, split_point: int, codec: Codec, tail: Backend) -> None:
        self._routes[(split_point, codec.codec_id)] = Route(codec, tail)

    def _resolve(self, frame: Frame) -> Codec:
        route = self._routes.get((frame.split_point, frame.codec_id))
        if route is None:
            raise FrameError(
                "unknown_config",
                f"no decoder for split point {frame.split_point} with codec id "
                f"{frame.codec_id:#06x}",
            )
        return route.codec

    def decode(self, data: bytes) -> tuple[Frame, np.ndarray]:
        """Wire bytes → (frame header, logits ``(1, classes)``); FrameError on bad input."""
        frame, features = unpack(data, self._resolve)
        tail = self._routes[(frame.split_point, frame.codec_id)].tail
        return frame, tail(features[None])
