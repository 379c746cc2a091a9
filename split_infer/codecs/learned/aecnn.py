"""AECNN (Li, Iosifidis & Zhang, "Attention-based Feature Compression for CNN Inference
Offloading in Edge Computing", §IV).

::

    training only:  X ─▶ CA module: Q = sigmoid(norm(AvgPool X) + norm(MaxPool X)) ─▶ X ⊙ Q
    edge:           X ─▶ keep the C/V channels of highest importance q^c ─▶ quant + rANS
    cloud:          X̂ (C/V channels) ─▶ FR module: each pruned channel from *all* kept ones
                    ─▶ scatter kept + recovered channels back to their indices ─▶ tail

* **Channel attention** (§IV-B, eqs. 5-7): global average and max pooling per channel, each
  normalized over the channel axis ((A − μ)/√(δ² + ε)), summed, then a sigmoid. The paper's
  module has no parameters of its own and learns through the backbone around it. We go
  further: a per-channel scale and shift after the normalization (the learnable affine of
  the normalization-based attention it cites [12]), initialised to the identity, so that the
  module also learns when the backbone is frozen.
* **Importance** (eq. 8): q^c averaged over the training set; the C(1 − 1/V) least important
  channels are pruned (``prune``). On the edge, pruning is a channel gather right after the
  head; the pruned channels are never sent.
* **Feature recovery** (§IV-C, eq. 9): a light CNN, 3×3 conv (C' → C − C') + BN + ReLU then 3×3
  conv, so that every recovered channel is a function of all received channels; the received
  channels pass through unchanged (entropy coding is lossless, §IV-C).
* **Training** (§IV-D, Alg. 1) is step by step; :mod:`split_infer.training.learned` runs the
  hooks defined here: CA in place, once per split (:data:`ATTENTION_PRETRAINING`) →
  importance → prune (:meth:`AECNNBottleneck.use_pretraining`) → fine-tune the pruned network
  (phase ``pruned``, only when the backbone trains) → insert FR → fine-tune (``recovery``).
* **Wire**: the paper entropy-codes the kept features; here ``quant:bits=8,per=channel+rans``
  (8-bit calibrated quantization, then rANS with a static model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from split_infer.codecs.learned._api import (
    LearnedBottleneck,
    SplitPretraining,
    TrainingContext,
    TrainingPhase,
    register_method,
)

__all__ = [
    "ATTENTION_PRETRAINING",
    "AECNNBottleneck",
    "ChannelAttention",
    "ChannelSelect",
    "FeatureRecovery",
    "aecnn",
]


def _normalize_channels(a: torch.Tensor, eps: float) -> torch.Tensor:
    # eq. 6: μ and δ over the C pooled values of each sample.
    mu = a.mean(dim=1, keepdim=True)
    var = a.var(dim=1, keepdim=True, unbiased=False)
    return (a - mu) / torch.sqrt(var + eps)


class ChannelAttention(nn.Module):
    """Q = sigmoid(w_a·Â + b_a + w_m·M̂ + b_m) per channel (eq. 7, with a learnable affine)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(2, channels))
        self.shift = nn.Parameter(torch.zeros(2, channels))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map Q, shape (N, C)."""
        a = _normalize_channels(x.mean(dim=(2, 3)), self.eps)
        m = _normalize_channels(x.amax(dim=(2, 3)), self.eps)
        logits = a * self.scale[0] + self.shift[0] + m * self.scale[1] + self.shift[1]
        return torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)[:, :, None, None]


class ChannelSelect(nn.Module):
    """Edge side: gathers the kept channels (indices in a buffer, so it exports as a Gather)."""

    def __init__(self, channels: int, keep: int) -> None:
        super().__init__()
        self.register_buffer("kept", torch.arange(keep))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.kept)


class FeatureRecovery(nn.Module):
    """Cloud side: regenerates the pruned channels from all kept ones and puts every channel
    back at its original index."""

    def __init__(self, channels: int, keep: int, nonnegative: bool) -> None:
        super().__init__()
        self.channels = channels
        missing = channels - keep
        self.register_buffer("kept", torch.arange(keep))
        self.register_buffer("pruned", torch.arange(keep, channels))
        self.register_buffer("order", torch.arange(channels))  # inverse permutation
        hidden = max(missing, 1)
        self.body = nn.Sequential(
            nn.Conv2d(keep, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, missing, 3, 1, 1)) if missing else None
        self.out = nn.ReLU() if nonnegative else nn.Identity()
        #: False while fine-tuning the pruned network before the FR module is inserted
        #: (Alg. 1): the pruned channels are then filled with ``fill`` instead.
        self.enabled = True
        self.register_buffer("fill", torch.zeros(channels))

    def set_channels(self, kept: torch.Tensor) -> None:
        pruned = torch.tensor([c for c in range(self.channels) if c not in set(kept.tolist())],
                              dtype=torch.long)
        self.kept.copy_(kept)
        self.pruned.copy_(pruned)
        self.order.copy_(torch.argsort(torch.cat([kept, pruned])))

    def forward(self, received: torch.Tensor) -> torch.Tensor:
        if self.body is None:
            return received.index_select(1, self.order)
        if self.enabled:
            recovered = self.out(self.body(received))
        else:
            n, _, h, w = received.shape
            recovered = self.fill[self.pruned].view(1, -1, 1, 1).expand(n, -1, h, w)
        return torch.cat([received, recovered], dim=1).index_select(1, self.order)


class AECNNBottleneck(LearnedBottleneck):
    """The pruned pair plus the attention module used to rank the channels."""

    def __init__(self, feature_shape: tuple[int, int, int], ratio: float, keep: int,
                 wire_codec: str, nonnegative: bool) -> None:
        c = feature_shape[0]
        super().__init__("aecnn", feature_shape, ratio, ChannelSelect(c, keep),
                         FeatureRecovery(c, keep, nonnegative), wire_codec,
                         {"keep": keep, "nonnegative": nonnegative})
        self.attention = ChannelAttention(c)
        self.register_buffer("importance", torch.zeros(c))

    @property
    def keep(self) -> int:
        return int(self.encoder.kept.numel())

    def prune(self, importance: torch.Tensor) -> torch.Tensor:
        """Keep the ``C/V`` channels of highest ``importance`` (eq. 8 averages); returns them
        in increasing index order."""
        importance = torch.as_tensor(importance, dtype=torch.float32).flatten()
        if importance.numel() != self.feature_shape[0]:
            raise ValueError(f"importance has {importance.numel()} entries, need "
                             f"{self.feature_shape[0]}")
        self.importance.copy_(importance)
        top = torch.argsort(importance, descending=True, stable=True)[: self.keep]
        kept = torch.sort(top).values
        self.encoder.kept.copy_(kept)
        self.decoder.set_channels(kept)
        return kept

    # -- training hooks ----------------------------------------------------------------------
    reported_extras = ("accuracy_pruned_only",)

    def use_pretraining(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Prune to the channels of highest mean attention (eq. 8); the importance keys the
        run. Deterministic, so applying it before a checkpoint is loaded is harmless (the
        checkpoint holds the same indices)."""
        self.prune(torch.tensor(summary["importance"]))
        return {"importance": [round(float(v), 6) for v in summary["importance"]]}

    def training_phases(self, context: TrainingContext) -> list[TrainingPhase]:
        """Alg. 1: the pruned network is fine-tuned before the FR module is inserted (only
        the backbone can learn then), then the FR module is trained."""
        # The fill is taken now, from the head the configuration starts with.
        channel_fill = torch.from_numpy(
            context.calibration_features().mean(axis=(0, 2, 3)).astype(np.float32))

        def pruned_mode() -> None:
            self.decoder.enabled = False
            self.decoder.fill.copy_(channel_fill)

        def recovery_mode() -> None:
            self.decoder.enabled = True

        return [TrainingPhase("pruned", train_pair=False, enter=pruned_mode),
                TrainingPhase("recovery", enter=recovery_mode)]

    def after_training(self) -> None:
        self.decoder.enabled = True

    def measure_extra(self, context: TrainingContext,
                      transmit: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        """"CA_Pruned" of AECNN Table I (the same pruning without the FR module), the kept
        channels and their importance."""
        # Without the FR module the pruned channels carry their training means.
        self.decoder.enabled = False
        self.decoder.fill.copy_(torch.from_numpy(
            context.calibration_features().mean(axis=(0, 2, 3))))
        extra: dict[str, Any] = {"accuracy_pruned_only": context.evaluate(transmit)}
        self.decoder.enabled = True
        extra["kept_channels"] = self.encoder.kept.tolist()
        extra["importance"] = [float(v) for v in self.importance]
        return extra


def _mean_attention(attention: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Eq. 8: the attention map averaged over the training set, per channel."""
    assert isinstance(attention, ChannelAttention)
    total = torch.zeros(attention.scale.shape[1], dtype=torch.float64)
    count = 0
    for feats in batches:
        total += attention.weights(feats).sum(0).double()
        count += len(feats)
    return {"importance": (total / max(count, 1)).tolist()}


#: Alg. 1 lines 2-4, once per split: the CA module trained in place, then its mean map.
ATTENTION_PRETRAINING = SplitPretraining(
    "attention", lambda shape: ChannelAttention(shape[0]), _mean_attention)


@register_method(
    "aecnn",
    paper="Li, Iosifidis & Zhang, AECNN (§IV, Alg. 1)",
    description="channel attention ranks channels, the top C/V are sent (8-bit + rANS), a "
                "feature-recovery CNN regenerates the pruned ones; trained step by step",
    default_ratios=(2, 4, 8, 16, 32, 64),
    wire_codec="quant:bits=8,per=channel+rans",
    pretraining=ATTENTION_PRETRAINING,
)
def aecnn(feature_shape: tuple[int, int, int], ratio: float | None, *, wire_codec: str,
          nonnegative: bool = True, **_: Any) -> AECNNBottleneck:
    """AECNN pair keeping ``max(1, round(C/V))`` channels for V = ``ratio``; call ``prune`` with
    the channel importance before use (until then the first channels are kept)."""
    v = float(ratio or 2.0)
    keep = max(1, min(feature_shape[0], round(feature_shape[0] / v)))
    return AECNNBottleneck(feature_shape, v, keep, wire_codec, nonnegative)
