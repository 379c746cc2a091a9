"""``tanhq``: fixed-range n-bit quantization of tanh outputs (BBNet, Zhou et al. 2021, §3.2.2).

BBNet ends its feature reduction unit with a tanh, so the tensor on the wire lies in
``[-1, 1]`` by construction and the quantizer needs no statistics at all::

    V ──clip to [-1, 1]──▶ V' = round((V + 1)·(2ⁿ − 1)/2) ∈ {0 … 2ⁿ − 1}   (uint8 symbols)
    V' ─────────────────▶ V̂ = 2·V'/(2ⁿ − 1) − 1

The paper prints eq. (4) as ``round[(V + 1)·(2ⁿ − 1)]``; without the ``/2`` the symbols
would need n + 1 bits, so the ``/2`` (which maps ``[-1, 1]`` onto exactly ``2ⁿ`` levels, both
ends reconstructed exactly) is what is implemented. Unlike the min/max quantizer of BottleNet
eq. (1) (Choi & Bajić), frames carry **no per-frame parameters** (no min/max) and the stage
needs **no calibration**: the range is fixed. ``round`` is round-half-to-even, as in numpy
and torch, so :func:`split_infer.codecs.learned.bbnet.tanh_quantize` reproduces the stage
bit for bit during training.
"""

from __future__ import annotations

import numpy as np

from split_infer.codecs._api import Param, SymbolSpec, TensorStage, register_tensor_stage
from split_infer.errors import FrameError

__all__ = ["TanhQuantStage"]


@register_tensor_stage("tanhq", 4)
class TanhQuantStage(TensorStage):
    """Uniform ``2**bits``-level quantizer over the fixed range ``[-1, 1]`` (BBNet eq. 4)."""

    PARAMS = {  # noqa: RUF012 -- read-only schema shared by all instances
        "bits": Param(int, 8, "bits per element (n in BBNet eq. 4)", low=1, high=8),
    }

    def __init__(self, *, bits: int) -> None:
        super().__init__(bits=bits)
        self.bits = bits
        self.levels = 1 << bits

    @property
    def symbols(self) -> SymbolSpec:
        return SymbolSpec("uint8", self.levels)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, bytes]:
        # float32 throughout, so the result equals the float32 torch expression exactly.
        half = np.float32((self.levels - 1) / 2)
        q = np.rint((np.clip(x, -1.0, 1.0).astype(np.float32) + np.float32(1)) * half)
        return q.astype(np.uint8), b""

    def check_params(self, params: bytes, shape: tuple[int, ...]) -> None:
        if params:
            raise FrameError("bad_params", f"tanhq takes no params, got {len(params)} bytes")

    def decode(self, symbols: np.ndarray, params: bytes, shape: tuple[int, ...]) -> np.ndarray:
        self.check_params(params, shape)
        step = np.float32(2 / (self.levels - 1))
        return symbols.reshape(shape).astype(np.float32) * step - np.float32(1)
