"""Registry of learned bottlenecks and the encoder/decoder pair they build.

A *method* (BottleNet, Hu & Krishnamachari's AE, AECNN, BBNet, the rateless bottleneck) turns
the feature shape ``(C, H, W)`` at a split point plus a nominal compression ratio into a
:class:`LearnedBottleneck`: an ``encoder`` that runs on the edge right after the head, a
``decoder`` that runs in the cloud right before the tail, and the spec of the built-in wire
codec that carries the encoder's output between them::

    head ─▶ encoder ─▶ [wire codec: tensor stage + byte stage] ─▶ decoder ─▶ tail
    └──── edge ONNX part ────┘                                  └── cloud ONNX part ──┘

The registry mirrors torchvision's ``register_model/get_model/list_models`` (and CompressAI's
``@register_model``): builders register with :func:`register_method` under a name together
with what the rest of the package needs to know about them (paper, default ratios, wire
codec, whether the codec runs inside the training forward pass, whether one model serves
every ratio).

The *ratio* of a method is its nominal reduction of the element count, ``C·H·W`` over the
number of elements the encoder emits, before the wire codec's own compression. Bundles record
the measured ratio (float32 feature bytes over wire-frame bytes) as the configuration id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "LearnedBottleneck",
    "MethodSpec",
    "build_method",
    "conv_out",
    "get_method",
    "list_methods",
    "reduction_plan",
    "register_method",
    "transpose_output_padding",
]


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def transpose_output_padding(in_size: int, out_size: int, kernel: int, stride: int,
                             padding: int) -> int:
    """``output_padding`` making a ConvTranspose2d map ``in_size`` back to ``out_size``.

    Restoration units must reproduce the head's exact spatial size, odd sizes included (a
    stride-2 reduction of 7 gives 4, and 4 must come back as 7, not 8).
    """
    base = (in_size - 1) * stride - 2 * padding + kernel
    extra = out_size - base
    if not (extra == 0 or 0 < extra < stride):
        raise ValueError(f"a stride-{stride} transposed conv cannot map {in_size} to {out_size}")
    return extra


def reduction_plan(feature_shape: Sequence[int], ratio: float,
                   spatial: int | str = "auto") -> tuple[int, int]:
    """``(c', s)``: reduced channels and spatial stride for a nominal element ratio.

    BottleNet (§2.3, Alg. 1) and BBNet (§3.3, Alg. 1) search over the reduced channel count
    ``c'`` and the spatial factor ``s``; the ratio ladder of the accuracy-aware search is
    mapped onto that grid here. With ``spatial="auto"``, ``s = 1`` below ratio 4 and ``s = 2``
    from 4 up (the factor BottleNet's search settled on at every split of ResNet-50, §3.2),
    doubled further only when even one channel at stride 2 would still be too many elements.
    """
    c, h, w = (int(d) for d in feature_shape)
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    if spatial == "auto":
        s = 1 if ratio < 4 or min(h, w) < 2 else 2
        while s < min(h, w) and c * h * w / (ratio * math.ceil(h / s) * math.ceil(w / s)) < 1:
            s *= 2
    else:
        s = int(spatial)
        if s < 1:
            raise ValueError(f"spatial factor must be >= 1, got {spatial!r}")
    code_elements = math.ceil(h / s) * math.ceil(w / s)
    reduced = max(1, round(c * h * w / (ratio * code_elements)))
    return reduced, s


class LearnedBottleneck(nn.Module):
    """An encoder/decoder pair for one (feature shape, ratio) and the wire codec between them.

    ``forward(x, transmit)`` runs ``decoder(transmit(encoder(x)))``; ``transmit`` is what the
    wire does to the code (identity by default, :class:`~.ste.CodecSTE` for the real codec
    with an identity gradient, BottleNet §2.2).
    """

    def __init__(self, method: str, feature_shape: Sequence[int], ratio: float,
                 encoder: nn.Module, decoder: nn.Module, wire_codec: str,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.method = method
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.encoder = encoder
        self.decoder = decoder
        self.wire_codec = wire_codec
        self.options = dict(options or {})
        with torch.no_grad():
            was = self.training
            self.eval()
            code = self.encoder(torch.zeros(1, *self.feature_shape))
            self.train(was)
        self.code_shape = tuple(int(d) for d in code.shape[1:])
        #: nominal element ratio C·H·W / code elements (before the wire codec)
        self.ratio = float(ratio) if ratio else math.prod(self.feature_shape) / math.prod(
            self.code_shape)

    @property
    def element_ratio(self) -> float:
        """Feature elements over code elements, as built (may differ from the requested)."""
        return math.prod(self.feature_shape) / math.prod(self.code_shape)

    def forward(self, x: torch.Tensor,
                transmit: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        code = self.encoder(x)
        if transmit is not None:
            code = transmit(code)
        return self.decoder(code)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary recorded in bundle manifests."""
        return {"method": self.method, "feature_shape": list(self.feature_shape),
                "code_shape": list(self.code_shape), "ratio": self.ratio,
                "element_ratio": self.element_ratio, "wire_codec": self.wire_codec,
                "options": {k: v for k, v in self.options.items()
                            if isinstance(v, (int, float, str, bool))}}


@dataclass(frozen=True)
class MethodSpec:
    """What the registry knows about a learned-bottleneck method."""

    name: str
    builder: Callable[..., LearnedBottleneck]
    paper: str
    description: str
    default_ratios: tuple[float, ...]
    wire_codec: str
    codec_in_loop: bool = False
    rateless: bool = False
    supported_ratios: tuple[float, ...] | None = None  # None: any ratio >= 1
    notes: dict[str, str] = field(default_factory=dict)

    def build(self, feature_shape: Sequence[int], ratio: float | None = None,
              **options: Any) -> LearnedBottleneck:
        """Build the encoder/decoder pair for ``feature_shape`` (C, H, W) at ``ratio``."""
        if len(tuple(feature_shape)) != 3:
            raise ValueError(f"{self.name}: feature shape must be (C, H, W), got "
                             f"{tuple(feature_shape)}")
        if ratio is not None and self.supported_ratios is not None and \
                float(ratio) not in self.supported_ratios:
            raise ValueError(f"{self.name} supports ratios {list(self.supported_ratios)}, "
                             f"got {ratio}")
        options.setdefault("wire_codec", self.wire_codec)
        return self.builder(tuple(int(d) for d in feature_shape), ratio, **options)


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    paper: str,
    description: str,
    default_ratios: Sequence[float],
    wire_codec: str,
    codec_in_loop: bool = False,
    rateless: bool = False,
    supported_ratios: Sequence[float] | None = None,
) -> Callable[[Callable[..., LearnedBottleneck]], Callable[..., LearnedBottleneck]]:
    """Decorator adding a builder ``(feature_shape, ratio, **options) -> LearnedBottleneck``."""

    def wrapper(builder: Callable[..., LearnedBottleneck]) -> Callable[..., LearnedBottleneck]:
        if name in _METHODS:
            raise ValueError(f"learned method {name!r} is already registered")
        _METHODS[name] = MethodSpec(
            name, builder, paper, description, tuple(float(r) for r in default_ratios),
            wire_codec, codec_in_loop, rateless,
            None if supported_ratios is None else tuple(float(r) for r in supported_ratios))
        return builder

    return wrapper


def list_methods() -> list[str]:
    """Names of the registered learned-bottleneck methods."""
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    """The registry entry of ``name``; the error for an unknown name lists the valid ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown learned method {name!r}; registered: {list_methods()}") from None


def build_method(name: str, feature_shape: Sequence[int], ratio: float | None = None,
                 **options: Any) -> LearnedBottleneck:
    """Shorthand for ``get_method(name).build(feature_shape, ratio, **options)``."""
    return get_method(name).build(feature_shape, ratio, **options)
