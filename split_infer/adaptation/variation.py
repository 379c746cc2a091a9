"""The link's recent capacity as a distribution, for planning on a link that varies faster than
the scheduler can follow.

Hu & Krishnamachari plan with the bandwidth as a random variable ``B`` and rank configurations
by ``E[ν_eff]`` (§V, eqs. (4)–(6)); their Fig. 3 links draw a new bandwidth every second. A
scheduler that thresholds each point estimate (Algorithm 2) on such a link chases draws it
learns about half a second late and keeps for at least its dwell time, paying a new head's
first run and a queue of the old frames each time. :class:`CapacityWindow` keeps the capacity
estimates of the last ``window_s`` seconds (one per decision tick, so each weighs the time it
held) and hands them to the planner as an
:class:`~split_infer.planning.bandwidth.EmpiricalBandwidth`: the decision is then the
configuration with the highest expected ``ν_eff`` over what the link recently did.

Beyond the paper, which assumes the distribution is known and stationary: a **level change**
restarts the window, so a step still moves the scheduler within a few estimates::

    estimates ──► window (last window_s s) ──► spread = max(std, ESTIMATE_NOISE · mean)
                       ▲                             │
                       └── restart at the new ◄──────┘ newest estimate further than
                           estimate                     CHANGE_SPREADS × spread from the mean

The newest estimate is tested against the window *before* it joins, so a step does not widen
the band it is tested against. On a constant link the spread is the estimator's noise floor
and a step of more than ``CHANGE_SPREADS × ESTIMATE_NOISE`` leaves the band at once; on a link
that draws ``N(5, 3)`` Mbit/s every second the band is about ±10 Mbit/s and the window keeps
the draws. Four spreads, not three: consecutive draws of such a link are often alike, and a
window of a few similar draws has a small spread (three restarted the window six times in a
replay of the ``N(5, 3)`` trace, four none). Until ``MIN_SAMPLES`` estimates are in, no
change is tested for (the spread of two samples means nothing), so a restart is not followed
by a chain of restarts on every draw.

A fall restarts the window at once, a rise only when ``RISE_ESTIMATES`` estimates in a row are
above the band (1.5 s at the scheduler's 0.5-s period: longer than one draw of a Fig. 3 link,
whose high draws otherwise restart the window and are planned for alone; two, 0.5 s apart, fit
inside one draw: ``bench/README.md``, "A step up seen by the next train"). On a window as
steady as the estimator's noise (its spread at most ``ESTIMATE_NOISE`` of its mean) there are
no draws to mistake for a level, and ``STEADY_RISE_ESTIMATES`` (two) *different* estimates make
a rise, each decided on when it arrives (:meth:`CapacityWindow.acts_at_once`): a step up from a
constant link then moves the scheduler as soon as the second train confirms it, not at the
second or third 0.5-s tick after the first (which could both read the same train; beyond the
paper). "Different" is the value: a train's measurement is republished unchanged until the
next, while a capacity from the frames' dispersion or a lower bound from their throughput
changes with every estimate, 0.2 s apart, over windows that overlap; two such above the band
are still two readings of frames that crossed faster than the window allows. One is not enough:
a probe train that went through a shaper's refilled burst allowance reads as several times the
link, and the prober checks every rise with a second train at once
(:mod:`split_infer.adaptation.probing`), so the second estimate shows whether the first was
real. Estimates held for a rise that does not come are left out. A lower bound
(:meth:`CapacityWindow.add_lower_bound`: the link carried at least so much) is no draw of the
capacity and cannot show a fall: it joins the window only above its band, as a rise, and
otherwise leaves it as it was (beyond the paper). Waiting for a real rise costs little (the
frames running still fit), where a fall not followed at once queues frames.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from split_infer.planning.bandwidth import EmpiricalBandwidth

__all__ = [
    "CHANGE_SPREADS",
    "ESTIMATE_NOISE",
    "MIN_SAMPLES",
    "RISE_ESTIMATES",
    "STEADY_RISE_ESTIMATES",
    "CapacityWindow",
]

#: A newest estimate this many spreads from the window's mean is a level change.
CHANGE_SPREADS = 4.0
#: The relative spread of estimates on a constant link (the floor of the spread).
ESTIMATE_NOISE = 0.05
#: Estimates above the band in a row that make a rise (a fall needs one).
RISE_ESTIMATES = 3
#: The same on a window whose spread is at the estimator's noise floor (a steady link).
STEADY_RISE_ESTIMATES = 2
#: Estimates in the window before a level change is tested for.
MIN_SAMPLES = 6


def _check_bandwidth(bandwidth_bps: float, what: str) -> None:
    if not (math.isfinite(bandwidth_bps) and bandwidth_bps >= 0):
        raise ValueError(f"{what} must be >= 0 bits/s, got {bandwidth_bps!r}")


class CapacityWindow:
    """Capacity estimates (bits/s) of the last ``window_s`` seconds, restarted at level changes.

    Pure: the caller passes the clock. ``window_s`` 0 keeps only the newest estimate (planning
    at the point estimate, Hu & K Algorithm 2).
    """

    def __init__(self, window_s: float) -> None:
        if not (math.isfinite(window_s) and window_s >= 0):
            raise ValueError(f"window_s must be >= 0 seconds, got {window_s!r}")
        self.window_s = float(window_s)
        self._samples: deque[tuple[float, float]] = deque()  # (when, bits/s)
        self._rises: list[tuple[float, float]] = []  # estimates above the band, on hold
        self.restarts = 0
        self.outliers = 0  # estimates above the band that no rise confirmed, left out

    def __len__(self) -> int:
        return len(self._samples)

    def clear(self) -> None:
        """Forget every estimate (the next one starts a new window)."""
        self._samples.clear()
        self._rises.clear()

    def add(self, now_s: float, bandwidth_bps: float) -> bool:
        """Record one estimate; returns True when it restarted the window (a level change).
        ValueError for a bandwidth that is negative or not finite."""
        _check_bandwidth(bandwidth_bps, "a capacity estimate")
        self._age(now_s)
        sample = (now_s, float(bandwidth_bps))
        side, steady = self._side_of_band(bandwidth_bps)
        if side > 0:
            if steady and any(value == sample[1] for _, value in self._rises):
                return False  # the same measurement again (a tick between two trains)
            self._rises.append(sample)  # held until confirmed (see the module docstring)
            if len(self._rises) < (STEADY_RISE_ESTIMATES if steady else RISE_ESTIMATES):
                return False
            restart = list(self._rises)
        else:
            self.outliers += len(self._rises)
            if side == 0:
                self._rises.clear()
                self._samples.append(sample)
                return False
            restart = [sample]
        self._rises.clear()
        self._samples.clear()
        self._samples.extend(restart)
        self.restarts += 1
        return True

    def add_lower_bound(self, now_s: float, bandwidth_bps: float) -> bool:
        """Record a lower bound (the link carried at least this; not a measurement of its
        capacity). Above the window's band it is evidence of a rise and counts towards one
        like an estimate; inside or under the band it says nothing the window does not hold,
        and neither joins it nor clears it (the window still ages: after ``window_s`` of
        bounds alone it is empty). Returns True when it restarted the window."""
        _check_bandwidth(bandwidth_bps, "a lower bound")
        self._age(now_s)
        if self._side_of_band(bandwidth_bps)[0] > 0:
            return self.add(now_s, bandwidth_bps)
        return False

    def acts_at_once(self, bandwidth_bps: float) -> bool:
        """Whether this estimate (or lower bound) should be decided on when it arrives, not
        at the next tick: one above the band of a steady window, where a rise counts
        measurements, not ticks. A fall waits for the tick: the estimates right after a step
        down pass through values between the two levels, and a decision on the first of them
        (which also restarts the window with it) planned a link several times too fast."""
        side, steady = self._side_of_band(bandwidth_bps)
        return side > 0 and steady

    def _age(self, now_s: float) -> None:
        while self._samples and now_s - self._samples[0][0] >= self.window_s:
            self._samples.popleft()

    def _side_of_band(self, bandwidth_bps: float) -> tuple[int, bool]:
        """(+1 above the window's band, -1 below, 0 inside or too few estimates to tell;
        whether the window is steady: its spread at most the estimator's noise)."""
        if len(self._samples) < MIN_SAMPLES:
            return 0, False
        values = self._values()
        mean = float(values.mean())
        std = float(values.std())
        spread = max(std, ESTIMATE_NOISE * mean)
        steady = std <= ESTIMATE_NOISE * mean
        if abs(bandwidth_bps - mean) <= CHANGE_SPREADS * spread:
            return 0, steady
        return (1 if bandwidth_bps > mean else -1), steady

    def _values(self) -> np.ndarray:
        return np.fromiter((b for _, b in self._samples), dtype=float, count=len(self._samples))

    def distribution(self, scale: float = 1.0) -> EmpiricalBandwidth | None:
        """The window's estimates × ``scale`` as a distribution; None when it is empty."""
        if not self._samples:
            return None
        return EmpiricalBandwidth(self._values() * scale)

    def spread_bps(self) -> float:
        """The standard deviation of the window's estimates (0 with fewer than two)."""
        if len(self._samples) < 2:
            return 0.0
        return float(self._values().std())
