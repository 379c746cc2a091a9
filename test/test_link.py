"""split_infer.tools.link: trace files, the FIFO shaper and the delivery loop."""

from __future__ import annotations

import importlib.util
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from split_infer.tools.link import (
    TRACE_HEADER,
    EmulatedLink,
    LinkShaper,
    Trace,
    TraceError,
    constant_trace,
    gaussian_trace,
    load_trace,
    outage_trace,
    step_trace,
    trace_text,
    write_trace,
)

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "config" / "traces"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_traces", TRACES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- trace files ---------------------------------------------------------------------------

def test_committed_traces_load_and_match_their_generator():
    generate = _generator()
    expected = generate.traces()
    files = sorted(p.stem for p in TRACES.glob("*.csv"))
    assert files == sorted(expected)
    for name, (trace, _) in expected.items():
        loaded = load_trace(TRACES / f"{name}.csv")
        assert loaded.rows() == trace.rows()
    assert generate.main(["--check"]) == 0


def test_committed_traces_cover_the_issue():
    rates = {p.stem: load_trace(p) for p in TRACES.glob("*.csv")}
    for name, rate in (("const_100kbps", 100e3), ("const_1mbps", 1e6), ("const_5mbps", 5e6),
                       ("const_20mbps", 20e6)):
        assert rates[name].rate_at(1000.0) == rate
    step = rates["step_8_1_4mbps"]
    assert [step.rate_at(t) for t in (10, 40, 70)] == [8e6, 1e6, 4e6]
    outage = rates["outage_5mbps_10s"]
    assert [outage.rate_at(t) for t in (10, 25, 35)] == [5e6, 0.0, 5e6]
    gaussian = [t for name, t in rates.items() if name.startswith("gauss_")]
    assert len(gaussian) >= 3
    for trace in gaussian:
        assert np.all(np.diff(trace.times_s) == 1.0) and np.all(trace.rates_bps > 0)


def test_check_mode_notices_a_stale_file(tmp_path):
    generate = _generator()
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--out", str(tmp_path), "--check"]) == 0
    target = tmp_path / "const_1mbps.csv"
    target.write_text(target.read_text().replace("1000000", "999999"))
    assert generate.main(["--out", str(tmp_path), "--check"]) == 1


def test_write_then_load_round_trips(tmp_path):
    trace = Trace.from_rows([(0, 1e6, 5, 0), (2.5, 0, 5, 0), (3, 123456.5, 0.25, 0.125)])
    path = write_trace(trace, tmp_path / "x.csv", "two lines\nof comment")
    assert path.read_text().startswith("# two lines\n# of comment\n" + ",".join(TRACE_HEADER))
    assert load_trace(path).rows() == trace.rows()
    assert trace_text(trace) == path.read_text().split("\n", 2)[2]


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty trace"),
    ("# only a comment\n", "empty trace"),
    ("time_s,rate_bps,delay_ms,loss\n", "no rows"),
    ("time,rate,delay,loss\n0,1,1,0\n", "header must be"),
    ("time_s,rate_bps,delay_ms,loss\n0,1e6,10\n", "expected 4 values"),
    ("time_s,rate_bps,delay_ms,loss\n0,fast,10,0\n", "not a number"),
    ("time_s,rate_bps,delay_ms,loss\n1,1e6,10,0\n", "first row must start at time_s = 0"),
    ("time_s,rate_bps,delay_ms,loss\n0,1e6,10,0\n0,2e6,10,0\n", "increase strictly"),
    ("time_s,rate_bps,delay_ms,loss\n0,-1,10,0\n", "rate_bps must be >= 0"),
    ("time_s,rate_bps,delay_ms,loss\n0,1e6,-1,0\n", "delay_ms must be >= 0"),
    ("time_s,rate_bps,delay_ms,loss\n0,1e6,10,1\n", "loss is a probability"),
    ("time_s,rate_bps,delay_ms,loss\n0,inf,10,0\n", "finite"),
])
def test_bad_trace_files_say_where_and_why(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message) as info:
        load_trace(path)
    assert str(path) in str(info.value)


def test_bad_rows_in_code_are_trace_errors():
    for rows in ([], [(0, 1e6, 10)], [(0, 1e6, 10, 0), (1, 2e6)], [(0, "x", 1, 0)]):
        with pytest.raises(TraceError):
            Trace.from_rows(rows)


def test_missing_and_binary_files_are_trace_errors(tmp_path):
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "nope.csv")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError):
        load_trace(binary)


def test_gaussian_trace_is_seeded_and_has_the_asked_moments():
    a = gaussian_trace(6e6, 2e6, 3000, seed=7)
    b = gaussian_trace(6e6, 2e6, 3000, seed=7)
    assert a.rows() == b.rows()
    assert gaussian_trace(6e6, 2e6, 3000, seed=8).rows() != a.rows()
    assert len(a.times_s) == 3000
    assert a.rates_bps.mean() == pytest.approx(6e6, rel=0.03)
    assert a.rates_bps.std() == pytest.approx(2e6, rel=0.06)


# -- fluid transfers -------------------------------------------------------------------------

def test_transfer_integrates_across_rate_changes_and_outages():
    assert outage_trace(1e6, 2, 1).transmit_end(1.5, 1e6) == pytest.approx(3.5)
    trace = step_trace([(0, 1e6), (1, 2e6), (2, 0), (3, 4e6)])
    assert trace.transmit_end(0.5, 1.5e6) == pytest.approx(1.5)  # 0.5 Mbit, then 1 Mbit at 2
    assert trace.transmit_end(1.5, 2e6) == pytest.approx(3.25)  # 1 Mbit, outage, 1 Mbit at 4
    assert trace.bits_between(0, 4) == pytest.approx(1e6 + 2e6 + 0 + 4e6)
    assert trace.mean_rate_bps(0, 2) == pytest.approx(1.5e6)
    assert math.isinf(step_trace([(0, 1e6), (1, 0)]).transmit_end(0.5, 1e6))


# -- the shaper ---------------------------------------------------------------------------

def test_back_to_back_frames_leave_at_the_link_rate():
    shaper = LinkShaper(constant_trace(1e6, delay_ms=20), queue_limit_bytes=10_000)
    deliveries = [shaper.send(0.0, 1000) for _ in range(5)]
    assert deliveries == pytest.approx([0.008 * (k + 1) + 0.020 for k in range(5)])
    assert shaper.backlog_bytes(0.0) == 5000
    assert shaper.backlog_bytes(0.0161) == 3000


def test_full_queue_drops_at_the_tail():
    shaper = LinkShaper(constant_trace(1e6), queue_limit_bytes=2500)
    results = [shaper.send(0.0, 1000) for _ in range(4)]
    assert [r is None for r in results] == [False, False, True, True]
    assert shaper.stats.dropped_queue == 2 and shaper.last_drop_reason == "queue_full"
    assert shaper.send(0.0081, 1000) is not None  # the first one has left


def test_saturated_link_delivers_its_rate():
    trace = constant_trace(3e6)
    shaper = LinkShaper(trace, queue_limit_bytes=60_000)
    delivered = [shaper.send(k / 50, 15_000) for k in range(1000)]  # 6 Mbit/s offered
    arrived = sorted(d for d in delivered if d is not None)
    rate = 8 * 15_000 * (len(arrived) - 1) / (arrived[-1] - arrived[0])
    assert rate == pytest.approx(3e6, rel=1e-6)
    assert shaper.stats.dropped_queue > 400


def test_losses_follow_the_trace_and_still_use_the_link():
    shaper = LinkShaper(Trace.from_rows([(0, 1e6, 0, 0.2)]), queue_limit_bytes=10**9, seed=3)
    results = [shaper.send(0.0, 100) for _ in range(5000)]
    lost = sum(r is None for r in results)
    assert lost == shaper.stats.lost and 0.17 < lost / 5000 < 0.23
    last = max(r for r in results if r is not None)
    assert last == pytest.approx(5000 * 800 / 1e6, abs=0.01)  # lost frames took link time too


def test_the_link_never_reorders_when_the_delay_drops():
    trace = Trace.from_rows([(0, 1e6, 500, 0), (0.1, 1e6, 1, 0)])
    shaper = LinkShaper(trace)
    first = shaper.send(0.0, 10_000)  # leaves at 0.08 with 500 ms delay
    second = shaper.send(0.15, 100)  # leaves at 0.1508 with 1 ms delay
    assert second >= first


def test_a_trailing_outage_means_never():
    shaper = LinkShaper(step_trace([(0, 1e6), (1, 0)]))
    assert math.isinf(shaper.send(0.99, 10_000))
    assert shaper.send(1.5, 10_000) is not None  # queued behind it, also never
    assert shaper.backlog_bytes(100.0) == 20_000


def test_shaper_rejects_bad_input():
    shaper = LinkShaper(constant_trace(1e6))
    shaper.send(1.0, 10)
    with pytest.raises(ValueError, match="decrease"):
        shaper.send(0.5, 10)
    with pytest.raises(ValueError):
        shaper.send(2.0, 0)
    with pytest.raises(ValueError):
        LinkShaper(constant_trace(1e6), queue_limit_bytes=0)


# -- the delivery loop -------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_poll_delivers_in_order_at_the_delivery_times():
    clock = FakeClock()
    got: list[bytes] = []
    link = EmulatedLink(LinkShaper(constant_trace(1e6, delay_ms=10)), got.append, clock)
    assert link.send(b"a" * 1000) == pytest.approx(0.018)
    assert link.send(b"b" * 1000) == pytest.approx(0.026)
    clock.t += 0.017
    assert link.poll() == 0 and link.pending == 2
    clock.t += 0.002
    assert link.poll() == 1 and got == [b"a" * 1000]
    assert link.next_due_s() == pytest.approx(0.026)
    clock.t += 1
    assert link.poll() == 1 and got[-1] == b"b" * 1000 and link.next_due_s() is None


def test_dropped_payloads_are_reported_and_never_delivered():
    clock = FakeClock()
    got: list[bytes] = []
    link = EmulatedLink(LinkShaper(constant_trace(1e6), queue_limit_bytes=1500), got.append,
                        clock)
    assert link.send(b"x" * 1000) is not None
    assert link.send(b"y" * 1000) is None
    clock.t += 10
    link.poll()
    assert got == [b"x" * 1000]


def test_a_failing_receiver_does_not_stop_the_link():
    clock = FakeClock()
    got: list[int] = []

    def deliver(payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("receiver bug")
        got.append(len(payload))

    link = EmulatedLink(LinkShaper(constant_trace(1e6)), deliver, clock)
    link.send(b"bad")
    link.send(b"good")
    clock.t += 1
    assert link.poll() == 2
    assert got == [4] and link.callback_errors == 1 and link.delivered == 1


def test_restart_goes_back_to_the_start_of_the_trace():
    clock = FakeClock()
    link = EmulatedLink(LinkShaper(step_trace([(0, 1e6), (5, 1e3)])), lambda p: None, clock)
    clock.t += 10
    assert link.now_s() == pytest.approx(10)
    link.send(b"z" * 100)
    link.restart()
    assert link.now_s() == 0 and link.pending == 0
    assert link.send(b"z" * 125) == pytest.approx(0.001 + 0.010)  # 1 Mbit/s again


def test_own_thread_delivers_everything_in_order():
    got: list[int] = []
    done = threading.Event()

    def deliver(payload: bytes) -> None:
        got.append(payload[0])
        if len(got) == 20:
            done.set()

    link = EmulatedLink(LinkShaper(constant_trace(8e6, delay_ms=1)), deliver)
    link.start()
    try:
        for k in range(20):
            link.send(bytes([k]) * 500)
        assert done.wait(10.0), "the link thread did not deliver"
    finally:
        link.stop()
    assert got == list(range(20))
