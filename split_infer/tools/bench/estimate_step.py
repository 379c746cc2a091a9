"""Bandwidth-estimate step response over the real-link testbed (root; issue 6's target, and
issue 16's with probing: within 15 % of the shaped rate within 2 s of a step).

    sudo .venv/bin/split-infer bench estimate_step [--bundle B] [--trace step_3_1_2mbps.csv]
        [--split 10 | --sender SPLIT:RATIO] [--probing] [--repeats 3]
        [--out bench/results/testbed/estimate_step]

Without probing, the monitor can only measure a capacity the sender fills: on an unsaturated
link the delivered rate is a lower bound of it, flagged as one, and says nothing about the
shaped rate. So the default sender is the naive float32 split at ``--split`` (added to a copy
of the bundle as ``split-infer bench testbed_e2e`` does; 16.4 KB frames at layer3.2 of the
default bundle, 3.9 Mbit/s at 30 fps), fixed, with its edge pacing by the estimate as in every
split strategy, over a trace whose every rate is below what it offers
(``config/traces/step_3_1_2mbps.csv``).

With ``--probing`` the link prober and the probe echo run (:mod:`split_infer.adaptation.
probing`), and ``--sender`` picks one of the bundle's configurations instead, e.g. a learned
one whose frames use a few percent of the link: then only the probe trains can show the
capacity. The report adds the probes' cost (bits/s, and as a fraction of the mean estimate).

For each step the testbed reports when the estimate came within 15 % of the new rate and stayed
there for 1 s. Writes ``estimate_step.json`` (every repeat's reactions, their median and worst,
the probe cost) and ``estimate_step.png`` (shaped rate and every repeat's estimate against
time).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from split_infer.bundle import Bundle
from split_infer.defaults import find_trace
from split_infer.tools.bench import common
from split_infer.tools.bench.testbed_e2e import naive_bundle
from split_infer.tools.link import load_trace
from split_infer.tools.testbed.runner import TestbedSettings, run_testbed

TARGET_S = 2.0


def summarize(runs: list[list[dict]]) -> list[dict]:
    """Per step (in trace order): the reaction times of every repeat, their median and worst
    (None where the estimate never settled within 15 %), and whether every repeat met the
    target. Pure, for testing."""
    steps = []
    for i, first in enumerate(runs[0]):
        times = [run[i]["estimate_within_15pct_after_s"] if i < len(run) else None
                 for run in runs]
        settled = [t for t in times if t is not None]
        steps.append({
            "t_s": first["t_s"], "rate_before_bps": first["rate_before_bps"],
            "rate_after_bps": first["rate_after_bps"], "within_15pct_after_s": times,
            "median_s": float(np.median(settled)) if settled else None,
            "worst_s": None if len(settled) < len(times) else max(settled),
            "target_met": len(settled) == len(times) and max(settled) <= TARGET_S,
        })
    return steps


def plot(trace_path: Path, timelines: list[list[dict]], out: Path, sender: str = "",
         probing: bool = False) -> None:
    """The shaped rate (±15 %) and every repeat's bandwidth estimate against time."""
    plt = common.pyplot()
    trace = load_trace(trace_path)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    end = max(row["t_s"] for timeline in timelines for row in timeline)
    times = [*trace.times_s, end]
    rates = [*trace.rates_bps, trace.rates_bps[-1]]
    ax.step(times, np.asarray(rates) / 1e6, where="post", color="black", linewidth=2,
            label="shaped rate")
    ax.fill_between(times, np.asarray(rates) * 0.85e-6, np.asarray(rates) * 1.15e-6,
                    step="post", color="black", alpha=0.1, label="±15 %")
    for k, timeline in enumerate(timelines):
        ax.plot([r["t_s"] for r in timeline],
                [(r["estimate_bps"] or np.nan) / 1e6 for r in timeline], alpha=0.8,
                label=f"estimate, run {k + 1}")
    ax.set(xlabel="time (s)", ylabel="Mbit/s",
           title=f"bandwidth monitor against the shaped rate ({sender or 'float32 sender'}"
                 f"{', probing' if probing else ''})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench estimate_step [ARGS]`` (as root: the testbed needs namespaces)."""
    parser = common.bench_parser("estimate_step", __doc__)
    common.add_bundle_arguments(parser)
    parser.add_argument("--trace", default="step_3_1_2mbps.csv",
                        help="stepped trace: a file, or a name in config/traces/ "
                             "(default: %(default)s)")
    parser.add_argument("--split", type=int, default=10,
                        help="split point of the naive float32 sender (default: %(default)s)")
    parser.add_argument("--sender", default="", metavar="SPLIT:RATIO",
                        help="send this configuration of the bundle instead of the naive "
                             "float32 split (e.g. 10:86.4: frames far below the link rate)")
    parser.add_argument("--probing", action="store_true",
                        help="run the link prober and the probe echo")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the whole trace (default: %(default)s)")
    parser.add_argument("--tail", type=float, default=15.0, metavar="SECONDS",
                        help="seconds to run after the last step (default: %(default)g)")
    common.add_out_argument(parser, "testbed/estimate_step")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    trace_path = find_trace(args.trace)
    trace = load_trace(trace_path)
    if len(trace.times_s) < 2:
        parser.error(f"{args.trace} has no step")
    bundle = Bundle.load(args.bundle)
    if args.split not in {c.split_point for c in bundle.configurations}:
        parser.error(f"--split {args.split}: the bundle has split points "
                     f"{sorted({c.split_point for c in bundle.configurations})}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sender:
        try:
            split, _, ratio = args.sender.partition(":")
            sender = bundle.configuration(int(split), float(ratio))
        except Exception as exc:
            valid = ", ".join(f"{c.split_point}:{c.ratio:g}" for c in bundle.configurations)
            parser.error(f"--sender {args.sender!r}: {exc}; use one of {valid}")
        run_bundle, strategy = bundle, args.sender
        sender_text = f"{strategy} ({sender.codec}, {sender.bytes_per_frame:.0f} B/frame)"
    else:
        run_bundle, strategy = naive_bundle(bundle, args.split)
        sender_text = (f"{strategy} (float32, "
                       f"{run_bundle.configuration(args.split, 1.0).bytes_per_frame:.0f} "
                       "B/frame)")
    duration = float(trace.times_s[-1]) + args.tail
    runs, timelines, costs = [], [], []
    started = common.timestamp()
    for repeat in tqdm(range(args.repeats), desc="estimate_step", unit="run"):
        run_started = time.time()
        report = run_testbed(TestbedSettings(
            bundle=run_bundle.path, bag=args.bag, trace=trace_path, duration_s=duration,
            out_dir=args.out / "runs" / f"run{repeat + 1}", strategy=strategy, status=False,
            probing=args.probing))
        runs.append(report["reactions"])
        timelines.append(report["timeline"])
        summary = report["summary"]
        costs.append({"probe_bps": summary.get("probe_bps"),
                      "probe_fraction_of_estimate": summary.get("probe_fraction_of_estimate"),
                      "bytes_per_frame_mean": summary.get("bytes_per_frame_mean"),
                      "delivered_fps": summary.get("delivered_fps")})
        tqdm.write(f"[{repeat + 1}/{args.repeats}] {time.time() - run_started:.0f} s: "
                   + ", ".join(f"{r['rate_before_bps'] / 1e6:g}→{r['rate_after_bps'] / 1e6:g} "
                               f"Mbit/s {r['estimate_within_15pct_after_s']} s"
                               for r in report["reactions"]))
    steps = summarize(runs)
    result = {"command": common.command_line("estimate_step", argv), "started": started,
              "trace": str(trace_path), "sender": sender_text, "probing": args.probing,
              "target_s": TARGET_S, "steps": steps, "runs": runs, "run_costs": costs,
              "machine": common.machine_info()}
    common.write_json(args.out / "estimate_step.json", result)
    plot(trace_path, timelines, args.out / "estimate_step.png", sender_text, args.probing)
    for step in steps:
        print(f"{step['rate_before_bps'] / 1e6:g} → {step['rate_after_bps'] / 1e6:g} Mbit/s: "
              f"{step['within_15pct_after_s']} s (median {step['median_s']}, worst "
              f"{step['worst_s']}; target ≤ {TARGET_S:g} s "
              f"{'met' if step['target_met'] else 'NOT met'})")
    if args.probing:
        fractions = [c["probe_fraction_of_estimate"] for c in costs
                     if c["probe_fraction_of_estimate"] is not None]
        if fractions:
            print(f"probe cost: {min(fractions):.3%}–{max(fractions):.3%} of the mean estimate")
    print(f"wrote {args.out / 'estimate_step.json'} and {args.out / 'estimate_step.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
