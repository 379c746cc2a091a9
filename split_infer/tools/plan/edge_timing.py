"""The robot's time per frame for a bundle, measured here under a CPU budget.

``split-infer plan --edge-cpu F`` runs this module in a child process that a cgroup limits to
F cores (:func:`split_infer.tools.testbed.cgroups.run_under_budget`)::

    python -m split_infer.tools.plan.edge_timing BUNDLE OUT.json [--seconds S] [--threads N]
        [--camera WxH]

It times what the robot does per camera frame in every configuration, starting from the
camera's message (``--camera``, raw ``rgb8``, as a camera driver publishes it): reading the
pixels and preprocessing them to the network's input (``camera_frame``, common to all), then
the edge work (head + encoder + packing the wire frame, as
:class:`~split_infer.pipeline.engine.EdgeEngine` does it), or the whole model (the bundle's
``client_only`` part). Each is called back to back for ``--seconds`` in all, split into
interleaved rounds (the median round counts). The figure is the mean
wall time per call: under a quota, calls run at full speed until the period's budget is spent
and then wait, so the median call would miss the waiting; the mean over many periods is what a
frame costs at a steady rate. The process CPU time per call is measured beside it
(``measured_cpu_ms`` in ``edge_timing.json``): the unit the edge node reports its own cost in
(``metrics/edge_cpu_ms``), which a paced robot pays whatever its budget, so the scheduler can
compare the two like with like (:meth:`~split_infer.adaptation.scheduling.SchedulingLoop.
observe_edge_cpu`).

The camera frame is part of every configuration's time because a weak robot pays it at every
frame: at 224 px, resizing and cropping a 640×480 frame is a sizeable share of a mid-network
head's work, and a scheduler that leaves it out predicts a frame rate the robot never reaches
(and sees no reason to move the split). :func:`edge_time_scale` compares the model part alone
(time − ``camera_frame``) with the bundle's profiled edge times, like with like: the factor
the planner's ``edge_time_scale`` otherwise has to guess.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from split_infer.bundle import Bundle

__all__ = ["CAMERA_FRAME", "DEFAULT_CAMERA", "RobotTiming", "edge_time_scale",
           "emulated_robot_timing", "main", "measure_edge_ms", "measure_edge_times",
           "measure_under_budget", "parse_camera_size", "write_robot_timing"]

#: The key of the camera frame's own cost (pixels read + preprocessed) in the measured times.
CAMERA_FRAME = "camera_frame"
#: Interleaved timing rounds (see :func:`measure_edge_ms`).
ROUNDS = 3
#: (height, width) of the camera frame timed by default: VGA, the demo bag's size.
DEFAULT_CAMERA = (480, 640)


def parse_camera_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. ``640x480``) → (height, width); ValueError otherwise."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0
            and int(height) > 0):
        raise ValueError(f"camera size {text!r} is not WIDTHxHEIGHT in pixels, e.g. 640x480")
    return int(height), int(width)


def _mean_ms(call, seconds: float, min_calls: int = 5) -> tuple[float, float]:
    """(wall, process CPU) ms per call."""
    call()  # warm-up: ONNX Runtime allocates on the first run
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while calls < min_calls or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return ((time.perf_counter() - start) * 1e3 / calls,
            (time.process_time() - cpu_start) * 1e3 / calls)


def measure_edge_ms(bundle_path: str | Path, seconds: float = 1.5, threads: int = 1,
                    camera: tuple[int, int] = DEFAULT_CAMERA) -> dict[str, float]:
    """Mean wall ms per frame, from a raw ``rgb8`` camera message of ``camera`` (height,
    width) pixels, of each configuration's robot work (by id), of the whole model
    (``client_only``, when the bundle has it), and of the camera frame alone
    (:data:`CAMERA_FRAME`: pixels read and preprocessed), which the others include."""
    return measure_edge_times(bundle_path, seconds, threads, camera)[0]


def measure_edge_times(bundle_path: str | Path, seconds: float = 1.5, threads: int = 1,
                       camera: tuple[int, int] = DEFAULT_CAMERA
                       ) -> tuple[dict[str, float], dict[str, float]]:
    """(wall, process CPU) ms per frame of what :func:`measure_edge_ms` times."""
    import cv2

    from split_infer.pipeline.backends import OrtBackend
    from split_infer.pipeline.engine import EdgeEngine
    from split_infer.pipeline.images import image_to_frame, rgb_to_image

    # As the robot's nodes run (the testbed's too): OpenCV's pool would run beside the caller
    # and, under a quota, spend the budget on thread hand-offs.
    cv2.setNumThreads(threads)
    bundle = Bundle.load(bundle_path)
    message = rgb_to_image(np.random.default_rng(0).integers(0, 256, (*camera, 3),
                                                            dtype=np.uint8))
    preprocessing = bundle.preprocessing

    def network_input() -> np.ndarray:
        return preprocessing(image_to_frame(message))

    engine = EdgeEngine.from_bundle(bundle, threads=threads)
    calls: dict[str, Callable[[], object]] = {CAMERA_FRAME: network_input}
    for config in bundle.configurations:
        active = engine.activate(config.split_point, config.ratio)
        calls[config.id] = lambda active=active: engine.encode(network_input(), 0, 0, active)
    client = bundle.manifest.get("client_only") or {}
    if "onnx" in client:
        model = OrtBackend(bundle.read(client["onnx"]), intra_op_threads=threads)
        calls["client_only"] = lambda: model(network_input())
    # Rounds over all calls, and the median per call: a quota-limited process's time drifts
    # by 10-20 % over seconds (other tenants, the quota's phase), so timing each call in one
    # block would put the drift between configurations; interleaved, it cancels.
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, call in calls.items():
            rounds[name].append(_mean_ms(call, seconds / ROUNDS))
    return ({name: float(np.median([wall for wall, _ in values]))
             for name, values in rounds.items()},
            {name: float(np.median([cpu for _, cpu in values]))
             for name, values in rounds.items()})


def emulated_robot_timing(bundle_path: str | Path, slowdown: float, out_dir: str | Path,
                          seconds: float = 0.3) -> Path:
    """The emulated robot's time per frame in every configuration, for the scheduler's
    ``edge_timing``: each measured here from a 640×480 camera frame, as the edge node gets
    the demo bag's (:func:`measure_edge_ms`), and stretched by ``slowdown`` as
    ``split-infer demo``'s slow edge node stretches its frames. Planning with the
    profile × slowdown instead leaves out the camera frame, which the robot pays in every
    configuration, and sees no reason to send the image itself. Returns the file written."""
    measured = measure_edge_ms(bundle_path, seconds=seconds, threads=1)
    path = Path(out_dir) / "edge_timing.json"
    path.write_text(json.dumps({
        "robot_slowdown": slowdown, "edge_time_scale": slowdown,
        "camera_frame_ms": measured[CAMERA_FRAME] * slowdown,
        "measured_ms": {name: ms * slowdown for name, ms in measured.items()
                        if name != CAMERA_FRAME}}, indent=2))
    return path


def edge_time_scale(bundle: Bundle, measured: dict[str, float]
                    ) -> tuple[float, dict[str, float]]:
    """The median over configurations (and the whole model) of measured / profiled edge time,
    and each ratio by id; ValueError when the bundle has no profiled edge time to compare.
    The profile times the model parts alone, so the camera frame's time (when ``measured``
    has :data:`CAMERA_FRAME`) is taken off first."""
    profiled = {c.id: c.edge_ms for c in bundle.configurations}
    profiled["client_only"] = (bundle.manifest.get("client_only") or {}).get("edge_ms")
    camera_ms = measured.get(CAMERA_FRAME, 0.0)
    ratios = {cid: max(ms - camera_ms, 0.0) / profiled[cid] for cid, ms in measured.items()
              if cid != CAMERA_FRAME and profiled.get(cid)}
    if not ratios:
        raise ValueError(f"{bundle.path}: no configuration has a profiled edge_ms to compare "
                         "the measurement with")
    return float(np.median(list(ratios.values()))), ratios


def measure_under_budget(bundle_path: str | Path, budget: float, out: Path,
                         seconds: float = 1.5, threads: int = 1,
                         camera: tuple[int, int] = DEFAULT_CAMERA
                         ) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`measure_edge_times` in a child process limited to ``budget`` cores (root; a
    CgroupError, one line for the user, where cgroups cannot be used)."""
    from split_infer.tools.testbed.cgroups import run_under_budget

    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_under_budget(
        [sys.executable, "-m", __spec__.name, str(bundle_path), str(out), "--seconds",
         str(seconds), "--threads", str(threads), "--camera", f"{camera[1]}x{camera[0]}"],
        budget, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the edge timing under {budget:g} CPU failed "
                           f"({result.returncode}): {result.stderr.strip()[-500:]}")
    times = json.loads(out.read_text())
    return times["wall_ms"], times["cpu_ms"]


@dataclass(frozen=True)
class RobotTiming:
    """What :func:`write_robot_timing` measured and wrote."""

    path: Path  # the edge_timing.json written
    edge_time_scale: float  # median measured / profiled edge time (:func:`edge_time_scale`)
    ratios: dict[str, float]  # that ratio by configuration id
    camera_frame_ms: float  # the camera frame's share of every configuration's time


def write_robot_timing(bundle: Bundle, budget: float, out_dir: Path,
                       camera: tuple[int, int] = DEFAULT_CAMERA) -> RobotTiming:
    """Time ``bundle``'s edge parts under ``budget`` cores (:func:`measure_under_budget`) and
    write the scheduler's ``edge_timing.json`` into ``out_dir`` (the raw times beside it, as
    ``edge_timing_raw.json``): ``measured_ms``, each configuration's whole time per frame
    from the camera message (``client_only``: the whole model); ``camera_frame_ms``, the part
    of it every configuration pays; ``measured_cpu_ms``, the CPU time of the same, which the
    edge node reports of itself; ``edge_time_scale`` and its ``ratios``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    measured, cpu = measure_under_budget(bundle.path, budget, out_dir / "edge_timing_raw.json",
                                         camera=camera)
    scale, ratios = edge_time_scale(bundle, measured)
    camera_ms = measured.pop(CAMERA_FRAME)
    cpu.pop(CAMERA_FRAME)
    path = out_dir / "edge_timing.json"
    path.write_text(json.dumps({"edge_cpu": budget, "edge_time_scale": scale,
                                "camera_size": f"{camera[1]}x{camera[0]}",
                                "camera_frame_ms": camera_ms, "measured_ms": measured,
                                "measured_cpu_ms": cpu, "ratios": ratios}, indent=2))
    return RobotTiming(path, scale, ratios, camera_ms)


def main(argv: list[str] | None = None) -> int:
    """``python -m split_infer.tools.plan.edge_timing BUNDLE OUT.json`` (the child process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="seconds of back-to-back calls per configuration (in "
                             f"{ROUNDS} interleaved rounds)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--camera", type=parse_camera_size, default=DEFAULT_CAMERA,
                        metavar="WIDTHxHEIGHT", help="camera frame size (default 640x480)")
    args = parser.parse_args(argv)
    wall, cpu = measure_edge_times(args.bundle, args.seconds, args.threads, args.camera)
    args.out.write_text(json.dumps({"wall_ms": wall, "cpu_ms": cpu}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
