"""Hu & Krishnamachari's AE compressors A_γ× (Fast and Accurate Streaming CNN Inference via
Communication Compression on the Edge, 2020, §IV-C and Table I).

Encoder and decoder are stacks of MobileNetV2 *inverted-residual* layers: 1×1 expansion (ratio
t, skipped when t = 1) → 3×3 depthwise conv → 1×1 linear projection, each conv with BN and the
first two with ReLU6; a residual connection when shape is kept. The decoder uses depthwise
*transposed* convolutions; stride 2 shrinks (encoder) or expands (decoder) H and W. Table I,
with output channels relative to the input's C::

    γ   encoder: kernel, channels, t, stride      decoder: kernel, channels, t, stride
    2   3, 2×, 1, 2                                3, 1×, 0.5, 2
    4   3→3, 1×→1×, 1→1, 1→2                       3→3, 1×→1×, 1→1, 2→1
    8   3→3, 2×→2×, 1→1, 2→2                       3→3, 1×→1×, 0.5→1, 2→2

γ = C·H·W / size(code), so the code is exactly 1/γ of the features when H and W divide by the
strides (otherwise ceil division makes it slightly larger). The AE is inserted at the split and
fine-tuned end to end with cross-entropy only (§IV-C c); the wire carries the code as
``float16`` (the paper sends the AE output as is; float16 halves the bytes at negligible error,
which is where we go further). When the backbone's features are non-negative (ResNet block
outputs end in ReLU) a final ReLU is added to the decoder; MobileNetV2's features are linear
and get none, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from split_infer.codecs.learned._api import (
    LearnedBottleneck,
    conv_out,
    register_method,
    transpose_output_padding,
)

__all__ = ["HU_TABLE_I", "InvertedResidual", "InvertedResidualTranspose", "hu_ae"]

#: Table I: per γ, (kernel, output channels × C, expansion t, stride) for each layer.
HU_TABLE_I: dict[int, dict[str, list[tuple[int, float, float, int]]]] = {
    2: {"encoder": [(3, 2, 1, 2)], "decoder": [(3, 1, 0.5, 2)]},
    4: {"encoder": [(3, 1, 1, 1), (3, 1, 1, 2)], "decoder": [(3, 1, 1, 2), (3, 1, 1, 1)]},
    8: {"encoder": [(3, 2, 1, 2), (3, 2, 1, 2)], "decoder": [(3, 1, 0.5, 2), (3, 1, 1, 2)]},
}


def _hidden(channels: int, t: float) -> int:
    return max(1, round(channels * t))


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: [1×1 expand] → 3×3 depthwise (stride) → 1×1 project."""

    def __init__(self, cin: int, cout: int, t: float, stride: int, kernel: int = 3) -> None:
        super().__init__()
        hidden = _hidden(cin, t)
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden,
                             bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class InvertedResidualTranspose(nn.Module):
    """The decoder's inverted residual: the depthwise conv is transposed (upsamples)."""

    def __init__(self, cin: int, cout: int, t: float, stride: int, in_size: tuple[int, int],
                 out_size: tuple[int, int], kernel: int = 3) -> None:
        super().__init__()
        hidden = _hidden(cin, t)
        pad = kernel // 2
        output_padding = tuple(transpose_output_padding(i, o, kernel, stride, pad)
                               for i, o in zip(in_size, out_size))
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.ConvTranspose2d(hidden, hidden, kernel, stride, pad,
                                      output_padding=output_padding, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


@register_method(
    "hu_ae",
    paper="Hu & Krishnamachari 2020 (§IV-C, Table I)",
    description="inverted-residual AE with depthwise (transposed) convs, γ = 2/4/8, "
                "fine-tuned end to end with cross-entropy",
    default_ratios=(2, 4, 8),
    supported_ratios=(2, 4, 8),
    wire_codec="float16",
)
def hu_ae(feature_shape: tuple[int, int, int], ratio: float | None, *, wire_codec: str,
          nonnegative: bool = True, **_: Any) -> LearnedBottleneck:
    """A_γ× of Table I for ``feature_shape`` and γ = ``ratio`` ∈ {2, 4, 8}."""
    gamma = int(ratio or 2)
    c, h, w = feature_shape
    table = HU_TABLE_I[gamma]
    encoder: list[nn.Module] = []
    size, cin = (h, w), c
    # Input size of every strided encoder layer: the decoder's strided layers restore them in
    # reverse order, so odd sizes (7 → 4 → 7) come back exactly.
    restore: list[tuple[int, int]] = []
    for kernel, mult, t, stride in table["encoder"]:
        cout = max(1, round(c * mult))
        encoder.append(InvertedResidual(cin, cout, t, stride, kernel))
        if stride > 1:
            restore.append(size)
        size = tuple(conv_out(d, kernel, stride, kernel // 2) for d in size)
        cin = cout
    decoder: list[nn.Module] = []
    for kernel, mult, t, stride in table["decoder"]:
        cout = max(1, round(c * mult))
        if stride > 1:
            target = restore.pop()
            decoder.append(InvertedResidualTranspose(cin, cout, t, stride, size, target, kernel))
            size = target
        else:
            decoder.append(InvertedResidual(cin, cout, t, 1, kernel))
        cin = cout
    if nonnegative:
        decoder.append(nn.ReLU())
    return LearnedBottleneck("hu_ae", feature_shape, float(gamma), nn.Sequential(*encoder),
                             nn.Sequential(*decoder), wire_codec,
                             {"gamma": gamma, "nonnegative": nonnegative})
