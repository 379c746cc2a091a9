"""torchvision ImageNet backbones with block-boundary split points.

The architectures are torchvision's own, built without downloading anything; weights come
from a safetensors file with torchvision's ``state_dict`` keys (see ``split-infer
convert-weights``).
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tv

from split_infer.models._api import SplittableModel, register_model
from split_infer.models.cifar import mobilenet_v2_blocks, resnet_blocks

IMAGENET_SHAPE = (3, 224, 224)


def _torchvision_resnet(name: str, net: tv.ResNet, num_classes: int) -> SplittableModel:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    blocks = resnet_blocks(net, stem, ["layer1", "layer2", "layer3", "layer4"])
    return SplittableModel(name, net, blocks, IMAGENET_SHAPE, num_classes)


@register_model(
    "mobilenet_v2", input_shape=IMAGENET_SHAPE, num_classes=1000, family="imagenet",
    description="torchvision MobileNetV2 (ImageNet, 224×224)",
)
def mobilenet_v2(num_classes: int = 1000) -> SplittableModel:
    net = tv.mobilenet_v2(weights=None, num_classes=num_classes)
    return SplittableModel(
        "mobilenet_v2", net, mobilenet_v2_blocks(net), IMAGENET_SHAPE, num_classes
    )


@register_model(
    "resnet18", input_shape=IMAGENET_SHAPE, num_classes=1000, family="imagenet",
    description="torchvision ResNet-18 (ImageNet, 224×224)",
)
def resnet18(num_classes: int = 1000) -> SplittableModel:
    return _torchvision_resnet("resnet18", tv.resnet18(weights=None, num_classes=num_classes),
                               num_classes)


@register_model(
    "resnet50", input_shape=IMAGENET_SHAPE, num_classes=1000, family="imagenet",
    description="torchvision ResNet-50 (ImageNet, 224×224)",
)
def resnet50(num_classes: int = 1000) -> SplittableModel:
    return _torchvision_resnet("resnet50", tv.resnet50(weights=None, num_classes=num_classes),
                               num_classes)
