"""The soak benchmark's analysis on synthetic samples (the soak itself runs for an hour, outside
CI)."""

import pytest

from split_infer.tools.bench import soak


def test_slopes_and_counts_after_the_warm_up():
    # 10 minutes sampled every 10 s: RSS +0.5 MB/min after a 2-minute warm-up in which it
    # jumps, fds flat at 40 with one spike, 30 fps delivered throughout.
    rows = []
    for i in range(61):
        t = 10.0 * i
        rss = 300.0 + (50.0 if t >= 60 else 0.0) + 0.5 * t / 60
        fds = 41 if i == 30 else 40
        rows.append((t, rss, fds, int(30 * t)))
    result = soak.analyse(rows, warmup_s=120.0)
    assert result["rss_slope_mb_per_min"] == pytest.approx(0.5, abs=1e-6)
    assert (result["fds_start"], result["fds_end"], result["fds_max"]) == (40, 40, 41)
    assert all(f == pytest.approx(30.0) for f in result["fps_per_minute"])
    assert result["fps_drift_per_hour"] == pytest.approx(0.0, abs=1e-6)
    assert result["measured_minutes"] == pytest.approx(8.0)


def test_too_short_a_run_is_refused():
    with pytest.raises(ValueError, match="run longer"):
        soak.analyse([(0.0, 1.0, 1, 0), (10.0, 1.0, 1, 1)], warmup_s=5.0)
