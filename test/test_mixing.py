"""Two configurations time-shared frame by frame (split_infer.planning.mixing)."""

import math

import numpy as np
import pytest

from split_infer.planning import Configuration, effective_accuracy, pipeline_throughput_hz
from split_infer.planning.mixing import best_mix, best_share, mix_rate_hz

T_GEN = 30.0
#: A late split on a weak robot (robot-bound) and an early one (link-bound at 1 Mbit/s).
LATE = Configuration(name="late", bytes_per_frame=3000, accuracy=0.88, edge_s=0.050, cloud_s=0.005)
EARLY = Configuration(name="early", bytes_per_frame=10000, accuracy=0.88, edge_s=0.015,
                      cloud_s=0.015)


def test_the_robot_bound_and_the_link_bound_split_share_the_frames_where_both_are_busy():
    # robot 0.050 − 0.035·x, link 0.024 + 0.056·x (s per frame): equal at x = 0.026/0.091,
    # 0.040 s per frame, 25 frames/s, where either alone gives 20 (robot) or 12.5 (link).
    share, value = best_share(LATE, EARLY, 1e6, T_GEN)
    assert share == pytest.approx(0.026 / 0.091)
    assert mix_rate_hz(LATE, EARLY, share, 1e6, T_GEN) == pytest.approx(25.0)
    assert value == pytest.approx(25.0 * 0.88 / T_GEN)
    assert value > effective_accuracy(LATE, 1e6, T_GEN) > effective_accuracy(EARLY, 1e6, T_GEN)


def test_alone_a_configuration_is_hu_and_k_s_pipeline():
    for config in (LATE, EARLY):
        for bandwidth in (1e5, 1e6, 1e7):
            assert mix_rate_hz(config, EARLY, 0.0, bandwidth, T_GEN) == pytest.approx(
                pipeline_throughput_hz(config, bandwidth, T_GEN))
            assert mix_rate_hz(LATE, config, 1.0, bandwidth, T_GEN) == pytest.approx(
                pipeline_throughput_hz(config, bandwidth, T_GEN))


def test_the_best_share_is_the_best_of_a_fine_grid():
    rng = np.random.default_rng(7)
    grid = np.linspace(0.0, 1.0, 2001)
    for _ in range(200):
        a, b = (Configuration(name=name, bytes_per_frame=float(rng.uniform(500, 60000)),
                              accuracy=float(rng.uniform(0.3, 0.9)),
                              edge_s=float(rng.uniform(0.005, 0.1)),
                              cloud_s=float(rng.uniform(0.001, 0.03))) for name in "ab")
        bandwidth = float(rng.uniform(1e5, 2e7))
        share, value = best_share(a, b, bandwidth, T_GEN)
        on_grid = max((mix_rate_hz(a, b, x, bandwidth, T_GEN)
                       * ((1 - x) * a.accuracy + x * b.accuracy) / T_GEN) for x in grid)
        assert value >= on_grid - 1e-12
        assert value == pytest.approx(mix_rate_hz(a, b, share, bandwidth, T_GEN) * (
            (1 - share) * a.accuracy + share * b.accuracy) / T_GEN)
        assert value <= on_grid + 2e-3  # the grid comes close to the exact optimum


def test_a_companion_joins_only_where_it_adds_effective_accuracy():
    mixed = best_mix([LATE, EARLY], LATE, 1e6, T_GEN)
    assert mixed.companion is EARLY and mixed.name == "late+early"
    assert mixed.share == pytest.approx(0.026 / 0.091)
    # On a fast link the early split alone keeps up with the camera (robot 0.015 s/frame):
    # nothing to share, and the early split is nobody's companion by the larger share.
    alone = best_mix([LATE, EARLY], EARLY, 1e8, T_GEN)
    assert alone.companion is None and alone.share == 0.0 and alone.name == "early"
    assert alone.effective_accuracy == pytest.approx(0.88)
    # A gain below min_gain is not worth a second configuration.
    assert best_mix([LATE, EARLY], LATE, 1e6, T_GEN, min_gain=0.2).companion is None


def test_the_whole_model_is_no_companion_and_a_dead_link_carries_nothing():
    whole = Configuration(name="whole", bytes_per_frame=0, accuracy=0.9, edge_s=0.08, cloud_s=0.0,
                          kind="client_only")
    assert best_mix([LATE, whole], LATE, 1e5, T_GEN).companion is None
    assert mix_rate_hz(LATE, EARLY, 0.3, 0.0, T_GEN) == 0.0
    assert best_share(LATE, EARLY, 0.0, T_GEN) == (0.0, 0.0)
    assert mix_rate_hz(whole, whole, 0.0, 0.0, T_GEN) == pytest.approx(1 / 0.08)


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ValueError, match="share"):
        mix_rate_hz(LATE, EARLY, share, 1e6, T_GEN)


def test_a_blend_is_the_mix_as_one_configuration_for_every_planner():
    from split_infer.planning import expected_effective_accuracy
    from split_infer.planning.bandwidth import bandwidth_distribution
    from split_infer.planning.mixing import MixedConfiguration, blend

    mixed = blend(LATE, EARLY, 0.3)
    assert isinstance(mixed, MixedConfiguration) and mixed.name == "late+early"
    assert (mixed.primary, mixed.companion, mixed.share) == (LATE, EARLY, 0.3)
    for bandwidth in (2e5, 1e6, 3e6, 3e7):
        assert effective_accuracy(mixed, bandwidth, T_GEN) == pytest.approx(
            mix_rate_hz(LATE, EARLY, 0.3, bandwidth, T_GEN) * 0.88 / T_GEN)
    draws = bandwidth_distribution(1e6, 3e5)
    assert 0 < expected_effective_accuracy(mixed, draws, T_GEN) < 0.88
    for share in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="share"):
            blend(LATE, EARLY, share)


def test_companion_mixes_pair_what_trades_robot_time_for_bytes():
    from split_infer.planning.mixing import companion_mixes

    # Cheaper in both: no trade-off, never a companion.
    cheaper = Configuration(name="cheaper", bytes_per_frame=2000, accuracy=0.5, edge_s=0.01,
                            cloud_s=0.005)
    mixes = companion_mixes([LATE, EARLY, cheaper], 1e6, T_GEN, min_gain=0.01)
    assert [(m.name, round(m.share, 4)) for m in mixes] == [("late+early", round(0.026 / 0.091,
                                                                                  4))]
    # On a fast link the late split gains the camera's rate from the early one, which
    # already has it alone and gains nothing.
    fast = companion_mixes([LATE, EARLY], 1e8, T_GEN)
    assert [m.name for m in fast] == ["late+early"]
    assert effective_accuracy(fast[0], 1e8, T_GEN) == pytest.approx(0.88)


def test_a_running_mix_is_kept_among_the_mixes_whatever_its_gain():
    from split_infer.planning.mixing import blend, companion_mixes

    running = blend(LATE, EARLY, 0.3)
    # At 1e8 the early split is camera-bound alone: as its own primary it gains nothing, and
    # the late split's mix is proposed at the share that reaches the camera's rate.
    kept = companion_mixes([EARLY], 1e8, T_GEN, keep=running)
    assert kept == []  # its parts are not both planned: nothing to keep
    kept = companion_mixes([LATE, EARLY], 1e8, T_GEN, min_gain=0.5, keep=running)
    assert [m.name for m in kept] == ["late+early"]
    assert kept[0].share == pytest.approx(0.476, abs=1e-3)  # its best share now
