"""Replay and freshness checks for one stream of wire frames, that no single frame can poison.

Anyone on an unauthenticated DDS domain can publish a well-formed frame, so the receiver's
state may move only on frames it *served* (decoded and delivered), never on a frame it merely
saw::

    frame header (seq, send stamp) ──check──▶ "replayed" / "future" / None (go on)
                                                  │ nothing changes here
    decoder + tail ── served ──▶ served(seq, stamp): remember (seq, stamp); the newest
                                 served seq and stamp; the sender's epoch

Rules of :meth:`FreshnessGuard.check`, in order:

* **future**: stamped more than ``future_tolerance`` ahead of the receiver's clock (a forged
  stamp, or a sender clock far ahead). Rejected; the state does not move.
* **replayed**: a (seq, stamp) pair already served, or a frame *old in both orders*: its seq is
  not above the newest served seq and its stamp lies more than ``window`` before the newest
  served stamp (a recording of earlier frames).

Everything else is served and moves the state, so a sender that restarts (seq back to 0,
stamps moving on) or whose clock steps back (seq moving on, stamps back) is recognised from
its first frame: either order moving forward starts a new *epoch* in which the other order
may have jumped. A sender that does both at once (a reboot with a wrong RTC) is old in both
orders; when such frames keep arriving in a consistent order (seq and stamp both rising) for
``recover_after`` of receiver time, the guard accepts them as the sender's new epoch.

Why a forged frame cannot lock out the genuine sender: to make a genuine frame look replayed,
a served frame would need a stamp more than ``window`` ahead of it, i.e. ahead of the receiver's
clock by more than ``future_tolerance`` as long as the sender's clock is no further behind the
receiver's than ``window - future_tolerance`` (8 s with the defaults): the future check
refuses it. A forged frame with a huge seq and a plausible stamp is served once, and the
genuine frame after it moves the epoch on (its stamp is newer). What an attacker *can* do
without authentication is get forged frames served, and, against a sender whose clock lags
by more than that margin, make its frames look old; :mod:`split_infer.frame_auth` stops both.

Times are nanoseconds on the receiver's clock (``now_ns``) and the sender's (``stamp``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FRESHNESS_REASONS", "FreshnessGuard", "FreshnessSettings"]

#: Why :meth:`FreshnessGuard.check` refuses a frame.
FRESHNESS_REASONS: dict[str, str] = {
    "replayed": "already served, or older than the newest served frame in both seq and stamp",
    "future": "stamped further ahead of the receiver's clock than future_tolerance",
}


@dataclass
class FreshnessSettings:
    """Seconds; 0 disables a rule (``window`` 0: only exact repeats are replays)."""

    window: float = 10.0
    future_tolerance: float = 2.0
    recover_after: float = 1.0
    remembered: int = 1024  # served (seq, stamp) pairs kept for exact-repeat detection


class FreshnessGuard:
    """Replay/freshness state of one stream; see the module docstring.

    Not thread-safe on its own: a stream's frames are handled one at a time.
    """

    def __init__(self, settings: FreshnessSettings | None = None) -> None:
        self.settings = settings or FreshnessSettings()
        self._served: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._newest_seq: int | None = None
        self._newest_stamp: int | None = None
        # A run of frames old in both orders but consistent among themselves: (first seen at,
        # last seq, last stamp). Long enough, it is the sender's new epoch.
        self._candidate: tuple[int, int, int] | None = None

    def check(self, seq: int, stamp_ns: int, now_ns: int) -> str | None:
        """``"future"``, ``"replayed"`` or None (serve it); changes nothing but the
        recovery candidate, which is never what decides a genuine frame's fate."""
        s = self.settings
        if s.future_tolerance > 0 and stamp_ns > now_ns + int(s.future_tolerance * 1e9):
            return "future"
        if (seq, stamp_ns) in self._served:
            return "replayed"
        if not self._old_in_both_orders(seq, stamp_ns):
            return None
        if self._continues_candidate(seq, stamp_ns, now_ns):
            return None  # the sender's new epoch (restart with its clock stepped back)
        return "replayed"

    def served(self, seq: int, stamp_ns: int, now_ns: int) -> None:
        """Record a frame that decoded and was served: the only way the state moves."""
        key = (seq, stamp_ns)
        self._served[key] = None
        self._served.move_to_end(key)
        while len(self._served) > self.settings.remembered:
            self._served.popitem(last=False)
        newest_seq, newest_stamp = self._newest_seq, self._newest_stamp
        if newest_seq is None or newest_stamp is None or self._old_in_both_orders(seq, stamp_ns):
            moved = True  # the first frame, or a recovered epoch: it defines the stream now
        elif seq < newest_seq and stamp_ns < newest_stamp:
            moved = False  # a late (reordered) frame inside the window
        else:
            # both orders moved on (the usual case), or one went back while the other moved
            # on: a restart (seq) or a clock step (stamp) starts a new epoch here
            moved = True
        if moved:
            self._newest_seq, self._newest_stamp = seq, stamp_ns
        self._candidate = None

    def _old_in_both_orders(self, seq: int, stamp_ns: int) -> bool:
        window = self.settings.window
        if window <= 0 or self._newest_seq is None or self._newest_stamp is None:
            return False
        return seq <= self._newest_seq and stamp_ns < self._newest_stamp - int(window * 1e9)

    def _continues_candidate(self, seq: int, stamp_ns: int, now_ns: int) -> bool:
        recover = self.settings.recover_after
        candidate = self._candidate
        if recover <= 0:
            return False
        if candidate is None or not (seq > candidate[1] and stamp_ns > candidate[2]):
            self._candidate = (now_ns, seq, stamp_ns)
            return False
        self._candidate = (candidate[0], seq, stamp_ns)
        return now_ns - candidate[0] >= int(recover * 1e9)
