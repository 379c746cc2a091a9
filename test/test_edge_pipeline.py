"""EdgePipeline without rclpy: every decision the edge node used to make (rate limit,
backpressure, fallback, conversion, encoding, switching, counters) on the tiny bundle."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from ros_fixtures import random_images, tiny_bundle_fixture, with_measurements  # noqa: F401

from split_infer.config_key import EDGE_ONLY_KEY, config_key
from split_infer.pipeline.edge import (
    EdgeConfigError,
    EdgePipeline,
    EdgeSettings,
    parse_preload,
)
from split_infer.pipeline.engine import CloudEngine, EdgeEngine
from split_infer.pipeline.images import ImageError, RawImage, image_to_rgb
from split_infer.wire import decode_frame

pytestmark = pytest.mark.unit


def make(bundle, key=(3, 8.0), **settings) -> EdgePipeline:
    return EdgePipeline(bundle, bundle.configurations, config_key(*key),
                        EdgeSettings(**settings), clock_ns=lambda: 123)


def test_a_sent_frame_is_the_engine_s_wire_frame_with_increasing_seq(tiny_bundle):
    pipeline = make(tiny_bundle, max_in_flight=64)
    reference = EdgeEngine.from_bundle(tiny_bundle)
    reference.activate(3, 8.0)
    cloud = CloudEngine.from_bundle(tiny_bundle)
    images = random_images(3, seed=5)
    for i, image in enumerate(images):
        outcome = pipeline.process(image, now=float(i))
        assert outcome.kind == "sent" and outcome.seq == i and outcome.edge_s > 0
        frame = decode_frame(outcome.data)
        assert (frame.seq, frame.stamp_ns, frame.config) == (i, 123, (3, 8.0))
        expected = reference.encode(pipeline.preprocessing(image), seq=i, stamp_ns=123)
        assert outcome.data == expected
        np.testing.assert_allclose(cloud.decode(outcome.data)[1],
                                   cloud.decode(expected)[1])
    assert pipeline.stats()["sent"] == 3 and pipeline.stats()["received"] == 3


def test_rate_limit_and_backpressure_drop_before_converting(tiny_bundle):
    pipeline = make(tiny_bundle, max_rate=10.0, max_in_flight=1, ack_timeout=60.0)
    converted = []

    def frame():
        converted.append(1)
        return random_images(1)[0]

    assert pipeline.process(frame, now=0.0).kind == "sent"
    assert pipeline.process(frame, now=0.01).reason == "rate_limit"
    # one unacknowledged frame in flight and no estimate: held back until its receipt
    assert pipeline.process(frame, now=0.2).reason == "backpressure_in_flight"
    assert len(converted) == 1  # dropped frames were never converted
    pipeline.receipts([{"seq": 0.0, "cloud_ms": 2.0}])
    assert pipeline.process(frame, now=0.4).kind == "sent"
    assert pipeline.stats()["drops"] == {"backpressure_in_flight": 1, "rate_limit": 1}
    assert pipeline.stats()["acknowledged"] == 1


def test_the_period_report_counts_frames_received_before_the_edges_own_drops(tiny_bundle):
    pipeline = make(tiny_bundle, max_in_flight=1, ack_timeout=60.0)
    image = random_images(1)[0]
    pipeline.period_report(now=100.0)  # opens the period
    # A 10-Hz camera; frames 3 and 5 never reached the pipeline.
    stamps = [0.0, 0.1, 0.2, 0.4, 0.6, 0.7]
    kinds = [pipeline.process(image, now=100.0 + 0.1 * k, stamp_s=stamp).kind
             for k, stamp in enumerate(stamps)]
    assert kinds == ["sent"] + ["dropped"] * 5  # one in flight, never acknowledged
    report = pipeline.period_report(now=102.0)
    assert report.received_fps == pytest.approx(3.0)  # 6 frames reached it in 2 s
    assert report.fps == pytest.approx(0.5)  # 1 went on
    assert report.camera_share == pytest.approx(0.1 / (0.7 / 5))  # median gap / mean gap
    assert report.values["received_fps"] == "3.00"
    # Without stamps there is nothing to go by.
    assert pipeline.period_report(now=103.0).camera_share is None
    # A period that starts idle (the camera not playing yet) opens at its first frame
    # (over 10 s: 0.3 frames/s).
    pipeline.period_report(now=110.0)
    for k in range(3):
        pipeline.process(image, now=119.0 + 0.1 * k, stamp_s=1.0 + 0.1 * k)
    assert pipeline.period_report(now=120.0).received_fps == pytest.approx(3.0)


def test_the_period_report_gives_the_process_cpu_time_per_frame_worked_on(tiny_bundle,
                                                                         monkeypatch):
    import time

    pipeline = make(tiny_bundle, max_in_flight=1, ack_timeout=60.0)
    image = random_images(1)[0]
    # Process CPU seconds, set by the test: at the first report, from the first frame on (an
    # idle period ended: the window opens there, not at the report), then at each report.
    cpu = [9.0]
    monkeypatch.setattr(time, "process_time", lambda: cpu[0])
    pipeline.period_report(now=100.0)  # no frames yet
    cpu[0] = 10.0
    kinds = [pipeline.process(image, now=100.0 + 0.1 * k).kind for k in range(4)]
    assert kinds == ["sent"] + ["dropped"] * 3  # one in flight, never acknowledged
    cpu[0] = 10.03
    # Backpressure held most frames back (as in an outage): over the one frame worked on, the
    # process's CPU would be its own upkeep and the receiving of the frames it dropped, not
    # what a frame costs, so there is no figure (a scheduler would plan every configuration
    # several times slower than it is).
    held_back = pipeline.period_report(now=101.0)
    assert held_back.cpu_s_per_frame is None
    assert held_back.values["cpu_ms_per_frame"] == "unknown"
    # Frames acknowledged as they go are all worked on: 60 ms of CPU over two frames.
    for seq in range(2):
        pipeline.receipts([{"seq": seq, "cloud_ms": 1.0}])
        assert pipeline.process(image, now=101.1 + 0.1 * seq).kind == "sent"
    cpu[0] = 10.09
    report = pipeline.period_report(now=102.0)
    assert report.cpu_s_per_frame == pytest.approx(0.03)
    assert report.values["cpu_ms_per_frame"] == "30.00"
    cpu[0] = 10.10
    no_frames = pipeline.period_report(now=103.0)
    assert no_frames.cpu_s_per_frame is None and no_frames.values["cpu_ms_per_frame"] == "unknown"


def test_bad_input_is_a_counted_drop_never_an_exception(tiny_bundle):
    pipeline = make(tiny_bundle)
    bad = RawImage(height=2, width=2, encoding="yuv422_weird", is_bigendian=0, step=4,
                   data=b"\0" * 8)
    outcome = pipeline.process(lambda: image_to_rgb(bad))
    assert outcome.kind == "dropped" and outcome.reason == "image_unsupported_encoding"
    assert isinstance(outcome.error, ImageError)

    def broken():
        raise ZeroDivisionError("bug")

    outcome = pipeline.process(broken, now=10.0)
    assert outcome.reason == "internal_error" and isinstance(outcome.error, ZeroDivisionError)
    report = pipeline.period_report()
    assert report.bad_frames == 2 and report.values["drops.internal_error"] == 1


def test_reconfigure_validates_everything_before_applying_anything(tiny_bundle):
    pipeline = make(tiny_bundle)
    with pytest.raises(EdgeConfigError, match=r"valid .split_point, ratio. pairs"):
        pipeline.reconfigure(split_point=3, ratio=5.0, max_rate=7.0)
    assert pipeline.settings.max_rate == 0.0  # nothing applied
    with pytest.raises(EdgeConfigError, match="set_parameters_atomically"):
        pipeline.reconfigure(ratio=5.0)  # (3, 5) does not exist: only half a pair named
    with pytest.raises(EdgeConfigError, match="only select a default"):
        pipeline.reconfigure(split_point=-1)
    with pytest.raises(EdgeConfigError, match="unknown backend"):
        pipeline.reconfigure(backend="tensorrt")
    with pytest.raises(EdgeConfigError, match="client_only"):
        pipeline.reconfigure(fallback="edge_only")
    said = pipeline.reconfigure(split_point=2, ratio=4.0, max_rate=7.0)
    assert said and "split 2" in said[0]
    assert (pipeline.active.split_point, pipeline.active.ratio) == (2, 4.0)
    assert pipeline.settings.max_rate == 7.0
    outcome = pipeline.process(random_images(1)[0], now=0.0)
    assert decode_frame(outcome.data).config == (2, 4.0)


def test_edge_only_fallback_classifies_held_back_frames(tiny_bundle, tmp_path):
    import torch

    from split_infer.pipeline.parts import load_backbone
    from split_infer.pipeline.torch_backend import export_onnx

    full = export_onnx(load_backbone(tiny_bundle), torch.zeros(1, 3, 32, 32))
    bundle = with_measurements(tiny_bundle, tmp_path / "bundle", lambda c: {},
                               files={"onnx/full.onnx": full},
                               client_only={"onnx": "onnx/full.onnx"})
    with pytest.raises(EdgeConfigError, match="client_only"):
        make(tiny_bundle, fallback="edge_only")
    pipeline = make(bundle, fallback="edge_only", max_in_flight=1, ack_timeout=60.0)
    assert pipeline.process(random_images(1)[0], now=0.0).kind == "sent"
    outcome = pipeline.process(random_images(1, seed=3)[0], now=0.1)
    assert outcome.kind == "classified" and outcome.seq == 0
    assert outcome.logits.shape == (len(bundle.classes),)
    assert pipeline.stats()["edge_only"] == 1 and pipeline.stats()["drops"] == {}


def test_the_cpu_time_per_frame_leaves_the_fallback_s_frames_out(tiny_bundle, tmp_path,
                                                                  monkeypatch):
    """The scheduler plans the active configuration with the reported CPU time per frame: a
    whole-model frame of the fallback (here 50 ms) must not count as one of the split's (10 ms,
    plus 4 ms per frame spent outside every frame, shared by all frames), and the fallback's
    own figure is reported apart (50 + 4 ms); the first run of each model (200 ms more) is a
    warm-up, in neither."""
    import time

    import torch

    from split_infer.pipeline.parts import load_backbone
    from split_infer.pipeline.torch_backend import export_onnx

    full = export_onnx(load_backbone(tiny_bundle), torch.zeros(1, 3, 32, 32))
    bundle = with_measurements(tiny_bundle, tmp_path / "bundle", lambda c: {},
                               files={"onnx/full.onnx": full},
                               client_only={"onnx": "onnx/full.onnx"})
    pipeline = make(bundle, fallback="edge_only", max_in_flight=1, ack_timeout=60.0)
    cpu = [10.0]
    monkeypatch.setattr(time, "process_time", lambda: cpu[0])
    whole_model, engine_features = pipeline._full_model, pipeline._engine.features

    def costs(seconds, run):
        calls = []

        def timed(*args):
            cpu[0] += seconds + (0.0 if calls else 0.2)  # a session's first run costs more
            calls.append(1)
            return run(*args)
        return timed

    monkeypatch.setattr(pipeline, "_full_model", costs(0.05, whole_model))
    monkeypatch.setattr(pipeline._engine, "features", costs(0.01, engine_features))
    image = random_images(1)[0]
    pipeline.period_report(now=0.0)
    kinds = []
    for k in range(4):  # sent, held back (classified here), acknowledged, sent, held back
        if k == 2:
            pipeline.receipts([{"seq": 0, "cloud_ms": 1.0}])
        kinds.append(pipeline.process(image, now=0.1 + 0.1 * k).kind)
    assert kinds == ["sent", "classified", "sent", "classified"]
    cpu[0] += 4 * 0.004  # what the node spent outside the frames
    report = pipeline.period_report(now=1.0)
    assert report.cpu_s_per_frame == pytest.approx(0.014)
    assert report.fallback_fps == pytest.approx(2 / 0.9)  # the period opened at the 1st frame
    assert report.fallback_cpu_s_per_frame == pytest.approx(0.054)
    assert report.cpu_ms() == {"fallback_cpu_ms": pytest.approx(54.0),
                               "companion_cpu_ms": None, "edge_cpu_ms": pytest.approx(14.0)}
    assert report.values["frames_fallback"] == 2
    # Without fallback frames the figure is the process's CPU time over its frames, as before.
    pipeline.receipts([{"seq": 1, "cloud_ms": 1.0}])
    assert pipeline.process(image, now=1.1).kind == "sent"
    cpu[0] += 0.004
    report = pipeline.period_report(now=2.0)
    assert report.cpu_s_per_frame == pytest.approx(0.014) and report.fallback_fps == 0.0
    assert report.fallback_cpu_s_per_frame is None


def test_what_a_whole_model_frame_costs_the_split_frame_after_it_is_the_fallback_s(
        tiny_bundle, tmp_path, monkeypatch):
    """A split frame after a whole-model frame runs on caches the whole model filled (here
    6 ms more than the 10 ms it takes after a split frame): the scheduler plans the split with
    what it costs alone, and the whole model with what it costs the robot."""
    import time

    import torch

    from split_infer.pipeline.backpressure import Decision
    from split_infer.pipeline.parts import load_backbone
    from split_infer.pipeline.torch_backend import export_onnx

    full = export_onnx(load_backbone(tiny_bundle), torch.zeros(1, 3, 32, 32))
    bundle = with_measurements(tiny_bundle, tmp_path / "bundle", lambda c: {},
                               files={"onnx/full.onnx": full},
                               client_only={"onnx": "onnx/full.onnx"})
    pipeline = make(bundle, fallback="edge_only")
    cpu, last = [10.0], [""]
    monkeypatch.setattr(time, "process_time", lambda: cpu[0])
    whole_model, engine_features = pipeline._full_model, pipeline._engine.features

    def whole(*args):
        cpu[0] += 0.05
        last[0] = "whole"
        return whole_model(*args)

    def split(*args):
        cpu[0] += 0.01 + (0.006 if last[0] == "whole" else 0.0)
        last[0] = "split"
        return engine_features(*args)

    monkeypatch.setattr(pipeline, "_full_model", whole)
    monkeypatch.setattr(pipeline._engine, "features", split)
    go, hold = Decision(True, None, 0.0, -1.0, 0.0), Decision(False, "bandwidth", 0.0, -1.0,
                                                              math.nan)
    image = random_images(1)[0]

    def frames(decisions, start):
        for k, decision in enumerate(decisions):
            monkeypatch.setattr(pipeline._pressure, "should_process_frame",
                                lambda now, d=decision: d)
            pipeline.process(image, now=start + 0.01 * k)

    frames([go, hold, go, go, go], 0.0)  # the models' first runs, a split after a split
    pipeline.period_report(now=1.0)
    frames([hold, go, hold, go, go], 1.0)
    cpu[0] += 5 * 0.002  # outside the frames
    report = pipeline.period_report(now=2.0)
    assert report.cpu_s_per_frame == pytest.approx(0.010 + 0.002)
    assert report.fallback_cpu_s_per_frame == pytest.approx(0.050 + 0.006 + 0.002)


def test_the_fallback_fills_only_a_wait_long_enough_for_the_whole_model(tiny_bundle, tmp_path,
                                                                        monkeypatch):
    import torch

    from split_infer.pipeline.backpressure import Decision
    from split_infer.pipeline.parts import load_backbone
    from split_infer.pipeline.torch_backend import export_onnx

    full = export_onnx(load_backbone(tiny_bundle), torch.zeros(1, 3, 32, 32))
    bundle = with_measurements(tiny_bundle, tmp_path / "bundle", lambda c: {},
                               files={"onnx/full.onnx": full},
                               client_only={"onnx": "onnx/full.onnx"})
    pipeline = make(bundle, fallback="edge_only")
    held: list[Decision] = []
    monkeypatch.setattr(pipeline._pressure, "should_process_frame", lambda now: held[-1])
    image = random_images(1)[0]
    # Unknown whole-model time, or no estimate (the in-flight cap): always. The first run is
    # a warm-up (a cold session), no measure of the whole model's time.
    held.append(Decision(False, "bandwidth", 0.01, -1.0, 0.011))
    assert pipeline.process(image, now=0.0).kind == "classified"
    assert pipeline._whole_model_s is None
    assert pipeline.process(image, now=0.05).kind == "classified"
    assert pipeline._whole_model_s is not None
    pipeline._whole_model_s = 0.080  # as if measured so
    held.append(Decision(False, "in_flight", 0.01, -1.0, math.nan))
    assert pipeline.process(image, now=0.1).kind == "classified"
    # A 10-ms frame on the link: a 5-ms wait is no reason to hold the next split frame back
    # by 75 ms; a 75-ms wait is.
    monkeypatch.setattr(pipeline._pressure, "frame_interval_s", lambda now: 0.010)
    held.append(Decision(False, "bandwidth", 0.01, -1.0, 0.015))
    outcome = pipeline.process(image, now=0.2)
    assert outcome.kind == "dropped" and outcome.reason == "backpressure_bandwidth"
    held.append(Decision(False, "bandwidth", 0.01, -1.0, 0.085))
    assert pipeline.process(image, now=0.3).kind == "classified"
    # A slow link (a frame takes longer than the whole model): every held-back frame.
    monkeypatch.setattr(pipeline._pressure, "frame_interval_s", lambda now: 0.100)
    held.append(Decision(False, "bandwidth", 0.01, -1.0, 0.011))
    assert pipeline.process(image, now=0.4).kind == "classified"
    assert pipeline.stats()["edge_only"] == 5


def test_edge_only_configuration_classifies_every_frame_and_switches_back(tiny_bundle,
                                                                         tmp_path):
    import torch

    from split_infer.pipeline.parts import load_backbone
    from split_infer.pipeline.torch_backend import export_onnx

    with pytest.raises(EdgeConfigError, match=r"edge-only configuration.*client_only"):
        make(tiny_bundle).reconfigure(split_point=-1, ratio=1.0)
    full = export_onnx(load_backbone(tiny_bundle), torch.zeros(1, 3, 32, 32))
    bundle = with_measurements(tiny_bundle, tmp_path / "bundle", lambda c: {},
                               files={"onnx/full.onnx": full},
                               client_only={"onnx": "onnx/full.onnx"})
    pipeline = make(bundle)
    said = pipeline.reconfigure(split_point=-1, ratio=1.0)
    assert "edge-only" in said[0]
    assert pipeline.active_key == EDGE_ONLY_KEY and pipeline.edge_only_active
    # No backpressure, no link: every frame, even with frames "in flight", is classified.
    outcomes = [pipeline.process(image, now=0.01 * k)
                for k, image in enumerate(random_images(5))]
    assert [o.kind for o in outcomes] == ["classified"] * 5
    assert [o.seq for o in outcomes] == list(range(5))
    report = pipeline.period_report()
    assert report.values["active_split"] == -1
    assert report.values["active_configuration"] == "edge_only"
    assert report.fps > 0  # classified frames count as done
    assert pipeline.reconfigure(split_point=-1, ratio=1.0) == []  # already active
    said = pipeline.reconfigure(split_point=3, ratio=8.0)  # back to the split it left
    assert said and "split 3" in said[0] and not pipeline.edge_only_active
    outcome = pipeline.process(random_images(1)[0], now=1.0)
    assert outcome.kind == "sent" and decode_frame(outcome.data).config == (3, 8.0)


def test_malformed_feedback_is_refused(tiny_bundle):
    pipeline = make(tiny_bundle)
    with pytest.raises(ValueError, match="not a frame number"):
        pipeline.receipts([{"seq": 1.5, "cloud_ms": 1.0}])
    assert not pipeline.set_bandwidth(float("nan"), lower_bound=False)
    assert pipeline.set_bandwidth(2e6, lower_bound=False)
    assert pipeline.stats()["ignored"] == {"bad_bandwidth": 1}


def test_parse_preload_names_the_bad_entry(tiny_bundle):
    assert parse_preload(tiny_bundle, ["all"]) == tiny_bundle.configurations
    assert [c.key for c in parse_preload(tiny_bundle, ["3:8", "3:8", "2:4"])] == [
        (3, 8.0), (2, 4.0)]
    with pytest.raises(EdgeConfigError, match=r"'9:9'.*valid entries"):
        parse_preload(tiny_bundle, ["9:9"])
    with pytest.raises(EdgeConfigError, match=r"'oops'"):
        parse_preload(tiny_bundle, ["oops"])


def test_the_robot_side_imports_neither_rclpy_nor_torch():
    """The pipeline and the adaptation code are ROS-free, and the ONNX path needs no torch."""
    code = ("import sys\n"
            "import split_infer.pipeline.edge, split_infer.pipeline.stages\n"
            "import split_infer.adaptation.scheduling, split_infer.adaptation.estimator\n"
            "bad = sorted(m for m in ('rclpy', 'torch') if m in sys.modules)\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_camera_share_tells_lost_frames_from_a_slow_camera():
    from split_infer.pipeline.counters import CameraShare

    share = CameraShare()
    for k in range(30):  # a 30-Hz camera, every frame arrives
        share.observe(k / 30)
    assert share.take() == pytest.approx(1.0)
    assert share.take() is None  # nothing since
    for k in range(10):  # a 10-Hz camera, every frame arrives: slow, but nothing lost
        share.observe(10.0 + k / 10)
    assert share.take() == pytest.approx(1.0)
    # Frames lost in bursts, as when a CPU quota stalls the robot: 3 of every 5 taken.
    stamps = [20.0 + (5 * b + i) / 30 for b in range(6) for i in range(3)]
    for stamp in stamps:
        share.observe(stamp)
    assert share.take() == pytest.approx((1 / 30) / ((stamps[-1] - stamps[0]) / 17))
    # A bag starting over (stamps back to 0) or a paused camera (a 5-s gap) is no loss.
    for stamp in (0.0, 1 / 30, 2 / 30, 3 / 30, 5.1, 5.1 + 1 / 30):
        share.observe(stamp)
    assert share.take() == pytest.approx(1.0)


def test_the_companion_runs_its_share_of_the_frames_evenly_and_names_it_on_the_wire(
        tiny_bundle):
    pipeline = make(tiny_bundle, max_in_flight=64, companion="2:4", companion_share=0.25)
    cloud = CloudEngine.from_bundle(tiny_bundle)
    image = random_images(1)[0]
    pipeline.period_report(now=0.0)
    sent = [pipeline.process(image, now=0.1 * k) for k in range(8)]
    configs = [decode_frame(o.data).config for o in sent]
    assert configs == [(3, 8.0)] * 3 + [(2, 4.0)] + [(3, 8.0)] * 3 + [(2, 4.0)]
    assert [o.seq for o in sent] == list(range(8))  # one sequence for both
    assert all(cloud.decode(o.data)[1].shape for o in sent)  # the cloud decodes either
    report = pipeline.period_report(now=1.0)
    assert report.companion_fps == pytest.approx(2 / 1.0)
    assert report.values["frames_companion"] == 2 and report.values["companion"] == "2:4"
    assert pipeline.active_key == (3, 8.0)  # the companion is no switch
    # A live change of share and companion applies from the next frame.
    assert pipeline.reconfigure(companion="3:16", companion_share=0.5) == [
        "companion: split 3, ratio 16 (" + pipeline._companion.codec.spec + ")"]
    configs = [decode_frame(pipeline.process(image, now=2 + 0.1 * k).data).config
               for k in range(4)]
    assert configs == [(3, 8.0), (3, 16.0), (3, 8.0), (3, 16.0)]
    pipeline.reconfigure(companion="")
    assert {decode_frame(pipeline.process(image, now=3 + 0.1 * k).data).config
            for k in range(4)} == {(3, 8.0)}


@pytest.mark.parametrize(("changes", "message"), [
    ({"companion": "9:1"}, "companion '9:1': not a preloaded configuration; valid "
                           "'split:ratio' entries: 2:4, 2:8, "),
    ({"companion": "fast"}, "companion 'fast'"),
    ({"companion": "-1:1"}, "fallback"),
    ({"companion": "2:4", "companion_share": 1.5}, "companion_share 1.5"),
    ({"companion_share": math.nan}, "companion_share nan"),
])
def test_a_companion_the_edge_cannot_run_is_refused_and_nothing_changes(tiny_bundle, changes,
                                                                         message):
    pipeline = make(tiny_bundle, companion="2:8", companion_share=0.5)
    with pytest.raises(EdgeConfigError, match=message):
        pipeline.reconfigure(split_point=2, ratio=4.0, **changes)
    assert pipeline.active_key == (3, 8.0) and pipeline.settings.companion == "2:8"
    assert pipeline.settings.companion_share == 0.5
    with pytest.raises(EdgeConfigError, match=message):
        make(tiny_bundle, **{"companion": "2:8", **changes})


def test_the_cpu_time_per_frame_keeps_the_companion_s_frames_apart(tiny_bundle, monkeypatch):
    """The active configuration's figure is what it costs alone (10 ms, 16 ms right after a
    companion frame: the 6 ms are the companion's doing), the companion's is its own (30 ms
    plus those 6), each plus its share of what the process spent outside the frames."""
    import time

    pipeline = make(tiny_bundle, max_in_flight=64, companion="2:4", companion_share=0.5)
    cpu, last = [10.0], [""]
    monkeypatch.setattr(time, "process_time", lambda: cpu[0])
    engine_features = pipeline._engine.features

    def features(x, config=None):
        companion = config is not None and config.split_point == 2
        cpu[0] += 0.03 if companion else 0.01 + (0.006 if last[0] == "companion" else 0.0)
        last[0] = "companion" if companion else "active"
        return engine_features(x, config)

    monkeypatch.setattr(pipeline._engine, "features", features)
    image = random_images(1)[0]
    pipeline.reconfigure(companion_share=0.0)
    for k in range(3):  # both models' first runs (warm-ups), then active after active
        pipeline.process(image, now=0.1 * k)
    pipeline.reconfigure(companion_share=1.0)
    pipeline.process(image, now=0.35)
    pipeline.reconfigure(companion_share=0.5)
    pipeline.period_report(now=0.4)
    for k in range(6):  # active, companion, ... in turn
        pipeline.process(image, now=0.5 + 0.1 * k)
    cpu[0] += 6 * 0.002
    report = pipeline.period_report(now=1.5)
    assert report.cpu_s_per_frame == pytest.approx(0.010 + 0.002)
    assert report.values["companion_cpu_ms_per_frame"] == f"{(0.030 + 0.006 + 0.002) * 1e3:.2f}"
    assert report.cpu_ms()["companion_cpu_ms"] == pytest.approx(38.0)
    assert report.companion_fps == pytest.approx(3 / 1.1)


def test_a_new_companion_share_counts_from_the_next_frame(tiny_bundle):
    pipeline = make(tiny_bundle, max_in_flight=64, companion="2:4", companion_share=0.25)
    image = random_images(1)[0]
    for k in range(3):  # three quarters of a companion frame owed, none run yet
        assert decode_frame(pipeline.process(image, now=0.1 * k).data).config == (3, 8.0)
    pipeline.reconfigure(companion_share=0.5)
    configs = [decode_frame(pipeline.process(image, now=1 + 0.1 * k).data).config
               for k in range(2)]
    assert configs == [(3, 8.0), (2, 4.0)]  # not the old share's debt at once
