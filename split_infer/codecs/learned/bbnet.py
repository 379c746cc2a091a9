"""BBNet (Zhou et al., Sensors 2021): feature compression layer and network slimming.

**Feature compression layer** (§3.2, Fig. 2)::

    edge:  x (C,H,W) ─▶ reduction unit: conv C→c' (stride s) + BN + tanh ─▶ V ∈ [-1, 1]
                     ─▶ quantization unit: V' = round((V + 1)·(2ⁿ − 1)/2), n = 8  (``tanhq``)
    cloud:           ─▶ V̂ = 2·V'/(2ⁿ − 1) − 1
                     ─▶ recovery unit: transposed conv c'→C (stride s) + BN + ReLU ─▶ x̂

Because tanh bounds V, the quantizer needs no min/max on the wire (§3.2.2; see
:mod:`split_infer.codecs.fixed` for the ``/2`` the printed eq. 4 lacks). During training the
quantizer runs in the graph with an identity gradient (:func:`tanh_quantize`, bit-identical to
the ``tanhq`` wire stage), and only the compression layer is trained, the backbone frozen
(§3.2.3 "we freeze all layers except the feature compression layer").

**Network slimming** (§3.1, after Liu et al. 2017): train with an L1 penalty λ·Σ|γ| on the
BatchNorm scales, prune the 40% of channels with the smallest |γ| under one global threshold,
then fine-tune. :func:`prunable_batchnorms` finds the BNs whose channels can be removed without
touching a residual sum (the inner channels of ResNet basic/bottleneck blocks and the hidden
channels of MobileNetV2's inverted residuals), :func:`slim_model` removes them *physically*
(smaller convolutions, so the MACs really drop) and :func:`apply_widths` rebuilds a slimmed
model from its recorded widths so that its safetensors weights load again. They are registered
with the method as its :class:`~._api.BackboneSlimming` (:data:`NETWORK_SLIMMING`), which
:func:`split_infer.training.learned.slim_backbone` runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from split_infer.codecs.learned._api import (
    BackboneSlimming,
    LearnedBottleneck,
    conv_out,
    reduction_plan,
    register_method,
    transpose_output_padding,
)

__all__ = [
    "NETWORK_SLIMMING",
    "BBNetBottleneck",
    "PrunableGroup",
    "TanhQuantize",
    "apply_widths",
    "bbnet",
    "bn_l1_penalty",
    "load_slimmed_weights",
    "prunable_batchnorms",
    "save_slimmed_weights",
    "slim_model",
    "slimming_masks",
    "tanh_quantize",
]


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def tanh_quantize(v: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Quantize-dequantize ``v`` ∈ [-1, 1] to ``2**bits`` levels (BBNet eq. 4), identity
    gradient; equals ``tanhq:bits=n`` decode(encode(v)) exactly in float32."""
    half = float((1 << bits) - 1) / 2
    q = _RoundSTE.apply((v.clamp(-1.0, 1.0) + 1.0) * half)
    return q * (1.0 / half) - 1.0


class TanhQuantize(nn.Module):
    """:func:`tanh_quantize` as a module (a no-op in eval/export: the wire stage does it)."""

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return tanh_quantize(v, self.bits)


class BBNetBottleneck(LearnedBottleneck):
    """The compression layer; in the training loop the wire's quantizer is :class:`TanhQuantize`
    (bit-identical to the ``tanhq`` stage, nothing else of the wire codec changes values)."""

    def training_transmit(self, in_loop: bool) -> nn.Module | None:
        return TanhQuantize(self.options["bits"]) if in_loop else None


# ------------------------------------------------------------------------------ slimming


@dataclass
class PrunableGroup:
    """Channels that can be removed together: ``bn`` ranks them (network slimming uses its
    |γ|); ``producers`` compute them (output channels), ``followers`` see them (BN, depthwise
    conv) and ``consumer`` reads them (input channels)."""

    name: str
    bn: nn.BatchNorm2d
    producers: list[tuple[nn.Module, str]]  # (parent module, attribute) of convs to shrink
    followers: list[tuple[nn.Module, str]]  # per-channel modules: BNs, depthwise convs
    consumer: tuple[nn.Module, str]


def _iter_named(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    root = getattr(model, "net", model)
    yield from root.named_modules()


def prunable_batchnorms(model: nn.Module) -> list[PrunableGroup]:
    """The channel groups network slimming may prune without touching a residual sum.

    Handles ResNet basic blocks (``conv1/bn1 → conv2``), bottlenecks (``bn1`` and ``bn2``)
    and MobileNetV2 inverted residuals with an expansion layer (hidden channels).
    """
    from torchvision.models.mobilenetv2 import InvertedResidual as TVInvertedResidual
    from torchvision.models.resnet import Bottleneck

    groups: list[PrunableGroup] = []
    for name, module in _iter_named(model):
        if isinstance(module, Bottleneck):
            groups.append(PrunableGroup(f"{name}.bn1", module.bn1, [(module, "conv1")],
                                        [(module, "bn1")], (module, "conv2")))
            groups.append(PrunableGroup(f"{name}.bn2", module.bn2, [(module, "conv2")],
                                        [(module, "bn2")], (module, "conv3")))
        elif all(hasattr(module, a) for a in ("conv1", "bn1", "conv2", "bn2")) and \
                not hasattr(module, "conv3") and isinstance(module.conv1, nn.Conv2d):
            groups.append(PrunableGroup(f"{name}.bn1", module.bn1, [(module, "conv1")],
                                        [(module, "bn1")], (module, "conv2")))
        elif isinstance(module, TVInvertedResidual) and len(module.conv) == 4:
            expand, dw, project = module.conv[0], module.conv[1], module.conv
            groups.append(PrunableGroup(
                f"{name}.conv.0.1", expand[1], [(expand, "0")],
                [(expand, "1"), (dw, "0"), (dw, "1")], (project, "2")))
    return groups


def bn_l1_penalty(groups: list[PrunableGroup]) -> torch.Tensor:
    """Σ|γ| over the prunable BNs (the sparsity term of BBNet eq. 1, g(γ) = |γ|)."""
    return sum(g.bn.weight.abs().sum() for g in groups)


def slimming_masks(groups: list[PrunableGroup], fraction: float = 0.4) -> dict[str, torch.Tensor]:
    """Boolean keep-masks per group: one global threshold removes ``fraction`` of all prunable
    channels by smallest |γ| (§3.1.3); every group keeps at least one channel."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    scales = torch.cat([g.bn.weight.detach().abs().flatten() for g in groups])
    count = round(fraction * scales.numel())
    masks = {}
    if count == 0:
        return {g.name: torch.ones(g.bn.num_features, dtype=torch.bool) for g in groups}
    order = torch.argsort(scales, stable=True)
    pruned = torch.zeros(scales.numel(), dtype=torch.bool)
    pruned[order[:count]] = True
    start = 0
    for g in groups:
        n = g.bn.num_features
        keep = ~pruned[start:start + n]
        if not keep.any():
            keep[int(torch.argmax(g.bn.weight.detach().abs()))] = True
        masks[g.name] = keep
        start += n
    return masks


def _shrink_conv(conv: nn.Conv2d, keep: torch.Tensor, dim: str) -> nn.Conv2d:
    idx = torch.nonzero(keep).flatten()
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    cin = conv.in_channels if dim == "out" and not depthwise else len(idx)
    cout = len(idx) if dim == "out" or depthwise else conv.out_channels
    new = nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    groups=len(idx) if depthwise else conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        if depthwise or dim == "out":
            new.weight.copy_(conv.weight[idx])
            if conv.bias is not None:
                new.bias.copy_(conv.bias[idx])
        else:
            new.weight.copy_(conv.weight[:, idx])
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def _shrink_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    idx = torch.nonzero(keep).flatten()
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    with torch.no_grad():
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, attr).copy_(getattr(bn, attr)[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _replace(parent: nn.Module, attr: str, fn) -> None:
    child = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    # Fresh modules start in training mode; a BN in an eval-mode model must stay in eval.
    new = fn(child).train(child.training)
    if attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def slim_model(model: nn.Module, fraction: float = 0.4) -> dict[str, int]:
    """Prune ``fraction`` of the prunable channels by |γ| in place; returns the new widths.

    The model's blocks are modified in place (shared with its head/tail views), so the
    forward pass afterwards is the slimmed network's.
    """
    groups = prunable_batchnorms(model)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no prunable BatchNorm channels")
    masks = slimming_masks(groups, fraction)
    return _apply_masks(groups, masks)


def _apply_masks(groups: list[PrunableGroup], masks: dict[str, torch.Tensor]) -> dict[str, int]:
    widths = {}
    for g in groups:
        keep = masks[g.name]
        for parent, attr in g.producers:
            _replace(parent, attr, lambda m, k=keep: _shrink_conv(m, k, "out"))
        for parent, attr in g.followers:
            _replace(parent, attr, lambda m, k=keep: _shrink_bn(m, k)
                     if isinstance(m, nn.BatchNorm2d) else _shrink_conv(m, k, "out"))
        _replace(g.consumer[0], g.consumer[1], lambda m, k=keep: _shrink_conv(m, k, "in"))
        widths[g.name] = int(keep.sum())
    return widths


def apply_widths(model: nn.Module, widths: dict[str, int]) -> None:
    """Give ``model`` the slimmed shape ``widths`` (group name → kept channels) so a slimmed
    checkpoint loads into it; the values are placeholders until the weights are loaded."""
    groups = {g.name: g for g in prunable_batchnorms(model)}
    unknown = set(widths) - set(groups)
    if unknown:
        raise ValueError(f"widths name unknown prunable groups {sorted(unknown)}")
    masks = {}
    for name, g in groups.items():
        keep = torch.zeros(g.bn.num_features, dtype=torch.bool)
        keep[: widths.get(name, g.bn.num_features)] = True
        masks[name] = keep
    _apply_masks(list(groups.values()), masks)


def save_slimmed_weights(model: nn.Module, widths: dict[str, int], path: str | Path) -> None:
    """Safetensors of a slimmed model; its widths go into the file's metadata."""
    from safetensors.torch import save_file

    net = getattr(model, "net", model)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata={"model": getattr(model, "model_name", ""),
                                            "slimming_widths": json.dumps(widths)})


def load_slimmed_weights(model: nn.Module, source: str | Path | bytes) -> dict[str, int]:
    """Reshape ``model`` to the widths stored in ``source`` (a safetensors file, or its bytes)
    and load it."""
    from split_infer.models import load_weights, safetensors_metadata

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    widths = json.loads(safetensors_metadata(data).get("slimming_widths", "{}"))
    if widths:
        apply_widths(model, widths)
    load_weights(model, data)
    return widths


#: Network slimming (§3.1) as the method's backbone hook.
NETWORK_SLIMMING = BackboneSlimming(groups=prunable_batchnorms, penalty=bn_l1_penalty,
                                    prune=slim_model, apply_widths=apply_widths,
                                    save_weights=save_slimmed_weights)


# -------------------------------------------------------------------------- registration


@register_method(
    "bbnet",
    paper="Zhou et al., BBNet, Sensors 2021 (§3.2)",
    description="compression layer conv + BN + tanh, 8-bit fixed-range quantization with no "
                "min/max on the wire, recovery conv + BN + ReLU",
    default_ratios=(2, 4, 8, 16, 32, 64),
    wire_codec="tanhq:bits=8+raw",
    codec_in_loop=True,
    slimming=NETWORK_SLIMMING,
)
def bbnet(feature_shape: tuple[int, int, int], ratio: float | None, *, wire_codec: str,
          spatial: int | str = "auto", nonnegative: bool = True, channels: int | None = None,
          **_: Any) -> LearnedBottleneck:
    """Compression layer for ``feature_shape``: one strided conv to (c', ⌈H/s⌉, ⌈W/s⌉) with
    BN + tanh, and the mirrored recovery unit; (c', s) from ``ratio`` via
    :func:`~._api.reduction_plan` unless ``channels`` is given."""
    c, h, w = feature_shape
    if channels is not None:
        reduced, s = int(channels), (1 if spatial == "auto" else int(spatial))
    else:
        reduced, s = reduction_plan(feature_shape, ratio or 4.0, spatial)
    kernel = 1 if s == 1 else 3
    pad = kernel // 2
    encoder = nn.Sequential(nn.Conv2d(c, reduced, kernel, s, pad, bias=False),
                            nn.BatchNorm2d(reduced), nn.Tanh())
    hs, ws = conv_out(h, kernel, s, pad), conv_out(w, kernel, s, pad)
    if s == 1:
        restore: nn.Module = nn.Conv2d(reduced, c, 1, bias=False)
    else:
        output_padding = (transpose_output_padding(hs, h, kernel, s, pad),
                          transpose_output_padding(ws, w, kernel, s, pad))
        restore = nn.ConvTranspose2d(reduced, c, kernel, s, pad, output_padding=output_padding,
                                     bias=False)
    decoder = nn.Sequential(restore, nn.BatchNorm2d(c),
                            nn.ReLU() if nonnegative else nn.Identity())
    bits = _bits_of(wire_codec)
    return BBNetBottleneck("bbnet", feature_shape, ratio or 0.0, encoder, decoder, wire_codec,
                           {"channels": reduced, "spatial": s, "bits": bits,
                            "nonnegative": nonnegative})


def _bits_of(spec: str) -> int:
    from split_infer.codecs._api import parse_spec

    tname, tparams, _, _ = parse_spec(spec)
    if tname != "tanhq":
        raise ValueError(f"bbnet sends tanh outputs; its wire codec must be tanhq, got {spec!r}")
    return int(tparams["bits"])
