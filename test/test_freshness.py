"""Replay and freshness state that no single frame can poison (pipeline.freshness and the
ROS-free receiving half), with a stateful fuzz: genuine frames keep being served whatever an
unauthenticated publisher interleaves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from split_infer.codecs import get_codec
from split_infer.errors import FrameError
from split_infer.pipeline.freshness import FreshnessGuard, FreshnessSettings
from split_infer.pipeline.receiving import StreamReceiver
from split_infer.wire import Frame, decode_frame, encode_frame, format_string, pack

S = 10**9  # one second in ns
T0 = 1_700_000_000 * S


def serve(guard: FreshnessGuard, seq: int, stamp: int, now: int) -> str | None:
    reason = guard.check(seq, stamp, now)
    if reason is None:
        guard.served(seq, stamp, now)
    return reason


def test_a_genuine_stream_is_served_and_exact_repeats_are_not():
    guard = FreshnessGuard()
    for i in range(50):
        assert serve(guard, i, T0 + i * S // 30, T0 + i * S // 30 + 5_000_000) is None
    assert serve(guard, 10, T0 + 10 * S // 30, T0 + 2 * S) == "replayed"


def test_a_frame_from_the_future_is_refused_and_moves_nothing():
    guard = FreshnessGuard()
    assert serve(guard, 0, T0, T0) is None
    assert serve(guard, 1, T0 + 3600 * S, T0 + S // 30) == "future"
    # had it moved the newest stamp, every genuine frame would now be "too old"
    for i in range(1, 40):
        assert serve(guard, i, T0 + i * S // 30, T0 + i * S // 30) is None


def test_a_recording_of_old_frames_is_a_replay():
    guard = FreshnessGuard()
    for i in range(100):
        serve(guard, i, T0 + i * S // 10, T0 + i * S // 10)
    # an hour later the attacker replays frame 3 with a re-sealed CRC: old in seq and stamp
    now = T0 + 20 * S
    guard.settings.remembered = 10  # frame 3 is no longer in the exact-repeat memory
    for i in range(100, 130):
        serve(guard, i, T0 + i * S // 10, T0 + i * S // 10)
    assert serve(guard, 3, T0 + 3 * S // 10, now) == "replayed"


def test_a_clock_step_back_is_followed_from_its_first_frame():
    guard = FreshnessGuard()
    for i in range(30):
        serve(guard, i, T0 + i * S // 30, T0 + i * S // 30)
    stepped = T0 - 60 * S  # NTP stepped the robot's clock back a minute; seq moves on
    for i in range(30, 70):
        assert serve(guard, i, stepped + i * S // 30, T0 + i * S // 30) is None


def test_a_restarted_sender_is_followed_from_its_first_frame():
    guard = FreshnessGuard()
    for i in range(30):
        serve(guard, i, T0 + i * S // 30, T0 + i * S // 30)
    for i in range(40):  # seq from 0 again, stamps moving on
        assert serve(guard, i, T0 + 2 * S + i * S // 30, T0 + 2 * S + i * S // 30) is None


def test_a_restart_with_the_clock_stepped_back_recovers_within_recover_after():
    guard = FreshnessGuard(FreshnessSettings(recover_after=1.0))
    for i in range(30):
        assert serve(guard, i, T0 + i * S // 30, T0 + i * S // 30) is None
    # a reboot with a wrong RTC: seq from 0 and the clock a minute behind
    outcomes = [serve(guard, i, T0 - 60 * S + i * S // 30, T0 + S + i * S // 30)
                for i in range(60)]
    first = outcomes.index(None)
    assert set(outcomes[:first]) == {"replayed"} and first <= 31  # about one second
    assert all(o is None for o in outcomes[first:])


def test_a_late_frame_inside_the_window_is_served_without_moving_the_newest():
    guard = FreshnessGuard()
    for i in (0, 1, 2, 4, 5):
        assert serve(guard, i, T0 + i * S, T0 + i * S) is None
    assert serve(guard, 3, T0 + 3 * S, T0 + 5 * S) is None  # reordered by the network
    assert serve(guard, 6, T0 + 6 * S, T0 + 6 * S) is None


@pytest.mark.parametrize("window", [0.0, 10.0])
def test_window_zero_refuses_only_exact_repeats(window):
    guard = FreshnessGuard(FreshnessSettings(window=window))
    serve(guard, 5, T0, T0)
    expected = None if window == 0 else "replayed"
    assert serve(guard, 4, T0 - 3600 * S, T0) == expected
    assert serve(guard, 5, T0, T0) == "replayed"


# -- the receiving half on real wire frames ---------------------------------------------------

CODEC = get_codec("quant:bits=8+raw")
KNOWN = {(3, 8.0)}
FEATURES = np.random.default_rng(0).normal(size=(4, 2, 2)).astype(np.float32)
FMT = format_string(CODEC.spec)


def wire(seq: int, stamp: int, split: int = 3) -> bytes:
    return pack(CODEC, FEATURES, split_point=split, ratio=8.0, seq=seq, stamp_ns=stamp)


def engine(frame: Frame):
    """A stand-in for the decoder + tail: knows one configuration."""
    if frame.config not in KNOWN:
        raise FrameError("unknown_config", f"no route for {frame.config}")
    return frame, frame.seq


class ReceiverUnderAttack(RuleBasedStateMachine):
    """A genuine sender at 30 fps (which may restart, and whose clock may drift within what
    the guarantee covers: no more than window - future_tolerance behind the receiver, less
    than future_tolerance ahead) against a publisher that sends anything a CRC allows.

    Invariants: every genuine frame is served, and no replay of a genuine frame is."""

    def __init__(self) -> None:
        super().__init__()
        self.receiver = StreamReceiver("/r1")
        self.now = T0
        self.clock_offset = 0  # the robot's clock minus the receiver's
        self.seq = 0
        self.sent: list[bytes] = []
        self.genuine_refused: list[str | None] = []
        self.replays_served = 0

    def _deliver(self, data: bytes) -> str | None:
        return self.receiver.receive(data, FMT, 0, self.now, engine).reason

    @rule()
    def genuine_frame(self) -> None:
        self.now += S // 30
        data = wire(self.seq, self.now + self.clock_offset - 5_000_000)
        self.seq += 1
        self.sent.append(data)
        reason = self._deliver(data)
        if reason is not None:
            self.genuine_refused.append(reason)

    @rule(offset_ms=st.integers(-7_000, 1_900))
    def robot_clock_drifts(self, offset_ms: int) -> None:
        self.clock_offset = offset_ms * 1_000_000

    @rule()
    def robot_restarts(self) -> None:
        self.seq = 0

    @rule(index=st.integers(0, 10**6))
    def replay_a_genuine_frame(self, index: int) -> None:
        if self.sent and self._deliver(self.sent[index % len(self.sent)]) is None:
            self.replays_served += 1

    @rule(index=st.integers(0, 10**6), seq=st.integers(0, 2**64 - 1),
          stamp=st.integers(-(2**62), 2**62), split=st.sampled_from([3, 7]))
    def forge_from_a_genuine_frame(self, index: int, seq: int, stamp: int, split: int) -> None:
        """A copy of a genuine frame with any seq, stamp or configuration, CRC recomputed."""
        if not self.sent:
            return
        frame = decode_frame(self.sent[index % len(self.sent)])
        forged = Frame(**{**frame.__dict__, "seq": seq, "stamp_ns": stamp, "split_point": split})
        self._deliver(encode_frame(forged))

    @rule(seq=st.integers(0, 2**40), offset_ms=st.integers(-7_200_000, 7_200_000))
    def stamp_relative_to_now(self, seq: int, offset_ms: int) -> None:
        self._deliver(wire(seq, self.now + offset_ms * 1_000_000))

    @rule(data=st.binary(max_size=80))
    def garbage(self, data: bytes) -> None:
        self._deliver(data)

    @invariant()
    def genuine_frames_keep_being_served(self) -> None:
        assert not self.genuine_refused, self.genuine_refused
        assert self.replays_served == 0


ReceiverUnderAttack.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
#: The stateful fuzz (CI: 150 sequences of up to 60 steps; the benchmark runs 10**6 frames).
TestReceiverUnderAttack = ReceiverUnderAttack.TestCase


@pytest.mark.parametrize("authenticated", [False, True], ids=["open", "authenticated"])
def test_the_fuzz_benchmark_s_invariants_hold_on_a_short_run(authenticated):
    """The benchmark's generator (10**6 messages there) on 3000 messages: genuine frames are
    all served; with authentication no replay is either."""
    from split_infer.tools.bench.receiver_fuzz import _stand_in, fuzz_stream

    make_wire, fmt, decode = _stand_in(known_split=3)
    run = fuzz_stream(3000, make_wire, fmt, decode, 3, seed=5, progress=False,
                      authenticated=authenticated)
    assert run["invariants_hold"] and not run["genuine_refused"], run
    assert run["genuine"] > 800 and len(run["outcomes"]) >= 8
    if authenticated:
        assert run["replays_served"] == 0 and run["rejects"].get("unauthenticated", 0) > 500
