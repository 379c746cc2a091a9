"""CPU time per stage of the per-frame work, for the CPU benchmark and ``/diagnostics``.

Each stage is timed with the process's CPU clock (``time.process_time_ns``: user + system of
every thread, so ONNX Runtime's worker threads count towards the model), accumulated with a
count. Two clock reads per stage, well under a microsecond each: cheap enough to leave on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StageTimes"]


class StageTimes:
    """Accumulated CPU nanoseconds and calls per stage name; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ns: dict[str, int] = {}
        self._calls: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.process_time_ns()
        try:
            yield
        finally:
            self.add(name, time.process_time_ns() - start)

    def add(self, name: str, ns: int, calls: int = 1) -> None:
        with self._lock:
            self._ns[name] = self._ns.get(name, 0) + ns
            self._calls[name] = self._calls.get(name, 0) + calls

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{stage: {"ns": total CPU ns, "calls": n}}``."""
        with self._lock:
            return {name: {"ns": ns, "calls": self._calls[name]}
                    for name, ns in sorted(self._ns.items())}
