"""``split-infer testbed``: the graph over a real, shaped link between two network namespaces.

::

    ┌─ namespace edge ──────────────────────────────┐  veth, tc tbf  ┌─ namespace cloud ──┐
    │ camera ─image─▶ edge node ──features──────────┼─(trace-shaped)─┼─▶ cloud node       │
    │ (bag player)      ▲ params  ▲ estimate        │                │     │ results,     │
    │               scheduler ◀─ monitor ◀─receipts─┼────────────────┼─────┘ receipts     │
    │ recorder: labels, sent frames, estimates,     │                │                    │
    │           results, receipts                   │                │                    │
    └───────────────────────────────────────────────┘                └────────────────────┘
      CPU: edge node, monitor, scheduler → the edge CPUs (with the --edge-cpu budget);
           cloud node → the cloud CPUs; camera, recorder, packet delayer → the harness CPUs

Every node is a process of its own (``python -m split_infer.tools.testbed.sides``), as on a
robot, where the camera driver, the edge node and the monitor are separate processes: the
bag player and the recorder are harness and never share an interpreter with the product's
nodes, so the product's per-frame cost is what the run measures. The processes talk DDS over
UDP: Fast DDS's shared-memory transport is off (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``) so
every byte between the namespaces crosses the veth, and discovery uses multicast on the veth
plus the peer namespace as a static unicast peer. The link follows a trace file
(:mod:`split_infer.tools.testbed.netns`). Strategies: ``adaptive`` (bandwidth monitor +
scheduler), a fixed ``split:ratio`` (monitor, no scheduler), and the alternatives
:mod:`.references` implements: ``cloud_only`` (JPEG camera frames, the whole model on the
server), ``cloud_only_crop`` (JPEG of the model's input crop) and ``edge_only`` (the whole
model on the robot; nothing crosses the link).

**Start-up.** Every process prints READY with its node's topics; the testbed then asks each
to wait until all its endpoints are matched (SYNC, counts derived from every READY line) and
then waits until the link is quiet (the parameter services' and remaining endpoints'
announcements have crossed; ``link.discovery_quiet_after_s`` in the report) and shapes it only
then: discovery is a few KB per endpoint and would otherwise queue in front of the first
frames at 100 kbit/s, more so for strategies with more processes. GO opens the camera's gate.

**CPU placement** (:mod:`.cgroups`, root): the edge side's product processes, the cloud side
and the harness run in per-run cgroups on disjoint CPUs (by default CPU 0, CPU 1 and CPU 1
with two CPUs: the harness shares the server's CPU, never the robot's), and
``edge_cpu`` caps the edge side at a fraction of one core, a robot slower than the server.
Where cgroups cannot be used and no budget was asked, the run goes unpinned and the report
says why; a budget without cgroups is a :class:`~.cgroups.CgroupError`.

**What the report holds.** Every timing is wall-clock time shared by the namespaces. A frame
counts as generated when its label is published on the edge, as delivered when its result
arrives back on the robot, and as correct when that result's top-1 is its label: ν_eff =
correct / generated, so dropped frames count as wrong (Hu & K). Frames generated in the first
``warmup_s`` and the last second are left out. Every process's CPU (``/proc/<pid>/stat``
user + system, sampled each second) is reported per process and per side after the warm-up,
with the placement. Each run is held to its own physical bound (:func:`physical_bounds`):
``bound_fps`` and the sanity gate ``valid``.

The namespaces, the cgroups and every process are always removed: on success, on failure, on
Ctrl-C (SIGINT) and SIGTERM; a process whose testbed is gone stops when its stdin closes.
Leftovers of a killed run are removed by the next run (or ``split-infer testbed --cleanup``).
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from split_infer.bundle import Bundle, BundleError
from split_infer.defaults import udp_only_dds_profile
from split_infer.tools.link import load_trace
from split_infer.tools.testbed import cgroups
from split_infer.tools.testbed.netns import NetnsLink, TraceFollower, remove_stale
from split_infer.tools.testbed.report import (
    VALID_FRACTION,
    CpuSampler,
    cpu_report,
    physical_bounds,
    steady_trace,
    summarize,
)
from split_infer.tools.testbed.sides import (
    CONTROL_SIDES,
    REFERENCE_STRATEGIES,
    cloud_roles,
    edge_roles,
    role_group,
    role_side,
)

__all__ = ["EVENTS", "VALID_FRACTION", "CpuSampler", "TestbedSettings", "camera_rate_hz",
           "cpu_report", "physical_bounds", "plan_placement", "run_testbed", "steady_trace",
           "summarize"]

EVENTS = ("kill_cloud", "start_cloud", "kill_scheduler")


@dataclass
class TestbedSettings:
    """One testbed run: what runs (bundle, bag, strategy), over which trace, for how long,
    and where (CPU lists in the kernel's format, e.g. ``"0"`` or ``"2-3"``; empty: the
    default placement of :func:`.cgroups.default_cpus`)."""

    __test__ = False  # not a pytest test class, despite the name

    bundle: Path
    bag: Path
    trace: Path
    duration_s: float = 30.0
    out_dir: Path = Path("out/testbed")
    strategy: str = "adaptive"  # or "split:ratio", "cloud_only", "cloud_only_crop", "edge_only"
    initial: str = ""  # adaptive only: the edge's first "split:ratio" (default: its start-up rule)
    fallback: str = "drop"  # the edge node's fallback for frames it holds back (or edge_only)
    #: a fixed configuration's companion ("split:ratio", "" = none) and the share of the
    #: frames it runs (the edge node's companion/companion_share)
    companion: str = ""
    companion_share: float = 0.0
    #: where the bandwidth monitor and the scheduler run: "robot" (beside the edge node, in
    #: its namespace and CPU budget) or "server" (beside the cloud node; sides.role_side)
    control_side: str = "robot"
    objective: str = "effective_accuracy"
    frame_rate: float = 30.0
    playback_rate: float = 1.0
    warmup_s: float = 2.0
    window_s: float = 2.0
    status: bool = True
    #: faults at given times (s): "kill_cloud" (SIGKILL), "start_cloud" (a fresh cloud
    #: process), "kill_scheduler" (SIGKILL of the scheduler's process, as a crash)
    events: tuple[tuple[float, str], ...] = ()
    stale_after_ms: float = 1000.0  # a result later than this after capture is stale
    jitter_ms: float = 0.0  # ± uniform jitter on the trace segments that have a delay
    auth: bool = False  # frames signed by the edge and verified by the cloud (frame_auth)
    #: the link prober and the probe echo run (split strategies): the monitor measures the
    #: link's capacity even when the frames do not fill it (adaptation.probing)
    probing: bool = False
    #: the edge side's CPU budget in cores (a fraction of one: a robot slower than the
    #: server); None: no quota
    edge_cpu: float | None = None
    #: adaptive: the scheduler may choose edge-only (the whole model on the robot)
    scheduler_edge_only: bool = False
    #: adaptive: the scheduler also plans mixes with a companion (its ``mixing``)
    scheduler_mixing: bool = False
    #: adaptive: the robot's measured edge times (``split-infer plan --edge-cpu`` writes this
    #: ``edge_timing.json``); empty: the bundle's profile
    edge_timing: str = ""
    edge_cpus: str = ""  # CPUs of the edge side's product processes
    cloud_cpus: str = ""  # CPUs of the cloud side
    harness_cpus: str = ""  # CPUs of the camera, the recorder and the packet delayer


class _Process:
    """One process of the testbed and its stdout lines (read by a thread so that a full pipe
    never blocks it)."""

    def __init__(self, role: str, command: list[str], env: dict[str, str], log: Path,
                 records: Path) -> None:
        self.role = role
        self.records = records  # where the process writes its records when it stops
        self.killed_on_stop = False
        self._terminated = False
        self.lines: list[str] = []
        self._log = log.open("w")
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, text=True,
                                        start_new_session=True)
        self.pid = self.process.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def line(self, word: str) -> str | None:
        """The first stdout line that is ``word`` or starts with ``word`` and a space."""
        return next((line for line in self.lines
                     if line == word or line.startswith(word + " ")), None)

    def wait_for(self, word: str, timeout_s: float) -> str:
        """The line of :meth:`line` once it came; RuntimeError if the process failed first,
        TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.line(word)
            if found is not None:
                return found
            errors = [line for line in self.lines if line.startswith("ERROR")]
            if errors or self.process.poll() is not None:
                raise RuntimeError(f"testbed {self.role} process failed before {word}: "
                                   f"{errors[-1] if errors else self._tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"testbed {self.role} process not {word} after {timeout_s:g} s: "
                           f"{self._tail()}")

    def _tail(self) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-5:]) or f"exit status {self.process.poll()}"

    def kill(self) -> None:
        """SIGKILL the process (a crash: it writes no records)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5.0)

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def terminate(self) -> None:
        """SIGTERM (the process writes its records and exits); :meth:`stop` waits."""
        # Once: a second SIGTERM could reach the process after its clean-up has restored the
        # default handler, and kill it there.
        if self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL the process group if it does not exit in time."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.killed_on_stop = True  # it wrote no records: the report says so
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5.0)
        if not self._log.closed:
            self._log.close()


def _side_env(domain_id: int, peer_ip: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id),
        "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4",  # no shared memory: traffic crosses the veth
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
        "ROS_STATIC_PEERS": peer_ip,
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",  # a crash leaves its traceback in the process's log
        # The same thread settings for every strategy (see sides.MODEL_THREADS).
        "OMP_NUM_THREADS": "1",
    })
    env.pop("ROS_LOCALHOST_ONLY", None)
    # UDP only and discovery announcements every 20 s instead of 3 s: with one process per
    # node, the defaults put a third of a 100 kbit/s uplink into announcements.
    profile = udp_only_dds_profile()
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env


# -- placement --------------------------------------------------------------------------------


def plan_placement(settings: TestbedSettings, problem: str | None = None,
                   cpus: list[int] | None = None) -> dict:
    """Where the run's processes go: ``{"pinned": True, "edge_cpus": [...], "cloud_cpus": [...],
    "harness_cpus": [...], "edge_cpu_budget": F}``, or ``{"pinned": False, "reason": ...}``
    when cgroups cannot be used (``problem``, default :func:`.cgroups.cgroups_problem`) and
    nothing was asked of them. CgroupError when a budget or CPU list was asked and cannot be
    had, or the lists do not fit (``cpus``: the CPUs available, default this process's)."""
    asked = [flag for flag, value in (("--edge-cpu", settings.edge_cpu),
                                      ("--edge-cpus", settings.edge_cpus),
                                      ("--cloud-cpus", settings.cloud_cpus),
                                      ("--harness-cpus", settings.harness_cpus))
             if value not in (None, "")]
    if settings.edge_cpu is not None and not (math.isfinite(settings.edge_cpu)
                                              and settings.edge_cpu > 0):
        raise cgroups.CgroupError(f"--edge-cpu must be a positive fraction of a core, got "
                                  f"{settings.edge_cpu:g}")
    problem = cgroups.cgroups_problem() if problem is None else problem
    cpus = cgroups.allowed_cpus() if cpus is None else sorted(cpus)
    if not problem and len(cpus) < 2:
        problem = f"disjoint edge and cloud CPUs need at least 2 CPUs, not {len(cpus)}"
    if problem:
        if asked:
            raise cgroups.CgroupError(f"{' and '.join(asked)} "
                                      f"{'needs' if len(asked) == 1 else 'need'} cgroups: "
                                      f"{problem}")
        return {"pinned": False, "reason": problem, "edge_cpu_budget": None}
    default = cgroups.default_cpus(cpus)
    chosen = {}
    for name, text in (("edge", settings.edge_cpus), ("cloud", settings.cloud_cpus),
                       ("harness", settings.harness_cpus)):
        chosen[name] = cgroups.parse_cpus(text) if text else default[name]
        outside = sorted(set(chosen[name]) - set(cpus))
        if not chosen[name] or outside:
            raise cgroups.CgroupError(f"--{name}-cpus {text!r}: CPUs {outside or 'none'} are "
                                      f"not available (available: {cgroups.format_cpus(cpus)})")
    if set(chosen["edge"]) & set(chosen["cloud"]):
        raise cgroups.CgroupError("the edge and cloud CPUs overlap: the sides must run on "
                                  "disjoint CPUs")
    if set(chosen["edge"]) & set(chosen["harness"]):
        if settings.harness_cpus:
            raise cgroups.CgroupError("the harness CPUs overlap the edge's: the camera and "
                                      "recorder would take the robot's CPU")
        chosen["harness"] = chosen["cloud"]  # the default moved aside for --edge-cpus
    if settings.edge_cpu is not None and settings.edge_cpu > len(chosen["edge"]):
        raise cgroups.CgroupError(f"--edge-cpu {settings.edge_cpu:g} is more than the "
                                  f"{len(chosen['edge'])} edge CPU(s)")
    return {"pinned": True, "edge_cpus": chosen["edge"], "cloud_cpus": chosen["cloud"],
            "harness_cpus": chosen["harness"], "edge_cpu_budget": settings.edge_cpu}


def camera_rate_hz(bag: Path, topic: str = "/camera/image_raw") -> float | None:
    """The camera rate recorded in ``bag`` (frames over the span of the recording, from the
    bag's metadata), or None when it cannot be read."""
    try:
        from rosbags.rosbag2 import Reader

        with Reader(Path(bag)) as reader:
            count = sum(c.msgcount for c in reader.connections if c.topic == topic)
            span_ns = reader.duration
    except Exception:  # rosbags raises a family of reader errors; the rate is optional
        return None
    return (count - 1) / (span_ns / 1e9) if count > 1 and span_ns > 0 else None


# -- CPU use ----------------------------------------------------------------------------------


def run_testbed(settings: TestbedSettings) -> dict:
    """Run one strategy over one trace; write ``report.json`` and ``timeline.png`` to
    ``settings.out_dir`` and return the report. PermissionError without root; CgroupError
    when the placement asked for cannot be had."""
    bundle = Bundle.load(settings.bundle)  # fail fast with the bundle's own error
    trace = load_trace(settings.trace)
    for what, value in (("strategy", settings.strategy), ("initial", settings.initial)):
        if value in ("adaptive", "", *REFERENCE_STRATEGIES):
            continue
        split, _, ratio = value.partition(":")
        try:
            bundle.configuration(int(split), float(ratio))
        except Exception as exc:
            valid = ", ".join(f"{c.split_point}:{c.ratio:g}" for c in bundle.configurations)
            # A configuration the bundle does not have: a BundleError (a ValueError).
            raise BundleError(f"{what} {value!r}: {exc}; use one of {valid}") from None
    if settings.control_side not in CONTROL_SIDES:
        raise ValueError(f"control side {settings.control_side!r}: use one of {CONTROL_SIDES}")
    events = sorted(settings.events)
    for _, action in events:
        if action not in EVENTS:
            raise ValueError(f"unknown testbed event {action!r}; use one of {EVENTS}")
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale()
    cgroups.remove_stale()
    placement = plan_placement(settings)
    camera_hz = camera_rate_hz(settings.bag)
    domain_id = 101 + os.getpid() % 100
    processes: list[_Process] = []
    sampler: CpuSampler | None = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    groups = cgroups.CpuGroups() if placement["pinned"] else None
    with tempfile.TemporaryDirectory(prefix="si_testbed_") as tmp, NetnsLink() as link:
        try:
            if groups is not None:
                groups.open()
                budget = placement["edge_cpu_budget"]
                for name in ("edge", "cloud", "harness"):
                    groups.add(name, placement[f"{name}_cpus"],
                               budget if name == "edge" else None)
                if link.delayer_pid is not None:
                    groups.place("harness", link.delayer_pid)
            key_file = ""
            if settings.auth:  # a key of this run only, readable by the owner only
                key_file = str(Path(tmp) / "frame.keys")
                descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as keys:
                    keys.write(f"1 {secrets.token_hex(32)}\n")
            base = {"bundle": str(Path(settings.bundle).resolve()),
                    "bag": str(Path(settings.bag).resolve()),
                    "strategy": settings.strategy, "initial": settings.initial,
                    "fallback": settings.fallback, "companion": settings.companion,
                    "companion_share": settings.companion_share,
                    # a fifth of the bound is left for the tail and the way back
                    "max_frame_age": 0.8 * settings.stale_after_ms / 1e3,
                    "objective": settings.objective, "frame_rate": settings.frame_rate,
                    "playback_rate": settings.playback_rate, "auth_key_file": key_file,
                    "scheduler_edge_only": settings.scheduler_edge_only,
                    "scheduler_mixing": settings.scheduler_mixing,
                    "edge_timing": (str(Path(settings.edge_timing).resolve())
                                    if settings.edge_timing else "")}

            def start(role: str, name: str) -> _Process:
                records = Path(tmp) / f"{name}.json"
                config = {**base, "role": role, "out": str(records)}
                path = Path(tmp) / f"{name}_config.json"
                path.write_text(json.dumps(config))
                side = role_side(role, settings.control_side)
                command = [*link.exec_prefix(side), sys.executable, "-m",
                           "split_infer.tools.testbed.sides", str(path)]
                if groups is not None:
                    command = groups.wrap(role_group(role, settings.control_side), command)
                peer = link.cloud_ip if side == "edge" else link.edge_ip
                process = _Process(role, command, _side_env(domain_id, peer),
                                   out / f"{name}.log", records)
                processes.append(process)
                return process

            roles = {role: start(role, role)
                     for role in (*cloud_roles(settings.strategy, settings.probing),
                                  *edge_roles(settings.strategy, settings.probing))}
            ready = {role: json.loads(p.wait_for("READY", 120.0)[len("READY "):])
                     for role, p in roles.items()}
            # Discovery must be complete in every process, both directions across the link,
            # while the link is still unshaped.
            readers = Counter(t for r in ready.values() for t in r["sub"])
            writers = Counter(t for r in ready.values() for t in r["pub"])
            for role, process in roles.items():
                process.send("SYNC " + json.dumps({
                    "pub": {t: readers[t] for t in ready[role]["pub"] if readers[t]},
                    "sub": {t: writers[t] for t in ready[role]["sub"] if writers[t]},
                    "timeout_s": 40.0}))
            for process in roles.values():
                process.wait_for("SYNCED", 60.0)
            # Matched topics are not the end of discovery: every node's parameter services
            # and the remaining endpoint announcements still cross the link, a few KB per
            # participant; at 100 kbit/s they would queue in front of the first frames, and
            # more so for strategies with more processes. Wait (unshaped) until it is quiet.
            quiet_after_s = _wait_for_quiet_link(link)
            restarts = 0
            follower = TraceFollower(link, trace, jitter_ms=settings.jitter_ms)
            follower.start()
            sampler = CpuSampler(follower.elapsed_s)
            for role, process in roles.items():
                sampler.add(role, role_group(role, settings.control_side), process.pid)
            if link.delayer_pid is not None:
                sampler.add("packet_delayer", "harness", link.delayer_pid)
            t0_wall = time.time()
            rx0 = link.interface_bytes("cloud")
            throttled0 = groups.throttling("edge") if groups is not None else {}
            roles["camera"].send("GO")
            if "prober" in roles:
                roles["prober"].send("GO")  # probe trains start with the frames
            sampler.start()
            last = 0.0
            killed: set[str] = set()
            waiting_ready: _Process | None = None
            fault_ends: list[tuple[str, float]] = []
            while follower.elapsed_s() < settings.duration_s:
                time.sleep(0.05)
                while events and events[0][0] <= follower.elapsed_s():
                    _, action = events.pop(0)
                    if action == "kill_cloud":
                        roles["cloud"].kill()
                        killed.add("cloud")
                    elif action == "start_cloud":
                        restarts += 1
                        roles["cloud"] = waiting_ready = start("cloud", f"cloud{restarts}")
                        sampler.add(f"cloud{restarts}", "cloud", waiting_ready.pid)
                        killed.discard("cloud")
                    else:
                        if "scheduler" in roles:
                            roles["scheduler"].kill()  # a crash: the edge keeps its config
                            killed.add("scheduler")
                        fault_ends.append(("scheduler killed", follower.elapsed_s()))
                if waiting_ready is not None and waiting_ready.line("READY") is not None:
                    # The restart is over when the new cloud process serves (its start-up,
                    # imports and model loading, is not the graph's recovery).
                    fault_ends.append(("cloud restarted", follower.elapsed_s()))
                    waiting_ready = None
                exited = [role for role, p in roles.items()
                          if role not in killed and p.process.poll() is not None]
                if exited:
                    raise RuntimeError(f"testbed process(es) {', '.join(exited)} exited early; "
                                       f"see the logs in {out}")
                if follower.error is not None:
                    raise RuntimeError(f"shaping failed: {follower.error}")
                if settings.status and follower.elapsed_s() - last >= 5.0:
                    last = follower.elapsed_s()
                    print(f"testbed {settings.strategy} t={last:4.0f}s link "
                          f"{trace.rate_at(last) / 1e6:.2f} Mbit/s", flush=True)
            elapsed = follower.elapsed_s()
            follower.stop()
            rx_bytes = link.interface_bytes("cloud") - rx0
            sampler.stop()
            throttled1 = groups.throttling("edge") if groups is not None else {}
            roles["camera"].stop()
            time.sleep(1.0)  # frames in flight reach the cloud, and their results the recorder
            for process in roles.values():
                process.terminate()
            for process in roles.values():
                process.stop()
            # A killed process writes nothing; everything measured is recorded on the edge.
            records = _merge_records(roles)
            skipped = sorted(follower.skipped)
            capabilities = dict(link.capabilities)
            placement["cgroups"] = groups.describe() if groups is not None else None
            placement["edge_throttling"] = _throttling_delta(throttled0, throttled1)
            cpu = cpu_report(sampler.samples, sampler.sides(), settings.warmup_s, elapsed)
        finally:
            if sampler is not None:
                sampler.stop()
            for process in processes:
                process.stop(timeout_s=5.0)
            if groups is not None:
                groups.close()
            signal.signal(signal.SIGTERM, previous)
    report = summarize(records, trace, settings, t0_wall, elapsed, rx_bytes, fault_ends,
                       placement=placement, cpu=cpu, camera_fps=camera_hz)
    report["link"] = {"capabilities": capabilities, "not_applied": skipped,
                      "veth_rx_bytes": rx_bytes,
                      "discovery_quiet_after_s": quiet_after_s}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    from split_infer.tools.demo.graph import plot_timeline

    plot_timeline(report, out / "timeline.png")
    return report


def _wait_for_quiet_link(link: NetnsLink, window_s: float = 0.5, quiet_bytes: int = 600,
                         timeout_s: float = 20.0) -> float | None:
    """Seconds until a ``window_s`` in which fewer than ``quiet_bytes`` crossed the link in
    both directions (discovery has settled); None when it did not settle within
    ``timeout_s`` (the run goes on, and the report says so)."""
    start = time.monotonic()
    previous = link.interface_bytes("cloud") + link.interface_bytes("edge")
    while time.monotonic() - start < timeout_s:
        time.sleep(window_s)
        now = link.interface_bytes("cloud") + link.interface_bytes("edge")
        if now - previous < quiet_bytes:
            return round(time.monotonic() - start, 2)
        previous = now
    return None


def _merge_records(roles: dict[str, _Process]) -> dict:
    """The processes' records as :func:`summarize` takes them: ``edge`` (the recorder's rows,
    the edge node's stats and compute), ``cloud`` (the last cloud process's), ``roles``."""
    by_role = {role: json.loads(p.records.read_text()) if p.records.is_file() else {}
               for role, p in roles.items()}
    exits = {role: {"exit_status": p.process.returncode, "killed_on_stop": p.killed_on_stop}
             for role, p in roles.items()}
    edge = dict(by_role.get("recorder", {}))
    edge["edge_stats"] = by_role.get("edge", {}).get("edge_stats")
    edge["compute"] = by_role.get("edge", {}).get("compute")
    edge["probe_stats"] = by_role.get("prober", {}).get("probe_stats")
    edge["echo_stats"] = by_role.get("probe_echo", {}).get("echo_stats")
    edge["monitor_stats"] = by_role.get("monitor", {}).get("monitor_stats")
    return {"edge": edge, "cloud": by_role.get("cloud", {}),
            # What each process reported (nothing: it was killed, or failed to stop cleanly).
            "roles": {role: {**{k: v for k, v in r.items()
                                 if k in ("pid", "process_cpu_s", "compute", "published")},
                             **exits[role]} for role, r in by_role.items()}}


def _throttling_delta(before: dict, after: dict) -> dict | None:
    if not before or not after:
        return None
    periods = after["periods"] - before["periods"]
    throttled = after["throttled_periods"] - before["throttled_periods"]
    return {"periods": periods, "throttled_periods": throttled,
            "throttled_fraction": round(throttled / periods, 3) if periods else 0.0,
            "throttled_s": round(after["throttled_s"] - before["throttled_s"], 3)}


def _raise_interrupt(*_) -> None:
    raise KeyboardInterrupt


