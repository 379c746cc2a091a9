"""Fault injection over the real-link testbed (root): the graph must give 0 stale or
misdecoded outputs and recover within 2 s after each fault ends (issue 7).

    sudo .venv/bin/split-infer bench faults [--bundle B] [--out bench/results/faults]

Faults (adaptive strategy, the shipped bag at 30 fps, a 5 Mbit/s link):

* packet loss of 1 %, 5 % and 20 % from 5 s to 20 s (iptables ``statistic`` drops);
* a 10 s outage (rate 0: every packet dropped), with the edge's ``fallback`` both ``drop``
  and ``edge_only``;
* the cloud process killed (SIGKILL) at 8 s and a new one started at 12 s;
* the scheduler's process killed (SIGKILL) at 8 s (the edge must keep its last configuration);
* delay 50 ms ± 20 ms (uniform, packets kept in order) from 5 s to 15 s: ``netem``, or on a
  kernel without it the testbed's NFQUEUE delayer; the row says if neither works.

A result is *stale* when it reaches the robot more than 1 s after its frame was captured,
*misdecoded* when it names another configuration than the frame the edge sent, and a
*duplicate* when a frame is answered twice. Recovery is the time from a fault's end to the
first result of a frame captured after it. Writes ``faults.json`` and prints a table.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from split_infer.tools.bench import common
from split_infer.tools.link import Trace, write_trace
from split_infer.tools.testbed.netns import NetnsLink
from split_infer.tools.testbed.runner import TestbedSettings, run_testbed

RATE_BPS = 5e6


def _trace(rows: list[tuple[float, float, float, float]], name: str, out: Path) -> Path:
    return write_trace(Trace.from_rows(rows, name), out / f"{name}.csv")


def scenarios(out: Path) -> list[tuple[str, dict]]:
    """(name, TestbedSettings keyword arguments) for every fault."""
    clean = _trace([(0, RATE_BPS, 0, 0)], "clean_5mbps", out)
    runs: list[tuple[str, dict]] = []
    for loss in (0.01, 0.05, 0.20):
        trace = _trace([(0, RATE_BPS, 0, 0), (5, RATE_BPS, 0, loss), (20, RATE_BPS, 0, 0)],
                       f"loss_{int(loss * 100)}pct", out)
        runs.append((f"loss {loss:.0%} (5-20 s)", {"trace": trace, "duration_s": 26.0}))
    outage = _trace([(0, RATE_BPS, 0, 0), (5, 0, 0, 0), (15, RATE_BPS, 0, 0)], "outage_10s",
                    out)
    runs.append(("outage 10 s, fallback drop", {"trace": outage, "duration_s": 22.0}))
    runs.append(("outage 10 s, fallback edge_only", {"trace": outage, "duration_s": 22.0,
                                                     "fallback": "edge_only"}))
    runs.append(("cloud killed at 8 s, restarted at 12 s", {
        "trace": clean, "duration_s": 22.0,
        "events": ((8.0, "kill_cloud"), (12.0, "start_cloud"))}))
    runs.append(("scheduler killed at 8 s", {"trace": clean, "duration_s": 18.0,
                                             "events": ((8.0, "kill_scheduler"),)}))
    delay = _trace([(0, RATE_BPS, 0, 0), (5, RATE_BPS, 50, 0), (15, RATE_BPS, 0, 0)],
                   "delay_50ms", out)
    runs.append(("delay 50 ± 20 ms (5-15 s)", {"trace": delay, "duration_s": 20.0,
                                                "jitter_ms": 20.0}))
    return runs


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench faults [ARGS]`` (as root: the testbed needs network namespaces)."""
    parser = common.bench_parser("faults", __doc__)
    common.add_bundle_arguments(parser)
    common.add_out_argument(parser, "faults")
    args = parser.parse_args(argv)
    traces = args.out / "traces"
    traces.mkdir(parents=True, exist_ok=True)
    with NetnsLink() as probe:
        capabilities = dict(probe.capabilities)
    header = {"command": common.command_line("faults", argv), "started": common.timestamp(),
              "bundle": str(args.bundle), "link_capabilities": capabilities,
              "machine": common.machine_info()}
    rows = []
    runs = scenarios(traces)
    bar = tqdm(runs, desc="faults", unit="run")
    for i, (name, kwargs) in enumerate(bar, start=1):
        bar.set_postfix_str(name)
        run_dir = args.out / "runs" / f"{i:02d}"
        report = run_testbed(TestbedSettings(bundle=args.bundle, bag=args.bag,
                                             out_dir=run_dir, status=False, **kwargs))
        s = report["summary"]
        row = {"fault": name, **{k: s[k] for k in (
            "frames_generated", "frames_delivered", "effective_accuracy", "stale_results",
            "misdecoded_results", "duplicate_results", "latency_ms_p50", "latency_ms_p99")},
            "recoveries": report["recoveries"], "not_applied": report["link"]["not_applied"],
            "edge_stats": report["edge_stats"]}
        rows.append(row)
        tqdm.write(f"[{i}/{len(runs)}] {name}: delivered {s['frames_delivered']}/"
                   f"{s['frames_generated']}, stale {s['stale_results']}, misdecoded "
                   f"{s['misdecoded_results']}, recovery "
                   f"{[r['recovered_after_s'] for r in report['recoveries']]}"
                   + (f"; not applied here: {row['not_applied']}" if row["not_applied"]
                      else ""))
        common.write_json(args.out / "faults.json", {**header, "rows": rows})
    print(f"\n{'fault':<42}{'deliv.':>8}{'ν_eff':>7}{'stale':>6}{'misdec.':>8}{'dup':>5}"
          f"{'recovery s':>12}")
    for r in rows:
        recovery = ", ".join("-" if x["recovered_after_s"] is None else
                             f"{x['recovered_after_s']:.2f}" for x in r["recoveries"]) or "-"
        note = " (not applied: " + ", ".join(r["not_applied"]) + ")" if r["not_applied"] else ""
        print(f"{r['fault']:<42}{r['frames_delivered']:>8}{r['effective_accuracy'] or 0:>7.3f}"
              f"{r['stale_results']:>6}{r['misdecoded_results']:>8}{r['duplicate_results']:>5}"
              f"{recovery:>12}{note}")
    print(f"\nwrote {args.out / 'faults.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
