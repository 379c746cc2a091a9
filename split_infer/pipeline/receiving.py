"""The receiving half of a stage, without ROS: one upstream stream of wire frames.

::

    message bytes + format string + camera stamp
          │
    frame_auth.verify (when a key ring is set) ──▶ rejected "unauthenticated" (nothing read)
          ▼
    wire.parse_format, wire.decode_frame ──────────▶ rejected by FrameError reason
          ▼
    FreshnessGuard.check (seq, send stamp) ───────▶ rejected "replayed" / "future"
          ▼
    camera-stamp age (max_age) ───────────────────▶ rejected "stale" (receipt sent)
          ▼
    decode (the stage's engine: decoder + part) ──▶ rejected by FrameError reason (receipt)
          ▼
    served: FreshnessGuard.served — the only place the stream's state moves

A receipt goes back for every frame whose header decoded and was not refused by the
freshness guard (the bytes did cross the link; the sender's backpressure and the bandwidth
monitor learn from them). The cloud and stage nodes (``split_infer.ros.receiver``) wrap one
:class:`StreamReceiver` per upstream namespace; the fuzzer drives it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from split_infer.errors import FrameError
from split_infer.frame_auth import KeyRing, verify
from split_infer.pipeline.counters import ReasonCounts
from split_infer.pipeline.freshness import FreshnessGuard, FreshnessSettings
from split_infer.pipeline.timing import StageTimes
from split_infer.wire import Frame, decode_frame, parse_format

__all__ = ["Received", "StreamReceiver"]

Decode = Callable[[Frame], tuple[Frame, Any]]


@dataclass(frozen=True)
class Received:
    """What became of one message: ``served`` with the engine's ``output``, or ``rejected``
    with a ``reason``; ``header`` is the decoded wire header when it decoded, and ``receipt``
    says whether the sender gets an acknowledgement."""

    kind: Literal["served", "rejected"]
    reason: str | None = None
    detail: str = ""
    header: Frame | None = None
    output: Any = None
    receipt: bool = False


class StreamReceiver:
    """Checks, freshness state and counters of one upstream stream; see the module docstring.

    ``namespace`` is the upstream's (a key may be bound to it). ``keys`` turns authentication
    on. ``max_age_s`` > 0 refuses frames whose camera stamp is older than that on arrival
    (needs synced clocks). Not thread-safe: one stream's frames are handled one at a time.
    """

    def __init__(self, namespace: str, *, keys: KeyRing | None = None,
                 freshness: FreshnessSettings | None = None, max_age_s: float = 0.0) -> None:
        self.namespace = namespace
        self.keys = keys
        self.guard = FreshnessGuard(freshness)
        self.max_age_s = max_age_s
        self.rejects = ReasonCounts()
        self.times = StageTimes()  # CPU of the checks (auth, format, header)
        self.frames = 0
        self.last_config: tuple[int, float] | None = None

    def receive(self, data: Any, fmt: str, captured_ns: int, now_ns: int,
                decode: Decode) -> Received:
        """One message; never raises for bad input (FrameError becomes a rejection)."""
        try:
            with self.times.stage("checks"):
                if self.keys is not None:
                    data = verify(data, self.keys, self.namespace)
                parse_format(fmt)
                header = decode_frame(data)
        except FrameError as exc:
            return self._reject(exc.reason, exc.message)
        reason = self.guard.check(header.seq, header.stamp_ns, now_ns)
        if reason is not None:
            return self._reject(reason, f"seq {header.seq} stamp {header.stamp_ns}", header)
        age_ns = now_ns - captured_ns
        if self.max_age_s > 0 and captured_ns and age_ns > self.max_age_s * 1e9:
            # Acknowledged all the same: the bytes crossed the link, and the sender's
            # backpressure must learn that they did.
            return self._reject("stale", f"seq {header.seq} captured {age_ns / 1e6:.0f} ms "
                                         "ago", header, receipt=True)
        try:
            frame, output = decode(header)
        except FrameError as exc:
            return self._reject(exc.reason, exc.message, header, receipt=True)
        self.guard.served(frame.seq, frame.stamp_ns, now_ns)
        self.frames += 1
        self.last_config = frame.config
        return Received("served", header=frame, output=output, receipt=True)

    def _reject(self, reason: str, detail: str, header: Frame | None = None,
                receipt: bool = False) -> Received:
        self.rejects.add(reason)
        return Received("rejected", reason, detail, header, receipt=receipt)
