"""split_infer.adaptation.scheduling: the scheduler's decision logic, without ROS.

Decisions are checked against ``planning.choose_configuration`` (one implementation), the
hysteresis, lower-bound, probing, rejection and override rules on a simulated clock, and a
closed loop — simulated edge → LinkShaper → BandwidthEstimator → SchedulingLoop — on the
committed step trace.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from split_infer.adaptation.configurations import (
    configurations_from_bundle,
    parse_override,
    planned_cpu_times,
    startup_configuration,
)
from split_infer.adaptation.estimator import BandwidthEstimator, Receipt
from split_infer.adaptation.policy import choose_configuration
from split_infer.adaptation.scheduling import (
    FIRST_CPU_REPORT_WAIT_S,
    MIN_ROBOT_FACTOR,
    LinkState,
    SchedulerSettings,
    SchedulingLoop,
)
from split_infer.adaptation.variation import MIN_SAMPLES, STEADY_RISE_ESTIMATES
from split_infer.bundle import BundleConfiguration, write_bundle
from split_infer.config_key import EDGE_ONLY_KEY, format_config_key
from split_infer.planning import Configuration
from split_infer.planning.effective_accuracy import effective_accuracy, expected_effective_accuracy
from split_infer.tools.link import LinkShaper, load_trace

REPO = Path(__file__).resolve().parents[1]
T_GEN = 10.0

# (id, split, ratio, kB per frame, accuracy): Hu & K-like ladders at two split points. At
# 10 frames/s the split-2 ladder needs 6.4 / 3.2 / 1.6 / 0.8 Mbit/s, split 3 γ4 0.64 Mbit/s.
LADDER = [
    ("s2g1", 2, 1.0, 80, 0.92), ("s2g2", 2, 2.0, 40, 0.90), ("s2g4", 2, 4.0, 20, 0.87),
    ("s2g8", 2, 8.0, 10, 0.82), ("s3g4", 3, 4.0, 8, 0.85),
]


def _tiny_onnx(path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "part", [x], [y])
    onnx.save(helper.make_model(graph), str(path))


def make_bundle(directory: Path, ladder=LADDER, extra=()):
    """A real bundle (tiny real ONNX parts, sha256-listed) with the given measured numbers."""
    (directory / "onnx").mkdir(parents=True)
    configs = []
    for cid, split, ratio, kbytes, accuracy in ladder:
        for side in ("edge", "cloud"):
            part = directory / "onnx" / f"{side}_{split}.onnx"
            if not part.exists():
                _tiny_onnx(part)
        configs.append(BundleConfiguration(
            id=cid, split_point=split, split_name=f"layer{split}", ratio=ratio,
            codec="quant:bits=8", feature_shape=(64, 8, 8), edge_onnx=f"onnx/edge_{split}.onnx",
            cloud_onnx=f"onnx/cloud_{split}.onnx", accuracy=accuracy,
            bytes_per_frame=kbytes * 1000.0, edge_ms=5.0, cloud_ms=5.0))
    for config in extra:
        for part in (config.edge_onnx, config.cloud_onnx):
            if not (directory / part).exists():
                _tiny_onnx(directory / part)
        configs.append(config)
    manifest = {"model": {"name": "resnet8_cifar"}, "dataset": "cifar10",
                "preprocessing": {"mean": [0.5] * 3, "std": [0.25] * 3},
                "classes": [str(k) for k in range(10)]}
    return write_bundle(directory, manifest, configs)


@pytest.fixture
def configs(tmp_path) -> list[Configuration]:
    usable, skipped = configurations_from_bundle(make_bundle(tmp_path / "b"))
    assert skipped == []
    return usable


def settings(**overrides) -> SchedulerSettings:
    """The paper's policy (the frames may fill the link) unless a test says otherwise."""
    base = dict(frame_rate_hz=T_GEN, margin=0.01, min_dwell_s=2.0, probe_interval_s=10.0,
                link_share=1.0)
    return SchedulerSettings(**{**base, **overrides})


def apply(loop: SchedulingLoop, now: float, link: LinkState | None, ok: bool = True):
    """One tick; a requested switch is answered at once (``ok``)."""
    step = loop.step(now, link)
    if step.apply:
        loop.request_sent(now, step.target)
        loop.request_done(now, step.target, ok, "" if ok else "edge says no")
    return step


def measured(mbps: float, rtt_s: float = 0.02) -> LinkState:
    return LinkState(mbps * 1e6, rtt_s, lower_bound=False)


def lower(mbps: float) -> LinkState:
    return LinkState(mbps * 1e6, 0.02, lower_bound=True)


# -- bundle → configurations ---------------------------------------------------------------

def test_bundle_configurations_carry_the_measured_numbers(tmp_path):
    unmeasured = BundleConfiguration(
        id="s4g1", split_point=4, split_name="layer4", ratio=1.0, codec="float32",
        feature_shape=(8, 4, 4), edge_onnx="onnx/edge_4.onnx", cloud_onnx="onnx/cloud_4.onnx")
    server = BundleConfiguration(
        id="server", split_point=0, split_name="input", ratio=1.0, codec="quant:bits=8",
        feature_shape=(3, 32, 32), edge_onnx="onnx/edge_0.onnx", cloud_onnx="onnx/cloud_0.onnx",
        accuracy=0.93, bytes_per_frame=3200.0, edge_ms=0.5, cloud_ms=9.0)
    local = BundleConfiguration(
        id="local", split_point=9, split_name="fc", ratio=1.0, codec="float32",
        feature_shape=(10,), edge_onnx="onnx/edge_9.onnx", cloud_onnx="onnx/cloud_9.onnx",
        method="client_only", accuracy=0.93, bytes_per_frame=0.0, edge_ms=40.0, cloud_ms=0.0)
    bundle = make_bundle(tmp_path / "b", extra=[unmeasured, server, local])
    usable, skipped = configurations_from_bundle(bundle)
    assert skipped == ["s4g1"]
    by_name = {c.name: c for c in usable}
    c = by_name["s2g4"]
    assert (c.split_point, c.ratio, c.bytes_per_frame, c.accuracy) == (2, 4.0, 20_000, 0.87)
    assert (c.edge_s, c.cloud_s, c.kind) == (0.005, 0.005, "split")
    assert by_name["server"].kind == "server_only"
    assert by_name["local"].kind == "client_only" and not by_name["local"].transmits


def test_a_bundle_without_measured_numbers_is_refused(tmp_path):
    bare = [BundleConfiguration(
        id="x", split_point=1, split_name="l1", ratio=1.0, codec="float32",
        feature_shape=(4,), edge_onnx="onnx/edge_1.onnx", cloud_onnx="onnx/cloud_1.onnx")]
    bundle = make_bundle(tmp_path / "b", ladder=[], extra=bare)
    with pytest.raises(ValueError, match="no configuration has measured"):
        configurations_from_bundle(bundle)


def test_override_strings():
    assert parse_override("") is None and parse_override("  ") is None
    assert parse_override("3:4") == (3, 4.0)
    assert parse_override(" 2:0.5 ") == (2, 0.5)
    assert parse_override(format_config_key(2, 1.5)) == (2, 1.5)
    for bad in ("3", "3:4:5", "a:4", "3:x", "-1:2", "3:0", "3:nan"):
        with pytest.raises(ValueError):
            parse_override(bad)


# -- decisions --------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["effective_accuracy", "latency", "accuracy"])
def test_decisions_are_the_planners(configs, objective):
    for mbps in np.geomspace(0.1, 20, 25):
        loop = SchedulingLoop(configs, settings(objective=objective, deadline_s=0.5))
        step = loop.step(0.0, measured(mbps))
        expected = choose_configuration(configs, mbps * 1e6, 0.02, objective,
                                        deadline_s=0.5, t_gen_hz=T_GEN).configuration
        assert step.target == expected and step.apply


def test_a_capacity_estimate_is_planned_at_the_link_share_and_a_lower_bound_in_full(configs):
    assert SchedulerSettings().link_share == 0.85  # probes and headers share the link
    for mbps in np.geomspace(0.1, 20, 25):
        loop = SchedulingLoop(configs, settings(link_share=0.5, probe_interval_s=0.0))
        step = loop.step(0.0, measured(mbps))
        assert step.bandwidth_bps == pytest.approx(mbps * 0.5e6)
        assert step.target == choose_configuration(configs, mbps * 0.5e6, 0.02,
                                                   t_gen_hz=T_GEN).configuration
        bound = SchedulingLoop(configs, settings(link_share=0.5, probe_interval_s=0.0))
        assert bound.step(0.0, LinkState(mbps * 1e6, 0.02, lower_bound=True)
                          ).bandwidth_bps == pytest.approx(mbps * 1e6)
    # Somewhere in that range the share changes the answer, or the test shows nothing.
    assert any(SchedulingLoop(configs, settings(link_share=0.5)).step(0.0, measured(m)).target
               != SchedulingLoop(configs, settings()).step(0.0, measured(m)).target
               for m in np.geomspace(0.1, 20, 25))


def test_a_switch_between_configurations_that_fit_waits_for_the_dwell(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=2.0))
    assert apply(loop, 0.0, measured(1)).target.name == "s3g4"
    step = apply(loop, 1.0, measured(4))
    assert not step.apply and loop.active.name == "s3g4"  # dwell: 1 s < 2 s
    step = apply(loop, 2.0, measured(4))
    assert step.apply and loop.active.name == "s2g2"
    assert loop.switches == 2


def test_a_configuration_the_link_no_longer_carries_is_left_at_once(configs):
    """After a step down the first estimates lie between the two levels: a configuration
    chosen on one of them overloads the link, and is not kept for the dwell."""
    loop = SchedulingLoop(configs, settings(min_dwell_s=2.0))
    assert apply(loop, 0.0, measured(8)).target.name == "s2g1"
    step = apply(loop, 5.0, measured(3))  # on the way down
    assert step.apply
    chosen_on_the_way = loop.active.name
    step = apply(loop, 5.5, measured(1))  # 0.5 s later, inside the dwell
    assert step.apply and loop.active.name == "s3g4" != chosen_on_the_way


def test_the_margin_keeps_a_near_tie(configs):
    loop = SchedulingLoop(configs, settings(margin=0.05, min_dwell_s=0.0))
    apply(loop, 0.0, measured(1))
    assert loop.active.name == "s3g4"
    # At 2 Mbit/s s2g4 scores 0.87 against 0.85: better, but by less than the margin.
    assert not apply(loop, 1.0, measured(2)).apply and loop.active.name == "s3g4"
    assert apply(loop, 2.0, measured(4)).apply and loop.active.name == "s2g2"


def test_a_lower_bound_never_means_fewer_bytes(configs):
    loop = SchedulingLoop(configs, settings(probe_interval_s=0.0, min_dwell_s=0.0))
    apply(loop, 0.0, measured(8))
    for t in range(1, 20):
        step = apply(loop, float(t), lower(1))
        assert not step.apply
    assert loop.active.name == "s2g1"
    apply(loop, 20.0, measured(1))
    assert loop.active.name == "s3g4"
    # A higher delivered rate is proof enough to send more.
    assert apply(loop, 21.0, lower(2)).apply and loop.active.name == "s2g4"


def test_a_lower_bound_still_allows_a_dominating_smaller_configuration(tmp_path):
    better = BundleConfiguration(
        id="s4g16", split_point=4, split_name="layer4", ratio=16.0, codec="quant:bits=8",
        feature_shape=(64, 8, 8), edge_onnx="onnx/edge_4.onnx", cloud_onnx="onnx/cloud_4.onnx",
        accuracy=0.95, bytes_per_frame=5000.0, edge_ms=5.0, cloud_ms=5.0)
    configs, _ = configurations_from_bundle(make_bundle(tmp_path / "b", extra=[better]))
    loop = SchedulingLoop(configs, settings(probe_interval_s=0.0, min_dwell_s=0.0))
    loop.observe_edge(0.0, 2, 1.0)  # the edge runs s2g1 (80 kB) when the scheduler starts
    # Only a lower bound is known, yet s4g16 sends fewer bytes AND is more accurate.
    assert apply(loop, 1.0, lower(7)).apply and loop.active.name == "s4g16"


def test_probing_climbs_one_rung_and_backs_off_after_a_failure(configs):
    loop = SchedulingLoop(configs, settings(probe_interval_s=10.0, min_dwell_s=2.0))
    apply(loop, 0.0, measured(0.7))
    assert loop.active.name == "s3g4"
    t = 1.0
    while t < 10.5:
        assert not apply(loop, t, lower(0.64)).apply
        t += 0.5
    step = apply(loop, 11.0, lower(0.64))
    assert step.probing and step.apply and loop.active.name == "s2g4"
    # 2 × 0.64 changes nothing (s2g8 is worse than s3g4 even with room); 4 × does.
    assert step.bandwidth_bps == pytest.approx(4 * 0.64e6)
    # The link could not carry it: saturated at 1 Mbit/s, and an overloaded link waives the
    # dwell, so the probe backs off at once.
    assert apply(loop, 11.5, measured(1)).apply and loop.active.name == "s3g4"
    assert loop.failed_probes == 1
    # Unsaturated again: the next probe waits twice the interval.
    t, probed_at = 12.0, None
    while t < 60 and probed_at is None:
        if apply(loop, t, lower(0.64)).probing:
            probed_at = t
        t += 0.5
    assert probed_at is not None and probed_at >= 11.5 + 20.0


def test_a_successful_probe_stays_and_resets_the_interval(configs):
    loop = SchedulingLoop(configs, settings(probe_interval_s=5.0, min_dwell_s=1.0))
    apply(loop, 0.0, measured(1))
    assert loop.active.name == "s3g4"
    names, t = [], 0.5
    while t < 40:
        # The link is fast; each configuration is delivered at its own demand (lower bound).
        demand = loop.active.bytes_per_frame * 8 * T_GEN / 1e6
        step = apply(loop, t, lower(demand))
        if step.apply:
            names.append((t, loop.active.name, step.probing))
        t += 0.5
    assert [n for _, n, _ in names] == ["s2g4", "s2g2", "s2g1"]
    assert all(probing for _, _, probing in names)
    gaps = np.diff([at for at, _, _ in names])
    assert np.all(gaps <= 5.5) and loop.failed_probes == 0


def test_no_probe_without_a_better_rung(configs):
    loop = SchedulingLoop(configs, settings(probe_interval_s=1.0, min_dwell_s=0.0))
    apply(loop, 0.0, measured(50))
    assert loop.active.name == "s2g1"
    for t in range(1, 30):
        assert not apply(loop, float(t), lower(6.4)).apply
    assert loop.probes == 0


def test_a_refused_configuration_is_backed_off_and_retried(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, retry_backoff_s=4.0))
    apply(loop, 0.0, measured(8))
    step = apply(loop, 1.0, measured(1), ok=False)
    assert step.target.name == "s3g4" and loop.active.name == "s2g1"
    assert loop.rejections == 1 and "edge says no" in loop.last_rejection
    assert loop.hysteresis.current == "s2g1"  # rolled back to what the edge runs
    assert loop.blocked_until(step.target) == pytest.approx(5.0)
    # Meanwhile the best of the rest.
    assert apply(loop, 2.0, measured(1), ok=True).target.name == "s2g8"
    assert apply(loop, 4.9, measured(1)).target.name == "s2g8"
    retry = apply(loop, 5.0, measured(1), ok=False)
    assert retry.apply and retry.target.name == "s3g4"
    assert loop.blocked_until(retry.target) == pytest.approx(5.0 + 8.0)  # doubled
    assert apply(loop, 13.0, measured(1), ok=True).target.name == "s3g4"
    assert loop.active.name == "s3g4" and loop.blocked_until(loop.active) is None


def test_override_pins_and_releases(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0))
    apply(loop, 0.0, measured(8))
    loop.set_override((3, 4.0))
    for t, mbps in ((1.0, 50), (2.0, 0.1), (3.0, 8)):
        step = apply(loop, t, measured(mbps))
        assert step.target.name == "s3g4" and loop.active.name == "s3g4"
    assert apply(loop, 4.0, None).target.name == "s3g4"  # no estimate needed
    with pytest.raises(KeyError):
        loop.set_override((7, 3.0))
    loop.set_override(None)
    assert apply(loop, 5.0, measured(8)).target.name == "s2g1"


def test_a_refused_override_waits_for_its_back_off(configs):
    loop = SchedulingLoop(configs, settings(retry_backoff_s=3.0))
    apply(loop, 0.0, measured(8))
    loop.set_override((2, 8.0))
    assert apply(loop, 1.0, measured(8), ok=False).target.name == "s2g8"
    held = apply(loop, 2.0, measured(8))
    assert not held.apply and "refused" in held.reason and loop.active.name == "s2g1"
    assert apply(loop, 4.0, measured(8)).apply and loop.active.name == "s2g8"


def test_edge_changes_from_elsewhere_are_followed(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=5.0))
    apply(loop, 0.0, measured(1))
    assert loop.observe_edge(1.0, 2, 4.0).name == "s2g4"
    assert loop.active.name == "s2g4" and loop.hysteresis.current == "s2g4"
    assert not apply(loop, 2.0, measured(8)).apply  # the dwell counts from the change
    assert apply(loop, 6.0, measured(8)).target.name == "s2g1"
    assert loop.observe_edge(7.0, 9, 9.0) is None and loop.active.name == "s2g1"


def test_the_first_decision_replaces_the_start_up_guess_at_once(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=5.0, margin=0.5))
    assert loop.observe_edge(0.0, 2, 8.0).name == "s2g8"  # what the edge started with
    step = apply(loop, 0.5, measured(1))
    assert step.apply and loop.active.name == "s3g4"  # no dwell, no margin: it was a guess
    assert loop.switches == 1
    # Later decisions are damped again: 8 Mbit/s would pick more bytes, but not before 5 s,
    # and not by less than the margin after them.
    assert apply(loop, 1.0, measured(8)).decision.configuration.name == "s2g1"
    assert not apply(loop, 1.5, measured(8)).apply and loop.active.name == "s3g4"
    assert not apply(loop, 5.5, measured(8)).apply and loop.active.name == "s3g4"
    loop.update_settings(settings(min_dwell_s=5.0, margin=0.0))
    assert apply(loop, 6.0, measured(8)).apply and loop.active.name == "s2g1"


def test_a_first_decision_that_keeps_the_start_up_configuration_switches_nothing(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=5.0))
    loop.observe_edge(0.0, 3, 4.0)
    step = apply(loop, 0.5, measured(1))
    assert not step.apply and loop.active.name == "s3g4" and loop.switches == 0


def test_pending_requests_block_new_decisions(configs):
    loop = SchedulingLoop(configs, settings())
    step = loop.step(0.0, measured(8))
    loop.request_sent(0.0, step.target)
    again = loop.step(1.0, measured(0.1))
    assert not again.apply and again.target == step.target and "waiting" in again.reason


def test_latency_objective_with_a_deadline_and_a_client_only_option(tmp_path):
    local = BundleConfiguration(
        id="local", split_point=9, split_name="fc", ratio=1.0, codec="float32",
        feature_shape=(10,), edge_onnx="onnx/edge_9.onnx", cloud_onnx="onnx/cloud_9.onnx",
        method="client_only", accuracy=0.93, bytes_per_frame=0.0, edge_ms=60.0, cloud_ms=0.0)
    usable, _ = configurations_from_bundle(make_bundle(tmp_path / "b", extra=[local]))
    loop = SchedulingLoop(usable, settings(objective="latency", deadline_s=0.1))
    assert apply(loop, 0.0, measured(0.1)).target.name == "local"  # nothing else is fast
    step = apply(loop, 3.0, measured(100))
    assert step.target.name != "local" and step.decision.latency_s < 0.06


def test_settings_are_validated():
    for bad in (dict(objective="speed"), dict(frame_rate_hz=0), dict(deadline_s=0),
                dict(margin=-1), dict(probe_gain=1.0), dict(probe_steps=0),
                dict(retry_backoff_s=10, max_retry_backoff_s=5), dict(link_share=0),
                dict(link_share=1.5)):
        with pytest.raises(ValueError):
            SchedulerSettings(**bad)


def test_duplicate_configuration_ids_are_refused(configs):
    with pytest.raises(ValueError, match="share"):
        SchedulingLoop([*configs, configs[0]], settings())


# -- closed loop --------------------------------------------------------------------------------

def closed_loop(configs, trace_path: Path, duration: float, **knobs):
    """Edge at T_GEN with the active configuration → shaper → receipts → estimator → loop."""
    trace = load_trace(trace_path)
    shaper = LinkShaper(trace, queue_limit_bytes=200_000)
    estimator = BandwidthEstimator()
    loop = SchedulingLoop(configs, settings(**knobs))
    loop.observe_edge(0.0, 2, 1.0)
    in_flight: list[tuple[float, Receipt]] = []
    history: list[tuple[float, str, bool]] = []
    dt, seq = 0.01, 0
    for tick in range(int(duration / dt)):
        t = tick * dt
        if tick % int(1 / (T_GEN * dt)) == 0:
            size = int(loop.active.bytes_per_frame)
            arrival = shaper.send(t, size)
            if arrival is not None and math.isfinite(arrival):
                in_flight.append((arrival, Receipt(seq, size, t, arrival)))
            seq += 1
        while in_flight and in_flight[0][0] <= t:
            estimator.add(in_flight.pop(0)[1], now_s=t)
        if tick % 50 == 0:
            e = estimator.estimate(now_s=t)
            link = None if e.bandwidth_bps is None else LinkState(
                e.bandwidth_bps, e.rtt_s or 0.0, e.lower_bound)
            step = apply(loop, t, link)
            if step.apply:
                history.append((t, loop.active.name, step.probing))
    return loop, history


TICK_S = 0.5  # the scheduler node's decision period


def lagged_estimates(trace_name: str, seconds: float) -> list[tuple[float, float]]:
    """(time, capacity estimate) per tick of a committed trace, seen through a half-blend per
    tick (an estimator that follows a change within about a second)."""
    trace = load_trace(REPO / "config/traces" / trace_name)
    out: list[tuple[float, float]] = []
    estimate = None
    for k in range(int(seconds / TICK_S)):
        rate = trace.rate_at(k * TICK_S)
        estimate = rate if estimate is None else 0.5 * estimate + 0.5 * rate
        out.append((k * TICK_S, estimate))
    return out


def replay(configs, trace_name: str, seconds: float, **knobs):
    """A SchedulingLoop fed :func:`lagged_estimates`; (loop, [(time, name) per switch])."""
    loop = SchedulingLoop(configs, settings(**knobs))
    switches = []
    for t, estimate in lagged_estimates(trace_name, seconds):
        if apply(loop, t, LinkState(estimate, 0.02)).apply:
            switches.append((t, loop.active.name))
    return loop, switches


def test_a_varying_link_is_planned_over_its_recent_capacity(configs):
    # One draw of N(5, 3) Mbit/s per second: thresholding each estimate chases the draws.
    chasing, _ = replay(configs, "gauss_mu5_sd3.csv", 120.0, variation_window_s=0.0)
    planned, _ = replay(configs, "gauss_mu5_sd3.csv", 120.0, variation_window_s=10.0)
    assert planned.switches * 2 <= chasing.switches
    # The decision is the highest expected ν_eff over the window (Hu & K eqs. (4)-(6)).
    step = planned.step(120.0, LinkState(5e6, 0.02))
    recent = planned.capacity.distribution(1.0)
    assert len(planned.capacity) == 20
    for config in configs:
        assert step.decision.scores[config.name] == pytest.approx(
            expected_effective_accuracy(config, recent, T_GEN))
    assert step.decision.configuration.name == max(
        configs, key=lambda c: expected_effective_accuracy(c, recent, T_GEN)).name


@pytest.mark.parametrize("trace_name", ["gauss_mu3_sd2.csv", "gauss_mu5_sd3.csv"])
def test_the_default_window_chases_fewer_draws_than_ten_seconds(configs, trace_name):
    """Ten one-second draws have a mean a third of the link's spread off: a 10-s window
    moved the scheduler on each wander of it (testbed, N(3, 2): 7-14 switches per run). The
    default window switches less and delivers as much."""
    trace = load_trace(REPO / "config/traces" / trace_name)
    seconds = float(trace.times_s[-1])
    runs = {}
    for window_s in (10.0, SchedulerSettings().variation_window_s):
        loop = SchedulingLoop(configs, settings(variation_window_s=window_s))
        delivered = []
        for t, estimate in lagged_estimates(trace_name, seconds):
            apply(loop, t, LinkState(estimate, 0.02))
            delivered.append(effective_accuracy(loop.active, trace.rate_at(t), T_GEN))
        runs[window_s] = (loop.switches, float(np.mean(delivered)))
    (short_switches, short_nu) = runs[10.0]
    (long_switches, long_nu) = runs[SchedulerSettings().variation_window_s]
    assert long_switches < short_switches
    assert long_nu >= short_nu - 0.01


def test_lower_bounds_between_the_estimates_keep_the_window(configs):
    # On a link that varies, some estimates are only lower bounds (a train too short to time,
    # the frames' throughput between two trains). They neither measure the variation nor show
    # a fall: planning over the window must go on, not fall back to each point estimate.
    planned, _ = replay(configs, "gauss_mu5_sd3.csv", 120.0, variation_window_s=10.0)
    loop = SchedulingLoop(configs, settings(variation_window_s=10.0))
    for k, (t, estimate) in enumerate(lagged_estimates("gauss_mu5_sd3.csv", 120.0)):
        bound = k % 3 == 2  # what unsaturating frames delivered: under the capacity
        apply(loop, t, LinkState(0.5 * estimate if bound else estimate, 0.02, bound))
    assert len(loop.capacity) >= MIN_SAMPLES and loop.capacity.restarts <= 1
    assert loop.switches <= 2 * planned.switches  # (clearing the window at each: 40)


def test_the_window_follows_a_fall_at_once_and_a_rise_when_confirmed(configs):
    # 8 Mbit/s, 1 from 30 s, 4 from 60 s.
    _, with_window = replay(configs, "step_8_1_4mbps.csv", 90.0, variation_window_s=10.0)
    _, without = replay(configs, "step_8_1_4mbps.csv", 90.0, variation_window_s=0.0)
    # The window at 1 Mbit/s is steady: a rise when two estimates show it.
    for step_s, delay_s in ((30.0, 0.0), (60.0, (STEADY_RISE_ESTIMATES - 1) * TICK_S)):
        first = [next(t for t, _ in switches if t >= step_s) for switches in (with_window,
                                                                               without)]
        assert first[0] == first[1] + delay_s <= step_s + 2.0


def test_one_high_estimate_does_not_move_the_scheduler(configs):
    for window_s, moves in ((10.0, False), (0.0, True)):
        loop = SchedulingLoop(configs, settings(variation_window_s=window_s))
        for k in range(20):
            apply(loop, k * TICK_S, measured(1.0))
        before = loop.active.name
        apply(loop, 10.0, measured(40.0))
        assert (loop.active.name != before) is moves
        apply(loop, 10.5, measured(1.0))  # (the chased draw overloads the link: left at once)
        assert loop.active.name == before


def test_closed_loop_on_the_step_trace(configs):
    # config/traces/step_8_1_4mbps.csv: 8 Mbit/s, 1 Mbit/s from 30 s, 4 Mbit/s from 60 s.
    loop, history = closed_loop(configs, REPO / "config/traces/step_8_1_4mbps.csv", 110.0)
    by_name = {c.name: c for c in configs}

    def running(at: float) -> Configuration:
        name = "s2g1"
        for t, n, _ in history:
            if t <= at:
                name = n
        return by_name[name]

    assert running(29.9).name == "s2g1"  # 6.4 Mbit/s fits in 8
    after_drop = running(34.0)
    assert after_drop.bytes_per_frame < by_name["s2g1"].bytes_per_frame
    assert after_drop.split_point > 2 or after_drop.ratio > 1.0
    assert after_drop.bytes_per_frame * 8 * T_GEN <= 1e6  # fits the new link
    # 4 Mbit/s is only seen by probing; the loop climbs back to s2g2 (3.2 Mbit/s).
    assert running(109.0).name == "s2g2"
    assert any(probing for t, _, probing in history if t > 60)
    # min_dwell_s, except away from a configuration the link no longer carried
    trace = load_trace(REPO / "config/traces/step_8_1_4mbps.csv")
    for (t0, name, _), (t1, _, _) in itertools.pairwise(history):
        if t1 - t0 < 2.0 - 1e-9:
            assert by_name[name].bytes_per_frame * 8 * T_GEN > trace.rate_at(t1), (t0, t1)
    assert len(history) <= 12 and loop.rejections == 0


# -- start-up ------------------------------------------------------------------------------
def _sized(cid: str, ratio: float, nbytes: float | None, accuracy: float | None):
    return BundleConfiguration(
        id=cid, split_point=10, split_name="layer3.2", ratio=ratio, codec="quant:bits=4",
        feature_shape=(64, 8, 8), edge_onnx="onnx/e.onnx", cloud_onnx="onnx/c.onnx",
        accuracy=accuracy, bytes_per_frame=nbytes)


def test_startup_takes_the_best_effective_accuracy_on_a_link_for_the_smallest_frames():
    # The default bundle's layer3.2 ladder: k1 92 B at 23 %, BBNet 190 B at 85.6 %, ...
    k1, bbnet = _sized("k1", 184, 92.3, 0.2309), _sized("bbnet", 86.4, 189.7, 0.8556)
    k4, k64 = _sized("k4", 99.1, 167.8, 0.748), _sized("k64", 9.71, 1712.0, 0.8543)
    # 0.8556 × 92.3/189.7 = 0.416 beats k4's 0.748 × 92.3/167.8 = 0.411 and k1's 0.231
    assert startup_configuration([k1, k4, bbnet, k64]).id == "bbnet"
    # a smallest configuration that is accurate enough is the start
    assert startup_configuration([_sized("k1", 184, 92.3, 0.80), bbnet]).id == "k1"
    # equal scores: fewer bytes
    twin = _sized("twin", 40.0, 184.6, 0.2309 * 2)
    assert startup_configuration([k1, twin]).id == "k1"


def test_startup_without_measurements_falls_back_to_the_smallest_frames():
    assert startup_configuration([_sized("a", 4, 900.0, None),
                                  _sized("b", 8, 400.0, None)]).id == "b"
    assert startup_configuration([_sized("a", 4, None, None), _sized("b", 16, None, 0.9),
                                  _sized("c", 8, None, None)]).id == "b"
    with pytest.raises(ValueError, match="no configurations"):
        startup_configuration([])


def _with_edge_only(plain: Path, directory: Path) -> list[Configuration]:
    """The configurations of ``plain`` and edge-only, on a slow robot: the whole model takes
    250 ms, 4 frames/s of a 10-Hz camera."""
    from split_infer.tools.synthetic_bundle import with_measurements

    _tiny_onnx(directory / "full.onnx")
    bundle = with_measurements(plain, directory / "b", lambda c: {},
                               files={"onnx/full.onnx": (directory / "full.onnx").read_bytes()},
                               client_only={"onnx": "onnx/full.onnx", "accuracy": 0.93,
                                            "edge_ms": 250.0})
    configs, skipped = configurations_from_bundle(bundle, include_edge_only=True)
    assert skipped == []
    return configs


def test_edge_only_is_a_configuration_that_wins_only_where_the_link_is_too_poor(tmp_path):
    from split_infer.adaptation.configurations import edge_only_configuration

    plain = make_bundle(tmp_path / "plain")
    assert edge_only_configuration(plain) is None  # no whole model to run
    _, skipped = configurations_from_bundle(plain, include_edge_only=True)
    assert skipped == ["edge_only"]
    configs = _with_edge_only(plain, tmp_path)
    edge_only = next(c for c in configs if c.name == "edge_only")
    assert (edge_only.split_point, edge_only.ratio) == EDGE_ONLY_KEY
    assert edge_only.kind == "client_only" and not edge_only.transmits
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    assert loop.lookup(*EDGE_ONLY_KEY) is edge_only
    # 6.4 Mbit/s carries the best split at the camera rate: 0.92 > 0.93 × 4/10.
    assert apply(loop, 0.0, LinkState(6.4e6)).target.name == "s2g1"
    # 0.1 Mbit/s: the smallest split gets 1.6 frames/s (ν_eff 0.13); edge-only 0.37.
    step = apply(loop, 1.0, LinkState(0.1e6))
    assert step.target is edge_only and step.apply
    assert step.predicted_effective_accuracy(T_GEN) == pytest.approx(0.93 * 4 / T_GEN)
    # Back up: the split again.
    assert apply(loop, 2.0, LinkState(6.4e6)).target.name == "s2g1"


def test_an_edge_that_classifies_what_its_link_cannot_take_is_planned_with_those_frames(
        tmp_path):
    configs = _with_edge_only(make_bundle(tmp_path / "plain"), tmp_path)
    edge_only = next(c for c in configs if c.name == "edge_only")
    s3g4 = next(c for c in configs if c.name == "s3g4")
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    assert loop.fallback is None  # the edge drops those frames until it says otherwise
    assert apply(loop, 0.0, LinkState(0.1e6)).target is edge_only
    # With the fallback, s3g4's frames (640 ms each on the link, plus half a whole-model frame
    # of 250 ms the link waits for) leave the robot most of its time for the whole model:
    # 1.3 + 3.97 frames a second, more than edge-only's 4 in all.
    loop.set_edge_fallback(True)
    assert loop.fallback == edge_only  # as planned (measured times replace the plan's)
    step = apply(loop, 1.0, LinkState(0.1e6))
    assert step.target is s3g4 and step.apply
    busy = (1 - 0.1e6 / (8 * 8000) * s3g4.edge_s)  # the whole model's share at Hu & K's rate
    split_hz = 1 / (8 * 8000 / 0.1e6 + busy * 0.125)
    spare_hz = (1 - split_hz * s3g4.edge_s) / 0.250
    assert step.predicted_effective_accuracy(T_GEN) == pytest.approx(
        (split_hz * 0.85 + spare_hz * 0.93) / T_GEN)
    assert split_hz + spare_hz > 4.0
    # A link that carries the camera's rate leaves no frames over: the plain choice.
    assert apply(loop, 2.0, LinkState(6.4e6)).target.name == "s2g1"
    loop.set_edge_fallback(False)
    assert apply(loop, 3.0, LinkState(0.1e6)).target is edge_only
    # Without the edge-only configuration there is no whole model to plan the frames with.
    without = SchedulingLoop([c for c in configs if c is not edge_only], settings())
    without.set_edge_fallback(True)
    assert without.fallback is None


def test_frames_lost_to_the_fallback_s_work_do_not_slow_the_split_s_plan(tmp_path):
    configs = _with_edge_only(make_bundle(tmp_path / "plain"), tmp_path)
    s3g4 = next(c for c in configs if c.name == "s3g4")
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    loop.observe_edge(0.0, 3, 4.0)
    # The robot took 4 of 10 camera frames a second: 250 ms each, were it all s3g4's ...
    loop.observe_received(3.0, 4.0, 0.4)
    assert loop.observe_edge_time(3.0, 0.005) is s3g4
    assert loop.edge_time_s(s3g4) == pytest.approx(0.25)
    # ... but most of them were the fallback's whole-model frames: the split's own time holds.
    fresh = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    fresh.observe_edge(0.0, 3, 4.0)
    assert fresh.observe_fallback(3.0, 0.2) is None  # wall-timed: no CPU time to credit
    fresh.observe_received(3.0, 4.0, 0.4)
    assert fresh.observe_edge_time(3.0, 0.005) is s3g4
    assert fresh.edge_time_s(s3g4) == pytest.approx(0.005)


def test_the_fallback_s_frames_time_the_whole_model_on_a_cpu_timed_robot(tmp_path):
    configs = _with_edge_only(make_bundle(tmp_path / "plain"), tmp_path)
    edge_only = next(c for c in configs if c.name == "edge_only")
    # The splits planned at 5 ms a frame under the budget for 1.25 ms of CPU (a quarter core);
    # the whole model has no planned CPU time (the plan did not time it).
    cpu = {c.name: 0.00125 for c in configs if c is not edge_only}
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0), cpu)
    loop.set_edge_fallback(True)
    assert loop.edge_time_s(edge_only) == pytest.approx(0.250)  # the profile's
    # Its frames cost 80 ms of CPU: 320 ms a frame under the quarter core.
    assert loop.observe_fallback(1.0, 0.080) is edge_only
    assert loop.edge_time_s(edge_only) == pytest.approx(0.320)
    assert loop.fallback.edge_s == pytest.approx(0.320)
    for bad in (0.0, math.nan, -1.0):
        assert loop.observe_fallback(2.0, bad) is None
    # With a planned CPU time it is the plan × measured / planned, and joins the CPU line.
    timed = SchedulingLoop(configs, settings(), {**cpu, "edge_only": 0.0625})
    assert timed.observe_fallback(1.0, 0.080) is edge_only
    assert timed.edge_time_s(edge_only) == pytest.approx(0.250 * 0.080 / 0.0625)


def test_a_robot_faster_than_its_plan_tries_what_the_plan_ruled_out(tmp_path):
    # A plan measured on a slower machine: held at its planned times, edge-only would never
    # run on a link it would win on.
    configs = _with_edge_only(make_bundle(tmp_path / "plain"), tmp_path)
    edge_only = next(c for c in configs if c.name == "edge_only")
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    # 0.3 Mbit/s: s3g4 (8 kB) crosses 4.7 frames/s (ν_eff 0.40); edge-only is planned at 4/s
    # (0.37).
    assert apply(loop, 0.0, LinkState(0.3e6)).target.name == "s3g4"
    # The robot runs s3g4's head in 60 % of its planned time: the whole model too, 6.7/s.
    for t in range(3, 8):
        loop.observe_edge_time(float(t), 0.6 * loop.lookup(3, 4.0).edge_s)
    assert loop.robot_factor == pytest.approx(0.6)
    assert loop.edge_time_s(edge_only) == pytest.approx(0.6 * 0.250)
    step = apply(loop, 8.0, LinkState(0.3e6))
    assert step.target is edge_only and step.apply
    # It runs slower than that after all (300 ms, 3.3/s): measured, it loses to s3g4 again.
    for t in range(11, 16):
        loop.observe_edge_time(float(t), 0.300)
    assert apply(loop, 16.0, LinkState(0.3e6)).target.name == "s3g4"


def test_measured_edge_times_replace_the_profile(configs):
    from split_infer.adaptation.configurations import with_edge_timing

    by_name = {c.name: c for c in configs}
    timed = {c.name: c for c in with_edge_timing(configs, {"s2g1": 40.0}, scale=3.0)}
    assert timed["s2g1"].edge_s == pytest.approx(0.040)
    assert timed["s3g4"].edge_s == pytest.approx(by_name["s3g4"].edge_s * 3.0)
    kept = {c.name: c for c in with_edge_timing(configs, {"s2g1": 40.0})}
    assert kept["s3g4"].edge_s == by_name["s3g4"].edge_s
    with pytest.raises(ValueError, match="s2g1"):
        with_edge_timing(configs, {"s2g1": -1.0})
    # A slow robot moves the decision: at 6.4 Mbit/s, s2g1 at 250 ms per frame delivers 4 of
    # 10 frames/s (0.37), and the next rung down the ladder wins.
    slow = with_edge_timing(configs, {"s2g1": 250.0})
    loop = SchedulingLoop(slow, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    assert apply(loop, 0.0, LinkState(6.4e6)).target.name == "s2g2"


def test_a_configuration_slower_than_planned_is_planned_with_what_it_costs(configs):
    from split_infer.adaptation.scheduling import EDGE_TIME_SETTLE_S

    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    s2g1 = loop.lookup(2, 1.0)
    # 6.4 Mbit/s carries s2g1 at the camera rate, as planned (5 ms per frame).
    assert apply(loop, 0.0, LinkState(6.4e6)).target is s2g1
    # The robot reports 250 ms per frame (4 of 10 frames/s). Too early after the switch the
    # report may still hold the previous configuration's frames: not credited.
    assert loop.observe_edge_time(EDGE_TIME_SETTLE_S / 2, 0.250) is None
    assert loop.edge_time_s(s2g1) == pytest.approx(0.005)
    assert loop.observe_edge_time(EDGE_TIME_SETTLE_S, 0.250) is s2g1
    assert loop.edge_time_s(s2g1) == pytest.approx(0.250)
    for bad in (math.nan, -1.0, 0.0):
        assert loop.observe_edge_time(EDGE_TIME_SETTLE_S, bad) is None
    step = apply(loop, EDGE_TIME_SETTLE_S + 1, LinkState(6.4e6))
    assert step.apply and step.target.name == "s2g2"  # planned at its own 5 ms
    # What s2g1 costs is remembered while s2g2 runs: no switching back at the same bandwidth,
    # however long s2g2 runs and whatever it reports.
    for t in range(4, 20):
        loop.observe_edge_time(float(t), 0.004)
        assert not apply(loop, float(t), LinkState(6.4e6)).apply
    assert loop.edge_time_s(loop.lookup(2, 2.0)) == pytest.approx(0.004, rel=0.1)
    assert loop.edge_time_s(s2g1) == pytest.approx(0.250)


def test_measured_frame_sizes_replace_the_bundles_and_carry_over_within_a_split_point(
        configs):
    from split_infer.adaptation.scheduling import EDGE_TIME_SETTLE_S, MAX_SCENE_FACTOR

    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    s2g1, s2g2, s3g4 = loop.lookup(2, 1.0), loop.lookup(2, 2.0), loop.lookup(3, 4.0)
    # 3.3 Mbit/s carries s2g2's planned 40 kB at the camera rate, not s2g1's 80 kB.
    assert apply(loop, 0.0, LinkState(3.3e6)).target is s2g2
    # Too early after the switch the report may still hold the previous frames: not credited.
    assert loop.observe_frame_bytes(EDGE_TIME_SETTLE_S / 2, 20_000.0) is None
    assert loop.frame_bytes(s2g2) == pytest.approx(40_000)
    # This scene codes at half the bundle's size: s2g2 is 20 kB, and s2g1 (not run, the same
    # split point) is planned at 80 kB × 1/2; split 3's features keep their planned size.
    assert loop.observe_frame_bytes(EDGE_TIME_SETTLE_S, 20_000.0) is s2g2
    assert loop.frame_bytes(s2g2) == pytest.approx(20_000)
    assert loop.frame_bytes(s2g1) == pytest.approx(40_000)
    assert loop.frame_bytes(s3g4) == pytest.approx(8_000)
    for bad in (math.nan, math.inf, -1.0, 0.0):
        assert loop.observe_frame_bytes(EDGE_TIME_SETTLE_S + 0.5, bad) is None
    # So the same link now carries s2g1 at the camera rate, and the scheduler moves up.
    step = apply(loop, EDGE_TIME_SETTLE_S + 1, LinkState(3.3e6))
    assert step.apply and step.target is s2g1
    assert step.decision.configuration.bytes_per_frame == pytest.approx(40_000)
    # A scene factor carries over only within limits: one odd measurement is not a new scene.
    odd = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    apply(odd, 0.0, LinkState(3.3e6))
    odd.observe_frame_bytes(EDGE_TIME_SETTLE_S, 400_000.0)
    assert odd.frame_bytes(s2g1) == pytest.approx(80_000 * MAX_SCENE_FACTOR)


def test_unrun_configurations_are_planned_as_slow_as_the_robot_has_been(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    s2g1, s2g2 = loop.lookup(2, 1.0), loop.lookup(2, 2.0)
    assert apply(loop, 0.0, LinkState(6.4e6)).target is s2g1
    # 20 ms per frame instead of the planned 5: 4x, capped there.
    for t in range(3, 30):
        loop.observe_edge_time(float(t), 0.020)
    assert loop.robot_factor == pytest.approx(4.0, rel=0.01)
    # s2g2 has not run; its planned 5 ms become 20, like every other split configuration's,
    # so nothing is worth a switch.
    assert loop.edge_time_s(s2g2) == pytest.approx(0.020, rel=0.01)
    assert not apply(loop, 30.0, LinkState(6.4e6)).apply
    # A robot faster than planned makes unrun configurations faster, by at most
    # 1 / MIN_ROBOT_FACTOR: one odd report is not a new robot.
    fresh = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    apply(fresh, 0.0, LinkState(6.4e6))
    fresh.observe_edge_time(5.0, 0.001)
    assert fresh.robot_factor == MIN_ROBOT_FACTOR
    assert fresh.edge_time_s(s2g2) == pytest.approx(s2g2.edge_s * MIN_ROBOT_FACTOR)


def test_the_first_report_sets_the_robot_factor_and_later_ones_are_averaged(configs):
    from split_infer.adaptation.scheduling import EDGE_TIME_ALPHA

    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    s2g1, s2g2 = loop.lookup(2, 1.0), loop.lookup(2, 2.0)
    assert apply(loop, 0.0, LinkState(6.4e6)).target is s2g1
    # One report of 1.5x the planned 5 ms: every unrun configuration is 1.5x at once, not
    # the 1.15x an average starting from the prior of 1 would give.
    loop.observe_edge_time(3.0, 0.0075)
    assert loop.robot_factor == pytest.approx(1.5)
    assert loop.edge_time_s(s2g2) == pytest.approx(1.5 * s2g2.edge_s)
    # A second report (2x) is averaged in with the usual weight.
    loop.observe_edge_time(4.0, 0.010)
    assert loop.robot_factor == pytest.approx((1 - EDGE_TIME_ALPHA) * 1.5 + EDGE_TIME_ALPHA * 2)


def test_an_edge_that_loses_camera_frames_is_planned_at_the_frames_it_took(configs):
    from split_infer.adaptation.scheduling import EDGE_TIME_SETTLE_S

    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    s2g1 = loop.lookup(2, 1.0)
    assert apply(loop, 0.0, LinkState(6.4e6)).target is s2g1
    t = EDGE_TIME_SETTLE_S
    # 6 frames per second taken at 60 ms each, but every frame the camera sent arrived: a
    # camera slower than planned, not a slow robot. The time per frame stands.
    loop.observe_received(t, 6.0, 1.0)
    loop.observe_edge_time(t, 0.060)
    assert loop.edge_time_s(s2g1) == pytest.approx(0.060)
    # 6 per second and 60 % of the camera's frames: the robot lost frames; it costs 1/6 s.
    loop.observe_received(t + 1, 6.0, 0.6)
    loop.observe_edge_time(t + 1, 0.060)
    assert loop.edge_time_s(s2g1) == pytest.approx(0.7 * 0.060 + 0.3 / 6.0)
    # A received rate older than a couple of report periods is not combined.
    stale = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    apply(stale, 0.0, LinkState(6.4e6))
    stale.observe_received(0.0, 6.0, 0.6)
    stale.observe_edge_time(t + 5, 0.090)
    assert stale.edge_time_s(s2g1) == pytest.approx(0.090)
    # Unusable values are ignored: the last good report (t + 6) still counts.
    stale.observe_received(t + 6, 6.0, 0.6)
    for fps, share in ((math.nan, 0.5), (-1.0, 0.5), (6.0, 0.0), (6.0, 1.5), (0.0, 0.5)):
        stale.observe_received(t + 6.5, fps, share)
    stale.observe_edge_time(t + 6, 0.090)
    assert stale.edge_time_s(s2g1) == pytest.approx(0.7 * 0.090 + 0.3 / 6.0)


def test_a_cpu_timed_loop_plans_with_the_edges_cpu_time_and_ignores_its_wall_time(configs):
    # Planned: every configuration 5 ms a frame back to back under the budget, 2 ms of CPU.
    cpu = {c.name: 0.002 for c in configs}
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0), cpu)
    assert loop.cpu_timed and not SchedulingLoop(configs, settings()).cpu_timed
    loop.observe_edge(0.0, 2, 2.0)
    # A paced frame runs unthrottled: its wall time says nothing about the budget.
    assert loop.observe_edge_time(5.0, 0.001) is None
    assert loop.edge_time_s(loop.active) == pytest.approx(0.005)
    # 5 ms of CPU a frame (the node's messaging included): 2.5 × the plan.
    assert loop.observe_edge_cpu(5.0, 0.005).name == "s2g2"
    assert loop.edge_time_s(loop.active) == pytest.approx(0.0125)
    assert loop.robot_factor == pytest.approx(2.5)
    s3 = loop.lookup(3, 4.0)
    assert loop.edge_time_s(s3) == pytest.approx(0.0125)  # not run: planned × the factor
    for bad in (0.0, -1.0, math.nan, math.inf):
        assert loop.observe_edge_cpu(6.0, bad) is None
    # Without a planned CPU time for the configuration there is nothing to compare with.
    partial = SchedulingLoop(configs, settings(), {"s3g4": 0.002})
    partial.observe_edge(0.0, 2, 2.0)
    assert partial.observe_edge_cpu(5.0, 0.005) is None


def test_the_nodes_cpu_beyond_the_plan_weighs_more_on_a_light_head(configs):
    # s2g2 planned at 8 ms of CPU, s3g4 at 1 ms; the edge spent 12 ms a frame on s2g2: 1.5 ×
    # its plan, but 4 ms a frame beyond it, which a 1-ms head pays too: 5 × its plan.
    cpu = {c.name: 0.008 for c in configs} | {"s3g4": 0.001}
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0), cpu)
    loop.observe_edge(0.0, 2, 2.0)
    loop.observe_edge_cpu(1.0, 0.012)
    assert loop.robot_factor == pytest.approx(1.5)
    assert loop.edge_time_s(loop.lookup(3, 4.0)) == pytest.approx(0.005 * 4.0)  # clamped at 4
    assert loop.edge_time_s(loop.lookup(2, 1.0)) == pytest.approx(0.005 * 1.5)  # sibling
    # An edge cheaper than its plan (0.75 ×) makes the others cheaper by its factor, not by
    # the 2 ms a frame it saved, which would make the 1-ms head cost less than nothing.
    cheap = SchedulingLoop(configs, settings(), cpu)
    cheap.observe_edge(0.0, 2, 2.0)
    cheap.observe_edge_cpu(1.0, 0.006)
    assert cheap.robot_factor == pytest.approx(0.75)
    assert cheap.edge_time_s(cheap.lookup(3, 4.0)) == pytest.approx(0.005 * 0.75)


def test_unrun_configurations_are_planned_on_a_line_through_those_that_ran(tmp_path):
    """The testbed's quarter-core robot: the JPEG sender (split 2 here) planned at 2.2 ms of
    CPU ran at 5.0, split 3 planned at 7.1 ran at 12.3; split 4, planned at 7.9, ran at 12.9.
    × the JPEG's 2.3 it looked like 18 ms and was never tried."""
    s4 = BundleConfiguration(
        id="s4g16", split_point=4, split_name="layer4", ratio=16.0, codec="quant:bits=8",
        feature_shape=(64, 8, 8), edge_onnx="onnx/edge_4.onnx", cloud_onnx="onnx/cloud_4.onnx",
        accuracy=0.9, bytes_per_frame=3000.0, edge_ms=5.0, cloud_ms=5.0)
    configs, _ = configurations_from_bundle(make_bundle(tmp_path / "b", extra=[s4]))
    cpu = {c.name: 0.0022 for c in configs} | {"s3g4": 0.0071, "s4g16": 0.0079}
    loop = SchedulingLoop(configs, settings(), cpu)
    s4g16 = loop.lookup(4, 16.0)
    loop.observe_edge(0.0, 2, 1.0)
    assert loop.observe_edge_cpu(1.0, 0.0050).name == "s2g1"
    # One configuration ran: the plan + what it spent beyond its plan.
    assert loop.edge_time_s(s4g16) == pytest.approx(0.005 * (0.0079 + 0.0028) / 0.0079)
    loop.observe_edge(2.0, 3, 4.0)
    assert loop.observe_edge_cpu(3.0, 0.0123).name == "s3g4"
    slope = (0.0123 - 0.0050) / (0.0071 - 0.0022)
    fitted = 0.0050 + slope * (0.0079 - 0.0022)
    assert loop.edge_time_s(s4g16) == pytest.approx(0.005 * fitted / 0.0079)
    assert fitted == pytest.approx(0.0135, abs=0.0002)  # ran at 12.9 ms
    assert loop.robot_factor > 2.0  # the factor alone would have planned 18 ms


def test_a_cpu_timed_first_decision_waits_for_the_robots_first_cpu_report(configs):
    cpu = {c.name: 0.002 for c in configs}
    loop = SchedulingLoop(configs, settings(min_dwell_s=5.0), cpu)
    loop.observe_edge(0.0, 2, 8.0)  # the start-up configuration
    step = apply(loop, 0.5, measured(8))
    assert not step.apply and "first CPU report" in step.reason
    # The start-up configuration's report counts at once (no switch of ours to settle).
    assert loop.observe_edge_cpu(0.8, 0.004).name == "s2g8"
    assert loop.robot_factor == pytest.approx(2.0)
    assert apply(loop, 1.0, measured(8)).apply  # decided with the factor, without the dwell
    # A robot that never reports does not hold the first decision for long.
    silent = SchedulingLoop(configs, settings(min_dwell_s=5.0), cpu)
    silent.observe_edge(0.0, 2, 8.0)
    assert not apply(silent, 0.5, measured(8)).apply
    assert apply(silent, 0.5 + FIRST_CPU_REPORT_WAIT_S, measured(8)).apply
    # Wall-timed loops do not wait.
    assert apply(SchedulingLoop(configs, settings()), 0.5, measured(8)).apply


def test_planned_cpu_times_are_read_by_name_and_checked(configs):
    cpu = planned_cpu_times(configs, {"s2g1": 2.0, "s3g4": 3.0, "other": 1.0})
    assert cpu == pytest.approx({"s2g1": 0.002, "s3g4": 0.003})
    for bad in (0, -1.0, math.nan, "2"):
        with pytest.raises(ValueError, match="s2g1"):
            planned_cpu_times(configs, {"s2g1": bad})


def test_one_try_covers_a_split_point(configs):
    loop = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    s2g1, s2g2, s3g4 = loop.lookup(2, 1.0), loop.lookup(2, 2.0), loop.lookup(3, 4.0)
    assert apply(loop, 0.0, LinkState(6.4e6)).target is s2g1
    loop.observe_edge_time(3.0, 2 * s2g1.edge_s)  # the split-2 head runs at twice its plan
    # Another split point runs as planned for a long while: the robot's factor returns to 1 ...
    loop.observe_edge(4.0, 3, 4.0)
    for t in range(7, 40):
        loop.observe_edge_time(float(t), s3g4.edge_s)
    assert loop.robot_factor == pytest.approx(1.0, abs=0.01)
    # ... but the other ratios at split 2 share the head that ran at twice its plan.
    assert loop.edge_time_s(s2g2) == pytest.approx(2 * s2g2.edge_s)
    # A head faster than planned makes its siblings faster too.
    fast = SchedulingLoop(configs, settings(min_dwell_s=0.0, probe_interval_s=0.0))
    apply(fast, 0.0, LinkState(6.4e6))
    fast.observe_edge_time(3.0, s2g1.edge_s * 0.8)
    assert fast.edge_time_s(s2g2) == pytest.approx(s2g2.edge_s * 0.8)


def test_a_low_draw_of_a_varying_link_does_not_waive_the_dwell(configs):
    """On a link planned over its recent draws, a draw the running configuration overloads is
    what the plan expects: the dwell holds (the N(3, 2) trace switched 5-7 times a run when
    every low draw waived it)."""
    loop = SchedulingLoop(configs, settings(min_dwell_s=5.0, variation_window_s=30.0))
    for k in range(12):  # 2 and 6 Mbit/s in turn: a window with a spread
        apply(loop, 0.5 * k, measured((2.0, 6.0)[k % 2]))
    assert len(loop.capacity) >= 6
    since, active = loop.hysteresis.since_s, loop.active
    decisions = set()
    for j in range(1, 12):  # low draws inside the band, within the dwell: the plan moves
        step = apply(loop, since + 0.4 * j, measured(0.5))
        decisions.add(step.decision.configuration.name)
        assert not step.apply and loop.active == active
    assert decisions - {active.name}  # (or the test shows nothing)


# -- a companion on a share of the frames (planning.mixing) ----------------------------------
#: At 2 Mbit/s and 10 frames/s: the late split is robot-bound (150 ms a frame: 6.7/s), the
#: early one link-bound (50 kB: 5/s). Sharing the frames, robot 0.15 − 0.10·x and link
#: 0.04 + 0.16·x s per frame meet at x = 0.11/0.26: 9.3 frames/s.
LATE = Configuration(name="late", bytes_per_frame=10e3, accuracy=0.9, edge_s=0.15,
                     cloud_s=0.005, split_point=3, ratio=4.0)
EARLY = Configuration(name="early", bytes_per_frame=50e3, accuracy=0.9, edge_s=0.05,
                      cloud_s=0.005, split_point=2, ratio=1.0)


def mixing_settings(**overrides) -> SchedulerSettings:
    """A loop that plans mixes (``mixing``, off by default), without dwell or probes."""
    return settings(**{"min_dwell_s": 0.0, "probe_interval_s": 0.0, "mixing": True,
                       **overrides})


def test_an_edge_that_can_run_a_companion_is_planned_with_the_best_mix():
    from split_infer.planning.mixing import MixedConfiguration

    loop = SchedulingLoop([LATE, EARLY], mixing_settings())
    assert apply(loop, 0.0, measured(2.0)).target is LATE  # the edge has no companion yet
    loop.set_edge_companion(True)
    step = apply(loop, 1.0, measured(2.0))
    target = step.target
    assert isinstance(target, MixedConfiguration) and step.apply and step.reason == "switch"
    assert (target.name, target.primary, target.companion) == ("late+early", LATE, EARLY)
    assert (target.split_point, target.ratio) == (3, 4.0)  # what split_point/ratio name
    assert target.share == pytest.approx(0.11 / 0.26)
    assert step.predicted_effective_accuracy(T_GEN) == pytest.approx(
        0.9 / (0.15 - 0.10 * 0.11 / 0.26) / T_GEN)
    assert loop.active is target
    # A share that moves by less than SHARE_STEP is kept; more is a new request.
    assert not apply(loop, 2.0, measured(2.05)).apply
    step = apply(loop, 3.0, measured(2.6))
    assert step.apply and step.reason == "companion share" and step.target.share > 0.45
    # A fast link: half the frames on the early split bring the robot to the camera's rate
    # (0.1 s a frame), as the early split alone would, with fewer bytes.
    fast = apply(loop, 4.0, measured(8.0)).target
    assert fast.share == pytest.approx(0.5) and fast.edge_s == pytest.approx(0.1)
    # A mix no better than a configuration alone by the margin is not taken up.
    fresh = SchedulingLoop([LATE, EARLY], mixing_settings())
    fresh.set_edge_companion(True)
    assert apply(fresh, 0.0, measured(8.0)).target is EARLY
    # Mixing off (the default): the late split alone.
    off = SchedulingLoop([LATE, EARLY], settings(min_dwell_s=0.0, probe_interval_s=0.0))
    off.set_edge_companion(True)
    assert apply(off, 0.0, measured(2.0)).target is LATE


def test_a_running_mix_is_followed_and_its_primary_credited_with_the_edge_s_reports():
    from split_infer.planning.mixing import MixedConfiguration

    loop = SchedulingLoop([LATE, EARLY], mixing_settings())
    loop.set_edge_companion(True)
    active = loop.observe_edge(0.0, 3, 4.0, companion=(2, 1.0), share=0.4)
    assert isinstance(active, MixedConfiguration) and loop.active is active
    assert (active.name, active.share) == ("late+early", 0.4)
    # The edge reports its primary's frames: credited to the late split, not to the mix.
    loop.observe_received(3.0, 6.0, 0.6)  # lost camera frames are the mix's, not LATE's
    assert loop.observe_edge_time(3.0, 0.12) == LATE
    assert loop.edge_time_s(LATE) == pytest.approx(0.12)
    assert loop.observe_frame_bytes(3.0, 30e3) is None  # a mean of both: neither's size
    # Alone again (share 0, or no companion): the edge runs the late split.
    assert loop.observe_edge(4.0, 3, 4.0, companion=(2, 1.0), share=0.0) is LATE
    assert loop.active is LATE


def test_a_running_mix_s_cpu_reports_are_its_primary_s_against_the_bundle_s_plan():
    loop = SchedulingLoop([LATE, EARLY], mixing_settings(),
                          planned_cpu_s={"late": 0.0375, "early": 0.0125})
    loop.set_edge_companion(True)
    loop.observe_edge(0.0, 3, 4.0, companion=(2, 1.0), share=0.4)
    assert loop.observe_edge_cpu(3.0, 0.045) == LATE
    assert loop.edge_time_s(LATE) == pytest.approx(0.15 * 0.045 / 0.0375)
    # The mix is rebuilt with the late split as now planned (0.18 s); the next report is
    # still measured against the bundle's 0.15 s, so the same CPU time keeps the same figure.
    loop.observe_edge(3.5, 3, 4.0, companion=(2, 1.0), share=0.5)
    assert loop.active.primary.edge_s == pytest.approx(0.18)
    assert loop.observe_edge_cpu(5.0, 0.045) == LATE
    assert loop.edge_time_s(LATE) == pytest.approx(0.18)

    # The companion's own CPU reports time it: 20 ms against its planned 12.5 ms of CPU.
    assert loop.observe_edge_cpu(6.0, 0.020, companion=True) == EARLY
    assert loop.edge_time_s(EARLY) == pytest.approx(0.05 * 0.020 / 0.0125)
    alone = SchedulingLoop([LATE, EARLY], settings(mixing=True),
                           planned_cpu_s={"early": 0.0125})
    alone.observe_edge(0.0, 3, 4.0)
    assert alone.observe_edge_cpu(3.0, 0.020, companion=True) is None  # no mix runs


def test_a_running_mix_ends_by_the_hysteresis_not_by_one_estimate():
    """A mix whose gain falls under the margin for a tick stays a candidate: the dwell and the
    margin decide, as for any configuration, instead of one estimate."""
    loop = SchedulingLoop([LATE, EARLY], mixing_settings(min_dwell_s=5.0))
    loop.set_edge_companion(True)
    assert apply(loop, 0.0, measured(2.0)).target.name == "late+early"
    # At 8 Mbit/s the early split alone ties the mix (both at the camera's rate): kept.
    step = apply(loop, 1.0, measured(8.0))
    assert step.target.name == "late+early" and step.decision.scores["late+early"] > 0


def test_without_mixing_an_edge_s_companion_is_not_the_scheduler_s():
    """A companion someone set by hand on an edge whose scheduler does not mix: the loop
    follows the primary and asks for nothing (no unscored mix to switch away from)."""
    loop = SchedulingLoop([LATE, EARLY], settings(min_dwell_s=5.0, probe_interval_s=0.0))
    loop.set_edge_companion(True)
    assert not loop.mixes
    assert loop.observe_edge(0.0, 3, 4.0, companion=(2, 1.0), share=0.4) is LATE
    step = apply(loop, 1.0, measured(2.0))
    assert step.target is LATE and not step.apply


def test_a_mix_is_planned_with_its_parts_as_measured_once_not_twice():
    from split_infer.planning.mixing import blend

    loop = SchedulingLoop([LATE, EARLY], mixing_settings())
    loop.set_edge_companion(True)
    loop.observe_edge(0.0, 3, 4.0)
    assert loop.observe_frame_bytes(3.0, 20e3) == LATE  # the scene codes twice as large
    mix = blend(loop._planned(LATE), loop._planned(EARLY), 0.5)
    assert mix.bytes_per_frame == pytest.approx((20e3 + 50e3) / 2)
    assert loop.frame_bytes(mix) == pytest.approx(mix.bytes_per_frame)  # not × 2 again
    assert loop.edge_time_s(mix) == pytest.approx(mix.edge_s)


def test_a_switch_is_explained_with_the_planned_scores_bandwidth_and_robot_times():
    from split_infer.adaptation.explaining import explain_step

    loop = SchedulingLoop([LATE, EARLY], mixing_settings())
    first = apply(loop, 0.0, measured(2.0))
    assert explain_step(loop, first, None) == (
        f"planned effective_accuracy {0.9 / 0.15 / T_GEN:.3f} at 2 Mbit/s; robot 150.0 ms a "
        "frame")
    loop.observe_edge_time(3.0, 0.30)  # the late split runs at twice its planned time
    loop.set_edge_companion(True)
    step = apply(loop, 4.0, measured(2.0))
    text = explain_step(loop, step, LATE)
    # Measured that slow, the late split becomes the companion of the early one, which has not
    # run and is planned at the robot factor (2 × 50 ms); the late split as measured.
    assert text.startswith(f"planned effective_accuracy "
                           f"{step.decision.scores[step.target.name]:.3f} "
                           f"({step.decision.scores['late']:.3f} for the previous) at 2 Mbit/s")
    assert step.target.name == "early+late"
    assert text.endswith("robot 100.0 + 300.0 ms a frame")
    assert explain_step(loop, replace(step, decision=None), LATE) == ""  # an override
    # The latency objective scores by −latency: the line says the latency planned.
    fastest = SchedulingLoop([LATE, EARLY], settings(objective="latency", min_dwell_s=0.0))
    step = apply(fastest, 0.0, measured(2.0))
    latency_ms = -step.decision.scores[step.target.name] * 1e3
    assert explain_step(fastest, step, None).startswith(
        f"planned latency {latency_ms:.0f} ms at 2 Mbit/s")
