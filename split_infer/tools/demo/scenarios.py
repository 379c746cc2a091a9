"""The scenarios ``split-infer demo`` runs: what model, camera, link and robot.

* ``imagenet`` (the default): the 224-px EfficientNet-Lite0 bundle on the 640×480 camera
  bag, on a robot emulated six times slower than this machine (every frame's edge compute is
  stretched six-fold: the demo's stand-in for the testbed's real CPU budget, ``--edge-cpu``),
  over a link that falls from 10 to 1 and 0.3 Mbit/s and comes back to 4. The scheduler plans
  with the robot's times (each configuration's time per frame measured at start × 6) and may
  keep the whole model on the robot (edge-only): sending the image (split 0) and early splits
  need bandwidth, late splits need robot time, edge-only needs neither but is slow, so which
  one wins moves with the link (the planner's choices over the trace, for the profile × 6 and
  for the robot's times measured at start, are checked by ``test_imagenet_bundle.py``).
* ``cifar``: the 32×32 CIFAR-10 ResNet-20 bundle and bag over ``demo_step.csv``, the robot at
  this machine's speed. Edge-only is left out of the scheduler's choices: the whole model
  takes about a millisecond, so it would win at every rate and nothing would adapt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from split_infer.defaults import (
    DEFAULT_BUNDLE,
    DEMO_BAG,
    DEMO_TRACE,
    IMAGENET_BUNDLE,
    IMAGENET_DEMO_BAG,
)

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    """Defaults of one demo scenario (each can be overridden on the command line)."""

    bundle: Path
    bag: Path
    trace: str
    duration_s: float
    robot_slowdown: float  # the edge's compute stretched this many times (1: as it runs)
    edge_only: bool  # the scheduler may choose the whole model on the robot
    summary: str


SCENARIOS: dict[str, Scenario] = {
    "imagenet": Scenario(IMAGENET_BUNDLE, IMAGENET_DEMO_BAG, "demo_imagenet.csv", 60.0, 6.0,
                         True, "224-px EfficientNet-Lite0, 640x480 camera, a robot 6x slower "
                               "than this machine"),
    "cifar": Scenario(DEFAULT_BUNDLE, DEMO_BAG, DEMO_TRACE, 45.0, 1.0, False,
                      "32x32 CIFAR-10 ResNet-20"),
}
