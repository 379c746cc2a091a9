"""What the scheduler runs (:func:`describe`) and why it switched, in one line for the log:
what the planner expected of the new configuration and of the one it replaces, at which
bandwidth, and the robot times it planned them with (measured where they have run, see
:meth:`~split_infer.adaptation.scheduling.SchedulingLoop.edge_time_s`).

A switch that does not pay off on the robot (a companion that ran slower than planned, say)
is then visible in the log, next to the frame rate that the metrics show.
"""

from __future__ import annotations

from split_infer.adaptation.policy import Decision
from split_infer.adaptation.scheduling import SchedulingLoop, Step
from split_infer.planning import Configuration
from split_infer.planning.mixing import MixedConfiguration

__all__ = ["describe", "explain_step"]


def describe(config: Configuration) -> str:
    """``split 9, ratio 20.8`` (with ``+ split 0, ratio 58.4 on 24% of the frames``)."""
    text = f"split {config.split_point}, ratio {config.ratio:g}"
    if isinstance(config, MixedConfiguration):
        text += (f" + split {config.companion.split_point}, ratio {config.companion.ratio:g} "
                 f"on {config.share:.0%} of the frames")
    return text


def _robot_ms(loop: SchedulingLoop, config: Configuration) -> str:
    parts = ([config.primary, config.companion] if isinstance(config, MixedConfiguration)
             else [config])
    return " + ".join(f"{loop.edge_time_s(loop.lookup(p.split_point, p.ratio) or p) * 1e3:.1f}"
                      for p in parts)


def _score(decision: Decision, name: str) -> str:
    score = decision.scores[name]
    if decision.objective == "latency" or not decision.meets_deadline:
        return f"{-score * 1e3:.0f} ms"  # the scores are −latency (s) then
    return f"{score:.3f}"


def explain_step(loop: SchedulingLoop, step: Step, previous: Configuration | None) -> str:
    """``"planned effective_accuracy 0.724 (0.648 for the previous) at 0.84 Mbit/s; robot
    47.1 + 15.2 ms a frame"``: the decision's score of ``step.target`` and of ``previous``
    (when the planner scored it this tick; a latency in ms where the scores are latencies:
    the latency objective, or no configuration meets the deadline), the bandwidth it planned
    with, and the robot time per frame of each part of the target. Empty without a decision
    (an override)."""
    decision, target = step.decision, step.target
    if decision is None or target is None or target.name not in decision.scores:
        return ""
    what = decision.objective if decision.meets_deadline else "latency (no deadline met)"
    text = f"planned {what} {_score(decision, target.name)}"
    if previous is not None and previous.name in decision.scores and (
            previous.name != target.name):
        text += f" ({_score(decision, previous.name)} for the previous)"
    if step.bandwidth_bps is not None:
        text += f" at {step.bandwidth_bps / 1e6:.3g} Mbit/s"
    return f"{text}; robot {_robot_ms(loop, target)} ms a frame"
