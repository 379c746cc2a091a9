"""Active capacity probing: short packet trains that show the link's headroom. No ROS in here.

The receipts of the frames only measure a capacity the frames fill (:mod:`.estimator`): on a
link the frames use at 5 %, the monitor can say "at least what was sent" and no more, so a
scheduler never learns that it could afford a larger, more accurate configuration. Hu & K
Algorithm 2 and the thesis simply assume "measure current bandwidth b_i"; this module is how we
measure it when the frames do not (all beyond the papers)::

    robot                                link                         server
    ProbePlanner.due(now, estimate) ─▶ train of n packets ─▶ probe echo: the middleware's
      (budget: a token bucket of        sent back to back       reception stamp per packet,
       budget_fraction × estimate)                              one row per packet, one message
                                                                per train
    BandwidthEstimator.add_probe ◀── analyze_train(rows) ◀──────────────┘

**Packet-train dispersion.** Packets sent back to back leave the bottleneck back to back, so
their arrival gaps are their serialization times at the capacity. A shaper with a burst
allowance (``tc tbf``'s bucket, a cellular policer) lets the *first* bytes of a train through
at line rate, so the rate is taken over the train's **second half** only: from the arrival of
its middle packet to its last, ``8 · Σ bytes after the middle / (a_last − a_middle)``. That is
exact as long as the train is at least twice the burst allowance; :class:`ProbeSettings` sizes
trains to ``train_s`` at ``headroom ×`` the estimate (``min_train_bytes`` at least) so that
holds for the links we shape (``tc tbf`` with a 5-ms bucket, :mod:`split_infer.tools.testbed`).
A gap much longer than the train's median (more than ``outlier_factor ×``) is a frame of the
edge's own stream that slipped between two probe packets: it is left out of both sums, so
interleaved traffic does not read as a slow link. When the burst reached into the
second half, the earlier of its gaps are shorter than the later ones (by more than
``burst_factor``): then only the later gaps count. A second half that arrived faster than
``min_span_s`` cannot be timed from reception stamps (the train was too short, or passed inside
the burst allowance): it is no measurement, only flagged (``lower_bound``), the estimate keeps
its value with the lower-bound flag, and the planner doubles the next train.

**A receiver too busy to stamp on time.** The reception stamps are taken when the receiver
gets to the packets: a receiver whose CPU is busy (the cloud's model, or in the demo the link
relay sharing one Python interpreter with the other nodes) stamps the packets that arrived
meanwhile late, together, and then catches up. Inside the second half that is a long gap
followed by gaps much shorter than the median; left out as a frame that slipped in, the bunch
behind it read a 6-Mbit/s link as 9.4 (CI, under load). So a long gap followed by such a
catch-up stays in: the sum of the gaps is then the link's time again. A second half stamped
late as a whole arrives faster than ``outlier_factor ×`` the rate of the first half, which
the link spread out: no link does that (a burst allowance makes the *first* half the fast
one, a faster link speeds up both), and such a train measured nothing
(``TrainMeasurement.stamped_late``; the estimator leaves it out and counts it; it had read
"at least 86 Mbit/s" of the same link). Beyond the papers.

**A sender too slow to fill the link.** Dispersion measures the link only when the packets
left faster than the link drained them. A robot whose CPU is spent (a weak robot under its
budget, the edge loading its models) can send a train so slowly that it arrives as it was
sent, and its arrival gaps are the sender's, not the link's: at 30 Mbit/s under a quarter core
such a train read 0.13 Mbit/s and sent the robot edge-only. So the gaps that make the rate are
compared with the same packets' send gaps (the echo returns each packet's send stamp; a span
on one clock each, so the two clocks need not agree): when the link stretched them by less
than ``sender_factor``, the train measured the sender and its rate is only a lower bound (the
link carried it at least that fast), flagged like a train too short to time. Unlike one, it
is no reason to double the next train: the planner doubles only on a bound at least the rate
the last train was sized to time (what a train too short shows), since a longer train from
the same sender, like more frames, would show no more (doubling on every bound grew a
quarter-core robot's trains to 190 kB and spent its budget for half a minute; beyond the
papers).

**Frames that queue need no train.** When the frames themselves queue at the bottleneck (the
monitor's ``queued_fraction``, the share of frame pairs that left it back to back, at least
``QUEUED_ENOUGH``), their dispersion measures the capacity with every frame, and a train would
only take bandwidth from them: none is sent.

**Link time.** A train occupies the link for its length at the capacity, and the frames
behind it wait that long: no train is sent that would take more than ``max_train_s`` at the
last *measured* capacity (0.25 s: on a link measured under about 0.4 Mbit/s the smallest train
is too long, and the estimate is what the frames show, a lower bound when they do not fill the
link; ``slow_recheck_s`` after the last train, one looks again). A lower bound (what
unsaturating frames delivered) is no reason to hold back: the link may be much faster. While
no frames use the link (the robot classifies by itself, edge-only), nothing waits behind a
train and the rule is off: the trains are then the only way to see the link come back.

**Silence.** When nothing crossed the link for a while, the monitor's estimate is a *silence
cap* (one frame in the silence, falling towards 0), flagged ``stale``: it is neither a
measurement nor a lower bound, and a budget that is a fraction of it would stop the very
trains that could end the silence. Stale estimates are probed as if nothing were known, but
never with a larger budget than the last capacity measured: a robot that runs edge-only on a
link measured at 0.3 Mbit/s sends nothing but trains, its estimate lapses into a silence cap
between them, and budgeting those lapses at ``floor_bps`` spent up to 11 % of the link on
trains (``bench/README.md``, "The robot's own plan, 2026-12-07").

**Budget.** Probing costs bytes. The planner spends from a token bucket that fills at
``budget_fraction ×`` the current estimate (4.5 % by default, counted in bytes on the wire,
headers included (:func:`wire_bytes`), so that with the bucket's first fill the trains stay
under 5 % of the link) and holds at most ``budget_window_s`` of it (or one train, if a train
is larger), starting full so that the first train goes at once; a train too short to time is
followed by the doubled one after ``interval_s``, on credit of one train that the bucket pays
back before the next.

**A rise is checked at once.** When the estimate comes out more than ``confirm_rise ×`` the
last measurement (a train saw the link step up, or went through a shaper's refilled burst and
over-read it), the next train goes after ``interval_s`` on the same credit, not a budget period
later: the scheduler acts on a rise only when it holds for two of its estimates
(:mod:`.variation`), and the second train settles within that whether it was real. A fall by as
much is checked the same way (the frames, when they queue, measure a fall themselves, and no
train goes then): after an outage of the testbed's outage trace, a train that crossed as the
link came back read 5 Mbit/s as 0.08, its budget (4.5 % of that) held the next train back for
the rest of the run, and the robot stayed edge-only on a link back at 5 Mbit/s
(``bench/README.md``, "The robot's own plan, 2026-12-07"). So is a hint from the frames
(:meth:`ProbePlanner.check_link`): frames that cross faster than slightly smaller frames did
show a step up before a train can, since at a 1-Mbit/s estimate the budget allows a train only
every 1.8 s. Small trains are sent in fewer packets (no smaller than ``min_packet_bytes``)
rather than in smaller ones, since every packet pays the same headers: at a 1-Mbit/s estimate
the smallest train (``min_train_bytes``, twice the 4-kB burst of the testbed's shaper, 9
packets) then crosses about every 1.8 s within the budget, where 16 packets of 750 bytes
crossed every 2.4 s (beyond the papers, which assume the bandwidth is measured). Trains of 14
kB and more keep their 16 packets: a different shape reads the same link slightly differently,
which can flip a near-tie of the scheduler (``bench/README.md``, "A step up seen by the next
train"). While the estimate is only a lower bound, the budget is that fraction of the last
capacity measured (a lower bound under it is what the frames carried); with none measured, or
no estimate, of at least ``floor_bps`` (1 Mbit/s): a fraction of what frames that fill 2 % of
the link deliver would never pay for the one train that measures it. (With the floor in every
lower-bound spell, a 0.5-Mbit/s link read as a lower bound every other second paid 6.8 % of
itself in trains instead of 4.5 %, in the planner alone: ``test/test_probing.py``.) So over any
window the probes use at most that fraction of what the link was believed to carry plus one
bucket (and one train of credit), and a slow link is probed less often, never harder. Every
byte is counted (:attr:`ProbePlanner.bytes_sent`).

**Wire size.** The shaper counts every header, so each packet's size is reported as its
payload plus the RTPS/UDP/IP/Ethernet headers around it (:func:`wire_bytes`); at 1,200-byte
payloads the headers are about 10 % of a packet, and leaving them out would read a 10-Mbit/s
link as 9.

Times in seconds, sizes in bytes, rates in bits/s; every clock value is passed in.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "PROBE_FORMAT",
    "PROBE_RECEIPT_COLUMNS",
    "PROBE_RECEIPT_LABEL",
    "QUEUED_ENOUGH",
    "SPED_UP_VALID_S",
    "ProbePacket",
    "ProbePlanner",
    "ProbeSettings",
    "ProbeTrain",
    "TrainMeasurement",
    "analyze_train",
    "parse_probe_format",
    "parse_probe_receipts",
    "probe_format",
    "probe_receipt_rows",
    "wire_bytes",
]

#: Share of frame pairs that queued (the monitor's ``queued_fraction``) from which the frames
#: measure the capacity themselves and no train is sent.
QUEUED_ENOUGH = 0.5
#: How long after the frames crossed faster (:meth:`ProbePlanner.check_link`) a train may go
#: although the queued fraction, over the last second, still counts their queue (s).
SPED_UP_VALID_S = 1.0

#: ``format`` of a probe packet: ``split_infer/probe; train=T; index=I; count=N``.
PROBE_FORMAT = "split_infer/probe"
_FORMAT_RE = re.compile(
    r"^split_infer/probe; train=(\d{1,12}); index=(\d{1,6}); count=(\d{1,6})$")

#: Columns of the probe echo's ``probe_receipts`` rows (one row per received packet).
PROBE_RECEIPT_COLUMNS: tuple[str, ...] = (
    "train", "index", "count", "bytes", "send_stamp_s", "receive_stamp_s")
PROBE_RECEIPT_LABEL = ",".join(PROBE_RECEIPT_COLUMNS)

# Headers around a probe payload on the wire: Ethernet 14 + IPv4 20 per IP fragment; UDP 8,
# RTPS header 20, INFO_TS 12, DATA submessage 24, CDR encapsulation 4, Header stamp 8 and the
# two string/sequence lengths 12 once per message (the strings themselves are added).
_PER_FRAGMENT = 14 + 20
_PER_MESSAGE = 8 + 20 + 12 + 24 + 4 + 8 + 12
_MTU_PAYLOAD = 1500 - 20


def wire_bytes(payload_bytes: int, text_bytes: int = 0) -> int:
    """Bytes a probe packet occupies on an Ethernet link: the payload, ``text_bytes`` of
    strings (frame id and format) and the headers around them (one IP fragment per 1,480
    bytes of UDP datagram)."""
    datagram = payload_bytes + text_bytes + _PER_MESSAGE
    return datagram + _PER_FRAGMENT * math.ceil(datagram / _MTU_PAYLOAD)


def probe_format(train: int, index: int, count: int) -> str:
    """The ``format`` string of packet ``index`` (of ``count``) of train ``train``."""
    return f"{PROBE_FORMAT}; train={train}; index={index}; count={count}"


def parse_probe_format(text: str) -> tuple[int, int, int]:
    """``(train, index, count)`` of a probe packet's ``format``; ValueError if malformed."""
    match = _FORMAT_RE.match(text)
    if match is None:
        raise ValueError(f"not a probe packet format: {text[:80]!r}")
    train, index, count = (int(g) for g in match.groups())
    if not 0 <= index < count:
        raise ValueError(f"probe index {index} outside a train of {count}")
    return train, index, count


@dataclass(frozen=True)
class ProbeSettings:
    """How hard and how often to probe (see the module docstring)."""

    budget_fraction: float = 0.045  # wire bytes (headers too), of the estimate
    budget_window_s: float = 2.0  # the token bucket holds this much of the budget
    interval_s: float = 0.25  # at most one train this often
    train_s: float = 0.015  # a train lasts this long at headroom × the estimate
    headroom: float = 1.5  # trains are sized for a link this much faster than believed
    min_train_bytes: int = 8_500  # at least twice the burst allowance of the shaper
    max_train_bytes: int = 400_000
    min_packets: int = 16
    max_packets: int = 64
    #: a train keeps min_packets packets down to 14 kB (sized for 5 Mbit/s or more); smaller
    #: ones have fewer packets rather than smaller ones: headers are paid per packet
    min_packet_bytes: int = 875
    max_packet_bytes: int = 8_000  # one UDP datagram (IP-fragmented), never DDS-fragmented
    #: an estimate this much above (or below) the last measurement is checked by a train at
    #: once
    confirm_rise: float = 1.2
    #: sizing and budget while nothing has measured the link (no estimate, or only a lower
    #: bound: 5 % of what unsaturating frames deliver would never pay for one train)
    floor_bps: float = 1_000_000.0
    #: no train that would hold the link longer than this at its measured capacity: on a
    #: slow link a train long enough to measure it delays the frames behind it as much
    max_train_s: float = 0.25
    slow_recheck_s: float = 30.0  # a link measured too slow to probe is tried again after this

    def __post_init__(self) -> None:
        if not 0 < self.budget_fraction <= 1:
            raise ValueError("budget_fraction must be in (0, 1]")
        positive = ("budget_window_s", "interval_s", "train_s", "floor_bps", "max_train_s",
                    "slow_recheck_s")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not self.headroom >= 1:
            raise ValueError("headroom must be >= 1")
        if not 2 <= self.min_packets <= self.max_packets:
            raise ValueError("need 2 <= min_packets <= max_packets")
        if not 0 < self.min_train_bytes <= self.max_train_bytes:
            raise ValueError("need 0 < min_train_bytes <= max_train_bytes")
        if not 64 <= self.min_packet_bytes <= self.max_packet_bytes:
            raise ValueError("need 64 <= min_packet_bytes <= max_packet_bytes")
        if not self.confirm_rise > 1:
            raise ValueError("confirm_rise must be > 1")


@dataclass(frozen=True)
class ProbeTrain:
    """One train to send now, back to back: ``packets`` payloads of ``packet_bytes``."""

    train: int
    packets: int
    packet_bytes: int

    @property
    def payload_bytes(self) -> int:
        return self.packets * self.packet_bytes


class ProbePlanner:
    """When to send a train and how large, within the budget. Pure: the clock is passed in."""

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self.settings = settings or ProbeSettings()
        self._tokens = 0.0
        self._last_fill_s: float | None = None
        self._last_train_s: float | None = None
        self._next_train = 0
        self._last_train_bytes = 0
        self._last_sized_bps = 0.0  # the rate the last train was sized to time
        self._measured: float | None = None  # the last capacity measured (not a lower bound)
        # The same, kept when a larger lower bound makes _measured out of date: what a silence
        # cap is budgeted at (a bound is no measurement of a link that then went quiet).
        self._last_capacity: float | None = None
        # The estimate moved by confirm_rise or more: a train on credit is due.
        self._confirm = False
        # When the frames last crossed faster than before (check_link): for a second (the
        # window of the monitor's queued fraction) the queue it still counts is taken to be
        # gone, and a train need not wait for it.
        self._sped_up_s: float | None = None
        self.trains_sent = 0
        self.bytes_sent = 0  # payload
        self.wire_bytes_sent = 0  # with every header: what the budget counts

    def update_settings(self, settings: ProbeSettings) -> None:
        """New knobs; the budget already saved is kept (clipped to the new bucket)."""
        self.settings = settings

    def _too_short(self, estimate_bps: float | None, lower_bound: bool) -> bool:
        """The lower bound says the last train was too short to time: it is no lower than
        the rate that train was sized for (what a train too short shows, or none at all). A
        bound under it came from elsewhere (the frames' throughput, a sender too slow to fill
        the link): a longer train would show no more, and the doubling would only spend the
        budget on trains that hold the link longer."""
        return (lower_bound and self._last_train_bytes > 0
                and (estimate_bps is None or estimate_bps >= self._last_sized_bps))

    def train_bytes(self, estimate_bps: float | None, lower_bound: bool = False) -> int:
        """Payload bytes of a train sized for ``estimate_bps`` (None: no estimate yet); twice
        the last train when the estimate is a lower bound the last train was too short to
        time (:meth:`_too_short`)."""
        s = self.settings
        rate = self._rate(estimate_bps, lower_bound)
        wanted = max(s.headroom * rate * s.train_s / 8.0, s.min_train_bytes)
        if self._too_short(estimate_bps, lower_bound):
            # At most 8× the size for the estimate: three doublings reach past a burst
            # allowance that hid the rate, and nothing is gained beyond (a link whose trains
            # never come back, e.g. no probe echo, stays probed at a bounded size).
            doubled = min(2.0 * self._last_train_bytes, 8.0 * wanted)
            if self._measured is not None:
                # Never so long that the slow-link rule would hold it back: a link measured
                # slow whose measurement merely lapsed is probed again, not silenced.
                doubled = min(doubled, self._measured * s.max_train_s / 8.0)
            wanted = max(wanted, doubled)
        return int(min(wanted, s.max_train_bytes))

    def _rate(self, estimate_bps: float | None, lower_bound: bool) -> float:
        """What trains are sized and budgeted for: a measured capacity as it is; a lower
        bound (or nothing) no lower than ``floor_bps``."""
        if estimate_bps is not None and not lower_bound:
            return float(estimate_bps)
        return max(estimate_bps or 0.0, self.settings.floor_bps)

    def _budget_rate(self, estimate_bps: float | None, lower_bound: bool,
                     stale: bool = False) -> float:
        """What the budget is a fraction of: as :meth:`_rate`, but a lower bound under the last
        capacity measured is what the frames carried, not a slower link, and the budget stays
        that capacity's; a silence cap (``stale``) is budgeted at ``floor_bps``, or at the last
        capacity measured when that was slower (module docstring)."""
        if stale:
            return min(self._last_capacity or self.settings.floor_bps, self.settings.floor_bps)
        if lower_bound and self._measured is not None:
            return max(estimate_bps or 0.0, self._measured)
        return self._rate(estimate_bps, lower_bound)

    def _shape(self, total: int) -> tuple[int, int]:
        s = self.settings
        packets = max(s.min_packets, math.ceil(total / s.max_packet_bytes))
        packets = min(packets, s.max_packets, max(total // s.min_packet_bytes, 2))
        return packets, max(64, min(total // packets, s.max_packet_bytes))

    @staticmethod
    def _wire_cost(train: int, packets: int, packet_bytes: int) -> int:
        """Bytes the train occupies on the link: what the budget pays (module docstring)."""
        text = len(probe_format(train, packets - 1, packets))
        return packets * wire_bytes(packet_bytes, text)

    def check_link(self, now_s: float) -> None:
        """The frames crossed faster than the frames a little smaller than them did
        (:mod:`.estimator`): the link may have stepped up. The next train goes as soon as
        ``interval_s`` allows, on credit, as when the estimate rose, and even while the
        frames still count as queueing (the fraction is over the last second, and a link
        that got faster drains their queue; for ``SPED_UP_VALID_S``, since the fraction covers
        the last second)."""
        self._confirm = True
        self._sped_up_s = now_s

    def due(self, now_s: float, estimate_bps: float | None,
            lower_bound: bool = False, frames_queue: bool = False, *, stale: bool = False,
            link_idle: bool = False) -> ProbeTrain | None:
        """The train to send now, or None (too soon, the budget has not saved enough, or
        ``frames_queue``: the frames fill the link and measure it themselves, and a train
        would only take bandwidth from them). A returned train counts as sent.

        ``stale``: the estimate is a silence cap (nothing crossed the link lately), not a
        measurement: trains are sized as if nothing were known (``floor_bps``), never for a
        cap that falls towards 0 while the link is quiet, or no train would ever end the
        quiet; they are budgeted at the last capacity measured, if it was under
        ``floor_bps``, else at ``floor_bps`` (a link that went dark is not probed harder
        because it was fast).
        ``link_idle``: no frames use the link (the robot runs edge-only), so none can wait
        behind a train and a link measured slow is still probed (within the budget)."""
        s = self.settings
        budget_rate = self._budget_rate(estimate_bps, lower_bound, stale)
        if stale:
            estimate_bps, lower_bound = None, False  # unknown, but no train came back short
        budget_bytes_per_s = s.budget_fraction * budget_rate / 8.0
        size = self.train_bytes(estimate_bps, lower_bound)
        packets, packet_bytes = self._shape(size)
        payload = packets * packet_bytes
        cost = self._wire_cost(self._next_train, packets, packet_bytes)
        capacity = max(budget_bytes_per_s * s.budget_window_s, float(cost))
        if self._last_fill_s is None:
            self._tokens = capacity  # the first train goes at once: nothing is known yet
        else:
            self._tokens += budget_bytes_per_s * max(now_s - self._last_fill_s, 0.0)
        self._tokens = min(self._tokens, capacity)
        self._last_fill_s = now_s
        sped_up = self._sped_up_s is not None and now_s - self._sped_up_s <= SPED_UP_VALID_S
        if frames_queue and not sped_up:
            return None
        if self._last_train_s is not None and now_s - self._last_train_s < s.interval_s:
            return None
        if estimate_bps is not None and not lower_bound:
            if self._measured is not None and (estimate_bps >= s.confirm_rise * self._measured
                                               or estimate_bps * s.confirm_rise
                                               <= self._measured):
                # The link rose or fell (or a train mis-read it): check at once.
                self._confirm = True
            self._measured = self._last_capacity = estimate_bps
        elif (estimate_bps is not None and self._measured is not None
              and estimate_bps >= s.confirm_rise * self._measured):
            # The link carried more than the last measurement: it is out of date, and neither
            # the slow-link rule nor the cap on doubled trains holds for it any more; a train
            # measures the new rate at once. (A bound within confirm_rise of it is its noise:
            # reset by a bound 1 % above it, the measurement was gone when a train then read
            # a step up, and the train that checks a rise waited 1.5 s for the budget.)
            self._measured = None
            self._confirm = True
        if (not link_idle and self._measured is not None
                and 8.0 * cost / self._measured > s.max_train_s
                and self._last_train_s is not None
                and now_s - self._last_train_s < s.slow_recheck_s):
            return None  # a link measured too slow for a train: frames would wait behind it
        # A train too short to time (the estimate is a lower bound after one) is followed by
        # the doubled one at once, on credit: the bucket may owe one train, paid back before
        # the next. Otherwise a step up waits a whole budget period for its second train. A
        # rise is checked by a second train the same way (module docstring).
        on_credit = self._confirm or self._too_short(estimate_bps, lower_bound)
        credit = cost if on_credit and self._tokens >= 0 else 0
        if self._tokens + credit < cost:
            return None
        self._tokens -= cost
        self._confirm = False
        self._sped_up_s = None
        self._last_train_s = now_s
        self._last_train_bytes = payload
        self._last_sized_bps = 8.0 * payload / s.train_s  # the rate it lasts train_s at
        train = ProbeTrain(self._next_train, packets, packet_bytes)
        self._next_train += 1
        self.trains_sent += 1
        self.bytes_sent += payload
        self.wire_bytes_sent += cost
        return train


@dataclass(frozen=True)
class ProbePacket:
    """One received probe packet (a row of ``probe_receipts``)."""

    train: int
    index: int
    count: int
    nbytes: int  # on the wire (:func:`wire_bytes`)
    send_s: float
    receive_s: float


def probe_receipt_rows(packets: Iterable[ProbePacket]) -> list[float]:
    """Flat row-major values of a ``probe_receipts`` message."""
    out: list[float] = []
    for p in packets:
        out += [float(p.train), float(p.index), float(p.count), float(p.nbytes), p.send_s,
                p.receive_s]
    return out


def parse_probe_receipts(data: Sequence[float], label: str | None = None
                         ) -> tuple[list[ProbePacket], int]:
    """Rows of a ``probe_receipts`` message; returns ``(packets, rows_skipped)``. A wrong
    label or a length that is not a multiple of the row width raises ValueError; rows with
    non-finite values or impossible indices are skipped and counted."""
    if label is not None and label.replace(" ", "") != PROBE_RECEIPT_LABEL:
        raise ValueError(f"probe receipts label must be {PROBE_RECEIPT_LABEL!r}, got {label!r}")
    width = len(PROBE_RECEIPT_COLUMNS)
    if len(data) % width:
        raise ValueError(f"probe receipts hold {len(data)} values, not a multiple of {width}")
    packets: list[ProbePacket] = []
    skipped = 0
    for k in range(0, len(data), width):
        row = [float(v) for v in data[k:k + width]]
        train, index, count, nbytes, send_s, receive_s = row
        if (not all(math.isfinite(v) for v in row) or nbytes <= 0 or count < 2
                or not 0 <= index < count or index != int(index) or train < 0):
            skipped += 1
            continue
        packets.append(ProbePacket(int(train), int(index), int(count), int(nbytes), send_s,
                                   receive_s))
    return packets, skipped


@dataclass(frozen=True)
class TrainMeasurement:
    """What one train showed: ``rate_bps`` over its second half. ``lower_bound`` when that
    half arrived in less than ``min_span_s``: too fast to time, so the train was too short
    for this link (or passed inside a shaper's burst allowance); ``rate_bps`` is then only
    what such a train can resolve at most, not a measurement, and the next train should be
    longer."""

    train: int
    rate_bps: float
    lower_bound: bool
    receive_s: float  # arrival of the train's last packet (the cloud's clock)
    packets: int  # received
    sent: int  # in the train
    pairs: int  # gaps the rate is made of
    outliers: int  # gaps left out (the edge's own frames in between)
    bits: float  # in those gaps
    #: the packets arrived about as they were sent: the sender, not the link, set the pace
    sender_limited: bool = False
    #: arrival of the train's first packet (the cloud's clock): with ``receive_s``, the span
    #: the train held the link, which no frame pair across it may measure (:mod:`.estimator`)
    first_receive_s: float | None = None
    #: the receiver stamped the second half late (:func:`analyze_train`): no measurement, and
    #: the estimator leaves it out
    stamped_late: bool = False


def _gaps(packets: Sequence[ProbePacket], outlier_factor: float
          ) -> tuple[list[tuple[float, int, float]], int]:
    """(arrival gap, bytes, send gap) of consecutive arrivals of ``packets`` (sorted by
    arrival), the edge's own frames left out, and how many gaps were left out (module
    docstring). A long gap followed by a catch-up, a gap much shorter than the median, is no
    frame: the receiver stamped the packets after it late, in a bunch, and their gaps sum to
    the link's time as long as the long gap stays in."""
    gaps = [(b.receive_s - a.receive_s, b.nbytes, b.send_s - a.send_s)
            for a, b in itertools.pairwise(packets)]
    positive = sorted(g for g, _, _ in gaps if g > 0)
    median = positive[len(positive) // 2] if positive else 0.0
    limit = outlier_factor * median if median > 0 else math.inf
    kept = [gap for k, gap in enumerate(gaps)
            if gap[0] <= limit
            or (k + 1 < len(gaps) and gaps[k + 1][0] * outlier_factor < median)]
    return kept, len(gaps) - len(kept)


def _rate_of(part: list[tuple[float, int, float]]) -> tuple[float, float]:
    """(bits, arrival span) of some gaps."""
    return 8.0 * sum(n for _, n, _ in part), sum(g for g, _, _ in part)


def _send_span(part: list[tuple[float, int, float]]) -> float:
    """How long the sender took over some gaps (what a sender-limited train arrives in)."""
    return sum(max(d, 0.0) for _, _, d in part)


def analyze_train(packets: Sequence[ProbePacket], *, min_span_s: float = 0.001,
                  outlier_factor: float = 4.0, burst_factor: float = 1.3,
                  sender_factor: float = 1.25) -> TrainMeasurement | None:
    """The capacity one train shows (the module docstring says how), or None when fewer
    than three of its second-half packets arrived. ``packets`` are one train's rows, in any
    order."""
    if not packets:
        return None
    ordered = sorted(packets, key=lambda p: p.index)
    count = ordered[0].count
    middle = (count - 1) // 2
    tail = [p for p in ordered if p.index >= middle]
    if len(tail) < 3:
        return None
    tail.sort(key=lambda p: p.receive_s)
    kept, outliers = _gaps(tail, outlier_factor)
    bits, span = _rate_of(kept)
    # A burst allowance that reached into the second half makes its earlier gaps shorter
    # than its later ones: then only the later half of the gaps is the shaped rate.
    half = len(kept) // 2
    if half >= 2:
        early_bits, early_span = _rate_of(kept[:half])
        late_bits, late_span = _rate_of(kept[half:])
        if late_span > 0 and early_bits * late_span > burst_factor * late_bits * early_span:
            kept = kept[half:]
            bits, span = late_bits, late_span
    # Sent as slowly as it arrived: the arrival gaps are the sender's (module docstring).
    sender_limited = span >= min_span_s and span < sender_factor * _send_span(kept)
    rate = bits / max(span, min_span_s)
    stamped_late = _second_half_stamped_late(ordered, middle, rate, outlier_factor,
                                             sender_factor)
    lower = span < min_span_s or sender_limited or stamped_late
    return TrainMeasurement(ordered[0].train, rate, lower, tail[-1].receive_s, len(ordered),
                            count, len(kept), outliers, bits, sender_limited,
                            min(p.receive_s for p in ordered), stamped_late)


def _second_half_stamped_late(ordered: list[ProbePacket], middle: int, rate_bps: float,
                              outlier_factor: float, sender_factor: float) -> bool:
    """The second half read more than ``outlier_factor`` × faster than the first half, which
    the link (not the sender) spread out. No link does that: a burst allowance makes the
    *first* half the fast one, and a faster link speeds up both. A busy receiver does: it
    stamped the second half's packets late, together (beyond the papers)."""
    head = sorted((p for p in ordered if p.index <= middle), key=lambda p: p.receive_s)
    if len(head) < 3:
        return False
    kept, _ = _gaps(head, outlier_factor)
    bits, span = _rate_of(kept)
    return span > 0 and span >= sender_factor * _send_span(kept) and rate_bps * span > (
        outlier_factor * bits)
