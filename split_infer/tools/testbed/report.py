"""The testbed's measurements, apart from running it: per-process CPU sampling, physical
bounds and the validity gate, the per-run summary, recoveries and reactions."""

from __future__ import annotations

import bisect
import itertools
import math
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from split_infer.config_key import config_key
from split_infer.tools.link import Trace

__all__ = ["ROBOT_SPENT_FRACTION", "VALID_FRACTION", "CpuSampler", "cpu_report",
           "physical_bounds", "steady_trace", "summarize", "validity_gate"]

#: The sanity gate: a run whose link is not the limit must deliver this share of its bound.
VALID_FRACTION = 0.95
#: A robot side under a CPU budget counts as spent from this share of it (validity_gate).
ROBOT_SPENT_FRACTION = 0.9


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of every thread of ``pid`` so far (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": the comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class CpuSampler(threading.Thread):
    """Samples the CPU time of the testbed's processes once a second (``clock``: seconds
    since GO); :func:`cpu_report` summarises the samples."""

    def __init__(self, clock: Callable[[], float], interval_s: float = 1.0) -> None:
        super().__init__(name="cpu_sampler", daemon=True)
        self.clock, self.interval_s = clock, interval_s
        self.processes: dict[str, tuple[str, int]] = {}  # name → (side, pid)
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def add(self, name: str, side: str, pid: int) -> None:
        """Sample ``pid`` as ``name`` of ``side`` ("edge", "cloud" or "harness") from now."""
        with self._lock:
            self.processes[name] = (side, pid)

    def sample(self) -> None:
        """Take one sample now."""
        with self._lock:
            processes = dict(self.processes)
        values = {name: cpu for name, (_, pid) in processes.items()
                  if (cpu := _process_cpu_s(pid)) is not None}
        self.samples.append((self.clock(), values))

    def run(self) -> None:
        self.sample()
        while not self._halt.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5.0)
        self.sample()

    def sides(self) -> dict[str, str]:
        """Each sampled process's side, by name."""
        with self._lock:
            return {name: side for name, (side, _) in self.processes.items()}


def cpu_report(samples: list[tuple[float, dict[str, float]]], sides: dict[str, str],
               warmup_s: float, end_s: float | None = None) -> dict:
    """Per process and per side, the mean and max % of one core over the sampling intervals
    that start at or after ``warmup_s`` (and end by ``end_s``), and each process's CPU seconds
    over the whole run. A side's value per interval is the sum of its processes' (those
    present at both ends of the interval). Pure, for testing."""
    per_process: dict[str, list[float]] = {name: [] for name in sides}
    per_side: dict[str, list[float]] = {side: [] for side in dict.fromkeys(sides.values())}
    for (t0, a), (t1, b) in itertools.pairwise(samples):
        if t0 < warmup_s or t1 <= t0 or (end_s is not None and t1 > end_s + 1e-6):
            continue
        totals: dict[str, float] = dict.fromkeys(per_side, 0.0)
        for name, side in sides.items():
            if name in a and name in b:
                percent = 100.0 * (b[name] - a[name]) / (t1 - t0)
                per_process[name].append(percent)
                totals[side] += percent
        for side, total in totals.items():
            per_side[side].append(total)

    def stats(values: list[float]) -> dict[str, float | None]:
        return {"mean_percent": round(float(np.mean(values)), 1) if values else None,
                "max_percent": round(float(np.max(values)), 1) if values else None}

    processes = {}
    for name, side in sides.items():
        seen = [s[name] for _, s in samples if name in s]
        processes[name] = {"side": side, **stats(per_process[name]),
                           "cpu_s": round(seen[-1] - seen[0], 2) if seen else None}
    return {"interval_s": round(float(np.median(np.diff([t for t, _ in samples]))), 2)
            if len(samples) > 1 else None,
            "after_s": warmup_s, "processes": processes,
            "sides": {side: stats(values) for side, values in per_side.items()}}


# -- the run ----------------------------------------------------------------------------------


def _cores(placement: dict, side: str) -> float:
    """The cores one frame pipeline of ``side`` can use: its CPUs, its budget, and one,
    since a node's frame work runs on one thread (sides.MODEL_THREADS)."""
    count = (len(placement.get(f"{side}_cpus") or []) if placement.get("pinned")
             else (os.cpu_count() or 1))
    budget = placement.get("edge_cpu_budget") if side == "edge" else None
    return min(1.0, float(count), math.inf if budget is None else float(budget))


def _value_at(series: list, t: float) -> float | None:
    """The last value of a (time, value) series at or before ``t``."""
    value = None
    for when, v in series:
        if when > t:
            break
        value = v
    return value


def steady_trace(trace: Trace) -> bool:
    """Whether ``trace`` is one constant, non-zero rate without loss and with one delay: a link
    whose only limit is its rate (where the sanity gate applies)."""
    rates = {float(r) for r in trace.rates_bps}
    return (len(rates) == 1 and min(rates) > 0 and all(float(x) == 0 for x in trace.losses)
            and len({float(d) for d in trace.delays_s}) == 1)


def link_bound_fps(rate_bps: float, wire_bytes_per_frame: float | None,
                   bytes_per_frame: float | None) -> float | None:
    """Frames per second the link can carry: the trace's mean rate over what a frame costs on
    the wire, and never more than over the frame's own bytes (None: neither is known). The
    wire cost is the veth's bytes per frame that came through, or per frame sent when none
    did; a sender whose frames pile up before the link (a 74-kB JPEG a frame at 1 Mbit/s)
    then spreads the bytes over frames that never crossed it, and the link would read as
    faster than its frames allow. Pure, for testing."""
    bounds = [rate_bps / (8.0 * n) for n in (wire_bytes_per_frame, bytes_per_frame) if n]
    return min(bounds) if bounds else None


def physical_bounds(*, camera_fps: float, compute: dict, cores: dict[str, float],
                    link_fps: float | None, steady: bool, delivered_fps: float,
                    edge_cpu_percent: float | None = None,
                    edge_cpu_budget: float | None = None) -> dict:
    """A run's own physical bound and its sanity gate. Pure, for testing.

    The bound is the smallest of: the camera rate; per side with a measured per-frame compute
    (``compute[side]["ms_per_frame"]``: the CPU time of the product node's frame callbacks
    per frame it worked on), ``cores[side]`` / that time — the edge's cores are its budget
    (at most one: the frame work runs on one thread), shared with the monitor and scheduler,
    whose cost, like rclpy's and DDS's, is thus charged to the run, not to its bound; and the
    link, ``link_fps`` (the trace's mean rate over the wire bytes each delivered frame
    cost). ``bound_by`` names it.

    The gate is :func:`validity_gate` (``edge_cpu_percent``: the edge side's mean CPU after
    the warm-up, % of one core; ``edge_cpu_budget``: its budget in cores, None: none)."""
    bounds = {"camera": float(camera_fps)}
    for side in ("edge", "cloud"):
        ms = (compute.get(side) or {}).get("ms_per_frame")
        if ms:
            bounds[side] = cores[side] * 1e3 / float(ms)
    if link_fps is not None:
        bounds["link"] = float(link_fps)
    bound_by = min(bounds, key=bounds.__getitem__)
    bound = bounds[bound_by]
    gate, valid = validity_gate(bound_by=bound_by, bound_fps=bound, steady=steady,
                                delivered_fps=delivered_fps, edge_cpu_percent=edge_cpu_percent,
                                edge_cpu_budget=edge_cpu_budget)
    return {"bound_fps": round(bound, 2), "bound_by": bound_by,
            "compute_bound_fps": round(min(v for k, v in bounds.items() if k != "link"), 2),
            "bounds_fps": {k: round(v, 2) for k, v in bounds.items()}, "gate": gate,
            "valid": valid}


def validity_gate(*, bound_by: str, bound_fps: float, steady: bool, delivered_fps: float,
                  edge_cpu_percent: float | None = None,
                  edge_cpu_budget: float | None = None) -> tuple[str, bool]:
    """A run's sanity gate: ``(gate, valid)``. Pure, for testing.

    ``"applied"``: on a steady link (``steady``: a :func:`steady_trace` and no injected
    faults) that is not the bound, valid = delivered fps ≥ :data:`VALID_FRACTION` × bound.
    Where the link is the bound (``"link-limited"``) or not steady (``"not steady"``) no gate
    applies and the run is valid: those runs are judged by the link-bound targets, the
    reactions and the recoveries.

    ``"robot-limited"``: a robot under a CPU budget that spent it (mean CPU of the edge side
    at least :data:`ROBOT_SPENT_FRACTION` of the budget) is the limit the run measures, the
    weak robot of the 224-px benchmark: valid. Its bound counts only the frame callbacks'
    CPU, so the gap to it is the robot's own overhead (rclpy, DDS, the monitor, prober and
    scheduler beside the edge node), which a weak robot pays and the run must show, not a
    harness that starved it. A robot below its budget that still missed the bound fails the
    gate as before."""
    if bound_by == "link":
        return "link-limited", True
    if not steady:
        return "not steady", True
    if (edge_cpu_budget and edge_cpu_percent is not None
            and edge_cpu_percent >= ROBOT_SPENT_FRACTION * 100.0 * edge_cpu_budget):
        return "robot-limited", True
    return "applied", bool(delivered_fps >= VALID_FRACTION * bound_fps)


def summarize(records: dict, trace, settings: Any, t0_wall: float,
              elapsed_s: float, rx_bytes: int,
              event_ends: list[tuple[str, float]] | None = None, *,
              placement: dict | None = None, cpu: dict | None = None,
              camera_fps: float | None = None) -> dict:
    """The testbed report (``summary``, ``timeline``, ``frames``, ``reactions``,
    ``recoveries``, ``placement``, ``cpu``) from the processes' records; pure, so it is
    tested without namespaces. ``camera_fps`` is the bag's recorded rate (None: the
    settings' frame rate), scaled by the playback rate."""
    edge = records["edge"]
    placement = placement or {"pinned": False, "edge_cpu_budget": settings.edge_cpu}
    labels = {stamp: (t - t0_wall, label) for t, stamp, label in edge.get("labels", [])}
    results: dict[int, tuple] = {}
    duplicates = 0
    for t, stamp, cls, split, ratio in edge.get("results", []):
        if stamp in results:
            duplicates += 1  # a frame answered twice (a replay the cloud should have refused)
            continue
        results[stamp] = (t - t0_wall, cls, split, ratio)
    sent_config = {row[1]: (row[3], row[4]) for row in edge.get("sent", []) if row[3] is not None}
    window = (settings.warmup_s, elapsed_s - 1.0)
    frames = []
    for stamp, (t, label) in sorted(labels.items(), key=lambda kv: kv[1][0]):
        result = results.get(stamp)
        latency = None if result is None else (result[0] + t0_wall) * 1e3 - stamp / 1e6
        frames.append({"t_s": round(t, 3), "label": label,
                       "predicted": None if result is None else result[1],
                       "split_point": None if result is None else result[2],
                       "ratio": None if result is None else result[3],
                       "latency_ms": None if latency is None else round(latency, 3)})
    counted = [f for f in frames if window[0] <= f["t_s"] <= window[1]]
    delivered = [f for f in counted if f["predicted"] is not None]
    correct = sum(f["predicted"] == f["label"] for f in delivered)
    latencies = [f["latency_ms"] for f in delivered]
    span = max(window[1] - window[0], 1e-9)
    sent = [(row[0] - t0_wall, row[2]) for row in edge.get("sent", [])]
    sent_in = [n for t, n in sent if window[0] <= t <= window[1]]
    capacity_bits = _capacity_bits(trace, 0.0, elapsed_s)
    estimates = [(t - t0_wall, v) for t, v in edge.get("estimates", [])]
    lower_bounds = [(t - t0_wall, bool(v)) for t, v in edge.get("lower_bound", [])]
    splits = [(t - t0_wall, v) for t, v in edge.get("active_split", [])]
    ratios = [(t - t0_wall, v) for t, v in edge.get("active_ratio", [])]
    edge_cpu = [(t - t0_wall, v) for t, v in edge.get("edge_cpu_ms", [])]
    factors = [(t - t0_wall, v) for t, v in edge.get("robot_factor", [])]
    bytes_mean = float(np.mean(sent_in)) if sent_in else None
    rate_mean = capacity_bits / max(elapsed_s, 1e-9)
    # What a frame costs on the uplink, per frame that came through (frames the link dropped
    # or delivered too late cost bytes too); before any came through, per frame sent.
    through = len(results) or len(sent)
    # The frames' bytes on the uplink: the veth's count less the probe trains' (their wire
    # size as the prober counts it; adaptation.probing.wire_bytes).
    probe_wire = (edge.get("probe_stats") or {}).get("probe_wire_bytes_sent") or 0
    rx_frames = max(rx_bytes - probe_wire, 0)
    wire_per_frame = rx_frames / through if through and rx_frames > 0 else None
    delivered_fps = len(delivered) / span
    camera = (camera_fps or settings.frame_rate) * settings.playback_rate
    cpu_sides = (cpu or {}).get("sides", {})
    bounds = physical_bounds(
        camera_fps=camera,
        compute={"edge": edge.get("compute"), "cloud": records.get("cloud", {}).get("compute")},
        cores={side: _cores(placement, side) for side in ("edge", "cloud")},
        link_fps=link_bound_fps(rate_mean, wire_per_frame, bytes_mean)
        if settings.strategy != "edge_only" else None,
        steady=steady_trace(trace) and not settings.events, delivered_fps=delivered_fps,
        edge_cpu_percent=cpu_sides.get("edge", {}).get("mean_percent"),
        edge_cpu_budget=placement.get("edge_cpu_budget"))
    switches = switch_costs(edge.get("edge_config", []), frames, t0_wall)
    # Probe trains on the wire (adaptation.probing) against the mean estimate: the budget.
    probe_stats = edge.get("probe_stats") or {}
    probe_bytes = probe_stats.get("probe_wire_bytes_sent", probe_stats.get("probe_bytes_sent"))
    probe_bps = 8.0 * probe_bytes / max(elapsed_s, 1e-9) if probe_bytes is not None else None
    mean_estimate = float(np.mean([v for _, v in estimates])) if estimates else None
    summary = {
        "strategy": settings.strategy,
        "trace": str(settings.trace),
        "bundle": str(settings.bundle),
        "duration_s": round(elapsed_s, 2),
        "frames_generated": len(counted),
        "frames_delivered": len(delivered),
        "generated_fps": round(len(counted) / span, 2),
        "delivered_fps": round(delivered_fps, 2),
        "top1_on_delivered_percent": round(100 * correct / len(delivered), 2) if delivered
        else None,
        "effective_accuracy": round(correct / len(counted), 4) if counted else None,
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
        "bytes_per_frame_mean": None if bytes_mean is None else round(bytes_mean, 1),
        # Goodput over capacity: the veth's received bytes (DDS headers, retransmissions and
        # probe trains included) against the shaped capacity integrated over the run.
        "link_utilization": round(8 * rx_bytes / capacity_bits, 4) if capacity_bits > 0
        else None,
        # B/D of the frames actually sent, for the "fps ≥ 0.9·B/D when link-bound" target.
        "link_bound_fps": round(rate_mean / (8 * bytes_mean), 2) if bytes_mean else None,
        # What a frame really costs on the uplink: every byte the cloud's veth received
        # (Ethernet/IP/UDP/RTPS headers, CDR fields, ACKNACKs, discovery) per frame sent. For
        # small frames it is several times D, and B over it is the fps the link can carry.
        "wire_bytes_per_frame": round(rx_frames / len(sent), 1) if sent else None,
        "link_bound_fps_wire": round(rate_mean * len(sent) / (8 * rx_frames), 2)
        if sent and rx_frames > 0 else None,
        "configurations_used": sorted({f"{f['split_point']:.0f}:{f['ratio']:g}"
                                       for f in delivered}),
        # Configurations the edge node took during the run (its parameter events).
        "configuration_switches": len(switches),
        "switch_frames_until_first_max": max(
            (c["frames_until_first"] for c in switches if c["frames_until_first"] is not None),
            default=None),
        # Fault criteria (issue: 0 stale or misdecoded outputs): a result is stale when it
        # arrives more than stale_after_ms after capture, misdecoded when it names another
        # configuration than the frame that was sent for that camera frame.
        "stale_results": sum(f["latency_ms"] > settings.stale_after_ms for f in delivered),
        "misdecoded_results": sum(
            1 for stamp, (_, _, split, ratio) in results.items()
            if stamp in sent_config
            and config_key(*sent_config[stamp]) != config_key(split, ratio)),
        "duplicate_results": duplicates,
        # The run's own physical bound and the sanity gate (physical_bounds).
        "camera_fps": round(camera, 2),
        "edge_compute_ms": _ms(edge.get("compute")),
        "cloud_compute_ms": _ms(records.get("cloud", {}).get("compute")),
        **bounds,
        "edge_cpu_budget": placement.get("edge_cpu_budget"),
        "probe_bps": None if probe_bps is None else round(probe_bps, 1),
        "probe_trains_sent": (edge.get("probe_stats") or {}).get("trains_sent"),
        "probe_trains_echoed": (edge.get("echo_stats") or {}).get("trains"),
        # Frames that crossed faster than the slightly smaller frames before them (counted in
        # pairs): each count asks the prober for a train on credit.
        "faster_frames": (edge.get("monitor_stats") or {}).get("faster_frames"),
        "probe_fraction_of_estimate": round(probe_bps / mean_estimate, 4)
        if probe_bps is not None and mean_estimate else None,
        # The monitor's estimates that were only lower bounds (the link not saturated and no
        # probe train measuring it): what the scheduler cannot plan a distribution with.
        "estimate_lower_bound_share": round(
            sum(v for _, v in lower_bounds) / len(lower_bounds), 4) if lower_bounds else None,
        "pinned": bool(placement.get("pinned")),
        # % of one core per side after the warm-up (the report's ``cpu`` has each process).
        "cpu_percent_mean": {side: v["mean_percent"] for side, v in cpu_sides.items()},
        "cpu_percent_max": {side: v["max_percent"] for side, v in cpu_sides.items()},
    }
    timeline = []
    for t in np.arange(0.0, elapsed_s, 0.5):
        past = [f for f in frames if t - settings.window_s <= f["t_s"] <= t]
        good = sum(f["predicted"] == f["label"] for f in past if f["predicted"] is not None)
        timeline.append({"t_s": round(float(t), 2), "link_rate_bps": trace.rate_at(float(t)),
                         "estimate_bps": _value_at(estimates, t),
                         "estimate_is_lower_bound": _value_at(lower_bounds, t),
                         "split_point": _value_at(splits, t), "ratio": _value_at(ratios, t),
                         "edge_cpu_ms": _value_at(edge_cpu, t),
                         "robot_factor": _value_at(factors, t),
                         "effective_accuracy": good / len(past) if past else None})
    # What ran when: the frames sent (send time) and those the edge classified itself.
    frame_configs = sorted(
        [(row[0] - t0_wall, (row[3], row[4])) for row in edge.get("sent", [])
         if row[3] is not None]
        + [(f["t_s"], (f["split_point"], f["ratio"])) for f in frames
           if f["split_point"] is not None and f["split_point"] < 0], key=lambda e: e[0])
    return {"summary": summary, "reactions": _reactions(trace, elapsed_s, estimates, ratios,
                                                        splits, frame_configs),
            "recoveries": _recoveries(trace, frames, elapsed_s, event_ends or []),
            "switches": switches,
            "settings": {k: str(v) if isinstance(v, Path) else v
                         for k, v in asdict(settings).items()},
            "placement": placement, "cpu": cpu, "processes": records.get("roles"),
            "timeline": timeline, "frames": frames, "edge_stats": edge.get("edge_stats")}


def switch_costs(events: list, frames: list[dict], t0_wall: float,
                 initial: tuple[int, float] | None = None) -> list[dict]:
    """What each configuration switch cost, from the edge node's parameter events
    (``[wall time, split_point, ratio]``, as the recorder keeps them) and the report's frames.

    For a switch at ``t``: ``frames_until_first`` camera frames captured from ``t`` until the
    first frame whose result names the new configuration (frames already on their way, or
    dropped), ``first_latency_ms`` that frame's end-to-end latency (a split change runs the
    new head and tail for the first time), ``max_latency_ms_first5`` the worst of the first
    five in it, against ``median_latency_ms_before``, the median of the 2 s before ``t``.
    Switches that no frame confirmed before the next one (or the end) have ``None`` there.
    An event before ``t0_wall`` (the start-up choice), or one that names the configuration
    already in force (``initial`` at the start), is no switch."""
    out = []
    current = None if initial is None else config_key(*initial)
    for k, (t_wall, split, ratio) in enumerate(events):
        t = t_wall - t0_wall
        key = config_key(int(split), float(ratio))
        if t < 0 or key == current:
            current = key
            continue
        current = key
        end = events[k + 1][0] - t0_wall if k + 1 < len(events) else math.inf
        after = [f for f in frames if t <= f["t_s"] < end]
        new = [f for f in after if f["split_point"] is not None
               and config_key(int(f["split_point"]), float(f["ratio"])) == key]
        before = [f["latency_ms"] for f in frames
                  if t - 2.0 <= f["t_s"] < t and f["latency_ms"] is not None]
        first = new[0] if new else None
        out.append({
            "t_s": round(t, 3), "split_point": int(split), "ratio": float(ratio),
            "frames_until_first": None if first is None
            else sum(1 for f in after if f["t_s"] < first["t_s"]),
            "first_latency_ms": None if first is None else first["latency_ms"],
            "max_latency_ms_first5": None if first is None
            else max(f["latency_ms"] for f in new[:5]),
            "median_latency_ms_before": round(float(np.median(before)), 3) if before else None,
        })
    return out


def _ms(compute: dict | None) -> float | None:
    ms = (compute or {}).get("ms_per_frame")
    return None if ms is None else round(float(ms), 3)


def _fault_ends(trace, elapsed_s: float, event_ends: list[tuple[str, float]]
                ) -> list[tuple[str, float]]:
    """(what, when it ended) for every fault in the run: trace segments with loss, no rate or
    more than the trace's smallest delay, and the events (a restarted cloud ends when it serves
    again, a killed scheduler at once)."""
    ends = []
    times = [float(t) for t in trace.times_s]
    base_delay = float(min(trace.delays_s))
    for i, (rate, loss, delay) in enumerate(zip(trace.rates_bps, trace.losses, trace.delays_s,
                                                strict=True)):
        if (rate <= 0 or loss > 0 or delay > base_delay) and i + 1 < len(times) \
                and times[i + 1] < elapsed_s:
            what = ("outage" if rate <= 0 else f"loss {100 * float(loss):g}%" if loss > 0
                    else f"delay {1e3 * float(delay):g} ms")
            ends.append((f"{what} {times[i]:g}-{times[i + 1]:g} s", times[i + 1]))
    return ends + [(f"{what} at {t:.2f} s", t) for what, t in event_ends]


def _recoveries(trace, frames: list[dict], elapsed_s: float,
                event_ends: list[tuple[str, float]]) -> list[dict]:
    """Per fault: seconds from its end until results flow again, i.e. until the first result
    of a frame captured after the end (None: never within the run)."""
    rows = []
    for what, end in _fault_ends(trace, elapsed_s, event_ends):
        answered = [f["t_s"] + f["latency_ms"] / 1e3 for f in frames
                    if f["t_s"] >= end and f["latency_ms"] is not None]
        rows.append({"fault": what, "ended_s": round(end, 3),
                     "recovered_after_s": round(min(answered) - end, 3) if answered else None})
    return rows


def _capacity_bits(trace, start_s: float, end_s: float) -> float:
    times = [*trace.times_s, math.inf]
    total = 0.0
    for i, rate in enumerate(trace.rates_bps):
        lo, hi = max(start_s, times[i]), min(end_s, times[i + 1])
        if hi > lo:
            total += float(rate) * (hi - lo)
    return total


def _same_config(a: tuple, b: tuple) -> bool:
    """Configurations equal up to the float32 the frames carry their ratio in."""
    return all(x == y or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-6))
               for x, y in zip(a, b))


def _reactions(trace, elapsed_s: float, estimates: list, ratios: list, splits: list,
               frame_configs: list[tuple[float, tuple]] = ()) -> list[dict]:
    """For every rate change in the run: how long until the estimate was within 15 % of the
    new rate (and stayed there for 1 s), and until the active configuration changed.

    The change is the first frame after the step in another configuration than the last frame
    before it (``frame_configs``: (time, (split, ratio)) of every frame the edge sent or
    classified itself), or the edge's 1-Hz ``active_split``/``active_ratio`` report if that
    came first: the report alone is up to a second late."""
    rows = []
    frame_times = [t for t, _ in frame_configs]
    for i in range(1, len(trace.times_s)):
        step, rate = float(trace.times_s[i]), float(trace.rates_bps[i])
        if step >= elapsed_s:
            break
        before = float(trace.rates_bps[i - 1])
        end = float(trace.times_s[i + 1]) if i + 1 < len(trace.times_s) else elapsed_s
        within = None
        if rate > 0:
            after = [(t, v) for t, v in estimates if step <= t <= end]
            for j, (t, _) in enumerate(after):
                stay = [v for u, v in after[j:] if u <= t + 1.0]
                if stay and all(abs(v - rate) <= 0.15 * rate for v in stay):
                    within = round(t - step, 2)
                    break
        config_before = (_value_at(splits, step), _value_at(ratios, step))
        after_step = bisect.bisect_right(frame_times, step)
        if after_step:
            config_before = frame_configs[after_step - 1][1]
        changed = None
        for t, _ in sorted(ratios + splits):
            if step < t <= end and not _same_config(
                    (_value_at(splits, t), _value_at(ratios, t)), config_before):
                changed = round(t - step, 2)
                break
        first_frame = next((t for t, c in frame_configs[after_step:]
                            if t <= end and not _same_config(c, config_before)), None)
        if first_frame is not None and (changed is None or first_frame - step < changed):
            changed = round(first_frame - step, 2)
        rows.append({"t_s": step, "rate_before_bps": before, "rate_after_bps": rate,
                     "estimate_within_15pct_after_s": within,
                     "configuration_changed_after_s": changed,
                     "ratio_before": config_before[1],
                     "ratio_after": _value_at(ratios, end - 1e-6)})
    return rows
