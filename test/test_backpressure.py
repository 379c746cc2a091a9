"""The thesis's should_process_frame and the rate limiter, on a fake clock."""

import math

import pytest

from split_infer.pipeline.backpressure import DROP_REASONS, Backpressure, RateLimiter


def test_first_frame_is_always_processed():
    decision = Backpressure().should_process_frame(now=0.0)
    assert decision.process and decision.reason is None


def test_server_rule_lets_one_frame_wait_and_drops_beyond():
    bp = Backpressure(server_rate_limit_s=0.050)
    bp.frame_processed(0.010)  # the edge needs 10 ms per frame
    bp.frame_sent(0, 1000, now=1.0)  # the server is busy with it until 1.050
    bp.receipt(0)
    # One frame may wait behind it (beyond the thesis, which drops it): ready at 1.020, it
    # waits 30 ms.
    assert bp.should_process_frame(now=1.010).process
    bp.frame_sent(1, 1000, now=1.020)  # the server's work now ends at 1.100
    bp.receipt(1)
    # A frame ready while the server still holds more than one frame's work is dropped:
    # server_remain = 1.100 - 0.050 - now, the backlog beyond one frame.
    decision = bp.should_process_frame(now=1.030)
    assert not decision.process and decision.reason == "server"
    assert decision.server_remain == pytest.approx(0.020)
    assert decision.client_remain == pytest.approx(0.010)
    assert bp.should_process_frame(now=1.0401).process  # one frame's work left when ready
    assert bp.should_process_frame(now=1.045).process


def _paired_arrivals(frames: int) -> list[tuple[int, float]]:
    """30 frames/s, every other frame 25 ms late (a robot whose CPU quota stalls it sends
    pairs): (frame, arrival)."""
    return [(k, k / 30 + (0.025 if k % 2 else 0.0)) for k in range(frames)]


def _paired_camera(bp: Backpressure, frames: int, edge_s: float) -> list[tuple[float, float]]:
    """The paired camera at a server of ``bp``'s rate limit; returns (sent at, wait at the
    server) of every frame processed."""
    sent, busy_until = [], -math.inf
    for k, now in _paired_arrivals(frames):
        if bp.should_process_frame(now).process:
            bp.frame_processed(edge_s)
            bp.frame_sent(k, 100, now + edge_s)
            bp.receipt(k)
            start = max(busy_until, now + edge_s)
            sent.append((now + edge_s, start - (now + edge_s)))
            busy_until = start + bp.server_rate_limit_s
    return sent


def test_a_server_that_keeps_up_loses_no_frames_to_jitter_and_a_slow_one_sets_the_rate():
    # A 25-ms server keeps up with 30 frames/s: every frame goes, pairs or not (the thesis's
    # rule drops the second of each pair: the server is still busy with the first).
    fast = _paired_camera(Backpressure(server_rate_limit_s=0.025), 300, 0.004)
    assert len(fast) == 300
    assert max(wait for _, wait in fast) <= 0.025
    # A 50-ms server is held to its own 20 frames/s, and no frame waits more than one of its
    # frame times.
    slow = _paired_camera(Backpressure(server_rate_limit_s=0.050), 300, 0.004)
    rate = (len(slow) - 1) / (slow[-1][0] - slow[0][0])
    assert 19.0 <= rate <= 20.2  # over a finite run, one frame more may sit in its queue
    assert max(wait for _, wait in slow) <= 0.050 + 1e-9


def test_server_rate_limit_is_learnt_from_receipts_cloud_time():
    bp = Backpressure(latency_alpha=1.0)  # no smoothing: the last sample is the estimate
    assert bp.server_rate_limit_s is None
    bp.frame_sent(0, 100, now=0.0)
    assert bp.receipt(0, cloud_s=0.040)
    assert bp.server_rate_limit_s == pytest.approx(0.040)
    bp.frame_sent(1, 100, now=1.0)
    bp.frame_sent(2, 100, now=1.0)  # two frames' work: 80 ms at the learnt 40 ms each
    bp.receipt(1, cloud_s=0.040)
    bp.receipt(2, cloud_s=0.040)
    assert bp.should_process_frame(now=1.010).reason == "server"
    bp.set_server_rate_limit(0.005)  # an explicit limit wins over the learnt one (for new
    assert bp.should_process_frame(now=1.080).process  # work: what was queued keeps its 40 ms)
    bp.set_server_rate_limit(None)
    assert bp.should_process_frame(now=1.010).reason == "server"


def test_bandwidth_rule_lets_one_frame_queue_on_the_link_and_drops_beyond():
    bp = Backpressure(ack_timeout_s=10.0)
    # Frames arrive about every 30 ms: more than the 20 ms a frame takes on this link.
    bp.should_process_frame(now=-0.034)
    bp.set_bandwidth(8_000_000, now=0.0)  # 1 MB/s
    bp.frame_processed(0.005)
    bp.frame_sent(0, 20_000, now=0.0)  # 20 ms of link time
    # One frame may queue behind it (beyond the thesis, which drops it).
    decision = bp.should_process_frame(now=0.001)
    assert decision.process and decision.bandwidth_remain == 0.0
    bp.frame_sent(1, 20_000, now=0.001)  # on the link 0.020..0.040
    # Ready at 0.007, this frame would find more than one frame's bytes still on the link:
    # bandwidth_remain = 0.040 - 0.020 (the last frame's own link time) - now.
    decision = bp.should_process_frame(now=0.002)
    assert not decision.process and decision.reason == "bandwidth"
    assert decision.bandwidth_remain == pytest.approx(0.018)
    assert bp.unreceived_bytes(now=0.002) == pytest.approx(38_000)
    # 16 ms in, 4 ms beyond one frame are left: drained before this frame (5 ms) is ready.
    assert bp.should_process_frame(now=0.016).process
    bp.receipt(0)
    bp.receipt(1)  # acknowledged: nothing left on the link
    assert bp.unreceived_bytes(now=0.002) == 0.0


def test_frames_drain_first_in_first_out():
    bp = Backpressure(ack_timeout_s=10.0)
    bp.set_bandwidth(8_000, now=0.0)  # 1000 bytes/s
    bp.frame_sent(0, 1000, now=0.0)  # on the link 0..1 s
    bp.frame_sent(1, 1000, now=0.5)  # queued behind it: 1..2 s
    assert bp.unreceived_bytes(now=0.5) == pytest.approx(1500)
    assert bp.unreceived_bytes(now=1.5) == pytest.approx(500)
    # No camera rate known yet: no slack, the thesis's backlog.
    assert bp.should_process_frame(now=0.5).bandwidth_remain == pytest.approx(1.5)
    bp.receipt(0)  # receipted: only frame 1 is left, on the link since it was sent
    assert bp.unreceived_bytes(now=1.2) == pytest.approx(300)


def _paired_link_camera(bp: Backpressure, frames: int, nbytes: int,
                        link_bps: float) -> list[tuple[float, float]]:
    """The paired camera over a FIFO link of ``link_bps`` that the
    estimate knows; receipts come back when a frame has crossed it. Returns (sent at, wait in
    the link's queue) of every frame processed."""
    edge_s, sent, link_free, crossing = 0.004, [], -math.inf, []
    bp.set_bandwidth(link_bps, now=0.0)
    for k, now in _paired_arrivals(frames):
        for seq, done in [c for c in crossing if c[1] <= now]:
            bp.receipt(seq, now=now)
            crossing.remove((seq, done))
        bp.set_bandwidth(link_bps, now=now)
        if bp.should_process_frame(now).process:
            bp.frame_processed(edge_s)
            bp.frame_sent(k, nbytes, now + edge_s)
            start = max(link_free, now + edge_s)
            link_free = start + nbytes * 8.0 / link_bps
            crossing.append((k, link_free))
            sent.append((now + edge_s, start - (now + edge_s)))
    return sent


def test_a_link_that_carries_the_camera_loses_no_frames_to_jitter_and_a_slow_one_no_slack():
    # 10 kB in 26.7 ms: the link carries 30 frames/s, and every frame of every pair goes (the
    # thesis's rule drops most second frames: the first is still on the link).
    fast = _paired_link_camera(Backpressure(ack_timeout_s=10.0), 300, 10_000, 3e6)
    assert len(fast) == 300
    assert max(wait for _, wait in fast) <= 10_000 * 8 / 3e6
    # 10 kB in 50 ms: a link slower than the camera gets no slack (the thesis's rule), so
    # no frame queues and the rate stays under the link's own 20 frames/s.
    slow = _paired_link_camera(Backpressure(ack_timeout_s=10.0), 300, 10_000, 1.6e6)
    rate = (len(slow) - 1) / (slow[-1][0] - slow[0][0])
    assert 14.0 <= rate < 20.0
    # (once the mean interval has settled: it starts at the first pair's 58 ms)
    assert max(wait for sent, wait in slow if sent > 2.0) <= 1e-9


def test_bandwidth_rule_processes_when_the_link_drains_in_time():
    bp = Backpressure(ack_timeout_s=10.0)
    bp.set_bandwidth(8_000_000, now=0.0)
    bp.frame_processed(0.030)  # a slow edge: 30 ms per frame
    bp.frame_sent(0, 20_000, now=0.0)  # 20 ms of link time: drained before the next is ready
    assert bp.should_process_frame(now=0.001).process


def test_without_an_estimate_at_most_n_frames_are_in_flight():
    bp = Backpressure(max_in_flight=2, ack_timeout_s=10.0)
    bp.frame_sent(0, 10, now=0.0)
    assert bp.should_process_frame(now=0.0).process
    bp.frame_sent(1, 10, now=0.0)
    decision = bp.should_process_frame(now=0.0)
    assert decision.reason == "in_flight" and math.isnan(decision.bandwidth_remain)
    bp.receipt(0)
    assert bp.should_process_frame(now=0.0).process
    assert bp.in_flight(now=0.0) == (1, 10)


def test_stale_or_invalid_estimates_fall_back_to_the_in_flight_cap():
    bp = Backpressure(max_in_flight=1, bandwidth_stale_s=2.0, ack_timeout_s=100.0)
    assert not bp.set_bandwidth(0.0, now=0.0)
    assert not bp.set_bandwidth(float("nan"), now=0.0)
    assert not bp.set_bandwidth(-5.0, now=0.0)
    assert bp.bandwidth_bps(now=0.0) is None
    assert bp.set_bandwidth(1e9, now=0.0)
    bp.frame_sent(0, 10, now=0.0)
    assert bp.should_process_frame(now=1.0).process  # fast link: 10 bytes drained long ago
    assert bp.unreceived_bytes(now=1.0) == 0.0
    assert bp.bandwidth_bps(now=3.0) is None
    assert bp.should_process_frame(now=3.0).reason == "in_flight"
    assert bp.unreceived_bytes(now=3.0) == 10.0


def test_unacknowledged_frames_expire():
    bp = Backpressure(max_in_flight=1, ack_timeout_s=0.5)
    bp.frame_sent(7, 100, now=0.0)
    assert bp.should_process_frame(now=0.4).reason == "in_flight"
    assert bp.should_process_frame(now=0.5).process
    assert bp.expired == 1
    assert not bp.receipt(7)  # a late receipt for a forgotten frame is ignored
    assert bp.acknowledged == 0


def test_duplicate_and_foreign_receipts_are_ignored():
    bp = Backpressure()
    bp.frame_sent(1, 100, now=0.0)
    assert bp.receipt(1)
    assert not bp.receipt(1)
    assert not bp.receipt(99)
    assert bp.acknowledged == 1


def test_client_latency_is_an_ewma_of_measurements():
    bp = Backpressure(latency_alpha=0.5)
    assert bp.client_latency_s is None
    bp.frame_processed(0.010)
    bp.frame_processed(0.030)
    assert bp.client_latency_s == pytest.approx(0.020)
    bp.frame_processed(float("nan"))
    bp.frame_processed(-1.0)
    assert bp.client_latency_s == pytest.approx(0.020)


def test_tracking_is_bounded():
    bp = Backpressure(max_tracked=3, ack_timeout_s=100.0)
    for seq in range(5):
        bp.frame_sent(seq, 1, now=0.0)
    assert bp.in_flight(now=0.0) == (3, 3)
    assert bp.expired == 2


def test_every_drop_reason_is_documented():
    reasons = set()
    bp = Backpressure(max_in_flight=1, server_rate_limit_s=1.0, ack_timeout_s=100.0)
    bp.frame_sent(0, 5, now=0.0)
    bp.frame_sent(1, 5, now=0.0)  # two frames' work queued at the server
    reasons.add(bp.should_process_frame(now=0.0).reason)
    bp.set_server_rate_limit(None)
    reasons.add(bp.should_process_frame(now=0.0).reason)
    bp.set_bandwidth(8.0, now=0.0)  # 1 byte/s: 10 bytes take 10 s
    reasons.add(bp.should_process_frame(now=0.0).reason)
    assert reasons == set(DROP_REASONS)


@pytest.mark.parametrize("kwargs", [{"max_in_flight": 0}, {"latency_alpha": 0.0},
                                    {"ack_timeout_s": 0.0}, {"bandwidth_stale_s": -1.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Backpressure(**kwargs)


# -- rate limiter -------------------------------------------------------------------------------


def accepted(limiter: RateLimiter, times) -> list[float]:
    return [t for t in times if limiter.allow(t)]


def test_unlimited_rate_accepts_everything():
    assert accepted(RateLimiter(0.0), [0.0, 0.0, 0.001]) == [0.0, 0.0, 0.001]


def test_rate_limit_keeps_every_third_frame_of_a_30hz_camera_at_10hz():
    times = [i / 30 for i in range(30)]
    assert len(accepted(RateLimiter(10.0), times)) == 10


def test_jitter_at_the_cap_is_tolerated():
    jitter = [0.0, 0.098, 0.203, 0.297, 0.401, 0.499]  # ±3 ms around 10 Hz
    assert accepted(RateLimiter(10.0), jitter) == jitter


def test_schedule_restarts_after_a_pause():
    limiter = RateLimiter(10.0)
    assert accepted(limiter, [0.0, 5.0, 5.05, 5.1]) == [0.0, 5.0, 5.1]


def test_set_rate_takes_effect_and_validates():
    limiter = RateLimiter(1.0)
    assert accepted(limiter, [0.0, 0.5]) == [0.0]
    limiter.set_rate(0.0)
    assert accepted(limiter, [0.6, 0.7]) == [0.6, 0.7]
    assert limiter.max_rate_hz == 0.0
    with pytest.raises(ValueError):
        limiter.set_rate(-1.0)
    with pytest.raises(ValueError):
        limiter.set_rate(float("inf"))


def test_a_lower_bound_estimate_does_not_pace_the_edge():
    bp = Backpressure(ack_timeout_s=10.0, max_in_flight=3)
    bp.frame_processed(0.005)
    bp.set_bandwidth(8_000, now=0.0)  # a capacity of 1000 bytes/s: each frame takes 1 s
    bp.frame_sent(0, 1000, now=0.0)
    bp.frame_sent(1, 1000, now=0.0)
    assert bp.should_process_frame(now=0.1).reason == "bandwidth"
    # The same number flagged as a lower bound (the link was not saturated) is not a
    # capacity: only the in-flight cap applies, and two frames in flight are below it.
    assert bp.set_bandwidth(8_000, now=0.1, lower_bound=True)
    assert bp.bandwidth_bps(now=0.1) is None
    assert bp.should_process_frame(now=0.1).process
    bp.frame_sent(2, 1000, now=0.1)
    assert bp.should_process_frame(now=0.2).reason == "in_flight"


def test_a_lower_bound_lets_frames_past_the_cap_only_when_they_drain_even_at_it():
    # A fast link and a slow server: receipts come back long after the bytes crossed.
    bp = Backpressure(ack_timeout_s=10.0, max_in_flight=2)
    bp.frame_processed(0.020)
    for seq in (0, 1):
        bp.frame_sent(seq, 10_000, now=0.0)
    assert bp.should_process_frame(now=0.01).reason == "in_flight"
    # At least 20 Mbit/s: 20 kB cross in 8 ms, long before the next frame is ready.
    assert bp.set_bandwidth(20e6, now=0.01, lower_bound=True)
    assert bp.bandwidth_bps(now=0.01) is None  # still not a capacity
    assert bp.should_process_frame(now=0.01).process
    # At least 1 Mbit/s says nothing about 20 kB draining in 20 ms: the cap holds.
    assert bp.set_bandwidth(1e6, now=0.01, lower_bound=True)
    assert bp.should_process_frame(now=0.01).reason == "in_flight"
    # A stale lower bound admits nothing, and a capacity estimate replaces it.
    assert bp.set_bandwidth(20e6, now=0.01, lower_bound=True)
    assert bp.should_process_frame(now=0.01 + bp.bandwidth_stale_s + 0.5).reason == "in_flight"
    assert bp.set_bandwidth(1e6, now=0.02)
    assert bp.should_process_frame(now=0.02).reason == "bandwidth"
