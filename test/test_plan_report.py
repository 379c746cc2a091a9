"""split_infer.tools.plan.report: the analysis behind ``split-infer plan``, on hand-made bundles.

The bundles are real (``write_bundle``, sha256-listed files) but their ONNX parts are a few
dummy bytes: ``Bundle.load`` verifies hashes, it does not parse ONNX. Every expected number
below is worked out by hand from the thesis's eqs. 4.2–4.4 and Hu & K's eq. (3).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from split_infer.adaptation.configurations import configurations_from_bundle
from split_infer.adaptation.policy import choose_configuration
from split_infer.adaptation.scheduling import SchedulerSettings, SchedulingLoop
from split_infer.bundle import BundleConfiguration, write_bundle
from split_infer.tools.plan.report import PlanReport, plan_bundle, planning_configurations

RTT = 0.02
T_GEN = 30.0

# (id, split, ratio, bytes per frame, accuracy, edge ms, cloud ms). With RTT 20 ms the latency
# lines I_t = b + 8·D/B (thesis eq. 4.2) have intercepts b = edge + cloud + RTT:
#   s3_r8  b = 35 ms, 8·D =  8 000 bit       s2_r8  b = 30 ms, 8·D = 16 000 bit
#   s2_r2  b = 30 ms, 8·D = 64 000 bit (same b as s2_r8, more bytes: never fastest)
SPLITS = [
    ("s3_r8", 3, 8.0, 1000.0, 0.86, 12.0, 3.0),
    ("s2_r8", 2, 8.0, 2000.0, 0.85, 5.0, 5.0),
    ("s2_r2", 2, 2.0, 8000.0, 0.89, 5.0, 5.0),
]
# client-only (eq. 4.4): b = 50 ms, D = 0; server-only (eq. 4.3): b = 0 + 2 + 20 = 22 ms,
# 8·D = 32 000 bit.
CLIENT_ONLY = {"onnx": "onnx/full.onnx", "accuracy": 0.90, "edge_ms": 50.0}
SERVER_ONLY = {"onnx": "onnx/full.onnx", "accuracy": 0.92, "bytes_per_frame": 4000.0,
               "cloud_ms": 2.0, "jpeg_quality": 90, "frames": 100}

# Lower envelope (crossing of i and j at 8·(D_j − D_i)/(b_i − b_j)):
#   client → s3_r8 at  8 000 / 0.015 = 533 333 bit/s
#   s3_r8 → s2_r8 at  8 000 / 0.005 = 1.6 Mbit/s
#   s2_r8 → server at 16 000 / 0.008 = 2 Mbit/s
LATENCY_REGIONS = [("client_only", 0.0, 8000 / 0.015), ("s3_r8", 8000 / 0.015, 1.6e6),
                   ("s2_r8", 1.6e6, 2e6), ("server_only", 2e6, math.inf)]


def make_bundle(directory: Path, splits=SPLITS, client=CLIENT_ONLY, server=SERVER_ONLY,
                unmeasured=()):
    """A real bundle whose files are dummy bytes, with the given measured numbers."""
    (directory / "onnx").mkdir(parents=True)
    (directory / "onnx" / "full.onnx").write_bytes(b"not really onnx")
    configs = []
    for cid, split, ratio, nbytes, accuracy, edge_ms, cloud_ms in splits:
        for side in ("edge", "cloud"):
            (directory / "onnx" / f"{side}_{split}.onnx").write_bytes(f"{side}{split}".encode())
        configs.append(BundleConfiguration(
            id=cid, split_point=split, split_name=f"layer{split}", ratio=ratio,
            codec="quant:bits=8", feature_shape=(16, 8, 8), edge_onnx=f"onnx/edge_{split}.onnx",
            cloud_onnx=f"onnx/cloud_{split}.onnx", accuracy=accuracy, bytes_per_frame=nbytes,
            edge_ms=edge_ms, cloud_ms=cloud_ms))
    for cid in unmeasured:
        (directory / "onnx" / "edge_9.onnx").write_bytes(b"edge9")
        (directory / "onnx" / "cloud_9.onnx").write_bytes(b"cloud9")
        configs.append(BundleConfiguration(
            id=cid, split_point=9, split_name="layer9", ratio=4.0, codec="quant:bits=8",
            feature_shape=(16, 8, 8), edge_onnx="onnx/edge_9.onnx",
            cloud_onnx="onnx/cloud_9.onnx", accuracy=0.8, bytes_per_frame=500.0))
    manifest = {"model": {"name": "toy_net"}, "dataset": {"name": "toy"},
                "preprocessing": {"mean": [0.5] * 3, "std": [0.25] * 3},
                "classes": [str(k) for k in range(10)],
                "profile": {"input_bytes": 12288}}
    if client is not None:
        manifest["client_only"] = client
    if server is not None:
        manifest["server_only"] = server
    return write_bundle(directory, manifest, configs)


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def report(bundle) -> PlanReport:
    return plan_bundle(bundle, rtt_s=RTT, frame_rate_hz=T_GEN)


# -- configurations --------------------------------------------------------------------------

def test_references_come_from_the_manifest(bundle):
    configs, skipped = planning_configurations(bundle)
    assert skipped == ()
    by_name = {c.name: c for c in configs}
    assert set(by_name) == {"s3_r8", "s2_r8", "s2_r2", "client_only", "server_only"}
    client, server = by_name["client_only"], by_name["server_only"]
    assert (client.kind, client.bytes_per_frame, client.edge_s, client.cloud_s) == (
        "client_only", 0.0, 0.05, 0.0)
    assert (server.kind, server.bytes_per_frame, server.edge_s, server.cloud_s) == (
        "server_only", 4000.0, 0.0, 0.002)
    assert server.ratio == pytest.approx(12288 / 4000)  # float32 input / JPEG bytes
    assert client.split_point is None and server.split_point is None
    assert by_name["s2_r2"].edge_s == pytest.approx(0.005)


def test_the_scheduler_still_gets_only_the_split_configurations(bundle):
    usable, skipped = configurations_from_bundle(bundle)
    assert [c.name for c in usable] == ["s3_r8", "s2_r8", "s2_r2"] and skipped == []
    SchedulingLoop(usable, SchedulerSettings())
    with_refs, _ = configurations_from_bundle(bundle, include_references=True)
    assert [c.name for c in with_refs][-2:] == ["client_only", "server_only"]
    with pytest.raises(ValueError, match="needs a split point"):
        SchedulingLoop(with_refs, SchedulerSettings())


def test_a_reference_named_like_a_configuration_is_renamed(tmp_path):
    splits = [("server_only", 1, 1.0, 3000.0, 0.9, 1.0, 9.0), *SPLITS]
    configs, _ = planning_configurations(make_bundle(tmp_path / "b", splits=splits))
    names = [c.name for c in configs]
    assert len(set(names)) == len(names) and "server_only_reference" in names


# -- latency: thesis eqs. 4.1–4.4, Fig. 4.4 --------------------------------------------------

def test_latency_regions_and_crossovers_match_the_hand_calculation(report):
    got = [(r.configuration.name, r.low_bps, r.high_bps) for r in report.latency_regions]
    assert [g[0] for g in got] == [e[0] for e in LATENCY_REGIONS]
    for (_, low, high), (_, e_low, e_high) in zip(got, LATENCY_REGIONS):
        assert low == pytest.approx(e_low) and high == pytest.approx(e_high)
    assert report.crossovers_bps == pytest.approx([8000 / 0.015, 1.6e6, 2e6])


def test_latency_objective_goes_client_only_then_server_only(report):
    low, high = report.choice(1e5, "latency"), report.choice(1e7, "latency")
    assert low.configuration.name == "client_only"
    assert low.latency_s == pytest.approx(0.050)
    assert high.configuration.name == "server_only"
    assert high.latency_s == pytest.approx(0.022 + 32_000 / 1e7)
    # 1 Mbit/s lies in s3_r8's region: 35 ms + 8 ms.
    mid = report.choice(1e6, "latency")
    assert mid.configuration.name == "s3_r8" and mid.latency_s == pytest.approx(0.043)


def test_without_references_low_bandwidth_takes_the_smallest_split(tmp_path):
    report = plan_bundle(make_bundle(tmp_path / "b", client=None, server=None),
                         rtt_s=RTT, frame_rate_hz=T_GEN)
    assert {c.kind for c in report.configurations} == {"split"}
    low = report.choice(1e5, "latency").configuration
    assert low.name == "s3_r8" and low.ratio == max(c.ratio for c in report.configurations)
    # s3_r8 (b 35 ms) → s2_r8 (b 30 ms) at 8 000 bit / 5 ms; s2_r2 never wins.
    assert [r.configuration.name for r in report.latency_regions] == ["s3_r8", "s2_r8"]
    assert report.crossovers_bps == pytest.approx([1.6e6])


# -- effective accuracy: Hu & K ---------------------------------------------------------------

def test_threshold_policy_matches_eq3(report):
    # At 30 frames/s: client-only is compute bound at 20 frames/s, plateau 0.9·20/30 = 0.6 and
    # infinite slope; s3_r8 rises at ν/(8·D·T_gen) and reaches 0.6 at 0.6·8 000·30/0.86 bit/s;
    # server-only (plateau 0.92) reaches 0.86 at 0.86·32 000·30/0.92. s2_r8 (lower plateau than
    # s3_r8, less steep) and s2_r2 (reaches 0.86 later than server-only) never win.
    assert [c.name for c in report.policy.configurations] == [
        "client_only", "s3_r8", "server_only"]
    assert report.thresholds_bps == pytest.approx(
        [0.6 * 8000 * T_GEN / 0.86, 0.86 * 32_000 * T_GEN / 0.92])
    top = report.choice(1e7, "effective_accuracy")
    assert top.configuration.name == "server_only"
    assert (top.throughput_hz, top.effective_accuracy) == pytest.approx((T_GEN, 0.92))
    low = report.choice(1e5, "effective_accuracy")
    assert low.configuration.name == "client_only"
    assert (low.throughput_hz, low.effective_accuracy) == pytest.approx((20.0, 0.6))


def test_effective_accuracy_compresses_more_when_the_link_is_slow(tmp_path):
    # Hu & K's setting: one split, ratios a factor 2 apart (10 kB … 1.25 kB per frame).
    ladder = [(f"g{g}", 2, float(g), 10_000.0 / g, nu, 5.0, 5.0)
              for g, nu in ((1, 0.90), (2, 0.89), (4, 0.88), (8, 0.87))]
    report = plan_bundle(make_bundle(tmp_path / "b", splits=ladder, client=None, server=None),
                         rtt_s=RTT, frame_rate_hz=T_GEN)
    ratios = [report.choice(b, "effective_accuracy").configuration.ratio
              for b in report.bandwidths_bps]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > ratios[-1]
    assert ratios[0] == 8.0 and ratios[-1] == 1.0
    # between g8 and g4: eq. (3), θ* = 8·D_right·ν_left·T_gen/ν_right
    assert report.thresholds_bps[0] == pytest.approx(8 * 2500 * 0.87 * T_GEN / 0.88)


def test_the_plan_is_choose_configuration(report):
    for choice in report.choices:
        expected = choose_configuration(report.configurations, choice.bandwidth_bps, RTT,
                                        choice.objective, t_gen_hz=T_GEN)
        assert choice.configuration == expected.configuration
        assert choice.score == pytest.approx(expected.score)
    assert [(c.bandwidth_bps, c.objective) for c in report.choices] == [
        (b, o) for b in (1e5, 1e6, 1e7) for o in ("effective_accuracy", "latency")]


def test_a_deadline_adds_the_accuracy_objective(bundle):
    report = plan_bundle(bundle, rtt_s=RTT, frame_rate_hz=T_GEN, deadline_s=0.030)
    # At 10 Mbit/s only server-only (25.2 ms) and s2_r8 (31.6 ms: no) … meet 30 ms.
    choice = report.choice(1e7, "accuracy")
    assert choice.configuration.name == "server_only" and choice.meets_deadline
    # At 0.1 Mbit/s nothing meets 30 ms: the fastest (client-only, 50 ms) and the flag.
    slow = report.choice(1e5, "accuracy")
    assert slow.configuration.name == "client_only" and not slow.meets_deadline
    assert "misses deadline" in report.format_text()


def test_time_scales_model_a_slower_edge(bundle):
    report = plan_bundle(bundle, rtt_s=RTT, frame_rate_hz=T_GEN, edge_time_scale=2.0,
                         cloud_time_scale=0.5)
    by_name = {c.name: c for c in report.configurations}
    assert by_name["s3_r8"].edge_s == pytest.approx(0.024)
    assert by_name["s3_r8"].cloud_s == pytest.approx(0.0015)
    # client-only now takes 100 ms and is compute bound at 10 frames/s; s3_r8's line
    # (b = 24 + 1.5 + 20 ms) crosses it at 8 000 bit / 54.5 ms.
    assert report.choice(1e5, "latency").latency_s == pytest.approx(0.100)
    assert report.crossovers_bps[0] == pytest.approx(8000 / 0.0545)
    assert report.to_dict()["settings"]["edge_time_scale"] == 2.0
    assert "edge times x2, cloud times x0.5" in report.format_text()


# -- Fig. 3 sweep -----------------------------------------------------------------------------

def test_adaptive_is_never_below_a_fixed_configuration(report):
    sweep = report.sweep
    fixed = np.stack(list(sweep.fixed.values()))
    assert sweep.adaptive.shape == (3, 24) and fixed.shape == (5, 3, 24)
    assert np.all(sweep.adaptive >= fixed.max(axis=0) - 1e-9)
    assert np.all((sweep.adaptive > 0) & (sweep.adaptive <= 1))
    # σ = f·μ_ref with μ_ref the middle of the grid; the grid ends at 1.5× the largest knee of
    # the policy's configurations (server-only: 8·4 000·30 bit/s).
    assert sweep.means_bps[-1] == pytest.approx(1.5 * 8 * 4000 * T_GEN)
    assert report.reference_mean_bps == sweep.means_bps[12]
    assert sweep.stds_bps == pytest.approx([0.0, 0.25 * sweep.means_bps[12],
                                            0.5 * sweep.means_bps[12]])
    # σ = 0 is a constant bandwidth: the adaptive value is the envelope itself.
    assert sweep.adaptive[0] == pytest.approx(
        [report.policy.effective_accuracy(float(mu)) for mu in sweep.means_bps])


def test_the_sweep_grid_can_be_given(bundle):
    report = plan_bundle(bundle, rtt_s=RTT, frame_rate_hz=T_GEN, sigma_fraction=(0.1,),
                         sweep_means_bps=[5e5, 1e6, 2e6])
    assert report.sweep.means_bps.tolist() == [5e5, 1e6, 2e6]
    assert report.sweep.stds_bps == pytest.approx([1e5])


# -- output ------------------------------------------------------------------------------------

def test_files_are_written_and_the_json_round_trips(bundle, tmp_path):
    out = tmp_path / "plan"
    report = plan_bundle(bundle, rtt_s=RTT, frame_rate_hz=T_GEN, out_dir=out)
    names = {"plan.json", "latency_vs_bandwidth.png", "effective_accuracy_vs_bandwidth.png",
             "fig3_effective_accuracy.png"}
    assert {p.name for p in out.iterdir()} == names
    for path in report.files.values():
        assert path.parent == out and path.stat().st_size > 0
    for png in names - {"plan.json"}:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = report.to_dict()
    assert json.loads((out / "plan.json").read_text()) == data
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["latency"]["regions"][-1] == {
        "configuration": "server_only", "low_bps": pytest.approx(2e6), "high_bps": None}
    assert data["latency"]["crossovers_bps"] == pytest.approx([8000 / 0.015, 1.6e6, 2e6])
    assert data["effective_accuracy"]["regions"][0]["plateau"] == pytest.approx(0.6)
    assert [c["name"] for c in data["configurations"]] == [
        "s3_r8", "s2_r8", "s2_r2", "client_only", "server_only"]
    assert data["plan"][1] == {**data["plan"][1], "bandwidth_bps": 1e5, "objective": "latency",
                               "configuration": "client_only", "latency_s": 0.05}
    assert len(data["sweep"]["adaptive"]) == 3 and len(data["sweep"]["adaptive"][0]) == 24


def test_text_output_names_every_part(report):
    text = report.format_text()
    for part in ("Configurations (5)", "crossovers: 0.533, 1.6, 2 Mbit/s", "thresholds Theta:",
                 "Plan (choose_configuration", "Fig. 3 style", "client_only", "server_only"):
        assert part in text, part
    assert "Wrote:" not in text
    table = text.splitlines()
    row = next(line for line in table if line.strip().startswith("server_only "))
    assert row.split()[1:5] == ["server_only", "3.07", "4000", "92.0"]


# -- what cannot be planned -------------------------------------------------------------------

def test_unmeasured_configurations_are_named(tmp_path):
    bundle = make_bundle(tmp_path / "b", unmeasured=["s9_raw"])
    with pytest.raises(ValueError, match=r"'s9_raw' lacks measured edge_ms, cloud_ms"):
        plan_bundle(bundle)
    report = plan_bundle(bundle, skip_unmeasured=True)
    assert report.skipped == ("s9_raw",)
    assert "s9_raw" not in [c.name for c in report.configurations]
    assert "left out (not measured): s9_raw" in report.format_text()


def test_an_incomplete_reference_is_named(tmp_path):
    server = {k: v for k, v in SERVER_ONLY.items() if k != "cloud_ms"}
    with pytest.raises(ValueError, match=r"'server_only' lacks measured cloud_ms"):
        plan_bundle(make_bundle(tmp_path / "b", server=server))


def test_bad_arguments(bundle):
    for kwargs in ({"bandwidths_bps": ()}, {"bandwidths_bps": (0.0,)}, {"rtt_s": -1.0},
                   {"frame_rate_hz": 0.0}, {"sigma_fraction": (-0.1,)}, {"deadline_s": 0.0},
                   {"sweep_means_bps": [0.0, 1e6]}, {"edge_time_scale": 0.0}):
        with pytest.raises(ValueError):
            plan_bundle(bundle, **kwargs)
