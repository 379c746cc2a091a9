"""Typed errors: the user's mistakes, and untrusted bytes.

:class:`UserError` is the base of every error a user can cause and fix (a missing file, a bad
bundle, an unknown model, a malformed option): the command line prints its message in one line
and exits with status 2, while anything else is a bug and keeps its traceback.

Two further error types, both ``ValueError`` subclasses with a short machine-readable
``reason``:

* :class:`FrameError` -- anything wrong with *untrusted bytes* (a received frame, its
  params or payload). The cloud node catches exactly this type, drops the frame and
  increments the ``/diagnostics`` counter named by ``reason``.
* :class:`EncodeError` -- bad input on the *encoding* side (NaN features, wrong rank,
  an uncalibrated codec that needs calibration, a field that does not fit the frame).

The reason tokens are listed in :data:`FRAME_ERROR_REASONS` and
:data:`ENCODE_ERROR_REASONS`; treat them as a stable API (dashboards key on them).
"""

from __future__ import annotations

__all__ = [
    "ENCODE_ERROR_REASONS",
    "FRAME_ERROR_REASONS",
    "EncodeError",
    "FrameError",
    "MissingFileError",
    "UserError",
]

#: Every ``FrameError.reason`` the package raises, with its meaning.
FRAME_ERROR_REASONS: dict[str, str] = {
    "truncated": "fewer bytes than the header or its length fields require",
    "bad_magic": "the frame does not start with the split_infer magic",
    "bad_version": "unsupported wire-format version (frame header or format string)",
    "bad_format": "the CompressedImage format string is not a split_infer one",
    "bad_header": "a header field is out of range (ndim, a zero dim, dtype code, ratio)",
    "length_mismatch": "a length disagrees with the data (trailing bytes, short stream)",
    "crc_mismatch": "the CRC32 trailer does not match the frame contents",
    "oversize": "the declared tensor exceeds the decoder's size cap",
    "unknown_codec": "the codec id is not registered or has no decoder configured",
    "unknown_config": "no decoder/tail is loaded for the frame's configuration id",
    "shape_mismatch": "the tensor or image shape is not what the decoder expects",
    "bad_params": "codec params malformed, or encoded with a different configuration",
    "not_calibrated": "the frame needs calibration state this decoder does not have",
    "corrupt_payload": "the compressed payload could not be decoded",
    "decompression_bomb": "the payload would inflate beyond the expected size",
    "symbol_range": "a decoded symbol lies outside the codec's alphabet",
    "nonfinite": "NaN or Inf in the decoded tensor or in the params",
}

#: Every ``EncodeError.reason`` the package raises, with its meaning.
ENCODE_ERROR_REASONS: dict[str, str] = {
    "nonfinite": "NaN or Inf in the features",
    "bad_dtype": "the input is not a real-valued numeric array",
    "bad_shape": "the rank or a dimension is not supported by the codec or the frame",
    "shape_mismatch": "the tensor shape differs from the calibrated/configured shape",
    "not_calibrated": "the codec needs calibrate() or load_state_dict() first",
    "too_large": "a field does not fit its wire-format width (params, payload, image size)",
    "bad_field": "a frame header field is out of range (ids, seq, stamp, ratio)",
}


class UserError(Exception):
    """Something the user can fix: the message says what and how. Subclasses also derive from
    the builtin type their callers expect (``ValueError``, ``FileNotFoundError``...)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named (or must provide) does not exist: weights, a trace, data."""


class _ReasonedError(ValueError):
    """A ``ValueError`` with a short ``reason`` token and a human-readable message."""

    def __init__(self, reason: str, message: str = "") -> None:
        # Both go into ``args`` so the exception pickles and reprs faithfully.
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


class FrameError(_ReasonedError):
    """Untrusted bytes were rejected; ``reason`` is one of :data:`FRAME_ERROR_REASONS`."""


class EncodeError(_ReasonedError):
    """Encoding input was rejected; ``reason`` is one of :data:`ENCODE_ERROR_REASONS`."""
