"""Why the scheduler switched, in one line for the log: what the planner expected of the new
configuration and of the one it replaces, at which bandwidth, and the robot times it planned
them with (measured where they have run, see
:meth:`~split_infer.adaptation.scheduling.SchedulingLoop.edge_time_s`).

A switch that does not pay off on the robot (a companion that ran slower than planned, say)
is then visible in the log, next to the frame rate that the metrics show.
"""

from __future__ import annotations

from split_infer.adaptation.scheduling import SchedulingLoop, Step
from split_infer.planning import Configuration
from split_infer.planning.mixing import MixedConfiguration

__all__ = ["explain_step"]


def _robot_ms(loop: SchedulingLoop, config: Configuration) -> str:
    parts = [config.primary, config.companion] if isinstance(config, MixedConfiguration) else [
        config]
    return " + ".join(f"{loop.edge_time_s(loop.lookup(p.split_point, p.ratio) or p) * 1e3:.1f}"
                      for p in parts)


def explain_step(loop: SchedulingLoop, step: Step, previous: Configuration | None) -> str:
    """``"planned ν_eff 0.724 (0.648 for the previous) at 0.84 Mbit/s; robot 47.1 + 15.2 ms
    a frame"``: the decision's score of ``step.target`` and of ``previous`` (when the planner
    scored it this tick), the bandwidth it planned with, and the robot time per frame of each
    part of the target. Empty without a decision (an override)."""
    decision, target = step.decision, step.target
    if decision is None or target is None:
        return ""
    scores = decision.scores
    text = f"planned {decision.objective} {scores.get(target.name, decision.score):.3f}"
    if previous is not None and previous.name in scores and previous.name != target.name:
        text += f" ({scores[previous.name]:.3f} for the previous)"
    if step.bandwidth_bps is not None:
        text += f" at {step.bandwidth_bps / 1e6:.3g} Mbit/s"
    return f"{text}; robot {_robot_ms(loop, target)} ms a frame"
