"""Active capacity probing (split_infer.adaptation.probing) and its use by the estimator."""

from __future__ import annotations

import itertools
import math

import pytest

from split_infer.adaptation.estimator import BandwidthEstimator, Receipt
from split_infer.adaptation.probing import (
    PROBE_RECEIPT_LABEL,
    QUEUED_ENOUGH,
    SPED_UP_VALID_S,
    ProbePacket,
    ProbePlanner,
    ProbeSettings,
    analyze_train,
    parse_probe_format,
    parse_probe_receipts,
    probe_format,
    probe_receipt_rows,
    wire_bytes,
)
from split_infer.tools.link import LinkShaper, step_trace


class TokenBucket:
    """``tc tbf``: a bucket of ``burst`` bytes refilled at ``rate_bps``; a packet leaves when
    the bucket holds its size (FIFO), at line rate otherwise."""

    def __init__(self, rate_bps: float, burst: int, line_bps: float = 1e9) -> None:
        self.rate, self.burst, self.line = rate_bps, burst, line_bps
        self.tokens, self.t, self.free_s = float(burst), 0.0, 0.0

    def send(self, now_s: float, nbytes: int) -> float:
        start = max(now_s, self.free_s)
        self.tokens = min(self.burst, self.tokens + (start - self.t) * self.rate / 8)
        self.t = start
        if self.tokens < nbytes:  # wait for the tokens
            start += (nbytes - self.tokens) * 8 / self.rate
            self.tokens, self.t = float(nbytes), start
        self.tokens -= nbytes
        self.free_s = start + nbytes * 8 / self.line
        return self.free_s + 0.010


def send_train(link, now_s: float, train, seq_gap_s: float = 20e-6) -> list[ProbePacket]:
    size = wire_bytes(train.packet_bytes)
    return [ProbePacket(train.train, k, train.packets, size, now_s + k * seq_gap_s,
                        link.send(now_s + k * seq_gap_s, size))
            for k in range(train.packets)]


def test_format_and_receipts_round_trip():
    assert parse_probe_format(probe_format(12, 3, 10)) == (12, 3, 10)
    for bad in ("split_infer/1; raw", "split_infer/probe; train=1; index=10; count=10",
                "split_infer/probe; train=-1; index=0; count=2"):
        with pytest.raises(ValueError):
            parse_probe_format(bad)
    packets = [ProbePacket(1, 0, 2, 1300, 0.5, 0.6), ProbePacket(1, 1, 2, 1300, 0.5, 0.7)]
    rows = [*probe_receipt_rows(packets), math.nan, 0, 2, 100, 0, 0]
    parsed, skipped = parse_probe_receipts(rows, PROBE_RECEIPT_LABEL)
    assert parsed == packets and skipped == 1
    with pytest.raises(ValueError, match="label"):
        parse_probe_receipts(rows, "seq,bytes")
    with pytest.raises(ValueError, match="multiple"):
        parse_probe_receipts(rows[:-1])


def test_wire_bytes_counts_headers_per_fragment():
    assert wire_bytes(1200) - 1200 == 88 + 34
    assert wire_bytes(8000) - 8000 == 88 + 34 * 6  # 8,088 B of datagram in 6 fragments


@pytest.mark.parametrize("rate_bps", [1e6, 4e6, 8e6, 30e6])
def test_second_half_of_a_train_measures_a_token_bucket_link(rate_bps):
    burst = max(4096, int(rate_bps / 8 * 0.005))  # the testbed's tbf
    planner = ProbePlanner()
    train = planner.due(0.0, rate_bps)  # sized to the link: longer than two bursts
    assert train is not None and train.payload_bytes >= 2 * burst
    result = analyze_train(send_train(TokenBucket(rate_bps, burst), 0.0, train))
    assert not result.lower_bound
    assert result.rate_bps == pytest.approx(rate_bps, rel=0.05)
    # The whole train's dispersion would have overestimated it: the burst passed at line rate.
    packets = send_train(TokenBucket(rate_bps, burst), 0.0, train)
    whole = 8 * sum(p.nbytes for p in packets[1:]) / (packets[-1].receive_s
                                                       - packets[0].receive_s)
    assert whole > 1.1 * rate_bps


def test_a_train_inside_the_burst_is_only_a_lower_bound_and_the_next_is_longer():
    link = TokenBucket(30e6, 18_750)
    planner = ProbePlanner()
    first = planner.due(0.0, 4e6)  # believed 4 Mbit/s, the link went up to 30
    assert first.payload_bytes < 18_750
    result = analyze_train(send_train(link, 0.0, first))
    assert result.lower_bound  # it passed inside the bucket: no measurement
    estimator = BandwidthEstimator()
    estimator.add(Receipt(0, 500, 0.0, 0.01), 0.0)
    estimator.add(Receipt(1, 500, 0.033, 0.043), 0.033)
    estimator.add_probe(result, 0.05)
    estimate = estimator.estimate(0.05)
    # Flagged, at what the train showed at least (more than the frames' 0.1 Mbit/s).
    assert estimate.lower_bound and estimate.source == "probe_bound"
    assert estimate.bandwidth_bps == pytest.approx(result.rate_bps)
    # Trains sized for that bound, or doubled: the burst reaches into a train's second half,
    # only its later gaps count, and a longer one measures the link.
    believed, lower = estimate.bandwidth_bps, True
    for k in range(1, 4):  # a train every 10 s: the bucket is full again each time
        train = planner.due(10.0 * k, believed, lower)
        measured = analyze_train(send_train(link, 10.0 * k, train))
        if not measured.lower_bound:
            believed, lower = measured.rate_bps, False
    assert not lower and believed == pytest.approx(30e6, rel=0.05)


def test_a_train_sent_as_slowly_as_it_arrives_measured_the_sender():
    """A robot out of CPU (a quarter core, busy loading its models) sent its first train
    at 0.13 Mbit/s onto a 30 Mbit/s link; read as the link's rate, it sent the robot
    edge-only for the whole run."""
    link = TokenBucket(30e6, 18_750)
    train = ProbePlanner().due(0.0, None)
    slow = analyze_train(send_train(link, 0.0, train, seq_gap_s=0.02))
    assert slow.lower_bound and slow.sender_limited
    send_rate = 8 * wire_bytes(train.packet_bytes) / 0.02
    assert slow.rate_bps == pytest.approx(send_rate, rel=0.05)  # at least that: a bound
    # The same link with a sender faster than it: measured, not flagged.
    fast_train = ProbePlanner().due(0.0, 30e6)
    fast = analyze_train(send_train(TokenBucket(30e6, 18_750), 0.0, fast_train))
    assert not fast.lower_bound and not fast.sender_limited
    # One long pause of the sender (its cgroup throttled mid-train) is one outlier gap, no
    # reason to distrust the rest.
    steady = ProbePlanner().due(0.0, 4e6)
    paused = [p if p.index < steady.packets - 4 else
              ProbePacket(p.train, p.index, p.count, p.nbytes, p.send_s + 0.075,
                          p.receive_s + 0.075)
              for p in send_train(TokenBucket(4e6, 4096), 0.0, steady)]
    result = analyze_train(paused)
    assert not result.sender_limited and result.outliers == 1
    assert result.rate_bps == pytest.approx(4e6, rel=0.05)


def test_a_train_faster_than_an_old_measurement_unsticks_the_prober():
    """Measured 0.3 Mbit/s, then the robot went edge-only and the link rose to 30 Mbit/s:
    12-kB trains pass inside the shaper's burst, too short to time. Without the train's bound
    the estimate held 0.3 as a lower bound, the doubled trains were capped at what 0.3 Mbit/s
    carries in max_train_s, and the step up was never seen."""
    planner = ProbePlanner()
    assert planner.due(0.0, 3e5) is not None  # measured slow
    estimator = BandwidthEstimator()
    link = TokenBucket(30e6, 18_750)
    believed, lower, t = 3e5, False, 0.0
    for _ in range(200):
        t += 0.25
        train = planner.due(t, believed, lower, link_idle=True)
        if train is None:
            continue
        estimator.add_probe(analyze_train(send_train(link, t, train)), t + 0.02)
        estimate = estimator.estimate(t + 0.03)
        believed, lower = estimate.bandwidth_bps, estimate.lower_bound
        if not lower:
            break
    assert not lower and believed == pytest.approx(30e6, rel=0.05)
    assert t <= 12.0  # the budget of 4 % of 0.3 Mbit/s pays a train every 2.4 s


def test_a_frame_between_probe_packets_is_left_out():
    link = TokenBucket(4e6, 4096)
    train = ProbePlanner().due(0.0, 4e6)
    packets = send_train(link, 0.0, train)
    # Delay the tail by a 20-kB frame's serialization after packet k (it slipped in).
    k = train.packets - 3
    frame_s = 20_000 * 8 / 4e6
    packets = [p if p.index <= k else ProbePacket(p.train, p.index, p.count, p.nbytes,
                                                   p.send_s, p.receive_s + frame_s)
               for p in packets]
    result = analyze_train(packets)
    assert result.outliers == 1
    assert result.rate_bps == pytest.approx(4e6, rel=0.05)


def stamped_late(packets: list[ProbePacket], from_s: float, until_s: float
                 ) -> list[ProbePacket]:
    """A busy receiver: the packets that arrived between ``from_s`` and ``until_s`` are
    stamped at ``until_s``, in a bunch (as the demo's link relay under load delivered them)."""
    bunch = itertools.count()
    return [p if not from_s <= p.receive_s < until_s else
            ProbePacket(p.train, p.index, p.count, p.nbytes, p.send_s,
                        until_s + 40e-6 * next(bunch))
            for p in sorted(packets, key=lambda p: p.receive_s)]


def test_packets_stamped_late_inside_the_second_half_do_not_read_as_a_faster_link():
    """CI, under load: a 6-Mbit/s link read 9.4 Mbit/s. The long gap before the bunch was
    left out as a frame that slipped in, and the bunch behind it then read as a fast link."""
    link = TokenBucket(6e6, 1500)
    train = ProbePlanner().due(0.0, 6e6)
    packets = send_train(link, 0.0, train)
    middle = (train.packets - 1) // 2
    arrivals = [p.receive_s for p in packets]
    late = stamped_late(packets, arrivals[middle + 2], arrivals[middle + 6] + 1e-4)
    result = analyze_train(late)
    assert not result.lower_bound and not result.stamped_late and result.outliers == 0
    assert result.rate_bps == pytest.approx(6e6, rel=0.05)


def test_a_second_half_stamped_late_is_no_measurement():
    """CI, under load: the whole second half of a train on a 6-Mbit/s link was stamped
    within 1 ms, and the estimate said "at least 86 Mbit/s". The first half, which the link
    spread out, says otherwise: the receiver stamped it late, and the train is left out."""
    link = TokenBucket(6e6, 1500)
    planner = ProbePlanner()
    estimator = BandwidthEstimator()
    first = planner.due(0.0, 6e6)
    estimator.add_probe(analyze_train(send_train(link, 0.0, first)), 0.05)
    assert estimator.estimate(0.05).bandwidth_bps == pytest.approx(6e6, rel=0.05)
    train = planner.due(0.5, 6e6)
    packets = send_train(link, 0.5, train)
    middle = (train.packets - 1) // 2
    late = stamped_late(packets, packets[middle].receive_s - 1e-4,
                        packets[-1].receive_s + 0.005)
    result = analyze_train(late)
    assert result.stamped_late and result.lower_bound
    estimator.add_probe(result, 0.55)
    estimate = estimator.estimate(0.55)
    assert not estimate.lower_bound and estimate.source == "probe"
    assert estimate.bandwidth_bps == pytest.approx(6e6, rel=0.05)
    assert estimator.probe_trains == 1 and estimator.probe_trains_stamped_late == 1
    # The same second half on a link that really is that fast: its first half came as fast
    # (or faster, through a burst allowance), and the train is too short to time.
    fast = send_train(TokenBucket(200e6, 1500), 1.0, train)
    measured = analyze_train(fast)
    assert measured.lower_bound and not measured.stamped_late


def test_lost_packets_and_short_trains():
    link = TokenBucket(4e6, 4096)
    train = ProbePlanner().due(0.0, 4e6)
    packets = send_train(link, 0.0, train)
    lossy = [p for p in packets if p.index % 3 != 1]
    result = analyze_train(lossy)
    assert result.packets == len(lossy) and result.rate_bps <= 4e6 * 1.05
    assert analyze_train(packets[:train.packets // 2]) is None  # no second half
    assert analyze_train([]) is None


def test_budget_holds_over_any_window_and_follows_the_estimate():
    settings = ProbeSettings()
    slow = ProbePlanner(settings)
    # A link measured at 100 kbit/s: the smallest train (8.5 kB) would hold it ~0.8 s. One
    # train, then none for slow_recheck_s (the budget alone would allow one every 18 s).
    trains = [slow.due(k * 0.5, 1e5) for k in range(130)]
    assert [k for k, t in enumerate(trains) if t is not None] == [0, 60, 120]
    # A lower bound of 100 kbit/s (frames that do not fill the link) is probed.
    assert ProbePlanner(settings).due(0.0, 1e5, lower_bound=True) is not None
    for estimate in (5e5, 1e6, 4e6, 30e6):
        planner = ProbePlanner(settings)
        sent: list[tuple[float, int, int]] = []  # (when, payload, wire bytes)
        for k in range(6000):  # 60 s in 10-ms ticks
            now = k * 0.01
            before = planner.wire_bytes_sent
            train = planner.due(now, estimate)
            if train is not None:
                sent.append((now, train.payload_bytes, planner.wire_bytes_sent - before))
        assert sum(n for _, n, _ in sent) == planner.bytes_sent
        assert planner.trains_sent == len(sent)
        # The budget counts every header: more than the payload, and the same as the link
        # shows for each packet (wire_bytes of its payload and its format string).
        total = sum(w for _, _, w in sent)
        assert total == planner.wire_bytes_sent > planner.bytes_sent
        packets, packet_bytes = planner._shape(sent[0][1])
        assert sent[0][2] == packets * wire_bytes(packet_bytes,
                                                  len(probe_format(0, packets - 1, packets)))
        # The bucket starts full (the first train goes at once); beyond it, the budget.
        bucket = max(settings.budget_fraction * estimate / 8 * settings.budget_window_s,
                     sent[0][2])
        assert 8 * (total - bucket) / 60 <= settings.budget_fraction * estimate
        assert 8 * total / 60 >= settings.budget_fraction * estimate * 0.5, "budget unused"
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
        assert min(gaps) >= settings.interval_s - 1e-9
        # At a few Mbit/s a train crosses every second or faster; at 1 Mbit/s, the smallest
        # train within 2 s (what a 2-s step response needs); at 500 kbit/s the budget allows
        # one every few seconds.
        if estimate >= 4e6:
            assert max(gaps) <= 1.0
        elif estimate >= 1e6:
            assert max(gaps) <= 1.8


def test_settings_are_validated():
    for bad in ({"budget_fraction": 0}, {"budget_fraction": 1.5}, {"interval_s": 0},
                {"headroom": 0.5}, {"min_packets": 1}, {"min_train_bytes": 0},
                {"max_packet_bytes": 10}, {"train_s": math.nan}):
        with pytest.raises(ValueError):
            ProbeSettings(**bad)


def _simulate(levels, frame_bytes, seconds, probing=True, fps=30.0, frames_until_s=math.inf,
              faster_hint=False, trains_at: list[float] | None = None, size_spread=0.0):
    """Frames of ``frame_bytes`` at ``fps`` (until ``frames_until_s``: then the robot runs
    edge-only and the link is idle) and (optionally) probe trains over the emulated link of
    the demo (FIFO, no burst); returns [(t, estimate)] every 100 ms. ``faster_hint``: the
    estimator's ``faster_frames`` reach the planner (``check_link``), as the monitor passes
    them to the prober; ``trains_at`` collects the trains' send times; ``size_spread``: frame
    sizes cycle through 14 values spread evenly within ± that fraction of ``frame_bytes``."""
    sizes = itertools.cycle(
        [int(frame_bytes * (1 + size_spread * (2 * k / 96 - 1))) for k in range(97)][::7])
    link = LinkShaper(step_trace(levels), queue_limit_bytes=10_000_000)
    estimator = BandwidthEstimator()
    planner = ProbePlanner()
    events = []  # (arrival, kind, payload)
    out = []
    seq = 0
    tick = 0.01
    pending: dict[int, list[ProbePacket]] = {}
    next_frame = 0.0
    faster = 0
    for k in range(int(seconds / tick)):
        now = k * tick
        while next_frame <= now and next_frame < frames_until_s:
            size = next(sizes)
            arrival = link.send(next_frame, size)
            events.append((arrival, "frame", Receipt(seq, size, next_frame, arrival)))
            seq += 1
            next_frame += 1 / fps
        estimate = estimator.estimate(now)
        if faster_hint and estimator.faster_frames > faster:
            planner.check_link(now)
        faster = estimator.faster_frames
        if probing:
            train = planner.due(now, estimate.bandwidth_bps, estimate.lower_bound,
                                estimate.queued_fraction >= QUEUED_ENOUGH,
                                stale=estimate.stale, link_idle=now >= frames_until_s)
            if train is not None:
                if trains_at is not None:
                    trains_at.append(now)
                for packet in send_train(link, now, train, seq_gap_s=0.0):
                    events.append((packet.receive_s, "probe", packet))
        events.sort(key=lambda e: e[0])
        while events and events[0][0] <= now:
            _, kind, item = events.pop(0)
            if kind == "frame":
                estimator.add(item, now)
            else:
                pending.setdefault(item.train, []).append(item)
                if len(pending[item.train]) == item.count:
                    measured = analyze_train(pending.pop(item.train))
                    if measured is not None:
                        estimator.add_probe(measured, now)
        if k % 10 == 0:
            out.append((now, estimator.estimate(now)))
    return out, planner


def _settles(timeline, step_s: float, rate: float) -> float:
    """Seconds after ``step_s`` until the estimate stays within 15 % of ``rate`` for 1 s."""
    for t, _ in timeline:
        if t >= step_s and all(x.bandwidth_bps is not None
                               and abs(x.bandwidth_bps - rate) <= 0.15 * rate
                               for s, x in timeline if t <= s < t + 1.0):
            return t - step_s
    return math.inf


def test_probing_tracks_a_step_up_that_frames_at_5_percent_cannot_show():
    levels = [(0.0, 2e6), (10.0, 8e6), (20.0, 3e6)]
    frame_bytes = 400  # 96 kbit/s at 30 fps: under 5 % of the slowest rate
    timeline, planner = _simulate(levels, frame_bytes, 30.0)

    assert _settles(timeline, 10.0, 8e6) <= 2.0
    assert _settles(timeline, 20.0, 3e6) <= 2.0
    at_8 = [e for t, e in timeline if 12 <= t < 20]
    assert all(e.source == "probe" and not e.lower_bound for e in at_8)
    assert 8 * planner.bytes_sent / 30.0 <= 0.05 * 8e6  # under the budget of the highest
    # Without probing the same frames only ever show what they offered, flagged as such.
    blind, _ = _simulate(levels, frame_bytes, 30.0, probing=False)
    assert all(e.lower_bound for t, e in blind if t > 5)
    assert max(e.bandwidth_bps for t, e in blind if t > 5) < 0.2e6


def test_frames_that_queue_win_over_an_older_train_and_silence_counts_trains():
    estimator = BandwidthEstimator()
    train = ProbePlanner().due(0.0, 4e6)
    estimator.add_probe(analyze_train(send_train(TokenBucket(4e6, 4096), 0.0, train)), 0.1)
    assert estimator.estimate(0.2).source == "probe"
    # Only trains for 3 s (the edge classifies by itself): not silence.
    later = ProbePlanner().due(0.0, 4e6)
    estimator.add_probe(analyze_train(send_train(TokenBucket(4e6, 4096), 1.5, later)), 1.6)
    assert not estimator.estimate(2.9).stale
    assert estimator.estimate(7.0).stale  # nothing for over 4 s
    # Saturating frames now: 10 kB every 33 ms on a 1 Mbit/s link queue, and win.
    t = 8.0
    arrival = t
    for seq in range(40):
        send = t + seq / 30
        arrival = max(arrival, send) + 10_000 * 8 / 1e6
        estimator.add(Receipt(seq, 10_000, send, arrival + 0.01), send)
    final = estimator.estimate(send)
    assert final.source == "dispersion"
    assert final.bandwidth_bps == pytest.approx(1e6, rel=0.05)


def test_a_lower_bound_under_the_measured_capacity_keeps_that_capacitys_budget():
    # A 0.5-Mbit/s link, measured, whose frames leave it unsaturated every other second: the
    # estimate alternates between the capacity and a lower bound of what the frames carried.
    # Budgeted at the 1-Mbit/s floor in the lower-bound spells, the trains took 6.8 % of it.
    settings = ProbeSettings()
    planner = ProbePlanner(settings)
    for k in range(12000):  # 120 s in 10-ms ticks
        now = k * 0.01
        planner.due(now, 0.4e6 if int(now) % 2 else 0.5e6, lower_bound=bool(int(now) % 2))
    first_train = planner.wire_bytes_sent / planner.trains_sent
    spent_bps = 8 * (planner.wire_bytes_sent - first_train) / 120
    assert spent_bps <= settings.budget_fraction * 0.5e6
    assert planner.trains_sent >= 30  # and it still probes at the budget


def test_doubling_on_lower_bounds_stops_at_eight_times_the_base_size():
    planner = ProbePlanner(ProbeSettings(budget_fraction=1.0))
    sizes = []
    for k in range(10):  # trains that never come back, and nothing else measures the link
        train = planner.due(100.0 * k, None, lower_bound=True)
        sizes.append(train.payload_bytes)
    base = planner.train_bytes(1e6)  # 12 kB: the minimum train
    assert sizes[:4] == sorted(sizes[:4]) and sizes[1] >= 2 * sizes[0] - 64
    assert max(sizes) <= 8 * base and sizes[-1] >= 4 * base


def test_no_train_while_the_frames_queue():
    planner = ProbePlanner()
    assert planner.due(0.0, 5e6, frames_queue=True) is None
    assert planner.due(0.1, 5e6) is not None
    assert planner.trains_sent == 1


def test_a_silence_cap_is_probed_as_unknown_not_as_a_slow_link():
    """The demo's first 224-px run: the robot went edge-only, nothing crossed the link, the
    estimate became a silence cap of a few kbit/s, and a prober that took it for a measurement
    budgeted 4 % of it and never sent again."""
    def trains(**flags):
        planner = ProbePlanner()
        return sum(planner.due(k * 0.05, 4e3, **flags) is not None for k in range(200))

    assert trains() == 1  # "measured" 4 kbit/s: too slow for a train for 30 s
    assert trains(stale=True) >= 4  # unknown: budgeted at floor_bps, 8.5-kB trains
    # A link measured slow (0.3 Mbit/s) while the robot runs edge-only: nothing waits behind
    # a train, so the budget alone paces them (4.5 % of 0.3 Mbit/s: one train of 9.9 kB on
    # the wire per 5.9 s).
    planner = ProbePlanner()
    sent = [k * 0.05 for k in range(1200)
            if planner.due(k * 0.05, 3e5, link_idle=True) is not None]
    assert len(sent) >= 4 and min(b - a for a, b in itertools.pairwise(sent)) >= 5.5


def test_silence_between_the_trains_of_a_measured_slow_link_keeps_its_budget():
    """Edge-only on a link measured at 0.3 Mbit/s: trains are the only traffic, and between
    them the estimate lapses into a silence cap. Those lapses were budgeted at the 1-Mbit/s
    floor, and the trains took up to 11 % of the link (testbed, 20-s runs)."""
    for bound_every in (0, 60):  # (and with a train through the burst now and then, which
        # reads as a bound above the measurement: it asks for a check, not a larger budget)
        planner = ProbePlanner()
        planner.due(0.0, 3e5)  # the frames measured the link
        for k in range(1, 2400):  # 120 s: a measurement every 6th tick, silence caps between
            now = k * 0.05
            if bound_every and k % bound_every == 3:
                planner.due(now, 5e5, lower_bound=True, link_idle=True)
            elif k % 6:
                planner.due(now, 2e3, stale=True, link_idle=True)
            else:
                planner.due(now, 3e5, link_idle=True)
        spent_bps = 8.0 * planner.wire_bytes_sent / 120.0
        assert planner.trains_sent >= 10  # the link is still watched
        assert spent_bps <= 0.05 * 3e5, bound_every


def test_an_outage_after_a_fast_link_is_probed_no_harder_than_an_unknown_link():
    """A silence cap after 20 Mbit/s (an outage): the budget stays the floor's, not 4.5 % of
    the fast link that went dark."""
    def trains(measured_bps: float | None) -> int:
        planner = ProbePlanner()
        if measured_bps is not None:
            planner.due(0.0, measured_bps)
        return sum(planner.due(1.0 + k * 0.2, 1e3, stale=True) is not None for k in range(50))

    assert trains(20e6) <= trains(None)


def test_trains_alone_keep_measuring_after_the_frames_stop():
    """Frames saturate 1 Mbit/s until 5 s, then the robot runs edge-only; the link drops to
    0.3 Mbit/s, then rises to 4 Mbit/s. The trains are the only traffic: the estimate follows
    them (not the old frame pairs, not a silence cap) and sees the link come back."""
    levels = [(0.0, 1e6), (5.0, 3e5), (40.0, 4e6)]
    timeline, _ = _simulate(levels, 6_000, 60.0, frames_until_s=5.0)
    slow = [e for t, e in timeline if 25 <= t < 40]
    assert all(not e.stale and not e.lower_bound for e in slow)
    assert all(abs(e.bandwidth_bps - 3e5) <= 0.15 * 3e5 for e in slow)
    fast = [e for t, e in timeline if 48 <= t < 60]  # the next train: within 8 s at 0.3
    assert all(abs(e.bandwidth_bps - 4e6) <= 0.15 * 4e6 for e in fast)


def test_a_train_too_short_to_time_is_followed_at_once_on_credit():
    planner = ProbePlanner()
    first = planner.due(0.0, 1e6)  # a measured 1 Mbit/s: 8.5-kB trains, ~1.8 s of budget each
    assert first is not None
    assert planner.due(0.3, 1e6) is None  # the budget has not refilled
    # That train came back too short to time (the link is now much faster): the estimate is
    # the bound its second half resolves (its bits over 1 ms), above what it was sized for,
    # and the doubled train goes after interval_s instead of a budget period.
    bound = 8.0 * first.payload_bytes / 2 / 0.001
    doubled = planner.due(0.3, bound, lower_bound=True)
    assert doubled is not None and doubled.payload_bytes >= 2 * first.payload_bytes - 64
    # The credit is paid back, so a link whose trains never time (a lower bound for ever) is
    # still probed within the budget in the long run.
    for k in range(7, 600):
        planner.due(k * 0.1, bound, lower_bound=True)
    settings = planner.settings
    assert planner.wire_bytes_sent <= (settings.budget_fraction * bound / 8 * (60 + 2)
                                       + 2 * settings.max_train_bytes * 1.1)


def test_a_rise_is_checked_by_a_second_train_at_once_on_credit():
    """At a measured 1 Mbit/s the budget pays for a train every 1.8 s. A train that shows
    the link at 4 Mbit/s (a step up, or a refilled burst over-read) is followed by another
    after interval_s, not a budget period later: the scheduler moves on a rise once two of its
    estimates show it, and the second train says whether it was real."""
    planner = ProbePlanner()
    assert planner.due(0.0, 1e6) is not None
    assert planner.due(0.3, 1e6) is None  # the budget has not refilled
    # A small rise (within confirm_rise) waits for the budget like any estimate.
    assert planner.due(0.6, 1.1e6) is None
    # The next budgeted train (at 1.1 Mbit/s) reads 4 Mbit/s: the check goes at once.
    sent = [k * 0.05 for k in range(13, 60) if planner.due(k * 0.05, 1.1e6) is not None]
    assert len(sent) == 1
    assert planner.due(sent[0] + 0.05, 4e6) is None  # interval_s after the train
    assert planner.due(sent[0] + 0.25, 4e6) is not None
    # One check per rise: the estimate holds, and the budget (owed one train) paces again.
    after = [k * 0.05 for k in range(200) if planner.due(sent[0] + 0.3 + k * 0.05, 4e6)]
    assert after and after[0] >= 0.5
    # Repeated rises cannot outspend the budget: a check is only on credit when none is owed.
    flapping = ProbePlanner()
    for k in range(1200):
        flapping.due(k * 0.05, (1e6, 3e6)[(k // 10) % 2])
    # (the budget follows the estimate: 4.5 % of 2 Mbit/s on average, plus the first fill)
    assert 8 * flapping.wire_bytes_sent / 60 <= 0.045 * 2e6 + 8 * 2 * 10_000 / 60


def test_a_fall_seen_by_a_train_is_checked_at_once_too():
    """The outage trace on the testbed: the robot ran edge-only (trains the only traffic), and
    the train that crossed as the link came back read 5 Mbit/s as 0.08. Budgeted at 4.5 % of
    that, the next train would have waited about 20 s; the check goes after interval_s."""
    planner = ProbePlanner()
    planner.due(0.0, 5e6, link_idle=True)  # measured before the outage
    sent = [k * 0.05 for k in range(1, 200)  # silence caps: the trains alone, at the floor
            if planner.due(k * 0.05, 1e3, stale=True, link_idle=True) is not None]
    last = sent[-1]  # the train that crossed as the link came back, read as 0.08 Mbit/s
    checks = [last + k * 0.05 for k in range(1, 21)
              if planner.due(last + k * 0.05, 8e4, link_idle=True) is not None]
    assert checks and checks[0] - last <= planner.settings.interval_s + 0.2


def test_small_trains_have_fewer_packets_not_smaller_ones():
    planner = ProbePlanner()
    smallest = planner.due(0.0, 1e6)
    settings = planner.settings
    assert smallest.packets == settings.min_train_bytes // settings.min_packet_bytes < 16
    assert smallest.packet_bytes >= settings.min_packet_bytes
    assert ProbePlanner().due(0.0, 5e6).packets == 16  # 14 kB: min_packets, as before
    assert ProbePlanner().due(0.0, 8e6).packets == 16  # 22.5 kB
    # Its first half is more than the testbed shaper's burst: the second half is shaped.
    link = TokenBucket(4e6, 4096)
    measured = analyze_train(send_train(link, 0.0, smallest))
    assert not measured.lower_bound and measured.rate_bps == pytest.approx(4e6, rel=0.05)
    with pytest.raises(ValueError):
        ProbeSettings(min_packet_bytes=9_000)  # above max_packet_bytes
    with pytest.raises(ValueError):
        ProbeSettings(confirm_rise=1.0)


def test_a_bound_under_what_the_last_train_could_time_is_no_reason_to_double():
    # A quarter-core robot sends a 22-kB train at 8 Mbit/s no faster than the link drains it
    # (a sender-limited train: a lower bound of 7.9 Mbit/s), or the frames' throughput is the
    # only word on the link: a longer train would show no more. Doubling regardless grew the
    # trains to 190 kB in the testbed and spent the budget for half a minute.
    planner = ProbePlanner()
    first = planner.due(0.0, 8e6)
    later = [planner.due(k * 0.25, 7.9e6, lower_bound=True) for k in range(1, 80)]
    sizes = {t.payload_bytes for t in later if t is not None}
    assert sizes and max(sizes) <= first.payload_bytes + 64


def test_a_slow_link_stays_probed_and_a_step_up_from_it_is_seen():
    """20 → 0.5 → 8 Mbit/s with 190-byte frames (BBNet ×86): at 0.5 Mbit/s the budget spaces
    trains further apart than a measurement's validity; the lapsed measurement must not turn
    into a doubled train too long for the link (held back for slow_recheck_s), or the step
    back up goes unseen for half a minute."""
    levels = [(0.0, 20e6), (10.0, 5e5), (25.0, 8e6)]
    timeline, _ = _simulate(levels, 190, 40.0)
    slow = [e for t, e in timeline if 14 <= t < 25]  # after the drain of the 20-M trains
    assert all(abs(e.bandwidth_bps - 5e5) <= 0.15 * 5e5 for e in slow)
    # The budget at 0.5 Mbit/s allows a 12-kB train every few seconds: the step shows at the
    # next one.
    settled = next(t for t, e in timeline
                   if t >= 25 and abs(e.bandwidth_bps - 8e6) <= 0.15 * 8e6)
    assert settled - 25 <= 6.0
    assert all(abs(e.bandwidth_bps - 8e6) <= 0.15 * 8e6 for t, e in timeline if t >= settled)


def test_frames_that_fit_the_slow_link_do_not_hold_a_step_up_back():
    """8 → 1 → 4 Mbit/s with frames of 0.91 Mbit/s, the testbed's step with a scheduler that
    fills the slow link: at 4 Mbit/s the frame behind each train queues behind it, and that
    one queued frame must neither bring back the pairs measured at 1 Mbit/s nor outvote the
    train that measured 4 (it held the estimate at 1–1.3 Mbit/s for over 6 s)."""
    timeline, _ = _simulate([(0.0, 8e6), (10.0, 1e6), (20.0, 4e6)], 3800, 30.0)
    assert _settles(timeline, 10.0, 1e6) <= 2.0
    assert _settles(timeline, 20.0, 4e6) <= 2.0
    assert all(abs(e.bandwidth_bps - 4e6) <= 0.15 * 4e6 for t, e in timeline if t >= 22)
    # A pair around a train measures the train's bytes as its own gap: never a measurement.
    at_8 = [e.bandwidth_bps for t, e in timeline if 2 <= t < 10]
    assert min(at_8) >= 0.9 * 8e6


def test_a_bound_from_before_a_step_down_stays_behind_once_the_frames_measure_the_link():
    # A sender-limited train says "at least 7.9 Mbit/s" (a lower bound); then the link drops to
    # 1 Mbit/s and the frames measure it. While that train is fresh it must not come back as
    # the estimate whenever the queued pairs leave the window: it is older than they are.
    estimator = BandwidthEstimator()
    train = ProbePlanner().due(0.0, 8e6)
    pace = 8 * wire_bytes(train.packet_bytes) / 7.9e6
    measured = analyze_train(send_train(TokenBucket(8e6, 4096), 0.0, train, seq_gap_s=pace))
    assert measured.lower_bound and measured.sender_limited
    estimator.add_probe(measured, 0.1)
    arrival = 0.2
    for seq in range(90):  # 10 kB at 30 fps for 0.5 s (they queue), then 1 kB (they fit)
        send = 0.2 + seq / 30
        nbytes = 10_000 if seq < 15 else 1_000
        arrival = max(arrival, send) + nbytes * 8 / 1e6
        estimator.add(Receipt(seq, nbytes, send, arrival + 0.01), send)
        if seq == 14:
            saturated = estimator.estimate(send)
            assert saturated.source == "dispersion"
            assert saturated.bandwidth_bps == pytest.approx(1e6, rel=0.05)
    assert send - 0.1 < estimator.config.probe_valid_s  # the train is still fresh
    final = estimator.estimate(send)
    assert final.source != "probe_bound" and final.bandwidth_bps < 1.5e6


def test_a_train_after_a_step_down_is_not_held_up_by_the_frames_from_before_it():
    # Frames use 4.8 of 8 Mbit/s (no pair queues), then the link drops to 1 Mbit/s and the
    # frames that overfill it are lost. The next train measures 1 Mbit/s; what the frames
    # delivered in the second before the step is no floor for it.
    estimator = BandwidthEstimator()
    for seq in range(60):
        send = seq / 30
        arrival = send + 20_000 * 8 / 8e6 + 0.01
        estimator.add(Receipt(seq, 20_000, send, arrival), arrival)
    train = ProbePlanner().due(2.1, 8e6)
    measured = analyze_train(send_train(TokenBucket(1e6, 4096), 2.1, train))
    assert not measured.lower_bound
    estimator.add_probe(measured, measured.receive_s + 0.01)
    after = estimator.estimate(measured.receive_s + 0.02)
    assert after.throughput_bps > 4e6  # the window still holds the frames from before
    assert after.source == "probe"
    assert after.bandwidth_bps == pytest.approx(1e6, rel=0.1)


def test_frames_that_cross_faster_call_a_train_before_the_budget_would():
    """The testbed's step from 1 to 4 Mbit/s, with frames that use 60 % of the slow link (too
    few to queue and measure it): the budget at 1 Mbit/s pays for a train every 1.8 s, and
    the step up waits for the next one. The first frames after the step cross faster than
    the slightly smaller frames of the last 10 s did (their serialization shrank fourfold),
    and a train goes as soon as its interval allows."""
    levels = [(0.0, 8e6), (10.0, 1e6), (20.3, 4e6)]
    waits = {}
    for hint in (False, True):
        trains: list[float] = []
        timeline, _ = _simulate(levels, 2500, 30.0, faster_hint=hint, trains_at=trains,
                                size_spread=0.2)
        waits[hint] = min(t for t in trains if t >= 20.3) - 20.3
        assert _settles(timeline, 20.3, 4e6) <= waits[hint] + 0.2
    assert waits[True] <= 0.1 and waits[False] >= 0.5
    # On a steady link no frame beats the smaller frames' floor: no extra trains.
    rng = __import__("numpy").random.default_rng(1)
    estimator = BandwidthEstimator()
    link = LinkShaper(step_trace([(0.0, 1e6)]), queue_limit_bytes=10_000_000)
    for seq in range(900):
        sent, size = seq / 30.0, int(rng.uniform(2000, 3000))
        estimator.add(Receipt(seq, size, sent, link.send(sent, size)))
    assert estimator.faster_frames == 0
    # A delay that only grows (a drifting clock) keeps no more than the delay window, also
    # for a size no frame is compared with.
    drifting = BandwidthEstimator()
    for seq in range(900):
        sent = seq / 30.0
        drifting.add(Receipt(seq, 2500, sent, sent + 0.01 + 1e-4 * seq))
    assert max(len(w._q) for w in drifting._size_floors.values()) <= 30 * 10 + 1


def test_check_link_sends_the_next_train_on_credit():
    planner = ProbePlanner()
    assert planner.due(0.0, 1e6) is not None
    assert planner.due(0.5, 1e6) is None  # the budget has not refilled
    planner.check_link(0.55)
    assert planner.due(0.6, 1e6) is not None  # on credit
    planner.check_link(0.85)
    assert planner.due(0.9, 1e6) is None  # one train of credit at most


@pytest.mark.parametrize("seed", range(5))
def test_a_faster_link_shows_in_frames_of_every_size_behind_a_burst_allowance(seed):
    """The testbed's shaper (``tc tbf``, 4-kB burst) at 1 Mbit/s, frames of 4.5–7 kB at
    16 fps (the step trace's ``6:21``), then 4 Mbit/s. The first 4 kB of each frame pass at
    line rate, so the smallest frames set a delay floor that larger frames on the faster
    link beat only now and then (over these seeds 0.125–1.25 s after the step): compared
    with frames a little smaller than themselves, the first frames after it do."""
    rng = __import__("numpy").random.default_rng(seed)
    link = TokenBucket(1e6, 4096)
    estimator = BandwidthEstimator()
    delays: list[tuple[float, float]] = []  # (send time, one-way delay)
    seen_at = plain_at = None
    for seq in range(16 * 40):
        sent = seq / 16
        if sent >= 30.0:
            link.rate = 4e6
        size = int(rng.uniform(4500, 7000))
        arrival = link.send(sent, size)
        estimator.add(Receipt(seq, size, sent, arrival))
        if sent < 30.0:
            assert estimator.faster_frames == 0, sent
        else:
            if seen_at is None and estimator.faster_frames:
                seen_at = sent
            floor = min(d for t, d in delays if sent - 10.0 <= t < 30.0)
            if plain_at is None and arrival - sent < floor - estimator.config.faster_margin_s:
                plain_at = sent
        delays.append((sent, arrival - sent))
    assert seen_at - 30.0 <= 0.2  # the first frames after the step (two within five)
    assert plain_at is not None and plain_at > seen_at  # the plain minimum: later


def test_a_bound_just_above_the_measurement_keeps_it_for_the_rise_check():
    """The testbed's step up from 1 Mbit/s: the frames stopped queueing, the estimate turned
    into a lower bound 1 % above the last measurement, then a train read 3.7 Mbit/s. The
    check of that rise goes at once; it waited 1.5 s for the budget while any bound above
    the measurement discarded it."""
    planner = ProbePlanner()
    assert planner.due(0.0, 1e6) is not None
    assert planner.due(0.5, 1.007e6, lower_bound=True) is None  # the budget holds
    assert planner.due(0.6, 3.7e6) is not None  # the rise's check, on credit
    # A bound well above the measurement shows the link rose: measured at once, too.
    planner = ProbePlanner()
    assert planner.due(0.0, 1e6) is not None
    assert planner.due(0.5, 1.5e6, lower_bound=True) is not None


def test_frames_that_sped_up_let_a_train_past_their_queued_fraction():
    planner = ProbePlanner()
    assert planner.due(0.0, 1e6) is not None
    assert planner.due(0.3, 1e6, frames_queue=True) is None
    planner.check_link(0.35)
    assert planner.due(0.4, 1e6, frames_queue=True) is not None
    # A hint lasts as long as the queued fraction's window: then the frames' queue counts.
    late = ProbePlanner()
    assert late.due(0.0, 1e6) is not None
    late.check_link(0.05)
    assert late.due(0.05 + SPED_UP_VALID_S + 0.1, 1e6, frames_queue=True) is None
    assert late.due(0.05 + SPED_UP_VALID_S + 0.2, 1e6) is not None  # (on credit still)
