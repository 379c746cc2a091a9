"""The versioned binary frame a compressed feature tensor travels in.

A frame rides in ``sensor_msgs/CompressedImage.data`` with
``format = "split_infer/1; <codec spec>"``. All integers are little-endian:

=======  ==============  =====================================================================
offset   field           meaning
=======  ==============  =====================================================================
0        magic    4s     ``b"SPIF"``
4        version  u8     ``1`` (``2``: authenticated, see split_infer.frame_auth)
5        flags    u8     application bits, carried through uninterpreted
6        codec_id u16    ``tensor_stage_id << 8 | byte_stage_id`` (see split_infer.codecs)
8        split    u16    split point  ┐ together the *configuration id*: the cloud picks the
10       ratio    f32    ratio        ┘ decoder and tail per frame, so switching needs no
                                        handshake and survives reordering
14       seq      u64    sequence number
22       stamp    i64    send time, nanoseconds
30       dtype    u8     decoded dtype code: 1 float32, 2 float16, 3 float64
31       ndim     u8     1..4
32       shape    u32    × ndim, each >= 1
32+4n    params   u16    params_len
34+4n    payload  u32    payload_len
38+4n    params   bytes  codec params (cflags, calibration fingerprint, quantizer bounds...)
...      payload  bytes  codec payload
end-4    crc      u32    zlib.crc32 of every byte before it
(v2)     auth     20 B   key id u32 + HMAC tag: checked by the receiver, skipped here
=======  ==============  =====================================================================

Decoding is defensive: every length is checked against the bytes actually present (and the
total must match exactly), the CRC is verified before any field is interpreted, the declared
tensor must fit ``max_tensor_bytes`` (as float32, the decoder's working type), and every
problem raises :class:`~split_infer.errors.FrameError` -- nothing else escapes, nothing is
allocated beyond the input plus the capped tensor::

    bytes ──decode_frame──▶ Frame ──codecs[frame.codec_id].decompress──▶ ndarray
            (layout, CRC,          (bounded inflate, params, symbol range,
             caps, known ids)       finiteness)
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from split_infer.codecs import (
    DEFAULT_MAX_TENSOR_BYTES,
    Codec,
    EncodedTensor,
    is_registered_codec_id,
)
from split_infer.config_key import ConfigKey, config_key
from split_infer.errors import EncodeError, FrameError

__all__ = [
    "AUTH_TRAILER_BYTES",
    "AUTH_VERSION",
    "DTYPE_CODES",
    "FORMAT_PREFIX",
    "MAGIC",
    "VERSION",
    "Frame",
    "decode_frame",
    "decode_tensor",
    "encode_frame",
    "format_string",
    "pack",
    "parse_format",
    "unpack",
]

MAGIC = b"SPIF"
#: The version :func:`encode_frame` writes.
VERSION = 1
#: An authenticated frame (:mod:`split_infer.frame_auth`): the same layout with this version
#: byte, followed by a trailer of this many bytes (key id, tag) that the decoder skips.
AUTH_VERSION = 2
AUTH_TRAILER_BYTES = 20
_VERSIONS = (VERSION, AUTH_VERSION)
FORMAT_PREFIX = "split_infer/"
#: dtype name ⇄ wire code of the tensor the decoder returns.
DTYPE_CODES: dict[str, int] = {"float32": 1, "float16": 2, "float64": 3}
_DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}

_FIXED = struct.Struct("<4sBBHHfQqBB")  # magic .. ndim
_LENGTHS = struct.Struct("<HI")  # params_len, payload_len
_CRC = struct.Struct("<I")
_MIN_FRAME = _FIXED.size + 4 + _LENGTHS.size + _CRC.size  # ndim = 1, empty params/payload


def _f32(value: float) -> float:
    """Round to float32 so a Frame compares equal to its own decoded copy."""
    return config_key(0, value)[1]


@dataclass(frozen=True)
class Frame:
    """One decoded (or to-be-encoded) wire frame.

    ``ratio`` is stored rounded to float32, the precision it has on the wire, so that
    ``Frame(..., ratio=0.1).config == decode_frame(encode_frame(frame)).config``.
    """

    codec_id: int
    shape: tuple[int, ...]
    payload: bytes
    params: bytes = b""
    dtype: str = "float32"
    split_point: int = 0
    ratio: float = 1.0
    seq: int = 0
    stamp_ns: int = 0
    flags: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "ratio", _f32(self.ratio))
        object.__setattr__(self, "payload", bytes(self.payload))
        object.__setattr__(self, "params", bytes(self.params))

    @property
    def config(self) -> ConfigKey:
        """The configuration id ``(split_point, ratio)``."""
        return self.split_point, self.ratio


def _field_error(message: str) -> EncodeError:
    return EncodeError("bad_field", message)


def encode_frame(frame: Frame) -> bytes:
    """Serialize ``frame``; raises :class:`EncodeError` if a field does not fit its width."""
    if not 0 <= frame.codec_id <= 0xFFFF or not is_registered_codec_id(frame.codec_id):
        raise _field_error(f"codec id {frame.codec_id!r} is not registered")
    if not 0 <= frame.split_point <= 0xFFFF:
        raise _field_error(f"split point {frame.split_point} is not a u16")
    if not (math.isfinite(frame.ratio) and frame.ratio > 0):
        raise _field_error(f"ratio {frame.ratio} must be finite and > 0 as float32")
    if not 0 <= frame.seq < 1 << 64:
        raise _field_error(f"seq {frame.seq} is not a u64")
    if not -(1 << 63) <= frame.stamp_ns < 1 << 63:
        raise _field_error(f"stamp {frame.stamp_ns} is not an i64")
    if not 0 <= frame.flags <= 0xFF:
        raise _field_error(f"flags {frame.flags} is not a u8")
    if frame.dtype not in DTYPE_CODES:
        raise _field_error(f"dtype {frame.dtype!r} is not one of {list(DTYPE_CODES)}")
    if not 1 <= len(frame.shape) <= 4 or not all(1 <= d < 1 << 32 for d in frame.shape):
        raise EncodeError("bad_shape", f"shape {frame.shape} needs 1-4 dims in [1, 2**32)")
    if len(frame.params) > 0xFFFF:
        raise EncodeError("too_large", f"params of {len(frame.params)} bytes exceed 65535")
    if len(frame.payload) > 0xFFFFFFFF:
        raise EncodeError("too_large", f"payload of {len(frame.payload)} bytes exceeds 4 GiB")
    head = _FIXED.pack(
        MAGIC,
        VERSION,
        frame.flags,
        frame.codec_id,
        frame.split_point,
        frame.ratio,
        frame.seq,
        frame.stamp_ns,
        DTYPE_CODES[frame.dtype],
        len(frame.shape),
    )
    body = b"".join(
        (
            head,
            struct.pack(f"<{len(frame.shape)}I", *frame.shape),
            _LENGTHS.pack(len(frame.params), len(frame.payload)),
            frame.params,
            frame.payload,
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def _as_bytes(data: Any) -> bytes | memoryview:
    """Accept bytes, bytearray, memoryview, array.array('B') or a uint8 ndarray without copying."""
    if isinstance(data, bytes):
        return data
    view = memoryview(data)  # TypeError for non-buffers: a caller bug, not bad input
    if not view.c_contiguous:  # a strided view (e.g. arr[::2]): struct and zlib need one block
        return view.tobytes()
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def decode_frame(data: Any, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> Frame:
    """Parse and validate a frame from untrusted bytes.

    Checks, in order: length, magic, version, ndim, every length field against the bytes
    present and the exact total, CRC, dims, dtype, ratio, the tensor size cap and the codec
    id. Raises :class:`FrameError` (with ``reason``) on the first failure.
    """
    buf = _as_bytes(data)
    n = len(buf)
    if n < 4:
        raise FrameError("truncated", f"{n} bytes is shorter than the magic")
    if bytes(buf[:4]) != MAGIC:
        raise FrameError("bad_magic", f"magic {bytes(buf[:4])!r} != {MAGIC!r}")
    if n < 5:
        raise FrameError("truncated", "frame ends before the version byte")
    if buf[4] not in _VERSIONS:
        raise FrameError("bad_version", f"wire version {buf[4]}, this decoder speaks "
                                        f"{' and '.join(map(str, _VERSIONS))}")
    trailer = AUTH_TRAILER_BYTES if buf[4] == AUTH_VERSION else 0
    if n < _MIN_FRAME:
        raise FrameError("truncated", f"{n} bytes is shorter than the smallest frame")
    (_, _, flags, codec_id, split_point, ratio, seq, stamp_ns, dtype_code, ndim) = (
        _FIXED.unpack_from(buf)
    )
    if not 1 <= ndim <= 4:
        raise FrameError("bad_header", f"ndim {ndim} is not in 1..4")
    shape_end = _FIXED.size + 4 * ndim
    header_end = shape_end + _LENGTHS.size
    if n < header_end + _CRC.size:
        raise FrameError("truncated", f"{n} bytes is shorter than the {ndim}-d header")
    shape = struct.unpack_from(f"<{ndim}I", buf, _FIXED.size)
    params_len, payload_len = _LENGTHS.unpack_from(buf, shape_end)
    total = header_end + params_len + payload_len + _CRC.size
    if n < total + trailer:
        raise FrameError("truncated", f"length fields need {total + trailer} bytes, got {n}")
    if n > total + trailer:
        raise FrameError("length_mismatch", f"{n - total - trailer} bytes after the CRC"
                                            + (" and the authentication trailer" if trailer
                                               else ""))
    (crc,) = _CRC.unpack_from(buf, total - _CRC.size)
    if zlib.crc32(buf[: total - _CRC.size]) != crc:
        raise FrameError("crc_mismatch", "CRC32 does not match the frame")
    if min(shape) < 1:
        raise FrameError("bad_header", f"shape {shape} has a zero dimension")
    if dtype_code not in _DTYPE_NAMES:
        raise FrameError("bad_header", f"unknown dtype code {dtype_code}")
    if not (math.isfinite(ratio) and ratio > 0):
        raise FrameError("bad_header", f"ratio {ratio} must be finite and > 0")
    if math.prod(shape) * 4 > max_tensor_bytes:
        raise FrameError("oversize", f"shape {shape} exceeds {max_tensor_bytes} bytes as float32")
    if not is_registered_codec_id(codec_id):
        raise FrameError("unknown_codec", f"codec id 0x{codec_id:04x} is not registered")
    params_start = header_end
    payload_start = params_start + params_len
    return Frame(
        codec_id=codec_id,
        shape=shape,
        payload=bytes(buf[payload_start : payload_start + payload_len]),
        params=bytes(buf[params_start:payload_start]),
        dtype=_DTYPE_NAMES[dtype_code],
        split_point=split_point,
        ratio=ratio,
        seq=seq,
        stamp_ns=stamp_ns,
        flags=flags,
    )


def format_string(spec: str, version: int = VERSION) -> str:
    """``CompressedImage.format`` for frames of codec ``spec``: ``"split_infer/1; <spec>"``
    (``/2`` for authenticated frames)."""
    return f"{FORMAT_PREFIX}{version}; {spec}"


def parse_format(text: str) -> str:
    """The codec spec in a ``format_string``; FrameError for foreign or newer formats."""
    if not isinstance(text, str) or not text.startswith(FORMAT_PREFIX):
        raise FrameError("bad_format", f"format {text!r} is not a split_infer one")
    version, sep, spec = text[len(FORMAT_PREFIX) :].partition(";")
    if not sep or not spec.strip():
        raise FrameError("bad_format", f"format {text!r} lacks '; <codec spec>'")
    if version.strip() not in {str(v) for v in _VERSIONS}:
        raise FrameError("bad_version", f"format version {version.strip()!r} is not one of "
                                        f"{list(_VERSIONS)}")
    return spec.strip()


def pack(
    codec: Codec,
    x: np.ndarray | EncodedTensor,
    *,
    split_point: int,
    ratio: float,
    seq: int,
    stamp_ns: int,
    flags: int = 0,
) -> bytes:
    """Compress ``x`` with ``codec`` and serialize it as one wire frame (``x`` may already be
    ``codec``'s :class:`~split_infer.codecs.EncodedTensor`, e.g. from
    :meth:`~split_infer.codecs.Codec.compress_image`)."""
    encoded = x if isinstance(x, EncodedTensor) else codec.compress(x)
    return encode_frame(
        Frame(
            codec_id=codec.codec_id,
            shape=encoded.shape,
            payload=encoded.payload,
            params=encoded.params,
            dtype=encoded.dtype,
            split_point=split_point,
            ratio=ratio,
            seq=seq,
            stamp_ns=stamp_ns,
            flags=flags,
        )
    )


CodecResolver = Mapping[int, Codec] | Callable[[Frame], "Codec | None"]


def unpack(
    data: Any,
    codecs: CodecResolver,
    *,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
) -> tuple[Frame, np.ndarray]:
    """Decode a wire frame and its tensor (:func:`decode_frame` then :func:`decode_tensor`).

    ``codecs`` maps codec id → :class:`Codec`, or is a callable resolving a :class:`Frame` to
    its codec (e.g. by ``frame.config``) that returns None (or raises ``LookupError``) when
    it has none. The tensor comes back in the frame's dtype.
    """
    frame = decode_frame(data, max_tensor_bytes=max_tensor_bytes)
    return frame, decode_tensor(frame, codecs, max_tensor_bytes=max_tensor_bytes)


def decode_tensor(
    frame: Frame,
    codecs: CodecResolver,
    *,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
) -> np.ndarray:
    """The tensor of an already decoded (and so CRC-checked) frame; see :func:`unpack`."""
    try:
        codec = codecs.get(frame.codec_id) if isinstance(codecs, Mapping) else codecs(frame)
    except LookupError:
        codec = None
    if codec is None:
        raise FrameError("unknown_codec", f"no decoder for codec id 0x{frame.codec_id:04x}")
    if codec.codec_id != frame.codec_id:
        raise FrameError(
            "unknown_codec", f"resolved {codec.spec} for codec id 0x{frame.codec_id:04x}"
        )
    x = codec.decompress(
        frame.payload, frame.params, frame.shape, max_tensor_bytes=max_tensor_bytes
    )
    if frame.dtype != "float32":
        with np.errstate(over="ignore"):
            x = x.astype(frame.dtype)
        if not np.isfinite(x).all():
            raise FrameError("nonfinite", f"decoded tensor overflows {frame.dtype}")
    return x
