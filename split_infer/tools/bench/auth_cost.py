"""What frame authentication costs per frame: bytes on the wire, and CPU on each side.

    split-infer bench auth_cost [--bundle B] [--repeats 20000] [--out DIR]

For every configuration of the bundle, one real wire frame (a real image through the edge
part and codec) is signed (edge side: :func:`split_infer.frame_auth.sign`) and verified
(cloud side: :func:`split_infer.frame_auth.verify`) ``--repeats`` times; reported per frame:
payload bytes with and without the trailer, median µs to sign and to verify (each timed in
batches of 100, median and spread over the batches), and, for scale, µs to decode the frame
header. With ``--testbed-seconds`` (root), it also runs the real-link testbed (adaptive, on
``--trace``, default 100 kbit/s) with authentication off and on, alternating, ``--testbed-
repeats`` times each: delivered fps, ν_eff and wire bytes per frame. Writes
``auth_cost.json``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from split_infer.tools.bench import common

__all__ = ["main", "measure"]

_BATCH = 100


def _us_per_call(fn, repeats: int) -> dict[str, float]:
    batches = []
    for _ in range(max(1, repeats // _BATCH)):
        start = time.perf_counter_ns()
        for _ in range(_BATCH):
            fn()
        batches.append((time.perf_counter_ns() - start) / _BATCH / 1e3)
    return {"median": round(statistics.median(batches), 2),
            "min": round(min(batches), 2), "max": round(max(batches), 2)}


def measure(bundle_path: Path, repeats: int) -> list[dict[str, Any]]:
    """One row per configuration of the bundle (see the module docstring)."""
    import numpy as np

    from split_infer.bundle import Bundle
    from split_infer.frame_auth import FrameKey, KeyRing, sign, verify
    from split_infer.pipeline.engine import EdgeEngine
    from split_infer.wire import decode_frame

    bundle = Bundle.load(bundle_path)
    engine = EdgeEngine.from_bundle(bundle, threads=1)
    key = FrameKey(1, bytes(range(32)), frozenset({"/robot"}))
    keys = KeyRing({1: key})
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = bundle.preprocessing(image)
    rows = []
    for config in bundle.configurations:
        engine.activate(*config.key)
        frame = engine.encode(x, seq=1, stamp_ns=time.time_ns())
        signed = sign(frame, key)
        rows.append({
            "configuration": config.id, "codec": config.codec,
            "bytes": len(frame), "bytes_signed": len(signed),
            "added_bytes": len(signed) - len(frame),
            "sign_us": _us_per_call(lambda f=frame: sign(f, key), repeats),
            "verify_us": _us_per_call(lambda s=signed: verify(s, keys, "/robot"), repeats),
            "decode_header_us": _us_per_call(lambda f=frame: decode_frame(f), repeats),
        })
    return rows


def testbed_impact(bundle: Path, bag: Path, trace: str, seconds: float, repeats: int,
                   out: Path) -> list[dict[str, Any]]:
    """Adaptive over the real link with authentication off and on, alternating."""
    from tqdm import tqdm

    from split_infer.defaults import find_trace
    from split_infer.tools.testbed.runner import TestbedSettings, run_testbed

    runs = [(repeat, auth) for repeat in range(1, repeats + 1) for auth in (False, True)]
    rows = []
    for repeat, auth in tqdm(runs, desc="testbed", unit="run"):
        report = run_testbed(TestbedSettings(
            bundle=bundle, bag=bag, trace=find_trace(trace), duration_s=seconds,
            out_dir=out / f"{'on' if auth else 'off'}_{repeat}", status=False, auth=auth))
        summary = report["summary"]
        rows.append({"auth": auth, "repeat": repeat, **{k: summary.get(k) for k in (
            "delivered_fps", "effective_accuracy", "latency_ms_p50", "latency_ms_p99",
            "bytes_per_frame_mean", "wire_bytes_per_frame")}})
    return rows


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench auth_cost [ARGS]``."""
    parser = common.bench_parser("auth_cost", __doc__)
    common.add_bundle_arguments(parser)
    parser.add_argument("--repeats", type=int, default=20_000,
                        help="signatures and verifications timed per configuration "
                             "(default: %(default)s)")
    parser.add_argument("--testbed-seconds", type=float, default=0.0,
                        help="also run the real-link testbed this long per run, auth off and "
                             "on (root; default: 0 = no testbed runs)")
    parser.add_argument("--testbed-repeats", type=int, default=2,
                        help="testbed runs per setting (default: %(default)s)")
    parser.add_argument("--trace", default="const_100kbps.csv",
                        help="testbed trace (default: %(default)s)")
    common.add_out_argument(parser, "auth", "auth_cost.json")
    args = parser.parse_args(argv)
    if args.repeats < _BATCH:
        parser.error(f"--repeats must be at least {_BATCH}")
    common.limit_threads(1)
    rows = measure(args.bundle, args.repeats)
    report = {"command": common.command_line("auth_cost", argv), "started": common.timestamp(),
              "machine": common.machine_info(), "bundle": str(args.bundle), "rows": rows}
    if args.testbed_seconds > 0:
        report["testbed"] = testbed_impact(args.bundle, args.bag, args.trace,
                                           args.testbed_seconds, args.testbed_repeats,
                                           args.out / "testbed_runs")
        for row in report["testbed"]:
            print(f"testbed auth {'on ' if row['auth'] else 'off'} run {row['repeat']}: "
                  f"{row['delivered_fps']} fps, ν_eff {row['effective_accuracy']}, "
                  f"{row['wire_bytes_per_frame']} wire B/frame")
    path = common.write_json(args.out / "auth_cost.json", report)
    print(f"{'configuration':24s} {'bytes':>7s} {'+auth':>6s} {'sign µs':>8s} "
          f"{'verify µs':>9s} {'header µs':>9s}")
    for row in rows:
        print(f"{row['configuration']:24s} {row['bytes']:7d} {row['added_bytes']:+6d} "
              f"{row['sign_us']['median']:8.1f} {row['verify_us']['median']:9.1f} "
              f"{row['decode_header_us']['median']:9.1f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
