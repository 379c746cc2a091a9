"""Model registry, split points, head/tail equivalence and safetensors weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock as TvBasicBlock
from torchvision.models.resnet import Bottleneck

from split_infer.models import (
    SplitPoint,
    get_model,
    get_model_spec,
    list_models,
    load_weights,
    register_model,
    save_weights,
    split,
)
from split_infer.models.cifar import BasicBlock as CifarBasicBlock
from split_infer.models.efficientnet_lite import MBConv

RESIDUAL = (CifarBasicBlock, TvBasicBlock, Bottleneck, InvertedResidual, MBConv)

# ImageNet backbones are convolutional up to adaptive pooling, so a small image exercises
# every layer at a fraction of the cost of 224×224.
SMALL_IMAGENET_SHAPE = (3, 64, 64)

EXPECTED_SPLITS = {
    "resnet8_cifar": 1 + 3,
    "resnet20_cifar": 1 + 9,
    "resnet56_cifar": 1 + 27,
    "resnet18": 1 + 8,
    "resnet50": 1 + 16,
    "mobilenet_v2": 19,
    "mobilenet_v2_cifar": 19,
    "mobilenet_v2_x0_5_cifar": 19,
    "efficientnet_lite0": 1 + 16 + 1,
}


@pytest.fixture(autouse=True)
def _one_thread():
    # The tests share two cores with other work; oversubscribed intra-op threads make these
    # small forward passes several times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def input_shape_for(name: str) -> tuple[int, int, int]:
    spec = get_model_spec(name)
    return SMALL_IMAGENET_SHAPE if spec.family == "imagenet" else spec.input_shape


def scramble(model: nn.Module, seed: int) -> nn.Module:
    """Give every conv/linear fan-in-scaled random weights and every BatchNorm random
    statistics and affine parameters.

    The default inits leave BatchNorm an identity in eval mode (so eval/train confusion would
    go unnoticed) and shrink MobileNetV2's activations to ~1e-9 (its depthwise convs use a
    fan-out init), which would make any tolerance meaningless.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def blocks_of(model) -> list[nn.Module]:
    head, tail = model.head_tail(model.split_points()[-1])
    return [*head.children(), *tail.children()]


# ------------------------------------------------------------------------- registry


def test_registry_lists_every_family():
    names = list_models()
    assert set(names) == set(EXPECTED_SPLITS)
    cifar, imagenet = list_models("cifar"), list_models("imagenet")
    assert set(cifar) | set(imagenet) == set(names)
    assert not set(cifar) & set(imagenet)
    assert list_models("no-such-family") == []


def test_unknown_model_error_lists_valid_names():
    with pytest.raises(KeyError) as info:
        get_model("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in list_models():
        assert name in message


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_model(
            "resnet8_cifar", input_shape=(3, 32, 32), num_classes=10, family="cifar",
            description="duplicate",
        )(lambda num_classes=10: None)
    assert get_model_spec("resnet8_cifar").description.startswith("ResNet-8")


def test_get_model_defaults_and_num_classes_override():
    model = get_model("resnet8_cifar")
    assert not model.training
    assert model.num_classes == 10
    assert model.input_shape == (3, 32, 32)
    custom = get_model("mobilenet_v2_x0_5_cifar", num_classes=7)
    assert custom.num_classes == 7
    with torch.no_grad():
        assert custom(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("resnet8_cifar", num_classes=0)


# --------------------------------------------------------------------- split points


@pytest.mark.parametrize("name", sorted(EXPECTED_SPLITS))
def test_split_points_are_block_boundaries(name):
    model = get_model(name)
    points = model.split_points()
    assert len(points) == EXPECTED_SPLITS[name]
    assert [p.index for p in points] == list(range(1, len(points) + 1))
    assert len({p.name for p in points}) == len(points)
    assert points[0].name in ("stem", "features.0")
    assert "classifier" not in {p.name for p in points}

    blocks = blocks_of(model)
    assert len(blocks) == len(points) + 1
    # Residual blocks are kept whole: each lies inside exactly one block, never across a cut.
    residual = [m for m in model.net.modules() if isinstance(m, RESIDUAL)]
    assert residual
    for module in residual:
        owners = [b for b in blocks if any(m is module for m in b.modules())]
        assert len(owners) == 1, f"{type(module).__name__} is split across blocks"
    # Together the blocks hold every parameter of the upstream network exactly once.
    block_params = [id(p) for b in blocks for p in b.parameters()]
    assert sorted(block_params) == sorted(id(p) for p in model.net.parameters())


def test_split_point_resolution():
    model = get_model("resnet8_cifar")
    points = model.split_points()
    assert [p.name for p in points] == ["stem", "layer1.0", "layer2.0", "layer3.0"]
    assert model.split_point(2) == SplitPoint(2, "layer1.0")
    assert model.split_point("2") == SplitPoint(2, "layer1.0")
    assert model.split_point(np.int64(3)).name == "layer2.0"
    assert model.split_point("layer3.0").index == 4
    assert model.split_point(points[0]) == points[0]
    head, tail = split(model, "layer2.0")
    assert len(head) == 3 and len(tail) == 2


@pytest.mark.parametrize("bad", [0, 5, -1, "-1", "layer4.0", "classifier", ""])
def test_invalid_split_points_raise_key_error(bad):
    model = get_model("resnet8_cifar")
    with pytest.raises(KeyError, match="resnet8_cifar has no split point"):
        model.split_point(bad)


@pytest.mark.parametrize("bad", [2.0, True])
def test_non_integer_split_points_raise_type_error(bad):
    with pytest.raises(TypeError):
        get_model("resnet8_cifar").split_point(bad)


def test_split_point_of_another_model_is_rejected():
    resnet8, resnet20 = get_model("resnet8_cifar"), get_model("resnet20_cifar")
    foreign = resnet20.split_point(3)  # layer1.1, while resnet8's index 3 is layer2.0
    with pytest.raises(KeyError, match=r"layer1\.1"):
        resnet8.split_point(foreign)


def test_head_tail_follow_the_model_mode():
    model = get_model("resnet8_cifar")
    model.train()
    head, tail = split(model, 2)
    assert all(m.training for m in (*head.modules(), *tail.modules()))
    model.eval()
    head, tail = split(model, 2)
    assert not any(m.training for m in (*head.modules(), *tail.modules()))
    assert not any(m.training for m in model.modules())


def test_split_leaves_deliberately_mixed_modes_alone():
    model = get_model("resnet8_cifar").train()
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in frozen:
        bn.eval()  # BatchNorm frozen while the rest trains
    head, tail = split(model, "layer1.0")
    assert head.training and tail.training
    assert not any(bn.training for bn in frozen)
    assert all(m.training for m in model.modules() if not isinstance(m, nn.BatchNorm2d))


# ----------------------------------------------------------------- head/tail == net


@pytest.mark.parametrize("name", sorted(EXPECTED_SPLITS))
def test_head_tail_equal_upstream_forward_at_every_split(name):
    model = scramble(get_model(name), seed=1)
    x = torch.randn((2, *input_shape_for(name)), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # The reference comes from the upstream module itself, before any split exists.
        reference = model.net(x)
        scale = reference.abs().max().item()
        assert scale > 1e-3
        for point in model.split_points():
            head, tail = split(model, point)
            activation = head(x)
            assert activation.shape[0] == 2 and activation.dim() == 4
            out = tail(activation)
            # Same kernels in the same order: bit-identical on CPU today; the tolerance only
            # allows for a backend that reassociates differently per call site.
            assert torch.allclose(out, reference, rtol=1e-6, atol=1e-6 * scale), (
                f"{name} split at {point}: max error {(out - reference).abs().max().item()}"
            )
            assert torch.allclose(model(x), reference, rtol=1e-6, atol=1e-6 * scale)


# -------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name", ["resnet8_cifar", "mobilenet_v2_x0_5_cifar"])
def test_safetensors_round_trip_gives_identical_outputs(name, tmp_path):
    source = scramble(get_model(name), seed=3)
    path = tmp_path / f"{name}.safetensors"
    save_weights(source, path)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    fresh = get_model(name)
    with torch.no_grad():
        expected = source(x)
        assert not torch.equal(fresh(x), expected)
        loaded = get_model(name, weights=path)
        assert torch.equal(loaded(x), expected)
        load_weights(fresh, path)
        assert torch.equal(fresh(x), expected)
    state, loaded_state = source.net.state_dict(), loaded.net.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)


def test_load_rejects_non_safetensors_paths(tmp_path):
    pickle_path = tmp_path / "weights.pt"
    torch.save(get_model("resnet8_cifar").net.state_dict(), pickle_path)
    with pytest.raises(ValueError, match="safetensors"):
        load_weights(get_model("resnet8_cifar"), pickle_path)


def test_load_rejects_missing_and_corrupt_files(tmp_path):
    model = get_model("resnet8_cifar")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_weights(model, tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_weights(model, corrupt)


def test_load_rejects_weights_of_another_architecture(tmp_path):
    path = tmp_path / "resnet8.safetensors"
    save_weights(get_model("resnet8_cifar"), path)
    with pytest.raises(ValueError, match=r"does not fit resnet20_cifar: \d+ missing keys"):
        load_weights(get_model("resnet20_cifar"), path)
    with pytest.raises(ValueError, match="unexpected keys"):
        load_weights(get_model("mobilenet_v2_x0_5_cifar"), path)


def test_load_rejects_shape_mismatch_without_touching_the_model(tmp_path):
    path = tmp_path / "ten_classes.safetensors"
    save_weights(scramble(get_model("resnet8_cifar"), seed=5), path)
    target = get_model("resnet8_cifar", num_classes=5)
    before = {k: v.clone() for k, v in target.net.state_dict().items()}
    expected = r"2 shape mismatches \['fc\.weight: file \(10, 64\) vs model \(5, 64\)"
    with pytest.raises(ValueError, match=expected):
        load_weights(target, path)
    after = target.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
