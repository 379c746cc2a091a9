"""An emulated network link for the in-process demo and the tests: bandwidth traces, a FIFO
shaper that follows them, and a small delivery loop that hands payloads over on time.

Three layers, none of them knows about ROS:

* :class:`Trace` — a piecewise-constant bandwidth trace (rate, one-way delay, loss), loaded from
  and written to ``config/traces/*.csv`` (format below), or built by :func:`constant_trace`,
  :func:`step_trace`, :func:`gaussian_trace`, :func:`outage_trace`.
* :class:`LinkShaper` — pure: given a send time and a size it returns the delivery time, or
  ``None`` when the frame is dropped. The clock is an argument, so a test can run an hour of
  link time in milliseconds.
* :class:`EmulatedLink` — wraps a shaper around a delivery callback and a clock. Drive it from
  a ROS timer (:meth:`EmulatedLink.poll`) or let it run its own thread
  (:meth:`EmulatedLink.start`). The demo puts it between the edge's ``features`` publisher and
  the cloud's subscription.

**Trace file format** (``config/traces/*.csv``)::

    # free-text comment lines start with '#', anywhere in the file; blank lines are ignored
    time_s,rate_bps,delay_ms,loss
    0,8000000,10,0
    20,1000000,10,0

* the header is exactly ``time_s,rate_bps,delay_ms,loss``;
* ``time_s`` is when the row's segment *starts*, in seconds from the start of the trace: the
  first row is at 0 and times strictly increase; the last row lasts forever;
* ``rate_bps`` is the bottleneck rate in bits/s, ``>= 0`` (0 is an outage);
* ``delay_ms`` is the one-way propagation delay in milliseconds, ``>= 0``;
* ``loss`` is the probability in ``[0, 1)`` that a frame is lost after it crossed the
  bottleneck (as on a lossy radio: it used link time, then vanished).

A bad file raises :class:`TraceError` naming the file, the line and what is wrong.

**Link model** (beyond the papers, which model bandwidth only as a number): one FIFO queue
drained at the trace's rate — a token bucket with no burst allowance, like ``tc tbf`` with a
tiny bucket. Transfers are fluid: a frame in service when the rate changes continues at the new
rate. The queue holds at most ``queue_limit_bytes`` (the frame in service included); a frame
that does not fit is dropped at the tail, as ``tc``'s ``limit`` does. The propagation delay is
the one in force when a frame leaves the queue, and the link never reorders (a delay decrease
cannot make a frame overtake an earlier one), as DDS reliable delivery would not either.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from split_infer.errors import UserError
from split_infer.planning.bandwidth import GaussianBandwidth

__all__ = [
    "TRACE_HEADER",
    "EmulatedLink",
    "LinkShaper",
    "LinkStats",
    "Trace",
    "TraceError",
    "constant_trace",
    "gaussian_trace",
    "load_trace",
    "outage_trace",
    "step_trace",
    "trace_text",
    "write_trace",
]

TRACE_HEADER = ("time_s", "rate_bps", "delay_ms", "loss")

_log = logging.getLogger(__name__)

T = TypeVar("T")


class TraceError(UserError, ValueError):
    """A trace file or trace definition is malformed; the message says where and why."""


@dataclass(frozen=True, eq=False)
class Trace:
    """A piecewise-constant link trace. Row ``k`` holds from ``times_s[k]`` until
    ``times_s[k+1]``; the last row holds forever. Build one with :meth:`from_rows`, which
    validates, or with the ``*_trace`` helpers."""

    times_s: np.ndarray
    rates_bps: np.ndarray
    delays_s: np.ndarray
    losses: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        for array in (self.times_s, self.rates_bps, self.delays_s, self.losses):
            array.setflags(write=False)

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence[float]], name: str = "", *, delay_unit: str = "ms"
    ) -> Trace:
        """Rows of ``(time_s, rate_bps, delay, loss)``, ``delay`` in ``delay_unit``
        ("ms" as in the files, or "s"). Raises :class:`TraceError` for anything invalid."""
        if delay_unit not in ("ms", "s"):
            raise ValueError("delay_unit must be 'ms' or 's'")
        if not rows:
            raise TraceError(f"{name or 'trace'}: needs at least one row")
        try:
            data = np.asarray(rows, dtype=float)
        except (TypeError, ValueError):
            data = np.empty(0)
        if data.ndim != 2 or data.shape[1] != 4:
            raise TraceError(f"{name or 'trace'}: every row needs 4 values {TRACE_HEADER}")
        for k, (t, rate, delay, loss) in enumerate(data):
            where = f"{name or 'trace'} row {k + 1}"
            _check_row(where, t, rate, delay, loss, None if k == 0 else data[k - 1, 0])
        scale = 1e-3 if delay_unit == "ms" else 1.0
        return cls(data[:, 0].copy(), data[:, 1].copy(), data[:, 2] * scale, data[:, 3].copy(),
                   name)

    # -- queries ---------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        """Start time of the last row (which then lasts forever)."""
        return float(self.times_s[-1])

    def segment(self, t_s: float) -> int:
        """Index of the row in force at ``t_s`` (times before 0 use the first row)."""
        return max(int(np.searchsorted(self.times_s, t_s, side="right")) - 1, 0)

    def rate_at(self, t_s: float) -> float:
        return float(self.rates_bps[self.segment(t_s)])

    def delay_at(self, t_s: float) -> float:
        """One-way propagation delay in seconds at ``t_s``."""
        return float(self.delays_s[self.segment(t_s)])

    def loss_at(self, t_s: float) -> float:
        return float(self.losses[self.segment(t_s)])

    def mean_rate_bps(self, start_s: float, end_s: float) -> float:
        """Time-averaged rate over ``[start_s, end_s]`` (the rate at ``start_s`` if empty)."""
        if end_s <= start_s:
            return self.rate_at(start_s)
        return self.bits_between(start_s, end_s) / (end_s - start_s)

    def bits_between(self, start_s: float, end_s: float) -> float:
        """Bits the link can carry in ``[start_s, end_s]``."""
        total, t = 0.0, start_s
        k = self.segment(t)
        while t < end_s:
            seg_end = float(self.times_s[k + 1]) if k + 1 < len(self.times_s) else math.inf
            stop = min(seg_end, end_s)
            total += float(self.rates_bps[k]) * (stop - t)
            t, k = stop, k + 1
        return total

    def transmit_end(self, start_s: float, bits: float) -> float:
        """When a transfer of ``bits`` that starts at ``start_s`` ends, integrating the rate
        across row boundaries; ``inf`` if the trace ends in an outage first."""
        if bits <= 0:
            return start_s
        t, remaining = start_s, float(bits)
        k = self.segment(t)
        n = len(self.times_s)
        while True:
            rate = float(self.rates_bps[k])
            seg_end = float(self.times_s[k + 1]) if k + 1 < n else math.inf
            if rate > 0 and remaining <= rate * (seg_end - t):
                return t + remaining / rate
            if seg_end == math.inf:
                return math.inf
            remaining -= rate * (seg_end - t)
            t, k = seg_end, k + 1

    def rows(self) -> list[tuple[float, float, float, float]]:
        """``(time_s, rate_bps, delay_ms, loss)`` rows, as in the file."""
        return [
            (float(t), float(r), float(d) * 1e3, float(p))
            for t, r, d, p in zip(self.times_s, self.rates_bps, self.delays_s, self.losses)
        ]


def _check_row(where: str, t: float, rate: float, delay: float, loss: float,
               previous_t: float | None) -> None:
    values = {"time_s": t, "rate_bps": rate, "delay_ms": delay, "loss": loss}
    for key, value in values.items():
        if not math.isfinite(value):
            raise TraceError(f"{where}: {key} must be a finite number, got {value!r}")
    if previous_t is None and t != 0:
        raise TraceError(f"{where}: the first row must start at time_s = 0, got {t:g}")
    if previous_t is not None and not t > previous_t:
        raise TraceError(f"{where}: time_s must increase strictly ({t:g} after {previous_t:g})")
    if rate < 0:
        raise TraceError(f"{where}: rate_bps must be >= 0, got {rate:g}")
    if delay < 0:
        raise TraceError(f"{where}: delay_ms must be >= 0, got {delay:g}")
    if not 0 <= loss < 1:
        raise TraceError(f"{where}: loss is a probability in [0, 1), got {loss:g}")


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV (format in the module docstring); :class:`TraceError` if malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such trace file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read trace ({exc})") from None
    header_seen = False
    rows: list[tuple[float, float, float, float]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cells = [cell.strip() for cell in line.split(",")]
        where = f"{path}:{number}"
        if not header_seen:
            if tuple(cells) != TRACE_HEADER:
                raise TraceError(f"{where}: the header must be {','.join(TRACE_HEADER)!r}, "
                                 f"got {line!r}")
            header_seen = True
            continue
        if len(cells) != len(TRACE_HEADER):
            raise TraceError(f"{where}: expected {len(TRACE_HEADER)} values, got {len(cells)}")
        try:
            t, rate, delay, loss = (float(cell) for cell in cells)
        except ValueError:
            raise TraceError(f"{where}: not a number in {line!r}") from None
        _check_row(where, t, rate, delay, loss, rows[-1][0] if rows else None)
        rows.append((t, rate, delay, loss))
    if not header_seen:
        raise TraceError(f"{path}: empty trace (no header {','.join(TRACE_HEADER)!r})")
    if not rows:
        raise TraceError(f"{path}: the trace has a header but no rows")
    return Trace.from_rows(rows, name=path.stem)


def _fmt(value: float) -> str:
    # Integers print without a decimal point; anything else keeps full precision.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def trace_text(trace: Trace, comment: str = "") -> str:
    """``trace`` in the file format; ``comment`` lines go on top, prefixed with '#'."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines.append(",".join(TRACE_HEADER))
    lines += [",".join(_fmt(v) for v in row) for row in trace.rows()]
    return "\n".join(lines) + "\n"


def write_trace(trace: Trace, path: str | Path, comment: str = "") -> Path:
    """Write :func:`trace_text` to ``path``."""
    path = Path(path)
    path.write_text(trace_text(trace, comment), encoding="utf-8")
    return path


# -- trace builders -------------------------------------------------------------------------

def constant_trace(rate_bps: float, delay_ms: float = 10.0, loss: float = 0.0,
                   name: str = "") -> Trace:
    """One row: a fixed rate forever."""
    return Trace.from_rows([(0.0, rate_bps, delay_ms, loss)], name)


def step_trace(levels: Sequence[tuple[float, float]], delay_ms: float = 10.0,
               loss: float = 0.0, name: str = "") -> Trace:
    """``levels`` = ``[(start_s, rate_bps), ...]`` with the first at 0."""
    return Trace.from_rows([(t, rate, delay_ms, loss) for t, rate in levels], name)


def outage_trace(rate_bps: float, outage_start_s: float, outage_s: float,
                 delay_ms: float = 10.0, name: str = "") -> Trace:
    """``rate_bps``, then nothing for ``outage_s`` seconds, then ``rate_bps`` again."""
    return step_trace([(0.0, rate_bps), (outage_start_s, 0.0),
                       (outage_start_s + outage_s, rate_bps)], delay_ms, 0.0, name)


def gaussian_trace(mean_bps: float, std_bps: float, duration_s: float, *,
                   window_s: float = 1.0, seed: int = 0, delay_ms: float = 10.0,
                   loss: float = 0.0, name: str = "") -> Trace:
    """One independent draw of ``N(mean, std)`` per ``window_s`` window, as in Hu &
    Krishnamachari's §V/Fig. 3 bandwidth model; the Gaussian is truncated at 0 exactly as the
    planner's :class:`~split_infer.planning.GaussianBandwidth` (one implementation), and rates
    are rounded to whole bits/s so the files are stable text."""
    windows = math.ceil(duration_s / window_s - 1e-9)
    if windows < 1:
        raise ValueError("duration_s must cover at least one window")
    draws = GaussianBandwidth(mean_bps, std_bps).sample(np.random.default_rng(seed), windows)
    rates = np.maximum(np.round(draws), 1.0)  # a 0 would be an outage, which N(μ,σ) never draws
    return Trace.from_rows([(k * window_s, float(r), delay_ms, loss)
                            for k, r in enumerate(rates)], name)


# -- the shaper -----------------------------------------------------------------------------

@dataclass
class LinkStats:
    """Counters of a :class:`LinkShaper`."""

    offered: int = 0
    accepted: int = 0
    dropped_queue: int = 0
    lost: int = 0
    bytes_accepted: int = 0


class LinkShaper:
    """A FIFO queue drained at a :class:`Trace`'s rate (model in the module docstring).

    Pure: :meth:`send` takes the send time (seconds on the trace's time axis, non-decreasing)
    and returns the delivery time or ``None`` (dropped: queue overflow, or lost). ``inf`` means
    the trace ends in an outage before the frame gets through.
    """

    def __init__(self, trace: Trace, queue_limit_bytes: int = 256_000, seed: int = 0) -> None:
        if queue_limit_bytes <= 0:
            raise ValueError("queue_limit_bytes must be > 0")
        self.trace = trace
        self.queue_limit_bytes = int(queue_limit_bytes)
        self.seed = seed
        self.stats = LinkStats()
        self.last_drop_reason: str | None = None
        self._rng = np.random.default_rng(seed)
        self._in_queue: deque[tuple[float, int]] = deque()  # (departure_s, bytes)
        self._queued_bytes = 0
        self._free_at = -math.inf  # when the bottleneck finishes its current backlog
        self._last_delivery = -math.inf
        self._last_send = -math.inf

    def backlog_bytes(self, now_s: float) -> int:
        """Bytes accepted and not yet through the bottleneck at ``now_s``."""
        while self._in_queue and self._in_queue[0][0] <= now_s:
            self._queued_bytes -= self._in_queue.popleft()[1]
        return self._queued_bytes

    def send(self, now_s: float, nbytes: int) -> float | None:
        """Offer a frame of ``nbytes`` at ``now_s``; its delivery time, or ``None`` if dropped."""
        if now_s < self._last_send:
            raise ValueError("send times must not decrease")
        if nbytes <= 0:
            raise ValueError("a frame has at least one byte")
        self._last_send = now_s
        self.stats.offered += 1
        if self.backlog_bytes(now_s) + nbytes > self.queue_limit_bytes:
            self.stats.dropped_queue += 1
            self.last_drop_reason = "queue_full"
            return None
        departure = self.trace.transmit_end(max(now_s, self._free_at), 8.0 * nbytes)
        self._free_at = departure
        self._in_queue.append((departure, nbytes))
        self._queued_bytes += nbytes
        self.stats.accepted += 1
        self.stats.bytes_accepted += nbytes
        if math.isinf(departure):
            self.last_drop_reason = None
            return math.inf
        if self._rng.random() < self.trace.loss_at(departure):
            self.stats.lost += 1
            self.last_drop_reason = "lost"
            return None
        self.last_drop_reason = None
        delivery = max(departure + self.trace.delay_at(departure), self._last_delivery)
        self._last_delivery = delivery
        return delivery


# -- a delivery loop ------------------------------------------------------------------------

@dataclass(order=True)
class _Pending(Generic[T]):
    due_s: float
    order: int
    payload: T = field(compare=False)


class EmulatedLink(Generic[T]):
    """Delivers payloads through a :class:`LinkShaper` at their delivery times.

    ``clock()`` returns seconds (``time.monotonic`` by default); the trace's time 0 is the
    clock's value at construction (or at :meth:`restart`). ``deliver(payload)`` is called once
    per delivered payload, in order, from whoever drives the link:

    * a ROS timer calling :meth:`poll` (the clock can then be the node's clock, sim time too);
    * or the link's own thread (:meth:`start` / :meth:`stop`), which sleeps until the next
      delivery is due — only with a real-time clock.

    Thread-safe: :meth:`send` may be called from any thread. An exception raised by
    ``deliver`` is logged and counted (``callback_errors``), never propagated.
    """

    def __init__(self, shaper: LinkShaper, deliver: Callable[[T], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.shaper = shaper
        self._deliver = deliver
        self._clock = clock
        self._origin = clock()
        self._heap: list[_Pending[T]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._running = False
        self.delivered = 0
        self.callback_errors = 0

    def now_s(self) -> float:
        """Seconds on the trace's time axis."""
        return self._clock() - self._origin

    def restart(self) -> None:
        """Start the trace again at time 0 (pending payloads are discarded)."""
        with self._lock:
            self._origin = self._clock()
            self._heap.clear()
            self.shaper = LinkShaper(self.shaper.trace, self.shaper.queue_limit_bytes,
                                     self.shaper.seed)

    def send(self, payload: T, nbytes: int | None = None) -> float | None:
        """Offer ``payload`` (``nbytes`` defaults to ``len(payload)``). Returns its delivery
        time on the trace's axis, or ``None`` if the link dropped it."""
        size = len(payload) if nbytes is None else int(nbytes)  # type: ignore[arg-type]
        with self._lock:
            due = self.shaper.send(self.now_s(), size)
            if due is not None and math.isfinite(due):
                heapq.heappush(self._heap, _Pending(due, next(self._order), payload))
                self._wake.notify()
            return due

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._heap)

    def next_due_s(self) -> float | None:
        """Delivery time of the next payload on the trace's axis, or None if none pending."""
        with self._lock:
            return self._heap[0].due_s if self._heap else None

    def poll(self) -> int:
        """Deliver every payload that is due now; returns how many."""
        due: list[T] = []
        with self._lock:
            now = self.now_s()
            while self._heap and self._heap[0].due_s <= now:
                due.append(heapq.heappop(self._heap).payload)
        for payload in due:
            self._call(payload)
        return len(due)

    def _call(self, payload: T) -> None:
        try:
            self._deliver(payload)
            self.delivered += 1
        except Exception:  # the link must outlive a faulty receiver
            self.callback_errors += 1
            _log.exception("EmulatedLink: the delivery callback raised")

    # -- own thread --------------------------------------------------------------------------
    def start(self) -> None:
        """Deliver from a background (daemon) thread until :meth:`stop`."""
        with self._lock:
            if self._thread is not None:
                return
            self._running = True
            self._thread = threading.Thread(target=self._run, name="EmulatedLink", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._lock:
            self._running = False
            self._wake.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                wait = (self._heap[0].due_s - self.now_s()) if self._heap else None
                if wait is None or wait > 0:
                    # Woken early by send() or stop(); a late wake-up only delays delivery.
                    self._wake.wait(None if wait is None else min(wait, 1.0))
                    continue
            self.poll()
