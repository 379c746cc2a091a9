"""What a scheduler needs: one decision per bandwidth estimate, plus hysteresis.

:func:`choose_configuration` is a thin layer over the planning library — the ν_eff objective
*is* :func:`split_infer.planning.effective_accuracy.threshold_policy` (Hu & K Algorithm 2),
the latency objective *is* :func:`split_infer.planning.selection.select_split`
(BottleNet/BBNet) — so the scheduler node and ``split-infer plan`` share one implementation.
:class:`Hysteresis` is pure: it takes the clock as an argument.

Units: bits/s, seconds, frames/s; scores are "higher is better" in the objective's units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from split_infer.planning.bandwidth import BandwidthDistribution, bandwidth_distribution
from split_infer.planning.configuration import Configuration, preference_key
from split_infer.planning.effective_accuracy import (
    effective_accuracy,
    expected_effective_accuracy,
    threshold_policy,
)
from split_infer.planning.latency import total_latency_s
from split_infer.planning.selection import acceptable_configurations, select_split

__all__ = ["OBJECTIVES", "Decision", "Hysteresis", "choose_configuration"]

Objective = Literal["effective_accuracy", "latency", "accuracy"]
OBJECTIVES: tuple[str, ...] = ("effective_accuracy", "latency", "accuracy")


@dataclass(frozen=True)
class Decision:
    """A scheduler decision.

    ``scores`` has every configuration's score under the objective, higher is better:
    ``ν_eff`` (or ``E[ν_eff]``) for ``"effective_accuracy"``, ``−latency_s`` for ``"latency"``,
    ``ν`` for ``"accuracy"``; ``-inf`` for configurations excluded by the deadline or the accuracy
    constraint. ``meets_deadline`` is False when no configuration meets it, in which case the
    fastest acceptable one is chosen and ``scores`` are ``−latency_s``.
    """

    configuration: Configuration
    objective: str
    score: float
    scores: Mapping[str, float]
    latency_s: float
    meets_deadline: bool


def choose_configuration(
    configs: Sequence[Configuration],
    bandwidth_bps: float,
    rtt_s: float = 0.0,
    objective: Objective = "effective_accuracy",
    *,
    deadline_s: float | None = None,
    t_gen_hz: float | None = None,
    bandwidth_std_bps: float | None = None,
    distribution: BandwidthDistribution | None = None,
    max_accuracy_loss: float | None = None,
    reference_accuracy: float | None = None,
    fallback: Configuration | None = None,
) -> Decision:
    """Pick the configuration for the current bandwidth (bits/s) and RTT (s).

    * ``"effective_accuracy"`` (needs ``t_gen_hz``): maximise ``ν_eff = T·ν/T_gen`` by the
      threshold rule of Hu & K Algorithm 2. With ``bandwidth_std_bps`` (beyond the paper), the
      estimate is treated as ``N(bandwidth, std)`` and the configuration with the highest
      *expected* ``ν_eff`` (eqs. (4)–(6)) is chosen instead of thresholding the point estimate.
      ``distribution`` does the same with any bandwidth distribution, e.g. the estimator's
      recent history (:class:`~split_infer.adaptation.variation.CapacityWindow`); the latency
      and the deadline are still taken at ``bandwidth_bps``.
    * ``"latency"``: minimise ``I_t`` (thesis eq. 4.1; BottleNet/BBNet selection phase).
    * ``"accuracy"``: the most accurate configuration that meets ``deadline_s`` (ties: faster).

    ``fallback`` (``"effective_accuracy"`` only): the robot classifies on board, with this
    whole-model configuration, the frames a split's link or server cannot take, so each split
    is scored with the frames its spare robot time adds
    (:func:`~split_infer.planning.effective_accuracy.fallback_throughput_hz`; beyond Hu & K,
    whose thresholds assume those frames are lost): the highest score wins, ties as
    everywhere (:func:`~split_infer.planning.configuration.preference_key`).

    ``deadline_s`` excludes configurations whose ``I_t`` exceeds it; ``max_accuracy_loss``
    excludes those more than that below ``reference_accuracy`` (BBNet's constraint, see
    :func:`.selection.acceptable_configurations`).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "effective_accuracy" and t_gen_hz is None:
        raise ValueError("the effective_accuracy objective needs t_gen_hz")
    if not configs:
        raise ValueError("need at least one configuration")
    if distribution is not None and bandwidth_std_bps is not None:
        raise ValueError("give bandwidth_std_bps or distribution, not both")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError("configuration names must be unique")
    allowed = (
        tuple(configs)
        if max_accuracy_loss is None
        else acceptable_configurations(configs, max_accuracy_loss, reference_accuracy)
    )
    if not allowed:
        raise ValueError("no configuration satisfies the accuracy constraint")
    latency = {c.name: float(total_latency_s(c, bandwidth_bps, rtt_s)) for c in configs}
    feasible = (
        allowed
        if deadline_s is None
        else tuple(c for c in allowed if latency[c.name] <= deadline_s)
    )
    excluded = {c.name: -math.inf for c in configs}

    if not feasible:
        fastest = select_split(allowed, bandwidth_bps, "latency", rtt_s=rtt_s).configuration
        scores = excluded | {c.name: -latency[c.name] for c in allowed}
        return Decision(
            fastest, objective, scores[fastest.name], scores, latency[fastest.name], False
        )

    if objective == "effective_accuracy":
        assert t_gen_hz is not None
        if bandwidth_std_bps is None and distribution is None and fallback is None:
            chosen = threshold_policy(feasible, t_gen_hz).choose(bandwidth_bps)
            values = {
                c.name: float(effective_accuracy(c, bandwidth_bps, t_gen_hz)) for c in feasible
            }
        else:
            if bandwidth_std_bps is None and distribution is None:
                values = {c.name: float(effective_accuracy(c, bandwidth_bps, t_gen_hz, fallback))
                          for c in feasible}
            else:
                dist = distribution if distribution is not None else bandwidth_distribution(
                    bandwidth_bps, bandwidth_std_bps or 0.0)
                values = {c.name: expected_effective_accuracy(c, dist, t_gen_hz, fallback)
                          for c in feasible}
            chosen = min(
                feasible, key=lambda c: (-values[c.name], *preference_key(c, names.index(c.name)))
            )
    elif objective == "latency":
        chosen = select_split(feasible, bandwidth_bps, "latency", rtt_s=rtt_s).configuration
        values = {c.name: -latency[c.name] for c in feasible}
    else:
        chosen = min(feasible, key=lambda c: (-c.accuracy, latency[c.name], names.index(c.name)))
        values = {c.name: c.accuracy for c in feasible}
    scores = excluded | values
    return Decision(chosen, objective, scores[chosen.name], scores, latency[chosen.name], True)


class Hysteresis:
    """Damp switching (the thesis, §4.2: "one should apply hysteresis").

    A proposal replaces the current configuration only if its score beats the current one's by
    more than ``margin`` (in the objective's units, e.g. 0.01 = one point of ``ν_eff``) *and* at
    least ``min_dwell_s`` have passed since the last switch. If the current configuration is no
    longer scored or is excluded (score ``-inf``, e.g. it now misses the deadline), the switch is
    immediate. A caller may waive the dwell for one decision (``dwell=False``: the scheduler
    does when the running configuration needs more than its planned share of the link, beyond
    the thesis).
    Pure: the caller passes the clock.
    """

    def __init__(self, margin: float = 0.0, min_dwell_s: float = 0.0) -> None:
        if margin < 0 or min_dwell_s < 0:
            raise ValueError("margin and min_dwell_s must be >= 0")
        self.margin = margin
        self.min_dwell_s = min_dwell_s
        self.current: str | None = None
        self.since_s: float | None = None

    def reset(self) -> None:
        self.current = None
        self.since_s = None

    def update(self, now_s: float, decision: Decision, dwell: bool = True) -> str:
        """Feed one decision; returns the name of the configuration to run now. ``dwell``
        False: a better proposal (by the margin) replaces the current one however recently it
        started."""
        if self.since_s is not None and now_s < self.since_s:
            raise ValueError("the clock went backwards")
        proposal = decision.configuration.name
        current_score = decision.scores.get(self.current, -math.inf) if self.current else None
        if self.current is None or current_score == -math.inf:
            return self._switch(proposal, now_s)
        if proposal != self.current:
            assert self.since_s is not None and current_score is not None
            better = decision.scores[proposal] - current_score > self.margin
            if better and (not dwell or now_s - self.since_s >= self.min_dwell_s):
                return self._switch(proposal, now_s)
        return self.current

    def _switch(self, name: str, now_s: float) -> str:
        if name != self.current:
            self.current, self.since_s = name, now_s
        return name
