"""Camera messages → RGB uint8 ``(H, W, 3)`` arrays, without ROS (so it can be fuzzed).

::

    sensor_msgs/Image ──────────── image_to_rgb ──────┐
      height, width, encoding,       (size cap, step,  │
      step, is_bigendian, data        length, encoding)├──▶ RGB uint8 (H, W, 3), C-contiguous
    sensor_msgs/CompressedImage ── compressed_to_rgb ─┘
      format, data                   (byte cap, PNG/JPEG header peek for the size,
                                      then cv2.imdecode)

Both functions take any object with the message's fields (duck typing), never import rclpy,
and raise exactly one exception type, :class:`ImageError`, whose ``reason`` (one of
:data:`IMAGE_ERROR_REASONS`) is what the edge node counts in ``/diagnostics``. Input is
untrusted: every size is checked against a cap and against the bytes actually present before
anything is allocated or decoded.

Raw encodings (REP 104 / ``sensor_msgs/image_encodings``) converted here, identically on every
machine: ``rgb8 bgr8 rgba8 bgra8 mono8 mono16 rgb16 bgr16 rgba16 bgra16`` and the OpenCV
type names ``8UC1 8UC3 8UC4 16UC1`` (``8UC3``/``8UC4`` are read as OpenCV's BGR/BGRA order,
as cv_bridge does). Sixteen-bit data honours ``is_bigendian`` and keeps the high byte. Alpha
is dropped. Bayer and YUV encodings go to cv_bridge when it is importable (a ROS install);
without it they are ``unsupported_encoding``. The converter above stays the first choice
because it validates ``step`` and sizes itself and behaves the same with or without a ROS
install.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from split_infer.codecs.image import png_chunk_problem
from split_infer.data import CameraFrame
from split_infer.errors import _ReasonedError

__all__ = [
    "IMAGE_ERROR_REASONS",
    "MAX_COMPRESSED_BYTES",
    "MAX_IMAGE_SIDE",
    "RAW_ENCODINGS",
    "CameraFrame",
    "CameraHeader",
    "ImageError",
    "RawImage",
    "SerializedCamera",
    "compressed_from_cdr",
    "compressed_to_frame",
    "compressed_to_rgb",
    "image_from_cdr",
    "image_to_frame",
    "image_to_rgb",
    "rgb_to_image",
]

#: Largest accepted width or height, raw or compressed (a 64-megapixel frame is already far
#: beyond any network input; this only stops absurd allocations).
MAX_IMAGE_SIDE = 8192
#: Largest accepted compressed payload.
MAX_COMPRESSED_BYTES = 64 << 20

#: Every ``ImageError.reason``, with its meaning (dashboards key on these).
IMAGE_ERROR_REASONS: dict[str, str] = {
    "bad_message": "a field is missing or has the wrong type",
    "unsupported_encoding": "the raw encoding is not one this converter (or cv_bridge) handles",
    "unsupported_format": "the compressed data is neither PNG nor JPEG",
    "empty": "zero width, height or data",
    "too_large": "a side exceeds the cap, or the compressed data exceeds the byte cap",
    "bad_step": "step is smaller than one row of pixels",
    "size_mismatch": "len(data) differs from step × height",
    "corrupt": "the compressed header or payload could not be decoded",
    "conversion_failed": "cv_bridge could not convert the image",
}


class ImageError(_ReasonedError):
    """A camera message was rejected; ``reason`` is one of :data:`IMAGE_ERROR_REASONS`."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    itemsize: int  # bytes per channel value
    order: str  # channel order: "RGB", "BGR", "RGBA", "BGRA" or "L"


#: Raw encodings converted by this module, with their channel layout.
RAW_ENCODINGS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, "RGB"),
    "bgr8": _Layout(3, 1, "BGR"),
    "rgba8": _Layout(4, 1, "RGBA"),
    "bgra8": _Layout(4, 1, "BGRA"),
    "mono8": _Layout(1, 1, "L"),
    "mono16": _Layout(1, 2, "L"),
    "rgb16": _Layout(3, 2, "RGB"),
    "bgr16": _Layout(3, 2, "BGR"),
    "rgba16": _Layout(4, 2, "RGBA"),
    "bgra16": _Layout(4, 2, "BGRA"),
    "8UC1": _Layout(1, 1, "L"),
    "8UC3": _Layout(3, 1, "BGR"),
    "8UC4": _Layout(4, 1, "BGRA"),
    "16UC1": _Layout(1, 2, "L"),
}

# Encodings handed to cv_bridge when it exists; anything else is unsupported. A closed list
# keeps the reason for an unknown encoding the same with and without a ROS install.
_CV_BRIDGE_ENCODINGS = frozenset({
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
    "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16",
    "yuv422", "yuv422_yuy2", "uyvy", "yuyv", "nv21", "nv24",
})

_bridge: Any = None  # cv_bridge.CvBridge once imported; False when it is not installed


def _cv_bridge() -> Any:
    global _bridge
    if _bridge is None:
        try:
            from cv_bridge import CvBridge

            _bridge = CvBridge()
        except Exception:  # ImportError, or a broken install raising anything on import
            _bridge = False
    return _bridge


@dataclass(frozen=True)
class RawImage:
    """The fields of a ``sensor_msgs/Image`` (without the header), ROS-free."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def _int_field(msg: Any, name: str) -> int:
    try:
        value = getattr(msg, name)
    except AttributeError:
        raise ImageError("bad_message", f"the message has no {name!r} field") from None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ImageError("bad_message", f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


def _data_field(msg: Any) -> memoryview:
    try:
        data = msg.data
    except AttributeError:
        raise ImageError("bad_message", "the message has no 'data' field") from None
    try:
        view = memoryview(data)
        if view.c_contiguous:  # a strided view (arr[::2]) would fail in np.frombuffer
            return view if view.ndim == 1 and view.itemsize == 1 else view.cast("B")
    except (TypeError, ValueError):
        pass
    raise ImageError("bad_message",
                     f"data must be a contiguous bytes-like buffer, got {type(data).__name__}")


def _str_field(msg: Any, name: str) -> str:
    value = getattr(msg, name, None)
    if not isinstance(value, str):
        raise ImageError("bad_message", f"{name} must be a string, got {type(value).__name__}")
    return value


def _check_size(height: int, width: int, max_side: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageError("empty", f"{width}×{height} image")
    if height > max_side or width > max_side:
        raise ImageError("too_large", f"{width}×{height} exceeds the {max_side}-pixel side cap")


def image_to_frame(msg: Any, *, max_side: int = MAX_IMAGE_SIDE) -> CameraFrame:
    """A ``sensor_msgs/Image`` (or anything with its fields) → :class:`CameraFrame`, without
    copying 8-bit pixels. Raises :class:`ImageError` for every kind of bad input, and nothing
    else."""
    height, width = _int_field(msg, "height"), _int_field(msg, "width")
    step = _int_field(msg, "step")
    bigendian = _int_field(msg, "is_bigendian")
    encoding = _str_field(msg, "encoding")
    data = _data_field(msg)
    _check_size(height, width, max_side)
    layout = RAW_ENCODINGS.get(encoding)
    if layout is None:
        return CameraFrame(_via_cv_bridge(msg, encoding, height, step, data), "RGB")
    row_bytes = width * layout.channels * layout.itemsize
    if step < row_bytes:
        raise ImageError("bad_step", f"step {step} < {row_bytes} bytes per {encoding} row")
    if len(data) != step * height:
        raise ImageError("size_mismatch",
                         f"{len(data)} data bytes, step × height = {step * height}")
    rows = np.frombuffer(data, np.uint8).reshape(height, step)[:, :row_bytes]
    if layout.itemsize == 1:
        pixels = rows.reshape(height, width, layout.channels)
    else:
        dtype = np.dtype(">u2" if bigendian else "<u2")
        wide = np.ascontiguousarray(rows).view(dtype).reshape(height, width, layout.channels)
        pixels = (wide >> 8).astype(np.uint8)  # keep the high byte: full range maps to 0..255
    return CameraFrame(pixels, layout.order)


def image_to_rgb(msg: Any, *, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """A ``sensor_msgs/Image`` (or anything with its fields) → RGB uint8 ``(H, W, 3)``.

    Raises :class:`ImageError` for every kind of bad input, and nothing else.
    """
    return image_to_frame(msg, max_side=max_side).rgb()


def _via_cv_bridge(msg: Any, encoding: str, height: int, step: int,
                   data: memoryview) -> np.ndarray:
    bridge = _cv_bridge() if encoding in _CV_BRIDGE_ENCODINGS else False
    if not bridge:
        raise ImageError("unsupported_encoding",
                         f"encoding {encoding!r}; supported: {sorted(RAW_ENCODINGS)}")
    if len(data) != step * height:
        raise ImageError("size_mismatch",
                         f"{len(data)} data bytes, step × height = {step * height}")
    try:
        rgb = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except Exception as exc:  # cv_bridge raises CvBridgeError, cv2.error, TypeError...
        raise ImageError("conversion_failed", f"cv_bridge: {exc}") from None
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError("conversion_failed", "cv_bridge did not return an (H, W, 3) image")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


# -- compressed -----------------------------------------------------------------------------

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def _png_size(data: memoryview) -> tuple[int, int]:
    # The IHDR chunk must come first: 8-byte magic, length, b"IHDR", width, height (big-endian).
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        raise ImageError("corrupt", "PNG without an IHDR chunk")
    problem = png_chunk_problem(data)
    if problem:
        raise ImageError("corrupt", problem)
    width, height = struct.unpack_from(">II", data, 16)
    return height, width


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """(height, width) from the first SOF segment, walking marker segments (bounded by the data:
    every step advances by at least two bytes)."""
    n, i = len(data), 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError("corrupt", f"JPEG marker expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack_from(">H", data, i + 2)
        if length < 2:
            raise ImageError("corrupt", f"JPEG segment length {length}")
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack_from(">HH", data, i + 5)
            return height, width
        i += 2 + length
    raise ImageError("corrupt", "JPEG without a frame header")


def compressed_to_frame(msg: Any, *, max_side: int = MAX_IMAGE_SIDE,
                        max_bytes: int = MAX_COMPRESSED_BYTES) -> CameraFrame:
    """A ``sensor_msgs/CompressedImage`` (PNG or JPEG) → :class:`CameraFrame` (the decoder's
    BGR pixels).

    The image size is read from the PNG/JPEG header and checked against ``max_side`` before
    decoding, so a small file that claims a huge image (a decompression bomb) is refused
    without allocating it. ``format`` is informational in ROS and is not trusted: the format
    is recognised from the data. Raises :class:`ImageError` and nothing else.
    """
    data = _data_field(msg)
    if len(data) == 0:
        raise ImageError("empty", "no compressed data")
    if len(data) > max_bytes:
        raise ImageError("too_large", f"{len(data)} compressed bytes exceed {max_bytes}")
    if bytes(data[:8]) == _PNG_MAGIC:
        height, width = _png_size(data)
    elif bytes(data[:3]) == b"\xff\xd8\xff":
        height, width = _jpeg_size(data)
    else:
        raise ImageError("unsupported_format", f"data starts with {bytes(data[:8])!r}, "
                                               "neither PNG nor JPEG")
    _check_size(height, width, max_side)
    import cv2

    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError("corrupt", f"decoder: {exc}") from None
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.shape[:2] != (height, width):
        raise ImageError("corrupt", "the decoder could not read the image")
    return CameraFrame(bgr, "BGR")


def compressed_to_rgb(msg: Any, *, max_side: int = MAX_IMAGE_SIDE,
                      max_bytes: int = MAX_COMPRESSED_BYTES) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (PNG or JPEG) → RGB uint8 ``(H, W, 3)``; see
    :func:`compressed_to_frame`. Raises :class:`ImageError` and nothing else."""
    return compressed_to_frame(msg, max_side=max_side, max_bytes=max_bytes).rgb()


# -- serialized messages (rclpy raw subscriptions) -------------------------------------------

#: What a CDR-serialized camera message carries besides the pixels: its header.
@dataclass(frozen=True)
class CameraHeader:
    """``std_msgs/Header`` fields of a serialized camera message."""

    sec: int
    nanosec: int
    frame_id: str


@dataclass(frozen=True)
class _SerializedCompressed:
    format: str
    data: memoryview


_CDR_LE = b"\x00\x01"  # encapsulation: plain CDR, little-endian


class _CdrReader:
    """Little-endian CDR (XCDR1) fields from a serialized ROS message, without copies;
    ImageError ``bad_message`` for anything out of bounds or malformed."""

    def __init__(self, raw: bytes | memoryview) -> None:
        self.view = memoryview(raw).cast("B") if not isinstance(raw, memoryview) else raw
        if len(self.view) < 4 or bytes(self.view[:2]) != _CDR_LE:
            raise ImageError("bad_message", "not a little-endian CDR message")
        self.pos = 4  # alignment counts from here

    def _align(self, size: int) -> None:
        self.pos += (-(self.pos - 4)) % size

    def u32(self) -> int:
        self._align(4)
        if self.pos + 4 > len(self.view):
            raise ImageError("bad_message", "the serialized message ends inside a field")
        value = int.from_bytes(self.view[self.pos:self.pos + 4], "little")
        self.pos += 4
        return value

    def u8(self) -> int:
        if self.pos + 1 > len(self.view):
            raise ImageError("bad_message", "the serialized message ends inside a field")
        value = self.view[self.pos]
        self.pos += 1
        return value

    def blob(self) -> memoryview:
        length = self.u32()
        if length > len(self.view) - self.pos:
            raise ImageError("bad_message", f"a sequence of {length} bytes overruns the message")
        value = self.view[self.pos:self.pos + length]
        self.pos += length
        return value

    def string(self) -> str:
        value = self.blob()
        if not value or value[-1] != 0:
            raise ImageError("bad_message", "a string without its terminating NUL")
        try:
            return bytes(value[:-1]).decode()
        except UnicodeDecodeError:
            raise ImageError("bad_message", "a string that is not UTF-8") from None

    def header(self) -> CameraHeader:
        sec = self.u32()
        return CameraHeader(sec - (1 << 32) if sec >= 1 << 31 else sec, self.u32(),
                            self.string())


def image_from_cdr(raw: bytes | memoryview) -> tuple[CameraHeader, RawImage]:
    """A serialized ``sensor_msgs/Image`` (what an rclpy ``raw=True`` subscription hands
    over) → its header and fields, the pixels a view of ``raw``: no deserialisation into a
    Python message, no copy of the pixels. ImageError for malformed bytes."""
    reader = _CdrReader(raw)
    header = reader.header()
    height, width = reader.u32(), reader.u32()
    encoding = reader.string()
    bigendian = reader.u8()
    step = reader.u32()
    data = reader.blob()
    return header, RawImage(height, width, encoding, bigendian, step, data)  # type: ignore


def compressed_from_cdr(raw: bytes | memoryview) -> tuple[CameraHeader, Any]:
    """A serialized ``sensor_msgs/CompressedImage`` → its header and (format, data view)."""
    reader = _CdrReader(raw)
    header = reader.header()
    return header, _SerializedCompressed(reader.string(), reader.blob())


class SerializedCamera:
    """One serialized camera message (``sensor_msgs/Image``, or ``CompressedImage`` with
    ``compressed``), read only when :meth:`frame` is called: header and pixels come from
    the bytes in place. :attr:`header` is set once it has been read."""

    def __init__(self, raw: bytes | memoryview, compressed: bool = False) -> None:
        self.raw, self.compressed = raw, compressed
        self.header: CameraHeader | None = None

    def stamp_s(self) -> float | None:
        """The camera stamp in seconds, reading only the header; None for malformed bytes."""
        try:
            header = _CdrReader(self.raw).header()
        except ImageError:
            return None
        return header.sec + header.nanosec * 1e-9

    def frame(self) -> CameraFrame:
        if self.compressed:
            self.header, message = compressed_from_cdr(self.raw)
            return compressed_to_frame(message)
        self.header, image = image_from_cdr(self.raw)
        return image_to_frame(image)


# -- the other direction (publishers, tests, bag players) -----------------------------------


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", *, padding: int = 0,
                 bigendian: bool = False) -> RawImage:
    """RGB uint8 ``(H, W, 3)`` → :class:`RawImage` fields in ``encoding`` (one of
    :data:`RAW_ENCODINGS`), each row padded with ``padding`` zero bytes.

    Grey encodings take the channel mean; 16-bit ones scale by 257 (255 → 65535), so
    :func:`image_to_rgb` returns exactly ``rgb`` (or its grey version).
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    layout = RAW_ENCODINGS.get(encoding)
    if layout is None:
        raise ValueError(f"cannot encode {encoding!r}; choose one of {sorted(RAW_ENCODINGS)}")
    if padding < 0:
        raise ValueError("padding must be >= 0")
    height, width = rgb.shape[:2]
    if layout.order == "L":
        pixels = np.round(rgb.mean(axis=2, keepdims=True)).astype(np.uint8)
    else:
        pixels = rgb[:, :, ::-1] if layout.order.startswith("BGR") else rgb
        if layout.channels == 4:
            alpha = np.full((height, width, 1), 255, np.uint8)
            pixels = np.concatenate([pixels, alpha], axis=2)
    if layout.itemsize == 2:
        wide = pixels.astype(np.uint16) * np.uint16(257)
        pixels = wide.astype(np.dtype(">u2" if bigendian else "<u2"))
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    if padding:
        rows = np.concatenate([rows, np.zeros((height, padding), np.uint8)], axis=1)
    return RawImage(height=height, width=width, encoding=encoding,
                    is_bigendian=int(bool(bigendian) and layout.itemsize == 2),
                    step=rows.shape[1], data=rows.tobytes())
