"""Thread-safe event counts by reason (drops, rejects), and the share of a camera's frames
that reached a node, for diagnostics and reports."""

from __future__ import annotations

import statistics
import threading
from collections import Counter

__all__ = ["CameraShare", "ReasonCounts"]


class ReasonCounts:
    """Event counts by reason, safe to share between threads.

    Callbacks on different executor threads add to the same counts, so every access holds a
    lock; :meth:`snapshot` returns a copy a periodic report can format at leisure.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._counts[reason] += count

    def __getitem__(self, reason: str) -> int:
        with self._lock:
            return self._counts[reason]

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


class CameraShare:
    """The share of a camera's frames that reached a node, from the stamps of those that did.

    A camera subscription that keeps the last frame silently overwrites the frames that
    arrive while the node is busy (or stalled: a robot whose CPU quota ran out waits for the
    rest of the quota's period). Between the frames that arrived, the median stamp gap is the
    camera's interval (most consecutive frames do arrive) and the mean gap the camera time per
    frame taken; their ratio is the share taken, 1 when none was lost. A camera slower than
    expected is not a loss: both gaps grow alike. Gaps over ``max_gap_s`` (a paused camera)
    and stamps going backwards (a bag starting over) start afresh.
    """

    def __init__(self, max_gap_s: float = 1.0, min_gaps: int = 3) -> None:
        self.max_gap_s, self.min_gaps = max_gap_s, min_gaps
        self._lock = threading.Lock()
        self._last: float | None = None
        self._gaps: list[float] = []

    def observe(self, stamp_s: float) -> None:
        """One frame that reached the node, by its camera stamp (seconds)."""
        with self._lock:
            last, self._last = self._last, stamp_s
            if last is not None and 0.0 < stamp_s - last <= self.max_gap_s:
                self._gaps.append(stamp_s - last)

    def take(self) -> float | None:
        """The share since the previous call, in (0, 1]; None with fewer than ``min_gaps``
        gaps to go by."""
        with self._lock:
            gaps, self._gaps = self._gaps, []
        if len(gaps) < self.min_gaps:
            return None
        return min(1.0, statistics.median(gaps) / statistics.fmean(gaps))
