"""Uniform quantization with clipping at μ ± wσ (Ulhaq's thesis, §2.1.2-2.1.3).

``quant:bits=B,w=W,per=P`` maps each element to one of ``N = 2**B`` equal bins over a clip
interval ``[lo, hi]`` and reconstructs at the bin midpoint::

    x ──clip to [lo, hi]──▶ q = floor((x − lo)·N / (hi − lo)) ∈ [0, N)   (uint8 symbols)
    q ──────────────────▶ x̂ = lo + (q + ½)·(hi − lo)/N

so ``|x − x̂| <= (hi − lo)/(2N)`` inside the interval. ``per`` picks where μ, σ come from:

* ``tensor``  -- one (μ, σ) for the whole tensor (thesis §2.1.2);
* ``channel`` -- one per channel (axis 0 of (C, H, W));
* ``neuron``  -- one per element (thesis §2.1.3, "per-neuron distribution").

Calibrated: ``calibrate(features)`` measures μ, σ per group over a set of real feature
tensors and fixes ``[lo, hi] = [max(μ − wσ, min), min(μ + wσ, max)]`` where min/max are the
whole calibration set's extremes. Intersecting with the observed range refines the thesis:
after a ReLU, μ − wσ is usually negative and would waste the bins below zero. Frames then
carry no per-frame data at all.

Uncalibrated ("dynamic"): ``lo, hi`` are the frame's own min/max (per tensor or per channel)
and travel in the params as float32. ``per=neuron`` needs calibration.

Stage params (after the codec's cflags/fingerprint)::

    u8 bits | u8 per (0 tensor, 1 channel, 2 neuron) | u8 mode (0 dynamic, 1 calibrated)
    mode 0 only: f32 lo[G] | f32 hi[G]        G = 1 (tensor) or C (channel)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

from split_infer.codecs._api import Param, SymbolSpec, TensorStage, register_tensor_stage
from split_infer.errors import EncodeError, FrameError

__all__ = ["QuantStage"]

_PER_CODES = {"tensor": 0, "channel": 1, "neuron": 2}
_MODE_DYNAMIC = 0
_MODE_CALIBRATED = 1
_HEADER = struct.Struct("<BBB")
# Codec params are u16-length on the wire; the codec prefix takes up to 5 bytes of it.
_MAX_STAGE_PARAMS = 0xFFFF - 5
_STATE_KEYS = ("mean", "std", "lo", "hi")


def _min_width(center: np.ndarray) -> np.ndarray:
    """Smallest clip width we allow: constant (e.g. dead-ReLU) groups would divide by zero."""
    return 1e-6 * np.maximum(1.0, np.abs(center))


def _fit_interval(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widen degenerate intervals, then round to float32 (the precision used on the wire).

    Intervals that are wide enough are kept bit-exact, so a frame's own min and max (dynamic
    mode) stay inside it.
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    center = (lo + hi) / 2
    min_width = _min_width(center)
    narrow = hi - lo < min_width
    lo = np.where(narrow, center - min_width / 2, lo).astype(np.float32)
    hi = np.where(narrow, center + min_width / 2, hi).astype(np.float32)
    return lo, hi


@register_tensor_stage("quant", 3)
class QuantStage(TensorStage):
    """Uniform ``2**bits``-level quantizer with μ ± wσ clipping per tensor/channel/neuron."""

    PARAMS = {  # noqa: RUF012 -- read-only schema shared by all instances
        "bits": Param(int, 8, "bits per element (2**bits levels)", low=1, high=8),
        "w": Param(float, 3.3, "clip half-width in σ (thesis §2.1.2: 3.3)", low=0.1, high=100),
        "per": Param(str, "tensor", "statistics granularity", choices=tuple(_PER_CODES)),
    }

    def __init__(self, *, bits: int, w: float, per: str) -> None:
        super().__init__(bits=bits, w=w, per=per)
        self.bits = bits
        self.w = w
        self.per = per
        self.levels = 1 << bits
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    # -- configuration ---------------------------------------------------------------

    @property
    def symbols(self) -> SymbolSpec:
        return SymbolSpec("uint8", self.levels)

    @property
    def needs_calibration(self) -> bool:
        # Per-neuron min/max per frame would cost more than the tensor itself.
        return self.per == "neuron"

    @property
    def calibrated(self) -> bool:
        return self.lo is not None

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        if self.lo is not None and self.per != "tensor":
            expected = self.lo.shape if self.per == "neuron" else self.lo.shape + shape[1:]
            if shape != expected:
                return f"calibrated for shape {expected}, got {shape}"
        if self.lo is None and self.per == "channel" and 8 * shape[0] > _MAX_STAGE_PARAMS:
            return f"dynamic per-channel params for {shape[0]} channels exceed 64 KiB"
        return None

    def _groups(self, shape: tuple[int, ...]) -> int:
        return 1 if self.per == "tensor" else shape[0]

    def _broadcast(self, stat: np.ndarray, ndim: int) -> np.ndarray:
        if self.per == "tensor":
            return stat.reshape((1,) * ndim)
        if self.per == "channel":
            return stat.reshape((-1,) + (1,) * (ndim - 1))
        return stat

    def _step(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        # float64 keeps (hi - lo) from overflowing for extreme but finite float32 bounds.
        return ((hi.astype(np.float64) - lo) / self.levels).astype(np.float32)

    # -- calibration -----------------------------------------------------------------

    def calibrate(self, features: np.ndarray) -> None:
        # features is (N, *tensor_shape); reduce over the batch and whatever `per` pools.
        ndim = features.ndim
        if self.per == "tensor":
            axes: tuple[int, ...] = tuple(range(ndim))
            stat_shape: tuple[int, ...] = (1,)
        elif self.per == "channel":
            axes = (0, *range(2, ndim))
            stat_shape = features.shape[1:2]
        else:
            axes = (0,)
            stat_shape = features.shape[1:]
        mean = features.mean(axis=axes, dtype=np.float64).reshape(stat_shape)
        std = features.std(axis=axes, dtype=np.float64).reshape(stat_shape)
        # The whole-tensor range, not the group's: a per-neuron max over a few calibration
        # samples sits well inside the true tail and would clip new frames.
        seen_lo, seen_hi = float(features.min()), float(features.max())
        lo, hi = _fit_interval(
            np.maximum(mean - self.w * std, seen_lo), np.minimum(mean + self.w * std, seen_hi)
        )
        self.mean = mean.astype(np.float32)
        self.std = std.astype(np.float32)
        self.lo, self.hi = lo, hi

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.lo is None:
            return {}
        return {"mean": self.mean, "std": self.std, "lo": self.lo, "hi": self.hi}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        if not state:
            self.mean = self.std = self.lo = self.hi = None
            return
        if set(state) != set(_STATE_KEYS):
            raise ValueError(f"quant state needs keys {list(_STATE_KEYS)}, got {sorted(state)}")
        arrays = {k: np.asarray(state[k], dtype=np.float32) for k in _STATE_KEYS}
        shape = arrays["lo"].shape
        if any(a.shape != shape for a in arrays.values()):
            raise ValueError(
                f"quant state arrays differ in shape: {[a.shape for a in arrays.values()]}"
            )
        expected_ndim = {"tensor": (1,), "channel": (1,), "neuron": (1, 2, 3, 4)}[self.per]
        if len(shape) not in expected_ndim or (self.per == "tensor" and shape != (1,)):
            raise ValueError(f"quant per={self.per} state has shape {shape}")
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ValueError("quant state contains NaN or Inf")
        if not (arrays["hi"] > arrays["lo"]).all() or (arrays["std"] < 0).any():
            raise ValueError("quant state needs hi > lo and std >= 0")
        self.mean, self.std, self.lo, self.hi = (arrays[k] for k in _STATE_KEYS)

    # -- coding ----------------------------------------------------------------------

    def _dynamic_interval(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = x.reshape(1, -1) if self.per == "tensor" else x.reshape(x.shape[0], -1)
        return _fit_interval(flat.min(axis=1), flat.max(axis=1))

    def _interval(self, lows: np.ndarray | None = None, highs: np.ndarray | None = None, *,
                  x: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, bytes]:
        """(lo, hi, stage params) of one frame: the calibration, or the frame's own range from
        ``x`` or from its per-group extremes ``lows``/``highs``."""
        if self.lo is not None:
            lo, hi, mode, tail = self.lo, self.hi, _MODE_CALIBRATED, b""
        else:
            lo, hi = (self._dynamic_interval(x) if x is not None
                      else _fit_interval(lows, highs))  # type: ignore[arg-type]
            mode, tail = _MODE_DYNAMIC, lo.astype("<f4").tobytes() + hi.astype("<f4").tobytes()
        return lo, hi, _HEADER.pack(self.bits, _PER_CODES[self.per], mode) + tail

    def _quantize(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        inv = (self.levels / (hi.astype(np.float64) - lo)).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            t = (x - self._broadcast(lo, x.ndim)) * self._broadcast(inv, x.ndim)
        np.floor(t, out=t)
        np.clip(t, 0, self.levels - 1, out=t)
        return t.astype(np.uint8)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, bytes]:
        lo, hi, params = self._interval(x=x)
        return self._quantize(x, lo, hi), params

    @property
    def maps_levels(self) -> bool:
        # Per tensor or channel a symbol depends only on its value (and the frame's range);
        # per neuron also on its position.
        return self.per != "neuron"

    def level_tables(self, values: np.ndarray,
                     used: np.ndarray | None) -> tuple[np.ndarray, bytes]:
        if not self.maps_levels:
            raise EncodeError("bad_shape", f"{self.spec} quantizes per position, not per level")
        lows = highs = None
        if self.lo is None:
            if used is None:
                raise EncodeError("bad_shape", f"dynamic {self.spec} needs the frame's levels")
            # The normalization is monotonic per channel, so a channel's extremes are the
            # values of its lowest and highest level: the numbers encode()'s min/max finds.
            ends = values[np.arange(values.shape[0])[:, None], used]
            lows, highs = ends.min(axis=1), ends.max(axis=1)
            if self.per == "tensor":
                lows, highs = lows.min(keepdims=True), highs.max(keepdims=True)
        lo, hi, params = self._interval(lows, highs)
        tables = self._quantize(np.ascontiguousarray(values, np.float32)[:, None, :], lo, hi)
        return tables[:, 0, :], params

    def _bounds(self, params: bytes, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Validated (lo, hi) for a frame: the calibration, or the frame's own bounds."""
        if len(params) < _HEADER.size:
            raise FrameError("bad_params", f"quant params are {len(params)} bytes")
        bits, per, mode = _HEADER.unpack_from(params)
        if (bits, per) != (self.bits, _PER_CODES[self.per]):
            raise FrameError(
                "bad_params",
                f"frame quantized with bits={bits} per-code={per}, decoder is {self.spec}",
            )
        if mode == _MODE_CALIBRATED:
            if len(params) != _HEADER.size:
                raise FrameError("bad_params", "calibrated quant params carry extra bytes")
            if self.lo is None:
                raise FrameError("not_calibrated", f"{self.spec} has no calibration")
            return self.lo, self.hi
        if mode != _MODE_DYNAMIC:
            raise FrameError("bad_params", f"unknown quant mode {mode}")
        if self.lo is not None or self.per == "neuron":
            raise FrameError("bad_params", f"dynamic quant frame for calibrated {self.spec}")
        groups = self._groups(shape)
        if len(params) != _HEADER.size + 8 * groups:
            raise FrameError("bad_params", f"dynamic quant params need {groups} lo/hi pairs")
        bounds = np.frombuffer(params, "<f4", offset=_HEADER.size).astype(np.float32)
        if not np.isfinite(bounds).all():
            raise FrameError("nonfinite", "quant lo/hi params contain NaN or Inf")
        lo, hi = bounds[:groups], bounds[groups:]
        if not (hi > lo).all():
            raise FrameError("bad_params", "quant params need hi > lo")
        return lo, hi

    def check_params(self, params: bytes, shape: tuple[int, ...]) -> None:
        self._bounds(params, shape)

    def decode(self, symbols: np.ndarray, params: bytes, shape: tuple[int, ...]) -> np.ndarray:
        lo, hi = self._bounds(params, shape)
        ndim = len(shape)
        # Midpoint of bin q written as center + offset: |offset| <= (hi − lo)/2, so bounds near
        # ±float32 max cannot overflow the way lo + (q + ½)·step would.
        center = self._broadcast(lo * np.float32(0.5) + hi * np.float32(0.5), ndim)
        step = self._broadcast(self._step(lo, hi), ndim)
        offset = symbols.reshape(shape).astype(np.float32) + np.float32(0.5 - self.levels / 2)
        return center + offset * step
