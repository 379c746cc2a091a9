"""BottleNet's bottleneck unit (Eshratifar, Esmaili & Pedram, ISLPED 2019, §2.1, Fig. 2-3).

::

    edge:  x (C,H,W) ─▶ channel reduction: 1×1 conv C→c' + BN + ReLU
                     ─▶ spatial reduction: 3×3 conv stride s + BN + ReLU   (c', ⌈H/s⌉, ⌈W/s⌉)
                     ─▶ compressor: 8-bit quantizer + JPEG of the tiled channels (or rANS)
    cloud:           ─▶ decompressor
                     ─▶ spatial restoration: 3×3 transposed conv stride s + BN + ReLU
                     ─▶ channel restoration: 1×1 conv c'→C + BN + ReLU         (C, H, W)

The ReLUs raise the zero rate of the code, which the lossy compressor exploits (§2.1). The
compressor is trained *compression-aware*: the real quantizer + JPEG run in the forward pass
and act as the identity in the backward pass (§2.2, :class:`~.ste.CodecSTE`).

Where we go further than the paper:

* the quantizer is the package's calibrated ``quant`` stage (per-channel μ ± wσ clipping from
  calibration data, no per-frame min/max) instead of eq. (1)'s per-frame min/max;
* the channel reduction runs before the spatial one (the 1×1 conv then works on C channels and
  the strided conv on c' ≪ C, the cheaper order on the edge); the paper does not fix it;
* when the backbone's features can be negative (MobileNetV2's linear bottlenecks) the last
  restoration activation is dropped so the decoder can reproduce them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from split_infer.codecs.learned._api import (
    LearnedBottleneck,
    conv_out,
    reduction_plan,
    register_method,
    transpose_output_padding,
)

__all__ = ["bottlenet"]


def _conv_bn_relu(conv: nn.Module, channels: int, relu: bool = True) -> nn.Sequential:
    layers = [conv, nn.BatchNorm2d(channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@register_method(
    "bottlenet",
    paper="Eshratifar et al., BottleNet, ISLPED 2019 (§2.1-2.2)",
    description="learnable channel (1×1) + spatial (strided) reduction/restoration around a "
                "quantizer + JPEG, trained compression-aware",
    default_ratios=(2, 4, 8, 16, 32, 64),
    wire_codec="quant:bits=8,per=channel+jpeg:quality=90",
    codec_in_loop=True,
)
def bottlenet(feature_shape: tuple[int, int, int], ratio: float | None, *,
              wire_codec: str, spatial: int | str = "auto", nonnegative: bool = True,
              channels: int | None = None, **_: Any) -> LearnedBottleneck:
    """BottleNet unit for ``feature_shape``; ``ratio`` picks (c', s) via :func:`reduction_plan`
    unless ``channels`` (c') and an integer ``spatial`` (s) are given directly."""
    c, h, w = feature_shape
    if channels is not None:
        reduced, s = int(channels), (2 if spatial == "auto" else int(spatial))
    else:
        reduced, s = reduction_plan(feature_shape, ratio or 4.0, spatial)
    encoder = [_conv_bn_relu(nn.Conv2d(c, reduced, 1, bias=False), reduced)]
    decoder = []
    if s > 1:
        encoder.append(_conv_bn_relu(nn.Conv2d(reduced, reduced, 3, s, 1, bias=False), reduced))
        hs, ws = conv_out(h, 3, s, 1), conv_out(w, 3, s, 1)
        pad = (transpose_output_padding(hs, h, 3, s, 1), transpose_output_padding(ws, w, 3, s, 1))
        decoder.append(_conv_bn_relu(
            nn.ConvTranspose2d(reduced, reduced, 3, s, 1, output_padding=pad, bias=False),
            reduced))
    decoder.append(_conv_bn_relu(nn.Conv2d(reduced, c, 1, bias=False), c, relu=nonnegative))
    return LearnedBottleneck("bottlenet", feature_shape, ratio or 0.0, nn.Sequential(*encoder),
                             nn.Sequential(*decoder), wire_codec,
                             {"channels": reduced, "spatial": s, "nonnegative": nonnegative})
