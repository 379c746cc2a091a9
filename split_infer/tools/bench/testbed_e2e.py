"""End-to-end benchmark over the real-link testbed (root): every strategy on every trace.

    sudo .venv/bin/split-infer bench testbed_e2e [--bundle B] [--traces const_1mbps.csv ...]
        [--strategies cloud_only edge_only adaptive 10:26.1 ...] [--duration 20]
        [--repeats 3] [--edge-cpu 0.25] [--out bench/results/testbed]

For each trace, the same bag and backbone go through (see ``split-infer testbed``: every node
a process of its own, the edge side, the cloud side and the harness on disjoint CPUs, the
edge under ``--edge-cpu`` cores if given):

1. ``cloud_only`` — JPEG camera frames (image_transport/compressed style), whole model in the
   cloud; ``cloud_only_crop`` — the same with the model's input crop as the JPEG;
2. ``edge_only`` — whole model on the robot;
3. ``naive`` — float32 features at one split (``--naive-split``), as the only public ROS 2
   split demo sends them (added to a copy of the bundle: same parts, lossless);
4. fixed configurations (default: per split point the most accurate and the smallest, plus the
   learned configurations the bundle's search selected);
5. ``adaptive`` — bandwidth monitor + scheduler; with ``--scheduler-edge-only`` (the robot
   holds the whole model) its edge also classifies on board the frames its link cannot take
   (``fallback`` ``edge_only``), and the scheduler plans with them. A fixed configuration
   written ``split:ratio+fallback`` runs with the same fallback, to compare like with like;
   ``split:ratio+split:ratio@share`` runs the second configuration on ``share`` of the frames
   (the edge's ``companion``, :mod:`split_infer.planning.mixing`): a fixed mix. ``--mixing``
   lets the adaptive strategy's scheduler plan such mixes itself (rows: ``scheduler_mixing``).

Writes ``results.json`` (``rows``: every run's summary — among it ``bound_fps``, the run's own
physical bound, and ``valid``, its sanity gate — and step reactions; ``aggregate``: the
per-strategy means and spreads over repeats; ``targets``: the target checks;
``adaptation_targets``: the step traces' reactions, :func:`adaptation_checks`), ``summary.md``
(the same as Markdown tables), ``nu_eff_vs_bandwidth.png`` (Hu & K Fig. 3 style,
constant-rate traces, min–max bars over repeats), ``latency_vs_bandwidth.png`` (thesis Fig. 4.4
style), and each run's own ``report.json`` + ``timeline.png`` under ``runs/``.

``--merge`` keeps the runs of an earlier ``results.json`` in ``--out`` for every (trace,
strategy) this invocation does not run (re-gated with today's :func:`validity_gate`), so one
strategy can be measured again after a fix without repeating the others; ``merged`` in the
file lists the earlier commands. Each row names its machine (``machine_cpu``) and the plan its
invocation gave the scheduler (``edge_timing``, empty: the bundle's profile; only the
``adaptive`` rows ran one; rows from before 2026-12-07 do not say, and the header names only
the last invocation's); a trace whose
kept rows come from another machine than the strategies run now is refused (its targets
would compare machines), while whole traces from other machines may sit side by side.

Every target is a verdict (:func:`judge`): ``invalid`` when a run it involves failed its sanity
gate, ``inconclusive`` when its margin is smaller than the spread of the repeats (or there are
fewer than three), else ``met`` or ``not met``. Repeats go round the strategies in turn. A
progress bar counts the runs, each of ``--duration`` seconds (longer for traces with later
steps) plus the graph's start-up.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from split_infer.bundle import Bundle
from split_infer.config_key import parse_config_key
from split_infer.defaults import find_trace
from split_infer.tools.bench import common
from split_infer.tools.cli._common import control_side_argument
from split_infer.tools.link import load_trace
from split_infer.tools.testbed.report import validity_gate
from split_infer.tools.testbed.runner import TestbedSettings, plan_placement, run_testbed

#: ``--edge-timing`` value that times the robot here first (:func:`measure_robot`).
MEASURE_EDGE_TIMING = "measure"
#: A fixed configuration's strategy with this suffix runs with the edge's fallback.
FALLBACK_SUFFIX = "+fallback"


@dataclass(frozen=True)
class EdgeStrategy:
    """What a benchmark strategy asks of the testbed (:func:`testbed_strategy`)."""

    testbed: str  # TestbedSettings.strategy
    fallback: str = "drop"
    companion: str = ""
    companion_share: float = 0.0


DEFAULT_TRACES = ("const_100kbps.csv", "const_1mbps.csv", "const_5mbps.csv",
                  "const_20mbps.csv", "step_8_1_4mbps.csv", "outage_5mbps_10s.csv")


def default_strategies(bundle: Bundle) -> list[str]:
    """cloud_only, edge_only, per split the most accurate and the smallest configuration, the
    learned search's selections, and adaptive (``naive`` is added by :func:`main`)."""
    strategies = ["cloud_only", "edge_only"]
    configs = bundle.configurations
    chosen = []
    for split in sorted({c.split_point for c in configs}):
        here = [c for c in configs if c.split_point == split and c.accuracy is not None]
        if here:
            chosen.append(max(here, key=lambda c: (c.accuracy, -(c.bytes_per_frame or 0))))
            chosen.append(min(here, key=lambda c: (c.bytes_per_frame or 0, -c.accuracy)))
    selected = (bundle.manifest.get("learned") or {}).get("selected") or {}
    chosen += [bundle.configuration_by_id(cid) for cid in selected.values() if cid]
    for config in chosen:
        name = f"{config.split_point}:{config.ratio:g}"
        if name not in strategies:
            strategies.append(name)
    return [*strategies, "adaptive"]


def measure_robot(bundle: Bundle, edge_cpu: float, out: Path) -> Path:
    """``--edge-timing measure``: the robot's time per frame in every configuration, timed
    here under ``edge_cpu`` cores on the first CPU the budget may use, as the edge side runs
    by default (:func:`~split_infer.tools.plan.edge_timing.write_robot_timing`, as
    ``split-infer plan --edge-cpu`` does), into a directory of its own under ``out``;
    returns the ``edge_timing.json`` written. A plan timed on another machine
    misleads the scheduler by as much as the machines differ (``bench/README.md``,
    2026-12-07: a host a third faster than the plan's never tried edge-only at 0.3 Mbit/s),
    so the rows of one invocation are planned on the machine that runs them."""
    from split_infer.tools.plan.edge_timing import write_robot_timing

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    print(f"timing the robot's configurations under {edge_cpu:g} CPU ...", flush=True)
    timing = write_robot_timing(bundle, edge_cpu, out / f"plan_edge_cpu_{edge_cpu:g}_{stamp}")
    print(f"edge time scale {timing.edge_time_scale:.2f}× the bundle's profile; "
          f"wrote {timing.path}", flush=True)
    return timing.path


def naive_bundle(bundle: Bundle, split_point: int) -> tuple[Bundle, str]:
    """A copy of ``bundle`` with a ``float32+raw`` configuration at ``split_point`` (what the
    only public ROS 2 split demo sends): the same ONNX parts as the bundle's configurations
    there, lossless, so its accuracy is the unsplit model's; bytes from a real wire frame.

    The copy is a temporary directory removed when the process exits: it is a means of the
    run, not a result (a 224-px bundle is tens of MB)."""
    import atexit
    import shutil
    import tempfile

    from split_infer.bundle import BundleConfiguration, write_bundle
    from split_infer.codecs import get_codec
    from split_infer.wire import pack

    base = next(c for c in bundle.configurations
                if c.split_point == split_point and c.method == "baseline")
    codec = get_codec("float32+raw", shape=base.feature_shape)
    nbytes = len(pack(codec, np.zeros(base.feature_shape, np.float32), split_point=split_point,
                      ratio=1.0, seq=0, stamp_ns=0))
    out = Path(tempfile.mkdtemp(prefix="split_infer_naive_")) / "bundle"
    atexit.register(shutil.rmtree, out.parent, True)
    shutil.copytree(bundle.path, out)
    manifest = bundle.base_manifest()
    naive = BundleConfiguration.from_dict({
        **base.to_dict(), "id": f"split{split_point}_float32", "ratio": 1.0,
        "codec": codec.spec, "calibration": None, "bytes_per_frame": float(nbytes),
        "accuracy": (bundle.manifest.get("client_only") or {}).get("accuracy")})
    written = write_bundle(out, manifest, [*bundle.configurations, naive])
    return written, f"{split_point}:1"


def _constant_rate(trace_path: Path) -> float | None:
    trace = load_trace(trace_path)
    rates = set(np.asarray(trace.rates_bps).tolist())
    return rates.pop() if len(rates) == 1 else None


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


#: Fewer repeats than this leave every target inconclusive: their spread says nothing of the
#: run-to-run noise.
MIN_REPEATS = 3
#: The "done" target: at this rate or above, every strategy delivers FPS_TARGET (under an
#: edge CPU budget: at least FPS_TARGET_OF_BOUND of its compute bound, if that is less).
FPS_TARGET_RATE_BPS = 20e6
FPS_TARGET = 27.0
FPS_TARGET_OF_BOUND = 0.9
#: Link-bound runs: delivered fps ≥ this share of B/D (payload bytes per frame).
LINK_BOUND_TARGET = 0.9
VERDICTS = ("met", "not met", "inconclusive", "invalid")


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per (trace, strategy), in run order: the mean over repeats of each figure, the
    min/max of ν_eff and fps (the run-to-run spread), the mean bound, and ``valid``: every
    repeat ran and passed its sanity gate (a failed run counts as invalid). Pure, for
    testing."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["trace"], row["strategy"]), []).append(row)
    table = []
    for (trace, strategy), all_runs in groups.items():
        runs = [r for r in all_runs if "error" not in r]
        failed = len(all_runs) - len(runs)
        nu = [r.get("effective_accuracy") or 0.0 for r in runs] or [0.0]
        fps = [r.get("delivered_fps") or 0.0 for r in runs] or [0.0]
        invalid = failed + sum(not r.get("valid", True) for r in runs)
        gates = [r.get("gate") for r in runs if r.get("gate")]
        entry = {"trace": trace, "strategy": strategy, "rate_bps": all_runs[0].get("rate_bps"),
                 "repeats": len(runs), "failed": failed,
                 "effective_accuracy": float(np.mean(nu)),
                 "effective_accuracy_min": min(nu), "effective_accuracy_max": max(nu),
                 "delivered_fps_min": min(fps), "delivered_fps_max": max(fps),
                 "valid": invalid == 0, "invalid_repeats": invalid,
                 "link_limited": "link-limited" in gates,
                 "gate": Counter(gates).most_common(1)[0][0] if gates else None,
                 "edge_cpu_budget": next((r.get("edge_cpu_budget") for r in runs), None)}
        for key in ("delivered_fps", "latency_ms_p50", "latency_ms_p99", "bytes_per_frame_mean",
                    "wire_bytes_per_frame", "link_utilization", "link_bound_fps",
                    "link_bound_fps_wire", "bound_fps", "compute_bound_fps"):
            entry[key] = _mean([r.get(key) for r in runs])
        table.append(entry)
    return table


def regate(row: dict) -> dict:
    """``row`` with its sanity gate evaluated again from its own figures (:func:`validity_gate`:
    a run saved before the gate knew a robot that spent its budget). Rows without a bound
    (failed runs, older layouts) are returned as they are."""
    if "error" in row or row.get("bound_by") is None or row.get("bound_fps") is None:
        return row
    gate, valid = validity_gate(
        bound_by=row["bound_by"], bound_fps=row["bound_fps"],
        steady=row.get("gate") != "not steady", delivered_fps=row.get("delivered_fps") or 0.0,
        edge_cpu_percent=(row.get("cpu_percent_mean") or {}).get("edge"),
        edge_cpu_budget=row.get("edge_cpu_budget"))
    return {**row, "gate": gate, "valid": valid}


def merge_rows(earlier: list[dict], cells: set[tuple[str, str]]) -> list[dict]:
    """The earlier rows of every (trace, strategy) not in ``cells`` (those are run again),
    re-gated. Pure, for testing."""
    return [regate(r) for r in earlier if (r.get("trace"), r.get("strategy")) not in cells]


def merge_conflicts(earlier: list[dict], cells: set[tuple[str, str]], machine: str) -> list[str]:
    """The traces whose kept rows (:func:`merge_rows`) were measured on another machine
    (``machine_cpu``) than the strategies run again on them now: their targets would compare
    strategies across machines. Pure, for testing."""
    traces = {trace for trace, _ in cells}
    return sorted({r["trace"] for r in earlier
                   if r.get("trace") in traces and (r["trace"], r.get("strategy")) not in cells
                   and r.get("machine_cpu") != machine})


def testbed_strategy(strategy: str, scheduler_edge_only: bool) -> EdgeStrategy:
    """What the testbed runs for a benchmark strategy: a fixed configuration with
    :data:`FALLBACK_SUFFIX` runs with the edge's fallback, one with ``+split:ratio@share`` with
    that companion on that share of the frames, and ``adaptive`` classifies on board what the
    link cannot take when the scheduler may choose edge-only (its robot holds the whole model).
    ValueError for a suffix on anything but a fixed configuration, or a companion that is no
    ``split:ratio@share`` with a share in (0, 1)."""
    base, plus, rest = strategy.partition("+")
    if not plus:
        return EdgeStrategy(strategy, "edge_only" if strategy == "adaptive"
                            and scheduler_edge_only else "drop")
    if ":" not in base:
        raise ValueError(f"{strategy!r}: '+' follows a fixed configuration "
                         "('split:ratio+fallback' or 'split:ratio+split:ratio@share')")
    if plus + rest == FALLBACK_SUFFIX:
        return EdgeStrategy(base, "edge_only")
    companion, at, share = rest.partition("@")
    try:
        parse_config_key(companion)
        value = float(share)
    except ValueError:
        value = math.nan
    if not at or not 0.0 < value < 1.0:
        raise ValueError(f"{strategy!r}: after '+' comes 'fallback' or a companion "
                         "'split:ratio@share' with a share between 0 and 1 (as in "
                         "'split:ratio+split:ratio@0.25')")
    return EdgeStrategy(base, companion=companion, companion_share=value)


def _is_fixed(strategy: str) -> bool:
    return ":" in strategy or strategy == "naive"


def judge(margin: float, spread: float, *, valid: bool, repeats: int) -> str:
    """A target's verdict: ``invalid`` when a run it involves failed its sanity gate (or did
    not run), ``inconclusive`` with fewer than :data:`MIN_REPEATS` repeats or when the margin
    is smaller than the spread, else ``met`` (margin ≥ 0) or ``not met``."""
    if not valid:
        return "invalid"
    if repeats < MIN_REPEATS or abs(margin) < spread:
        return "inconclusive"
    return "met" if margin >= 0 else "not met"


def _spread(row: dict, key: str = "effective_accuracy") -> float:
    return row[f"{key}_max"] - row[f"{key}_min"]


def _check(margin: float, spread: float, rows: list[dict]) -> dict:
    return {"verdict": judge(margin, spread, valid=all(r["valid"] for r in rows),
                             repeats=min(r["repeats"] for r in rows)),
            "margin": round(margin, 4), "spread": round(spread, 4)}


def target_checks(table: list[dict]) -> list[dict]:
    """The targets per trace, from :func:`aggregate` rows, each a verdict of :func:`judge`
    with its margin and spread (the spread of a comparison a ≥ k·b is the larger of a's
    min–max spread and k times b's):

    * ``adaptive_ge_best_fixed`` — adaptive's mean ν_eff ≥ the best fixed configuration's;
    * ``adaptive_ge_2x_cloud_only`` (at ≤ 1 Mbit/s) — adaptive's ν_eff ≥ 2 × cloud-only's;
    * ``adaptive_ge_edge_only`` (at ≥ 1 Mbit/s) — adaptive's ν_eff ≥ edge-only's (a weak
      robot's target: where the link carries features, splitting must beat keeping the whole
      model on the robot);
    * ``link_bound`` — per fixed split whose runs the link limits: fps ≥ 0.9 · B/D (D the
      payload bytes per frame; the wire bytes shown alongside);
    * ``fps_target`` (at ≥ 20 Mbit/s) — per strategy: fps ≥ 27, or under an edge CPU budget
      ≥ 0.9 of its compute bound where that is less.

    ``noise`` is the largest ν_eff spread of any strategy on the trace, for reference."""
    checks = []
    for trace in dict.fromkeys(r["trace"] for r in table):
        here = {r["strategy"]: r for r in table if r["trace"] == trace}
        adaptive = here.get("adaptive")
        fixed = [r for s, r in here.items() if _is_fixed(s)]
        check: dict = {"trace": trace, "noise": max(_spread(r) for r in here.values())}
        if adaptive is not None and fixed:
            best = max(fixed, key=lambda r: r["effective_accuracy"])
            result = _check(adaptive["effective_accuracy"] - best["effective_accuracy"],
                            max(_spread(adaptive), _spread(best)), [adaptive, best])
            check.update(best_fixed=best["strategy"],
                         best_fixed_nu=best["effective_accuracy"],
                         adaptive_nu=adaptive["effective_accuracy"],
                         adaptive_ge_best_fixed=result["verdict"],
                         adaptive_vs_best_fixed=result)
        rate = next(iter(here.values()))["rate_bps"]
        if adaptive is not None and "cloud_only" in here and rate is not None and rate <= 1e6:
            cloud = here["cloud_only"]
            result = _check(adaptive["effective_accuracy"] - 2 * cloud["effective_accuracy"],
                            max(_spread(adaptive), 2 * _spread(cloud)), [adaptive, cloud])
            check.update(cloud_only_nu=cloud["effective_accuracy"],
                         adaptive_ge_2x_cloud_only=result["verdict"],
                         adaptive_vs_2x_cloud_only=result)
        if adaptive is not None and "edge_only" in here and rate is not None and rate >= 1e6:
            edge = here["edge_only"]
            result = _check(adaptive["effective_accuracy"] - edge["effective_accuracy"],
                            max(_spread(adaptive), _spread(edge)), [adaptive, edge])
            check.update(edge_only_nu=edge["effective_accuracy"],
                         adaptive_ge_edge_only=result["verdict"],
                         adaptive_vs_edge_only=result)
        bound = []
        for strategy, r in here.items():
            if _is_fixed(strategy) and r["link_limited"] and r["link_bound_fps"]:
                result = _check(r["delivered_fps"] - LINK_BOUND_TARGET * r["link_bound_fps"],
                                _spread(r, "delivered_fps"), [r])
                bound.append({"strategy": strategy, "fps": r["delivered_fps"],
                              "fps_over_b_d": r["delivered_fps"] / r["link_bound_fps"],
                              "fps_over_b_d_wire": r["delivered_fps"] / r["link_bound_fps_wire"]
                              if r["link_bound_fps_wire"] else None, **result})
        check["link_bound"] = bound
        fps_target = []
        if rate is not None and rate >= FPS_TARGET_RATE_BPS:
            for strategy, r in here.items():
                required = FPS_TARGET
                if r["edge_cpu_budget"] is not None and r["compute_bound_fps"]:
                    required = min(FPS_TARGET, FPS_TARGET_OF_BOUND * r["compute_bound_fps"])
                result = _check(r["delivered_fps"] - required, _spread(r, "delivered_fps"), [r])
                fps_target.append({"strategy": strategy, "fps": r["delivered_fps"],
                                   "fps_min": r["delivered_fps_min"],
                                   "required_fps": round(required, 2), **result})
        check["fps_target"] = fps_target
        checks.append(check)
    return checks


#: A step trace's adaptation targets: the estimate within 15 % of the new rate, and the
#: configuration changed, this long after each step.
REACTION_TARGET_S = 2.0
#: Traces whose rate changes at least this far apart are step traces (the Gaussian traces,
#: a new rate every second, are not: no step there lasts long enough to be adapted to).
STEP_TRACE_MIN_GAP_S = 10.0


def _split_and_ratio(key: str) -> tuple[int, float]:
    split, ratio = key.split(":")
    return int(split), float(ratio)


def adaptation_checks(rows: list[dict]) -> list[dict]:
    """Per step trace (steps :data:`STEP_TRACE_MIN_GAP_S` or more apart), the adaptive runs'
    reactions (issue 16's step targets), each a count of the repeats that meet it and a
    verdict (``met``: every repeat; fewer than :data:`MIN_REPEATS` repeats:
    ``inconclusive``). Pure, for testing.

    * ``two_splits_two_ratios`` — the run used ≥ 2 split points and ≥ 2 compression ratios
      (edge-only counts as a split point, the model's end, and has no ratio);
    * ``configuration_within_2s`` — after every step the configuration changed within
      :data:`REACTION_TARGET_S` (a step after which it did not change at all fails);
    * ``estimate_within_2s`` — after every step to a non-zero rate the estimate was within
      15 % of the new rate (and stayed so for 1 s) within :data:`REACTION_TARGET_S`."""
    checks = []
    for trace in dict.fromkeys(r["trace"] for r in rows):
        runs = [r for r in rows if r["trace"] == trace and r["strategy"] == "adaptive"
                and "error" not in r and r.get("reactions")]
        if not runs:
            continue
        times = [x["t_s"] for x in runs[0]["reactions"]]
        if min(np.diff([0.0, *times])) < STEP_TRACE_MIN_GAP_S:
            continue
        per_run = []
        for r in runs:
            used = [_split_and_ratio(k) for k in r.get("configurations_used") or []]
            splits = sorted({s for s, _ in used})
            ratios = sorted({q for s, q in used if s >= 0})
            steps = r["reactions"]
            changed = [x["configuration_changed_after_s"] for x in steps]
            estimate = [x["estimate_within_15pct_after_s"] for x in steps
                        if x["rate_after_bps"] > 0]
            per_run.append({
                "repeat": r.get("repeat"), "splits": splits, "ratios": ratios,
                "configuration_changed_after_s": changed,
                "estimate_within_15pct_after_s": estimate,
                "two_splits_two_ratios": len(splits) >= 2 and len(ratios) >= 2,
                "configuration_within_2s": all(c is not None and c <= REACTION_TARGET_S
                                               for c in changed),
                "estimate_within_2s": all(e is not None and e <= REACTION_TARGET_S
                                          for e in estimate)})
        check: dict = {"trace": trace, "runs": per_run}
        for key in ("two_splits_two_ratios", "configuration_within_2s", "estimate_within_2s"):
            met = sum(run[key] for run in per_run)
            verdict = ("inconclusive" if len(per_run) < MIN_REPEATS
                       else "met" if met == len(per_run) else "not met")
            check[key] = {"verdict": verdict, "repeats_met": met, "repeats": len(per_run)}
        checks.append(check)
    return checks


def adaptation_markdown(checks: list[dict]) -> str:
    """:func:`adaptation_checks` as a Markdown table, one line per repeat and a verdict line
    per trace ("" when no trace steps)."""
    if not checks:
        return ""

    def seconds(values: list) -> str:
        return ", ".join("never" if v is None else f"{v:g}" for v in values) or "–"

    lines = ["", "| trace | repeat | splits | ratios | configuration changed after (s) | "
             "estimate within 15 % after (s) |", "|---|---|---|---|---|---|"]
    for c in checks:
        for run in c["runs"]:
            lines.append(f"| {c['trace']} | {run['repeat']} | "
                         f"{', '.join('edge-only' if s < 0 else str(s) for s in run['splits'])}"
                         f" | {', '.join(f'{q:g}' for q in run['ratios']) or '–'} | "
                         f"{seconds(run['configuration_changed_after_s'])} | "
                         f"{seconds(run['estimate_within_15pct_after_s'])} |")
        verdicts = "; ".join(
            f"{label}: {c[key]['verdict']} ({c[key]['repeats_met']}/{c[key]['repeats']})"
            for key, label in (("two_splits_two_ratios", "≥ 2 splits and ≥ 2 ratios"),
                               ("configuration_within_2s", "switch ≤ 2 s after each step"),
                               ("estimate_within_2s", "estimate ≤ 2 s after each step")))
        lines.append(f"| {c['trace']} | targets | {verdicts} | | | |")
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _verdict(result: dict | None) -> str:
    if not result:
        return "–"
    if result["verdict"] == "invalid":
        return "invalid"
    return f"{result['verdict']} ({result['margin']:+.3g} ± {result['spread']:.3g})"


def markdown(table: list[dict], checks: list[dict]) -> str:
    """The aggregate table and the target checks as Markdown (``summary.md``). A cell is
    "invalid" when a repeat failed its sanity gate (or did not run); a verdict shows its
    margin ± the spread it was judged against."""
    lines = ["| trace | strategy | ν_eff mean [min–max] | fps [min–max] | bound fps | valid | "
             "p50 / p99 ms | B/frame | wire B/frame | link util. |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        spread = (f" [{r['effective_accuracy_min']:.3f}–{r['effective_accuracy_max']:.3f}]"
                  if r["repeats"] > 1 else "")
        fps = (f" [{r['delivered_fps_min']:.1f}–{r['delivered_fps_max']:.1f}]"
               if r["repeats"] > 1 else "")
        valid = ("yes" if r["valid"] else
                 f"invalid ({r['invalid_repeats']}/{r['repeats'] + r['failed']})")
        if r["valid"] and r.get("gate") not in (None, "applied"):
            valid = f"yes ({r['gate']})"
        lines.append(
            f"| {r['trace']} | {r['strategy']} | {r['effective_accuracy']:.3f}{spread} | "
            f"{_fmt(r['delivered_fps'], '.1f')}{fps} | {_fmt(r.get('bound_fps'), '.1f')} | "
            f"{valid} | {_fmt(r['latency_ms_p50'], '.0f')} / "
            f"{_fmt(r['latency_ms_p99'], '.0f')} | {_fmt(r['bytes_per_frame_mean'], '.0f')} | "
            f"{_fmt(r['wire_bytes_per_frame'], '.0f')} | {_fmt(r['link_utilization'], '.2f')} |")
    lines += ["", "| trace | adaptive ν | best fixed ν | adaptive ≥ best fixed | cloud-only ν | "
              "adaptive ≥ 2× cloud-only | edge-only ν | adaptive ≥ edge-only | "
              "link-bound fps ≥ 0.9·B/D: fps/(B/D) [wire] | "
              f"fps ≥ {FPS_TARGET:g} (or ≥ {FPS_TARGET_OF_BOUND:g}× compute bound) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        bound = ", ".join(
            f"{b['strategy']} {b['fps_over_b_d']:.2f} [{_fmt(b['fps_over_b_d_wire'], '.2f')}] "
            f"{_verdict(b)}" for b in c["link_bound"]) or "–"
        fps = ", ".join(f"{f['strategy']} {f['fps']:.1f}/{f['required_fps']:g} {_verdict(f)}"
                        for f in c["fps_target"]) or "–"
        lines.append(
            f"| {c['trace']} | {_fmt(c.get('adaptive_nu'), '.3f')} | "
            f"{c.get('best_fixed', '–')} {_fmt(c.get('best_fixed_nu'), '.3f')} | "
            f"{_verdict(c.get('adaptive_vs_best_fixed'))} | "
            f"{_fmt(c.get('cloud_only_nu'), '.3f')} | "
            f"{_verdict(c.get('adaptive_vs_2x_cloud_only'))} | "
            f"{_fmt(c.get('edge_only_nu'), '.3f')} | "
            f"{_verdict(c.get('adaptive_vs_edge_only'))} | {bound} | {fps} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict], out: Path) -> list[Path]:
    """ν_eff and p50 latency against the constant link rates, one line per strategy (means of
    the repeats; ν_eff with min–max bars); traces whose rate varies get ν_eff per trace, one
    bar per strategy."""
    plt = common.pyplot()
    constant = [r for r in table if r["rate_bps"] is not None]
    written = _plot_varying([r for r in table if r["rate_bps"] is None], out)
    if not constant:
        return written
    for key, ylabel, name, log in (
            ("effective_accuracy", "ν_eff (dropped frames count as wrong)",
             "nu_eff_vs_bandwidth.png", False),
            ("latency_ms_p50", "end-to-end latency p50 (ms)", "latency_vs_bandwidth.png",
             True)):
        fig, ax = plt.subplots(figsize=(8, 5))
        for strategy in dict.fromkeys(r["strategy"] for r in constant):
            # Keyed by rate only: two traces of one rate (with and without a budget) tie.
            points = sorted(((r["rate_bps"] / 1e6, r) for r in constant
                             if r["strategy"] == strategy and r[key] is not None),
                            key=lambda point: point[0])
            if not points:
                continue
            xs = [x for x, _ in points]
            ys = [r[key] for _, r in points]
            style = {"linewidth": 3, "color": "black"} if strategy == "adaptive" else {}
            if key == "effective_accuracy":
                # The mean is rounded and the extremes are not: never a negative bar.
                pairs = list(zip(ys, points, strict=True))
                bars = [[max(y - r["effective_accuracy_min"], 0.0) for y, (_, r) in pairs],
                        [max(r["effective_accuracy_max"] - y, 0.0) for y, (_, r) in pairs]]
                ax.errorbar(xs, ys, yerr=bars, marker="o", capsize=3, label=strategy, **style)
            else:
                ax.plot(xs, ys, marker="o", label=strategy, **style)
        ax.set(xscale="log", xlabel="shaped link rate (Mbit/s)", ylabel=ylabel,
               title=f"{ylabel.split(' (')[0]} against bandwidth, real veth + tc link")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        written.append(common.save_figure(fig, out / name))
    return written


def _plot_varying(cells: list[dict], out: Path) -> list[Path]:
    """``nu_eff_by_trace.png``: per varying trace, each strategy's mean ν_eff with min–max
    bars (nothing when every trace is a constant rate)."""
    if not cells:
        return []
    plt = common.pyplot()
    traces = list(dict.fromkeys(c["trace"] for c in cells))
    strategies = list(dict.fromkeys(c["strategy"] for c in cells))
    width = 0.8 / len(strategies)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 * len(traces)), 4.5))
    for i, strategy in enumerate(strategies):
        xs, ys, low, high = [], [], [], []
        for t, trace in enumerate(traces):
            cell = next((c for c in cells if c["trace"] == trace and c["strategy"] == strategy
                         and c["effective_accuracy"] is not None), None)
            if cell is None:
                continue
            xs.append(t - 0.4 + width * (i + 0.5))
            ys.append(cell["effective_accuracy"])
            # The mean is rounded and the extremes are not: never a negative bar length.
            low.append(max(cell["effective_accuracy"] - cell["effective_accuracy_min"], 0.0))
            high.append(max(cell["effective_accuracy_max"] - cell["effective_accuracy"], 0.0))
        style = {"color": "black"} if strategy == "adaptive" else {}
        ax.bar(xs, ys, width, yerr=[low, high], capsize=3, label=strategy, **style)
    ax.set_xticks(range(len(traces)), [t.removesuffix(".csv") for t in traces])
    ax.set(ylabel="ν_eff (dropped frames count as wrong)", ylim=(0, 1),
           title="ν_eff per varying trace, real link\n(mean of the repeats, min–max bars)")
    ax.grid(alpha=0.3, axis="y")
    # Below the axes: inside, the legend covered the bottom of the bars.
    ax.legend(fontsize=7, ncol=min(len(strategies), 4), loc="upper center",
              bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    return [common.save_figure(fig, out / "nu_eff_by_trace.png")]


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench testbed_e2e [ARGS]`` (as root: the testbed needs namespaces)."""
    parser = common.bench_parser("testbed_e2e", __doc__)
    common.add_bundle_arguments(parser)
    parser.add_argument("--traces", nargs="+", default=list(DEFAULT_TRACES), metavar="TRACE",
                        help="bandwidth traces: files, or names in config/traces/ "
                             "(default: %(default)s)")
    parser.add_argument("--strategies", nargs="+", default=None, metavar="STRATEGY",
                        help="cloud_only, cloud_only_crop, edge_only, naive, adaptive or "
                             "SPLIT:RATIO (default: see above)")
    parser.add_argument("--duration", type=float, default=20.0, metavar="SECONDS",
                        help="seconds per run (traces with later steps run to their last "
                             "step + 15 s; default: %(default)g)")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help="runs of every (trace, strategy); fewer than 3 leave every "
                             "target inconclusive (default: %(default)s)")
    parser.add_argument("--edge-cpu", type=float, default=None, metavar="FRACTION",
                        help="CPU budget of the edge side, in cores (default: none)")
    parser.add_argument("--scheduler-edge-only", action="store_true",
                        help="adaptive: the scheduler may choose edge-only (and the edge "
                             "classifies on board what its link cannot take)")
    parser.add_argument("--mixing", action="store_true",
                        help="adaptive: the scheduler also plans a companion configuration on "
                             "a share of the frames (its 'mixing'; off by default)")
    control_side_argument(parser)
    parser.add_argument("--edge-timing", default="", metavar="FILE",
                        help="adaptive: the robot's measured edge times (the edge_timing.json "
                             "of 'split-infer plan --edge-cpu'), or 'measure': time them here "
                             "under --edge-cpu before the first run (on the first CPU of the "
                             "budget: pair it with the default --edge-cpus), into "
                             "OUT/plan_edge_cpu_F_STAMP/ (default: the bundle's profile)")
    parser.add_argument("--probing", action="store_true",
                        help="run the link prober and the probe echo beside every split "
                             "strategy (default: off, as the earlier tables were measured)")
    parser.add_argument("--edge-cpus", default="", metavar="LIST",
                        help="CPUs of the edge side (default: the first)")
    parser.add_argument("--cloud-cpus", default="", metavar="LIST",
                        help="CPUs of the cloud side (default: the second)")
    parser.add_argument("--naive-split", type=int, default=None, metavar="SPLIT",
                        help="add the naive float32 split at this split point (a strategy "
                             "named 'naive'; default: the bundle's middle split point)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the earlier results.json's runs of every (trace, strategy) "
                             "not run now (see above)")
    common.add_out_argument(parser, "testbed")
    args = parser.parse_args(argv)
    if args.edge_timing == MEASURE_EDGE_TIMING and args.edge_cpu is None:
        parser.error("--edge-timing measure needs --edge-cpu: the budget to time the robot "
                     "under")
    placement = {"edge_cpu": args.edge_cpu, "edge_cpus": args.edge_cpus,
                 "cloud_cpus": args.cloud_cpus}
    # A budget that cannot be had fails every run alike: say so once, before the first.
    plan_placement(TestbedSettings(bundle=args.bundle, bag=args.bag, trace=Path(),
                                   **placement))
    bundle = Bundle.load(args.bundle)
    strategies = args.strategies or default_strategies(bundle)
    for strategy in strategies:
        try:
            testbed_strategy(strategy, args.scheduler_edge_only)
        except ValueError as exc:
            parser.error(f"--strategies: {exc}")
    splits = sorted({c.split_point for c in bundle.configurations})
    naive, naive_strategy = naive_bundle(bundle, args.naive_split or splits[len(splits) // 2])
    if "naive" not in strategies and not args.strategies:
        strategies.insert(2, "naive")
    traces = [find_trace(t) for t in args.traces]
    header = {"command": common.command_line("testbed_e2e", argv), "started": common.timestamp(),
              "bundle": str(args.bundle), "machine": common.machine_info(),
              "probing": args.probing, "scheduler_edge_only": args.scheduler_edge_only,
              "scheduler_mixing": args.mixing,
              "control_side": args.control_side,
              "edge_timing": args.edge_timing, **placement}
    machine_cpu = header["machine"]["cpu"]
    rows: list[dict] = []
    if args.merge:
        earlier_path = args.out / "results.json"
        try:
            earlier = json.loads(earlier_path.read_text())
        except FileNotFoundError:
            earlier = {}
        except (OSError, ValueError) as exc:
            parser.error(f"--merge: cannot read {earlier_path}: {exc}")
        # Rows from before machine_cpu was recorded were measured where the file says.
        earlier_cpu = (earlier.get("machine") or {}).get("cpu")
        earlier_rows = [{"machine_cpu": earlier_cpu, **r} for r in earlier.get("rows", [])]
        cells = {(t.name, s) for t in traces for s in strategies}
        conflicts = merge_conflicts(earlier_rows, cells, machine_cpu)
        if conflicts:
            others = sorted({str(r["machine_cpu"]) for r in earlier_rows
                             if r.get("trace") in conflicts and r["machine_cpu"] != machine_cpu})
            parser.error(f"--merge: the other strategies of {', '.join(conflicts)} in "
                         f"{earlier_path} were measured on another machine ({', '.join(others)}; "
                         f"this one: {machine_cpu}); run every strategy of those traces here, "
                         "or merge other traces only")
        rows = merge_rows(earlier_rows, cells)
        header["merged"] = [*earlier.get("merged", []),
                            *([{"command": earlier["command"], "started": earlier.get("started")}]
                              if "command" in earlier else [])]
    if args.edge_timing == MEASURE_EDGE_TIMING:
        # Last before the runs: nothing after it can refuse the invocation.
        if "adaptive" not in strategies:
            print("--edge-timing measure: no adaptive strategy, no scheduler to plan for; "
                  "the robot is not timed", file=sys.stderr)
            args.edge_timing = ""
        else:
            try:
                args.edge_timing = str(measure_robot(bundle, args.edge_cpu, args.out))
            except (RuntimeError, ValueError, OSError) as exc:  # one line, no traceback
                parser.error(f"--edge-timing measure: {exc}")
        header["edge_timing"] = args.edge_timing
    kept = len(rows)
    bar = tqdm(total=len(traces) * len(strategies) * args.repeats, desc="testbed_e2e",
               unit="run")
    for trace_path in traces:
        trace = load_trace(trace_path)
        duration = max(args.duration, float(trace.times_s[-1]) + 15.0)
        # Repeats go round all strategies in turn, so a slow spell of the shared machine
        # hits every strategy rather than all repeats of one.
        for repeat in range(args.repeats):
            for strategy in strategies:
                bar.set_postfix_str(f"{trace_path.name} {strategy} (run {repeat + 1}, "
                                    f"{duration:g} s)")
                bar.update(len(rows) - kept - bar.n)
                run_dir = args.out / "runs" / trace_path.stem / strategy.replace(":", "_") / \
                    f"run{repeat + 1}"
                edge = testbed_strategy(strategy, args.scheduler_edge_only)
                try:
                    report = run_testbed(TestbedSettings(
                        bundle=naive.path if strategy == "naive" else args.bundle,
                        bag=args.bag, trace=trace_path, duration_s=duration,
                        out_dir=run_dir, status=False,
                        strategy=naive_strategy if strategy == "naive" else edge.testbed,
                        fallback=edge.fallback, companion=edge.companion,
                        companion_share=edge.companion_share, control_side=args.control_side,
                        probing=args.probing, scheduler_edge_only=args.scheduler_edge_only,
                        scheduler_mixing=args.mixing,
                        edge_timing=args.edge_timing, **placement))
                except (RuntimeError, TimeoutError) as exc:
                    tqdm.write(f"{trace_path.name} {strategy} (run {repeat + 1}) failed: "
                               f"{exc}", file=sys.stderr)
                    rows.append({"trace": trace_path.name, "strategy": strategy,
                                 "repeat": repeat, "error": str(exc),
                                 "machine_cpu": machine_cpu,
                                 "edge_timing": args.edge_timing,
                                 "rate_bps": _constant_rate(trace_path)})
                    continue
                summary = report["summary"]
                rows.append({**summary, "trace": trace_path.name, "strategy": strategy,
                             "repeat": repeat, "rate_bps": _constant_rate(trace_path),
                             "fallback": edge.fallback, "control_side": args.control_side,
                             "scheduler_mixing": args.mixing and strategy == "adaptive",
                             "machine_cpu": machine_cpu,
                             "edge_timing": args.edge_timing,
                             "reactions": report["reactions"],
                             "switches": report["switches"],
                             "link_not_applied": report["link"]["not_applied"]})
                tqdm.write(f"{trace_path.name} {strategy} (run {repeat + 1}): ν_eff "
                           f"{summary['effective_accuracy']} fps {summary['delivered_fps']} "
                           f"of {summary['bound_fps']} ({summary['bound_by']}"
                           f"{'' if summary['valid'] else ', INVALID'}) "
                           f"p50 {summary['latency_ms_p50']} ms B/frame "
                           f"{summary['bytes_per_frame_mean']}")
                common.write_json(args.out / "results.json", {**header, "rows": rows})
    bar.update(len(rows) - kept - bar.n)
    bar.close()
    # Merged runs first, then today's: grouped by trace again, in the order traces came.
    trace_order = {t: k for k, t in reversed(list(enumerate(r["trace"] for r in rows)))}
    rows.sort(key=lambda r: trace_order[r["trace"]])
    table = aggregate(rows)  # a failed run makes its cell invalid
    figures = plot(table, args.out)
    checks = target_checks(table)
    reactions = adaptation_checks(rows)
    common.write_json(args.out / "results.json",
                      {**header, "rows": rows, "aggregate": table, "targets": checks,
                       "adaptation_targets": reactions})
    summary_md = markdown(table, checks) + adaptation_markdown(reactions)
    (args.out / "summary.md").write_text(summary_md)
    print("\n" + summary_md)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'summary.md'}, "
          + ", ".join(str(f) for f in figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
