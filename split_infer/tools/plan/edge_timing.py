"""The robot's time per frame for a bundle, measured here under a CPU budget.

``split-infer plan --edge-cpu F`` runs this module in a child process that a cgroup limits to
F cores (:func:`split_infer.tools.testbed.cgroups.run_under_budget`)::

    python -m split_infer.tools.plan.edge_timing BUNDLE OUT.json [--seconds S] [--threads N]

It times every configuration's edge work (head + encoder + packing the wire frame, as
:class:`~split_infer.pipeline.engine.EdgeEngine` does it) and the whole model (the bundle's
``client_only`` part), each called back to back for ``--seconds``. The figure is the mean wall
time per call: under a quota, calls run at full speed until the period's budget is spent and
then wait, so the median call would miss the waiting; the mean over many periods is what a
frame costs at a steady rate. :func:`edge_time_scale` compares these times with the bundle's
profiled edge times: the factor the planner's ``edge_time_scale`` otherwise has to guess.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from split_infer.bundle import Bundle

__all__ = ["edge_time_scale", "main", "measure_edge_ms", "measure_under_budget"]


def _mean_ms(call, seconds: float, min_calls: int = 5) -> float:
    call()  # warm-up: ONNX Runtime allocates on the first run
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) * 1e3 / calls


def measure_edge_ms(bundle_path: str | Path, seconds: float = 0.5,
                    threads: int = 1) -> dict[str, float]:
    """Mean ms per frame of each configuration's edge work (by id) and of the whole model
    (``client_only``, when the bundle has it), on a random frame of the bundle's input size."""
    from split_infer.pipeline.backends import OrtBackend
    from split_infer.pipeline.engine import EdgeEngine

    bundle = Bundle.load(bundle_path)
    height, width = bundle.preprocessing.size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    x = bundle.preprocessing(image)
    engine = EdgeEngine.from_bundle(bundle, threads=threads)
    times = {}
    for config in bundle.configurations:
        active = engine.activate(config.split_point, config.ratio)
        times[config.id] = _mean_ms(lambda active=active: engine.encode(x, 0, 0, active),
                                    seconds)
    client = bundle.manifest.get("client_only") or {}
    if "onnx" in client:
        model = OrtBackend(bundle.read(client["onnx"]), intra_op_threads=threads)
        times["client_only"] = _mean_ms(lambda: model(x), seconds)
    return times


def edge_time_scale(bundle: Bundle, measured: dict[str, float]
                    ) -> tuple[float, dict[str, float]]:
    """The median over configurations (and the whole model) of measured / profiled edge time,
    and each ratio by id; ValueError when the bundle has no profiled edge time to compare."""
    profiled = {c.id: c.edge_ms for c in bundle.configurations}
    profiled["client_only"] = (bundle.manifest.get("client_only") or {}).get("edge_ms")
    ratios = {cid: ms / profiled[cid] for cid, ms in measured.items()
              if profiled.get(cid)}
    if not ratios:
        raise ValueError(f"{bundle.path}: no configuration has a profiled edge_ms to compare "
                         "the measurement with")
    return float(np.median(list(ratios.values()))), ratios


def measure_under_budget(bundle_path: str | Path, budget: float, out: Path,
                         seconds: float = 0.5, threads: int = 1) -> dict[str, float]:
    """:func:`measure_edge_ms` in a child process limited to ``budget`` cores (root; a
    CgroupError, one line for the user, where cgroups cannot be used)."""
    from split_infer.tools.testbed.cgroups import run_under_budget

    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_under_budget(
        [sys.executable, "-m", __spec__.name, str(bundle_path), str(out), "--seconds",
         str(seconds), "--threads", str(threads)], budget, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the edge timing under {budget:g} CPU failed "
                           f"({result.returncode}): {result.stderr.strip()[-500:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m split_infer.tools.plan.edge_timing BUNDLE OUT.json`` (the child process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="seconds of back-to-back calls per configuration")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(measure_edge_ms(args.bundle, args.seconds, args.threads),
                                   indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
