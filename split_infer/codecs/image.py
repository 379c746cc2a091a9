"""Image byte stages ``png`` and ``jpeg``: tile the channels into a 2-D mosaic (thesis §2.2);
``jpeg_rgb``: a 3-channel tensor as one colour photograph.

The C channels of a (C, H, W) symbol tensor are laid out row-major on a near-square grid of
``cols = ceil(sqrt(C))`` by ``rows = ceil(C / cols)`` tiles; missing tiles are zero::

    (C, H, W) ──map levels to 0..255──▶ ┌────┬────┬────┐
                                        │ c0 │ c1 │ c2 │  rows·H × cols·W, 8-bit grey
                                        ├────┼────┼────┤ ──cv2.imencode──▶ PNG / JPEG
                                        │ c3 │ c4 │ 0  │
                                        └────┴────┴────┘

Keeping each channel contiguous lets the codec exploit intra-channel spatial redundancy.
Symbols with fewer than 256 levels are spread over 0..255 (so the mosaic is viewable and
JPEG's error is rounded away) and mapped back to the nearest level.

``jpeg_rgb`` is for split point 0, where the tensor is the model's input image: the three
channels become one colour JPEG (YCbCr with chroma subsampled 4:2:0, as a camera's
``image_transport/compressed`` sends it), so a bundle can offer "send the camera image" as a
configuration the scheduler chooses like any split.

Decoding parses the image header (PNG IHDR, JPEG SOFn) *before* handing the bytes to the
image library and rejects anything whose declared size is not the expected mosaic: a tiny
PNG may declare 100000 x 100000 pixels.
"""

from __future__ import annotations

import math
import struct

import cv2
import numpy as np

from split_infer.codecs._api import ByteStage, Param, SymbolSpec, register_byte_stage
from split_infer.errors import EncodeError, FrameError

__all__ = [
    "JpegRgbStage",
    "JpegStage",
    "PngStage",
    "from_grey",
    "jpeg_header",
    "mosaic_grid",
    "png_chunk_problem",
    "png_header",
    "tile",
    "to_grey",
    "untile",
]

# libjpeg refuses larger images; keep PNG to the same limit so both stages accept the same
# tensors.
_MAX_SIDE = 65500
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_SEQUENTIAL = frozenset({0xC0, 0xC1})  # baseline and extended sequential, Huffman
# Markers without a length field: TEM, RSTn, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def mosaic_grid(channels: int) -> tuple[int, int]:
    """``(rows, cols)`` of the tile grid for ``channels`` tiles: cols = ceil(sqrt(C))."""
    cols = math.isqrt(channels - 1) + 1
    return -(-channels // cols), cols


def tile(symbols: np.ndarray) -> np.ndarray:
    """(C, H, W) → (rows·H, cols·W) mosaic, zero tiles for padding."""
    c, h, w = symbols.shape
    rows, cols = mosaic_grid(c)
    grid = np.zeros((rows * cols, h, w), symbols.dtype)
    grid[:c] = symbols
    return grid.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def untile(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`tile` for a tensor of ``shape`` = (C, H, W)."""
    c, h, w = shape
    rows, cols = mosaic_grid(c)
    grid = image.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w)
    return np.ascontiguousarray(grid[:c])


def _grey_lut(levels: int) -> np.ndarray:
    return ((np.arange(levels) * 255 + (levels - 1) // 2) // (levels - 1)).astype(np.uint8)


def to_grey(symbols: np.ndarray, levels: int) -> np.ndarray:
    """Spread symbols in ``[0, levels)`` over 0..255 (identity for 256 levels)."""
    return symbols if levels == 256 else _grey_lut(levels)[symbols]


def from_grey(grey: np.ndarray, levels: int) -> np.ndarray:
    """Nearest level for each grey value; inverse of :func:`to_grey` on its image."""
    if levels == 256:
        return grey
    inverse = ((np.arange(256) * (levels - 1) + 127) // 255).astype(np.uint8)
    return inverse[grey]


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """``(width, height, bit_depth, colour_type)`` from the IHDR chunk; FrameError if absent
    or if any chunk declares more bytes than the stream holds."""
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE:
        raise FrameError("corrupt_payload", "not a PNG stream")
    length, kind, width, height, depth, colour = struct.unpack_from(">I4sIIBB", data, 8)
    if length != 13 or kind != b"IHDR":
        raise FrameError("corrupt_payload", "PNG does not start with IHDR")
    problem = png_chunk_problem(data)
    if problem:
        raise FrameError("corrupt_payload", problem)
    return width, height, depth, colour


def png_chunk_problem(data: bytes | memoryview) -> str | None:
    """Why the chunks of a PNG stream (signature included) do not fit in ``data``, or None.

    OpenCV's reader allocates a chunk's declared length before reading it (a 95-byte file
    declaring a 1 GiB IDAT allocated 1 GiB), so every untrusted PNG is walked first. Each step
    advances at least 12 bytes, so the walk is bounded by the data; it stops at IEND.
    """
    offset, n = len(_PNG_SIGNATURE), len(data)
    while offset < n:
        if offset + 12 > n:
            return f"PNG chunk header cut off at byte {offset}"
        (length,) = struct.unpack_from(">I", data, offset)
        if offset + 12 + length > n:
            return f"PNG chunk at byte {offset} declares {length} bytes, {n - offset - 12} present"
        if bytes(data[offset + 4:offset + 8]) == b"IEND":
            return None
        offset += 12 + length
    return None


def jpeg_header(data: bytes) -> tuple[int, int, int, int, int]:
    """``(width, height, components, precision, sof_marker)`` from the first SOFn.

    Walks marker segments from SOI; every step advances, so the scan is linear and bounded.
    Raises FrameError when there is no frame header before the first scan.
    """
    n = len(data)
    if data[:2] != b"\xff\xd8":
        raise FrameError("corrupt_payload", "not a JPEG stream")
    i = 2
    while i < n:
        if data[i] != 0xFF:
            raise FrameError("corrupt_payload", f"JPEG marker expected at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise FrameError("corrupt_payload", "JPEG scan or end before any frame header")
        if i + 2 > n:
            break
        (seglen,) = struct.unpack_from(">H", data, i)
        if seglen < 2:
            raise FrameError("corrupt_payload", "JPEG segment length < 2")
        if marker in _JPEG_SOF:
            if seglen < 8 or i + 8 > n:
                break
            precision, height, width, comps = struct.unpack_from(">BHHB", data, i + 2)
            return width, height, comps, precision, marker
        i += seglen
    raise FrameError("corrupt_payload", "JPEG ends before its frame header")


class _ImageStage(ByteStage):
    """What the image stages share: 8-bit symbols, header checks and cv2 plumbing, and the
    channel mosaic of ``png`` and ``jpeg`` (``jpeg_rgb`` replaces the tiling)."""

    _ext: str = ""

    def check_symbols(self, symbols: SymbolSpec) -> str | None:
        if not symbols.is_integer or symbols.dtype != "uint8":
            return f"{self.name} needs integer symbols of <= 8 bits; use a quant tensor stage"
        return None

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 3:
            return f"{self.name} tiles (C, H, W) tensors, got {len(shape)} dims"
        rows, cols = mosaic_grid(shape[0])
        if max(rows * shape[1], cols * shape[2]) > _MAX_SIDE:
            return f"mosaic {rows * shape[1]}x{cols * shape[2]} exceeds {_MAX_SIDE} pixels"
        return None

    def _imencode_params(self) -> list[int]:
        raise NotImplementedError

    def _check_header(self, payload: bytes, width: int, height: int) -> None:
        raise NotImplementedError

    def encode(self, symbols: np.ndarray, spec: SymbolSpec) -> bytes:
        image = tile(to_grey(symbols, spec.levels))
        ok, buf = cv2.imencode(self._ext, image, self._imencode_params())
        if not ok:
            raise EncodeError("bad_shape", f"cv2 could not encode a {image.shape} {self.name}")
        return buf.tobytes()

    def _decode_grey(self, payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
        rows, cols = mosaic_grid(shape[0])
        height, width = rows * shape[1], cols * shape[2]
        self._check_header(payload, width, height)
        try:
            image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise FrameError("corrupt_payload", f"{self.name}: {exc}") from None
        if image is None or image.dtype != np.uint8 or image.shape != (height, width):
            raise FrameError("corrupt_payload", f"{self.name} did not decode to the mosaic")
        return untile(image, shape)


@register_byte_stage("png", 4)
class PngStage(_ImageStage):
    """Lossless 8-bit greyscale PNG of the channel mosaic."""

    _ext = ".png"
    PARAMS = {  # noqa: RUF012 -- read-only schema shared by all instances
        "level": Param(int, 3, "zlib compression level", low=0, high=9),
    }

    def __init__(self, *, level: int) -> None:
        super().__init__(level=level)
        self.level = level

    def _imencode_params(self) -> list[int]:
        return [cv2.IMWRITE_PNG_COMPRESSION, self.level]

    def _check_header(self, payload: bytes, width: int, height: int) -> None:
        got_w, got_h, depth, colour = png_header(payload)
        if (got_w, got_h) != (width, height):
            raise FrameError("shape_mismatch", f"PNG is {got_w}x{got_h}, need {width}x{height}")
        if (depth, colour) != (8, 0):
            raise FrameError("corrupt_payload", f"PNG depth {depth} colour type {colour}")

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        grey = self._decode_grey(payload, shape)
        symbols = from_grey(grey, spec.levels)
        # Lossless: a grey value the encoder cannot have produced is corruption, not noise.
        if spec.levels < 256 and not np.array_equal(to_grey(symbols, spec.levels), grey):
            raise FrameError("symbol_range", "PNG holds grey values outside the level map")
        return symbols


class _Jpeg:
    """What both JPEG stages share: the quality, the encoder's flags, the header checks."""

    lossless = False
    _components = 1

    def __init__(self, *, quality: int) -> None:
        super().__init__(quality=quality)  # type: ignore[call-arg]
        self.quality = quality

    def _imencode_params(self) -> list[int]:
        # Optimized Huffman tables: a few % smaller for a negligible encode cost.
        return [cv2.IMWRITE_JPEG_QUALITY, self.quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]

    def _check_header(self, payload: bytes, width: int, height: int) -> None:
        got_w, got_h, comps, precision, sof = jpeg_header(payload)
        if (got_w, got_h) != (width, height):
            raise FrameError("shape_mismatch", f"JPEG is {got_w}x{got_h}, need {width}x{height}")
        if (comps, precision) != (self._components, 8):
            raise FrameError("corrupt_payload", f"JPEG has {comps} components, {precision} bits")
        # Only the sequential Huffman processes the encoder emits: a progressive stream can
        # pack thousands of scans into a few KB, each a full pass over the image.
        if sof not in _JPEG_SEQUENTIAL:
            raise FrameError("corrupt_payload", f"JPEG process SOF{sof - 0xC0} not accepted")


@register_byte_stage("jpeg", 5)
class JpegStage(_Jpeg, _ImageStage):
    """Lossy 8-bit greyscale baseline JPEG of the channel mosaic (thesis §2.2.2)."""

    _ext = ".jpg"
    PARAMS = {  # noqa: RUF012 -- read-only schema shared by all instances
        "quality": Param(int, 75, "JPEG quality factor", low=1, high=100),
    }

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        return from_grey(self._decode_grey(payload, shape), spec.levels)


@register_byte_stage("jpeg_rgb", 6)
class JpegRgbStage(_Jpeg, _ImageStage):
    """Lossy colour baseline JPEG of a (3, H, W) tensor read as an RGB image (4:2:0).

    Beyond the thesis, whose JPEG stages tile channels into a grey mosaic: for the input
    image itself, colour JPEG's chroma subsampling is what makes cloud-only cheap.
    """

    _components = 3
    encodes_images = True
    PARAMS = {  # noqa: RUF012 -- read-only schema shared by all instances
        "quality": Param(int, 90, "JPEG quality factor", low=1, high=100),
    }

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 3 or shape[0] != 3:
            return f"{self.name} encodes (3, H, W) images, got shape {shape}"
        if max(shape[1:]) > _MAX_SIDE:
            return f"image {shape[2]}x{shape[1]} exceeds {_MAX_SIDE} pixels"
        return None

    def encode(self, symbols: np.ndarray, spec: SymbolSpec) -> bytes:
        # (3, H, W) RGB → (H, W, 3) BGR, OpenCV's order, so the JPEG is a viewable photograph.
        # cv2.merge interleaves the planes several times faster than numpy's strided copy.
        red, green, blue = np.ascontiguousarray(symbols)
        return self.encode_image(cv2.merge((blue, green, red)), spec)

    def encode_image(self, image: np.ndarray, spec: SymbolSpec) -> bytes:
        image = to_grey(image, spec.levels)
        ok, buf = cv2.imencode(".jpg", image, self._imencode_params())
        if not ok:
            raise EncodeError("bad_shape", f"cv2 could not encode a {image.shape} {self.name}")
        return buf.tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        height, width = shape[1], shape[2]
        self._check_header(payload, width, height)
        try:
            image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise FrameError("corrupt_payload", f"{self.name}: {exc}") from None
        if image is None or image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise FrameError("corrupt_payload", f"{self.name} did not decode to the image")
        blue, green, red = cv2.split(image)  # planes, faster than a strided transpose
        return from_grey(np.stack((red, green, blue)), spec.levels)
