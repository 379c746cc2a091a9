"""Soak test: the whole graph (``split-infer demo``) at 30 fps for a long time, watching for
leaks and drift (issue 7). A script, not a CI test.

    split-infer bench soak --minutes 60 [--bundle B] [--trace T] [--out bench/results/soak]

Every ``--sample-s`` seconds it records this process's resident memory (``VmRSS``), its open
file descriptors (``/proc/self/fd``) and the frames delivered so far. After a warm-up
(``--warmup-minutes``, allocator and caches settling) it fits straight lines and reports:

* the RSS slope in MB/min (target ≤ 1 MB/min);
* the open-fd count at the start and end of the measured span, and its maximum (must not
  grow);
* delivered throughput per minute and its drift (slope, fps per hour).

Writes ``soak.json`` and ``soak.png`` (RSS, fds and fps against time) and the demo's own
``report.json``/``timeline.png`` next to them.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
from tqdm import tqdm

from split_infer.defaults import find_trace
from split_infer.tools.bench import common


def rss_mb() -> float:
    """This process's resident memory (``VmRSS``), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


class Sampler:
    """Collects (elapsed s, RSS MB, fds, delivered frames) at most every ``period_s``; moves
    ``progress`` (a tqdm bar counting seconds), if given, to the elapsed time."""

    def __init__(self, period_s: float, progress: tqdm | None = None) -> None:
        self.period_s = period_s
        self.progress = progress
        self.rows: list[tuple[float, float, int, int]] = []
        self._lock = threading.Lock()

    def __call__(self, elapsed_s: float, generated: int, delivered: int, correct: int) -> None:
        """The demo's ``on_tick``: sample if ``period_s`` has passed since the last sample."""
        with self._lock:
            if self.progress is not None:
                self.progress.update(min(int(elapsed_s), self.progress.total) - self.progress.n)
            if self.rows and elapsed_s - self.rows[-1][0] < self.period_s:
                return
            self.rows.append((elapsed_s, rss_mb(), open_fds(), delivered))
            if len(self.rows) % max(1, int(60 / self.period_s)) == 0:
                t, rss, fds, frames = self.rows[-1]
                tqdm.write(f"soak t={t / 60:5.1f} min RSS {rss:7.1f} MB fds {fds} "
                           f"delivered {frames}")


def analyse(rows: list[tuple[float, float, int, int]], warmup_s: float) -> dict:
    """Slopes and counts over the samples after ``warmup_s`` (pure, for testing)."""
    data = np.array(rows, dtype=float)
    span = data[data[:, 0] >= warmup_s]
    if len(span) < 3:
        raise ValueError(f"only {len(span)} samples after the warm-up: run longer")
    t_min = span[:, 0] / 60
    rss_slope = float(np.polyfit(t_min, span[:, 1], 1)[0])
    minutes = np.arange(np.ceil(t_min[0]), np.floor(t_min[-1]) + 1)
    per_minute = []
    for start in minutes[:-1]:
        inside = span[(t_min >= start) & (t_min <= start + 1)]
        if len(inside) >= 2:
            per_minute.append((float(start), float((inside[-1, 3] - inside[0, 3])
                                                   / (inside[-1, 0] - inside[0, 0]))))
    drift = float(np.polyfit([m for m, _ in per_minute], [f for _, f in per_minute], 1)[0]
                  * 60) if len(per_minute) >= 2 else None
    return {
        "measured_minutes": round(float(t_min[-1] - t_min[0]), 2),
        "rss_mb_start": round(float(span[0, 1]), 1),
        "rss_mb_end": round(float(span[-1, 1]), 1),
        "rss_slope_mb_per_min": round(rss_slope, 4),
        "fds_start": int(span[0, 2]), "fds_end": int(span[-1, 2]),
        "fds_max": int(span[:, 2].max()),
        "fps_per_minute": [round(f, 2) for _, f in per_minute],
        "fps_drift_per_hour": None if drift is None else round(drift, 3),
    }


def plot(rows: list[tuple[float, float, int, int]], path: Path) -> None:
    """RSS, open fds and delivered fps against time, one panel each."""
    plt = common.pyplot()
    data = np.array(rows, dtype=float)
    t = data[:, 0] / 60
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, data[:, 1])
    axes[0].set(ylabel="RSS (MB)", title="soak: resident memory, open fds, delivered fps")
    axes[1].plot(t, data[:, 2], drawstyle="steps-post")
    axes[1].set(ylabel="open fds")
    fps = np.diff(data[:, 3]) / np.maximum(np.diff(data[:, 0]), 1e-9)
    axes[2].plot(t[1:], fps)
    axes[2].set(ylabel="delivered fps", xlabel="minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench soak [ARGS]``."""
    parser = common.bench_parser("soak", __doc__)
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="how long the graph runs (default: %(default)g)")
    parser.add_argument("--warmup-minutes", type=float, default=2.0,
                        help="minutes left out of the fits (default: %(default)g)")
    parser.add_argument("--sample-s", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between samples (default: %(default)g)")
    common.add_bundle_arguments(parser)
    parser.add_argument("--trace", default="const_5mbps.csv",
                        help="bandwidth trace: a file, or a name in config/traces/ "
                             "(default: %(default)s)")
    common.add_out_argument(parser, "soak")
    args = parser.parse_args(argv)
    if args.minutes <= args.warmup_minutes:
        parser.error("--minutes must be longer than --warmup-minutes")
    # Imported here: the graph needs ROS 2, the analysis and --help do not.
    from split_infer.tools.cli._common import ensure_ament_prefix

    ensure_ament_prefix()
    from split_infer.tools.demo.graph import DemoSettings, run_demo

    args.out.mkdir(parents=True, exist_ok=True)
    started = common.timestamp()
    with tqdm(total=round(args.minutes * 60), desc="soak", unit="s") as bar:
        sampler = Sampler(args.sample_s, bar)
        report = run_demo(DemoSettings(
            bundle=args.bundle, bag=args.bag, trace=find_trace(args.trace),
            duration_s=args.minutes * 60, out_dir=args.out, status=False, on_tick=sampler))
    result = {"command": common.command_line("soak", argv), "started": started,
              "minutes": args.minutes, "trace": args.trace,
              "bundle": str(args.bundle), **analyse(sampler.rows, args.warmup_minutes * 60),
              "demo_summary": report["summary"], "machine": common.machine_info(),
              "samples": sampler.rows}
    common.write_json(args.out / "soak.json", result)
    plot(sampler.rows, args.out / "soak.png")
    keys = ("measured_minutes", "rss_slope_mb_per_min", "rss_mb_start", "rss_mb_end",
            "fds_start", "fds_end", "fds_max", "fps_drift_per_hour")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
