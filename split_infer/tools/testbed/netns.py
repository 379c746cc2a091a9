"""A real link for the testbed: two network namespaces joined by a veth pair, shaped with ``tc``.

::

    namespace si<pid>e (edge)                         namespace si<pid>c (cloud)
    ┌────────────────────────────┐   veth pair   ┌────────────────────────────┐
    │ camera, edge node, ...     │ si<pid>e ──── si<pid>c │ cloud node         │
    │ 10.77.X.1/30               │ ─────────────▶│ 10.77.X.2/30               │
    └────────────────────────────┘  shaped: tbf  └────────────────────────────┘
                              (+ loss, delay)

Only the edge → cloud direction is shaped (egress of the edge's veth); receipts and estimates
travel back unshaped, as on an asymmetric uplink. The namespaces run IPv4 only, so the link
carries the nodes' traffic and nothing of IPv6's autoconfiguration. A :class:`TraceFollower`
thread changes the shaping as a bandwidth trace (``config/traces/*.csv``) advances:

* **rate** — ``tbf`` with a small bucket (5 ms of traffic, at least 4 KiB) and a byte limit of
  300 ms of traffic (at least 64 KiB, so one large DDS sample always fits);
* **loss** — an ``iptables`` ``statistic`` rule that drops packets leaving the edge with the
  trace's probability; a rate of 0 (an outage) drops everything the same way, and empties
  the delayer and the qdiscs' queues, so nothing sent before it crosses during it;
* **delay** (and jitter) — ``netem`` under the ``tbf`` when the kernel has ``sch_netem``.
  Where it does not (some VM kernels lack it), an ``NFQUEUE`` rule after the loss rule
  hands every packet to a :class:`~split_infer.tools.testbed.nfqueue.PacketDelayer` process in the
  edge namespace, which releases it the delay (± jitter) later, in order. Where neither works,
  delays are not applied: :attr:`NetnsLink.capabilities` says which mechanism is in use and the
  testbed report carries what was skipped.

Everything created is named after the process id and removed by :meth:`NetnsLink.close`, which
the context manager calls on every exit path; :func:`remove_stale` deletes leftovers of dead
processes (a ``kill -9`` cannot run cleanup).

Root only: :func:`netns_problem` says why the testbed cannot run, or None.
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from split_infer.tools.link import Trace

__all__ = [
    "NetnsLink",
    "Shaping",
    "TraceFollower",
    "list_testbed_namespaces",
    "netns_problem",
    "remove_stale",
]

_log = logging.getLogger(__name__)
_NAME = re.compile(r"^si(\d+)[ec]$")
_MIN_BURST_BYTES = 4096
_MIN_LIMIT_BYTES = 64 * 1024
#: tbf cannot shape to 0; an outage is a 100 % drop rule instead, over a slow token bucket.
_OUTAGE_RATE_BPS = 8_000


#: Disables IPv6 in a namespace (run there) for the interfaces created after it, where the
#: kernel has IPv6.
_NO_IPV6 = ("for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 "
            "/proc/sys/net/ipv6/conf/default/disable_ipv6; "
            "do [ -e $f ] && echo 1 > $f; done; true")

#: Seconds the delayer has to answer a command.
_DELAYER_ANSWER_S = 10.0
#: NFQUEUE number of the delay path (queues are per network namespace).
_DELAY_QUEUE = 7


def _read_line(process: subprocess.Popen, timeout_s: float) -> str:
    """The first stdout line of ``process`` within ``timeout_s`` ("" on timeout or exit)."""
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    return process.stdout.readline().strip() if ready else ""


def _stop_process(process: subprocess.Popen) -> None:
    """Close its stdin (the delayer's signal to release everything and exit), then make sure."""
    try:
        process.stdin.close()
        process.wait(timeout=5.0)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait(timeout=5.0)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def netns_problem() -> str | None:
    """Why network namespaces cannot be used here (not root, tools missing), or None."""
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, veth and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the testbed needs `{tool}` (Debian package iproute2)"
    return None


def list_testbed_namespaces() -> list[str]:
    """Namespaces named like the testbed's (``si<pid>e``/``si<pid>c``)."""
    out = _run("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if _NAME.match(n)]


def remove_stale() -> list[str]:
    """Delete testbed namespaces whose creating process is gone; returns their names."""
    removed = []
    for name in list_testbed_namespaces():
        pid = int(_NAME.match(name).group(1))
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass(frozen=True)
class Shaping:
    """One segment of a trace as applied to the link."""

    rate_bps: float
    delay_ms: float = 0.0
    loss: float = 0.0
    jitter_ms: float = 0.0


@dataclass
class NetnsLink:
    """Two namespaces, a veth pair and the shaping of the edge → cloud direction.

    Use as a context manager (or call :meth:`open`/:meth:`close`)."""

    tag: str = field(default_factory=lambda: str(os.getpid()))
    capabilities: dict[str, bool] = field(default_factory=dict)
    applied: list[tuple[float, Shaping]] = field(default_factory=list)

    def __post_init__(self) -> None:
        subnet = int(self.tag) % 250
        self.edge_ns, self.cloud_ns = f"si{self.tag}e", f"si{self.tag}c"
        self.edge_if, self.cloud_if = f"si{self.tag}e", f"si{self.tag}c"
        self.edge_ip, self.cloud_ip = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
        self._created: list[str] = []
        self._netem = False
        self._delayer: subprocess.Popen | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> NetnsLink:
        problem = netns_problem()
        if problem:
            raise PermissionError(problem)
        try:
            for ns in (self.edge_ns, self.cloud_ns):
                _run("ip", "netns", "add", ns)
                self._created.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                # IPv4 only: IPv6's autoconfiguration chatter (router solicitations, multicast
                # listener reports) would cross the shaped link and count as the robot's bytes.
                ipv6 = _run("ip", "netns", "exec", ns, "sh", "-c", _NO_IPV6, check=False)
                if ipv6.returncode != 0:
                    _log.debug("IPv6 left on in %s: %s", ns, ipv6.stderr.strip())
            _run("ip", "link", "add", self.edge_if, "netns", self.edge_ns, "type", "veth",
                 "peer", "name", self.cloud_if, "netns", self.cloud_ns)
            for ns, interface, ip in ((self.edge_ns, self.edge_if, self.edge_ip),
                                      (self.cloud_ns, self.cloud_if, self.cloud_ip)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", interface)
                _run("ip", "-n", ns, "link", "set", interface, "up")
                # DDS discovery multicasts; without a route the namespace has none.
                _run("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", interface)
            self._probe_capabilities()
            self._install_qdiscs()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the delayer and delete both namespaces (which removes the veth pair, qdiscs
        and rules)."""
        if self._delayer is not None:
            with self._lock:
                _stop_process(self._delayer)
                self._delayer = None
        for ns in reversed(self._created):
            _run("ip", "netns", "del", ns, check=False)
        self._created.clear()

    def __enter__(self) -> NetnsLink:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def delayer_pid(self) -> int | None:
        """The NFQUEUE delayer's process id (None without one), for CPU placement."""
        return None if self._delayer is None else self._delayer.pid

    def exec_prefix(self, side: str) -> list[str]:
        """Command prefix that runs a program in the ``"edge"`` or ``"cloud"`` namespace."""
        return ["ip", "netns", "exec", self.edge_ns if side == "edge" else self.cloud_ns]

    # -- shaping --------------------------------------------------------------------------------
    def _probe_capabilities(self) -> None:
        tc = ["tc", "-n", self.edge_ns, "qdisc"]
        probe = _run(*tc, "add", "dev", self.edge_if, "root", "handle", "1:", "netem",
                     "delay", "1ms", check=False)
        self._netem = probe.returncode == 0
        if self._netem:
            _run(*tc, "del", "dev", self.edge_if, "root", check=False)
        iptables = shutil.which("iptables") is not None and _run(
            *self.exec_prefix("edge"), "iptables", "-L", "OUTPUT", "-n", check=False
        ).returncode == 0
        self.capabilities = {"tbf_rate": True, "netem_delay": self._netem,
                             "nfqueue_delay": False, "iptables_loss": iptables}

    def _install_qdiscs(self) -> None:
        self._add_shaper(1e9)
        if self.capabilities["iptables_loss"]:
            self._iptables("-N", "SI_LOSS")
            self._iptables("-A", "OUTPUT", "-o", self.edge_if, "-j", "SI_LOSS")
            if not self._netem:
                self._start_delayer()

    def _start_delayer(self) -> None:
        """The NFQUEUE delay path (see the module docstring); leaves ``nfqueue_delay`` False
        if the kernel or the process refuses."""
        queue = _DELAY_QUEUE
        try:
            self._iptables("-A", "OUTPUT", "-o", self.edge_if, "-j", "NFQUEUE", "--queue-num",
                           str(queue), "--queue-bypass")
        except RuntimeError as exc:
            _log.warning("no NFQUEUE delay: %s", exc)
            return
        process = subprocess.Popen(
            [*self.exec_prefix("edge"), sys.executable, "-m", "split_infer.tools.testbed.nfqueue",
             "--queue", str(queue)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = _read_line(process, timeout_s=20.0)
        if ready != "READY":
            _stop_process(process)
            _log.warning("no NFQUEUE delay: the delayer said %r", ready)
            return
        self._delayer = process
        self.capabilities["nfqueue_delay"] = True

    def _iptables(self, *args: str) -> None:
        _run(*self.exec_prefix("edge"), "iptables", "-w", *args)

    @staticmethod
    def _tbf_args(rate_bps: float) -> list[str]:
        rate = max(int(rate_bps), _OUTAGE_RATE_BPS)
        burst = max(_MIN_BURST_BYTES, int(rate / 8 * 0.005))
        limit = max(_MIN_LIMIT_BYTES, int(rate / 8 * 0.3))
        return ["tbf", "rate", f"{rate}bit", "burst", str(burst), "limit", str(limit)]

    def apply(self, shaping: Shaping, at_s: float | None = None) -> list[str]:
        """Shape the edge → cloud direction; returns what could not be applied.

        An outage (rate 0) carries nothing, not even what was sent before it: the drop rule
        goes in first, then the delayer drops what it holds and the qdiscs are deleted and
        added again, which empties their queues (tbf's, and netem's where it delays; a ``tc
        change`` keeps them, and at the outage's floor rate they trickle through)."""
        skipped = []
        outage = shaping.rate_bps <= 0
        loss = 1.0 if outage else shaping.loss
        with self._lock:
            if outage:
                skipped += self._set_loss(loss, outage)
            flush = outage and self.capabilities.get("iptables_loss", False)
            parent = ["parent", "1:1"] if self._netem else ["root"]
            if flush:
                try:
                    self._tell_delayer("DROP")
                finally:  # a delayer gone wrong still leaves the shaper's queue emptied
                    self._reinstall_qdiscs(shaping.rate_bps)
            else:
                _run("tc", "-n", self.edge_ns, "qdisc", "change", "dev", self.edge_if, *parent,
                     "handle", "10:", *self._tbf_args(shaping.rate_bps))
            if self._netem:
                delay = ["delay", f"{shaping.delay_ms:g}ms"]
                if shaping.jitter_ms > 0:
                    delay += [f"{shaping.jitter_ms:g}ms"]
                _run("tc", "-n", self.edge_ns, "qdisc", "change", "dev", self.edge_if, "root",
                     "handle", "1:", "netem", *delay)
            elif self._delayer is not None:
                if not flush:
                    self._tell_delayer(f"DELAY {shaping.delay_ms:g} {shaping.jitter_ms:g}")
            elif shaping.delay_ms > 0 or shaping.jitter_ms > 0:
                skipped.append("delay")
            if not outage:
                skipped += self._set_loss(loss, outage)
        self.applied.append((time.monotonic() if at_s is None else at_s, shaping))
        return skipped

    def _set_loss(self, loss: float, outage: bool) -> list[str]:
        """The drop rule for ``loss`` (1: everything); what could not be applied."""
        if not self.capabilities.get("iptables_loss"):
            return ["outage" if outage else "loss"] if loss > 0 else []
        self._iptables("-F", "SI_LOSS")
        if loss > 0:
            rule = ["-A", "SI_LOSS", "-j", "DROP"]
            if loss < 1:
                rule[2:2] = ["-m", "statistic", "--mode", "random", "--probability",
                             f"{loss:.6f}"]
            self._iptables(*rule)
        return []

    def _tell_delayer(self, command: str) -> None:
        """Send the delayer one command and wait for its ``OK`` (RuntimeError if it is gone or
        does not answer)."""
        delayer = self._delayer
        if delayer is None:
            return
        if delayer.poll() is not None:
            raise RuntimeError(f"the NFQUEUE delayer exited (status {delayer.returncode})")
        delayer.stdin.write(command + "\n")
        delayer.stdin.flush()
        answer = _read_line(delayer, timeout_s=_DELAYER_ANSWER_S)
        if answer != "OK":
            # Its late answer would be read as the next command's: no delay path from here on.
            _stop_process(delayer)
            self._delayer = None
            self.capabilities["nfqueue_delay"] = False
            why = (f"answered {answer!r}" if answer else
                   f"did not answer within {_DELAYER_ANSWER_S:g} s (exit status "
                   f"{delayer.returncode})")
            raise RuntimeError(f"the NFQUEUE delayer {why} to {command!r}")

    def _reinstall_qdiscs(self, rate_bps: float) -> None:
        """The shaper's qdiscs deleted (with every packet they queue) and added again."""
        _run("tc", "-n", self.edge_ns, "qdisc", "del", "dev", self.edge_if, "root")
        self._add_shaper(rate_bps)

    def _add_shaper(self, rate_bps: float) -> None:
        """The qdiscs of the edge's veth: ``tbf`` at ``rate_bps`` (under ``netem`` where the
        kernel has it)."""
        tc = ["tc", "-n", self.edge_ns, "qdisc", "add", "dev", self.edge_if]
        if self._netem:
            _run(*tc, "root", "handle", "1:", "netem", "delay", "0ms")
            _run(*tc, "parent", "1:1", "handle", "10:", *self._tbf_args(rate_bps))
        else:
            _run(*tc, "root", "handle", "10:", *self._tbf_args(rate_bps))

    def interface_bytes(self, side: str = "cloud") -> int:
        """Bytes received so far by the ``side``'s end of the veth (the link's goodput)."""
        ns, interface = ((self.cloud_ns, self.cloud_if) if side == "cloud"
                         else (self.edge_ns, self.edge_if))
        out = _run("ip", "-n", ns, "-s", "link", "show", interface).stdout.splitlines()
        for i, line in enumerate(out):
            if line.strip().startswith("RX:"):
                return int(out[i + 1].split()[0])
        raise RuntimeError(f"no RX counters for {interface}")


class TraceFollower(threading.Thread):
    """Applies each segment of ``trace`` to ``link`` when its time comes (from :meth:`start`);
    ``jitter_ms`` (± uniform) goes with every segment that has a delay."""

    def __init__(self, link: NetnsLink, trace: Trace, jitter_ms: float = 0.0) -> None:
        super().__init__(name="trace_follower", daemon=True)
        self.link, self.trace, self.jitter_ms = link, trace, jitter_ms
        self.t0 = math.nan
        self.skipped: set[str] = set()
        self.error: Exception | None = None
        self._stop = threading.Event()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._apply(0)
        super().start()

    def _apply(self, index: int) -> None:
        trace = self.trace
        delay_ms = float(trace.delays_s[index]) * 1e3
        self.skipped.update(self.link.apply(Shaping(
            float(trace.rates_bps[index]), delay_ms, float(trace.losses[index]),
            self.jitter_ms if delay_ms > 0 else 0.0), at_s=float(trace.times_s[index])))

    def run(self) -> None:
        try:
            for index in range(1, len(self.trace.times_s)):
                wait = float(self.trace.times_s[index]) - self.elapsed_s()
                if self._stop.wait(max(wait, 0.0)):
                    return
                self._apply(index)
        except Exception as exc:  # reported by the testbed, which owns the thread
            self.error = exc
            _log.error("trace follower failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
