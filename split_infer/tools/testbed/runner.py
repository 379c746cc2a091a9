"""``split-infer testbed``: the graph over a real, shaped link between two network namespaces.

::

    ┌─ namespace edge ─────────────────────────┐  veth, tc tbf   ┌─ namespace cloud ─────────┐
    │ bag player → edge node ──features────────┼──(trace-shaped)─┼─▶ cloud node → results   │
    │   ▲ set params    ▲ bandwidth            │                 │        │                  │
    │ scheduler ◀─ bandwidth monitor ◀─receipts┼─────────────────┼────────┘                  │
    │ recorder (labels, sent frames, config)   │                 │ recorder (results)        │
    └──────────────────────────────────────────┘                 └───────────────────────────┘

Two separate processes (``python -m split_infer.tools.testbed.sides``), one per namespace, talk DDS
over UDP: Fast DDS's shared-memory transport is switched off (``FASTDDS_BUILTIN_TRANSPORTS=
UDPv4``) so every byte crosses the veth, and discovery uses multicast on the veth plus the peer
as a static unicast peer. The link follows a trace file (:mod:`split_infer.tools.testbed.netns`).
Strategies: ``adaptive`` (bandwidth monitor + scheduler), a fixed ``split:ratio``, and the
alternatives :mod:`.references` implements: ``cloud_only`` (JPEG frames, the whole model on
the server) and ``edge_only`` (the whole model on the robot; nothing crosses the link).

The namespaces and both processes are always removed: on success, on failure, on Ctrl-C
(SIGINT) and SIGTERM. Leftovers of a killed run are removed by the next run (or
``split-infer testbed --cleanup``).

Every timing is wall-clock time shared by the namespaces. A frame counts as generated when its
label is published on the edge, as delivered when its result arrives at the cloud, and as
correct when that result's top-1 is its label: ν_eff = correct / generated, so dropped frames
count as wrong (Hu & K). Frames generated in the first ``warmup_s`` and the last second are
left out of the summary.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from split_infer.bundle import Bundle, BundleError
from split_infer.config_key import config_key
from split_infer.tools.link import load_trace
from split_infer.tools.testbed.netns import NetnsLink, TraceFollower, remove_stale

__all__ = ["EVENTS", "TestbedSettings", "run_testbed", "summarize"]

EVENTS = ("kill_cloud", "start_cloud", "kill_scheduler")


@dataclass
class TestbedSettings:
    __test__ = False  # not a pytest test class, despite the name

    bundle: Path
    bag: Path
    trace: Path
    duration_s: float = 30.0
    out_dir: Path = Path("out/testbed")
    strategy: str = "adaptive"  # or "split:ratio", "cloud_only", "edge_only"
    initial: str = ""  # adaptive only: the edge's first "split:ratio" (default: its start-up rule)
    fallback: str = "drop"  # the edge node's fallback for frames it holds back (or edge_only)
    objective: str = "effective_accuracy"
    frame_rate: float = 30.0
    playback_rate: float = 1.0
    warmup_s: float = 2.0
    window_s: float = 2.0
    status: bool = True
    #: faults at given times (s): "kill_cloud" (SIGKILL), "start_cloud" (a fresh cloud
    #: process), "kill_scheduler" (removed from the edge process as a crash would)
    events: tuple[tuple[float, str], ...] = ()
    stale_after_ms: float = 1000.0  # a result later than this after capture is stale
    jitter_ms: float = 0.0  # ± uniform jitter on the trace segments that have a delay
    auth: bool = False  # frames signed by the edge and verified by the cloud (frame_auth)


class _Side:
    """A side process and its stdout lines (read by a thread so that a full pipe never
    blocks it)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self._log = log.open("w")
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, text=True,
                                        start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def wait_for(self, word: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if word in self.lines:
                return
            errors = [line for line in self.lines if line.startswith("ERROR")]
            if errors or self.process.poll() is not None:
                raise RuntimeError(f"testbed {self.name} side failed before {word}: "
                                   f"{errors[-1] if errors else self._tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"testbed {self.name} side not {word} after {timeout_s:g} s: "
                           f"{self._tail()}")

    def _tail(self) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-5:]) or f"exit status {self.process.poll()}"

    def kill(self) -> None:
        """SIGKILL the side (a crash: it writes no records)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5.0)

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5.0)
        self._log.close()


def _side_env(domain_id: int, peer_ip: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id),
        "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4",  # no shared memory: traffic crosses the veth
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
        "ROS_STATIC_PEERS": peer_ip,
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def run_testbed(settings: TestbedSettings) -> dict:
    """Run one strategy over one trace; write ``report.json`` and ``timeline.png`` to
    ``settings.out_dir`` and return the report. PermissionError without root."""
    bundle = Bundle.load(settings.bundle)  # fail fast with the bundle's own error
    trace = load_trace(settings.trace)
    for what, value in (("strategy", settings.strategy), ("initial", settings.initial)):
        if value in ("adaptive", "", "cloud_only", "edge_only"):
            continue
        split, _, ratio = value.partition(":")
        try:
            bundle.configuration(int(split), float(ratio))
        except Exception as exc:
            valid = ", ".join(f"{c.split_point}:{c.ratio:g}" for c in bundle.configurations)
            # A configuration the bundle does not have: a BundleError (a ValueError).
            raise BundleError(f"{what} {value!r}: {exc}; use one of {valid}") from None
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale()
    domain_id = 101 + os.getpid() % 100
    sides: list[_Side] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    with tempfile.TemporaryDirectory(prefix="si_testbed_") as tmp, NetnsLink() as link:
        key_file = ""
        if settings.auth:  # a key of this run only, readable by the owner only
            key_file = str(Path(tmp) / "frame.keys")
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as keys:
                keys.write(f"1 {secrets.token_hex(32)}\n")
        try:
            for side in ("cloud", "edge"):
                config = {"side": side, "bundle": str(Path(settings.bundle).resolve()),
                          "bag": str(Path(settings.bag).resolve()),
                          "strategy": settings.strategy, "initial": settings.initial,
                          "fallback": settings.fallback,
                          # a fifth of the bound is left for the tail and the way back
                          "max_frame_age": 0.8 * settings.stale_after_ms / 1e3,
                          "objective": settings.objective,
                          "frame_rate": settings.frame_rate,
                          "playback_rate": settings.playback_rate, "domain_id": domain_id,
                          "auth_key_file": key_file,
                          "out": str(Path(tmp) / f"{side}.json")}
                path = Path(tmp) / f"{side}_config.json"
                path.write_text(json.dumps(config))
                peer = link.cloud_ip if side == "edge" else link.edge_ip
                command = [*link.exec_prefix(side), sys.executable, "-m",
                           "split_infer.tools.testbed.sides", str(path)]
                if side == "cloud":
                    cloud_command = command
                sides.append(_Side(side, command, _side_env(domain_id, peer),
                                   out / f"{side}.log"))
            cloud, edge = sides
            cloud.wait_for("READY", 60.0)
            edge.wait_for("READY", 60.0)
            # Discovery must be complete in both directions while the link is still unshaped.
            cloud.send(next(line for line in edge.lines if line.startswith("EXPECT ")))
            cloud.wait_for("MATCHED", 40.0)
            events = sorted(settings.events)
            for _, action in events:
                if action not in EVENTS:
                    raise ValueError(f"unknown testbed event {action!r}; use one of {EVENTS}")
            restarts = 0
            follower = TraceFollower(link, trace, jitter_ms=settings.jitter_ms)
            follower.start()
            t0_wall = time.time()
            rx0 = link.interface_bytes("cloud")
            edge.send("GO")
            last = 0.0
            cloud_killed = False
            waiting_ready: _Side | None = None
            fault_ends: list[tuple[str, float]] = []
            while follower.elapsed_s() < settings.duration_s:
                time.sleep(0.05)
                while events and events[0][0] <= follower.elapsed_s():
                    _, action = events.pop(0)
                    if action == "kill_cloud":
                        cloud.kill()
                        cloud_killed = True
                    elif action == "start_cloud":
                        restarts += 1
                        cloud = _Side("cloud", cloud_command, _side_env(domain_id, link.edge_ip),
                                      out / f"cloud{restarts}.log")
                        sides.append(cloud)
                        cloud_killed = False
                        waiting_ready = cloud
                    else:
                        edge.send("KILL scheduler")
                        fault_ends.append(("scheduler killed", follower.elapsed_s()))
                if waiting_ready is not None and "READY" in waiting_ready.lines:
                    # The restart is over when the new cloud process serves (its start-up,
                    # imports and model loading, is not the graph's recovery).
                    fault_ends.append(("cloud restarted", follower.elapsed_s()))
                    waiting_ready = None
                if edge.process.poll() is not None or (
                        cloud.process.poll() is not None and not cloud_killed):
                    raise RuntimeError("a testbed side exited early; see the logs in "
                                       f"{out}")
                if follower.error is not None:
                    raise RuntimeError(f"shaping failed: {follower.error}")
                if settings.status and follower.elapsed_s() - last >= 5.0:
                    last = follower.elapsed_s()
                    print(f"testbed {settings.strategy} t={last:4.0f}s link "
                          f"{trace.rate_at(last) / 1e6:.2f} Mbit/s", flush=True)
            elapsed = follower.elapsed_s()
            follower.stop()
            rx_bytes = link.interface_bytes("cloud") - rx0
            edge.stop()
            time.sleep(1.0)  # frames in flight reach the cloud
            cloud.stop()
            # A killed cloud writes nothing; everything measured is recorded on the edge.
            records = {side: json.loads(path.read_text()) if path.is_file() else {}
                       for side, path in (("edge", Path(tmp) / "edge.json"),
                                          ("cloud", Path(tmp) / "cloud.json"))}
            skipped = sorted(follower.skipped)
            capabilities = dict(link.capabilities)
        finally:
            for side in sides:
                side.stop(timeout_s=5.0)
            signal.signal(signal.SIGTERM, previous)
    report = summarize(records, trace, settings, t0_wall, elapsed, rx_bytes, fault_ends)
    report["link"] = {"capabilities": capabilities, "not_applied": skipped,
                      "veth_rx_bytes": rx_bytes}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    from split_infer.tools.demo.graph import plot_timeline

    plot_timeline(report, out / "timeline.png")
    return report


def _raise_interrupt(*_) -> None:
    raise KeyboardInterrupt


def _value_at(series: list, t: float) -> float | None:
    """The last value of a (time, value) series at or before ``t``."""
    value = None
    for when, v in series:
        if when > t:
            break
        value = v
    return value


def summarize(records: dict, trace, settings: TestbedSettings, t0_wall: float,
              elapsed_s: float, rx_bytes: int,
              event_ends: list[tuple[str, float]] | None = None) -> dict:
    """The testbed report (``summary``, ``timeline``, ``frames``, ``reactions``) from the two
    sides' records; pure, so it is tested without namespaces."""
    edge = records["edge"]
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
    splits = [(t - t0_wall, v) for t, v in edge.get("active_split", [])]
    ratios = [(t - t0_wall, v) for t, v in edge.get("active_ratio", [])]
    bytes_mean = float(np.mean(sent_in)) if sent_in else None
    rate_mean = capacity_bits / max(elapsed_s, 1e-9)
    summary = {
        "strategy": settings.strategy,
        "trace": str(settings.trace),
        "bundle": str(settings.bundle),
        "duration_s": round(elapsed_s, 2),
        "frames_generated": len(counted),
        "frames_delivered": len(delivered),
        "generated_fps": round(len(counted) / span, 2),
        "delivered_fps": round(len(delivered) / span, 2),
        "top1_on_delivered_percent": round(100 * correct / len(delivered), 2) if delivered
        else None,
        "effective_accuracy": round(correct / len(counted), 4) if counted else None,
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
        "bytes_per_frame_mean": None if bytes_mean is None else round(bytes_mean, 1),
        # Goodput over capacity: the veth's received bytes (DDS headers and retransmissions
        # included) against the shaped capacity integrated over the run.
        "link_utilization": round(8 * rx_bytes / capacity_bits, 4) if capacity_bits > 0
        else None,
        # B/D of the frames actually sent, for the "fps ≥ 0.9·B/D when link-bound" target.
        "link_bound_fps": round(rate_mean / (8 * bytes_mean), 2) if bytes_mean else None,
        # What a frame really costs on the uplink: every byte the cloud's veth received
        # (Ethernet/IP/UDP/RTPS headers, CDR fields, ACKNACKs, discovery) per frame sent. For
        # small frames it is several times D, and B over it is the fps the link can carry.
        "wire_bytes_per_frame": round(rx_bytes / len(sent), 1) if sent else None,
        "link_bound_fps_wire": round(rate_mean * len(sent) / (8 * rx_bytes), 2)
        if sent and rx_bytes > 0 else None,
        "configurations_used": sorted({f"{f['split_point']:.0f}:{f['ratio']:g}"
                                       for f in delivered}),
        # Fault criteria (issue: 0 stale or misdecoded outputs): a result is stale when it
        # arrives more than stale_after_ms after capture, misdecoded when it names another
        # configuration than the frame that was sent for that camera frame.
        "stale_results": sum(f["latency_ms"] > settings.stale_after_ms for f in delivered),
        "misdecoded_results": sum(
            1 for stamp, (_, _, split, ratio) in results.items()
            if stamp in sent_config
            and config_key(*sent_config[stamp]) != config_key(split, ratio)),
        "duplicate_results": duplicates,
    }
    timeline = []
    for t in np.arange(0.0, elapsed_s, 0.5):
        past = [f for f in frames if t - settings.window_s <= f["t_s"] <= t]
        good = sum(f["predicted"] == f["label"] for f in past if f["predicted"] is not None)
        timeline.append({"t_s": round(float(t), 2), "link_rate_bps": trace.rate_at(float(t)),
                         "estimate_bps": _value_at(estimates, t),
                         "split_point": _value_at(splits, t), "ratio": _value_at(ratios, t),
                         "effective_accuracy": good / len(past) if past else None})
    return {"summary": summary, "reactions": _reactions(trace, elapsed_s, estimates, ratios,
                                                        splits),
            "recoveries": _recoveries(trace, frames, elapsed_s, event_ends or []),
            "settings": {k: str(v) if isinstance(v, Path) else v
                         for k, v in asdict(settings).items()},
            "timeline": timeline, "frames": frames, "edge_stats": edge.get("edge_stats")}


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


def _reactions(trace, elapsed_s: float, estimates: list, ratios: list, splits: list
               ) -> list[dict]:
    """For every rate change in the run: how long until the estimate was within 15 % of the
    new rate (and stayed there for 1 s), and until the active configuration changed."""
    rows = []
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
        changed = None
        for t, _ in sorted(ratios + splits):
            if step < t <= end and (_value_at(splits, t), _value_at(ratios, t)) != \
                    config_before:
                changed = round(t - step, 2)
                break
        rows.append({"t_s": step, "rate_before_bps": before, "rate_after_bps": rate,
                     "estimate_within_15pct_after_s": within,
                     "configuration_changed_after_s": changed,
                     "ratio_before": config_before[1],
                     "ratio_after": _value_at(ratios, end - 1e-6)})
    return rows
