"""split_infer.planning: latency model, split selection, DP partition, thresholds, E[ν_eff]."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from split_infer.adaptation.policy import Hysteresis, choose_configuration
from split_infer.planning import (
    UPLINK_POWER_MODELS,
    Configuration,
    EmpiricalBandwidth,
    GaussianBandwidth,
    acceptable_configurations,
    brute_force_partition,
    crossover_bandwidth_bps,
    crossover_bandwidths_bps,
    effective_accuracy,
    eq3_threshold_bps,
    evaluate_partition,
    expected_effective_accuracy,
    expected_pipeline_throughput_hz,
    expected_throughput_hz,
    fallback_rates_hz,
    fallback_throughput_hz,
    latency_regions,
    mobile_energy_j,
    paper_fig3_configurations,
    partition_layers,
    pipeline_throughput_hz,
    plot_effective_accuracy_sweep,
    plot_latency_vs_bandwidth,
    select_split,
    simulate_pipeline,
    smallest_per_split,
    sweep_expected_effective_accuracy,
    threshold_policy,
    throughput_upper_bound_hz,
    total_latency_s,
)
from split_infer.planning.bandwidth import normal_cdf, normal_pdf

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_GEN = 10.0


def split(name, nbytes, accuracy, edge_s, cloud_s, **kw):
    return Configuration(
        name=name, bytes_per_frame=nbytes, accuracy=accuracy, edge_s=edge_s, cloud_s=cloud_s, **kw
    )


CLIENT = Configuration(
    name="client", kind="client_only", bytes_per_frame=0, accuracy=0.90, edge_s=0.100, cloud_s=0.0
)
SPLIT = split("split4", 10_000, 0.89, 0.020, 0.005, split_point=4)
SERVER = Configuration(
    name="server",
    kind="server_only",
    bytes_per_frame=100_000,
    accuracy=0.90,
    edge_s=0.002,
    cloud_s=0.003,
)
RTT = 0.005


# --- configuration -------------------------------------------------------------------------


def test_configuration_round_trips_through_a_dict_and_rejects_bad_values():
    assert Configuration.from_dict(SPLIT.to_dict()) == SPLIT
    with pytest.raises(ValueError, match="percentage"):
        split("pct", 1000, 90.2, 0.01, 0.01)
    with pytest.raises(ValueError, match="unknown"):
        Configuration.from_dict({**SPLIT.to_dict(), "bytes": 3})
    with pytest.raises(ValueError, match="client_only"):
        Configuration(
            name="c", kind="client_only", bytes_per_frame=10, accuracy=0.9, edge_s=0.1, cloud_s=0
        )
    with pytest.raises(ValueError, match="> 0 bytes"):
        split("nothing", 0, 0.9, 0.01, 0.01)
    assert SPLIT.compute_bound_hz == pytest.approx(50.0)


# --- latency model (thesis §4.2) -----------------------------------------------------------


def test_total_latency_is_eq_4_1():
    # 20 ms + 5 ms + 5 ms RTT + 80 kbit at 1 Mbit/s = 110 ms
    assert total_latency_s(SPLIT, 1e6, RTT) == pytest.approx(0.110)
    assert total_latency_s(CLIENT, 1e6, RTT) == pytest.approx(0.100)  # eq. 4.4: no RTT
    assert total_latency_s(SERVER, 0.0, RTT) == math.inf
    curve = total_latency_s(SPLIT, np.array([1e6, 2e6]), RTT)
    np.testing.assert_allclose(curve, [0.110, 0.070])


def test_crossovers_match_hand_calculation():
    # client 100 ms = split 30 ms + 80 kbit/B  ->  B = 80e3 / 0.07
    # split 30 ms + 80 kbit/B = server 10 ms + 800 kbit/B  ->  B = 720e3 / 0.02
    assert crossover_bandwidth_bps(CLIENT, SPLIT, RTT) == pytest.approx(80e3 / 0.07)
    assert crossover_bandwidth_bps(SPLIT, SERVER, RTT) == pytest.approx(720e3 / 0.02)
    assert crossover_bandwidths_bps([CLIENT, SPLIT, SERVER], RTT) == pytest.approx(
        (80e3 / 0.07, 720e3 / 0.02)
    )
    assert crossover_bandwidth_bps(SPLIT, SPLIT, RTT) is None
    # A longer RTT penalises everything that transmits, so the client-only region grows.
    assert crossover_bandwidth_bps(CLIENT, SPLIT, 0.030) == pytest.approx(80e3 / 0.045)


def test_fig_4_4_order_client_split_server_when_conditions_hold():
    configs = [SERVER, SPLIT, CLIENT]  # order of the input must not matter
    d = [c.bytes_per_frame for c in (CLIENT, SPLIT, SERVER)]
    b = [total_latency_s(c, math.inf, RTT) for c in (CLIENT, SPLIT, SERVER)]
    assert d[0] == 0 < d[1] < d[2]  # eq. 4.5
    assert b[2] < b[1] < b[0]  # eq. 4.6
    regions = latency_regions(configs, RTT)
    assert [r.configuration.name for r in regions] == ["client", "split4", "server"]
    assert regions[0].low_bps == 0 and regions[-1].high_bps == math.inf
    for left, right in itertools.pairwise(regions):
        assert left.high_bps == right.low_bps
    # The regions agree with a direct argmin at any bandwidth.
    for bw in np.geomspace(1e4, 1e10, 200):
        fastest = select_split(configs, bw, rtt_s=RTT).configuration
        region = next(r for r in regions if r.contains(bw))
        assert total_latency_s(region.configuration, bw, RTT) == pytest.approx(
            total_latency_s(fastest, bw, RTT)
        )


def test_a_split_above_the_client_server_crossing_never_wins():
    slow_split = split("slow_split", 60_000, 0.89, 0.060, 0.020)
    regions = latency_regions([CLIENT, slow_split, SERVER], RTT)
    assert [r.configuration.name for r in regions] == ["client", "server"]
    # client 100 ms = server 10 ms + 800 kbit/B
    assert regions[1].low_bps == pytest.approx(800e3 / 0.090)


@given(
    st.lists(st.tuples(st.floats(0, 2e5), st.floats(0.001, 0.2)), min_size=1, max_size=6),
    st.floats(0, 0.05),
)
@settings(max_examples=100, deadline=None, derandomize=True)
def test_latency_regions_are_the_lower_envelope(lines, rtt):
    configs = [
        split(f"c{i}", nbytes, 0.9, t / 2, t / 2)
        if nbytes > 0
        else Configuration(
            name=f"c{i}", kind="client_only", bytes_per_frame=0, accuracy=0.9, edge_s=t, cloud_s=0
        )
        for i, (nbytes, t) in enumerate(lines)
    ]
    regions = latency_regions(configs, rtt)
    bounds = [r.low_bps for r in regions[1:]]
    assert bounds == sorted(bounds) and all(x > 0 for x in bounds)
    probes = np.geomspace(1e2, 1e11, 60)
    best = np.min([total_latency_s(c, probes, rtt) for c in configs], axis=0)
    for bw, want in zip(probes, best):
        region = next(r for r in regions if r.contains(bw))
        assert total_latency_s(region.configuration, bw, rtt) == pytest.approx(want, rel=1e-9)


def test_latency_plot_is_written(tmp_path):
    path = plot_latency_vs_bandwidth([CLIENT, SPLIT, SERVER], tmp_path / "lat.png", rtt_s=RTT)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


# --- split selection (BottleNet / BBNet Algorithm 1) ---------------------------------------


def test_uplink_power_models_are_bottlenet_table_3():
    assert UPLINK_POWER_MODELS["3g"].power_w() == pytest.approx((868.98 * 1.1 + 817.88) / 1e3)
    assert UPLINK_POWER_MODELS["4g"].power_w() == pytest.approx((438.39 * 5.85 + 1288.04) / 1e3)
    assert UPLINK_POWER_MODELS["wifi"].power_w() == pytest.approx((283.17 * 18.88 + 132.86) / 1e3)
    assert UPLINK_POWER_MODELS["wifi"].bandwidth_bps == 18.88e6


def test_energy_argmin_picks_a_deeper_split_on_3g_than_on_wifi():
    edge_power = 5.0  # W
    early = split("early", 20_000, 0.88, 0.002, 0.020, split_point=1)
    late = split("late", 2_000, 0.88, 0.012, 0.010, split_point=6)
    configs = [early, late]
    picks = {}
    for net in ("3g", "wifi"):
        model = UPLINK_POWER_MODELS[net]
        sel = select_split(
            configs, model.bandwidth_bps, "energy", uplink=net, edge_power_w=edge_power
        )
        for c in configs:  # TM·PM + TU·PU by hand
            upload = 8 * c.bytes_per_frame / model.bandwidth_bps
            assert sel.costs[c.name] == pytest.approx(
                c.edge_s * edge_power + upload * model.power_w()
            )
        picks[net] = sel.configuration.name
    assert picks == {"3g": "late", "wifi": "early"}
    assert mobile_energy_j(early, 0.0, UPLINK_POWER_MODELS["3g"], edge_power) == math.inf


def test_latency_selection_respects_the_accuracy_constraint():
    fast_bad = split("fast_bad", 500, 0.85, 0.004, 0.002, split_point=2)
    ok = split("ok", 4_000, 0.905, 0.006, 0.002, split_point=2)
    best = split("best", 40_000, 0.92, 0.006, 0.002, split_point=3)
    configs = [fast_bad, ok, best]
    assert select_split(configs, 1e6).configuration is fast_bad
    sel = select_split(configs, 1e6, max_accuracy_loss=0.025)  # BBNet's 2.5 points
    assert sel.configuration is ok and "fast_bad" not in sel.costs
    assert acceptable_configurations(configs, 0.02, reference_accuracy=0.95) == ()
    assert acceptable_configurations(configs, 0.02, reference_accuracy=0.94) == (best,)
    assert smallest_per_split(configs) == (fast_bad, best)
    with pytest.raises(ValueError):
        select_split(configs, 1e6, max_accuracy_loss=0.0, reference_accuracy=0.99)


# --- n-device partition (Hu & K eq. (2)) ---------------------------------------------------


def test_partition_hand_examples():
    even = partition_layers([1, 1, 1, 1], [1, 1])
    assert even.split_points == (2,) and even.throughput_hz == pytest.approx(0.5)
    # A 3× faster second device takes three of the four layers.
    skewed = partition_layers([1, 1, 1, 1], [1, 3])
    assert skewed.split_points == (1,) and skewed.throughput_hz == pytest.approx(1.0)
    with pytest.raises(ValueError):
        partition_layers([1, 1], [1, 1, 1])


def _random_instance(rng):
    m = int(rng.integers(1, 10))
    n = int(rng.integers(1, 5))
    ops = rng.integers(0, 50, m).astype(float)
    ops[rng.integers(m)] += 1  # at least some work
    speeds = rng.integers(1, 20, n).astype(float)
    act = rng.integers(0, 5000, m + 1).astype(float)
    links = rng.integers(1, 1000, max(n - 1, 0)).astype(float) * 1e3
    return ops, speeds, act, links


@pytest.mark.parametrize("variant", ["paper", "idle", "links"])
def test_dp_equals_brute_force_on_random_instances(variant):
    rng = np.random.default_rng({"paper": 1, "idle": 2, "links": 3}[variant])
    checked = 0
    while checked < 250:
        ops, speeds, act, links = _random_instance(rng)
        kw = {}
        if variant == "idle":
            kw["allow_idle_devices"] = True
        elif variant == "links":
            kw.update(activation_bytes=act, link_bandwidths_bps=links)
        if variant != "idle" and len(ops) < len(speeds):
            continue
        dp = partition_layers(ops, speeds, **kw)
        brute = brute_force_partition(ops, speeds, **kw)
        assert dp.throughput_hz == pytest.approx(brute.throughput_hz, rel=1e-12)
        # A valid partition that really achieves the reported throughput.
        bounds = [0, *dp.split_points, len(ops)]
        steps = np.diff(bounds)
        assert len(dp.split_points) == len(speeds) - 1
        assert np.all(steps >= 0) and (variant == "idle" or np.all(steps >= 1))
        # The table's optimum is what the recovered split points achieve.
        again = evaluate_partition(ops, speeds, dp.split_points, **kw)
        assert again.throughput_hz == pytest.approx(dp.throughput_hz, rel=1e-12)
        assert dp.throughput_hz <= throughput_upper_bound_hz(ops, speeds) * (1 + 1e-12)
        checked += 1


def test_link_stages_move_the_split_away_from_a_fat_activation():
    ops = [1, 1, 1, 1]
    act = [100, 100, 10_000, 100, 100]  # layer 2's output is huge
    free = partition_layers(ops, [1, 1])
    assert free.split_points == (2,)
    tight = partition_layers(ops, [1, 1], activation_bytes=act, link_bandwidths_bps=[8e3])
    assert tight.split_points != (2,) and tight.link_hz
    assert tight.throughput_hz == pytest.approx(1 / 3)


# --- throughput, effective accuracy and thresholds (Hu & K §III–IV) ------------------------

FIG3 = paper_fig3_configurations()


def test_effective_accuracy_counts_drops_as_wrong():
    g1 = FIG3[0]
    knee = 8 * g1.bytes_per_frame * T_GEN
    assert knee == pytest.approx(9e6 / 1.7)
    assert effective_accuracy(g1, knee / 2, T_GEN) == pytest.approx(0.902 / 2)
    assert effective_accuracy(g1, 10 * knee, T_GEN) == pytest.approx(0.902)
    # A camera faster than the computation: half of the frames are dropped.
    assert pipeline_throughput_hz(g1, 10 * knee, 2 * T_GEN) == pytest.approx(T_GEN)
    assert effective_accuracy(g1, 10 * knee, 2 * T_GEN) == pytest.approx(0.451)


def test_thresholds_are_eq_3_and_the_policy_takes_the_better_side():
    policy = threshold_policy(FIG3, T_GEN)
    assert [c.name for c in policy.configurations] == ["gamma8", "gamma4", "gamma2", "gamma1"]
    by_name = {c.name: c for c in FIG3}
    for theta, (left, right) in zip(
        policy.thresholds_bps, itertools.pairwise(policy.configurations)
    ):
        # eq. (3) with T_gen = T_p: T_p·ν_left = (γ_right·θ/D)·ν_right
        d1 = by_name["gamma1"].bytes_per_frame * 8
        assert T_GEN * left.accuracy == pytest.approx(right.ratio * theta / d1 * right.accuracy)
        assert theta == pytest.approx(eq3_threshold_bps(left, right, T_GEN))
        nu_left = effective_accuracy(left, theta, T_GEN)
        assert nu_left == pytest.approx(effective_accuracy(right, theta, T_GEN))
        below, above = theta * 0.999, theta * 1.001
        assert policy.choose(below) is left and policy.choose(above) is right
        assert effective_accuracy(left, below, T_GEN) > effective_accuracy(right, below, T_GEN)
        assert effective_accuracy(right, above, T_GEN) > effective_accuracy(left, above, T_GEN)
    assert eq3_threshold_bps(by_name["gamma1"], by_name["gamma8"], T_GEN) is None


def test_a_ratio_dominated_by_a_non_adjacent_one_gets_no_region():
    g8, g2, g1 = FIG3[3], FIG3[1], FIG3[0]
    weak4 = split("gamma4_weak", g1.bytes_per_frame / 4, 0.86, 0.1, 0.1, ratio=4.0)
    policy = threshold_policy([g1, g2, weak4, g8], T_GEN)
    assert [c.name for c in policy.configurations] == ["gamma8", "gamma2", "gamma1"]
    assert policy.thresholds_bps[0] == pytest.approx(eq3_threshold_bps(g8, g2, T_GEN))


def test_client_only_owns_the_lowest_bandwidths():
    client = Configuration(
        name="client", kind="client_only", bytes_per_frame=0, accuracy=0.8, edge_s=0.2, cloud_s=0
    )  # 5 Hz out of 10 -> ν_eff 0.4
    policy = threshold_policy([*FIG3, client], T_GEN)
    assert policy.choose(0.0) is client
    # It hands over where γ=8's rising line reaches 0.4: θ = 0.4 / (ν/(8·D·T_gen)).
    g8 = FIG3[3]
    assert policy.thresholds_bps[0] == pytest.approx(0.4 * 8 * g8.bytes_per_frame * T_GEN / 0.877)


@given(
    st.lists(
        st.tuples(st.floats(100, 1e5), st.floats(0.05, 1.0), st.floats(0.01, 0.2)),
        min_size=1,
        max_size=7,
    ),
    st.floats(1.0, 60.0),
)
@settings(max_examples=100, deadline=None, derandomize=True)
def test_threshold_policy_is_the_upper_envelope(curves, t_gen):
    configs = [split(f"c{i}", nbytes, nu, t, t / 2) for i, (nbytes, nu, t) in enumerate(curves)]
    policy = threshold_policy(configs, t_gen)
    thresholds = policy.thresholds_bps
    assert list(thresholds) == sorted(thresholds)
    for theta, (left, right) in zip(thresholds, itertools.pairwise(policy.configurations)):
        assert effective_accuracy(left, theta, t_gen) == pytest.approx(
            effective_accuracy(right, theta, t_gen), rel=1e-9
        )
    knees = [8 * c.bytes_per_frame * min(t_gen, c.compute_bound_hz) for c in configs]
    probes = np.concatenate(
        [np.geomspace(min(knees) / 100, max(knees) * 100, 80), np.asarray(thresholds) * 1.0001]
    )
    best = np.max([effective_accuracy(c, probes, t_gen) for c in configs], axis=0)
    for bw, want in zip(probes, best):
        assert policy.effective_accuracy(bw) == pytest.approx(want, rel=1e-9, abs=1e-12)


# --- expected throughput and effective accuracy (Hu & K §V) --------------------------------


def test_single_link_eq_4_6_matches_the_piecewise_form():
    dist = GaussianBandwidth(4e6, 2e6)
    for c in FIG3:
        general = expected_pipeline_throughput_hz(
            [(dist, c.bytes_per_frame)], c.compute_bound_hz, T_GEN
        )
        assert general == pytest.approx(expected_throughput_hz(c, dist, T_GEN), rel=1e-10)


def test_two_gaussian_links_match_eq_7():
    mu, sigma, t_p = 6e6, 1e6, 10.0
    D1, D2 = 8 * 75_000, 8 * 50_000  # bits per frame: link 1 saturates at μ, link 2 at 4 Mbit/s

    # Eq. (7) literally: untruncated Gaussians, integral from -∞ (negligible mass below 0 here).
    def Phi(x):
        return normal_cdf(x)

    a1, a2 = (D1 * t_p - mu) / sigma, (D2 * t_p - mu) / sigma
    tau = np.linspace((mu - 12 * sigma) / max(D1, D2), t_p, 200_001)
    term1 = (1 - Phi((D2 * tau - mu) / sigma)) * normal_pdf((D1 * tau - mu) / sigma) * tau
    term2 = (1 - Phi((D1 * tau - mu) / sigma)) * normal_pdf((D2 * tau - mu) / sigma) * tau
    eq7 = (
        (1 - Phi(a1)) * (1 - Phi(a2)) * t_p
        + D1 / sigma * np.trapezoid(term1, tau)
        + D2 / sigma * np.trapezoid(term2, tau)
    )
    dist = GaussianBandwidth(mu, sigma)
    ours = expected_pipeline_throughput_hz([(dist, D1 / 8), (dist, D2 / 8)], t_p)
    assert ours == pytest.approx(float(eq7), rel=1e-6)
    draws = dist.sample(np.random.default_rng(5), 400_000).reshape(2, -1)
    mc = np.mean(np.minimum(t_p, np.minimum(draws[0] / D1, draws[1] / D2)))
    assert ours == pytest.approx(mc, rel=2e-3)


def test_eq_4_6_is_exact_on_empirical_links_with_ties():
    rng = np.random.default_rng(7)
    b1 = rng.integers(1, 8, 25).astype(float) * 1e6  # many ties, within and across links
    b2 = rng.integers(1, 8, 30).astype(float) * 1e6
    nbytes = 100_000.0
    t_p = 5.0  # 8·D·T_p = 4 Mbit/s, itself an atom: the eq. (4)/(5) boundary is exercised
    exact = np.mean(np.minimum(t_p, np.minimum.outer(b1, b2) / (8 * nbytes)))
    got = expected_pipeline_throughput_hz(
        [(EmpiricalBandwidth(b1), nbytes), (EmpiricalBandwidth(b2), nbytes)], t_p
    )
    assert got == pytest.approx(exact, rel=1e-12)


def test_constant_bandwidth_reduces_to_the_deterministic_throughput():
    dist = EmpiricalBandwidth([3e6])
    for c in FIG3:
        assert expected_throughput_hz(c, dist, T_GEN) == pytest.approx(
            pipeline_throughput_hz(c, 3e6, T_GEN)
        )


MC_CASES = [(3e6, 2e6), (5e6, 3e6), (5e6, 0.5e6), (7e6, 2e6)]


@pytest.mark.parametrize("mu, sigma", MC_CASES)
def test_expected_effective_accuracy_matches_monte_carlo(mu, sigma):
    dist = GaussianBandwidth(mu, sigma)
    # Long windows (200 frames): the analysis assumes bandwidth changes slowly (§III), so switch
    # transients must be small; stratified draws keep the bandwidth sampling error small.
    bandwidths = dist.stratified_sample(np.random.default_rng(11), 300)
    policy = threshold_policy(FIG3, T_GEN)
    fixed = {}
    for candidate in [*FIG3, policy]:
        analytic = expected_effective_accuracy(candidate, dist, T_GEN)
        sim = simulate_pipeline(candidate, bandwidths, T_GEN, window_s=20.0, seed=3)
        assert abs(analytic - sim.effective_accuracy) < 0.02, (candidate, analytic, sim)
        fixed[getattr(candidate, "name", "adaptive")] = (analytic, sim.effective_accuracy)
    adaptive = fixed.pop("adaptive")
    for analytic, simulated in fixed.values():
        assert adaptive[0] >= analytic - 1e-12
        assert adaptive[1] >= simulated - 0.005


def test_empirical_trace_replayed_in_order_matches_its_analysis():
    # A Markov-modulated link: good/bad states that persist, with noise.
    rng = np.random.default_rng(21)
    state, trace = 0, []
    for _ in range(400):
        if rng.random() < 0.1:
            state = 1 - state
        trace.append(max(0.0, rng.normal([6e6, 1.5e6][state], [1.5e6, 0.7e6][state])))
    dist = EmpiricalBandwidth(trace)
    policy = threshold_policy(FIG3, T_GEN)
    results = {}
    for candidate in [*FIG3, policy]:
        analytic = expected_effective_accuracy(candidate, dist, T_GEN)
        sim = simulate_pipeline(candidate, trace, T_GEN, window_s=10.0, seed=4)
        assert abs(analytic - sim.effective_accuracy) < 0.02
        results[getattr(candidate, "name", "adaptive")] = analytic
    assert results["adaptive"] >= max(v for k, v in results.items() if k != "adaptive")
    assert results["adaptive"] > results["gamma1"] + 0.05


def test_simulated_throughput_is_the_slowest_stage():
    camera, compute = 30.0, 20.0
    c = split("c", 10_000, 0.9, 1 / compute, 1 / 25)
    link_hz = 1e6 / (8 * 10_000)  # 12.5 frames/s at 1 Mbit/s
    sim = simulate_pipeline(c, [1e6] * 20, camera, seed=0)
    assert sim.throughput_hz == pytest.approx(link_hz, rel=0.01)
    sim = simulate_pipeline(c, [1e8] * 20, camera, seed=0)
    assert sim.throughput_hz == pytest.approx(compute, rel=0.01)
    client = Configuration(
        name="local", kind="client_only", bytes_per_frame=0, accuracy=0.7, edge_s=0.1, cloud_s=0
    )
    sim = simulate_pipeline(client, [0.0] * 20, camera, seed=0)
    assert sim.throughput_hz == pytest.approx(10.0, rel=0.01)
    assert sim.effective_accuracy == pytest.approx(0.7 / 3, abs=0.03)


def test_fig_3_shape_and_plot(tmp_path):
    means = np.linspace(3e6, 9e6, 7)
    stds = np.array([0.5e6, 1e6, 2e6, 3e6])
    sweep = sweep_expected_effective_accuracy(FIG3, means, stds, T_GEN)
    g = sweep.fixed
    fixed = np.stack(list(g.values()))
    # Adaptive compression is never worse than any single ratio.
    assert np.all(sweep.adaptive >= fixed.max(axis=0) - 1e-12)
    # More mean bandwidth never hurts a fixed ratio.
    assert np.all(np.diff(fixed, axis=2) >= -1e-12)
    s2 = 2  # σ = 2 Mbit/s, as in the paper's left panel
    assert g["gamma8"][s2, 0] > g["gamma4"][s2, 0] > g["gamma2"][s2, 0] > g["gamma1"][s2, 0]
    assert g["gamma1"][s2, -1] > g["gamma8"][s2, -1]  # small γ overtakes at large μ
    # At μ = 5 Mbit/s: variance hurts the uncompressed model, and helps the case for compression.
    mid = int(np.argmin(np.abs(means - 5e6)))
    assert np.all(np.diff(g["gamma1"][:, mid]) < 0)
    gap = g["gamma8"][:, mid] - g["gamma1"][:, mid]
    assert np.all(np.diff(gap) > 0)
    path = plot_effective_accuracy_sweep(sweep, tmp_path / "fig3.png", sigma_panel_mean_bps=5e6)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_stratified_samples_follow_the_distribution():
    dist = GaussianBandwidth(2e6, 2e6)
    draws = dist.stratified_sample(np.random.default_rng(0), 2000)
    assert draws.min() >= 0
    assert draws.mean() == pytest.approx(dist.expected_bps, rel=0.01)
    plain = dist.sample(np.random.default_rng(1), 20_000)
    assert plain.min() >= 0 and plain.mean() == pytest.approx(dist.expected_bps, rel=0.02)


# --- scheduler policy and hysteresis -------------------------------------------------------


def test_policy_uses_the_threshold_rule_and_the_selection_argmin():
    policy = threshold_policy(FIG3, T_GEN)
    for bw in np.geomspace(2e5, 2e7, 50):
        d = choose_configuration(FIG3, bw, objective="effective_accuracy", t_gen_hz=T_GEN)
        assert d.configuration is policy.choose(bw)
        assert d.score == max(d.scores.values())
        lat = choose_configuration([CLIENT, SPLIT, SERVER], bw, RTT, objective="latency")
        assert (
            lat.configuration is select_split([CLIENT, SPLIT, SERVER], bw, rtt_s=RTT).configuration
        )
        assert lat.score == pytest.approx(-lat.latency_s)
    with pytest.raises(ValueError, match="t_gen_hz"):
        choose_configuration(FIG3, 1e6)


def test_policy_deadline_and_accuracy_objective():
    configs = [CLIENT, SPLIT, SERVER]
    # At 2 Mbit/s: client 100 ms, split 70 ms, server 410 ms.
    d = choose_configuration(configs, 2e6, RTT, "accuracy", deadline_s=0.105)
    assert d.configuration is CLIENT and d.meets_deadline
    assert d.scores["server"] == -math.inf
    d = choose_configuration(configs, 2e6, RTT, "accuracy", deadline_s=0.08)
    assert d.configuration is SPLIT
    d = choose_configuration(configs, 2e6, RTT, "accuracy", deadline_s=0.01)
    assert d.configuration is SPLIT and not d.meets_deadline
    d = choose_configuration(
        configs, 2e6, RTT, "effective_accuracy", deadline_s=0.08, t_gen_hz=T_GEN
    )
    assert d.configuration is SPLIT


def test_policy_with_uncertain_bandwidth_hedges_towards_compression():
    point = choose_configuration(FIG3, 3e6, objective="effective_accuracy", t_gen_hz=T_GEN)
    hedged = choose_configuration(
        FIG3, 3e6, objective="effective_accuracy", t_gen_hz=T_GEN, bandwidth_std_bps=2e6
    )
    assert point.configuration.name == "gamma2"
    assert hedged.configuration.name == "gamma8"
    assert hedged.score == pytest.approx(
        expected_effective_accuracy(FIG3[3], GaussianBandwidth(3e6, 2e6), T_GEN)
    )


def _run(hysteresis, signal, dt=0.1):
    names = []
    for k, bw in enumerate(signal):
        d = choose_configuration(FIG3, float(bw), objective="effective_accuracy", t_gen_hz=T_GEN)
        names.append(hysteresis.update(k * dt, d))
    return names


def _switches(names):
    return sum(a != b for a, b in itertools.pairwise(names))


def test_hysteresis_does_not_flap_on_noise_and_follows_a_step():
    theta = threshold_policy(FIG3, T_GEN).thresholds_bps[-1]  # gamma2 | gamma1
    rng = np.random.default_rng(8)
    noisy = theta * (1 + 0.005 * rng.standard_normal(300))
    signal = np.concatenate([noisy, np.full(100, 0.2 * theta)])  # then the link degrades
    bare = _run(Hysteresis(), signal)
    assert _switches(bare[:300]) > 20  # without hysteresis it flaps
    damped = _run(Hysteresis(margin=0.02, min_dwell_s=2.0), signal)
    assert _switches(damped[:300]) == 0
    assert set(damped[300:]) == {"gamma8"}  # the step is worth far more than the margin


def test_hysteresis_dwell_time_limits_the_switch_rate():
    g8_region = threshold_policy(FIG3, T_GEN).thresholds_bps[0] * 0.5
    square = [g8_region if (k // 5) % 2 else 8e6 for k in range(200)]  # flips every 0.5 s
    names = _run(Hysteresis(margin=0.0, min_dwell_s=3.0), square)
    assert 2 <= _switches(names) <= 200 * 0.1 / 3.0 + 1


def test_hysteresis_leaves_an_infeasible_configuration_at_once():
    h = Hysteresis(margin=0.5, min_dwell_s=100.0)
    configs = [CLIENT, SPLIT, SERVER]
    fast_link = choose_configuration(configs, 1e9, RTT, "latency", deadline_s=0.05)
    assert h.update(0.0, fast_link) == "server"
    slow_link = choose_configuration(configs, 2e6, RTT, "latency", deadline_s=0.08)
    assert slow_link.scores["server"] == -math.inf
    assert h.update(0.1, slow_link) == "split4"
    with pytest.raises(ValueError, match="backwards"):
        h.update(0.0, slow_link)


def test_the_robot_s_spare_time_classifies_what_the_link_cannot_carry():
    split = Configuration(name="s", bytes_per_frame=10_000, accuracy=0.8, edge_s=0.02,
                          cloud_s=0.01)
    whole = Configuration(name="w", kind="client_only", bytes_per_frame=0, accuracy=0.9,
                          edge_s=0.1, cloud_s=0.0)
    t_gen = 30.0
    # 0.4 Mbit/s carries 5 split frames/s, which use 10 % of the robot; the other 90 % would
    # run 9 whole-model frames/s ...
    assert fallback_throughput_hz(split, whole, 5.0, t_gen) == pytest.approx(9.0)
    # ... but the robot is in a whole-model frame 90 % of the time, and the link waits for half
    # of one (50 ms) after each split frame's 200 ms: 1 / 0.245 s split frames a second, and
    # the robot's time they leave for the whole model.
    split_hz, whole_hz = fallback_rates_hz(split, whole, 0.4e6, t_gen)
    assert split_hz == pytest.approx(1 / 0.245)
    assert whole_hz == pytest.approx((1 - split_hz * 0.02) / 0.1)
    assert effective_accuracy(split, 0.4e6, t_gen, whole) == pytest.approx(
        (split_hz * 0.8 + whole_hz * 0.9) / 30)
    assert effective_accuracy(split, 0.4e6, t_gen) == pytest.approx(4.0 / 30)
    # A link that carries the camera's rate: no whole-model frame, no wait, Hu & K's rate.
    assert fallback_rates_hz(split, whole, 8e6, t_gen) == (pytest.approx(30.0), 0.0)
    # 2 Mbit/s: 25 split frames/s leave 50 % of the robot, but only 5 camera frames a second.
    assert fallback_throughput_hz(split, whole, 25.0, t_gen) == pytest.approx(5.0)
    # A link that carries the camera's rate, or a robot the split fills, leaves nothing over.
    assert fallback_throughput_hz(split, whole, 30.0, t_gen) == 0.0
    busy = Configuration(name="b", bytes_per_frame=10_000, accuracy=0.8, edge_s=0.25,
                         cloud_s=0.0)
    assert fallback_throughput_hz(busy, whole, 4.0, t_gen) == 0.0
    # The whole model alone is what it is; a fallback that sends is no fallback.
    assert effective_accuracy(whole, 0.4e6, t_gen, whole) == pytest.approx(0.9 * 10 / 30)
    with pytest.raises(ValueError, match="whole model"):
        fallback_throughput_hz(split, split, 5.0, t_gen)
    # Its expectation over a trace is the mean over the trace's draws (exact for an empirical
    # distribution), and over a Gaussian matches dense sampling.
    draws = [0.2e6, 0.4e6, 1.5e6, 3e6, 8e6]
    assert expected_effective_accuracy(split, EmpiricalBandwidth(draws), t_gen, whole) == \
        pytest.approx(np.mean([effective_accuracy(split, b, t_gen, whole) for b in draws]))
    gaussian = GaussianBandwidth(1.5e6, 1e6)
    samples = gaussian.quantile((np.arange(20_000) + 0.5) / 20_000)
    assert expected_effective_accuracy(split, gaussian, t_gen, whole) == pytest.approx(
        float(np.mean(effective_accuracy(split, samples, t_gen, whole))), rel=2e-3)
    with pytest.raises(ValueError, match="one configuration"):
        expected_effective_accuracy(threshold_policy([split], t_gen), gaussian, t_gen, whole)
