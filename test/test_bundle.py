"""Bundles: building from a backbone, sha256 verification, refusal of tampered or unknown
files, and re-measurement from real wire frames."""

import json
import shutil

import numpy as np
import pytest

from split_infer.bundle import Bundle, BundleError
from split_infer.models import get_model, save_weights
from split_infer.pipeline.evaluate import evaluate_bundle, evaluate_client_only
from split_infer.tools.cli import main
from split_infer.training.baseline import build_baseline_bundle
from split_infer.training.datasets import default_cifar_zip, load_cifar10

pytestmark = pytest.mark.skipif(not default_cifar_zip().is_file(),
                                reason=f"CIFAR-10 zip not found at {default_cifar_zip()}")

CODECS = ["float32", "quant:bits=8,per=channel+zstd", "quant:bits=2,per=channel+rans"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    weights = root / "r8.safetensors"
    save_weights(get_model("resnet8_cifar"), weights)
    bundle = build_baseline_bundle("resnet8_cifar", root / "b", weights=weights,
                                   split_points=[2, "layer2.0"], codecs=CODECS,
                                   calibration_images=64, eval_images=60, profile_repeats=2,
                                   progress=False)
    return bundle


@pytest.fixture()
def copy(built, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(built.path, target)
    return target


def test_bundle_holds_measured_configurations(built):
    bundle = Bundle.load(built.path)
    assert bundle.split_points == [2, 3]
    assert len(bundle.configurations) == 2 * len(CODECS)
    for config in bundle.configurations:
        assert 0.0 <= config.accuracy <= 1.0
        assert config.bytes_per_frame > 0
        assert config.edge_ms and config.cloud_ms  # measured (a duration, not compared)
        # Parts are segments of the one tapped whole model: no backbone copy per split.
        assert config.edge_onnx == f"model[0:{config.split_point}]"
        assert config.cloud_onnx == f"model[{config.split_point}:]"
    by_codec = {c.codec.split(":")[0] + c.codec.split("+")[-1]: c for c in bundle.configurations
                if c.split_point == 2}
    # Fewer bits, fewer bytes; the ratio is the measured one.
    sizes = sorted(c.bytes_per_frame for c in by_codec.values())
    ratios = sorted((c.ratio for c in by_codec.values()), reverse=True)
    assert sizes[0] < sizes[-1] and ratios[0] > ratios[-1]
    manifest = bundle.manifest
    assert manifest["classes"][0] == "airplane"
    assert manifest["server_only"]["bytes_per_frame"] > 0
    assert set(manifest["files"]) >= {"weights/backbone.safetensors", "onnx/full.onnx"}
    assert [f for f in manifest["files"] if f.startswith("onnx/")] == ["onnx/full.onnx"]


def test_lossless_configuration_decides_like_the_unsplit_model(built):
    test = load_cifar10("test").subset(60, seed=1)
    float32 = [c for c in built.configurations if c.codec.startswith("float32")]
    assert len(float32) == 2
    rows = evaluate_bundle(built, test, float32, progress=False)
    unsplit = evaluate_client_only(built.file("onnx/full.onnx"), test)
    for row in rows:
        agree = np.mean(np.asarray(row["predictions"]) == np.asarray(unsplit["predictions"]))
        assert agree == 1.0, row["id"]


def test_eval_reproduces_the_manifest(built):
    test = load_cifar10("test").subset(60, seed=1)
    rows = {r["id"]: r for r in evaluate_bundle(built, test, progress=False)}
    for config in built.configurations:
        assert rows[config.id]["accuracy"] == pytest.approx(config.accuracy)
        assert rows[config.id]["bytes_per_frame"] == pytest.approx(config.bytes_per_frame)


def test_tampered_file_is_refused(copy):
    onnx = copy / "onnx" / "full.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"sha256 mismatch for onnx/full\.onnx"):
        Bundle.load(copy)


def test_unknown_file_is_refused(copy):
    (copy / "onnx" / "extra.onnx").write_bytes(b"not in the manifest")
    with pytest.raises(BundleError, match=r"unknown file onnx/extra\.onnx"):
        Bundle.load(copy)


def test_missing_listed_file_is_refused(copy):
    (copy / "weights" / "backbone.safetensors").unlink()
    with pytest.raises(BundleError, match="listed but missing"):
        Bundle.load(copy)


def test_manifest_paths_cannot_escape_the_bundle(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["../outside"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="must be relative and stay in the bundle"):
        Bundle.load(copy)


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ('{"format": "other/9"}', "format must be"),
])
def test_malformed_manifest_is_refused(copy, content, fragment):
    (copy / "manifest.json").write_text(content)
    with pytest.raises(BundleError, match=fragment):
        Bundle.load(copy)


def test_lookup_errors_name_the_valid_choices(built):
    with pytest.raises(BundleError, match="the bundle has"):
        built.configuration(2, 123.0)
    with pytest.raises(BundleError, match="split2_c0"):
        built.configuration_by_id("nope")


def test_cli_eval_and_refusals(built, copy, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(built.path), "--images", "20", "--config", "split2_c1",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["id"] for r in rows] == ["split2_c1"] and rows[0]["frames"] == 20
    (copy / "calibration" / "split2_c1.safetensors").write_bytes(b"x")
    assert main(["eval", str(copy)]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert main(["train", "resnet8_cifar", "--out", str(built.path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_evaluation_batches_shrink_with_the_input_size():
    """ONNX Runtime keeps each session's peak memory: 224-px bundles evaluate in small
    batches (a 27-configuration bundle at batch 200 ran out of 24 GB)."""
    import numpy as np

    from split_infer.data import ArrayDataset, Preprocessing
    from split_infer.pipeline.evaluate import default_batch_size

    def dataset(size):
        return ArrayDataset("x", np.zeros((1, *size, 3), np.uint8), np.zeros(1, np.int64), ["a"],
                            Preprocessing(size=size))

    assert default_batch_size(dataset((32, 32))) == 200
    assert default_batch_size(dataset((224, 224))) == 16
    assert default_batch_size(dataset((4096, 4096))) == 1
