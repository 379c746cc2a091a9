"""The scheduler's decision loop, without ROS: bundle → planning configurations, one decision
per tick with hysteresis, probing, overrides, and what to do when the edge says no.

Every decision is :func:`split_infer.planning.choose_configuration` (Hu & K Algorithm 2 for
``effective_accuracy``, the thesis's latency model for ``latency``) damped by
:class:`split_infer.planning.Hysteresis` — the same implementation ``split-infer plan`` uses.
What this module adds (all beyond the papers, which assume the bandwidth is simply measured):

* **Lower bounds.** When the monitor reports ``lower_bound`` (the link was not saturated, so the
  bandwidth it saw is only what was offered), the scheduler never moves to a configuration that
  sends *fewer* bytes: a lower bound cannot show that the link is too slow — saturation would,
  and saturation is measured. It may move to one that sends more (the delivered rate rose), or
  to a smaller one that is at least as accurate (it dominates at every bandwidth).
* **Probing.** A lower bound cannot show either that the link is fast enough for more, so
  every ``probe_interval_s`` the scheduler looks one rung up: the decision at
  ``probe_gain^k ×`` the bound for the smallest ``k`` (up to ``probe_steps``) at which the
  policy would pick something else (Hu & K's ratios are a factor 2 apart, the default gain).
  That switch is a probe: when the link carries it, the delivered rate rises and the new
  configuration stays; when it does not, frames queue, the monitor measures the capacity, and
  the next decisions move back (after ``min_dwell_s``). A probe that ends in saturation doubles
  the interval (up to ``max_probe_backoff``×); one that holds resets it.
* **Rejections.** The edge validates every (split, ratio) pair and may refuse. A refused
  configuration is left out of the decisions for ``retry_backoff_s``, doubling per consecutive
  refusal up to ``max_retry_backoff_s``; the hysteresis state rolls back to what the edge
  really runs.
* **Edge-only.** The whole model on the robot, nothing sent (the thesis's client-only
  strategy, eq. 4.4), is one more configuration when the scheduler is given it
  (:func:`~split_infer.adaptation.configurations.configurations_from_bundle` with
  ``include_edge_only``): ``(-1, 1)``. Its ν_eff does not depend on the link, only on the
  robot's time for the whole model, so on a slow robot it wins only where the link is too
  poor for every split.
* **The robot's spare time.** An edge whose ``fallback`` is ``edge_only`` classifies on board,
  with the whole model, the frames its link or server cannot take
  (:meth:`SchedulingLoop.set_edge_fallback`). Every split is then planned with the frames its
  idle robot time adds, and with the link's wait for a whole-model frame the robot is in when
  the link frees (:func:`~split_infer.planning.effective_accuracy.fallback_rates_hz`; the whole
  model timed from the fallback's frames once they ran, :meth:`SchedulingLoop.observe_fallback`;
  ``bench/README.md``, "The robot's spare time"; beyond Hu & K and the thesis, which drop those
  frames). A robot that fills its spare time loses camera frames by design, so the lost-frames
  rule below is off while the edge reports fallback frames.
* **Link share.** A capacity estimate (not a lower bound, taken as it is) is planned at
  ``link_share`` × its value: the link also carries probe trains, headers and other topics,
  and a link planned full queues at the first larger frame. 0.85 is the share WebRTC's
  congestion control (GCC) targets when it backs off.
* **Measured robot time.** The planned edge times come from a profile or a one-off measurement
  (``split-infer plan --edge-cpu``), and a robot's CPU is shared and drifts. The edge reports
  its time per frame (``metrics/edge_cpu_ms``, its CPU time per frame, when the plan has each
  configuration's CPU time: a robot pacing frames at the camera rate runs each unthrottled, so
  its wall time, ``metrics/edge_ms``, misses what its budget pays); once a configuration has
  run ``EDGE_TIME_SETTLE_S``, :meth:`SchedulingLoop.observe_edge_time` keeps an EWMA of what
  it costs, and later decisions plan it with that. One that has not run is planned, in order
  of preference, at its planned time × a sibling's measured / planned (the same head at
  another ratio); with CPU reports, on a least-squares line through measured against planned
  CPU time of those that ran (the node spends about the same per frame beside the model
  whatever the head: a factor measured on a light head made every split 1.4–1.6× slower than
  it ran); else × :attr:`SchedulingLoop.robot_factor` (measured / planned, an EWMA within
  [``MIN_ROBOT_FACTOR``, ``MAX_ROBOT_FACTOR``], the first report replacing the prior of 1). A
  measured time is kept while another runs: a wrong plan costs one try. When the edge took
  under ``LOST_SHARE`` of the camera's frames (a cgroup quota stalls a robot, and its
  keep-last subscription loses the frames meanwhile), the configuration is
  planned at the time per frame it took, 1 / ``metrics/received_fps``
  (:meth:`SchedulingLoop.observe_received`). The runs behind each rule are in bench/README.md
  ("A step up seen sooner", 2026-12-07); all beyond Hu & K, whose robot time is a constant.
* **A companion** (``settings.mixing``, off by default). An edge that can run a second
  configuration on a share of its frames (:meth:`SchedulingLoop.set_edge_companion`) is also
  planned with mixes
  (:func:`~split_infer.planning.mixing.companion_mixes`): each configuration with the companion
  and share that maximise its ν_eff, one more candidate where it beats every configuration
  alone by ``margin`` (it is planned from two configurations' times, each a guess until run),
  as :class:`~split_infer.planning.mixing.MixedConfiguration` ``primary+companion``, taken by
  the thresholds, E[ν_eff], the fallback and the hysteresis as any configuration. A running
  mix's share follows the estimate in steps over ``SHARE_STEP``; the edge's reports time its
  primary (it keeps the companion's frames apart) and its mean frame size credits neither.
  Beyond Hu & K, who run one configuration at a time: on a weak robot a late split is
  robot-bound and an early one link-bound, and sharing the frames keeps both busy.
* **Measured frame sizes.** A bundle's frame sizes are means over its evaluation images; the
  robot's scene codes smaller or larger. The edge reports its mean wire-frame size
  (``metrics/bytes_per_frame``); once a configuration has run ``EDGE_TIME_SETTLE_S``,
  :meth:`SchedulingLoop.observe_frame_bytes` keeps an EWMA of it, every later decision plans
  that configuration with it, and the others at its split point with their planned size ×
  its measured / planned (:meth:`SchedulingLoop.frame_bytes`; beyond Hu & Krishnamachari,
  whose sizes are constants).
* **A link that varies.** Hu & K's Fig. 3 links draw a new bandwidth every second, faster than a
  scheduler that learns each draw late and keeps a configuration ``min_dwell_s`` can follow.
  Capacity estimates (not lower bounds) of the last ``variation_window_s`` go into
  :class:`~split_infer.adaptation.variation.CapacityWindow`, and the decision is the configuration
  with the highest *expected* ν_eff over them (Hu & K §V, eqs. (4)–(6), with the recent estimates
  as the distribution: beyond the paper, which plans on a known one). A level change restarts the
  window, and until it holds ``MIN_SAMPLES`` estimates the decision is Algorithm 2's at the newest
  one, so a fall (a step down, an outage) moves the scheduler on its first estimate and a rise on
  its ``RISE_ESTIMATES``-th (the ``STEADY_RISE_ESTIMATES``-th different one after a link that held
  one level, decided on when it arrives); on a constant link the window holds one level and the two
  agree. A lower bound neither joins the window nor restarts it (it shows no variation and no fall;
  :meth:`~split_infer.adaptation.variation.CapacityWindow.add_lower_bound`).
* **Start-up.** What the edge runs before the first decision was chosen without a link
  measurement (:func:`~split_infer.adaptation.configurations.startup_configuration`, or a
  previous scheduler's choice): the first decision replaces it at once, without dwell or margin
  (beyond the thesis). A CPU-timed loop's first decision waits up to
  ``FIRST_CPU_REPORT_WAIT_S`` for the robot's first CPU report, without which every
  configuration is planned at its planned time and a slower robot pays for the first choice.
* **No dwell on an overloaded link.** The dwell damps switches between choices that both fit; a
  configuration whose frames need more than ``link_share`` of a measured capacity (a lower
  bound cannot show it) fills the link, and its frames queue for as long as it is kept: the
  dwell is waived then, while the decision is on the newest estimate (the window restarted or
  too short); the margin still holds. The estimates right after a step down pass through
  values between the two levels, and a decision on one kept q75 on the step trace's 1-Mbit/s
  link for the whole dwell; on a link planned over its recent draws a low draw is no reason
  (waived there, N(3, 2) runs switched 5–7 times instead of 2; ``bench/README.md``, "A step
  up seen sooner, 2026-12-07"; beyond the thesis).
* **Override.** A pinned configuration is applied regardless of the bandwidth (and re-applied
  if the edge drifts away from it); clearing the pin hands control back to the policy.

Units: bits/s, seconds, frames/s (see :mod:`split_infer.planning`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from split_infer.adaptation.policy import OBJECTIVES, Decision, Hysteresis, choose_configuration
from split_infer.adaptation.variation import MIN_SAMPLES, CapacityWindow
from split_infer.config_key import EDGE_ONLY_SPLIT, config_key
from split_infer.planning import Configuration
from split_infer.planning.bandwidth import BandwidthDistribution
from split_infer.planning.configuration import BITS_PER_BYTE
from split_infer.planning.effective_accuracy import effective_accuracy, pipeline_throughput_hz
from split_infer.planning.mixing import (
    MixedConfiguration,
    blend,
    companion_mixes,
    primary_of,
    same_plan,
)

__all__ = ["EDGE_TIME_SETTLE_S", "FIRST_CPU_REPORT_WAIT_S", "LOST_SHARE", "MAX_SCENE_FACTOR",
           "SHARE_STEP", "LinkState", "SchedulerSettings", "SchedulingLoop", "Step"]

@dataclass(frozen=True)
class LinkState:
    """What the monitor says: bandwidth (bits/s), RTT (s), and whether the bandwidth is only a
    lower bound (the link was not saturated)."""

    bandwidth_bps: float
    rtt_s: float = 0.0
    lower_bound: bool = False


@dataclass(frozen=True)
class SchedulerSettings:
    """Policy knobs (see the module docstring)."""

    objective: str = "effective_accuracy"
    frame_rate_hz: float = 10.0  # T_gen
    deadline_s: float | None = None
    # A ±5 % estimate moves a link-limited configuration's ν_eff by a few points: a smaller
    # margin switches between near-ties on that noise, paying a new head's first run each time.
    margin: float = 0.03
    min_dwell_s: float = 2.0
    probe_interval_s: float = 10.0  # 0 disables probing
    probe_gain: float = 2.0
    probe_steps: int = 4  # a probe looks up to probe_gain**probe_steps × the bound
    max_probe_backoff: int = 8
    retry_backoff_s: float = 5.0
    max_retry_backoff_s: float = 60.0
    max_accuracy_loss: float | None = None
    link_share: float = 0.85  # of a capacity estimate, what the frames may plan for
    # Plan for the capacity of this long (0: the estimate); a level change restarts the window.
    # On N(3, 2) 10 s switched JPEG <-> split 9 on each wander (bench/README.md 2026-12-07).
    variation_window_s: float = 30.0
    # Also plan mixes with a companion, where the edge can run one (set_edge_companion).
    mixing: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not (math.isfinite(self.frame_rate_hz) and self.frame_rate_hz > 0):
            raise ValueError("frame_rate_hz must be > 0")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError("deadline_s must be > 0 (or None)")
        if self.margin < 0 or self.min_dwell_s < 0 or self.probe_interval_s < 0:
            raise ValueError("margin, min_dwell_s and probe_interval_s must be >= 0")
        if not self.probe_gain > 1:
            raise ValueError("probe_gain must be > 1")
        if self.probe_steps < 1 or self.max_probe_backoff < 1:
            raise ValueError("probe_steps and max_probe_backoff must be >= 1")
        if not 0 < self.retry_backoff_s <= self.max_retry_backoff_s:
            raise ValueError("need 0 < retry_backoff_s <= max_retry_backoff_s")
        if not 0 < self.link_share <= 1:
            raise ValueError("link_share must be in (0, 1]")
        if not (math.isfinite(self.variation_window_s) and self.variation_window_s >= 0):
            raise ValueError("variation_window_s must be >= 0 seconds")


@dataclass(frozen=True)
class Step:
    """One tick's outcome.

    ``target`` is the configuration the edge should run (None: nothing to decide yet);
    ``apply`` says a request should go out now (call :meth:`SchedulingLoop.request_sent`, then
    :meth:`SchedulingLoop.request_done`). ``decision`` is the planner's answer at
    ``bandwidth_bps`` (a multiple of the estimate when ``probing``).
    """

    target: Configuration | None
    apply: bool
    reason: str
    decision: Decision | None = None
    bandwidth_bps: float | None = None
    rtt_s: float | None = None
    probing: bool = False
    #: The whole model as planned for the frames the link cannot take (None: they are lost).
    fallback: Configuration | None = None

    def predicted_effective_accuracy(self, frame_rate_hz: float) -> float | None:
        """``ν_eff`` of ``target`` at the decision's bandwidth (Hu & K §III), with the frames
        the edge's fallback classifies on board."""
        if self.target is None or self.bandwidth_bps is None:
            return None
        return float(effective_accuracy(self.target, self.bandwidth_bps, frame_rate_hz,
                                        self.fallback))


#: Seconds a configuration runs before the edge's reported time per frame counts as its own
#: (the edge reports period means; the first period after a switch mixes two configurations).
EDGE_TIME_SETTLE_S = 2.0
#: Weight of a new report in a configuration's measured edge time and in the robot's factor.
EDGE_TIME_ALPHA = 0.3
#: The robot's measured / planned factor is kept in [MIN_ROBOT_FACTOR, MAX_ROBOT_FACTOR]: one
#: odd report (a light head whose messaging the plan timed differently) is not a new robot.
MIN_ROBOT_FACTOR = 0.5
MAX_ROBOT_FACTOR = 4.0
#: Seconds after the first link estimate that a CPU-timed loop's first decision waits for the
#: robot's first CPU report (the edge reports once a second; see "Start-up").
FIRST_CPU_REPORT_WAIT_S = 1.5
#: A measured / planned frame size carries over within its split point, within [1/this, this].
MAX_SCENE_FACTOR = 2.0
#: Two configurations that ran fit the robot's measured CPU time against its planned one
#: (a line) when their planned times are this far apart (:meth:`SchedulingLoop.edge_time_s`).
AFFINE_MIN_SPREAD = 1.5
#: The edge lost camera frames when it took under this share of them.
LOST_SHARE = 0.95
#: A received-rate report older than this (s) is not combined with a time-per-frame report.
RECEIVED_RATE_MAX_AGE_S = 2.5
#: A running mix's share moves only by more than this (planning.mixing.same_plan).
SHARE_STEP = 0.05


def _ewma(previous: float | None, sample: float) -> float:
    """An EWMA with weight ``EDGE_TIME_ALPHA`` on the new sample; the first sample as it is."""
    return sample if previous is None else (
        (1.0 - EDGE_TIME_ALPHA) * previous + EDGE_TIME_ALPHA * sample)


def _clamped_factor(measured_over_planned: float) -> float:
    """A measured / planned edge time as the factor unrun configurations are planned with,
    kept in [``MIN_ROBOT_FACTOR``, ``MAX_ROBOT_FACTOR``]."""
    return min(max(measured_over_planned, MIN_ROBOT_FACTOR), MAX_ROBOT_FACTOR)


class SchedulingLoop:
    """The decision loop. Pure: the caller passes the clock to every method."""

    def __init__(self, configs: Sequence[Configuration], settings: SchedulerSettings,
                 planned_cpu_s: Mapping[str, float] | None = None) -> None:
        """``planned_cpu_s``: CPU seconds per frame of each configuration (by name) where the
        planned edge times were measured (``measured_cpu_ms`` of ``split-infer plan
        --edge-cpu``); given, the edge's CPU reports (:meth:`observe_edge_cpu`) replace its
        wall-time ones."""
        if not configs:
            raise ValueError("the scheduler needs at least one configuration")
        self._configs = tuple(configs)
        self._by_key: dict[tuple[int, float], Configuration] = {}
        for c in self._configs:
            if c.split_point is None:
                raise ValueError(f"{c.name}: a scheduled configuration needs a split point")
            key = config_key(c.split_point, c.ratio)
            if key in self._by_key:
                raise ValueError(f"two configurations share (split, ratio) {key}")
            self._by_key[key] = c
        self.settings = settings
        self._planned_cpu_s = {name: float(v) for name, v in (planned_cpu_s or {}).items()
                               if math.isfinite(float(v)) and float(v) > 0}
        self.hysteresis = Hysteresis(settings.margin, settings.min_dwell_s)
        self.capacity = CapacityWindow(settings.variation_window_s)
        self.active: Configuration | None = None
        self.override: Configuration | None = None
        self.pending: Configuration | None = None
        self._before_request: Configuration | None = None
        self._pending_probe = False
        self._rollback: tuple[str | None, float | None] = (None, None)
        self._blocked: dict[str, float] = {}  # name → until
        self._refusals: dict[str, int] = {}
        self._next_probe_s: float | None = None
        self._probe_backoff = 1
        self._probe: tuple[Configuration, float] | None = None  # probed config, when
        self._edge_s: dict[str, float] = {}  # name → measured edge time per frame (EWMA)
        self._bytes: dict[str, float] = {}  # name → measured wire bytes per frame (EWMA)
        self._plans: dict[str, Configuration] = {}  # name → as last planned (_planned)
        self._robot_factor = 1.0  # measured / planned edge time, EWMA over every report
        self._factor_seeded = False  # a report has set _robot_factor
        # CPU seconds per frame the edge spends beyond the plan (EWMA, < 0 under it; None: no
        # report)
        # Measured CPU time per frame (EWMA) of each configuration that has run, for the
        # affine fit of measured against planned CPU time (_fitted_cpu_s).
        self._cpu_s: dict[str, float] = {}
        self._received: tuple[float, float, float] | None = None  # (fps, share, when)
        # Whether the edge classifies the frames it holds back with the whole model (its
        # ``fallback`` parameter), and when it last reported doing so.
        self.edge_fallback = False
        self._fallback_seen_s: float | None = None
        # Whether the edge can run a companion configuration (its ``companion`` parameter).
        self.edge_companion = False
        self._whole_model = next((c for c in self._configs
                                  if c.split_point == EDGE_ONLY_SPLIT), None)
        # Planned wall time per planned CPU second (the robot's budget, from the plan): what
        # turns the fallback's CPU time into the whole model's time when it has no planned CPU.
        per_cpu_s = [c.edge_s / self._planned_cpu_s[c.name] for c in self._configs
                     if c.name in self._planned_cpu_s and c.edge_s > 0]
        self._wall_per_cpu_s = float(np.median(per_cpu_s)) if per_cpu_s else None
        # The configuration the edge runs before the first decision was chosen without a link
        # measurement (the start-up guess, or a previous scheduler's choice): the first decision
        # replaces it at once, without the dwell and the margin that damp measured choices.
        self._decided = False
        self._first_link_s: float | None = None
        self.switches = 0
        self.probes = 0
        self.failed_probes = 0
        self.rejections = 0
        self.last_rejection = ""

    # -- configuration -------------------------------------------------------------------
    @property
    def configurations(self) -> tuple[Configuration, ...]:
        return self._configs

    def lookup(self, split_point: int, ratio: float) -> Configuration | None:
        """The configuration with this wire id, or None."""
        return self._by_key.get(config_key(split_point, ratio))

    def update_settings(self, settings: SchedulerSettings) -> None:
        """New knobs; the hysteresis keeps its state (current configuration and its start)."""
        self.settings = settings
        self.hysteresis.margin = settings.margin
        self.hysteresis.min_dwell_s = settings.min_dwell_s
        self.capacity.window_s = settings.variation_window_s

    def set_override(self, key: tuple[int, float] | None) -> None:
        """Pin ``(split, ratio)`` (KeyError if unknown) or unpin with None."""
        if key is None:
            self.override = None
            return
        config = self._by_key.get(config_key(*key))
        if config is None:
            raise KeyError(f"no configuration {key}; known: {sorted(self._by_key)}")
        self.override = config
        self._blocked.pop(config.name, None)  # an explicit request deserves a fresh try

    # -- what the edge runs --------------------------------------------------------------
    def observe_edge(self, now_s: float, split_point: int, ratio: float,
                     companion: tuple[int, float] | None = None,
                     share: float = 0.0) -> Configuration | None:
        """The edge's parameters changed (or were read): track what it really runs, with its
        ``companion`` on ``share`` of the frames (a mix only while :attr:`mixes`)."""
        config = self.lookup(split_point, ratio)
        if config is not None:
            self._blocked.pop(config.name, None)  # the edge runs it, so it accepts it
            partner = None if companion is None else self.lookup(*companion)
            if self.mixes and partner not in (None, config) and 0.0 < share < 1.0:
                config = blend(self._planned(config), self._planned(partner), share)
        if config is not None and not same_plan(config, self.active, SHARE_STEP):
            self.active = config
            if self.hysteresis.current != config.name:
                self.hysteresis.current, self.hysteresis.since_s = config.name, now_s
        return config

    @property
    def mixes(self) -> bool:
        """Whether decisions plan mixes: ``settings.mixing`` and an edge that can run them
        (without, an edge's companion is not the scheduler's: it follows the primary)."""
        return self.settings.mixing and self.edge_companion

    def set_edge_companion(self, supported: bool) -> None:
        """Whether the edge has the ``companion`` and ``companion_share`` parameters."""
        self.edge_companion = bool(supported)

    @property
    def cpu_timed(self) -> bool:
        """Whether the edge's CPU time per frame (:meth:`observe_edge_cpu`), not its wall time
        (:meth:`observe_edge_time`), measures how the robot compares with the plan."""
        return bool(self._planned_cpu_s)

    def observe_edge_time(self, now_s: float, edge_s: float) -> Configuration | None:
        """The edge's measured (wall) time per frame (seconds) over its last period; credited
        to the active configuration once it has run ``EDGE_TIME_SETTLE_S`` with no request
        pending. Returns the configuration credited (None: too early, nothing active, unusable,
        or :attr:`cpu_timed`: a paced frame's wall time is not what the plan measured, frames
        back to back under the budget)."""
        if self.cpu_timed:
            return None
        return self._credit_edge_time(now_s, edge_s)

    def observe_edge_cpu(self, now_s: float, cpu_s: float,
                         companion: bool = False) -> Configuration | None:
        """The edge process's CPU time per frame (seconds) over its last period: the active
        configuration (a mix's primary) ran ``cpu_s`` / its planned CPU time × as long as
        planned, and is credited with its planned time × that (then as
        :meth:`observe_edge_time`): the CPU time is the plan's unit, and includes what the plan
        cannot time (receiving the camera message, publishing, the node's threads).
        ``companion``: the CPU time per frame of a running mix's companion, which the edge
        reports apart: it times that configuration. None without a planned CPU time."""
        active = self.active
        if companion:
            running = isinstance(active, MixedConfiguration) and self._settled(now_s)
            config = self._bundled(active.companion) if running else None  # type: ignore[union-attr]
        else:
            config = self._bundled(primary_of(active))
        if config is None or config.name not in self._planned_cpu_s or config.edge_s <= 0:
            return None
        if not (math.isfinite(cpu_s) and cpu_s > 0):
            return None
        edge_s = config.edge_s * cpu_s / self._planned_cpu_s[config.name]
        if companion:
            self._edge_s[config.name] = _ewma(self._edge_s.get(config.name), edge_s)
        credited = config if companion else self._credit_edge_time(now_s, edge_s)
        if credited is not None:
            self._cpu_s[config.name] = _ewma(self._cpu_s.get(config.name), cpu_s)
        return credited

    def _fitted_cpu_s(self, planned_s: float) -> float:
        """The CPU time per frame a configuration planned at ``planned_s`` should take, from
        those that have run: measured = a × planned + b by least squares once two planned
        times are ``AFFINE_MIN_SPREAD`` × apart (a within the robot factor's bounds); before,
        the plan + what the one that ran spent beyond its plan (the node's upkeep per frame is
        the same whatever the head), or × its measured / planned when it ran under its plan."""
        planned = np.array([self._planned_cpu_s[name] for name in self._cpu_s])
        measured = np.array(list(self._cpu_s.values()))
        mean_p, mean_m = float(planned.mean()), float(measured.mean())
        if len(planned) >= 2 and planned.max() >= AFFINE_MIN_SPREAD * planned.min():
            slope = float(np.polyfit(planned, measured, 1)[0])
            slope = min(max(slope, MIN_ROBOT_FACTOR), MAX_ROBOT_FACTOR)
            return mean_m + slope * (planned_s - mean_p)
        # one point, or several at one planned time
        return planned_s + (mean_m - mean_p) if mean_m >= mean_p else planned_s * mean_m / mean_p

    def _settled(self, now_s: float) -> Configuration | None:
        """The active configuration (a mix's primary, whose frames the edge's time reports
        are), if a period report now measures it alone (it has run ``EDGE_TIME_SETTLE_S`` with
        no request pending); else None."""
        config = self.active
        # Before this loop's first decision the edge runs what it ran before the loop saw it:
        # no switch of ours mixes into its reports, so they count at once.
        settling = self._decided and now_s - self.hysteresis.since_s < EDGE_TIME_SETTLE_S
        if (config is None or self.pending is not None or settling
                or self.hysteresis.current != config.name):
            return None
        return self._bundled(primary_of(config))

    def _bundled(self, config: Configuration | None) -> Configuration | None:
        """``config`` as the bundle has it (a mix holds its parts as planned)."""
        return config and (self.lookup(config.split_point, config.ratio) or config)

    def _credit_edge_time(self, now_s: float, edge_s: float) -> Configuration | None:
        config = self._settled(now_s)
        if config is None or not math.isfinite(edge_s) or edge_s <= 0:
            return None
        edge_s = self._with_lost_frames(now_s, edge_s)
        self._edge_s[config.name] = _ewma(self._edge_s.get(config.name), edge_s)
        if config.edge_s > 0:
            # The first report replaces the prior of 1 outright: until then every configuration
            # that has not run is planned at its (possibly stale) planned time, and an EWMA from
            # 1 would take several reports, each a switch to an optimistic configuration, to
            # get there.
            self._robot_factor = _clamped_factor(_ewma(
                self._robot_factor if self._factor_seeded else None, edge_s / config.edge_s))
            self._factor_seeded = True
        return config

    def observe_received(self, now_s: float, frames_per_s: float, camera_share: float) -> None:
        """The camera frames the edge took over its last period (before its own drops), per
        second and as a share of the camera's; combined with the next time-per-frame report.
        Unusable values are ignored."""
        if (math.isfinite(frames_per_s) and frames_per_s > 0 and math.isfinite(camera_share)
                and 0 < camera_share <= 1):
            self._received = (float(frames_per_s), float(camera_share), now_s)

    def set_edge_fallback(self, edge_only: bool) -> None:
        """Whether the edge's ``fallback`` is ``edge_only``: decisions then count its frames
        (``fallback_rates_hz``), when the loop has the edge-only configuration."""
        self.edge_fallback = bool(edge_only)

    def observe_fallback(self, now_s: float, cpu_s: float) -> Configuration | None:
        """The edge's CPU time (s) per frame its fallback classified over its last period: the
        lost-frames rule is then off (:meth:`_with_lost_frames`), and a :attr:`cpu_timed`
        loop credits the edge-only configuration with it (its planned time × cpu_s / its
        planned CPU time, or cpu_s × the plan's wall time per CPU second). Returns the
        configuration credited (None: not CPU-timed, no edge-only configuration, unusable)."""
        if not (math.isfinite(cpu_s) and cpu_s > 0):
            return None
        self._fallback_seen_s = now_s
        whole = self._whole_model
        if whole is None or not self.cpu_timed:
            return None
        planned_cpu = self._planned_cpu_s.get(whole.name)
        if planned_cpu is not None and whole.edge_s > 0:
            edge_s = whole.edge_s * cpu_s / planned_cpu
            self._cpu_s[whole.name] = _ewma(self._cpu_s.get(whole.name), cpu_s)
        elif self._wall_per_cpu_s is not None:
            edge_s = cpu_s * self._wall_per_cpu_s
        else:
            return None
        self._edge_s[whole.name] = _ewma(self._edge_s.get(whole.name), edge_s)
        return whole

    @property
    def fallback(self) -> Configuration | None:
        """The whole model as decisions plan the edge's fallback frames (None: not planned)."""
        if not self.edge_fallback or self._whole_model is None:
            return None
        return self._planned(self._whole_model)

    def _with_lost_frames(self, now_s: float, edge_s: float) -> float:
        """``edge_s``, or the time per frame the edge took when it lost camera frames (see the
        module docstring); not while its fallback fills the robot's spare time."""
        if self._received is None or now_s - self._received[2] > RECEIVED_RATE_MAX_AGE_S:
            return edge_s
        if (self._fallback_seen_s is not None
                and now_s - self._fallback_seen_s <= RECEIVED_RATE_MAX_AGE_S):
            return edge_s
        if isinstance(self.active, MixedConfiguration):
            return edge_s  # the frames taken are the mix's, not the primary's alone
        taken, share, _ = self._received
        return max(edge_s, 1.0 / taken) if share < LOST_SHARE else edge_s

    def observe_frame_bytes(self, now_s: float, nbytes: float) -> Configuration | None:
        """The edge's mean wire-frame size (bytes) over its last period; credited to the
        active configuration once it has run ``EDGE_TIME_SETTLE_S`` with no request pending
        (:meth:`frame_bytes`). Returns the configuration credited (None: too early, nothing
        active, nothing sent, or unusable)."""
        config = self._settled(now_s)
        if (config is None or config.bytes_per_frame <= 0 or not math.isfinite(nbytes)
                or nbytes <= 0 or isinstance(self.active, MixedConfiguration)):
            return None  # (a mix's mean frame is neither configuration's)
        self._bytes[config.name] = _ewma(self._bytes.get(config.name), nbytes)
        return config

    def frame_bytes(self, config: Configuration) -> float:
        """The wire-frame size decisions plan ``config`` with: measured if it has run; else its
        planned size × the measured / planned size of the configurations at the same split
        point that have run (the same images or features, coded at other ratios), kept within
        [1 / ``MAX_SCENE_FACTOR``, ``MAX_SCENE_FACTOR``]; else its planned size.

        Beyond Hu & Krishnamachari, whose frame sizes are constants: a bundle's sizes are means
        over its evaluation images, and what the robot's camera sees codes smaller or larger
        (a plain wall, a cluttered shelf), by about the same factor at every ratio.
        """
        measured = self._bytes.get(config.name)
        if measured is not None or config.bytes_per_frame <= 0 or isinstance(
                config, MixedConfiguration):  # (a mix is built from its planned parts)
            return config.bytes_per_frame if measured is None else measured
        factors = [self._bytes[c.name] / c.bytes_per_frame for c in self._configs
                   if c.split_point == config.split_point and c.bytes_per_frame > 0
                   and c.name in self._bytes]
        if not factors:
            return config.bytes_per_frame
        factor = min(max(sum(factors) / len(factors), 1.0 / MAX_SCENE_FACTOR), MAX_SCENE_FACTOR)
        return config.bytes_per_frame * factor

    @property
    def robot_factor(self) -> float:
        """How much slower (> 1) or faster (< 1) than planned the robot has run, within
        [``MIN_ROBOT_FACTOR``, ``MAX_ROBOT_FACTOR``]: the factor on the planned time of
        configurations that have not run yet."""
        return self._robot_factor

    def edge_time_s(self, config: Configuration) -> float:
        """The edge time per frame decisions plan ``config`` with (the module docstring's
        "Measured robot time"): measured if it has run; else its planned one × a sibling's
        measured / planned (same split point); else, :attr:`cpu_timed` with CPU reports, × the
        CPU time the configurations that ran predict for it (:meth:`_fitted_cpu_s`) / its
        planned CPU time; else × :attr:`robot_factor`. Factors within [``MIN_ROBOT_FACTOR``,
        ``MAX_ROBOT_FACTOR``]."""
        measured = self._edge_s.get(config.name)
        if measured is not None or isinstance(config, MixedConfiguration):
            return config.edge_s if measured is None else measured
        siblings = [self._edge_s[c.name] / c.edge_s for c in self._configs
                    if c.split_point == config.split_point and c.edge_s > 0
                    and c.name in self._edge_s]
        if siblings:
            return config.edge_s * _clamped_factor(max(siblings))
        planned_cpu = self._planned_cpu_s.get(config.name)
        if planned_cpu is not None and self._cpu_s:
            return config.edge_s * _clamped_factor(self._fitted_cpu_s(planned_cpu) / planned_cpu)
        return config.edge_s * self._robot_factor

    def request_sent(self, now_s: float, config: Configuration) -> None:
        """A request for ``config`` went out; :meth:`step` waits for its answer."""
        self.pending = config
        self._before_request = self.active

    def request_done(self, now_s: float, config: Configuration, ok: bool,
                     reason: str = "") -> None:
        """The edge's answer (or a timeout: ``ok=False``)."""
        self.pending = None
        if ok:
            self._refusals.pop(config.name, None)
            self._blocked.pop(config.name, None)
            if config != self._before_request:  # (a parameter event may have come first)
                self.switches += 1
            self.active = config
            if self.hysteresis.current != config.name:
                self.hysteresis.current, self.hysteresis.since_s = config.name, now_s
            if self._pending_probe:
                self._probe = (config, now_s)
            self._pending_probe = False
            return
        self._pending_probe = False
        self.rejections += 1
        self.last_rejection = f"{config.name}: {reason or 'rejected'}"
        count = self._refusals.get(config.name, 0) + 1
        self._refusals[config.name] = count
        s = self.settings
        backoff = min(s.retry_backoff_s * 2 ** (count - 1), s.max_retry_backoff_s)
        self._blocked[config.name] = now_s + backoff
        self.hysteresis.current, self.hysteresis.since_s = self._rollback

    def blocked_until(self, config: Configuration) -> float | None:
        """Until when ``config`` is left out after a refusal (None: it is not)."""
        return self._blocked.get(config.name)

    # -- the tick ------------------------------------------------------------------------
    def _is_blocked(self, config: Configuration, now_s: float) -> bool:
        until = self._blocked.get(config.name)
        if until is None:
            return False
        if now_s >= until:
            del self._blocked[config.name]
            return False
        return True

    def _demand_bps(self, config: Configuration) -> float:
        rate = pipeline_throughput_hz(config, math.inf, self.settings.frame_rate_hz)
        return BITS_PER_BYTE * self.frame_bytes(config) * float(rate)

    def _track_probe(self, now_s: float, link: LinkState) -> None:
        if self._probe is None:
            return
        config, since = self._probe
        if self.active != config:
            self._probe = None
        elif not link.lower_bound and link.bandwidth_bps < self._demand_bps(config):
            # Saturated below what the probed configuration needs: the link cannot carry it.
            self.failed_probes += 1
            self._probe_backoff = min(self._probe_backoff * 2, self.settings.max_probe_backoff)
            self._probe = None
        elif link.lower_bound and now_s - since >= self.settings.min_dwell_s:
            # It held: back to the base interval, counted from the probe.
            self._probe_backoff = 1
            self._probe = None
            again = since + self.settings.probe_interval_s
            self._next_probe_s = again if self._next_probe_s is None else min(
                self._next_probe_s, again)

    def step(self, now_s: float, link: LinkState | None) -> Step:
        """Decide for now. ``link`` None: no (fresh) estimate; only an override acts then."""
        if self.pending is not None:
            return Step(self.pending, False, "waiting for the edge's answer")
        if self.override is not None:
            return self._pinned(now_s)
        if link is None:
            return Step(self.active, False, "no bandwidth estimate yet")
        if not (math.isfinite(link.bandwidth_bps) and link.bandwidth_bps >= 0):
            return Step(self.active, False, f"unusable bandwidth {link.bandwidth_bps!r}")
        if self._first_link_s is None:
            self._first_link_s = now_s
        if (self.cpu_timed and not self._decided and not self._factor_seeded
                and now_s - self._first_link_s < FIRST_CPU_REPORT_WAIT_S):
            return Step(self.active, False, "waiting for the robot's first CPU report")
        s = self.settings
        rtt = link.rtt_s if math.isfinite(link.rtt_s) and link.rtt_s >= 0 else 0.0
        self._track_probe(now_s, link)
        candidates = [c for c in self._configs if not self._is_blocked(c, now_s)]
        if not candidates:
            return Step(self.active, False, "every configuration was refused recently")
        bandwidth = link.bandwidth_bps * (1.0 if link.lower_bound else s.link_share)
        recent = None  # the capacity of the last variation_window_s, when it varied
        if link.lower_bound:
            # A lower bound neither measures how the capacity varies nor shows a fall: the
            # window keeps its measurements (a bound only counts towards a rise above them).
            self.capacity.add_lower_bound(now_s, link.bandwidth_bps)
        else:
            self.capacity.add(now_s, link.bandwidth_bps)
        if len(self.capacity) >= MIN_SAMPLES:  # fewer show no variation yet
            recent = self.capacity.distribution(s.link_share)
        # The running configuration needs more than the link is measured to carry: its frames
        # queue, and keeping it for the dwell only queues more (see the module docstring). Not
        # on a link planned over its recent draws: a low draw is what that plan expects.
        overloaded = (recent is None and not link.lower_bound and self.active is not None
                      and self._demand_bps(self.active) > bandwidth)
        probe_due = False
        if link.lower_bound and s.probe_interval_s > 0 and self.active is not None:
            if self._next_probe_s is None:
                self._next_probe_s = now_s + s.probe_interval_s * self._probe_backoff
            probe_due = now_s >= self._next_probe_s
        elif not link.lower_bound:
            self._next_probe_s = None
        if link.lower_bound and self.active is not None:
            # A lower bound never justifies sending less (see the module docstring), unless the
            # smaller configuration is at least as accurate: it dominates at any bandwidth.
            active = self.active
            active_bytes = self.frame_bytes(active)
            candidates = [c for c in candidates if self.frame_bytes(c) >= active_bytes
                          or c.accuracy >= active.accuracy] or [active]

        planned = [self._planned(c) for c in candidates]
        active_name = None if self.active is None else self.active.name
        fallback = self.fallback if s.objective == "effective_accuracy" else None
        if self.mixes and s.objective == "effective_accuracy":
            # A mix joins where it beats every configuration alone by the margin, or runs.
            alone = max(effective_accuracy(c, bandwidth, s.frame_rate_hz, fallback)
                        for c in planned)
            running = self.active if isinstance(self.active, MixedConfiguration) else None
            planned += [m for m in companion_mixes(planned, bandwidth, s.frame_rate_hz,
                                                   s.margin, keep=running)
                        if not self._is_blocked(m, now_s) and (m.name == active_name or (
                            effective_accuracy(m, bandwidth, s.frame_rate_hz, fallback)
                            > alone + s.margin))]

        def decide(bandwidth_bps: float, distribution: BandwidthDistribution | None = None
                   ) -> Decision:
            return choose_configuration(
                planned, bandwidth_bps, rtt, s.objective,  # type: ignore[arg-type]
                deadline_s=s.deadline_s, t_gen_hz=s.frame_rate_hz, distribution=distribution,
                max_accuracy_loss=s.max_accuracy_loss, fallback=fallback)

        probing = False
        try:
            decision = decide(bandwidth, recent)
            if probe_due and decision.configuration.name == active_name:
                # One rung up: the smallest gain^k × bound at which the policy would change.
                for k in range(1, s.probe_steps + 1):
                    rung = link.bandwidth_bps * s.probe_gain**k
                    trial = decide(rung)
                    if trial.configuration.name != active_name:
                        decision, bandwidth, probing = trial, rung, True
                        break
                else:  # nothing to gain within reach; look again an interval later
                    self._next_probe_s = now_s + s.probe_interval_s * self._probe_backoff
        except ValueError as exc:
            return Step(self.active, False, f"no decision: {exc}", None, bandwidth, rtt,
                        fallback=fallback)
        self._rollback = (self.hysteresis.current, self.hysteresis.since_s)
        if not self._decided:
            self.hysteresis.reset()
            self._decided = True
        chosen_name = self.hysteresis.update(now_s, decision, dwell=not overloaded)
        # A configuration as the bundle has it; a mix as planned now (its share is this tick's).
        chosen = next((c for c in self._configs if c.name == chosen_name), None) or next(
            c for c in planned if c.name == chosen_name)
        if same_plan(chosen, self.active, SHARE_STEP):
            keep = self.active if isinstance(chosen, MixedConfiguration) else chosen
            return Step(keep, False, "keep", decision, bandwidth, rtt, probing, fallback)
        if probing:
            self.probes += 1
            self._pending_probe = True
            self._next_probe_s = now_s + s.probe_interval_s * self._probe_backoff
            reason = (f"probe at {bandwidth:.4g} bit/s "
                      f"({bandwidth / link.bandwidth_bps:g} × the lower bound)")
        elif self.active is not None and chosen.name == self.active.name:
            reason = "companion share"
        else:
            reason = "switch"
        return Step(chosen, True, reason, decision, bandwidth, rtt, probing, fallback)

    def _planned(self, config: Configuration) -> Configuration:
        """``config`` with the edge time and frame size decisions plan it with; the same object
        while they hold (a dataclass ``replace`` per configuration per tick was a third of the
        tick, on the robot's CPU)."""
        edge_s, nbytes = self.edge_time_s(config), self.frame_bytes(config)
        cached = self._plans.get(config.name)
        if cached is None or (cached.edge_s, cached.bytes_per_frame) != (edge_s, nbytes):
            cached = self._plans[config.name] = replace(config, edge_s=edge_s,
                                                        bytes_per_frame=nbytes)
        return cached

    def _pinned(self, now_s: float) -> Step:
        target = self.override
        assert target is not None
        if target == self.active:
            return Step(target, False, "override (applied)")
        if self._is_blocked(target, now_s):
            return Step(target, False, f"override refused by the edge ({self.last_rejection}); "
                        f"retry at {self._blocked[target.name]:.3f} s")
        self._rollback = (self.hysteresis.current, self.hysteresis.since_s)
        self.hysteresis.current, self.hysteresis.since_s = target.name, now_s
        return Step(target, True, "override")
