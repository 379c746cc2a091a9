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


def test_user_error_from_a_verb_is_one_line_and_exit_2(monkeypatch, capsys):
    from split_infer.errors import UserError
    from split_infer.tools.cli.models import ModelsVerb

    def fail(self, args):
        raise UserError("no such thing;\nfix it")

    monkeypatch.setattr(ModelsVerb, "main", fail)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "split-infer models: error: no such thing; fix it\n"


def test_internal_errors_keep_their_traceback(monkeypatch):
    from split_infer.tools.cli.models import ModelsVerb

    def bug(self, args):
        return 1 // 0

    monkeypatch.setattr(ModelsVerb, "main", bug)
    with pytest.raises(ZeroDivisionError):
        main(["models"])


def test_plain_value_errors_are_not_user_errors(monkeypatch):
    # A ValueError that no UserError wraps is a bug: it is not swallowed into one line.
    from split_infer.tools.cli.codecs import CodecsVerb

    def bug(self, args):
        raise ValueError("internal invariant broken")

    monkeypatch.setattr(CodecsVerb, "main", bug)
    with pytest.raises(ValueError, match="invariant"):
        main(["codecs"])


def _parsers(parser, path=("split-infer",)):
    """Every (command path, parser) reachable from ``parser`` through its sub-parsers."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_every_argument_of_every_verb_has_help():
    from split_infer.tools.bench.codecs import build_parser as codecs_parser
    from split_infer.tools.cli import VERBS, build_parser

    parsers = [*_parsers(build_parser()), (("split-infer", "bench", "codecs"), codecs_parser())]
    seen = {path[1] for path, _ in parsers if len(path) > 1}
    assert seen == set(VERBS)
    missing = []
    for path, parser in parsers:
        assert parser.description, path
        for action in parser._actions:
            if not (action.help or "").strip():
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}")
            for choice in getattr(action, "_choices_actions", []):
                if not (choice.help or "").strip():
                    missing.append(f"{' '.join(path)} {choice.dest}")
    assert not missing, missing


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["bag", "play", "--help"]])
def test_help_lists_commands_and_options(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: split-infer" in out
    if argv == ["bench", "--help"]:
        for name in ("codecs", "faults", "testbed_e2e", "rate_accuracy"):
            assert name in out


def test_bench_with_an_unknown_name_exits_2(capsys):
    assert main(["bench", "no_such_bench", "--flag"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'no_such_bench'" in err and "faults" in err
    assert len(err.strip().splitlines()) == 1


def test_bench_passes_the_remaining_arguments_through(monkeypatch):
    import importlib
    import types

    calls = []
    fake = types.SimpleNamespace(main=lambda argv: calls.append(argv) or 7)
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name: (
        fake if name == "split_infer.tools.bench.soak" else real_import(name)))
    assert main(["bench", "soak", "--minutes", "1", "--help", "-x"]) == 7
    assert calls == [["--minutes", "1", "--help", "-x"]]


def test_bench_codecs_options_are_parsed_by_the_cli(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "codecs", "--no-such-option"])
    assert info.value.code == 2
    assert "split-infer bench codecs" in capsys.readouterr().err


@pytest.mark.parametrize(("strategy", "message"), [
    ("adaptive+fallback", "'adaptive+fallback': '+' follows a fixed configuration"),
    ("9:20.8+0:58.4", "'9:20.8+0:58.4': after '+' comes 'fallback' or a companion "
                      "'split:ratio@share'"),
])
def test_a_suffix_on_anything_but_a_fixed_configuration_is_refused(capsys, tmp_path, strategy,
                                                                    message):
    with pytest.raises(SystemExit) as info:
        main(["bench", "testbed_e2e", "--strategies", "9:20.8+fallback", strategy,
              "--out", str(tmp_path)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_argument_errors_exit_2():
    with pytest.raises(SystemExit) as info:
        main(["profile"])  # MODEL missing
    assert info.value.code == 2


@pytest.mark.parametrize("argv, fragment", [
    (["profile", "resnet8_cifar", "--repeats", "0"], "--repeats"),
    (["plan", "--rtt-ms", "-1"], "--rtt-ms"),
    (["demo", "--trace", "no_such_trace.csv"], "trace no_such_trace.csv not found"),
    (["plan", "--devices", "robot=1,pi=x"], "not a number"),
    (["bag", "info", "/nonexistent/bag"], "not a rosbag2 directory"),
])
def test_more_user_errors_exit_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["profile", "resnet8_cifar", "--edge-cpu", "0.25"],
    ["plan", "--edge-cpu", "0.25"],
])
def test_cpu_budget_without_cgroups_is_one_line(argv, monkeypatch, capsys, tmp_path):
    from split_infer.tools.testbed import cgroups

    monkeypatch.setattr(cgroups, "cgroups_problem", lambda: "no cgroups in this test")
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--edge-cpu needs cgroups: no cgroups in this test" in err
    assert len(err.strip().splitlines()) == 1


def test_plan_measures_the_edge_scale_or_takes_it_not_both(capsys):
    assert main(["plan", "--edge-cpu", "0.25", "--edge-time-scale", "4"]) == 2
    assert "leave out --edge-time-scale" in capsys.readouterr().err


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
