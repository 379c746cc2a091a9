"""Backpressure-aware frame dropping (Ulhaq's thesis §4.3, ``should_process_frame``), ROS-free.

The thesis's rule, applied when a camera frame arrives and *before* any edge compute is spent
on it::

    client_remain    = estimate_client_process_latency()          EWMA of measured edge time
    server_remain    = last_send_time + server_rate_limit - now   rate limit: receipts' cloud
                                                                   time (EWMA) or explicit;
                                                                   beyond the thesis, see below
    bandwidth_remain = estimate_unreceived_bytes() / bandwidth    see below; bandwidth from
                                                                   the monitor (bit/s)
    drop if client_remain < server_remain or client_remain < bandwidth_remain

(both remainders here are the thesis's; this module lets each resource hold one frame more,
see below)

i.e. a frame is worth processing only if, by the time the edge has finished it, the server
will be free and the bytes already on the link will have drained; otherwise it would only
queue behind them and arrive stale. Until a bandwidth estimate exists (or when the last one is
older than ``bandwidth_stale_s``) the bandwidth term is replaced by a cap on unacknowledged
frames in flight (``max_in_flight``, 2 by default).

Beyond the thesis: an estimate flagged as a lower bound (the link carries *at least* that
much) is not a capacity and never paces the edge down, but it still lets a frame through the
in-flight cap when even at that rate the bytes in flight will have drained by the time the
frame is ready. The cap alone bounds the rate at ``max_in_flight`` frames per round trip: when
the server runs the whole model (split point 0) a round trip takes longer than two camera
intervals, and a robot whose probe trains are sender-limited on a fast link only ever gets
lower bounds.

Beyond the thesis, the server term lets one frame wait at the server. The thesis drops a frame
whenever the server is still busy with the previous one when this one is ready; with a server
that keeps up with the camera on average, that drops frames for jitter alone: a robot whose
CPU quota stalls it sends two frames close together, and the second is dropped although the
server would have had it done long before the next. The edge keeps the server's queue instead
(each frame sent adds ``server_rate_limit`` of work from when it is sent or when the work
before it ends, whichever is later) and drops a frame only when the server would still be
busy, when this frame is ready, with more than one frame's work: ``server_remain`` is that
backlog beyond one frame. A server slower than the camera is still held to its own rate, and a
frame waits at most one server time; a server that keeps up loses no frames to jitter.

Beyond the thesis, the bandwidth term gives the link the same one frame of slack. The thesis
drops a frame whenever bytes sent before it are still on the link when it is ready; a link
that carries the camera's rate on average then loses the second frame of every pair a stalled
robot sends, and a split that fits its link runs a fifth below what the link carries.
``bandwidth_remain`` is the link's backlog beyond the last frame sent (its bytes at the
estimated bandwidth), so a frame may queue behind at most one frame on the link. The slack
applies only while the frames, on average, cross the link faster than they arrive (the calls
to ``should_process_frame`` and the frames' sizes, each averaged over about twenty frames): a
link that cannot carry the camera's rate drops frames for rate, and there the slack would let
the edge send at the estimate itself and keep any queue the model does not see (one built
while the estimate was too high) standing for good.

``estimate_unreceived_bytes`` starts from the bytes sent and not yet receipted, as the thesis
suggests, and accounts for the receipt's latency as it also suggests: those frames are drained
first-in first-out at the estimated bandwidth from their send times, and only what the link
cannot have delivered yet counts. Counting every unreceipted byte would charge a frame's link
time again while the server works on it and the receipt travels back (the server rule already
covers the server), halving throughput on a fast link with a slow server. A receipt that
carries its arrival time also says where the frames behind it start: not before the receipted
frame's modelled end (nor after the receipt came), so a frame queued on the link is not
modelled as sent onto an idle one once the frame ahead of it is receipted.

Acknowledgements are the cloud's receipts (one per frame, matched by sequence number). A
frame that is never receipted (lost, or the cloud restarted) is forgotten after
``ack_timeout_s`` so it cannot hold the pipeline shut forever.

All methods take ``now`` (seconds, any monotonic clock) so the logic is testable with a fake
clock; a lock makes the object safe to share between the camera callback and the receipt
and bandwidth callbacks of a multi-threaded executor. :class:`RateLimiter` is the simpler
``max_rate`` cap the edge applies first.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["DROP_REASONS", "Backpressure", "Decision", "RateLimiter"]

#: Why :meth:`Backpressure.should_process_frame` drops a frame.
DROP_REASONS: dict[str, str] = {
    "server": "the server will still be busy with more than one earlier frame when this one "
              "is ready",
    "bandwidth": "the link will still carry more than one earlier frame's bytes when this one "
                 "is ready",
    "in_flight": "no bandwidth estimate yet and max_in_flight frames are unacknowledged",
}


#: Weight of a new sample in the mean interval between frames and the mean frame size: about
#: twenty frames, so that the pairs a stalled robot sends (8 and 58 ms apart at 30 frames/s)
#: average to the camera's interval, and one large frame does not decide.
_ARRIVAL_ALPHA = 0.05


@dataclass(frozen=True)
class Decision:
    """The outcome of one :meth:`Backpressure.should_process_frame` call (seconds)."""

    process: bool
    reason: str | None  # a DROP_REASONS key when dropped
    client_remain: float
    server_remain: float
    bandwidth_remain: float  # link backlog beyond one frame; NaN under the in-flight cap


class Backpressure:
    """State and decision of the thesis's ``should_process_frame``.

    ``server_rate_limit_s`` fixes the server's per-frame time; when None it is learnt from
    receipts (EWMA of the cloud time they report). ``latency_alpha`` weights new samples in
    both EWMAs.
    """

    def __init__(self, *, max_in_flight: int = 2, ack_timeout_s: float = 1.0,
                 bandwidth_stale_s: float = 5.0, latency_alpha: float = 0.2,
                 server_rate_limit_s: float | None = None, max_tracked: int = 4096) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if not 0.0 < latency_alpha <= 1.0:
            raise ValueError("latency_alpha must be in (0, 1]")
        if ack_timeout_s <= 0 or bandwidth_stale_s <= 0:
            raise ValueError("timeouts must be > 0")
        self.max_in_flight = int(max_in_flight)
        self.ack_timeout_s = float(ack_timeout_s)
        self.bandwidth_stale_s = float(bandwidth_stale_s)
        self._alpha = float(latency_alpha)
        self._explicit_server_s = server_rate_limit_s
        self._max_tracked = int(max_tracked)
        self._lock = threading.Lock()
        self._client_s: float | None = None
        self._server_s: float | None = None
        self._last_send: float | None = None
        self._last_bytes = 0  # the last frame sent: the link's one frame of slack
        self._last_arrival: float | None = None  # the last should_process_frame call
        self._arrival_s: float | None = None  # EWMA of the camera's frame interval
        self._mean_bytes: float | None = None  # EWMA of the frames' sizes
        self._server_free_at: float | None = None  # when the frames sent are done (virtual)
        self._bandwidth_bps: float | None = None
        self._bandwidth_at = -math.inf
        self._floor_bps: float | None = None  # the latest lower-bound estimate
        self._floor_at = -math.inf
        self._link_busy_until = -math.inf  # receipted frames' modelled end on the link
        self._in_flight: OrderedDict[int, tuple[float, int]] = OrderedDict()  # seq → (t, bytes)
        self.acknowledged = 0
        self.expired = 0

    # -- inputs ---------------------------------------------------------------------------------
    def frame_processed(self, edge_latency_s: float) -> None:
        """Feed one measured edge processing time (arrival → ready to send)."""
        if math.isfinite(edge_latency_s) and edge_latency_s >= 0:
            with self._lock:
                self._client_s = _ewma(self._client_s, edge_latency_s, self._alpha)

    def frame_sent(self, seq: int, nbytes: int, now: float) -> None:
        """A frame of ``nbytes`` left the edge at ``now``."""
        with self._lock:
            self._last_send, self._last_bytes = now, int(nbytes)
            self._mean_bytes = _ewma(self._mean_bytes, float(nbytes), _ARRIVAL_ALPHA)
            rate_limit = self.server_rate_limit_s
            if rate_limit is not None:
                start = now if self._server_free_at is None else max(self._server_free_at, now)
                self._server_free_at = start + rate_limit
            self._in_flight[int(seq)] = (now, int(nbytes))
            self._in_flight.move_to_end(int(seq))
            while len(self._in_flight) > self._max_tracked:  # bound memory whatever happens
                self._in_flight.popitem(last=False)
                self.expired += 1

    def receipt(self, seq: int, cloud_s: float | None = None, now: float | None = None) -> bool:
        """The server received frame ``seq`` (and spent ``cloud_s`` on it); False if the frame
        was not in flight (a duplicate, a timed-out frame, or another edge's).

        With ``now`` (the receipt's arrival), the link is known busy until that frame's
        modelled end, but no later than ``now``: frames still in flight queue behind it.
        """
        seq = int(seq)
        with self._lock:
            if cloud_s is not None and math.isfinite(cloud_s) and cloud_s >= 0:
                self._server_s = _ewma(self._server_s, cloud_s, self._alpha)
            if seq not in self._in_flight:
                return False
            bandwidth = None if now is None else self._bandwidth(now)
            if bandwidth is not None:
                end = self._link_free_at(bandwidth, until_seq=seq)
                self._link_busy_until = max(self._link_busy_until, min(end, now))
            del self._in_flight[seq]
            self.acknowledged += 1
            return True

    def set_bandwidth(self, bits_per_second: float, now: float,
                      lower_bound: bool = False) -> bool:
        """A bandwidth estimate (bit/s) arrived; non-finite or non-positive ones are ignored
        (False), so the in-flight fallback stays in charge rather than dividing by zero.

        A ``lower_bound`` estimate (an unsaturated link shows only what was offered) is not a
        capacity: pacing to it would ratchet the rate down, so the in-flight cap decides, and
        the lower bound only admits frames beyond it (see the module docstring).
        """
        if not (math.isfinite(bits_per_second) and bits_per_second > 0):
            return False
        with self._lock:
            if lower_bound:
                self._bandwidth_bps = None
                self._floor_bps, self._floor_at = float(bits_per_second), now
            else:
                self._bandwidth_bps, self._bandwidth_at = float(bits_per_second), now
                self._floor_bps = None
        return True

    def set_server_rate_limit(self, seconds: float | None) -> None:
        """Fix the server's per-frame time (None: learn it from receipts again)."""
        with self._lock:
            self._explicit_server_s = seconds

    # -- estimates ------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        while self._in_flight:
            seq, (sent, _) = next(iter(self._in_flight.items()))
            if now - sent < self.ack_timeout_s:
                break
            del self._in_flight[seq]
            self.expired += 1

    def _bandwidth(self, now: float) -> float | None:
        if self._bandwidth_bps is None or now - self._bandwidth_at > self.bandwidth_stale_s:
            return None
        return self._bandwidth_bps

    def _link_free_at(self, bandwidth_bps: float, until_seq: int | None = None) -> float:
        """When the unreceipted frames (up to ``until_seq``) have crossed a FIFO link of
        ``bandwidth_bps``, queued behind the receipted ones."""
        free_at = self._link_busy_until
        for seq, (sent, nbytes) in self._in_flight.items():  # in send order
            free_at = max(free_at, sent) + nbytes * 8.0 / bandwidth_bps
            if seq == until_seq:
                break
        return free_at

    def _link_remain(self, now: float, bandwidth_bps: float) -> float:
        """Seconds until the unreceipted frames have crossed a FIFO link of ``bandwidth_bps``."""
        return max(0.0, self._link_free_at(bandwidth_bps) - now)

    def unreceived_bytes(self, now: float) -> float:
        """estimate_unreceived_bytes(): with a bandwidth estimate, the unreceipted bytes the
        link cannot have delivered by ``now``; without one, every unreceipted byte."""
        with self._lock:
            self._expire(now)
            bandwidth = self._bandwidth(now)
            if bandwidth is None:
                return float(sum(b for _, b in self._in_flight.values()))
            return self._link_remain(now, bandwidth) * bandwidth / 8.0

    @property
    def client_latency_s(self) -> float | None:
        """EWMA of the measured edge latency, None before the first frame."""
        return self._client_s

    @property
    def server_rate_limit_s(self) -> float | None:
        """The explicit server rate limit, else the receipts' EWMA, else None."""
        return self._explicit_server_s if self._explicit_server_s is not None else self._server_s

    def frame_interval_s(self, now: float) -> float:
        """The time the binding resource takes per frame: the last frame's bytes at the
        current estimate, or the server's time per frame, whichever is longer (0: neither
        known)."""
        with self._lock:
            bandwidth = self._bandwidth(now)
            link = self._last_bytes * 8.0 / bandwidth if bandwidth else 0.0
        server = self.server_rate_limit_s
        return max(link, server or 0.0)

    def bandwidth_bps(self, now: float) -> float | None:
        """The current (non-stale) bandwidth estimate in bit/s, or None."""
        with self._lock:
            return self._bandwidth(now)

    def in_flight(self, now: float) -> tuple[int, int]:
        """(frames, bytes) sent and not yet receipted nor timed out."""
        with self._lock:
            self._expire(now)
            return len(self._in_flight), sum(b for _, b in self._in_flight.values())

    # -- the decision ---------------------------------------------------------------------------
    def should_process_frame(self, now: float) -> Decision:
        """The thesis's rule: process unless the server or the link will still hold more than
        one earlier frame when this one is ready."""
        with self._lock:
            if self._last_arrival is not None and now > self._last_arrival:
                self._arrival_s = _ewma(self._arrival_s, now - self._last_arrival,
                                        _ARRIVAL_ALPHA)
            self._last_arrival = now
            self._expire(now)
            client = self._client_s if self._client_s is not None else 0.0
            rate_limit = self.server_rate_limit_s
            if self._last_send is None or rate_limit is None:
                server = -math.inf
            else:
                # The server's backlog beyond one frame (see the module docstring); none known
                # while no rate was known when a frame left.
                backlog_from = self._last_send if self._server_free_at is None else max(
                    self._server_free_at - rate_limit, self._last_send)
                server = backlog_from - now
            bandwidth = self._bandwidth(now)
            if bandwidth is None:
                link = math.nan
                link_busy = len(self._in_flight) >= self.max_in_flight
                floor = self._floor_bps
                if link_busy and floor is not None and now - self._floor_at <= \
                        self.bandwidth_stale_s:
                    # The link carries at least ``floor``: bytes that drain even at that
                    # rate before this frame is ready would only cost it its turn.
                    link_busy = client < self._link_remain(now, floor)
            else:
                # The link's backlog beyond the last frame sent (see the module docstring).
                slack = self._last_bytes * 8.0 / bandwidth
                if self._arrival_s is None or self._mean_bytes is None or \
                        self._mean_bytes * 8.0 / bandwidth > self._arrival_s:
                    # A link that cannot carry the camera's rate drops frames for rate, not
                    # for jitter: the slack would only keep a queue standing on it.
                    slack = 0.0
                link = max(0.0, self._link_remain(now, bandwidth) - slack)
                link_busy = client < link
        if client < server:
            return Decision(False, "server", client, server, link)
        if link_busy:
            return Decision(False, "bandwidth" if bandwidth is not None else "in_flight",
                            client, server, link)
        return Decision(True, None, client, server, link)


def _ewma(previous: float | None, sample: float, alpha: float) -> float:
    return sample if previous is None else (1.0 - alpha) * previous + alpha * sample


class RateLimiter:
    """At most ``max_rate_hz`` accepted frames per second (0 = unlimited).

    The schedule keeps its phase (the next slot is one period after the previous slot, not
    after the frame), and a frame up to ``tolerance`` of a period early is accepted, so a
    camera running at exactly the cap with some jitter is not halved.
    """

    def __init__(self, max_rate_hz: float = 0.0, tolerance: float = 0.1) -> None:
        if not 0.0 <= tolerance < 1.0:
            raise ValueError("tolerance must be in [0, 1)")
        self._tolerance = tolerance
        self._lock = threading.Lock()
        self._next: float | None = None
        self._period = 0.0
        self.set_rate(max_rate_hz)

    @property
    def max_rate_hz(self) -> float:
        return 0.0 if self._period == 0.0 else 1.0 / self._period

    def set_rate(self, max_rate_hz: float) -> None:
        if not (math.isfinite(max_rate_hz) and max_rate_hz >= 0):
            raise ValueError(f"max_rate_hz must be finite and >= 0, got {max_rate_hz}")
        with self._lock:
            self._period = 0.0 if max_rate_hz == 0 else 1.0 / max_rate_hz
            self._next = None

    def allow(self, now: float) -> bool:
        """True if a frame arriving at ``now`` may be processed (and books its slot)."""
        with self._lock:
            if self._period == 0.0:
                return True
            if self._next is not None and now < self._next - self._tolerance * self._period:
                return False
            if self._next is None or now - self._next >= self._period:
                self._next = now + self._period  # idle for a while: restart the schedule
            else:
                self._next += self._period
            return True
