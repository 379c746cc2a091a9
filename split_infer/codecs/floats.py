"""Float tensor stages: ``float32`` (exact) and ``float16`` (clipped to the finite fp16 range).

Their symbols are the float values themselves, so only the general-purpose byte stages
(``raw``, ``zstd``, ``lz4``) accept them. Neither stage has per-frame params or calibration.
"""

from __future__ import annotations

import numpy as np

from split_infer.codecs._api import SymbolSpec, TensorStage, register_tensor_stage
from split_infer.errors import FrameError

__all__ = ["Float16Stage", "Float32Stage"]

_F16_MAX = float(np.finfo(np.float16).max)


class _FloatStage(TensorStage):
    """Shared part: no per-frame params, no calibration."""

    def check_params(self, params: bytes, shape: tuple[int, ...]) -> None:
        if params:
            raise FrameError("bad_params", f"{self.name} takes no params, got {len(params)} bytes")


@register_tensor_stage("float32", 1)
class Float32Stage(_FloatStage):
    """The features as they are: 4 bytes per element, bit-exact."""

    @property
    def symbols(self) -> SymbolSpec:
        return SymbolSpec("float32")

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, bytes]:
        return np.ascontiguousarray(x, dtype=np.float32), b""

    def decode(self, symbols: np.ndarray, params: bytes, shape: tuple[int, ...]) -> np.ndarray:
        self.check_params(params, shape)
        return symbols.astype(np.float32, copy=False).reshape(shape)


@register_tensor_stage("float16", 2)
class Float16Stage(_FloatStage):
    """Half precision: 2 bytes per element, relative error <= 2**-11 inside ±65504."""

    @property
    def symbols(self) -> SymbolSpec:
        return SymbolSpec("float16")

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, bytes]:
        # Clipping first keeps large activations finite instead of overflowing to ±inf.
        return np.clip(x, -_F16_MAX, _F16_MAX).astype(np.float16), b""

    def decode(self, symbols: np.ndarray, params: bytes, shape: tuple[int, ...]) -> np.ndarray:
        self.check_params(params, shape)
        return symbols.astype(np.float32).reshape(shape)
