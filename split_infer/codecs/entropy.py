"""``rans``: static-model rANS entropy coding of integer symbols (constriction).

The model is one categorical distribution over the alphabet, fitted at calibration time to
the histogram of the calibration set's symbols::

    calibration symbols ──histogram + 1 (Laplace)──▶ counts ──▶ Categorical(p)
    frame symbols ──AnsCoder.encode_reverse(p)──▶ u32 words (little-endian) = payload
    payload ──AnsCoder.decode(p, prod(shape))──▶ exactly prod(shape) symbols

The +1 keeps symbols never seen in calibration encodable at a small cost; the counts (not
floats) are the state, so encoder and decoder rebuild bit-identical models. A frame drawn from
the calibration distribution costs its empirical entropy plus the (tiny) KL divergence to the
model plus at most a couple of words of coder state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import constriction
import numpy as np

from split_infer.codecs._api import ByteStage, SymbolSpec, register_byte_stage
from split_infer.errors import EncodeError, FrameError

__all__ = ["RansStage", "empirical_entropy_bits", "histogram_entropy_bits"]


def histogram_entropy_bits(counts: np.ndarray) -> float:
    """Entropy in bits/symbol of a symbol histogram."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def empirical_entropy_bits(symbols: np.ndarray, levels: int) -> float:
    """Entropy in bits/symbol of the histogram of ``symbols`` (alphabet ``[0, levels)``)."""
    return histogram_entropy_bits(np.bincount(np.asarray(symbols).reshape(-1), minlength=levels))


@register_byte_stage("rans", 3)
class RansStage(ByteStage):
    """rANS with a calibrated, Laplace-smoothed static categorical model."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: np.ndarray | None = None
        self._model = None

    @property
    def needs_calibration(self) -> bool:
        return True

    @property
    def calibrated(self) -> bool:
        return self.counts is not None

    def check_symbols(self, symbols: SymbolSpec) -> str | None:
        if not symbols.is_integer:
            return "rans codes integer symbols; put a quantizing tensor stage in front"
        return None

    def _set_counts(self, counts: np.ndarray) -> None:
        self.counts = counts
        probs = counts.astype(np.float64) / counts.sum()
        self._model = constriction.stream.model.Categorical(probs, perfect=False)

    def calibrate(self, batches: Iterable[np.ndarray], symbols: SymbolSpec) -> None:
        counts = np.ones(symbols.levels, np.int64)
        for batch in batches:
            counts += np.bincount(np.asarray(batch).reshape(-1), minlength=symbols.levels)
        self._set_counts(counts)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {} if self.counts is None else {"counts": self.counts}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        if not state:
            self.counts = self._model = None
            return
        if set(state) != {"counts"}:
            raise ValueError(f"rans state needs key 'counts', got {sorted(state)}")
        counts = np.asarray(state["counts"])
        if counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 1).any():
            raise ValueError("rans counts must be a 1-D array of positive integers")
        self._set_counts(counts.astype(np.int64))

    def _require_levels(self, spec: SymbolSpec) -> None:
        if self.counts is None or len(self.counts) != spec.levels:
            have = None if self.counts is None else len(self.counts)
            raise FrameError("not_calibrated", f"rans model has {have} levels, need {spec.levels}")

    def encode(self, symbols: np.ndarray, spec: SymbolSpec) -> bytes:
        if self.counts is None or len(self.counts) != spec.levels:
            have = None if self.counts is None else len(self.counts)
            raise EncodeError(
                "not_calibrated", f"rans model has {have} levels, need {spec.levels}"
            )
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols.reshape(-1).astype(np.int32), self._model)
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        self._require_levels(spec)
        if len(payload) % 4:
            raise FrameError("corrupt_payload", f"rans payload of {len(payload)} bytes")
        words = np.frombuffer(payload, "<u4").astype(np.uint32)
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            symbols = coder.decode(self._model, math.prod(shape))
        except ValueError as exc:
            raise FrameError("corrupt_payload", f"rans: {exc}") from None
        # A valid stream is used up exactly; leftovers mean the payload is not ours.
        if not coder.is_empty():
            raise FrameError("length_mismatch", "rans payload has undecoded data left")
        return symbols.astype(spec.dtype).reshape(shape)
