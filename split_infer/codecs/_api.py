"""Two-stage feature codecs and their registry.

A codec is a *tensor stage* (the thesis's "encoder") followed by a *byte stage* (its
"postencoder")::

    x: float tensor (C,H,W)
      │  tensor stage  float32 │ float16 │ quant │ (learned, id ≥ 16)
      ▼
    symbols: ndarray described by a SymbolSpec   +   per-frame stage params (bytes)
      │  byte stage    raw │ zstd │ lz4 │ rans │ png │ jpeg
      ▼
    payload: bytes ──▶ wire frame (codec_id, shape, params, payload)

Decoding walks the same path backwards and treats every input as untrusted: sizes are known
before anything is inflated, and every failure is a :class:`~split_infer.errors.FrameError`.

Codecs are built from spec strings ``<tensor>[:k=v,...][+<byte>[:k=v,...]]``, e.g.
``quant:bits=4,per=channel+zstd:level=3``; the byte stage defaults to ``raw``. The registry
mirrors torchvision's ``register_model/get_model/list_models``: stage classes register with
:func:`register_tensor_stage` / :func:`register_byte_stage` under a name and a one-byte id,
and the wire codec id is ``tensor_id << 8 | byte_id``. Tensor ids 1..15 are reserved for the
built-in stages; learned codecs (a torch/ONNX encoder-decoder from a bundle) register at
:data:`LEARNED_STAGE_ID_BASE` (16) or above and receive their non-string arguments (modules,
sessions) through ``get_codec(spec, **context)``.

Per-frame params written by :class:`Codec` (the tensor stage's own params follow)::

    u8   cflags        bit 0: encoded with calibration state (fingerprint follows)
    u32  fingerprint   only if bit 0; crc32 of the calibration, see Codec.fingerprint()
    ...  stage params  owned by the tensor stage (may be empty)
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np

from split_infer.errors import EncodeError, FrameError, UserError

__all__ = [
    "DEFAULT_MAX_TENSOR_BYTES",
    "EXAMPLE_SPECS",
    "LEARNED_STAGE_ID_BASE",
    "ByteStage",
    "Codec",
    "CodecSpecError",
    "EncodedTensor",
    "Param",
    "SymbolSpec",
    "TensorStage",
    "canonical_spec",
    "codec_from_id",
    "get_codec",
    "is_registered_codec_id",
    "list_byte_stages",
    "list_codecs",
    "list_tensor_stages",
    "make_codec_id",
    "parse_spec",
    "register_byte_stage",
    "register_tensor_stage",
    "split_codec_id",
]

#: Default cap on the decoded float32 tensor size, shared with :mod:`split_infer.wire`.
DEFAULT_MAX_TENSOR_BYTES = 64 << 20

#: First tensor-stage id available to learned codecs; 1..15 belong to the built-ins.
LEARNED_STAGE_ID_BASE = 16

#: One example per stage/parameter family; also what ``list_codecs()`` reports.
EXAMPLE_SPECS: tuple[str, ...] = (
    "float32",
    "float16",
    "float16+zstd",
    "quant:bits=8",
    "quant:bits=4,w=3.3,per=channel+zstd:level=3",
    "quant:bits=8+lz4",
    "quant:bits=6,per=neuron+rans",
    "quant:bits=8+png",
    "quant:bits=8,per=channel+jpeg:quality=75",
)

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
# A '+' starts the byte stage only when a stage name follows, so "w=1e+3" stays one value.
_STAGE_SPLIT_RE = re.compile(r"\+(?=\s*[A-Za-z])")

_CFLAG_CALIBRATED = 0x01
_U32 = struct.Struct("<I")


# ---------------------------------------------------------------------------------------
# Small value types
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolSpec:
    """What a tensor stage hands to a byte stage.

    ``dtype`` is the numpy dtype name of the symbol array; ``levels`` is the alphabet size for
    integer symbols (symbols lie in ``[0, levels)``) and 0 for float symbols.
    """

    dtype: str
    levels: int = 0

    @property
    def is_integer(self) -> bool:
        """True for an integer alphabet (quantizer output), False for raw floats."""
        return self.levels > 0

    @property
    def bits(self) -> int:
        """Bits per symbol in the packed raw stream."""
        if self.is_integer:
            return max(1, math.ceil(math.log2(self.levels)))
        return np.dtype(self.dtype).itemsize * 8

    def raw_nbytes(self, shape: tuple[int, ...]) -> int:
        """Size of the bit-packed raw symbol stream for ``shape``."""
        return (math.prod(shape) * self.bits + 7) // 8


@dataclass(frozen=True)
class EncodedTensor:
    """Output of :meth:`Codec.compress`: everything the wire frame carries for one tensor.

    ``dtype`` is the dtype of the tensor that was compressed (the decoder casts back to it).
    """

    payload: bytes
    params: bytes
    shape: tuple[int, ...]
    dtype: str = "float32"


class CodecSpecError(UserError, ValueError):
    """A codec spec string names an unknown stage or parameter, or a value out of range."""


@dataclass(frozen=True)
class Param:
    """Schema of one ``k=v`` spec parameter: its type, default and allowed range."""

    kind: type
    default: Any
    help: str = ""
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None

    def parse(self, text: str, where: str) -> Any:
        """Parse and validate ``text``; ``where`` names the parameter in error messages."""
        try:
            value = self.kind(text)
        except ValueError:
            raise CodecSpecError(
                f"{where}: expected {self.kind.__name__}, got {text!r} ({self.describe()})"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise CodecSpecError(f"{where}: must be finite, got {text!r}")
        if self.choices and value not in self.choices:
            raise CodecSpecError(f"{where}: {text!r} is not one of {list(self.choices)}")
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise CodecSpecError(f"{where}: {text!r} is outside {self.describe()}")
        return value

    def format(self, value: Any) -> str:
        """Canonical text of ``value``: ``parse(format(v)) == v`` and no trailing ``.0``."""
        if isinstance(value, float):
            text = repr(value)
            return text[:-2] if text.endswith(".0") else text
        return str(value)

    def describe(self) -> str:
        """Human-readable range, e.g. ``int in [1, 8], default 8``."""
        if self.choices:
            rng = "one of " + "|".join(self.choices)
        elif self.low is not None or self.high is not None:
            rng = f"{self.kind.__name__} in [{self.low}, {self.high}]"
        else:
            rng = self.kind.__name__
        return f"{rng}, default {self.format(self.default)}"


# ---------------------------------------------------------------------------------------
# Stage base classes
# ---------------------------------------------------------------------------------------


class _Stage:
    """Common part of tensor and byte stages: name, id, spec params, calibration state."""

    name: ClassVar[str] = ""
    stage_id: ClassVar[int] = -1
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    @property
    def needs_calibration(self) -> bool:
        """True when the stage cannot encode anything before calibrate()/load_state_dict()."""
        return False

    @property
    def spec(self) -> str:
        """Canonical ``name[:k=v,...]`` with every parameter spelled out."""
        if not self.PARAMS:
            return self.name
        body = ",".join(f"{k}={p.format(self.params[k])}" for k, p in self.PARAMS.items())
        return f"{self.name}:{body}"

    @property
    def calibrated(self) -> bool:
        """True when the stage holds calibration state."""
        return False

    def state_dict(self) -> dict[str, np.ndarray]:
        """Calibration state as plain arrays (empty for stateless stages)."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` on unexpected keys or shapes."""
        if state:
            raise ValueError(f"{self.name}: stateless stage got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


class TensorStage(_Stage):
    """Float tensor ⇄ symbols (+ small per-frame params). Subclass and register to extend."""

    @property
    def symbols(self) -> SymbolSpec:
        """Dtype and alphabet of the symbols this stage emits."""
        raise NotImplementedError

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        """Return why this stage cannot handle tensors of ``shape``, or None if it can."""
        return None

    def symbol_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the symbol array for a tensor of ``shape`` (a learned stage may shrink it)."""
        return shape

    def calibrate(self, features: np.ndarray) -> None:
        """Fit calibration state to float32 ``features`` of shape (N, *tensor_shape)."""

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, bytes]:
        """Map a finite float32 tensor to ``(symbols, stage_params)``."""
        raise NotImplementedError

    @property
    def maps_levels(self) -> bool:
        """True when :meth:`level_tables` can stand in for :meth:`encode` on normalized
        images: a symbol depends only on its value, its channel and the frame's range."""
        return False

    def level_tables(self, values: np.ndarray,
                     used: np.ndarray | None) -> tuple[np.ndarray, bytes]:
        """:meth:`encode` of a tensor whose channel ``c`` holds ``values[c, k]`` (``(C, 256)``
        float32) where an 8-bit image holds level ``k``, as ``(tables, stage_params)``:
        ``tables[c, k]`` is ``encode``'s symbol there. ``used[c]``: the lowest and highest level
        of channel ``c`` (None where :attr:`calibrated`). Only where :attr:`maps_levels`."""
        raise NotImplementedError

    def check_params(self, params: bytes, shape: tuple[int, ...]) -> None:
        """Validate untrusted stage ``params`` (FrameError) before any payload is decoded."""

    def decode(self, symbols: np.ndarray, params: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`encode`; raises :class:`FrameError` on bad ``params``."""
        raise NotImplementedError


class ByteStage(_Stage):
    """Symbols ⇄ payload bytes, with a decoded size known before decoding starts."""

    #: False when decode(encode(s)) may differ from s (JPEG).
    lossless: ClassVar[bool] = True

    def check_symbols(self, symbols: SymbolSpec) -> str | None:
        """Return why this stage cannot code ``symbols``, or None if it can."""
        return None

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        """Return why this stage cannot code a symbol array of ``shape``, or None."""
        return None

    def calibrate(self, batches: Iterable[np.ndarray], symbols: SymbolSpec) -> None:
        """Fit a model to the calibration symbols (one array per calibration tensor)."""

    #: True when :meth:`encode_image` takes a (3, H, W) symbol tensor as one interleaved image.
    encodes_images: ClassVar[bool] = False

    def encode(self, symbols: np.ndarray, spec: SymbolSpec) -> bytes:
        """Serialize ``symbols`` (dtype ``spec.dtype``) to payload bytes."""
        raise NotImplementedError

    def encode_image(self, image: np.ndarray, spec: SymbolSpec) -> bytes:
        """:meth:`encode` of a (3, H, W) symbol tensor given as one C-contiguous ``(H, W, 3)``
        array, channels reversed (OpenCV's BGR): the same bytes. Only if :attr:`encodes_images`."""
        raise NotImplementedError

    def decode(self, payload: bytes, shape: tuple[int, ...], spec: SymbolSpec) -> np.ndarray:
        """Recover exactly ``prod(shape)`` symbols; never inflate past that size."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------

_TENSOR_STAGES: dict[str, type[TensorStage]] = {}
_BYTE_STAGES: dict[str, type[ByteStage]] = {}
_TENSOR_IDS: dict[int, str] = {}
_BYTE_IDS: dict[int, str] = {}

_T = TypeVar("_T", bound=type)


def _registrar(
    kind: str,
    base: type,
    names: dict[str, Any],
    ids: dict[int, str],
    name: str,
    stage_id: int,
    id_range: tuple[int, int],
) -> Callable[[_T], _T]:
    if not _NAME_RE.match(name):
        raise ValueError(f"{kind} stage name {name!r} must match {_NAME_RE.pattern}")
    if not id_range[0] <= stage_id <= id_range[1]:
        raise ValueError(f"{kind} stage id {stage_id} is outside {list(id_range)}")

    def decorator(cls: _T) -> _T:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{cls!r} must subclass {base.__name__}")
        if name in names:
            raise ValueError(f"{kind} stage {name!r} is already registered")
        if stage_id in ids:
            raise ValueError(f"{kind} stage id {stage_id} is taken by {ids[stage_id]!r}")
        cls.name = name
        cls.stage_id = stage_id
        names[name] = cls
        ids[stage_id] = name
        return cls

    return decorator


def register_tensor_stage(name: str, stage_id: int) -> Callable[[_T], _T]:
    """Class decorator registering a :class:`TensorStage` under ``name`` and wire id 1..255."""
    return _registrar("tensor", TensorStage, _TENSOR_STAGES, _TENSOR_IDS, name, stage_id, (1, 255))


def register_byte_stage(name: str, stage_id: int) -> Callable[[_T], _T]:
    """Class decorator registering a :class:`ByteStage` under ``name`` and wire id 0..255."""
    return _registrar("byte", ByteStage, _BYTE_STAGES, _BYTE_IDS, name, stage_id, (0, 255))


def list_tensor_stages() -> list[str]:
    """Registered tensor-stage names, sorted by id."""
    return [_TENSOR_IDS[i] for i in sorted(_TENSOR_IDS)]


def list_byte_stages() -> list[str]:
    """Registered byte-stage names, sorted by id."""
    return [_BYTE_IDS[i] for i in sorted(_BYTE_IDS)]


def list_codecs() -> dict[str, list[str]]:
    """Stage names and example specs: ``{"tensor": [...], "byte": [...], "examples": [...]}``."""
    return {
        "tensor": list_tensor_stages(),
        "byte": list_byte_stages(),
        "examples": list(EXAMPLE_SPECS),
    }


def make_codec_id(tensor_id: int, byte_id: int) -> int:
    """The u16 wire codec id of a stage pair."""
    return (tensor_id << 8) | byte_id


def split_codec_id(codec_id: int) -> tuple[int, int]:
    """Inverse of :func:`make_codec_id`: ``(tensor_id, byte_id)``."""
    return codec_id >> 8, codec_id & 0xFF


def is_registered_codec_id(codec_id: int) -> bool:
    """True when both stage ids of ``codec_id`` are registered."""
    tensor_id, byte_id = split_codec_id(codec_id)
    return 0 <= codec_id <= 0xFFFF and tensor_id in _TENSOR_IDS and byte_id in _BYTE_IDS


# ---------------------------------------------------------------------------------------
# Spec strings
# ---------------------------------------------------------------------------------------


def _parse_stage(text: str, kind: str, registry: Mapping[str, type[_Stage]]) -> type[_Stage]:
    name = text.strip().lower()
    if name not in registry:
        raise CodecSpecError(f"unknown {kind} stage {name!r}; valid: {sorted(registry)}")
    return registry[name]


def _parse_params(text: str | None, cls: type[_Stage]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if text is not None:
        for item in text.split(","):
            key, sep, raw = item.partition("=")
            key = key.strip().lower()
            if not sep or not key or not raw.strip():
                raise CodecSpecError(f"{cls.name}: expected k=v, got {item!r}")
            if key not in cls.PARAMS:
                valid = {k: p.describe() for k, p in cls.PARAMS.items()} or "none"
                raise CodecSpecError(f"{cls.name}: unknown parameter {key!r}; valid: {valid}")
            if key in values:
                raise CodecSpecError(f"{cls.name}: parameter {key!r} given twice")
            values[key] = cls.PARAMS[key].parse(raw.strip(), f"{cls.name}:{key}")
    return {k: values.get(k, p.default) for k, p in cls.PARAMS.items()}


def parse_spec(spec: str) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """Parse a codec spec into ``(tensor_name, tensor_params, byte_name, byte_params)``.

    Defaults are filled in; unknown names or parameters raise :class:`CodecSpecError` (a
    ``ValueError``) naming the valid choices.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CodecSpecError(f"codec spec must be a non-empty string, got {spec!r}")
    parts = _STAGE_SPLIT_RE.split(spec.strip())
    if len(parts) > 2:
        raise CodecSpecError(f"codec spec {spec!r} has more than one '+<byte stage>'")
    stages: list[tuple[str, dict[str, Any]]] = []
    for part, kind, registry in zip(
        parts, ("tensor", "byte"), (_TENSOR_STAGES, _BYTE_STAGES), strict=False
    ):
        name_text, sep, params_text = part.partition(":")
        cls = _parse_stage(name_text, kind, registry)
        stages.append((cls.name, _parse_params(params_text if sep else None, cls)))
    if len(stages) == 1:
        stages.append(("raw", _parse_params(None, _BYTE_STAGES["raw"])))
    (tname, tparams), (bname, bparams) = stages
    return tname, tparams, bname, bparams


def canonical_spec(spec: str) -> str:
    """The canonical form of ``spec``: lower-case, every parameter, explicit byte stage."""
    return get_codec(spec).spec


def get_codec(spec: str, *, shape: tuple[int, ...] | None = None, **context: Any) -> Codec:
    """Build a fresh (uncalibrated) :class:`Codec` from a spec string.

    ``shape`` optionally fixes the tensor shape the codec accepts; ``context`` is passed to the
    tensor stage's constructor (learned stages take their modules/sessions this way).
    """
    tname, tparams, bname, bparams = parse_spec(spec)
    tensor = _TENSOR_STAGES[tname](**tparams, **context)
    byte = _BYTE_STAGES[bname](**bparams)
    return Codec(tensor, byte, shape=shape)


def codec_from_id(codec_id: int, *, shape: tuple[int, ...] | None = None) -> Codec:
    """A codec with default parameters for a wire ``codec_id``; ``ValueError`` if unknown."""
    if not is_registered_codec_id(codec_id):
        raise ValueError(f"unknown codec id 0x{codec_id:04x}")
    tensor_id, byte_id = split_codec_id(codec_id)
    return get_codec(f"{_TENSOR_IDS[tensor_id]}+{_BYTE_IDS[byte_id]}", shape=shape)


# ---------------------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------------------


def _as_features(x: Any) -> tuple[np.ndarray, str]:
    """Validate an encoder input; return it as C-contiguous float32 and its dtype name."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise EncodeError("bad_dtype", f"expected a real numeric array, got dtype {arr.dtype}")
    if not 1 <= arr.ndim <= 4 or 0 in arr.shape:
        raise EncodeError("bad_shape", f"expected 1 to 4 non-empty dims, got {arr.shape}")
    dtype = arr.dtype.name if arr.dtype.name in ("float16", "float32", "float64") else "float32"
    with np.errstate(over="ignore"):
        arr32 = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr32).all():
        raise EncodeError("nonfinite", "features contain NaN or Inf (or exceed float32 range)")
    return arr32, dtype


def _check_frame_shape(shape: Any, max_tensor_bytes: int) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise FrameError("bad_header", f"shape {shape!r} is not a tuple of ints") from None
    if not 1 <= len(dims) <= 4 or min(dims) < 1:
        raise FrameError("bad_header", f"shape {dims} needs 1 to 4 dims, each >= 1")
    if math.prod(dims) * 4 > max_tensor_bytes:
        raise FrameError("oversize", f"shape {dims} exceeds {max_tensor_bytes} bytes as float32")
    return dims


#: :meth:`TensorStage.level_tables` that give every pixel level as its own symbol.
_IDENTITY_TABLES = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 256))


class Codec:
    """A tensor stage plus a byte stage: CompressAI-style ``compress``/``decompress``.

    Build with :func:`get_codec`. Calibrate with :meth:`calibrate` (or restore with
    :meth:`load_state_dict`) before use when :attr:`needs_calibration` is true.
    """

    def __init__(
        self,
        tensor: TensorStage,
        byte: ByteStage,
        *,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        problem = byte.check_symbols(tensor.symbols)
        if problem:
            raise ValueError(f"{tensor.spec}+{byte.spec}: {problem}")
        self.tensor = tensor
        self.byte = byte
        self._shape: tuple[int, ...] | None = None
        # Every frame carries the fingerprint; hashing per-neuron stats per frame would cost
        # ~1 ms, so it is cached and reset whenever calibration changes through this object.
        self._fingerprint: int | None = None
        if shape is not None:
            self._set_shape(tuple(int(d) for d in shape))

    # -- identity --------------------------------------------------------------------

    @property
    def spec(self) -> str:
        """Canonical spec string with every parameter filled in."""
        return f"{self.tensor.spec}+{self.byte.spec}"

    @property
    def codec_id(self) -> int:
        """The u16 wire id: ``tensor_stage_id << 8 | byte_stage_id``."""
        return make_codec_id(self.tensor.stage_id, self.byte.stage_id)

    @property
    def lossless(self) -> bool:
        """True when the byte stage reproduces the tensor stage's symbols exactly."""
        return self.byte.lossless

    @property
    def needs_calibration(self) -> bool:
        """True when compress() refuses to run before calibration."""
        return self.tensor.needs_calibration or self.byte.needs_calibration

    @property
    def calibrated(self) -> bool:
        """True when any stage holds calibration state (frames then carry the fingerprint)."""
        return self.tensor.calibrated or self.byte.calibrated

    @property
    def symbols(self) -> SymbolSpec:
        """The symbol alphabet between the two stages."""
        return self.tensor.symbols

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The tensor shape this codec accepts, or None for any shape its stages allow."""
        return self._shape

    def __repr__(self) -> str:
        state = "calibrated" if self.calibrated else "uncalibrated"
        return f"<Codec {self.spec} id=0x{self.codec_id:04x} {state} shape={self._shape}>"

    def _shape_problem(self, shape: tuple[int, ...]) -> str | None:
        if self._shape is not None and shape != self._shape:
            return f"expected shape {self._shape}, got {shape}"
        return self.tensor.check_shape(shape) or self.byte.check_shape(
            self.tensor.symbol_shape(shape)
        )

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if not 1 <= len(shape) <= 4 or min(shape) < 1:
            raise EncodeError("bad_shape", f"expected 1 to 4 dims, each >= 1, got {shape}")
        problem = self._shape_problem(shape)
        if problem:
            raise EncodeError("bad_shape", f"{self.spec}: {problem}")
        self._shape = shape

    def raw_payload_bytes(self, shape: tuple[int, ...]) -> int:
        """Size of the uncompressed (``raw``) symbol stream for a tensor of ``shape``."""
        return self.symbols.raw_nbytes(self.tensor.symbol_shape(tuple(shape)))

    # -- calibration -----------------------------------------------------------------

    def calibrate(self, features: np.ndarray) -> Codec:
        """Fit calibration state to ``features`` of shape (N, *tensor_shape); returns self.

        The tensor stage is fitted first; the byte stage (rANS) then fits its static model to
        the calibration set as seen through the fitted tensor stage.
        """
        arr = np.asarray(features)
        if arr.ndim < 2 or arr.shape[0] < 1:
            raise EncodeError("bad_shape", f"expected (N, *tensor_shape), got {arr.shape}")
        feats, _ = _as_features(arr.reshape(arr.shape[0], -1))
        feats = feats.reshape(arr.shape)
        shape = tuple(arr.shape[1:])
        if self._shape is None:
            self._set_shape(shape)
        elif shape != self._shape:
            raise EncodeError("shape_mismatch", f"expected {self._shape}, got {shape}")
        self._fingerprint = None
        self.tensor.calibrate(feats)
        if self.byte.needs_calibration:
            self.byte.calibrate((self.tensor.encode(f)[0] for f in feats), self.symbols)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Calibration state as ``{"tensor.<k>": array, "byte.<k>": array}`` (safetensors)."""
        out = {f"tensor.{k}": v for k, v in self.tensor.state_dict().items()}
        out.update({f"byte.{k}": v for k, v in self.byte.state_dict().items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; ``ValueError`` on unknown keys or bad arrays."""
        parts: dict[str, dict[str, np.ndarray]] = {"tensor": {}, "byte": {}}
        for key, value in state.items():
            prefix, _, sub = key.partition(".")
            if prefix not in parts or not sub:
                raise ValueError(f"unexpected state key {key!r}")
            parts[prefix][sub] = np.asarray(value)
        self._fingerprint = None
        self.tensor.load_state_dict(parts["tensor"])
        self.byte.load_state_dict(parts["byte"])

    def fingerprint(self) -> int:
        """u32 crc32 of the stage configuration and calibration arrays.

        Byte-stage parameters that do not affect decoding (zstd level, JPEG quality) are left
        out, so an encoder and a decoder agree whenever they can interoperate.
        """
        if self._fingerprint is not None:
            return self._fingerprint
        crc = zlib.crc32(f"{self.tensor.spec}+{self.byte.name}".encode())
        for key, value in sorted(self.state_dict().items()):
            arr = np.ascontiguousarray(value)
            arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            crc = zlib.crc32(f"{key}:{arr.dtype.str}:{arr.shape}".encode(), crc)
            crc = zlib.crc32(arr.tobytes(), crc)
        self._fingerprint = crc & 0xFFFFFFFF
        return self._fingerprint

    # -- coding ----------------------------------------------------------------------

    def _require_calibration(self) -> None:
        missing = [
            s.name for s in (self.tensor, self.byte) if s.needs_calibration and not s.calibrated
        ]
        if missing:
            raise EncodeError("not_calibrated", f"{self.spec}: calibrate {missing} first")

    def to_symbols(self, x: np.ndarray) -> np.ndarray:
        """Run only the tensor stage (used for entropy statistics)."""
        arr, _ = _as_features(x)
        self._require_calibration()
        problem = self._shape_problem(arr.shape)
        if problem:
            raise EncodeError("shape_mismatch", f"{self.spec}: {problem}")
        return self.tensor.encode(arr)[0]

    def compress(self, x: np.ndarray) -> EncodedTensor:
        """Encode one tensor (any real dtype, 1-4 dims, finite) to payload + params."""
        arr, dtype = _as_features(x)
        self._require_calibration()
        problem = self._shape_problem(arr.shape)
        if problem:
            raise EncodeError("shape_mismatch", f"{self.spec}: {problem}")
        symbols, stage_params = self.tensor.encode(arr)
        payload = self.byte.encode(symbols, self.symbols)
        return EncodedTensor(payload=payload, params=self._params(stage_params), shape=arr.shape,
                             dtype=dtype)

    @property
    def encodes_images(self) -> bool:
        """True when :meth:`compress_image` can encode normalized 8-bit images directly."""
        return self.tensor.maps_levels and self.byte.encodes_images

    def compress_image(self, image: np.ndarray, order: str, values: np.ndarray) -> EncodedTensor:
        """:meth:`compress` of the (3, H, W) tensor holding ``values[c, k]`` where RGB channel
        ``c`` of the uint8 ``(H, W, 3)`` ``image`` (in ``order`` "RGB"/"BGR") holds ``k``: the
        same bytes, via one lookup table per channel instead of float passes to normalize and
        quantize (beyond CompressAI's API, for the robot's CPU at split point 0). Only if
        :attr:`encodes_images`."""
        if not self.encodes_images:
            raise EncodeError("bad_shape", f"{self.spec} cannot encode images directly")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
                or order not in ("RGB", "BGR"):
            raise EncodeError("bad_shape", f"expected uint8 (H, W, 3) RGB or BGR, got "
                                           f"{image.dtype} {image.shape} {order}")
        shape = (3, *image.shape[:2])
        self._require_calibration()
        problem = self._shape_problem(shape)
        if problem:
            raise EncodeError("shape_mismatch", f"{self.spec}: {problem}")
        used = None
        if not self.tensor.calibrated:  # a calibrated range does not depend on the frame
            # Per plane: numpy's min over axis 0 of (H·W, 3) is ~50× slower than this.
            used = np.array([cv2.minMaxLoc(plane)[:2] for plane in cv2.split(image)], np.intp)
            if order == "BGR":
                used = used[::-1]
        tables, stage_params = self.tensor.level_tables(values, used)
        bgr = np.ascontiguousarray(image)
        if not np.array_equal(tables, _IDENTITY_TABLES):  # the input codec's are the identity
            # cv2.LUT maps channel i through table i: a BGR image comes out in BGR at once.
            lut = (tables[::-1] if order == "BGR" else tables).T[None]
            bgr = cv2.LUT(bgr, np.ascontiguousarray(lut))
        if order == "RGB":
            bgr = cv2.cvtColor(bgr, cv2.COLOR_RGB2BGR)
        payload = self.byte.encode_image(bgr, self.symbols)
        return EncodedTensor(payload=payload, params=self._params(stage_params), shape=shape)

    def _params(self, stage_params: bytes) -> bytes:
        if self.calibrated:
            return bytes([_CFLAG_CALIBRATED]) + _U32.pack(self.fingerprint()) + stage_params
        return bytes([0]) + stage_params

    def _stage_params(self, params: bytes) -> bytes:
        if len(params) < 1:
            raise FrameError("bad_params", "empty codec params")
        cflags = params[0]
        if cflags & ~_CFLAG_CALIBRATED:
            raise FrameError("bad_params", f"unknown codec flags 0x{cflags:02x}")
        if not cflags & _CFLAG_CALIBRATED:
            if self.calibrated:
                raise FrameError("bad_params", "frame encoded without calibration")
            return params[1:]
        if not self.calibrated:
            raise FrameError("not_calibrated", f"{self.spec}: decoder has no calibration")
        if len(params) < 5:
            raise FrameError("bad_params", "codec params too short for the fingerprint")
        (fingerprint,) = _U32.unpack_from(params, 1)
        if fingerprint != self.fingerprint():
            raise FrameError(
                "bad_params",
                f"calibration fingerprint 0x{fingerprint:08x} != 0x{self.fingerprint():08x}",
            )
        return params[5:]

    def decompress(
        self,
        payload: bytes,
        params: bytes,
        shape: tuple[int, ...],
        *,
        max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    ) -> np.ndarray:
        """Decode untrusted ``payload``/``params`` to a finite float32 tensor of ``shape``.

        Raises :class:`FrameError` for every kind of bad input; memory use is bounded by
        ``max_tensor_bytes`` (checked before anything is decoded).
        """
        dims = _check_frame_shape(shape, max_tensor_bytes)
        problem = self._shape_problem(dims)
        if problem:
            raise FrameError("shape_mismatch", f"{self.spec}: {problem}")
        stage_params = self._stage_params(bytes(params))
        # Cheap header checks first: a mismatched configuration is named as such rather than
        # as whatever the payload decoder trips over.
        self.tensor.check_params(stage_params, dims)
        sym_shape = self.tensor.symbol_shape(dims)
        spec = self.symbols
        symbols = self.byte.decode(bytes(payload), sym_shape, spec)
        if symbols.shape != sym_shape or symbols.dtype != np.dtype(spec.dtype):
            # A byte stage bug, not bad input; still never hand a wrong array downstream.
            raise FrameError("corrupt_payload", f"byte stage returned {symbols.shape}")
        narrow = spec.is_integer and spec.levels <= np.iinfo(symbols.dtype).max
        if narrow and symbols.max() >= spec.levels:
            raise FrameError("symbol_range", f"symbol >= {spec.levels}")
        x = self.tensor.decode(symbols, stage_params, dims)
        if not np.isfinite(x).all():
            raise FrameError("nonfinite", "decoded tensor contains NaN or Inf")
        return x
