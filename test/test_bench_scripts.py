"""The benchmarks of split_infer.tools.bench: every module's command line, the shared helpers
(common.py), and the functions of rate_accuracy, concealment, estimate_step and testbed_e2e on
tiny inputs: the tiny bundle's ResNet-8 and random images, so no data set is needed. No
benchmark runs here."""

import importlib
import inspect
import json
import os
import pkgutil

import cv2
import numpy as np
import pytest
from ros_fixtures import random_images, tiny_bundle_fixture  # noqa: F401

from split_infer.data import ArrayDataset
from split_infer.wire import decode_frame, pack

SPLIT = 3  # the tiny bundle's last split: two baseline codecs and one rateless configuration


def _bench(name: str):
    return importlib.import_module(f"split_infer.tools.bench.{name}")


ra = _bench("rate_accuracy")
cc = _bench("concealment")

#: Modules of split_infer.tools.bench that are not benchmarks themselves.
HELPERS = {"common", "codec_table"}
BENCH_PACKAGE = importlib.import_module("split_infer.tools.bench")
BENCHMARKS = sorted(m.name for m in pkgutil.iter_modules(BENCH_PACKAGE.__path__)
                    if m.name not in HELPERS)


# -- every benchmark's command line ----------------------------------------------------------
def test_every_module_of_the_package_is_a_benchmark_or_a_helper():
    from split_infer.tools.cli.bench import BENCHMARKS as LISTED

    assert set(BENCHMARKS) == set(LISTED)  # `split-infer bench NAME` reaches every one
    assert {m.name for m in pkgutil.iter_modules(BENCH_PACKAGE.__path__)} >= HELPERS


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_has_a_main_and_its_help_exits_0(name, capsys):
    module = _bench(name)
    assert callable(module.main)
    assert list(inspect.signature(module.main).parameters) == ["argv"]
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: split-infer bench {name}")
    assert "--out" in out
    source = inspect.getsource(module)
    assert 'if __name__ == "__main__":\n    raise SystemExit(main())' in source
    assert "sys.path" not in source and "ros_fixtures" not in source


def test_helpers_do_not_touch_sys_path():
    for name in HELPERS:
        source = inspect.getsource(_bench(name))
        assert "sys.path" not in source and "ros_fixtures" not in source


# -- common ----------------------------------------------------------------------------------
def test_write_json_creates_the_directory_and_replaces_the_file(tmp_path):
    from split_infer.tools.bench.common import write_json

    path = tmp_path / "a" / "b" / "result.json"
    assert write_json(path, {"x": [1, 2]}) == path
    assert write_json(path, {"x": 3}) == path
    assert json.loads(path.read_text()) == {"x": 3}
    assert path.read_text().endswith("}\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # no temp file


def test_machine_info_is_json_and_names_the_libraries():
    from split_infer.tools.bench.common import command_line, machine_info, timestamp

    info = machine_info(threads=2)
    assert json.loads(json.dumps(info)) == info
    assert info["cpu_count"] == os.cpu_count() and info["threads"] == 2
    assert info["numpy"] == np.__version__
    assert {"platform", "cpu", "python", "torch", "onnxruntime", "opencv"} <= set(info)
    assert timestamp().endswith("+00:00")
    assert command_line("fuzz", ["--out", "a b"]) == "split-infer bench fuzz --out 'a b'"


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    from split_infer.tools.bench.common import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


def test_limit_threads_zero_or_none_changes_nothing():
    from split_infer.tools.bench.common import limit_threads

    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    limit_threads(None)
    limit_threads(0)
    if before is not None:
        assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError, match="threads"):
        limit_threads(-1)


@pytest.fixture(scope="module")
def dataset(tiny_bundle):
    images = random_images(24, seed=7)
    labels = np.random.default_rng(7).integers(0, 10, len(images))
    return ArrayDataset("random", images, labels, tiny_bundle.classes, tiny_bundle.preprocessing)


@pytest.fixture(scope="module")
def parts(tiny_bundle):
    return ra.backbone_parts(tiny_bundle, SPLIT, threads=1)


# -- rate_accuracy ---------------------------------------------------------------------------
def test_feature_codec_rows_come_from_real_frames(tiny_bundle, dataset, parts):
    from split_infer.codecs import get_codec

    point, head, tail = parts
    calibration = ra.head_features(head, ArrayDataset(
        "random", random_images(16, seed=3), np.zeros(16, int), dataset.classes,
        dataset.preprocessing))
    specs = ra.feature_codec_specs([50])
    codecs = [(kind, label, get_codec(spec, shape=calibration.shape[1:]).calibrate(calibration))
              for kind, label, spec in specs]
    rows = ra.measure_feature_codecs(head, tail, point.index, codecs, dataset, batch_size=10,
                                     progress=False)
    assert [r["kind"] for r in rows] == ["float32", "quant8_zstd", "feature_jpeg"]

    features = np.concatenate([head(x) for _, x in ra.batches(dataset, 10)])
    unsplit = np.concatenate([tail(f[None]).argmax(1) for f in features])
    for (_, _, codec), row in zip(codecs, rows, strict=True):
        frames = [pack(codec, f, split_point=point.index, ratio=1.0, seq=i, stamp_ns=0)
                  for i, f in enumerate(features)]
        assert all(decode_frame(d).split_point == point.index for d in frames)
        assert row["bytes_per_frame"] == pytest.approx(np.mean([len(d) for d in frames]))
        assert row["bytes_min"] == min(len(d) for d in frames)
        assert row["frames"] == len(dataset)
    float32, _, jpeg = rows
    # float32 frames carry the whole tensor plus a header, and change nothing.
    assert float32["bytes_min"] > features[0].nbytes
    assert float32["correct"] == int((unsplit == dataset.labels).sum())
    assert jpeg["bytes_per_frame"] < float32["bytes_per_frame"] / 4


def test_bundle_rows_are_remeasured_per_split(tiny_bundle, dataset):
    rows = ra.measure_bundle_configs(tiny_bundle, SPLIT, dataset, progress=False)
    expected = {c.id: c for c in tiny_bundle.configurations if c.split_point == SPLIT}
    assert {r["id"] for r in rows} == set(expected)
    for row in rows:
        config = expected[row["id"]]
        assert row["kind"] == ("bundle_baseline" if config.method == "baseline"
                               else "bundle_learned")
        assert row["frames"] == len(dataset)
    rateless = next(r for r in rows if r["kind"] == "bundle_learned")
    full = next(r for r in rows if r["spec"] == rateless["spec"] and r is not rateless)
    # Half the channels through the same 8-bit raw codec: about half the payload.
    assert rateless["bytes_per_frame"] < 0.6 * full["bytes_per_frame"]
    assert ra.measure_bundle_configs(tiny_bundle, 99, dataset, progress=False) == []


def test_cloud_only_bytes_are_jpeg_sizes(tiny_bundle, dataset):
    rows = ra.measure_cloud_only(tiny_bundle, dataset, (90, 20), progress=False)
    for row, quality in zip(rows, (90, 20), strict=True):
        sizes = [len(cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR),
                                  [cv2.IMWRITE_JPEG_QUALITY, quality])[1])
                 for im in dataset.images]
        assert row["bytes_per_frame"] == pytest.approx(np.mean(sizes))
        assert row["kind"] == "cloud_only" and row["frames"] == len(dataset)
    assert rows[1]["bytes_per_frame"] < rows[0]["bytes_per_frame"]


def _row(label, size, accuracy, kind="feature_jpeg"):
    return {"label": label, "kind": kind, "bytes_per_frame": size, "accuracy": accuracy}


def test_targets_pick_the_right_rows():
    reference = _row("float32", 64000.0, 0.90, "float32")
    rows = [
        reference,
        _row("a: 64x, -0.5", 1000.0, 0.895),
        _row("b: just over 64x bytes", 1001.0, 0.90),
        _row("c: 256x, -2.9", 250.0, 0.871),
        _row("d: 256x, -3.1", 250.0, 0.869),
        _row("e: 640x, -0.5", 100.0, 0.895),
        _row("f: 64x, exactly -1", 1000.0, 0.89),
    ]
    rows = ra.relative_to(rows, reference)
    assert rows[1]["reduction"] == pytest.approx(64.0)
    assert rows[3]["loss_points"] == pytest.approx(2.9)
    report = ra.check_targets(rows, reference)
    assert [t["met_by"] for t in report] == [
        ["a: 64x, -0.5", "e: 640x, -0.5", "f: 64x, exactly -1"],
        ["c: 256x, -2.9", "e: 640x, -0.5"],
    ]
    assert report[1]["max_bytes"] == pytest.approx(250.0)
    assert report[1]["min_accuracy"] == pytest.approx(0.87)
    text = ra.format_targets(report)
    assert "met by: a: 64x" in text and "none" not in text
    assert "none" in ra.format_targets(ra.check_targets(rows[:3], reference))


def test_rate_accuracy_plot_and_table(tmp_path):
    reference = _row("float32", 32000.0, 0.9, "float32")
    rows = ra.relative_to([reference, _row("q50", 2000.0, 0.88),
                           {**_row("rl k8", 900.0, 0.8, "bundle_learned"), "method": "rateless",
                            "spec": "x"},
                           {**_row("cloud q10", 700.0, 0.6, "cloud_only"), "jpeg_quality": 10,
                            "spec": "input"}], reference)
    rows[1]["spec"] = "quant:bits=8,per=channel+jpeg:quality=50"
    panel = {"split": {"index": 7, "name": "layer2.2"}, "feature_shape": [32, 16, 16],
             "reference": rows[0], "rows": rows, "targets": ra.check_targets(rows, rows[0])}
    ra.plot_rate_accuracy([panel], tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    table = ra.format_table(rows).splitlines()
    assert table[2].startswith("float32") and table[-1].startswith("cloud q10")


# -- concealment -----------------------------------------------------------------------------
def test_loss_masks_follow_the_pattern():
    shape = (8, 4, 5)
    rng = np.random.default_rng(0)
    assert not cc.loss_masks(5, shape, 0.0, "channels", rng).any()
    for pattern in cc.PATTERNS:
        assert cc.loss_masks(3, shape, 1.0, pattern, rng).all()

    elements = cc.loss_masks(50, shape, 0.2, "elements", rng)
    assert elements.shape == (50, *shape)
    assert (elements.reshape(50, -1).sum(1) == 32).all()  # round(0.2 * 160) per frame

    channels = cc.loss_masks(2000, shape, 0.1, "channels", rng)
    per_channel = channels.reshape(2000, 8, -1)
    assert (per_channel.all(2) | ~per_channel.any(2)).all()  # whole channels only
    lost = per_channel.all(2).sum(1)
    assert set(np.unique(lost)) <= {0, 1}  # 0.8 channels: 0 or 1, stochastically rounded
    assert channels.mean() == pytest.approx(0.1, abs=0.01)

    segments = cc.loss_masks(2000, shape, 0.25, "segments", rng, segment=30)
    flat = segments.reshape(2000, -1)
    packets = [flat[:, i:i + 30] for i in range(0, 160, 30)]  # 6 packets, the last of 10
    for packet in packets:
        assert (packet.all(1) | ~packet.any(1)).all()  # whole aligned packets only
    assert segments.mean() == pytest.approx(0.25, abs=0.01)

    with pytest.raises(ValueError, match="pattern"):
        cc.loss_masks(1, shape, 0.1, "bursts", rng)
    with pytest.raises(ValueError, match="fraction"):
        cc.loss_masks(1, shape, 1.5, "elements", rng)


def test_conceal_fills_only_the_missing_positions():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, (2, 4, 3, 3)).astype(np.float32)
    original = x.copy()
    missing = rng.random(x.shape) < 0.4
    missing[0, 1] = True  # a whole channel lost in frame 0
    missing[1, 2] = False  # nothing lost in one channel of frame 1
    dataset_mean = np.array([10.0, 20.0, 30.0, 40.0], np.float32)
    for method in cc.METHODS:
        out = cc.conceal(x, missing, method, dataset_mean)
        np.testing.assert_array_equal(out[~missing], x[~missing])
        np.testing.assert_array_equal(x, original)  # the input is left alone
        for b in range(2):
            for c in range(4):
                filled = out[b, c][missing[b, c]]
                if method == "zeros":
                    expected = 0.0
                elif method == "dataset_mean" or not (~missing[b, c]).any():
                    expected = dataset_mean[c]
                else:
                    expected = x[b, c][~missing[b, c]].mean()
                np.testing.assert_allclose(filled, expected, rtol=1e-6)
    assert cc.conceal(x, missing, "channel_mean", dataset_mean)[0, 1, 0, 0] == 20.0
    with pytest.raises(ValueError, match="method"):
        cc.conceal(x, missing, "median", dataset_mean)


def test_dataset_mean_is_the_per_channel_training_mean():
    features = np.random.default_rng(2).normal(size=(6, 3, 2, 2)).astype(np.float32)
    mean = cc.dataset_channel_mean(features)
    np.testing.assert_allclose(mean, [features[:, c].mean() for c in range(3)], rtol=1e-5)


def test_fraction_zero_equals_the_unconcealed_result(tiny_bundle, dataset, parts):
    _, head, tail = parts
    mean = cc.dataset_channel_mean(ra.head_features(head, dataset))
    result = cc.measure_concealment(head, tail, dataset, mean, fractions=(0.0, 0.5),
                                    batch_size=10, progress=False)
    features = np.concatenate([head(x) for _, x in ra.batches(dataset, 10)])
    unsplit = tail(features).argmax(1)
    assert result["reference"]["predictions"] == unsplit.tolist()
    assert result["reference"]["correct"] == int((unsplit == dataset.labels).sum())
    rows = result["rows"]
    assert len(rows) == len(cc.PATTERNS) * 2 * len(cc.METHODS)
    for row in rows:
        if row["fraction"] == 0.0:
            assert row["missing_fraction"] == 0.0
            assert row["agree"] == 1.0
            assert row["correct"] == result["reference"]["correct"]
        elif row["pattern"] == "elements":
            assert row["missing_fraction"] == pytest.approx(0.5, abs=1e-3)
    # Half the tensor zeroed changes some predictions of a classifier that sees the features.
    zeros = next(r for r in rows if r["fraction"] == 0.5 and r["method"] == "zeros"
                 and r["pattern"] == "elements")
    assert zeros["agree"] < 1.0
    assert "elements" in cc.format_table(result)


def test_loss_at_reports_the_best_method_against_its_own_zero():
    rows = [{"pattern": "elements", "fraction": f, "method": m, "accuracy": a,
             "missing_fraction": f}
            for f, m, a in [(0.0, "zeros", 0.90), (0.0, "dataset_mean", 0.90),
                            (0.05, "zeros", 0.85), (0.05, "dataset_mean", 0.898)]]
    result = {"rows": rows, "reference": {"accuracy": 0.9, "frames": 10}}
    (entry,) = cc.loss_at(result, 0.05)
    assert entry["best_method"] == "dataset_mean"
    assert entry["loss_points"] == pytest.approx(0.2)
    assert entry["by_method"]["zeros"] == pytest.approx(5.0)


# -- estimate_step ---------------------------------------------------------------------------
def test_estimate_step_summary_takes_the_worst_repeat_and_flags_unsettled_steps():
    es = _bench("estimate_step")

    def reactions(*times):
        return [{"t_s": 20.0 * (i + 1), "rate_before_bps": 1e6, "rate_after_bps": 2e6,
                 "estimate_within_15pct_after_s": t} for i, t in enumerate(times)]

    steps = es.summarize([reactions(0.9, 0.7), reactions(1.5, None), reactions(1.1, 0.8)])
    assert steps[0]["within_15pct_after_s"] == [0.9, 1.5, 1.1]
    assert steps[0]["median_s"] == 1.1 and steps[0]["worst_s"] == 1.5
    assert steps[0]["target_met"]
    assert steps[1]["worst_s"] is None and not steps[1]["target_met"]
    assert es.summarize([reactions(2.5)])[0]["target_met"] is False


# -- testbed_e2e -----------------------------------------------------------------------------
def _run(trace, strategy, nu, rate=1e5, fps=20.0, bytes_=190.0, wire=420.0, valid=True,
         gate="applied", compute_bound=30.0, budget=None):
    mean_rate = rate or 5e6  # a trace that varies: the report's B is its mean rate
    return {"trace": trace, "strategy": strategy, "rate_bps": rate, "effective_accuracy": nu,
            "delivered_fps": fps, "latency_ms_p50": 40.0, "latency_ms_p99": 300.0,
            "bytes_per_frame_mean": bytes_, "wire_bytes_per_frame": wire,
            "link_utilization": 1.0, "link_bound_fps": mean_rate / (8 * bytes_),
            "link_bound_fps_wire": mean_rate / (8 * wire), "valid": valid, "gate": gate,
            "bound_fps": compute_bound if gate == "applied" else mean_rate / (8 * wire),
            "compute_bound_fps": compute_bound, "edge_cpu_budget": budget}


def test_the_naive_bundle_is_a_temporary_copy_with_a_float32_configuration(tiny_bundle):
    from split_infer.bundle import Bundle

    bundle = tiny_bundle
    split = bundle.configurations[0].split_point
    naive, strategy = _bench("testbed_e2e").naive_bundle(bundle, split)
    assert strategy == f"{split}:1"
    assert naive.path.parent.name.startswith("split_infer_naive_")  # not in the results
    assert naive.configuration(split, 1.0).codec == "float32+raw"
    assert Bundle.load(naive.path).manifest["files"].keys() >= bundle.manifest["files"].keys()


def _repeats(trace, strategy, values, **kwargs):
    """Three runs of one cell; ``values`` are ν_eff (or fps with ``key="fps"``)."""
    key = kwargs.pop("key", "nu")
    return [_run(trace, strategy, **{"nu": 0.5, **kwargs, key: v}) for v in values]


def test_testbed_aggregate_and_targets_judge_against_the_run_to_run_noise(tmp_path):
    e2e = _bench("testbed_e2e")
    link = {"gate": "link-limited"}
    rows = [*_repeats("100k", "cloud_only", [0.10, 0.12, 0.14], **link),
            *_repeats("100k", "10:86.4", [0.50, 0.55, 0.60], **link),
            *_repeats("100k", "naive", [0.0, 0.0, 0.0], fps=0.4, bytes_=32823.0,
                      wire=34000.0, **link),
            *_repeats("100k", "adaptive", [0.56, 0.57, 0.58], **link),
            # 1 Mbit/s: adaptive clearly below the best fixed; one cloud-only run invalid
            *_repeats("1m", "10:86.4", [0.80, 0.81, 0.82], rate=1e6),
            *_repeats("1m", "adaptive", [0.70, 0.71, 0.72], rate=1e6),
            *_repeats("1m", "edge_only", [0.60, 0.61, 0.62], rate=1e6),
            _run("1m", "cloud_only", 0.2, rate=1e6), _run("1m", "cloud_only", 0.2, rate=1e6),
            _run("1m", "cloud_only", 0.05, rate=1e6, fps=3.0, valid=False),
            # 20 Mbit/s: the fps target
            *_repeats("20m", "adaptive", [29.9, 30.0, 30.1], key="fps", rate=20e6),
            *_repeats("20m", "cloud_only", [8.0, 8.5, 9.0], key="fps", rate=20e6),
            *_repeats("20m", "10:86.4", [26.5, 27.0, 27.5], key="fps", rate=20e6),
            *_repeats("20m", "edge_only", [29.0, 29.0], key="fps", rate=20e6),
            {"trace": "20m", "strategy": "edge_only", "repeat": 2, "rate_bps": 20e6,
             "error": "a testbed process exited early"},
            # under a budget of 0.25 core: 0.9 of a compute bound of 20 fps is required
            *_repeats("20m_cpu", "edge_only", [19.0, 19.1, 19.2], key="fps", rate=20e6,
                      compute_bound=20.0, budget=0.25),
            # one run each: no measure of the noise
            _run("fast", "10:86.4", 0.80, rate=None, gate="not steady"),
            _run("fast", "adaptive", 0.90, rate=None, gate="not steady")]
    table = e2e.aggregate(rows)
    cell = {(r["trace"], r["strategy"]): r for r in table}
    fixed = cell["100k", "10:86.4"]
    assert fixed["repeats"] == 3 and fixed["effective_accuracy"] == pytest.approx(0.55)
    assert (fixed["effective_accuracy_min"], fixed["effective_accuracy_max"]) == (0.50, 0.60)
    assert fixed["valid"] and fixed["link_limited"]
    assert not cell["1m", "cloud_only"]["valid"]
    assert cell["1m", "cloud_only"]["invalid_repeats"] == 1
    failed = cell["20m", "edge_only"]  # a run that did not finish is no valid run
    assert failed["failed"] == 1 and not failed["valid"]

    checks = {c["trace"]: c for c in e2e.target_checks(table)}
    slow = checks["100k"]
    assert slow["noise"] == pytest.approx(0.10)  # the fixed configuration's spread
    assert slow["best_fixed"] == "10:86.4" and slow["adaptive_nu"] == pytest.approx(0.57)
    # +0.02 ahead, but the best fixed configuration's repeats spread over 0.10
    assert slow["adaptive_ge_best_fixed"] == "inconclusive"
    assert slow["adaptive_vs_best_fixed"]["spread"] == pytest.approx(0.10)
    assert slow["adaptive_ge_2x_cloud_only"] == "met"  # 0.57 − 2 × 0.12 ≫ max(0.02, 2 × 0.04)
    bound = {b["strategy"]: b for b in slow["link_bound"]}  # the link-limited fixed splits
    assert set(bound) == {"naive", "10:86.4"}
    assert bound["naive"]["fps_over_b_d"] == pytest.approx(0.4 / (1e5 / (8 * 32823.0)))
    assert bound["naive"]["fps_over_b_d_wire"] == pytest.approx(0.4 / (1e5 / (8 * 34000.0)))
    assert bound["naive"]["verdict"] == "met"  # 0.4 fps ≥ 0.9 × 0.381, no spread
    assert bound["10:86.4"]["verdict"] == "not met"  # 20 fps ≪ 0.9 × 65.8

    medium = checks["1m"]
    assert medium["adaptive_ge_best_fixed"] == "not met"  # −0.10, spread 0.02
    assert medium["adaptive_ge_2x_cloud_only"] == "invalid"  # a cloud-only run failed its gate
    assert medium["adaptive_ge_edge_only"] == "met"  # +0.10, spread 0.02
    assert checks["20m"]["adaptive_ge_edge_only"] == "invalid"  # an edge-only run failed
    assert "adaptive_ge_edge_only" not in slow  # only where the link carries features
    assert "fps_target" in medium and medium["fps_target"] == []  # only at ≥ 20 Mbit/s

    fps = {f["strategy"]: f for f in checks["20m"]["fps_target"]}
    assert fps["adaptive"]["verdict"] == "met" and fps["adaptive"]["required_fps"] == 27.0
    assert fps["cloud_only"]["verdict"] == "not met"
    assert fps["10:86.4"]["verdict"] == "inconclusive"  # mean 27.0 on 27 with a 1-fps spread
    assert fps["edge_only"]["verdict"] == "invalid"
    (budget,) = checks["20m_cpu"]["fps_target"]
    assert budget["required_fps"] == pytest.approx(18.0) and budget["verdict"] == "met"
    fast = checks["fast"]  # one run each: 0.90 vs 0.80 is no verdict without the noise
    assert fast["noise"] == 0 and fast["adaptive_ge_best_fixed"] == "inconclusive"
    assert "adaptive_ge_2x_cloud_only" not in fast

    # Every verdict can come out of the checks, and each can be false.
    verdicts = {slow["adaptive_ge_best_fixed"], medium["adaptive_ge_best_fixed"],
                medium["adaptive_ge_2x_cloud_only"], slow["adaptive_ge_2x_cloud_only"]}
    assert verdicts == set(e2e.VERDICTS)

    text = e2e.markdown(table, list(checks.values()))
    assert "| 100k | 10:86.4 | 0.550 [0.500–0.600] | 20.0 [20.0–20.0] |" in text
    assert "| 1m | cloud_only |" in text and "invalid (1/3)" in text
    assert "naive 1.05 [1.09] met" in text  # 0.4 fps where B/D = 0.381 (0.368 on the wire)
    assert "| inconclusive (+0.02 ± 0.1) |" in text
    assert "not met (-0.1 ± 0.02)" in text
    assert "cloud_only 8.5/27 not met" in text and "edge_only 29.0/27 invalid" in text
    written = e2e.plot(table, tmp_path)
    varying_traces = {c["trace"] for c in table if c["rate_bps"] is None}
    assert [p.name for p in written] == ["nu_eff_by_trace.png"] * bool(varying_traces) + [
        "nu_eff_vs_bandwidth.png", "latency_vs_bandwidth.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    # A trace whose rate varies has no place on a bandwidth axis: a bar per strategy instead.
    varying = e2e.aggregate([*_repeats("gauss", "adaptive", [0.8, 0.82, 0.81], rate=None),
                             *_repeats("gauss", "10:86.4", [0.7, 0.7, 0.71], rate=None)])
    written = e2e.plot(varying, tmp_path / "varying")
    assert [p.name for p in written] == ["nu_eff_by_trace.png"]
    assert written[0].stat().st_size > 10_000


def test_testbed_verdicts_need_a_valid_run_a_margin_beyond_the_spread_and_three_repeats():
    judge = _bench("testbed_e2e").judge
    assert judge(0.05, 0.02, valid=True, repeats=3) == "met"
    assert judge(-0.05, 0.02, valid=True, repeats=3) == "not met"
    assert judge(0.01, 0.02, valid=True, repeats=3) == "inconclusive"
    assert judge(-0.01, 0.02, valid=True, repeats=5) == "inconclusive"
    assert judge(0.05, 0.0, valid=True, repeats=2) == "inconclusive"
    assert judge(0.05, 0.0, valid=False, repeats=3) == "invalid"


def test_step_trace_adaptation_targets_count_the_repeats_that_meet_them():
    e2e = _bench("testbed_e2e")

    def step(t, before, after, estimate, changed):
        return {"t_s": t, "rate_before_bps": before, "rate_after_bps": after,
                "estimate_within_15pct_after_s": estimate,
                "configuration_changed_after_s": changed}

    def run(repeat, used, reactions, trace="step"):
        return {"trace": trace, "strategy": "adaptive", "repeat": repeat,
                "configurations_used": used, "reactions": reactions}

    moving = ["6:9.42", "9:20.8", "9:9.36"]
    good = [step(30.0, 8e6, 1e6, 1.2, 1.3), step(60.0, 1e6, 4e6, 1.9, 2.0)]
    late = [step(30.0, 8e6, 1e6, 1.2, 1.3), step(60.0, 1e6, 4e6, 3.5, None)]
    gauss = [step(float(t), 5e6, 4e6, None, None) for t in range(1, 30)]
    outage = [step(20.0, 5e6, 0.0, None, 0.8), step(30.0, 0.0, 5e6, 1.0, 1.5)]
    rows = [run(0, moving, good), run(1, moving, good), run(2, ["9:20.8", "9:9.36"], late),
            run(0, moving, gauss, "gauss"), {"trace": "step", "strategy": "9:9.36"},
            *(run(k, ["-1:1", "9:20.8"], outage, "outage") for k in range(2))]
    checks = {c["trace"]: c for c in e2e.adaptation_checks(rows)}
    assert set(checks) == {"step", "outage"}  # one rate a second is no step trace
    step_check = checks["step"]
    assert step_check["two_splits_two_ratios"] == {"verdict": "not met", "repeats_met": 2,
                                                   "repeats": 3}
    assert step_check["configuration_within_2s"]["verdict"] == "not met"
    assert step_check["estimate_within_2s"]["repeats_met"] == 2
    assert step_check["runs"][0]["splits"] == [6, 9]
    assert step_check["runs"][0]["ratios"] == [9.36, 9.42, 20.8]
    # Edge-only is a split point without a ratio; the outage's zero rate needs no estimate.
    assert checks["outage"]["runs"][0]["splits"] == [-1, 9]
    assert checks["outage"]["runs"][0]["ratios"] == [20.8]
    assert checks["outage"]["estimate_within_2s"] == {"verdict": "inconclusive",
                                                      "repeats_met": 2, "repeats": 2}
    everything_met = e2e.adaptation_checks([run(k, moving, good) for k in range(3)])[0]
    assert all(everything_met[k]["verdict"] == "met" for k in
               ("two_splits_two_ratios", "configuration_within_2s", "estimate_within_2s"))
    text = e2e.adaptation_markdown(e2e.adaptation_checks(rows))
    assert "edge-only, 9" in text and "never" in text and "(2/3)" in text


def test_imagenet_targets_are_verdicts_that_can_fail():
    from split_infer.tools.bench.rate_accuracy_imagenet import check_targets

    def row(split, codec, size, top1, fraction=0.0, kind="bundle_learned"):
        return {"split": split, "codec": codec, "bytes_per_frame": size, "top1": top1,
                "agreement": top1, "edge_macs_fraction": fraction, "kind": kind}

    cloud = [row(0, "input jpeg:quality=95", 20000, 0.86, kind="cloud_only"),
             row(0, "input jpeg:quality=75", 9000, 0.85, kind="cloud_only"),
             row(0, "input jpeg:quality=30", 4000, 0.80, kind="cloud_only"),
             # the camera frame is not "the input JPEG": never the comparison point
             row(0, "input jpeg:quality=90,frame=640x480", 100, 0.99, kind="cloud_only")]
    split6 = [row(6, "float32+raw", 125440, 0.865, 0.295, "float32"),
              row(6, "a", 2500, 0.858, 0.295), row(6, "b", 1500, 0.857, 0.295),
              row(6, "c", 400, 0.80, 0.295)]
    verdicts = {v["target"]: v for v in check_targets(cloud + split6, unsplit_top1=0.866)}
    third = verdicts["jpeg_third"]
    assert third["met"] and third["best"]["row"] == "b" and third["best"]["jpeg_bytes"] == 20000
    assert verdicts["64x_1pt"]["met_by"] == ["b"]
    assert not verdicts["256x_3pt"]["met"] and not verdicts["bottlenet_anchor"]["met"]
    # Beyond 30 % of the MACs on the robot the JPEG target does not count the split.
    late = [{**r, "edge_macs_fraction": 0.6} for r in split6]
    assert not {v["target"]: v for v in check_targets(cloud + late, 0.866)}["jpeg_third"]["met"]


def test_imagenet_rows_name_their_codec_whatever_produced_them():
    from split_infer.tools.bench.rate_accuracy_imagenet import _flat

    common = {"label": "x", "bytes_per_frame": 10.0, "accuracy": 0.5, "agreement": 0.6,
              "frames": 800}
    cloud = {**common, "kind": "cloud_only", "codec": "input jpeg:quality=90"}
    feature = {**common, "kind": "float32", "spec": "float32+raw"}
    config = {**common, "kind": "bundle_learned", "id": "split17_bbnet_r16", "method": "bbnet"}
    assert _flat(cloud, 0, 0.0)["codec"] == "input jpeg:quality=90"
    assert _flat(feature, 6, 0.3)["codec"] == "float32+raw"
    assert _flat(config, 17, 0.9)["codec"] == "split17_bbnet_r16"
    with pytest.raises(ValueError, match="names no codec"):
        _flat(common | {"kind": "x"}, 0, 0.0)


def test_the_testbed_benchmark_times_the_robot_once_and_names_the_plan_in_every_row(
        monkeypatch, tmp_path, capsys):
    """``--edge-timing measure``: one timing before the first run, its file in the header and
    in every row; without an adaptive strategy nothing is timed; a failed timing is one line."""
    e2e = _bench("testbed_e2e")
    timed = []

    def measure(bundle, edge_cpu, out):
        timed.append(edge_cpu)
        path = out / "plan_edge_cpu_0.25_x" / "edge_timing.json"
        path.parent.mkdir(parents=True)
        path.write_text("{}")
        return path

    given = []

    def run(settings):
        given.append(settings.edge_timing)
        summary = {**_run(settings.trace.name, settings.strategy, 0.5, rate=1e6),
                   "bound_by": "edge", "configurations_used": ["9:20.8"],
                   "configuration_switches": 0}
        return {"summary": summary, "reactions": [], "switches": [], "link": {"not_applied": []}}

    monkeypatch.setattr(e2e, "plan_placement", lambda settings: None)
    monkeypatch.setattr(e2e, "measure_robot", measure)
    monkeypatch.setattr(e2e, "run_testbed", run)
    monkeypatch.setattr(e2e, "plot", lambda table, out: [])
    argv = ["--edge-cpu", "0.25", "--edge-timing", "measure", "--traces", "const_1mbps.csv",
            "--repeats", "1", "--out", str(tmp_path)]
    assert e2e.main([*argv, "--strategies", "adaptive", "9:20.8"]) == 0
    assert timed == [0.25]
    written = json.loads((tmp_path / "results.json").read_text())
    plan = str(tmp_path / "plan_edge_cpu_0.25_x" / "edge_timing.json")
    assert written["edge_timing"] == plan
    assert [r["edge_timing"] for r in written["rows"]] == [plan, plan] == given

    assert e2e.main([*argv, "--strategies", "9:20.8"]) == 0
    assert timed == [0.25] and given[-1] == ""  # no adaptive strategy: nothing timed
    assert "the robot is not timed" in capsys.readouterr().err

    def fail(bundle, edge_cpu, out):
        raise RuntimeError("the edge timing under 0.25 CPU failed (1): boom")

    monkeypatch.setattr(e2e, "measure_robot", fail)
    with pytest.raises(SystemExit) as exit_:
        e2e.main([*argv, "--strategies", "adaptive"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--edge-timing measure: the edge timing under 0.25 CPU failed" in err
    assert "Traceback" not in err
