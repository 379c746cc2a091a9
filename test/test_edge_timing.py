"""The robot's time per frame that ``plan --edge-cpu`` measures for the scheduler."""

from __future__ import annotations

import math

import pytest

from split_infer.bundle import Bundle
from split_infer.defaults import DEFAULT_BUNDLE
from split_infer.tools.cli import main as cli_main
from split_infer.tools.plan.edge_timing import (
    CAMERA_FRAME,
    ROUNDS,
    edge_time_scale,
    measure_edge_ms,
    measure_edge_times,
    parse_camera_size,
)


def test_every_configuration_is_timed_from_the_camera_frame(monkeypatch):
    # What is timed, not how fast it ran (timings belong in bench/: plan_edge_cpu results).
    from split_infer.pipeline import images

    bundle = Bundle.load(DEFAULT_BUNDLE)
    frames = []
    real = images.image_to_frame
    monkeypatch.setattr(images, "image_to_frame",
                        lambda msg, **kw: frames.append(msg.height) or real(msg, **kw))
    wall, cpu = measure_edge_times(DEFAULT_BUNDLE, seconds=0.03, camera=(48, 64))
    ids = {c.id for c in bundle.configurations}
    assert ids | {CAMERA_FRAME} <= set(wall) and set(cpu) == set(wall)
    assert all(math.isfinite(ms) for ms in [*wall.values(), *cpu.values()])
    # Every call of every configuration read the camera message (a warm-up and at least five
    # calls per round): none is timed from a ready network input.
    assert len(frames) >= len(wall) * ROUNDS * 6 and set(frames) == {48}
    assert measure_edge_ms(DEFAULT_BUNDLE, seconds=0.01, camera=(48, 64)).keys() == wall.keys()


def test_the_scale_compares_the_model_part_with_the_profile():
    bundle = Bundle.load(DEFAULT_BUNDLE)
    profiled = {c.id: c.edge_ms for c in bundle.configurations}
    # Twice the profile plus a camera frame: the scale is 2, not inflated by the frame.
    measured = {cid: 2 * ms + 7.0 for cid, ms in profiled.items()}
    scale, ratios = edge_time_scale(bundle, {**measured, CAMERA_FRAME: 7.0})
    assert scale == pytest.approx(2.0)
    assert set(ratios) == set(profiled)
    scale_without, _ = edge_time_scale(bundle, measured)
    assert scale_without > 2.0


@pytest.mark.parametrize("text, expected", [("640x480", (480, 640)), ("1280X720", (720, 1280))])
def test_camera_sizes_parse(text, expected):
    assert parse_camera_size(text) == expected


@pytest.mark.parametrize("text", ["640", "640x", "x480", "0x480", "-640x480", "640x480x3", ""])
def test_bad_camera_sizes_are_refused(text):
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_camera_size(text)


def test_plan_refuses_a_bad_camera_size_in_one_line(tmp_path, capsys):
    assert cli_main(["plan", "--edge-cpu", "0.25", "--camera-size", "vga",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--camera-size" in err and "Traceback" not in err


def test_the_demo_plans_with_its_robots_measured_times_stretched(monkeypatch, tmp_path):
    import json

    from split_infer.adaptation.configurations import configurations_from_bundle, with_edge_timing
    from split_infer.tools.plan import edge_timing

    bundle = Bundle.load(DEFAULT_BUNDLE)
    here = {**{c.id: 1.0 + i for i, c in enumerate(bundle.configurations)},
            "client_only": 9.0, CAMERA_FRAME: 0.5}
    monkeypatch.setattr(edge_timing, "measure_edge_ms", lambda *a, **k: dict(here))
    path = edge_timing.emulated_robot_timing(DEFAULT_BUNDLE, 6.0, tmp_path)
    written = json.loads(path.read_text())
    assert written["camera_frame_ms"] == pytest.approx(3.0)
    assert written["measured_ms"] == pytest.approx(
        {name: 6 * ms for name, ms in here.items() if name != CAMERA_FRAME})
    # What the scheduler node does with its edge_timing parameter.
    configs, _ = configurations_from_bundle(bundle)
    planned = with_edge_timing(configs, written["measured_ms"], written["edge_time_scale"])
    assert {c.name: c.edge_s * 1e3 for c in planned} == pytest.approx(
        {c.name: 6 * here[c.name] for c in configs})


def test_the_benchmark_times_the_robot_where_it_runs(monkeypatch, tmp_path):
    """``bench testbed_e2e --edge-timing measure``: a plan of this machine, in a stamped
    directory of its own, in the scheduler's format."""
    import json

    from split_infer.adaptation.configurations import (
        configurations_from_bundle,
        planned_cpu_times,
    )
    from split_infer.tools.bench.testbed_e2e import measure_robot
    from split_infer.tools.plan import edge_timing

    bundle = Bundle.load(DEFAULT_BUNDLE)
    wall = {**{c.id: 2.0 * c.edge_ms + 1.0 for c in bundle.configurations},
            "client_only": 50.0, CAMERA_FRAME: 1.0}
    cpu = {name: ms / 4 for name, ms in wall.items()}
    budgets = []

    def timed(bundle_path, budget, out, **kwargs):
        budgets.append(budget)
        return dict(wall), dict(cpu)

    monkeypatch.setattr(edge_timing, "measure_under_budget", timed)
    path = measure_robot(bundle, 0.25, tmp_path)
    assert budgets == [0.25]
    assert path.name == "edge_timing.json" and path.parent.name.startswith("plan_edge_cpu_0.25_")
    written = json.loads(path.read_text())
    assert written["edge_cpu"] == 0.25 and written["camera_size"] == "640x480"
    assert written["camera_frame_ms"] == 1.0
    assert CAMERA_FRAME not in written["measured_ms"]
    assert written["edge_time_scale"] == pytest.approx(2.0)  # (wall − camera) / profile
    assert written["measured_ms"]["client_only"] == 50.0
    configs, _ = configurations_from_bundle(bundle)
    assert planned_cpu_times(configs, written["measured_cpu_ms"]) == pytest.approx(
        {c.name: cpu[c.name] / 1e3 for c in configs})


def test_the_benchmark_cannot_time_the_robot_without_a_budget(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["bench", "testbed_e2e", "--edge-timing", "measure"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--edge-timing measure needs --edge-cpu" in err and "Traceback" not in err
