"""The split-infer command: listings, user errors, and the offline main job end to end."""

import json
import subprocess
import sys

import pytest

from split_infer.models import get_model, save_weights
from split_infer.tools.cli import main
from split_infer.training.datasets import default_cifar_zip

needs_cifar = pytest.mark.skipif(not default_cifar_zip().is_file(),
                                 reason=f"CIFAR-10 zip not found at {default_cifar_zip()}")


def test_models_lists_every_family(capsys):
    assert main(["models", "-v"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet20_cifar", "mobilenet_v2", "resnet50", "mobilenet_v2_x0_5_cifar"):
        assert name in out
    assert "split points: 1:stem" in out


def test_codecs_listing_mentions_every_byte_stage(capsys):
    assert main(["codecs"]) == 0
    out = capsys.readouterr().out
    for stage in ("float16", "quant", "zstd", "lz4", "rans", "png", "jpeg"):
        assert stage in out


@pytest.mark.parametrize("argv, fragment", [
    (["profile", "no_such_model"], "unknown model"),
    (["demo", "--offline", "--codec", "quant:bits=99"], "bits"),
    (["demo", "--offline", "--split", "nowhere", "--weights", "missing.safetensors"],
     "not found"),
    (["demo", "--bundle", "/nonexistent"], "not a bundle"),
])
def test_user_errors_exit_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_runs_without_traceback():
    result = subprocess.run([sys.executable, "-m", "split_infer.tools.cli", "profile", "nope"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@needs_cifar
@pytest.mark.parametrize("codec", ["float32", "quant:bits=8+zstd"])
def test_offline_demo_reports_accuracy_and_bytes(tmp_path, codec):
    weights = tmp_path / "r8.safetensors"
    save_weights(get_model("resnet8_cifar"), weights)
    out = tmp_path / "demo"
    code = main(["demo", "--offline", "--model", "resnet8_cifar", "--weights", str(weights),
                 "--split", "2", "--codec", codec, "--images", "20", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    assert summary["frames"] == 20 and len(report["frame_bytes"]) == 20
    if codec == "float32":
        # Lossless features: the split pipeline decides exactly like the unsplit model.
        assert summary["agreement_with_unsplit_percent"] == 100.0
        assert summary["bytes_per_frame_mean"] > summary["float32_feature_bytes"]
    else:
        assert summary["bytes_per_frame_mean"] < summary["float32_feature_bytes"] / 3


@needs_cifar
def test_train_backbone_learns_and_resumes(tmp_path, capsys):
    from split_infer.models import load_weights
    from split_infer.training.backbone import evaluate_top1
    from split_infer.training.datasets import load_cifar10

    out = tmp_path / "r8.safetensors"
    args = ["train-backbone", "resnet8_cifar", "--out", str(out), "--epochs", "2",
            "--train-images", "1500", "--test-images", "300"]
    assert main(args) == 0
    first = capsys.readouterr().out
    model = get_model("resnet8_cifar")
    load_weights(model, out)
    # Two short epochs on 1,500 images already beat chance (10 %) clearly.
    assert evaluate_top1(model, load_cifar10("test").subset(300, seed=0)) > 20.0
    assert "test top-1" in first
    assert main(args) == 0  # everything already trained: resumes at the end, no new epoch
    assert "resuming from epoch 2" in capsys.readouterr().out


@needs_cifar
def test_train_learned_methods_through_the_cli(tmp_path):
    from split_infer.bundle import Bundle

    weights = tmp_path / "r8.safetensors"
    save_weights(get_model("resnet8_cifar"), weights)
    out = tmp_path / "bundle"
    # 32 and 64 both round to one kept channel of 32 at this split: one configuration.
    assert main(["train", "resnet8_cifar", "--weights", str(weights), "--out", str(out),
                 "--method", "rateless", "--ratio", "2", "--ratio", "32", "--ratio", "64",
                 "--epochs", "1", "--train-images", "300", "--eval-images", "50",
                 "--split", "3", "--keep", "all"]) == 0
    bundle = Bundle.load(out)
    keeps = sorted(c.keep_channels for c in bundle.configurations if c.method == "rateless")
    assert keeps == [1, 16]
    assert all(c.accuracy is not None and c.bytes_per_frame for c in bundle.configurations)
