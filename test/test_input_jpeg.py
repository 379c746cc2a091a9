"""Split point 0, "send the camera image": the ``jpeg_rgb`` byte stage, the input codec, the
empty edge part ``model[0:0]`` and a bundle configuration the edge can be switched to."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
from ros_fixtures import tiny_bundle_fixture  # noqa: F401 -- pytest fixture

from split_infer.adaptation.configurations import configuration_from_bundle
from split_infer.bundle import Bundle, BundleError, part_components
from split_infer.codecs import get_codec
from split_infer.data import ArrayDataset, CameraFrame, Preprocessing
from split_infer.errors import EncodeError, FrameError
from split_infer.pipeline.backends import OrtBackend
from split_infer.pipeline.edge import EdgePipeline
from split_infer.pipeline.engine import CloudEngine, EdgeEngine
from split_infer.pipeline.parts import PartLoader
from split_infer.tools.cli import main
from split_infer.tools.synthetic_bundle import CIFAR_CLASSES
from split_infer.training.input_jpeg import (
    add_input_jpeg_configuration,
    input_codec,
    input_configuration_id,
)


def smooth_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Photograph-like uint8 RGB images: colour gradients and a disc, no pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(0, 1, 3)
        image = np.stack([255 * (a * xx + (1 - a) * yy), 255 * (b * yy), 255 * c * (1 - xx)], -1)
        cy, cx, r = rng.uniform(0.2, 0.8, 3) * size / 2
        image[(yy * size - cy) ** 2 + (xx * size - cx) ** 2 < r ** 2] = rng.uniform(0, 255, 3)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def test_input_codec_symbols_are_the_pixels():
    recipe = Preprocessing(size=(16, 16))
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = np.stack([pixels, pixels.T, 255 - pixels], axis=-1)
    x = recipe.at_input_size()(image)[0]
    codec = input_codec(recipe, 90)
    symbols, _ = codec.tensor.encode(x)
    np.testing.assert_array_equal(symbols, image.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="quality"):
        input_codec(recipe, 0)


def test_jpeg_rgb_payload_is_the_colour_photograph():
    recipe = Preprocessing(size=(32, 32))
    image = smooth_images(1)[0]
    x = recipe.at_input_size()(image)[0]
    codec = input_codec(recipe, 95)
    encoded = codec.compress(x)
    # What travels is a viewable JPEG of the crop, in its colours (OpenCV decodes BGR).
    photo = cv2.imdecode(np.frombuffer(encoded.payload, np.uint8), cv2.IMREAD_COLOR)
    assert photo.shape == (32, 32, 3)
    assert np.abs(photo[..., ::-1].astype(int) - image).mean() < 4
    back = codec.decompress(encoded.payload, encoded.params, encoded.shape)
    step = float(codec.state_dict()["tensor.hi"][0] - codec.state_dict()["tensor.lo"][0]) / 256
    assert np.abs(back - x).mean() < 4 * step


def test_jpeg_rgb_refuses_other_shapes_and_foreign_payloads():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        get_codec("quant:bits=8+jpeg_rgb", shape=(4, 8, 8))
    codec = get_codec("quant:bits=8+jpeg_rgb")
    rgb = codec.compress(np.random.default_rng(0).random((3, 16, 16), np.float32))
    grey = get_codec("quant:bits=8+jpeg").compress(np.ones((1, 16, 16), np.float32))
    ok, progressive = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8),
                                   [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    for payload in (grey.payload, progressive.tobytes(), b"", b"\xff\xd8"):
        with pytest.raises(FrameError) as info:
            codec.decompress(payload, rgb.params, rgb.shape)
        assert info.value.reason == "corrupt_payload"
    with pytest.raises(FrameError) as info:
        codec.decompress(rgb.payload, rgb.params, (3, 16, 32))
    assert info.value.reason == "shape_mismatch"


# Beyond the thesis: at split point 0 the robot hands the crop's 8-bit pixels to the codec,
# which looks them up in per-channel tables instead of normalizing and quantizing floats. That
# is only allowed while it gives the same bytes, which these tests hold it to.
_NORMALIZATIONS = [((0.498, 0.498, 0.498), (0.502, 0.502, 0.502)),  # EfficientNet-Lite
                   ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))]  # CIFAR-10


def _photo_with_a_flat_channel(size: int, seed: int) -> np.ndarray:
    image = smooth_images(1, size, seed)[0].copy()
    image[..., 1] = 77  # one channel holds a single level: a degenerate dynamic range
    return image


@pytest.mark.parametrize("spec", [
    "quant:bits=8,w=1,per=channel+jpeg_rgb:quality=90",
    "quant:bits=8,per=tensor+jpeg_rgb:quality=95",
    "quant:bits=4,per=channel+jpeg_rgb:quality=75",
    "input", "calibrated_clipping"])
@pytest.mark.parametrize("mean, std", _NORMALIZATIONS)
def test_compress_image_gives_the_bytes_of_compress_on_the_normalized_pixels(spec, mean, std):
    recipe = Preprocessing((24, 40), mean, std)
    images = [smooth_images(1, 40, seed)[0][:24] for seed in range(3)]
    images.append(_photo_with_a_flat_channel(40, 4)[:24])
    if spec == "input":
        codec = input_codec(recipe, 90)
    elif spec == "calibrated_clipping":  # μ ± 1σ inside the range: pixels are clipped
        calibration = np.concatenate([recipe(image) for image in images])
        codec = get_codec("quant:bits=8,w=1,per=channel+jpeg_rgb").calibrate(calibration)
    else:
        codec = get_codec(spec)
    assert codec.encodes_images
    for image in images:
        for order, pixels in (("RGB", image), ("BGR", np.ascontiguousarray(image[..., ::-1]))):
            crop, got_order = recipe.input_crop(CameraFrame(pixels, order))
            assert got_order == order
            expected = codec.compress(recipe(CameraFrame(pixels, order))[0])
            assert codec.compress_image(crop, order, recipe.channel_values) == expected


def test_only_codecs_that_map_levels_into_an_image_encode_images():
    recipe = Preprocessing((8, 8))
    image = smooth_images(1, 8)[0]
    per_neuron = get_codec("quant:bits=8,per=neuron+jpeg_rgb").calibrate(recipe(image))
    for codec in (per_neuron, get_codec("quant:bits=8,per=channel+zstd")):
        assert not codec.encodes_images
        with pytest.raises(EncodeError, match="cannot encode images"):
            codec.compress_image(image, "RGB", recipe.channel_values)
    codec = get_codec("quant:bits=8,per=channel+jpeg_rgb")
    for bad, order in ((image.astype(np.float32), "RGB"), (image[..., 0], "RGB"),
                       (np.dstack([image, image[..., :1]]), "RGBA"), (image, "RGBA")):
        with pytest.raises(EncodeError, match="uint8"):
            codec.compress_image(bad, order, recipe.channel_values)


def test_the_crop_and_its_normalization_are_what_the_preprocessing_computes():
    levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None], (256, 1, 3))
    every_level = Preprocessing((16, 16), *_NORMALIZATIONS[1])(
        np.ascontiguousarray(levels.reshape(16, 16, 3)))  # pixel k holds level k
    recipe = Preprocessing((32, 32), *_NORMALIZATIONS[1])
    np.testing.assert_array_equal(recipe.channel_values, every_level[0].reshape(3, 256))
    image = smooth_images(1, 48)[0]
    frames = [image, CameraFrame(image, "RGB"),
              CameraFrame(np.ascontiguousarray(image[..., ::-1]), "BGR"),
              CameraFrame(np.dstack([image, np.full((48, 48, 1), 255, np.uint8)]), "RGBA"),
              CameraFrame(image[..., :1], "L")]
    for frame in frames:
        crop, order = recipe.input_crop(frame)
        np.testing.assert_array_equal(recipe.normalize_crop(crop, order), recipe(frame))
    assert recipe.input_crop(image.astype(np.float32)) is None
    assert recipe.input_crop(image[None]) is None


def test_the_empty_segment_is_only_the_input():
    assert part_components("model[0:0]") == [(0, 0)]
    for spec in ("model[3:3]", "model[4:2]"):
        with pytest.raises(BundleError, match="empty"):
            part_components(spec)


@pytest.fixture(scope="module")
def input_bundle(tiny_bundle, tmp_path_factory) -> Bundle:
    """The tiny bundle plus its input-JPEG configuration, measured on smooth images."""
    import shutil

    out = tmp_path_factory.mktemp("input_jpeg") / "bundle"
    shutil.copytree(tiny_bundle.path, out)
    images = smooth_images(24, seed=1)
    test = ArrayDataset("smooth", images, np.zeros(len(images), np.int64), CIFAR_CLASSES,
                        tiny_bundle.preprocessing.at_input_size())
    add_input_jpeg_configuration(out, 90, test=test, progress=False)
    return Bundle.load(out)


def test_the_input_configuration_is_measured_and_sends_the_image(input_bundle):
    config = input_bundle.configuration_by_id(input_configuration_id(90))
    assert (config.split_point, config.edge_onnx, config.cloud_onnx) == (0, "model[0:0]",
                                                                        "model[0:]")
    assert config.feature_shape == (3, 32, 32)
    # A 32x32 smooth image as JPEG is far smaller than 3x32x32 float32, and the ratio says so.
    assert 2 < config.ratio < 3 * 32 * 32 * 4 / 100
    assert config.bytes_per_frame and config.accuracy is not None
    assert config.edge_ms is not None and math.isfinite(config.edge_ms)  # timed (bench/: how fast)
    assert config.cloud_ms is None  # the tiny bundle has no profile of the whole model

    x = input_bundle.preprocessing(smooth_images(2, seed=5))
    for backend in ("onnxruntime", "torch"):
        edge_part = PartLoader(input_bundle, backend).edge(config)
        np.testing.assert_array_equal(edge_part(x[:1])[0], x[0])
    edge = EdgeEngine.from_bundle(input_bundle, [config])
    cloud = CloudEngine.from_bundle(input_bundle, [config])
    whole = OrtBackend(input_bundle.read(input_bundle.manifest["model"]["onnx"]))
    data = edge.encode(x[:1], seq=7, stamp_ns=1)
    frame, features = cloud.features(data)
    assert (frame.split_point, frame.seq) == (0, 7)
    assert np.abs(features - x[:1]).mean() < 0.05  # the image, to within JPEG's error
    _, logits = cloud.decode(data)  # the whole model on the decoded image
    np.testing.assert_allclose(logits, whole(features), rtol=1e-5, atol=1e-5)


def test_the_edge_switches_to_the_input_configuration(input_bundle):
    config = input_bundle.configuration_by_id(input_configuration_id(90))
    others = [c for c in input_bundle.configurations if c.split_point > 0][:1]
    edge = EdgePipeline(input_bundle, [*others, config], others[0].key, clock_ns=lambda: 42)
    assert edge.reconfigure(split_point=0, ratio=config.ratio)
    image = smooth_images(1, 64, seed=9)[0]
    outcome = edge.process(image)
    assert outcome.kind == "sent" and outcome.config.split_point == 0
    # The pixels went straight into the codec, and the frame is byte for byte the one the
    # float path (normalize, the empty edge part, quantize) makes.
    assert outcome.config.sends_input and "model" not in edge.times.snapshot()
    float_path = EdgeEngine.from_bundle(input_bundle, [config])
    for seq, frame in enumerate((image, CameraFrame(np.ascontiguousarray(image[..., ::-1]),
                                                    "BGR")), start=outcome.seq):
        if seq > outcome.seq:
            outcome = edge.process(frame)
        features = float_path.features(input_bundle.preprocessing(frame))
        assert outcome.data == float_path.pack_features(outcome.config, features, seq, 42)
    assert not EdgeEngine.from_bundle(input_bundle, others).active.sends_input
    # The scheduler sees it as the server-only strategy it is, once its cloud time is known
    # (the tiny bundle has no profile of the whole model to take it from).
    plan = configuration_from_bundle(replace(config, cloud_ms=3.0))
    assert (plan.kind, plan.split_point, plan.ratio) == ("server_only", 0, config.key[1])
    with pytest.raises(ValueError, match="cloud_ms"):
        configuration_from_bundle(config)


def test_cli_adds_nothing_to_a_packed_bundle(tiny_bundle, tmp_path, capsys):
    import shutil

    from split_infer.training.assemble import ASSEMBLY

    packed = tmp_path / "packed"  # as `bundle pack` leaves it: the tapped model regenerates
    shutil.copytree(tiny_bundle.path, packed)
    (packed / "onnx" / "full.onnx").unlink()
    (packed / ASSEMBLY).write_text(json.dumps({"model": "resnet8_cifar",
                                               "derived": {"onnx/full.onnx": "tapped_onnx"}}))
    manifest = json.loads((packed / "manifest.json").read_text())
    assert main(["bundle", "add-input-jpeg", str(packed)]) == 2
    assert "assemble it first" in capsys.readouterr().err
    assert json.loads((packed / "manifest.json").read_text()) == manifest
    assert main(["bundle", "add-input-jpeg", str(tmp_path / "none")]) == 2
    assert "not a bundle" in capsys.readouterr().err
