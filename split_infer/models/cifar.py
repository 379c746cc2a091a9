"""CIFAR-style backbones for 32×32 input.

* ResNet-8/20/56 follow He et al. (2016) §4.2: three stages of 16/32/64 channels with
  ``n`` basic blocks each (depth = 6n + 2). Shortcuts that change shape use a 1×1
  convolution + BN (option B), which exports cleanly to ONNX.
* MobileNetV2 for CIFAR is torchvision's MobileNetV2 with the usual small-input changes
  (stride 1 in the stem and in the 24-channel stage), as in the Hu & Krishnamachari seed.
  Reusing torchvision keeps its ``state_dict`` layout.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import MobileNetV2

from split_infer.models._api import SplittableModel, register_model

CIFAR_SHAPE = (3, 32, 32)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_blocks(net: nn.Module, stem: nn.Module, stage_names: list[str]) -> list:
    """Blocks of a ResNet: stem, every residual block whole, then pool+classifier."""
    blocks: list[tuple[str, nn.Module]] = [("stem", stem)]
    for stage in stage_names:
        for i, block in enumerate(getattr(net, stage)):
            blocks.append((f"{stage}.{i}", block))
    blocks.append(("classifier", nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)))
    return blocks


def _cifar_resnet(name: str, n: int, num_classes: int) -> SplittableModel:
    net = CifarResNet(n, num_classes)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu)
    blocks = resnet_blocks(net, stem, ["layer1", "layer2", "layer3"])
    return SplittableModel(name, net, blocks, CIFAR_SHAPE, num_classes)


@register_model(
    "resnet8_cifar", input_shape=CIFAR_SHAPE, num_classes=10, family="cifar",
    description="ResNet-8 (He et al. CIFAR variant, 3×1 basic blocks)",
)
def resnet8_cifar(num_classes: int = 10) -> SplittableModel:
    return _cifar_resnet("resnet8_cifar", 1, num_classes)


@register_model(
    "resnet20_cifar", input_shape=CIFAR_SHAPE, num_classes=10, family="cifar",
    description="ResNet-20 (He et al. CIFAR variant, 3×3 basic blocks)",
)
def resnet20_cifar(num_classes: int = 10) -> SplittableModel:
    return _cifar_resnet("resnet20_cifar", 3, num_classes)


@register_model(
    "resnet56_cifar", input_shape=CIFAR_SHAPE, num_classes=10, family="cifar",
    description="ResNet-56 (He et al. CIFAR variant, 3×9 basic blocks)",
)
def resnet56_cifar(num_classes: int = 10) -> SplittableModel:
    return _cifar_resnet("resnet56_cifar", 9, num_classes)


# (expansion t, channels c, repeats n, stride s) — torchvision's table with the 24-channel
# stage at stride 1 so 32×32 input ends at 4×4, not 1×1.
CIFAR_MBV2_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def mobilenet_v2_blocks(net: MobileNetV2) -> list[tuple[str, nn.Module]]:
    """Blocks of torchvision's MobileNetV2: each ``features[i]`` whole, then the classifier."""
    blocks: list[tuple[str, nn.Module]] = [
        (f"features.{i}", layer) for i, layer in enumerate(net.features)
    ]
    blocks.append(
        ("classifier", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.classifier))
    )
    return blocks


def _cifar_mobilenet_v2(name: str, width_mult: float, num_classes: int) -> SplittableModel:
    net = MobileNetV2(
        num_classes=num_classes,
        width_mult=width_mult,
        inverted_residual_setting=CIFAR_MBV2_SETTING,
        dropout=0.2,
    )
    net.features[0][0].stride = (1, 1)
    return SplittableModel(name, net, mobilenet_v2_blocks(net), CIFAR_SHAPE, num_classes)


@register_model(
    "mobilenet_v2_cifar", input_shape=CIFAR_SHAPE, num_classes=10, family="cifar",
    description="MobileNetV2 ×1.0 for 32×32 input (stride-1 stem, as in Hu & Krishnamachari)",
)
def mobilenet_v2_cifar(num_classes: int = 10) -> SplittableModel:
    return _cifar_mobilenet_v2("mobilenet_v2_cifar", 1.0, num_classes)


@register_model(
    "mobilenet_v2_x0_5_cifar", input_shape=CIFAR_SHAPE, num_classes=10, family="cifar",
    description="MobileNetV2 ×0.5 for 32×32 input",
)
def mobilenet_v2_x0_5_cifar(num_classes: int = 10) -> SplittableModel:
    return _cifar_mobilenet_v2("mobilenet_v2_x0_5_cifar", 0.5, num_classes)
