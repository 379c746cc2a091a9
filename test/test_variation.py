"""split_infer.adaptation.variation: the recent capacity as a distribution, restarted at a
level change (pure, simulated clock)."""

from __future__ import annotations

import numpy as np
import pytest
from test_scheduler import TICK_S, lagged_estimates

from split_infer.adaptation.variation import (
    CHANGE_SPREADS,
    ESTIMATE_NOISE,
    MIN_SAMPLES,
    RISE_ESTIMATES,
    STEADY_RISE_ESTIMATES,
    CapacityWindow,
)


def test_a_constant_link_keeps_one_window():
    rng = np.random.default_rng(1)
    window = CapacityWindow(10.0)
    for k in range(60):
        assert not window.add(k * TICK_S, 5e6 * (1 + 0.03 * rng.standard_normal()))
    assert window.restarts == 0 and len(window) == 20  # the last 10 s
    assert window.distribution(0.85).expected_bps == pytest.approx(0.85 * 5e6, rel=0.03)


def test_a_step_restarts_the_window_at_its_first_estimate():
    window = CapacityWindow(10.0)
    for k in range(20):
        window.add(k * TICK_S, 8e6)
    assert window.add(10.0, 1e6)
    assert len(window) == 1 and window.restarts == 1
    assert window.distribution().expected_bps == 1e6
    # Right after a restart nothing is tested: a second level is kept, not restarted again.
    assert not window.add(10.5, 2e6) and len(window) == 2


@pytest.mark.parametrize("relative, step", [(0.9, False), (1.1, True), (-0.9, False),
                                            (-1.1, True)])
def test_a_change_inside_the_noise_band_is_no_step(relative, step):
    window = CapacityWindow(10.0)
    for k in range(MIN_SAMPLES):
        window.add(k * TICK_S, 4e6)
    estimate = 4e6 * (1 + relative * CHANGE_SPREADS * ESTIMATE_NOISE)
    # A fall restarts at once; on a steady link a rise when STEADY_RISE_ESTIMATES in a row
    # confirm it.
    rise = STEADY_RISE_ESTIMATES
    # (each a new measurement: a steady window counts different estimates, not ticks)
    restarted = [window.add((MIN_SAMPLES + k) * TICK_S, estimate * (1 + 1e-4 * k))
                 for k in range(rise)]
    expected = [False] * rise
    if step:
        expected[0 if relative < 0 else -1] = True
    assert restarted == expected
    assert len(window) == (MIN_SAMPLES + rise if not step else rise)


def _varying_window() -> CapacityWindow:
    # 4 and 6 Mbit/s in turn: a spread of 1 Mbit/s, a fifth of the mean (draws, not noise)
    window = CapacityWindow(10.0)
    for k in range(10):
        window.add(k * TICK_S, (4e6, 6e6)[k % 2])
    return window


def _steady_window() -> CapacityWindow:
    window = CapacityWindow(10.0)
    for k in range(10):
        window.add(k * TICK_S, 5e6)
    return window


@pytest.mark.parametrize("make, held", [(_steady_window, k)
                                        for k in range(1, STEADY_RISE_ESTIMATES)]
                         + [(_varying_window, k) for k in range(1, RISE_ESTIMATES)])
def test_high_estimates_that_no_rise_confirms_are_left_out(make, held):
    window = make()
    mean = window.distribution().expected_bps
    for k in range(held):  # e.g. a probe train through a refilled burst allowance: 44 Mbit/s
        assert not window.add(5.0 + k * TICK_S, 44e6)
    assert not window.add(5.0 + held * TICK_S, 5e6)
    assert (window.restarts, window.outliers, len(window)) == (0, held, 11)
    assert window.distribution().expected_bps == pytest.approx((10 * mean + 5e6) / 11)


@pytest.mark.parametrize("method", ["add", "add_lower_bound"])
@pytest.mark.parametrize("make, needed", [(_steady_window, STEADY_RISE_ESTIMATES),
                                          (_varying_window, RISE_ESTIMATES)])
def test_a_rise_from_a_steady_link_needs_fewer_estimates_than_one_from_draws(make, needed,
                                                                             method):
    # A one-second draw of a Fig. 3 link spans two estimates; a step up from a link that held
    # one level does not need a third to tell it from noise. Lower bounds above the band count
    # towards a rise like estimates.
    window = make()
    add = getattr(window, method)
    restarted = [add(5.0 + k * TICK_S, 15e6 + k) for k in range(needed)]
    assert restarted == [False] * (needed - 1) + [True]
    assert len(window) == needed and window.restarts == 1
    assert window.distribution().expected_bps == pytest.approx(15e6)


def test_a_steady_link_rises_on_two_measurements_not_one_read_twice():
    # The monitor republishes a train's measurement until the next one; two ticks that read
    # the same train are one measurement. The prober's second train settles the rise.
    window = _steady_window()
    assert window.acts_at_once(15e6)
    assert not window.add(5.0, 15e6)
    assert not window.add(5.5, 15e6)  # the same train again
    assert window.restarts == 0
    assert window.add(5.6, 14.6e6)  # the second train
    assert window.restarts == 1 and len(window) == 2


def test_what_is_decided_on_at_once():
    steady, varying = _steady_window(), _varying_window()
    assert steady.acts_at_once(15e6)
    assert not varying.acts_at_once(15e6)  # draws rise on ticks, longer than one draw
    assert not steady.acts_at_once(1e6)  # a fall waits for the tick (values in between)
    assert not steady.acts_at_once(5.1e6)  # inside the band
    assert not CapacityWindow(10.0).acts_at_once(15e6)  # too few estimates to tell


@pytest.mark.parametrize("trace", ["gauss_mu5_sd3.csv", "gauss_mu3_sd2.csv"])
def test_one_second_draws_stay_in_one_window(trace):
    # Hu & K's Fig. 3 links: a new draw every second. The window must keep them together,
    # or planning over it is thresholding each draw again.
    window = CapacityWindow(10.0)
    for t, estimate in lagged_estimates(trace, 120.0):
        window.add(t, estimate)
    assert window.restarts <= 1
    assert window.spread_bps() > 1e6


@pytest.mark.parametrize("trace, changes", [("step_8_1_4mbps.csv", 2),
                                            ("outage_5mbps_10s.csv", 2)])
def test_steps_and_outages_restart_the_window_once_each(trace, changes):
    window = CapacityWindow(10.0)
    for t, estimate in lagged_estimates(trace, 90.0):
        window.add(t, estimate)
    assert window.restarts == changes


def test_old_estimates_leave_the_window():
    window = CapacityWindow(2.0)
    for k in range(10):
        window.add(k * TICK_S, 3e6)
    assert len(window) == 4  # 3.0, 3.5, 4.0, 4.5 s
    window.window_s = 0.0
    window.add(5.0, 3e6)
    assert len(window) == 1
    window.clear()
    assert len(window) == 0 and window.distribution() is None and window.spread_bps() == 0.0


@pytest.mark.parametrize("bound", [1e6, 5e6, 6.5e6])
def test_a_lower_bound_inside_or_under_the_band_leaves_the_window_as_it_was(bound):
    # "At least 1 Mbit/s" on a link measured at 4-6 says nothing the window does not hold:
    # neither a fall (a bound cannot show one) nor a new draw to plan with.
    window = _varying_window()
    before = window.distribution().expected_bps
    assert not window.add_lower_bound(5.0, bound)
    assert (len(window), window.restarts) == (10, 0)
    assert window.distribution().expected_bps == before


def test_a_window_of_lower_bounds_alone_ages_out():
    window = _steady_window()  # estimates at 0-4.5 s
    for k in range(30):
        window.add_lower_bound(5.0 + k * TICK_S, 5e6)
    assert len(window) == 0 and window.distribution() is None


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_unusable_values_are_refused(bad):
    with pytest.raises(ValueError, match="bits/s"):
        CapacityWindow(1.0).add_lower_bound(0.0, bad)
    with pytest.raises(ValueError, match="bits/s"):
        CapacityWindow(1.0).add(0.0, bad)
    with pytest.raises(ValueError, match="window_s"):
        CapacityWindow(bad)
