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

**Training hooks.** As CompressAI's models own their ``forward``/``compress``/``aux_loss``, a
method owns everything that differs in how it is trained and measured; the trainer
(:mod:`split_infer.training.learned`) only calls hooks, so a new method is one new module
here (imported by this package's ``__init__`` so that it registers). The trainer drives one
configuration (split, method, ratio) like this::

    spec.pretraining ─▶ (once per split) train a module in place, summarise it (JSON)
        └─▶ pair.use_pretraining(summary)           e.g. AECNN prunes by attention importance
    pair.serve_ratios(ladder)                       rateless: which prefixes one model serves
    pair.training_phases(ctx) ─▶ per phase, per step:
        pair.training_forward(features, pair.training_transmit(in_loop), generator)
    pair.after_training() ─▶ pair.finalize(ctx)     deployed mode; final statistics (new run)
    measure: pair.wire_forward(features, real wire codec, keep) per keep of pair.keep_ladder
        └─▶ pair.measure_extra(ctx, codec)          extra figures (AECNN: pruned-only accuracy)
    export: pair.describe(), pair.fill_values(), pair.reported_extras

The defaults on :class:`LearnedBottleneck` are those of a plain encoder/decoder pair trained in
one phase, with the wire codec (identity gradient) in the loop when asked. Methods that change
the backbone itself rather than the split register a :class:`BackboneSlimming`
(BBNet's network slimming), found with :func:`get_slimming`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from split_infer.codecs.learned.ste import CodecSTE

__all__ = [
    "BackboneSlimming",
    "LearnedBottleneck",
    "MethodSpec",
    "SplitPretraining",
    "TrainingContext",
    "TrainingPhase",
    "build_method",
    "conv_out",
    "get_method",
    "get_slimming",
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


class TrainingContext(Protocol):
    """What the trainer lends a method's hooks while one configuration trains.

    Features come through the configuration's own head (its fine-tuned backbone copy, if
    any), so they change while an end-to-end configuration trains.
    """

    def calibration_features(self) -> np.ndarray:
        """Head features (N, C, H, W) of the calibration images."""
        ...

    def train_features(self) -> np.ndarray:
        """Un-augmented head features of a sample of the training images."""
        ...

    def evaluate(self, transmit: Callable[[torch.Tensor], torch.Tensor] | None,
                 keep: int | None = None) -> float:
        """Top-1 (%) on the search set with ``transmit`` on the code sent (``keep``
        channels of it for a rateless pair)."""
        ...


@dataclass(frozen=True)
class TrainingPhase:
    """One step of a method's training schedule (AECNN's Alg. 1 has several).

    Every phase runs the trainer's epoch count. A phase with ``train_pair=False`` updates only
    the backbone, so it is skipped when the backbone is frozen.
    """

    name: str
    train_pair: bool = True
    #: once, when the phase starts (changes state, e.g. an initialisation)
    start: Callable[[], None] | None = None
    #: every time the phase is (re)entered, resumes included (modes)
    enter: Callable[[], None] | None = None


@dataclass(frozen=True)
class SplitPretraining:
    """A module trained once per split point, shared by every ratio of a method.

    The trainer trains ``build(feature_shape)`` in place between head and tail with the
    cross-entropy (AECNN Alg. 1 lines 2-4: the channel-attention module), then calls
    ``summarize(module, batches)`` under ``torch.no_grad`` on the un-augmented training features
    (in order); the JSON-able summary is checkpointed and handed to
    :meth:`LearnedBottleneck.use_pretraining` of every ratio.
    """

    name: str  # run directory and progress label
    build: Callable[[tuple[int, int, int]], nn.Module]
    summarize: Callable[[nn.Module, Iterable[torch.Tensor]], dict[str, Any]]


@dataclass(frozen=True)
class BackboneSlimming:
    """Physical channel pruning of the backbone by per-channel scales (BBNet §3.1).

    ``groups(model)`` lists the prunable channel groups, ``penalty(groups)`` is the sparsity
    term added to the loss while sparse training, ``prune(model, fraction)`` removes the
    channels in place and returns the new widths, ``apply_widths(model, widths)`` reshapes a
    fresh model to them and ``save_weights(model, widths, path)`` writes loadable weights.
    """

    groups: Callable[[nn.Module], list[Any]]
    penalty: Callable[[list[Any]], torch.Tensor]
    prune: Callable[[nn.Module, float], dict[str, int]]
    apply_widths: Callable[[nn.Module, dict[str, int]], None]
    save_weights: Callable[[nn.Module, dict[str, int], str | Path], None]


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

    # -- training hooks (defaults: a plain pair trained in one phase) -------------------------

    #: keys of the measured extras (:meth:`measure_extra`) shown in search rows and manifests
    reported_extras: tuple[str, ...] = ()

    def use_pretraining(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Apply the summary of the method's :class:`SplitPretraining`; returns entries for the
        run key (a changed summary retrains the configuration)."""
        return {}

    def serve_ratios(self, ratios: Sequence[float]) -> dict[str, Any]:
        """Fix the nominal ratios one trained model serves (a rateless pair: its ladder of
        kept channels); returns entries for the run key."""
        return {}

    @property
    def keep_ladder(self) -> list[int] | None:
        """Channel prefixes measured and exported separately; None: the whole code."""
        return None

    def keep_channels(self, ratio: float) -> int | None:
        """Leading code channels sent at nominal ``ratio``; None: the whole code."""
        return None

    def prefix_ratio(self, keep: int) -> float:
        """Nominal ratio when the first ``keep`` code channels are sent."""
        return self.ratio

    def training_transmit(self, in_loop: bool) -> nn.Module | None:
        """What the wire does to the code in the training forward pass: the real codec with
        an identity gradient (BottleNet §2.2) when ``in_loop``, else nothing. It codes each
        batch with its own parameters, as the encoder moves while it learns."""
        return CodecSTE(self.wire_codec, adaptive=True) if in_loop else None

    def training_phases(self, context: TrainingContext) -> list[TrainingPhase]:
        """The schedule of one configuration (called once, before a checkpoint is loaded)."""
        return [TrainingPhase("train")]

    def training_forward(self, x: torch.Tensor, transmit: nn.Module | None,
                         generator: torch.Generator) -> torch.Tensor:
        """Decoded features of one training batch (``generator`` for per-sample draws)."""
        return self(x, transmit)

    def after_training(self) -> None:
        """Put the pair into its deployed mode (after training or loading a checkpoint)."""

    def finalize(self, context: TrainingContext) -> None:
        """Final statistics once training has completed, before the pair is measured."""

    def wire_forward(self, x: torch.Tensor,
                     transmit: Callable[[torch.Tensor], torch.Tensor] | None,
                     keep: int | None = None) -> torch.Tensor:
        """Decoded features as deployed: ``transmit`` on what is sent (``keep`` channels)."""
        return self(x, transmit)

    def measure_extra(self, context: TrainingContext,
                      transmit: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        """Figures beyond accuracy and bytes, recorded with the finished run (JSON-able);
        ``transmit`` is the calibrated wire codec the pair was measured with."""
        return {}

    def restore_results(self, extra: dict[str, Any]) -> None:
        """Restore state from the extras of a finished run that is loaded, not retrained."""

    def fill_values(self) -> dict[str, np.ndarray] | None:
        """Tensors of the bundle's fill file (what the cloud puts in unsent channels)."""
        return None

    @torch.no_grad()
    def encode_array(self, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Encoder outputs of ``features`` (N, C, H, W) in eval mode, e.g. for calibration."""
        self.eval()
        out = [self.encoder(torch.from_numpy(features[i:i + batch_size])).numpy()
               for i in range(0, len(features), batch_size)]
        return np.concatenate(out)


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
    #: trained once per split before any ratio (AECNN's channel attention)
    pretraining: SplitPretraining | None = None
    #: backbone pruning the method brings along (BBNet's network slimming)
    slimming: BackboneSlimming | None = None

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
    pretraining: SplitPretraining | None = None,
    slimming: BackboneSlimming | None = None,
) -> Callable[[Callable[..., LearnedBottleneck]], Callable[..., LearnedBottleneck]]:
    """Decorator adding a builder ``(feature_shape, ratio, **options) -> LearnedBottleneck``.

    Per-configuration behaviour lives in the hooks of the :class:`LearnedBottleneck` subclass
    the builder returns; ``pretraining`` and ``slimming`` are the per-split and per-backbone
    hooks.
    """

    def wrapper(builder: Callable[..., LearnedBottleneck]) -> Callable[..., LearnedBottleneck]:
        if name in _METHODS:
            raise ValueError(f"learned method {name!r} is already registered")
        _METHODS[name] = MethodSpec(
            name, builder, paper, description, tuple(float(r) for r in default_ratios),
            wire_codec, codec_in_loop, rateless,
            None if supported_ratios is None else tuple(float(r) for r in supported_ratios),
            pretraining=pretraining, slimming=slimming)
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


def get_slimming(name: str | None = None) -> BackboneSlimming:
    """The :class:`BackboneSlimming` of method ``name``, or with None the only one registered."""
    if name is not None:
        slimming = get_method(name).slimming
        if slimming is None:
            raise ValueError(f"learned method {name!r} brings no backbone slimming")
        return slimming
    found = [m for m in list_methods() if _METHODS[m].slimming is not None]
    if len(found) != 1:
        raise ValueError(f"name the method whose backbone slimming to use; with one: {found}")
    return _METHODS[found[0]].slimming  # type: ignore[return-value]
