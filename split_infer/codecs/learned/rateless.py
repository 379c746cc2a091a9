"""Rateless bottleneck: one model, every ratio; the ratio is how many channels are sent.

Beyond every seed paper. The encoder is a learned channel transform whose output channels are
*ordered by importance*; the decoder reconstructs the features from any prefix of them::

    edge:  x (C,H,W) ─▶ 1×1 conv C→C (ordered code z) ─▶ send z[:k]   (ratio C/k)
    cloud: z[:k] ─▶ fill z[k:] with the per-channel training means ─▶ 1×1 conv C→C
                 ─▶ + residual refinement (3×3 conv, BN, ReLU, 3×3 conv) [─▶ ReLU] ─▶ x̂

* **Ordering.** The transform starts as PCA of the training features (components sorted by
  variance, so every prefix is the best linear code of its size) and is trained with *nested
  (tail) dropout*: every sample draws a k and its channels k.. are replaced by their means
  before the decoder. Importance therefore decreases with the channel index throughout
  training, and one set of weights serves every k.
* **Any ratio, per frame, without reload.** The edge runs one ONNX part and sends the first k
  channels; the cloud's filler (the bundle's ``fill`` file, ``channel_mean``) completes the
  tensor before its one ONNX part. k can change from one frame to the next; the wire frame's
  shape says which k was sent. The same fill is the thesis's dataset-mean concealment (§3.2)
  for channels that never arrive.
* **Wire codec.** ``quant:bits=8,per=channel+rans`` on the prefix, calibrated per k on the
  prefix's shape.
* **Training hooks** (run by :mod:`split_infer.training.learned`): ``serve_ratios`` fixes
  the ladder of k the model is measured and exported at; the one phase starts from PCA;
  every sample of a batch draws its k (``sample_keep``); once trained, the exact
  training-set means replace the running ones (the bundle's fill).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from split_infer.codecs.learned._api import (
    LearnedBottleneck,
    TrainingContext,
    TrainingPhase,
    register_method,
)

__all__ = ["RatelessDecoder", "RatelessEncoder", "RatelessFill", "rateless"]


class RatelessEncoder(nn.Module):
    """Ordered linear channel transform (1×1 conv with bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.transform = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x)


class RatelessFill(nn.Module):
    """Tail drop: keeps the first ``keep[i]`` code channels of sample i, fills the rest.

    ``channel_mean`` is a running (EMA) mean of the code during training; the exporter
    replaces it with the exact training-set mean and writes it as the bundle's fill file.
    """

    def __init__(self, channels: int, momentum: float = 0.05) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("channel_mean", torch.zeros(channels))

    def forward(self, z: torch.Tensor, keep: torch.Tensor | int | None) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                batch_mean = z.detach().mean(dim=(0, 2, 3))
                self.channel_mean.lerp_(batch_mean, self.momentum)
        if keep is None:
            return z
        c = z.shape[1]
        index = torch.arange(c, device=z.device)
        if isinstance(keep, int):
            mask = (index < keep).view(1, c, 1, 1)
        else:
            mask = (index.view(1, c) < keep.view(-1, 1)).view(-1, c, 1, 1)
        fill = self.channel_mean.view(1, c, 1, 1).to(z.dtype)
        return torch.where(mask, z, fill)


class RatelessDecoder(nn.Module):
    """Linear inverse transform plus a zero-initialised residual refinement."""

    def __init__(self, channels: int, nonnegative: bool) -> None:
        super().__init__()
        self.inverse = nn.Conv2d(channels, channels, 1)
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1))
        # Zero-initialised last layer: the decoder starts as the exact inverse transform.
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)
        self.out = nn.ReLU() if nonnegative else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.inverse(z)
        return self.out(y + self.refine(y))


class RatelessBottleneck(LearnedBottleneck):
    """A :class:`LearnedBottleneck` whose ``forward`` also takes how many channels are kept."""

    def __init__(self, feature_shape: tuple[int, int, int], encoder: RatelessEncoder,
                 decoder: RatelessDecoder, wire_codec: str, options: dict[str, Any]) -> None:
        super().__init__("rateless", feature_shape, 1.0, encoder, decoder, wire_codec, options)
        self.fill = RatelessFill(feature_shape[0])
        #: kept-channel counts the model is trained for, measured and exported at
        self.ladder: list[int] = [self.channels]

    @property
    def channels(self) -> int:
        return self.feature_shape[0]

    def keep_channels(self, ratio: float) -> int:
        """Channels sent for a nominal ratio ``C/k`` (at least one)."""
        return int(min(self.channels, max(1, round(self.channels / float(ratio)))))

    def prefix_ratio(self, keep: int) -> float:
        """Nominal ratio ``C/k`` of sending the first ``keep`` channels."""
        return self.channels / keep

    def forward(self, x: torch.Tensor, transmit=None, keep: torch.Tensor | int | None = None
                ) -> torch.Tensor:
        z = self.encoder(x)
        if transmit is not None:
            z = transmit(z)
        return self.decoder(self.fill(z, keep))

    def sample_keep(self, batch: int, ladder: Sequence[int], generator: torch.Generator
                    ) -> torch.Tensor:
        """Per-sample k for nested dropout: half from the exported ladder, half log-uniform
        over 1..C (so that every prefix, not only the ladder's, stays ordered)."""
        c = self.channels
        ladder_t = torch.as_tensor(sorted(set(int(k) for k in ladder)), dtype=torch.long)
        pick = ladder_t[torch.randint(len(ladder_t), (batch,), generator=generator)]
        log_k = torch.rand(batch, generator=generator) * np.log(c + 1)
        free = torch.clamp(torch.exp(log_k).long(), 1, c)
        use_ladder = torch.rand(batch, generator=generator) < 0.5
        return torch.where(use_ladder, pick, free)

    @torch.no_grad()
    def init_pca(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Set encoder = PCA of ``features`` (N, C, H, W), decoder = its inverse; returns the
        explained variance per component (descending)."""
        x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        mean = flat.mean(0)
        cov = torch.cov((flat - mean).T)
        eigval, eigvec = torch.linalg.eigh(cov)
        order = torch.argsort(eigval, descending=True)
        basis = eigvec[:, order].T  # rows: components, most variance first
        enc = self.encoder.transform
        enc.weight.copy_(basis.view(*enc.weight.shape).to(enc.weight.dtype))
        enc.bias.copy_((-basis @ mean).to(enc.bias.dtype))
        inv = self.decoder.inverse
        inv.weight.copy_(basis.T.contiguous().view(*inv.weight.shape).to(inv.weight.dtype))
        inv.bias.copy_(mean.to(inv.bias.dtype))
        self.fill.channel_mean.zero_()  # centred code
        return eigval[order].clamp_min(0).numpy()

    # -- training hooks ----------------------------------------------------------------------
    def serve_ratios(self, ratios: Sequence[float]) -> dict[str, Any]:
        """The ladder of k for ``ratios``; it keys the run."""
        self.ladder = sorted({self.keep_channels(r) for r in ratios})
        return {"ladder": self.ladder}

    @property
    def keep_ladder(self) -> list[int]:
        return self.ladder

    def training_transmit(self, in_loop: bool) -> None:
        """Nothing: the prefix is what the wire codec sees, and its length varies per sample."""
        return None

    def training_phases(self, context: TrainingContext) -> list[TrainingPhase]:
        """One phase, starting from PCA of the calibration features."""
        return [TrainingPhase("train", start=lambda: self.init_pca(
            context.calibration_features()))]

    def training_forward(self, x: torch.Tensor, transmit: nn.Module | None,
                         generator: torch.Generator) -> torch.Tensor:
        """Nested dropout: each sample keeps its own drawn prefix."""
        return self(x, None, keep=self.sample_keep(len(x), self.ladder, generator))

    def finalize(self, context: TrainingContext) -> None:
        """The exact training-set means replace the running estimate (the bundle's fill)."""
        codes = self.encode_array(context.train_features())
        self.fill.channel_mean.copy_(torch.from_numpy(codes.mean(axis=(0, 2, 3))))

    def wire_forward(self, x: torch.Tensor,
                     transmit: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     keep: int | None = None) -> torch.Tensor:
        """The first ``keep`` channels through ``transmit``, the rest filled."""
        code = self.encoder(x)
        k = keep or self.channels
        sent = code[:, :k]
        if transmit is not None:
            sent = transmit(sent)
        code = torch.cat([sent, code[:, k:]], 1)
        return self.decoder(self.fill(code, k))

    def measure_extra(self, context: TrainingContext,
                      transmit: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        """The exact means, restored with the run (:meth:`restore_results`)."""
        return {"channel_mean": self.fill.channel_mean.tolist()}

    def restore_results(self, extra: dict[str, Any]) -> None:
        self.fill.channel_mean.copy_(torch.tensor(extra["channel_mean"]))

    def fill_values(self) -> dict[str, np.ndarray]:
        return {"channel_mean": self.fill.channel_mean.numpy().astype(np.float32)}


@register_method(
    "rateless",
    paper="beyond the seeds (nested dropout over a PCA-initialised channel transform)",
    description="importance-ordered channels trained with random tail drop: one model serves "
                "every ratio C/k, switchable per frame",
    default_ratios=(1, 2, 4, 8, 16, 32, 64),
    wire_codec="quant:bits=8,per=channel+rans",
    rateless=True,
)
def rateless(feature_shape: tuple[int, int, int], ratio: float | None = None, *,
             wire_codec: str, nonnegative: bool = True, **_: Any) -> RatelessBottleneck:
    """The rateless pair for ``feature_shape``; ``ratio`` is ignored (one model, all ratios)."""
    c = feature_shape[0]
    return RatelessBottleneck(feature_shape, RatelessEncoder(c), RatelessDecoder(c, nonnegative),
                              wire_codec, {"nonnegative": nonnegative})
