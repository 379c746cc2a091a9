"""CPU placement for the testbed: per-run cgroups that pin processes to CPUs and cap a budget.

The testbed emulates a robot slower than its server by giving the robot's processes a CPU
budget, a fraction of one core, and keeps both sides and the harness on disjoint CPUs so that
neither the server nor the bag player and recorder take the robot's CPU. Each run creates::

    <hierarchy>/si_testbed_<pid>/edge     cpuset: the edge CPUs,    quota: the budget (or none)
                                /cloud    cpuset: the cloud CPUs,   no quota
                                /harness  cpuset: the harness CPUs, no quota

with cgroup v2 (``cpuset.cpus`` and ``cpu.max``) where the unified hierarchy has the ``cpu``
and ``cpuset`` controllers, else with the cgroup v1 ``cpu`` (``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``) and ``cpuset`` (``cpuset.cpus`` / ``cpuset.mems``) hierarchies.

A process enters its group before it runs any code of its own: :meth:`CpuGroups.wrap` prefixes
its command with a shell that writes its own pid into the group and then ``exec``s the command
(the pid stays the same, and children inherit the group). :meth:`CpuGroups.place` moves a
running process. :meth:`CpuGroups.close` moves whatever is left back to the root and removes
the groups; :func:`remove_stale` removes the groups of runs whose process is gone (a
``kill -9`` cannot clean up), as :func:`.netns.remove_stale` does for namespaces.

The quota period is :data:`PERIOD_US` (10 ms) rather than the kernel's 100 ms default: a
budget enforced in 10-ms periods stretches each frame's compute the way a slower CPU would,
where a 100-ms period lets a frame run at full speed and then stalls the process for up to
75 ms at a budget of 0.25. The quota never goes below the kernel's 1-ms minimum (the period
grows instead).

Root only: :func:`cgroups_problem` says in one line why cgroups cannot be used here, or None.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from split_infer.errors import UserError

__all__ = [
    "PERIOD_US",
    "CgroupError",
    "CpuGroups",
    "Hierarchy",
    "allowed_cpus",
    "cgroups_problem",
    "default_cpus",
    "find_hierarchy",
    "format_cpus",
    "parse_cpus",
    "quota_period_us",
    "remove_stale",
    "run_under_budget",
]

PREFIX = "si_testbed_"
_NAME = re.compile(rf"^{PREFIX}(\d+)([pb]?)$")  # a run's, a probe's, a measurement's
#: The quota's period (see the module docstring for why it is short).
PERIOD_US = 10_000
_MIN_QUOTA_US = 1_000  # the kernel refuses smaller quotas
_MAX_PERIOD_US = 1_000_000  # and longer periods
_CONTROLLERS = ("cpu", "cpuset")


class CgroupError(UserError):
    """Cgroups cannot be used as asked (not root, no usable hierarchy, a bad CPU list)."""


@dataclass(frozen=True)
class Hierarchy:
    """Where the ``cpu`` and ``cpuset`` controllers are: one cgroup v2 mount holding both
    (``version`` 2, ``roots == {"cpu": m, "cpuset": m}``) or two cgroup v1 mounts."""

    version: int
    roots: dict[str, Path]

    def directories(self) -> list[Path]:
        """The distinct mount points (one for v2, two for v1)."""
        return list(dict.fromkeys(self.roots.values()))


def find_hierarchy(mountinfo: str | None = None) -> Hierarchy | None:
    """The cgroup hierarchy to use, from ``/proc/self/mountinfo`` (or its text): cgroup v2
    when a unified mount has both controllers, else the v1 ``cpu`` and ``cpuset`` mounts;
    None when neither is there."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    v1: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, post = before.split(), after.split()
        if not sep or len(fields) < 5 or len(post) < 3:
            continue
        mount = Path(fields[4])
        if post[0] == "cgroup2":
            try:
                controllers = (mount / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if all(c in controllers for c in _CONTROLLERS):
                return Hierarchy(2, {c: mount for c in _CONTROLLERS})
        elif post[0] == "cgroup":
            options = post[2].split(",")
            for controller in _CONTROLLERS:
                if controller in options:
                    v1.setdefault(controller, mount)
    if all(c in v1 for c in _CONTROLLERS):
        return Hierarchy(1, v1)
    return None


def parse_cpus(text: str) -> list[int]:
    """``"0-2,5"`` → ``[0, 1, 2, 5]`` (the kernel's CPU list format); CgroupError when it is
    not one."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise CgroupError(f"{text!r} is not a CPU list (e.g. '0', '1-3' or '0,2')") from None
        if first < 0 or last < first:
            raise CgroupError(f"{text!r} is not a CPU list (e.g. '0', '1-3' or '0,2')")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpus(cpus: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def default_cpus(cpus: Sequence[int] | None = None) -> dict[str, list[int]]:
    """The default placement over ``cpus`` (default: :func:`allowed_cpus`): the edge side's
    product processes on the first CPU, the cloud side on the second, the harness (bag
    player, recorder, packet delayer) on the rest, or with the cloud when there are only two.

    The harness goes with the cloud, never with the edge: the robot is the side under study
    (and the one with a budget), and a harness process on its CPU would take time from its
    processes that no robot would lose to a camera driver on another core. CgroupError with
    fewer than two CPUs (the sides cannot be disjoint)."""
    cpus = sorted(cpus if cpus is not None else allowed_cpus())
    if len(cpus) < 2:
        raise CgroupError(f"disjoint edge and cloud CPUs need at least 2 CPUs; this process "
                          f"may use {format_cpus(cpus) or 'none'}")
    return {"edge": cpus[:1], "cloud": cpus[1:2], "harness": cpus[2:] or cpus[1:2]}


def quota_period_us(budget: float) -> tuple[int, int]:
    """(quota, period) in µs for ``budget`` cores: :data:`PERIOD_US`, lengthened where the
    quota would fall under the kernel's 1-ms minimum. ValueError outside (0, 1024]."""
    if not (math.isfinite(budget) and 0 < budget <= 1024):
        raise ValueError(f"a CPU budget must be in (0, 1024] cores, got {budget!r}")
    period = PERIOD_US
    if budget * period < _MIN_QUOTA_US:
        period = min(_MAX_PERIOD_US, math.ceil(_MIN_QUOTA_US / budget))
    quota = max(_MIN_QUOTA_US, round(budget * period))
    return quota, period


def _write(path: Path, value: str) -> None:
    # Control files want one write of the whole value; text-mode buffering would do that too,
    # but an error must surface here, naming the file.
    try:
        descriptor = os.open(path, os.O_WRONLY)
        try:
            os.write(descriptor, value.encode())
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from None


def _pids(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _remove(group: Path, root: Path) -> None:
    """Move what is left in ``group`` (and its children) to ``root``, then remove them."""
    if not group.is_dir():
        return
    for child in [p for p in group.iterdir() if p.is_dir()]:
        _remove(child, root)
    deadline = time.monotonic() + 3.0
    while True:
        for pid in _pids(group):
            with contextlib.suppress(CgroupError):  # it exited meanwhile
                _write(root / "cgroup.procs", str(pid))
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            # A process that just exited can keep the group busy for a moment.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class CpuGroups:
    """The per-run cgroups of one testbed run (see the module docstring).

    Use as a context manager, or :meth:`open` and :meth:`close`. ``tag`` names the groups
    (default: this process's id, which is what :func:`remove_stale` checks)."""

    def __init__(self, tag: str | None = None, hierarchy: Hierarchy | None = None) -> None:
        self.tag = tag or str(os.getpid())
        self.hierarchy = hierarchy
        self.budgets: dict[str, float | None] = {}
        self.cpus: dict[str, list[int]] = {}
        self._bases: list[tuple[Path, Path]] = []  # (our directory, its hierarchy root)

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> CpuGroups:
        """Create this run's parent group in each hierarchy (CgroupError when it cannot)."""
        if os.geteuid() != 0:
            raise CgroupError("CPU placement needs root (cgroups)")
        if self.hierarchy is None:
            self.hierarchy = find_hierarchy()
        if self.hierarchy is None:
            raise CgroupError("no cgroup v2 hierarchy with the cpu and cpuset controllers and "
                              "no cgroup v1 cpu and cpuset hierarchies are mounted")
        try:
            for root in self.hierarchy.directories():
                base = root / f"{PREFIX}{self.tag}"
                try:
                    base.mkdir()
                except FileExistsError:
                    _remove(base, root)  # a leftover of this very tag: start clean
                    base.mkdir()
                except OSError as exc:
                    raise CgroupError(f"cannot create a cgroup under {root}: "
                                      f"{exc.strerror or exc}") from None
                self._bases.append((base, root))
                if self.hierarchy.version == 2:
                    # Children get the controllers only where every ancestor hands them down.
                    if not all(c in (root / "cgroup.subtree_control").read_text().split()
                               for c in _CONTROLLERS):
                        _write(root / "cgroup.subtree_control", "+cpu +cpuset")
                    _write(base / "cgroup.subtree_control", "+cpu +cpuset")
                elif root == self.hierarchy.roots["cpuset"]:
                    # v1 cpusets start empty and refuse tasks until cpus and mems are set.
                    for name in ("cpuset.cpus", "cpuset.mems"):
                        _write(base / name, (root / name).read_text().strip())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Move any process still in the groups back to the root and remove the groups."""
        for base, root in reversed(self._bases):
            # What cannot go now, remove_stale() removes once this process is gone.
            with contextlib.suppress(OSError):
                _remove(base, root)
        self._bases.clear()

    def __enter__(self) -> CpuGroups:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- groups ---------------------------------------------------------------------------------
    def _dir(self, controller: str, name: str) -> Path:
        assert self.hierarchy is not None, "open() first"
        return self.hierarchy.roots[controller] / f"{PREFIX}{self.tag}" / name

    def add(self, name: str, cpus: Sequence[int], budget: float | None = None) -> None:
        """A group ``name`` pinned to ``cpus`` with at most ``budget`` cores of CPU time
        (None: no quota)."""
        if not cpus:
            raise CgroupError(f"cgroup {name}: no CPUs given")
        if budget is not None and budget > len(cpus):
            raise CgroupError(f"cgroup {name}: a budget of {budget:g} cores does not fit on "
                              f"{len(cpus)} CPU(s) ({format_cpus(cpus)})")
        assert self.hierarchy is not None, "open() first"
        for controller in _CONTROLLERS:
            path = self._dir(controller, name)
            path.mkdir(exist_ok=True)
        cpuset = self._dir("cpuset", name)
        _write(cpuset / "cpuset.cpus", format_cpus(cpus))
        if self.hierarchy.version == 1:
            _write(cpuset / "cpuset.mems", (cpuset.parent / "cpuset.mems").read_text().strip())
        cpu = self._dir("cpu", name)
        quota, period = quota_period_us(budget) if budget is not None else (-1, PERIOD_US)
        if self.hierarchy.version == 2:
            _write(cpu / "cpu.max", f"{'max' if quota < 0 else quota} {period}")
        else:
            _write(cpu / "cpu.cfs_period_us", str(period))
            _write(cpu / "cpu.cfs_quota_us", str(quota))
        self.cpus[name] = sorted(cpus)
        self.budgets[name] = budget

    def _procs_files(self, name: str) -> list[Path]:
        return list(dict.fromkeys(self._dir(c, name) / "cgroup.procs" for c in _CONTROLLERS))

    def wrap(self, name: str, command: Sequence[str]) -> list[str]:
        """``command`` so that it starts inside group ``name``: a shell writes its own pid
        into the group, then ``exec``s the command (same pid; its children inherit)."""
        moves = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in self._procs_files(name))
        return ["sh", "-c", f'{moves} && exec "$@"', "sh", *command]

    def place(self, name: str, pid: int) -> None:
        """Move a running process (all its threads) into group ``name``."""
        for path in self._procs_files(name):
            _write(path, str(pid))

    def throttling(self, name: str) -> dict[str, float]:
        """The group's quota statistics so far: ``periods`` (with runnable work),
        ``throttled_periods`` and ``throttled_s`` (empty where the kernel keeps none)."""
        try:
            lines = (self._dir("cpu", name) / "cpu.stat").read_text().split("\n")
        except OSError:
            return {}
        stat = {k: int(v) for k, _, v in (line.partition(" ") for line in lines) if v}
        throttled = (stat["throttled_usec"] / 1e6 if "throttled_usec" in stat
                     else stat.get("throttled_time", 0) / 1e9)
        return {"periods": stat.get("nr_periods", 0),
                "throttled_periods": stat.get("nr_throttled", 0), "throttled_s": throttled}

    def describe(self) -> dict[str, object]:
        """What was created: the cgroup version and, per group, its CPUs and budget."""
        return {"cgroup_version": None if self.hierarchy is None else self.hierarchy.version,
                "groups": {name: {"cpus": format_cpus(cpus), "budget_cores": self.budgets[name]}
                           for name, cpus in self.cpus.items()}}


def cgroups_problem() -> str | None:
    """Why the testbed cannot place processes in cgroups here (not root, no usable hierarchy,
    not writable), in one line, or None. Creates and removes a probe group."""
    if os.geteuid() != 0:
        return "CPU placement needs root (cgroups)"
    hierarchy = find_hierarchy()
    if hierarchy is None:
        return ("no cgroup v2 hierarchy with the cpu and cpuset controllers and no cgroup v1 "
                "cpu and cpuset hierarchies are mounted")
    try:
        cpus = allowed_cpus()
        with CpuGroups(tag=f"{os.getpid()}p", hierarchy=hierarchy) as probe:
            probe.add("probe", cpus[:1], budget=0.5)
    except (CgroupError, OSError) as exc:
        return str(exc)
    return None


def remove_stale() -> list[str]:
    """Remove testbed cgroups whose creating process is gone; returns their paths."""
    hierarchy = find_hierarchy()
    if hierarchy is None:
        return []
    removed = []
    for root in hierarchy.directories():
        try:
            entries = list(root.iterdir())
        except OSError:
            continue
        for path in entries:
            match = _NAME.match(path.name)
            if match is None or not path.is_dir():
                continue
            pid = int(match.group(1))
            if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                try:
                    _remove(path, root)
                    removed.append(str(path))
                except OSError:
                    pass
    return removed


def run_under_budget(command: Sequence[str], budget: float, what: str = "--edge-cpu",
                     **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` to completion inside a cgroup of its own, limited to ``budget`` cores
    on as many CPUs as the budget needs (the first this process may use): a measurement of
    how a slower machine would run it. ``kwargs`` go to :func:`subprocess.run`. CgroupError,
    naming ``what`` was asked, when cgroups cannot be used here."""
    problem = cgroups_problem()
    if problem:
        raise CgroupError(f"{what} needs cgroups: {problem}")
    cpus = allowed_cpus()[:max(1, math.ceil(budget))]
    with CpuGroups(tag=f"{os.getpid()}b") as groups:
        groups.add("budget", cpus, budget)
        return subprocess.run(groups.wrap("budget", command), check=False, **kwargs)
