"""The demo's frame ledger: labels paired with results by stamp, dropped frames settled as
wrong, and memory that does not grow with dicts per frame (what the 1-hour soak relies on)."""

import tracemalloc

import numpy as np

from split_infer.tools.demo.graph import FrameLedger, _Sample, _window_series


def test_pairs_results_with_labels_in_either_order_and_counts_drops_as_wrong():
    ledger = FrameLedger(settle_s=5.0)
    ledger.label(1, 0.0, 10, 3)
    ledger.label(2, 0.1, 11, 4)
    ledger.result(1, 0.2, 3, 7.0, 32.0, 12.5)  # right
    ledger.result(3, 0.25, 9, 7.0, 32.0, 20.0)  # result before its label
    ledger.label(3, 0.3, 12, 5)  # ... which says 5: wrong
    ledger.label(4, 0.4, 13, 6)  # never answered
    assert ledger.counts() == (4, 2, 1)
    ledger.expire(now_s=5.2)  # frame 2 (t 0.1) is older than 5 s, frame 4 not yet
    assert ledger.counts() == (4, 2, 1)
    frames = ledger.frames(until_s=10.0)
    assert [f["bag_index"] for f in frames] == [10, 11, 12, 13]
    assert [f["predicted"] for f in frames] == [3, None, 9, None]
    assert frames[0] == {"t_s": 0.0, "bag_index": 10, "label": 3, "predicted": 3,
                         "split_point": 7.0, "ratio": 32.0, "latency_ms": 12.5}
    assert frames[1]["latency_ms"] is None and frames[1]["split_point"] is None
    assert [f["bag_index"] for f in ledger.frames(until_s=0.25)] == [10, 11]


def test_counts_since_a_time_cover_settled_and_waiting_frames():
    ledger = FrameLedger(settle_s=1.0)
    for i in range(10):
        ledger.label(i, float(i), i, i % 2)
    for i in range(0, 10, 2):
        ledger.result(i, i + 0.1, 0, 4.0, 8.0, 5.0)  # even frames: label 0, right
    ledger.expire(now_s=7.5)  # odd frames 1, 3, 5 settle as dropped; 7 and 9 still wait
    assert ledger.counts(since_s=4.0) == (6, 3, 3)
    assert ledger.counts(since_s=9.0) == (1, 0, 0)
    assert ledger.counts() == (10, 5, 5)


def test_a_result_without_a_label_is_counted_not_kept():
    ledger = FrameLedger(settle_s=2.0)
    ledger.result(99, 0.0, 1, 4.0, 8.0, 5.0)
    ledger.expire(now_s=3.0)
    assert ledger.results_without_label == 1
    assert ledger.counts() == (0, 0, 0)
    assert ledger.frames(until_s=10.0) == []


def test_settled_frames_cost_tens_of_bytes_each():
    ledger = FrameLedger(settle_s=1.0)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(20_000):
        ledger.label(i, i / 30, i, i % 10)
        ledger.result(i, i / 30 + 0.01, i % 10, 10.0, 32.0, 15.0)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # 7 packed columns are 32 B/frame (array growth adds up to ~1/8); a dict per frame was ~500
    assert grown / 20_000 < 64, f"{grown / 20_000:.0f} bytes per settled frame"
    assert ledger.counts() == (20_000, 20_000, 20_000)


def test_window_series_uses_only_the_samples_inside_each_window():
    samples = [_Sample(t=t, rate_bps=1e6, estimate_bps=None, lower_bound=False, stale=False,
                       split_point=None, ratio=None, generated=int(30 * t),
                       correct=int(15 * t), delivered=int(30 * t)) for t in np.arange(0, 10, 0.5)]
    rows = _window_series(samples, window_s=2.0)
    assert rows[0]["delivered_fps"] is None
    for row in rows[4:]:
        assert abs(row["delivered_fps"] - 30) < 1e-6
        assert abs(row["effective_accuracy"] - 0.5) < 1e-6


def test_status_line_reads_the_estimate_as_capacity_and_marks_a_silence_cap():
    from collections import deque
    from types import SimpleNamespace

    from split_infer.tools.demo.graph import _status_line

    def line(lower_bound: bool, stale: bool, probing: bool, split: float = 9.0) -> str:
        sample = _Sample(t=20.0, rate_bps=4e6, estimate_bps=3.9e6, lower_bound=lower_bound,
                         stale=stale, split_point=split, ratio=20.8, generated=600,
                         correct=500, delivered=580)
        recorder = SimpleNamespace(samples=[sample], counts=lambda since: (60, 58, 50),
                                   relay=SimpleNamespace(elapsed_s=lambda: 20.0),
                                   recent_bytes=deque([3000, 3100]))
        return _status_line(recorder, 2.0, probing)

    assert "est 3.90 |" in line(lower_bound=True, stale=False, probing=True)
    assert "est ≥3.90 |" in line(lower_bound=True, stale=False, probing=False)
    assert "est 3.90 (silent) |" in line(lower_bound=False, stale=True, probing=True)
    text = line(lower_bound=False, stale=False, probing=True)
    assert "split 9 ratio 20.8" in text and "29.0 fps" in text and "ν_eff 0.83" in text
    assert "split edge-only ratio -" in line(False, False, True, split=-1.0)
