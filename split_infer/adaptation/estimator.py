"""Bandwidth and RTT estimation from the cloud's per-frame receipts. No ROS in here.

The cloud publishes one receipt per received feature frame (:data:`RECEIPT_COLUMNS`): the
frame's size on the link (its data and every header around it: the shaper drains both, and a
small frame's headers are as large as its data), the edge's send stamp and the cloud's receive
stamp. That is the thesis's
"confirmation upon the reception of a chunk of tensor data ... the total number of bytes
received, a unique identifier ... and the time it is received at" (Ulhaq §4.3), and what
Hu & Krishnamachari's Algorithm 2 needs ("measure current bandwidth b_i"). Neither says how to
turn receipts into a bandwidth; this module does, as follows (all beyond the papers).

**Capacity from dispersion, only when frames queued.** The bottleneck is modelled as a FIFO that
drains at capacity ``C``: frame ``i`` leaves at ``dep_i = max(t_i, dep_{i-1}) + 8·s_i/C`` and
arrives ``prop`` later. When frame ``i`` was sent *before* frame ``i-1`` left the bottleneck
(``t_i < dep_{i-1}``) the two left back to back, so their arrival gap is exactly the
serialization time ``8·s_i/C``. The test is ``t_i < a_{i-1} − prop_hat``, with ``prop_hat`` the
minimum over the delay window of each earlier frame's *floor*: its one-way delay ``d_j = a_j −
t_j`` if it found the queue empty (propagation + its own serialization), or ``a_{j-1} − t_j``
(propagation + its wait) if it queued. Both are ``>= prop``, so a pair the test accepts really
was queued; and a queued frame's floor exceeds ``prop_hat`` by the test's own condition, so
queued frames can never lower it — no feedback from a misjudged pair. A standing queue would
still inflate a plain sliding minimum (every recent frame waited), so while frames keep queueing
the window stays anchored where the busy period began, for at most ``max_busy_s`` (if the path
delay grew meanwhile, a too small ``prop_hat`` only lets idle gaps count: an underestimate). The
window ages in *active* time — a gap longer than ``silence_min_s`` counts as ``silence_min_s`` —
so an outage does not flush the history and leave only frames that all queued behind it. Over
the pairs of the last ``window_s`` the capacity is ``Σ 8·s_i / Σ gap_i``: a ratio, not a mean of
per-pair rates, because the sum of consecutive gaps telescopes to first-to-last arrival, so
receive-stamp jitter of the frames in between cancels instead of inflating the estimate. The
ratio over the newest ``min_pairs`` pairs is taken instead when it is smaller, so a drop shows
within a few frames while a rise waits for the window: asymmetric on purpose, since an
overestimate is the costly error (frames queue and arrive stale). A pair whose sequence numbers
are not consecutive is no measurement (counted in ``pairs_across_loss``): the frame between them
may have used link time and never arrived (a shaper that drops a queued frame's last fragments,
a loss after the bottleneck), and its gap would read the link as slower — up to a third at 20 %
loss, and most right after a step down, when the queue overflows. A frame dropped whole before
the bottleneck costs only that pair. The test and the gaps use differences of stamps only, so
**capacity does not need synchronised clocks** (a constant edge–cloud offset cancels).

**Throughput is a lower bound, and reported as one.** When the link is not saturated, arrivals
mirror sends: the delivered rate ``Σ 8·s_i / (a_last − a_first)`` says how much the sender
offered, not what the link could carry. It is reported with ``lower_bound=True``. The last
dispersion measurement is *held* (``source="held"``) while the link stays unsaturated, because
nothing since has contradicted it: a capacity that dropped below the offered load would queue
frames and be measured at once; only a capacity *increase* goes unseen, so the value is also
flagged ``lower_bound``. If the delivered rate exceeds the held value, the held value is
obsolete and the throughput is reported instead. Nothing here invents capacity; whoever wants
to find out whether more is available must offer more: packet trains
(:mod:`.probing`, fed in with :meth:`BandwidthEstimator.add_probe`) or a larger configuration
(the scheduler's configuration probes, :mod:`.scheduling`).

**Probe trains.** A train's measurement (its second half's dispersion) is the capacity now,
``source="probe"``, not a lower bound, for ``probe_valid_s`` after it arrived (or twice the
interval between trains, if longer), and for as
long as no frame has arrived since (the trains are then the only traffic, and the newest one
is the newest word on the link until the silence test says it stopped). The frames'
own dispersion wins once ``min_pairs`` queued pairs arrived after the train (the frames then
measured the link anew, with every frame: after a step down, a train from before it is older
news); until then the train wins over the pairs still in the window, so a step up shows as
soon as a train crosses it, and one frame that happened to queue on the faster link does not
outvote it; once the frames stop altogether (a train more than ``silence_min_s`` after the
last frame), the trains win whatever the last frames showed. A frame pair around a train is no
measurement (``pairs_across_probe``): the frame behind the train queued behind it, and their
gap holds the train's bytes, not the frame's (the pair is taken back when the train's
measurement comes after the frame's receipt). A slow link's capacity may reach back past
``window_s`` for ``min_pairs`` pairs only while the newest ``min_pairs`` frames all queued:
one queued frame on a link that got faster would otherwise bring back the pairs of the slower
link. A train's value is floored at what the frames delivered since the train began, never
over the whole throughput window: after a step down that window still holds the frames from
before it, and held up a train that had measured the new link (beyond the papers, all of
it). A train too
short to time is no measurement: the estimate keeps its value, flagged as a lower bound, and
the planner doubles the next train. A train the receiver stamped late
(``TrainMeasurement.stamped_late``) measured nothing either, but no faster link: it is left
out and counted (``probe_trains_stamped_late``), and the last measurement stands. Probe
packets also count as traffic for
the silence test (with probing on and no frames, as when the edge classifies by itself, the
link is not silent), with a threshold of at least twice the interval between trains.

**A faster link shows in the frames' delay first.** Frames that do not fill the link cannot say
how fast it is, but a step up shortens every frame's serialization, so a frame after it crosses
faster, by more than ``faster_margin_s``, than every frame of the delay window
(``rtt_window_s``, active time) that was a little smaller (2–8 %): on the same link such a
frame took no longer than this one would have. Not the smallest frames of all: a shaper's burst
allowance lets a frame's first bytes through at line rate, so only the bytes beyond it take the
link's time: in five seeded simulations of a 1-Mbit/s link with a 4-kB burst and frames of
4.5–7 kB, the plain minimum was first beaten 0.125–1.25 s after a step to 4 Mbit/s, by a small
frame, and the frames a little smaller than the first frames after it within 0.125 s
(``test/test_probing.py``). Two such frames within five are counted once (``faster_frames``;
one alone was chance 31–71 times in a 75-s run of the testbed's step trace,
``bench/README.md``) and the monitor passes the count on, so the prober checks the link with a
train at once instead of when its budget next allows one (at a 1-Mbit/s estimate, up to 1.8 s
later). Frames of one size alone (no smaller ones to compare with) show nothing; two frames
that are faster than the smaller ones by chance cost a train sent earlier than planned, never
more bytes (beyond the papers).

**Silence.** If no receipt has arrived for longer than ``max(silence_min_s, silence_factor ×
the mean inter-arrival)``, the link may be down (an outage) or the sender idle; the two look the
same from here. The estimate is then capped at "one typical frame in the silence",
``8·s_last / silence``, which falls towards 0 as the silence lasts (``source="silence"``,
``stale=True``), so the planner moves to the most compressed configuration during an outage.
After the outage the queued frames drain back to back and re-measure the capacity.

**Server-bound pairs are not link measurements.** If the cloud's receive stamp is taken in its
subscription callback, a busy cloud delays it; two frames stamped ``cloud_ms`` apart measured the
server, not the link. Pairs with ``gap <= cloud_s_{i-1} + server_margin_s`` are skipped
(counted in ``server_bound_pairs``).

**RTT** = ``2 × prop_hat``, the same corrected minimum the queueing test uses: over the window,
the one-way delay ``d_i`` (receive − send stamp) of a frame that found the queue empty, or
``a_{i-1} − t_i`` (propagation plus its wait) for one that queued. When the capacity is measured
now, the serialization ``8·s/C`` of the minimum's frame is taken off, which the latency model
counts separately as ``D/B``. What is left is the propagation delay without the queue the sender
built itself, doubled for the way back, where only a small result travels. Without a measured
capacity the RTT errs high by up to two serializations — the safe side for a latency budget.
It needs synchronised clocks (true in-process, and with chrony/PTP between machines); a
negative one-way delay flags ``clock_suspect``.

Times are seconds; sizes bytes in, bits/s out. The estimator is a pure class: every clock value
is passed in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from split_infer.adaptation.probing import TrainMeasurement

__all__ = [
    "RECEIPT_COLUMNS",
    "RECEIPT_LABEL",
    "BandwidthEstimate",
    "BandwidthEstimator",
    "EstimatorConfig",
    "Receipt",
    "ReceiptError",
    "parse_receipts",
    "receipt_rows",
]

#: Columns of the cloud's ``receipts`` topic (``std_msgs/Float64MultiArray``), one row per frame.
RECEIPT_COLUMNS: tuple[str, ...] = (
    "seq", "bytes", "send_stamp_s", "receive_stamp_s", "split_point", "ratio", "cloud_ms",
)
#: ``layout.dim[0].label`` of a receipts message.
RECEIPT_LABEL = ",".join(RECEIPT_COLUMNS)


class ReceiptError(ValueError):
    """A receipts message does not have the documented layout."""


@dataclass(frozen=True)
class Receipt:
    """One received frame, in seconds and bytes."""

    seq: int
    nbytes: int
    send_s: float
    receive_s: float
    split_point: int = -1
    ratio: float = 0.0
    cloud_s: float = 0.0

    @property
    def delay_s(self) -> float:
        """One-way delay, receive − send stamp (needs synchronised clocks to mean anything)."""
        return self.receive_s - self.send_s


def parse_receipts(data: Sequence[float], label: str | None = None) -> tuple[list[Receipt], int]:
    """Rows of a receipts message; returns ``(receipts, rows_skipped)``.

    ``label`` is ``layout.dim[0].label`` (``None`` skips the check). A wrong label or a length
    that is not a multiple of 7 raises :class:`ReceiptError`; rows with a non-finite value,
    ``bytes <= 0`` or a negative ``cloud_ms`` are skipped and counted.
    """
    if label is not None and label.replace(" ", "") != RECEIPT_LABEL:
        raise ReceiptError(f"receipts label must be {RECEIPT_LABEL!r}, got {label!r}")
    width = len(RECEIPT_COLUMNS)
    if len(data) % width:
        raise ReceiptError(f"receipts hold {len(data)} values, not a multiple of {width}")
    receipts: list[Receipt] = []
    skipped = 0
    for k in range(0, len(data), width):
        seq, nbytes, send_s, receive_s, split_point, ratio, cloud_ms = (
            float(v) for v in data[k:k + width]
        )
        if not all(math.isfinite(v) for v in (seq, nbytes, send_s, receive_s, split_point,
                                               ratio, cloud_ms)) or nbytes <= 0 or cloud_ms < 0:
            skipped += 1
            continue
        receipts.append(Receipt(int(seq), int(nbytes), send_s, receive_s, int(split_point),
                                ratio, cloud_ms / 1e3))
    return receipts, skipped


def receipt_rows(receipts: Iterable[Receipt]) -> list[float]:
    """The inverse of :func:`parse_receipts`: flat row-major values for a message."""
    out: list[float] = []
    for r in receipts:
        out += [float(r.seq), float(r.nbytes), r.send_s, r.receive_s, float(r.split_point),
                float(r.ratio), r.cloud_s * 1e3]
    return out


@dataclass(frozen=True)
class EstimatorConfig:
    """Tuning of :class:`BandwidthEstimator` (seconds)."""

    window_s: float = 1.0  # capacity and throughput window
    max_window_s: float = 10.0  # how far back a slow, still-saturated link may reach
    min_pairs: int = 3  # queued pairs needed for a capacity measurement
    rtt_window_s: float = 10.0  # min-filter window of the one-way delay
    max_busy_s: float = 60.0  # how long a busy period may hold that window's start
    silence_min_s: float = 1.0
    silence_factor: float = 4.0  # × mean inter-arrival
    server_margin_s: float = 0.001
    probe_valid_s: float = 4.0  # a probe train's measurement counts this long
    faster_margin_s: float = 0.002  # a frame this far under the delay floor shows a faster link

    def __post_init__(self) -> None:
        if not 0 < self.window_s <= self.max_window_s:
            raise ValueError("need 0 < window_s <= max_window_s")
        if self.min_pairs < 1:
            raise ValueError("min_pairs must be >= 1")
        if min(self.rtt_window_s, self.silence_min_s, self.silence_factor) <= 0:
            raise ValueError("rtt_window_s, silence_min_s and silence_factor must be > 0")
        if self.max_busy_s < 0:
            raise ValueError("max_busy_s must be >= 0")
        if self.server_margin_s < 0:
            raise ValueError("server_margin_s must be >= 0")
        if not self.probe_valid_s > 0:
            raise ValueError("probe_valid_s must be > 0")
        if self.faster_margin_s < 0:
            raise ValueError("faster_margin_s must be >= 0")


@dataclass(frozen=True)
class BandwidthEstimate:
    """What the estimator knows now.

    ``bandwidth_bps`` is the value to plan with (``None`` until there is one). ``lower_bound``
    says the true capacity may be higher than it (no saturation in the window). ``source`` is
    ``"dispersion"`` (measured capacity), ``"held"`` (last measurement, link unsaturated
    since), ``"throughput"`` (delivered rate only), ``"probe"`` (a train's measurement),
    ``"probe_bound"`` (a train the link carried faster than anything else showed, but too
    short to time or sent too slowly to fill the link: a lower bound) or ``"silence"`` (capped
    during silence).

    The rest, for diagnostics: ``capacity_bps`` (dispersion in the window, or None),
    ``held_capacity_bps`` (last measured), ``throughput_bps`` (delivered rate in the window),
    ``rtt_s``, ``base_delay_s`` (one-way delay of the frame that set the propagation floor),
    ``one_way_delay_s`` (newest frame), ``pairs`` (queued pairs behind ``capacity_bps``),
    ``receipts`` and ``queued_fraction`` (in the window; 0 once the frames stopped),
    ``silence_s`` (since the last receipt, caller's clock), ``stale`` (silence),
    ``clock_suspect`` (negative one-way delay).
    """

    bandwidth_bps: float | None
    lower_bound: bool
    source: str
    capacity_bps: float | None
    held_capacity_bps: float | None
    throughput_bps: float | None
    rtt_s: float | None
    base_delay_s: float | None
    one_way_delay_s: float | None
    pairs: int
    receipts: int
    queued_fraction: float
    silence_s: float
    stale: bool
    clock_suspect: bool


#: Frame-size classes per doubling of the size for ``faster_frames`` (2.2 % apart), and how
#: many classes below its own a frame is compared with (frames 2–8 % smaller).
_SIZE_CLASSES_PER_DOUBLING = 32
_SMALLER_CLASSES = 4
#: After a frame that beat the floor, how many frames may pass before another one must.
_HELD_FRAMES = 4


@dataclass(frozen=True)
class _Sample:
    receive_s: float
    bits: float
    delay_s: float
    cloud_s: float


class _MinWindow:
    """Sliding-window minimum (monotonic deque), O(1) amortised per sample. Queries must use
    non-decreasing window starts (older entries are dropped for good)."""

    def __init__(self) -> None:
        self._q: deque[tuple[float, float, tuple[float, float]]] = deque()  # (t, value, payload)

    def push(self, t: float, value: float, payload: tuple[float, float]) -> None:
        while self._q and self._q[-1][1] >= value:
            self._q.pop()
        self._q.append((t, value, payload))

    def min_since(self, t_from: float) -> tuple[float, tuple[float, float]] | None:
        """``(value, payload)`` of the minimum over entries at ``t >= t_from``."""
        while self._q and self._q[0][0] < t_from:
            self._q.popleft()
        return (self._q[0][1], self._q[0][2]) if self._q else None


class BandwidthEstimator:
    """Capacity, delivered throughput and RTT from receipts (design in the module docstring).

    Feed receipts with :meth:`add` (or :meth:`add_many`) in arrival order, ask with
    :meth:`estimate`. ``now_s`` arguments are the caller's clock, used only to measure silence;
    windows are anchored at the newest receive stamp, so the caller's clock and the cloud's need
    not agree for the bandwidth.
    """

    _SEEN_MEMORY = 4096

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        self.config = config or EstimatorConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything (counters included)."""
        self._samples: deque[_Sample] = deque()
        # (receive_s, bits, gap_s, consecutive: no sequence number missing in between)
        self._pairs: deque[tuple[float, float, float, bool]] = deque()
        self._min_delay = _MinWindow()
        self._size_floors: dict[int, _MinWindow] = {}  # size class → one-way delays
        # Since a frame beat the smaller frames' floor: (size class, active s, delay) each
        self._held_frames: list[tuple[int, float, float]] = []
        self._last: _Sample | None = None
        self._last_seq: int | None = None
        self._last_queued = False
        self._queued_run = 0  # frames in a row, up to the newest, that queued behind frames
        self._train_spans: deque[tuple[float, float]] = deque()  # (first, last) probe arrival
        self._busy_since: float | None = None
        self._active_s = 0.0
        self._last_local_s: float | None = None
        self._held: float | None = None
        self._seen_order: deque[tuple[int, float]] = deque()
        self._seen: set[tuple[int, float]] = set()
        self._probe: TrainMeasurement | None = None
        self._probe_local_s: float | None = None
        self._probe_gap_s = 0.0  # local time between the last two trains
        self.probe_trains = 0
        self.probe_trains_stamped_late = 0  # trains left out (the receiver stamped them late)
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.queued_pairs = 0
        self.server_bound_pairs = 0
        self.pairs_across_loss = 0
        self.pairs_across_probe = 0
        self.faster_frames = 0

    def reconfigure(self, config: EstimatorConfig) -> None:
        """New tuning; history is kept."""
        self.config = config

    # -- input -------------------------------------------------------------------------------
    def add_many(self, receipts: Iterable[Receipt], now_s: float | None = None) -> None:
        """Add a batch, sorted by receive stamp first."""
        for receipt in sorted(receipts, key=lambda r: r.receive_s):
            self.add(receipt, now_s)

    def add(self, receipt: Receipt, now_s: float | None = None) -> None:
        """Add one receipt. ``now_s`` is the caller's clock now (default: the receive stamp)."""
        # A duplicate is the same frame twice: same seq *and* send stamp (an edge that
        # restarts numbers its frames from 0 again; those are new frames).
        key = (receipt.seq, receipt.send_s)
        if key in self._seen:
            self.duplicates += 1
            return
        self._remember(key)
        if self._last is not None and receipt.receive_s < self._last.receive_s:
            # One subscription stamps in arrival order; anything else cannot be placed in the
            # FIFO model, so it is only counted.
            self.out_of_order += 1
            return
        self.received += 1
        self._last_local_s = receipt.receive_s if now_s is None else now_s
        cfg = self.config
        sample = _Sample(receipt.receive_s, 8.0 * receipt.nbytes, receipt.delay_s,
                         receipt.cloud_s)
        previous = self._last
        # The delay history ages in *active* time: a gap longer than silence_min_s counts as
        # silence_min_s, so an outage does not flush the pre-outage delays and leave only
        # frames that all queued behind it.
        if previous is not None:
            self._active_s += min(sample.receive_s - previous.receive_s, cfg.silence_min_s)
        # prop_hat from the frames before this one: this frame's own delay would make the test
        # below impossible to pass.
        base = self._min_delay.min_since(self._prop_window_start(self._active_s))
        self._last_queued = False
        queued_run, self._queued_run = self._queued_run, 0
        # What this frame tells about the propagation delay: its whole one-way delay if it found
        # the queue empty (its serialization included: unknown, so left in), or, if it queued,
        # a_{i-1} - t_i = prop + the time it waited. The latter exceeds prop_hat by the test's
        # own condition, so a queued frame can never pull prop_hat down: no feedback loop.
        floor, unsubtracted_bits = sample.delay_s, sample.bits
        self._count_if_faster(sample)
        if previous is not None and base is not None:
            gap = sample.receive_s - previous.receive_s
            queued = receipt.send_s < previous.receive_s - base[0]
            if not queued:
                self._busy_since = None
            else:
                floor, unsubtracted_bits = previous.receive_s - receipt.send_s, 0.0
                across_probe = self._spans_a_train(previous.receive_s, sample.receive_s)
                if not across_probe:
                    self._queued_run = queued_run + 1
                if gap <= 0:
                    pass  # same stamp: no dispersion to measure
                elif previous.cloud_s > 0 and gap <= previous.cloud_s + cfg.server_margin_s:
                    self.server_bound_pairs += 1
                elif across_probe:
                    self.pairs_across_probe += 1
                else:
                    consecutive = receipt.seq == self._last_seq + 1
                    self.pairs_across_loss += not consecutive
                    self._pairs.append((sample.receive_s, sample.bits, gap, consecutive))
                    self.queued_pairs += 1
                    self._last_queued = True
                    if self._busy_since is None:
                        self._busy_since = self._active_s
        self._min_delay.push(self._active_s, floor, (sample.delay_s, unsubtracted_bits))
        self._samples.append(sample)
        self._last = sample
        self._last_seq = receipt.seq
        self._trim(sample.receive_s)
        capacity, _ = self._capacity(sample.receive_s)
        if capacity is not None:
            self._held = capacity

    def _count_if_faster(self, sample: _Sample) -> None:
        """Count ``sample`` in ``faster_frames`` when it and one of the ``_HELD_FRAMES``
        frames before it each crossed faster than every frame of the last ``rtt_window_s``
        (active time) a little smaller than it (the ``_SMALLER_CLASSES`` size classes below
        its own): on the same link such a frame took no longer than this one would have,
        waits or not, so the link got faster (or the path shorter). One such frame alone is
        often chance (the smaller frames found the shaper's bucket less full, or the robot's
        CPU quota delayed their sending): on the testbed's step trace single frames did it
        31–71 times a run.
        Frames that do not fill the link cannot measure how much faster; a train can."""
        size_class = int(math.log2(max(sample.bits, 1.0)) * _SIZE_CLASSES_PER_DOUBLING)
        start = self._active_s - self.config.rtt_window_s
        floor = math.inf
        for smaller in range(size_class - _SMALLER_CLASSES, size_class):
            window = self._size_floors.get(smaller)
            found = None if window is None else window.min_since(start)
            if found is not None:
                floor = min(floor, found[0])
        faster = math.isfinite(floor) and sample.delay_s < floor - self.config.faster_margin_s
        entry = (size_class, self._active_s, sample.delay_s)
        if self._held_frames:
            # A frame beat the floor lately: the frames since stay out of the floors (against
            # them, the faster link's next frames would look like no change) until another
            # one beats it too, or _HELD_FRAMES have not.
            self._held_frames.append(entry)
            if faster or len(self._held_frames) > _HELD_FRAMES:
                self.faster_frames += faster
                self._release_held_frames()
            return
        if faster:
            self._held_frames.append(entry)
            return
        self._push_floor(entry)

    def _release_held_frames(self) -> None:
        for entry in self._held_frames:
            self._push_floor(entry)
        self._held_frames.clear()

    def _push_floor(self, entry: tuple[int, float, float]) -> None:
        size_class, active_s, delay_s = entry
        window = self._size_floors.setdefault(size_class, _MinWindow())
        window.push(active_s, delay_s, (0.0, 0.0))
        # Trimmed here too: a class no frame is compared with would otherwise keep every
        # rising delay (a drifting clock) for good.
        window.min_since(self._active_s - self.config.rtt_window_s)

    def add_probe(self, measurement: TrainMeasurement, now_s: float | None = None) -> None:
        """A probe train's measurement (:func:`~split_infer.adaptation.probing.analyze_train`).
        ``now_s`` is the caller's clock (default: the train's last arrival); an older train
        than the newest one seen is ignored."""
        if self._probe is not None and measurement.receive_s <= self._probe.receive_s:
            return
        if measurement.first_receive_s is not None:
            # Whatever the train measured, a frame pair across it met its bytes.
            self._forget_pairs_across(measurement.first_receive_s, measurement.receive_s)
        if measurement.stamped_late:
            # Its timing is the receiver's, not the link's: it measured nothing, and the last
            # measurement stands.
            self.probe_trains_stamped_late += 1
            return
        local = measurement.receive_s if now_s is None else now_s
        if self._probe_local_s is not None:
            self._probe_gap_s = max(local - self._probe_local_s, 0.0)
        self._probe, self._probe_local_s = measurement, local
        self.probe_trains += 1
        if not measurement.lower_bound:
            self._held = measurement.rate_bps

    def _spans_a_train(self, start_s: float, end_s: float) -> bool:
        """A probe train arrived between two frames that arrived at ``start_s`` and ``end_s``."""
        return any(first < end_s and last > start_s for first, last in self._train_spans)

    def _forget_pairs_across(self, first_s: float, last_s: float) -> None:
        """A train arrived over ``first_s``…``last_s``: a frame pair around it measured the
        train's bytes as its own gap (the frame behind it queued behind the train), so it is
        no measurement; its receipt may have come before the train's, so it is taken back."""
        self._train_spans.append((first_s, last_s))
        while self._train_spans and self._train_spans[0][1] < last_s - self.config.max_window_s:
            self._train_spans.popleft()
        kept = [p for p in self._pairs if not (p[0] - p[2] < last_s and p[0] > first_s)]
        removed = len(self._pairs) - len(kept)
        if not removed:
            return
        if self._last_queued and (not kept or kept[-1][0] != self._pairs[-1][0]):
            # The newest frame's pair (the newest pair) was one of them: it queued behind the
            # train.
            self._last_queued = False
            self._queued_run = 0
        self.pairs_across_probe += removed
        self.queued_pairs -= removed
        self._pairs = deque(kept)

    def _fresh_probe(self, now_s: float | None) -> TrainMeasurement | None:
        """The newest train, while it counts: for ``probe_valid_s``, or for as long as no
        frame arrived after it (only trains cross the link)."""
        if self._probe is None or self._probe_local_s is None:
            return None
        # Until the next train is overdue: on a slow link the budget spaces trains further
        # apart than probe_valid_s, and a measurement that lapsed between them would read
        # as a lower bound (and make the prober double a train the link has no room for).
        valid_s = max(self.config.probe_valid_s, 2.0 * self._probe_gap_s)
        if (now_s is not None and now_s - self._probe_local_s > valid_s
                and self._last_local_s is not None
                and self._last_local_s >= self._probe_local_s):
            return None
        return self._probe

    def _frames_stopped_before_probe(self, cfg: EstimatorConfig) -> bool:
        """The newest train came more than ``silence_min_s`` after the last frame: the frames
        stopped (the robot runs edge-only), whatever their last pairs showed."""
        return (self._probe_local_s is not None and self._last_local_s is not None
                and self._probe_local_s - self._last_local_s > cfg.silence_min_s)

    def _prop_window_start(self, active_s: float) -> float:
        """Start of the delay window, in active time."""
        cfg = self.config
        start = active_s - cfg.rtt_window_s
        if self._busy_since is not None:
            start = max(min(start, self._busy_since - cfg.rtt_window_s),
                        active_s - cfg.rtt_window_s - cfg.max_busy_s)
        return start

    def _remember(self, key: tuple[int, float]) -> None:
        self._seen_order.append(key)
        self._seen.add(key)
        if len(self._seen_order) > self._SEEN_MEMORY:
            self._seen.discard(self._seen_order.popleft())

    def _trim(self, latest: float) -> None:
        horizon = latest - self.config.max_window_s
        while self._samples and self._samples[0].receive_s < horizon:
            self._samples.popleft()
        while self._pairs and self._pairs[0][0] < latest - self.config.max_window_s:
            self._pairs.popleft()

    # -- measurements ------------------------------------------------------------------------
    @staticmethod
    def _newer_than(items: deque, t_from: float) -> list:
        """Items (time-ordered, time first) with time > ``t_from``; walks from the new end."""
        out = []
        for item in reversed(items):
            if (item[0] if isinstance(item, tuple) else item.receive_s) <= t_from:
                break
            out.append(item)
        out.reverse()
        return out

    def _capacity(self, latest: float) -> tuple[float | None, int]:
        """The capacity the queued pairs show (None under ``min_pairs``), floored at what was
        delivered over the same span, and the number of pairs in the window."""
        cfg = self.config
        recent = self._newer_than(self._pairs, latest - cfg.window_s)
        if len(recent) < cfg.min_pairs and self._queued_run >= cfg.min_pairs:
            # A slow link that is still saturated (the newest frames all queued): reach back
            # for min_pairs pairs. One frame that queued on a link that got faster must not
            # bring back pairs from before.
            recent = list(self._pairs)[-cfg.min_pairs:]
        if len(recent) < cfg.min_pairs:
            return None, len(recent)
        used = [p for p in recent if p[3]]
        if len(used) < cfg.min_pairs:
            used = recent  # too few without a loss between: an underestimate, never an over
        window = sum(p[1] for p in used) / sum(p[2] for p in used)
        # A drop shows in the newest pairs before it dominates the window; take the smaller.
        newest = used[-cfg.min_pairs:]
        fast = sum(p[1] for p in newest) / sum(p[2] for p in newest)
        if fast < window:
            window, used = fast, newest
        # The frames delivered over the same span are a floor (a gap that held other traffic
        # reads the link slower). Over a longer span, such as the throughput window, they would
        # hold a drop up: what crossed before it was faster.
        delivered = self._delivered_since(used[0][0] - used[0][2])
        return max(window, delivered or 0.0), len(recent)

    def _window_samples(self, latest: float) -> list[_Sample]:
        recent = self._newer_than(self._samples, latest - self.config.window_s)
        if len(recent) < 2:
            recent = list(self._samples)[-2:]  # the deque already stops at max_window_s
        return recent

    def _delivered_since(self, start_s: float) -> float | None:
        """What the frames received after ``start_s`` delivered since then (None: none)."""
        since = self._newer_than(self._samples, start_s)
        if not since or since[-1].receive_s <= start_s:
            return None
        return sum(s.bits for s in since) / (since[-1].receive_s - start_s)

    def _throughput(self, latest: float) -> tuple[float | None, list[_Sample]]:
        recent = self._window_samples(latest)
        if len(recent) < 2:
            return None, recent
        span = recent[-1].receive_s - recent[0].receive_s
        if span <= 0:
            return None, recent
        return sum(s.bits for s in recent[1:]) / span, recent

    def _frame_silence_threshold(self, recent: list[_Sample]) -> float:
        """How long without a frame counts as the frames having stopped."""
        cfg = self.config
        mean_gap = ((recent[-1].receive_s - recent[0].receive_s) / (len(recent) - 1)
                    if len(recent) >= 2 else 0.0)
        return max(cfg.silence_min_s, cfg.silence_factor * mean_gap)

    def _silence(self, now_s: float | None, recent: list[_Sample]) -> tuple[float, float]:
        """Seconds without any receipt (frame or probe train) and how long counts as
        silence."""
        cfg = self.config
        heard = [t for t in (self._last_local_s, self._probe_local_s) if t is not None]
        if now_s is None or not heard:
            return 0.0, math.inf
        silence = max(now_s - max(heard), 0.0)
        threshold = self._frame_silence_threshold(recent)
        if self._probe_local_s is not None and (
                self._last_local_s is None or self._probe_local_s > self._last_local_s):
            # Only trains cross the link: silence is a train that does not come (before the
            # second train, the interval is unknown: a measurement's validity stands in).
            gap = self._probe_gap_s
            threshold = max(threshold, 2.0 * gap if gap > 0 else cfg.probe_valid_s)
        return silence, threshold

    def _probe_only(self, probe: TrainMeasurement, now_s: float | None) -> BandwidthEstimate:
        """The estimate before any frame: what the trains show."""
        silence, threshold = self._silence(now_s, [])
        value, stale = self._held, silence > threshold
        if stale:
            bound = probe.bits / max(silence, 1e-9)
            value = bound if value is None else min(value, bound)
        fresh = self._fresh_probe(now_s) is not None
        source = "silence" if stale else "probe" if fresh and value is not None else "held"
        lower = not stale and (value is None or not fresh or probe.lower_bound)
        if lower and fresh and probe.lower_bound and (value is None or probe.rate_bps > value):
            value, source = probe.rate_bps, "probe_bound"  # see estimate()
        return BandwidthEstimate(value, lower, source, None, self._held, None, None, None,
                                 None, 0, 0, 0.0, silence, stale, False)

    def estimate(self, now_s: float | None = None) -> BandwidthEstimate:
        """The current estimate. ``now_s`` (the caller's clock, as passed to :meth:`add`)
        measures silence; without it there is none."""
        cfg = self.config
        probe = self._fresh_probe(now_s)
        if self._last is None:
            if self._probe is None:
                return BandwidthEstimate(None, True, "none", None, None, None, None, None,
                                         None, 0, 0, 0.0, 0.0, False, False)
            return self._probe_only(self._probe, now_s)
        latest = self._last.receive_s
        capacity, pairs = self._capacity(latest)
        throughput, recent = self._throughput(latest)
        # A train is the newest measurement until the frames have made a whole one after it
        # (min_pairs queued pairs): after a step down, a train from before it is then older
        # news; after a step up, a frame that happened to queue does not outvote it.
        probe_newer = probe is not None and (
            self._frames_stopped_before_probe(cfg)
            or len(self._newer_than(self._pairs, probe.receive_s)) < cfg.min_pairs)
        if capacity is not None and (not probe_newer or probe.lower_bound):
            # (A newer train too short to time, or sent too slowly, measured nothing: the
            # frames' pairs still did. Through a refilled burst allowance such a train reads
            # several times the link, and as the estimate it would size the next train for
            # that, long enough to hold up the frames behind it.)
            value: float | None = capacity
            source, lower = "dispersion", False
        elif probe_newer and not probe.lower_bound:
            # A train the frames' pairs have superseded is older news than the held value,
            # which they measured: after a step down, a train from before it would otherwise
            # come back whenever too few pairs are left in the window.
            # What the frames delivered since the train began is a floor (the train may have
            # met other traffic); over the whole window it would hold a step down up with what
            # crossed before it.
            value = max(probe.rate_bps, self._delivered_since(probe.first_receive_s) or 0.0)
            source, lower = "probe", False
        elif self._held is not None and (throughput is None or throughput <= self._held):
            value, source, lower = self._held, "held", True
        elif throughput is not None:
            value, source, lower = throughput, "throughput", True
        else:
            value, source, lower = None, "none", True
        if (lower and probe_newer and probe.lower_bound
                and (value is None or probe.rate_bps > value)):
            # The link carried a train faster than the held measurement or the frames show:
            # at least that fast now, and a measurement it exceeds is out of date (the prober
            # would otherwise keep sizing trains for it, too short to time on the faster
            # link). A train inside a burst allowance overstates the rate; the next train,
            # sized for this bound, outlasts the burst and corrects it. Not a train the frames
            # have measured the link after: after a step down, one from before it would say
            # "at least 8 Mbit/s" of a 1-Mbit/s link for as long as it is fresh.
            value, source = probe.rate_bps, "probe_bound"

        silence, threshold = self._silence(now_s, recent)
        stale = silence > threshold
        if stale:
            bound = self._last.bits / silence
            value = bound if value is None else min(value, bound)
            source, lower = "silence", False

        base = self._min_delay.min_since(self._prop_window_start(self._active_s))
        rtt = None
        if base is not None:
            floor, (_, bits) = base
            if capacity is not None:
                floor -= bits / capacity  # that frame's serialization, now that C is known
            rtt = 2.0 * max(floor, 0.0)
        in_window = [s for s in recent if s.receive_s > latest - cfg.window_s]
        window_pairs = len(self._newer_than(self._pairs, latest - cfg.window_s))
        queued_fraction = window_pairs / (len(in_window) - 1) if len(in_window) > 1 else 0.0
        if (now_s is not None and self._last_local_s is not None
                and now_s - self._last_local_s > self._frame_silence_threshold(recent)):
            # The frames stopped (edge-only, or an outage): none queue now, whatever the last
            # ones did, so the prober may measure the link again.
            queued_fraction = 0.0
        return BandwidthEstimate(
            bandwidth_bps=value,
            lower_bound=lower,
            source=source,
            capacity_bps=capacity,
            held_capacity_bps=self._held,
            throughput_bps=throughput,
            rtt_s=rtt,
            base_delay_s=None if base is None else base[1][0],
            one_way_delay_s=self._last.delay_s,
            pairs=pairs,
            receipts=len(in_window),
            queued_fraction=min(queued_fraction, 1.0),
            silence_s=silence,
            stale=stale,
            clock_suspect=base is not None and base[1][0] < 0,
        )
