"""General-purpose byte stages: ``raw``, ``zstd`` and ``lz4``.

All three start from the *raw symbol stream*: integer symbols bit-packed at
``SymbolSpec.bits`` per element (MSB first, so 4-bit symbols cost half a byte), float
symbols as little-endian IEEE values. Its length is known from the shape alone, which is
what makes decoding bounded::

    symbols ──pack──▶ raw stream (raw_nbytes(shape) bytes) ──zstd/lz4──▶ payload
    payload ──inflate at most raw_nbytes + 1 bytes──▶ raw stream ──unpack──▶ symbols

Packing before zstd/lz4 (rather than one byte per symbol) measured smaller on quantized
ReLU features at every bit width: LZ matching finds the same repeats and lz4 has no entropy
coder of its own to make up for wasted high bits.
"""

from __future__ import annotations

import math

import lz4.block
import numpy as np
import zstandard

from split_infer.codecs._api import ByteStage, Param, SymbolSpec, register_byte_stage
from split_infer.errors import FrameError

__all__ = ["Lz4Stage", "RawStage", "ZstdStage", "pack_symbols", "unpack_symbols"]

# zstd levels <= 19 never use a window above 8 MiB; anything larger in a frame header is an
# attempt to make the decoder allocate.
_ZSTD_MAX_WINDOW_LOG = 23


def pack_symbols(symbols: np.ndarray, spec: SymbolSpec) -> bytes:
    """The raw symbol stream: bit-packed integers or little-endian floats."""
    if not spec.is_integer:
        return np.ascontiguousarray(symbols, np.dtype(spec.dtype).newbyteorder("<")).tobytes()
    flat = np.ascontiguousarray(symbols, dtype=np.uint8).reshape(-1)
    bits = spec.bits
    if bits == 8:
        return flat.tobytes()
    # Keep the low `bits` bits of each symbol, MSB first, and concatenate them.
    planes = np.unpackbits(flat[:, None], axis=1)[:, 8 - bits :]
    return np.packbits(planes.reshape(-1)).tobytes()


def unpack_symbols(data: bytes, count: int, spec: SymbolSpec) -> np.ndarray:
    """Inverse of :func:`pack_symbols`; ``data`` must be exactly ``raw_nbytes`` long."""
    if not spec.is_integer:
        wire = np.dtype(spec.dtype).newbyteorder("<")
        return np.frombuffer(data, wire, count).astype(spec.dtype)
    raw = np.frombuffer(data, np.uint8)
    bits = spec.bits
    if bits == 8:
        return raw[:count].copy()
    planes = np.unpackbits(raw)[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), np.uint8)
    padded[:, 8 - bits :] = planes
    return np.packbits(padded, axis=1).reshape(count)


def _zstd_declared_window(payload: bytes) -> int | None:
    """Window size from a zstd frame header (RFC 8878 §3.1.1.1.2), None if single-segment.

    Parsed by hand because libzstd refuses to report a window it considers too large, which
    would make an allocation attack look like ordinary corruption.
    """
    if len(payload) < 6 or payload[:4] != b"\x28\xb5\x2f\xfd" or payload[4] & 0x20:
        return None
    exponent, mantissa = payload[5] >> 3, payload[5] & 7
    base = 1 << (10 + exponent)
    return base + (base >> 3) * mantissa


def _check_raw_length(stream: bytes, expected: int, what: str) -> None:
    if len(stream) > expected:
        raise FrameError("decompression_bomb", f"{what} inflates past {expected} bytes")
    if len(stream) < expected:
        raise FrameError("length_mismatch", f"{what} gave {len(stream)} of {expected} bytes")


@register_byte_stage("raw", 0)
class RawStage(ByteStage):
    """No compression: the raw symbol stream as it is."""

    def encode(self, symbols: np.ndarray, spec: SymbolSpec) -> bytes:
        return pack_symbols(symbols, spec)

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        expected = spec.raw_nbytes(shape)
        if len(payload) != expected:
            raise FrameError("length_mismatch", f"raw payload {len(payload)} != {expected}")
        return unpack_symbols(payload, math.prod(shape), spec).reshape(shape)


@register_byte_stage("zstd", 1)
class ZstdStage(ByteStage):
    """Zstandard over the raw symbol stream; decoding never inflates past its known size."""

    PARAMS = {  # noqa: RUF012 -- read-only schema shared by all instances
        "level": Param(int, 3, "zstd compression level", low=1, high=19),
    }

    def __init__(self, *, level: int) -> None:
        super().__init__(level=level)
        self.level = level

    def encode(self, symbols: np.ndarray, spec: SymbolSpec) -> bytes:
        # A fresh compressor per call: ZstdCompressor is not safe to share across threads.
        return zstandard.ZstdCompressor(level=self.level).compress(pack_symbols(symbols, spec))

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        expected = spec.raw_nbytes(shape)
        window_log = max(_ZSTD_MAX_WINDOW_LOG, (expected - 1).bit_length())
        declared = _zstd_declared_window(payload)
        if declared is not None and declared > 1 << window_log:
            raise FrameError("decompression_bomb", f"zstd window of {declared} bytes")
        try:
            header = zstandard.get_frame_parameters(payload)
        except zstandard.ZstdError as exc:
            raise FrameError("corrupt_payload", f"zstd frame header: {exc}") from None
        # The one-shot API would trust the declared content size and allocate it up front;
        # check it (and the window) before any decoding happens.
        if header.content_size != zstandard.CONTENTSIZE_UNKNOWN:
            if header.content_size > expected:
                raise FrameError(
                    "decompression_bomb", f"zstd declares {header.content_size} > {expected}"
                )
            if header.content_size < expected:
                raise FrameError(
                    "length_mismatch", f"zstd declares {header.content_size} < {expected}"
                )
        if header.window_size > 1 << window_log:
            raise FrameError("decompression_bomb", f"zstd window {header.window_size} bytes")
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << window_log)
        try:
            reader = dctx.stream_reader(payload, read_across_frames=False)
            # Reading one byte past the expected size is how an over-long stream shows itself.
            stream = reader.read(expected + 1)
            if len(stream) == expected:
                stream += reader.read(1)
        except zstandard.ZstdError as exc:
            raise FrameError("corrupt_payload", f"zstd: {exc}") from None
        _check_raw_length(stream, expected, "zstd payload")
        return unpack_symbols(stream, math.prod(shape), spec).reshape(shape)


@register_byte_stage("lz4", 2)
class Lz4Stage(ByteStage):
    """LZ4 block format (no frame header); the known raw size bounds decompression."""

    def encode(self, symbols: np.ndarray, spec: SymbolSpec) -> bytes:
        return lz4.block.compress(pack_symbols(symbols, spec), store_size=False)

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        expected = spec.raw_nbytes(shape)
        try:
            stream = lz4.block.decompress(payload, uncompressed_size=expected)
        except lz4.block.LZ4BlockError as exc:
            # Includes streams that would overflow the expected size.
            raise FrameError("corrupt_payload", f"lz4: {exc}") from None
        _check_raw_length(stream, expected, "lz4 payload")
        return unpack_symbols(stream, math.prod(shape), spec).reshape(shape)
