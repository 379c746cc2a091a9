"""Thread-safe event counts by reason (drops, rejects), for diagnostics and reports."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["ReasonCounts"]


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
