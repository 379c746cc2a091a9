"""Throughput, effective accuracy, bandwidth thresholds and their expectations (Hu & K §III–V).

Effective accuracy is the fraction of *generated* frames that are classified correctly — a dropped
frame counts as wrong (§III)::

    ν_eff = T · ν / T_gen,     T = min(T_gen, T_p, B / (8·D))

with ``T_p`` the computation bound (:attr:`.Configuration.compute_bound_hz`, or the DP result of
:mod:`.partition` for longer pipelines) and ``B/(8·D)`` the communication stage in frames/s.
As a function of bandwidth each configuration's ``ν_eff`` is ``min(a, s·b)``: it rises with slope
``s = ν / (8·D·T_gen)`` until the link stops being the bottleneck, then stays at
``a = ν·min(T_gen, T_p)/T_gen``.

**The robot's spare time** (beyond Hu & K, whose frames that the link cannot carry are lost):
a robot that also holds the whole model can classify on board the frames its link cannot take
(the edge's ``fallback`` ``edge_only``). Where a split ``C`` is link- or server-bound, its
frames leave the robot idle for ``1 − T_C·e_C`` of each second (``e_C`` its robot time per
frame), and the whole model ``F`` fills that time::

    T_F = max(0, min(T_gen − T_C, (1 − T_C·e_C) / e_F)),   ν_eff = (T_C·ν_C + T_F·ν_F) / T_gen

But the robot decides between frames: when the link frees while it runs a whole-model frame,
the link waits for the rest of it, on average half of ``e_F``. So a link-bound split crosses
``T_C = 1 / (8·D/B + p·e_F/2)`` frames a second, ``p = min(1, T_F·e_F)`` the share of the
robot's time the whole model takes (``T_F`` first at Hu & K's ``T_C``), and ``T_F`` is then
taken at that ``T_C`` (:func:`fallback_rates_hz`; the ``fallback`` argument of
:func:`effective_accuracy` and :func:`expected_effective_accuracy`). On a weak robot and a slow
link that mix can beat both the split alone (link-bound) and the whole model alone
(robot-bound).

Units: bandwidth in bits/s, ``D`` in bytes, rates in frames/s, accuracy as a fraction.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from split_infer.planning._plotting import new_figure, save_figure
from split_infer.planning.bandwidth import BandwidthDistribution, bandwidth_distribution
from split_infer.planning.configuration import BITS_PER_BYTE, Configuration, Region, preference_key

__all__ = [
    "HU_TABLE_II_ACCURACY",
    "EffectiveAccuracySweep",
    "ThresholdPolicy",
    "effective_accuracy",
    "eq3_threshold_bps",
    "expected_effective_accuracy",
    "expected_pipeline_throughput_hz",
    "expected_throughput_hz",
    "fallback_rates_hz",
    "fallback_throughput_hz",
    "paper_fig3_configurations",
    "pipeline_throughput_hz",
    "plot_effective_accuracy_sweep",
    "sweep_expected_effective_accuracy",
    "threshold_policy",
]


def _check_rate(t_gen_hz: float) -> None:
    if not (math.isfinite(t_gen_hz) and t_gen_hz > 0):
        raise ValueError(f"t_gen_hz must be finite and > 0, got {t_gen_hz!r}")


def _cap_hz(config: Configuration, t_gen_hz: float) -> float:
    return min(t_gen_hz, config.compute_bound_hz)


def pipeline_throughput_hz(
    config: Configuration, bandwidth_bps: float | np.ndarray, t_gen_hz: float
) -> float | np.ndarray:
    """Frames delivered per second, ``T = min(T_gen, T_p, B/(8·D))`` (Hu & K §III, eq. (1)).

    The pipeline is only as fast as its slowest stage: the camera, the computation stages, or the
    link. Accepts a scalar or an array of bandwidths.
    """
    _check_rate(t_gen_hz)
    b = np.asarray(bandwidth_bps, dtype=float)
    if np.any(b < 0) or np.any(np.isnan(b)):
        raise ValueError("bandwidth must be >= 0 bits/s")
    cap = _cap_hz(config, t_gen_hz)
    out = (
        np.minimum(cap, b / (BITS_PER_BYTE * config.bytes_per_frame))
        if config.transmits
        else np.full_like(b, cap)
    )
    return float(out) if out.ndim == 0 else out


def fallback_throughput_hz(
    config: Configuration, fallback: Configuration, split_hz: float | np.ndarray,
    t_gen_hz: float
) -> float | np.ndarray:
    """Frames per second the robot classifies on board with ``fallback`` (the whole model, a
    ``client_only`` configuration) while ``config`` delivers ``split_hz``: the robot's time the
    split frames leave, ``1 − split_hz·e_C``, over the whole model's time per frame, and no more
    than the camera frames the split leaves (see the module docstring; beyond Hu & K)."""
    if fallback.transmits or not fallback.edge_s > 0:
        raise ValueError(f"{fallback.name}: a fallback runs the whole model on the robot "
                         "(client_only, edge_s > 0)")
    split = np.asarray(split_hz, dtype=float)
    spare = (1.0 - split * config.edge_s) / fallback.edge_s
    out = np.maximum(0.0, np.minimum(t_gen_hz - split, spare))
    return float(out) if out.ndim == 0 else out


def fallback_rates_hz(
    config: Configuration, fallback: Configuration, bandwidth_bps: float | np.ndarray,
    t_gen_hz: float
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """``(T_C, T_F)``: frames per second ``config`` delivers over the link and ``fallback`` (the
    whole model) classifies on board in the robot's spare time, with the link's wait for a
    whole-model frame the robot is running when it frees (see the module docstring). The
    edge runs a whole-model frame only where the wait pays for it
    (:class:`~split_infer.pipeline.edge.EdgePipeline`): where a split frame's link time is far
    under the whole model's, it runs fewer than this plans, and the plan is optimistic there;
    a server-bound split is planned without the wait."""
    plain = pipeline_throughput_hz(config, bandwidth_bps, t_gen_hz)
    if not config.transmits:
        return plain, 0.0 if np.ndim(plain) == 0 else np.zeros_like(plain)
    busy = np.minimum(1.0, fallback_throughput_hz(config, fallback, plain, t_gen_hz)
                      * fallback.edge_s)
    b = np.asarray(bandwidth_bps, dtype=float)
    link_s = np.divide(BITS_PER_BYTE * config.bytes_per_frame, b,
                       out=np.full_like(b, np.inf), where=b > 0)
    split = np.minimum(plain, 1.0 / (link_s + busy * fallback.edge_s / 2.0))
    rest = fallback_throughput_hz(config, fallback, split, t_gen_hz)
    return (float(split), float(rest)) if np.ndim(split) == 0 else (split, rest)


def effective_accuracy(
    config: Configuration, bandwidth_bps: float | np.ndarray, t_gen_hz: float,
    fallback: Configuration | None = None,
) -> float | np.ndarray:
    """``ν_eff = T·ν/T_gen`` at a known bandwidth (Hu & K §III, "Optimization goal").

    With ``fallback`` (the whole model on the robot), the frames ``config`` leaves to the robot's
    spare time count too (:func:`fallback_rates_hz`; beyond Hu & K)."""
    if fallback is None or not config.transmits:
        return pipeline_throughput_hz(config, bandwidth_bps, t_gen_hz) * config.accuracy / t_gen_hz
    split_hz, fallback_hz = fallback_rates_hz(config, fallback, bandwidth_bps, t_gen_hz)
    return (split_hz * config.accuracy + fallback_hz * fallback.accuracy) / t_gen_hz


def _plateau(config: Configuration, t_gen_hz: float) -> float:
    return config.accuracy * _cap_hz(config, t_gen_hz) / t_gen_hz


def _slope(config: Configuration, t_gen_hz: float) -> float:
    if not config.transmits:
        return math.inf
    return config.accuracy / (BITS_PER_BYTE * config.bytes_per_frame * t_gen_hz)


def eq3_threshold_bps(left: Configuration, right: Configuration, t_gen_hz: float) -> float | None:
    """Bandwidth where ``left`` (more compressed) and ``right`` have equal ``ν_eff``: eq. (3).

    Hu & K: ``T_p·ν_left = (γ_right·θ*/D)·ν_right``; here ``D/γ_right`` is ``right``'s real bytes,
    and ``T_p`` is generalised to ``min(T_gen, T_p)/T_gen`` so ``T_gen != T_p`` works too::

        θ* = 8·D_right · ν_left · min(T_gen, T_p,left) / ν_right

    The paper assumes ``γ_left = 2γ_right`` and ``0.5ν_right < ν_left < ν_right`` so that θ* lies
    between the two knees. The general condition is that neither curve dominates: ``left`` rises
    faster (higher ``ν/D``) and ``right`` saturates higher. Returns None when that fails — then
    the curves never cross at a positive bandwidth and one of them is never the better choice.
    """
    _check_rate(t_gen_hz)
    a_left, a_right = _plateau(left, t_gen_hz), _plateau(right, t_gen_hz)
    s_left, s_right = _slope(left, t_gen_hz), _slope(right, t_gen_hz)
    if not (s_left > s_right and a_left < a_right) or s_right == 0:
        return None
    return a_left / s_right


@dataclass(frozen=True)
class ThresholdPolicy:
    """Bandwidth thresholds Θ and the configuration for each region (Hu & K §IV-D, Alg. 2).

    ``regions`` cover ``[0, inf)`` in increasing bandwidth; ``choose(b)`` is Algorithm 2's line 4
    (``b`` exactly on a threshold picks the right-hand, more accurate side).
    """

    regions: tuple[Region, ...]
    t_gen_hz: float

    @property
    def thresholds_bps(self) -> tuple[float, ...]:
        """Θ, ascending: the bandwidths where the chosen configuration changes."""
        return tuple(r.low_bps for r in self.regions[1:])

    @property
    def configurations(self) -> tuple[Configuration, ...]:
        """The configurations that own a region, from low to high bandwidth."""
        return tuple(r.configuration for r in self.regions)

    def choose(self, bandwidth_bps: float) -> Configuration:
        """The configuration for a measured bandwidth (bits/s)."""
        if math.isnan(bandwidth_bps):
            raise ValueError("bandwidth is NaN")
        return self.regions[bisect.bisect_right(self.thresholds_bps, bandwidth_bps)].configuration

    def __call__(self, bandwidth_bps: float) -> Configuration:
        return self.choose(bandwidth_bps)

    def effective_accuracy(self, bandwidth_bps: float) -> float:
        """``ν_eff`` of the chosen configuration: the upper envelope of all the curves."""
        return float(effective_accuracy(self.choose(bandwidth_bps), bandwidth_bps, self.t_gen_hz))


def threshold_policy(configs: Sequence[Configuration], t_gen_hz: float) -> ThresholdPolicy:
    """Thresholds Θ between any number of configurations: eq. (3) generalised to K ratios.

    The paper derives one θ between two ratios whose curves are known to cross. Beyond the paper,
    this takes any set — ratios at one split, several splits, client- and server-only — and
    returns the exact upper envelope of the ``ν_eff`` curves: starting from the configuration with
    the steepest rise (most accuracy per byte), each next region belongs to the curve that first
    reaches the current one's plateau, at the eq. (3) crossing ``θ = a_current / s_next``.
    A configuration that is never best (dominated, possibly by a non-adjacent ratio) gets no
    region, so there are at most K−1 thresholds. Ties go to higher accuracy, then fewer bytes.
    """
    _check_rate(t_gen_hz)
    if not configs:
        raise ValueError("need at least one configuration")
    curves = [
        (_plateau(c, t_gen_hz), _slope(c, t_gen_hz), preference_key(c, i), c)
        for i, c in enumerate(configs)
    ]
    useful = [curve for curve in curves if curve[0] > 0] or curves
    # Near b = 0 every curve is s·b: the steepest wins (then the higher plateau).
    plateau, _, _, current = min(useful, key=lambda k: (-k[1], -k[0], k[2]))
    regions: list[Region] = []
    low = 0.0
    while True:
        # A curve with a higher plateau is necessarily less steep (otherwise it would dominate the
        # current one); it reaches the current plateau at θ = plateau / s. At a common θ, the
        # steepest is the higher one just beyond it.
        candidates = [
            (plateau / s, -s, -a, key, (a, c)) for a, s, key, c in useful if a > plateau and s > 0
        ]
        if not candidates:
            regions.append(Region(current, low, math.inf))
            return ThresholdPolicy(tuple(regions), t_gen_hz)
        at, _, _, _, (plateau, next_config) = min(candidates, key=lambda k: k[:4])
        if at > low:  # rounding could otherwise leave an empty region at a common crossing
            regions.append(Region(current, low, at))
            low = at
        current = next_config


def _throughput_in(
    distribution: BandwidthDistribution,
    config: Configuration,
    t_gen_hz: float,
    lo: float,
    hi: float,
) -> float:
    """``E[T(B) · 1{lo <= B < hi}]`` for one link: eqs. (4)–(6) with n = 2, on ``[lo, hi)``."""
    cap = _cap_hz(config, t_gen_hz)
    if not config.transmits:
        return cap * distribution.prob(lo, hi)
    bits = BITS_PER_BYTE * config.bytes_per_frame
    knee = bits * cap
    # eq. (4): the link is faster than the computation, T = T_p ...
    computation_bound = cap * distribution.prob(max(lo, knee), hi)
    # ... eq. (5): the link is the bottleneck, T = b / (8·D).
    link_bound = distribution.integrate(lambda b: b / bits, lo, min(hi, knee), (knee,))
    return computation_bound + link_bound


def _regions_of(policy: ThresholdPolicy | Configuration) -> tuple[Region, ...]:
    if isinstance(policy, Configuration):
        return (Region(policy, 0.0, math.inf),)
    return policy.regions


def expected_throughput_hz(
    policy: ThresholdPolicy | Configuration, distribution: BandwidthDistribution, t_gen_hz: float
) -> float:
    """``E[T]`` for a fixed configuration or an adaptive :class:`ThresholdPolicy` (eqs. (4)–(6)).

    For the adaptive case the bandwidth axis is "partitioned by θ" and the integral becomes
    piecewise (§V-f): each region contributes eqs. (4)–(5) of its own configuration.
    """
    _check_rate(t_gen_hz)
    return sum(
        _throughput_in(distribution, r.configuration, t_gen_hz, r.low_bps, r.high_bps)
        for r in _regions_of(policy)
    )


def expected_effective_accuracy(
    policy: ThresholdPolicy | Configuration, distribution: BandwidthDistribution, t_gen_hz: float,
    fallback: Configuration | None = None,
) -> float:
    """``E[ν_eff] = E[T·ν]/T_gen`` (§V-e), fixed γ or adaptive γ (§V-f), one link.

    The integrals are evaluated numerically (Gauss–Legendre, :mod:`.bandwidth`) rather than with
    the paper's bivariate-normal closed form; with an :class:`.EmpiricalBandwidth` they are exact
    sums over the trace (beyond the paper). ``fallback`` (one configuration only): the frames
    it leaves to the robot's spare time count too (:func:`fallback_throughput_hz`).
    """
    _check_rate(t_gen_hz)
    if fallback is not None:
        if not isinstance(policy, Configuration):
            raise ValueError("a fallback is planned for one configuration, not a policy")
        return _expected_with_fallback(policy, fallback, distribution, t_gen_hz)
    return (
        sum(
            r.configuration.accuracy
            * _throughput_in(distribution, r.configuration, t_gen_hz, r.low_bps, r.high_bps)
            for r in _regions_of(policy)
        )
        / t_gen_hz
    )


def _expected_with_fallback(config: Configuration, fallback: Configuration,
                            distribution: BandwidthDistribution, t_gen_hz: float) -> float:
    """``E[ν_eff]`` of ``config`` with the robot's spare time on ``fallback``: the integrand is
    smooth in the bandwidth but for kinks where the link stops binding and where the spare
    time stops being the fallback's limit (at Hu & K's split rate: near enough)."""
    if not config.transmits:
        return float(effective_accuracy(config, 0.0, t_gen_hz))
    bits = BITS_PER_BYTE * config.bytes_per_frame
    kinks = [bits * _cap_hz(config, t_gen_hz)]
    if fallback.edge_s != config.edge_s:  # where (1 − T·e_C)/e_F = T_gen − T
        kinks.append(bits * (fallback.edge_s * t_gen_hz - 1.0)
                     / (fallback.edge_s - config.edge_s))
    kinks = [k for k in kinks if math.isfinite(k) and k > 0]
    return distribution.integrate(
        lambda b: effective_accuracy(config, b, t_gen_hz, fallback), 0.0, math.inf, kinks)


def expected_pipeline_throughput_hz(
    links: Sequence[tuple[BandwidthDistribution, float]],
    compute_hz: float,
    t_gen_hz: float = math.inf,
) -> float:
    """``E[T]`` of an n-device pipeline with n−1 independent links, Hu & K eqs. (4)–(6).

    ``links[i] = (distribution of B_i in bits/s, D_i in bytes)``; ``compute_hz`` is ``T_p``.
    Eq. (4): ``P_1 = Π_i P(B_i >= 8·D_i·T_p)``; eq. (5): stage j is the bottleneck at throughput τ
    with density ``p_j(8·D_j·τ)·8·D_j``, weighted by ``Π_{i≠j} P(B_i/(8·D_i) > τ)``, integrated
    over ``τ ∈ [0, T_p)`` (the paper's ``-∞`` lower limit would count negative bandwidth);
    eq. (6) sums them. Eq. (7) is the case of two i.i.d. Gaussian links.

    Beyond the paper: ``T_p`` is replaced by ``min(T_p, T_gen)``; links may follow any
    :class:`.BandwidthDistribution` (ties between atoms of empirical traces are given to the
    lowest-numbered link, so the cases still partition the probability space).
    """
    cap = min(compute_hz, t_gen_hz)
    if not cap > 0:
        raise ValueError("compute_hz and t_gen_hz must be > 0")
    active = [(dist, BITS_PER_BYTE * nbytes) for dist, nbytes in links if nbytes > 0]
    if not active:
        return cap
    if math.isfinite(cap):
        p1 = math.prod(float(dist.sf(bits * cap, inclusive=True)) for dist, bits in active)
        total = p1 * cap
    else:
        total = 0.0
    for j, (dist_j, bits_j) in enumerate(active):
        # (P(B_i >= ·) for later links, P(B_i > ·) for earlier ones: the tie rule above.)
        others = [(i > j, d, b) for i, (d, b) in enumerate(active) if i != j]

        def integrand(b: np.ndarray, others: list = others, bits_j: float = bits_j) -> np.ndarray:
            tau = b / bits_j
            weight = np.ones_like(tau)
            for inclusive, dist_i, bits_i in others:
                weight = weight * dist_i.sf(bits_i * tau, inclusive=inclusive)
            return weight * tau

        kinks = [d.discontinuities() * bits_j / b for _, d, b in others]
        breakpoints = np.concatenate(kinks) if kinks else np.empty(0)
        total += dist_j.integrate(integrand, 0.0, bits_j * cap, breakpoints)
    return total


# ---------------------------------------------------------------------------------------------
# Fig. 3: expected effective accuracy against the bandwidth's mean and spread.

#: Hu & K Table II: pre-trained accuracy of MobileNet-v2 per compression ratio γ (1 = original).
HU_TABLE_II_ACCURACY: dict[str, dict[int, float]] = {
    "cifar10": {1: 0.902, 2: 0.892, 4: 0.885, 8: 0.877},
    "cifar100": {1: 0.691, 2: 0.674, 4: 0.667, 8: 0.657},
}


def paper_fig3_configurations(
    dataset: str = "cifar10", *, t_p_hz: float = 10.0, uncompressed_knee_bps: float = 9e6 / 1.7
) -> tuple[Configuration, ...]:
    """The setting of Hu & K's Fig. 3 as configurations: γ ∈ {1, 2, 4, 8} at the first split.

    Accuracies from Table II. The paper gives data sizes only through "when μ = 9 [Mbps],
    μ/D_1 ≈ 1.7·T_p", so the uncompressed link saturates at ``8·D_1·T_p ≈ 9/1.7 Mbit/s``;
    ``D_γ = D_1/γ``. Both computation stages run at ``T_p`` (the compressor overhead is
    negligible, §VI-A); use ``T_gen = T_p`` as the paper does.
    """
    accuracy = HU_TABLE_II_ACCURACY[dataset]
    d1 = uncompressed_knee_bps / (BITS_PER_BYTE * t_p_hz)
    return tuple(
        Configuration(
            name=f"gamma{g}",
            kind="split",
            split_point=4,
            ratio=float(g),
            bytes_per_frame=d1 / g,
            accuracy=nu,
            edge_s=1 / t_p_hz,
            cloud_s=1 / t_p_hz,
            codec=f"ae{g}x",
        )
        for g, nu in sorted(accuracy.items())
    )


@dataclass(frozen=True)
class EffectiveAccuracySweep:
    """``E[ν_eff]`` on a grid; every array is indexed ``[std index, mean index]``."""

    means_bps: np.ndarray
    stds_bps: np.ndarray
    fixed: Mapping[str, np.ndarray]
    adaptive: np.ndarray
    t_gen_hz: float


def sweep_expected_effective_accuracy(
    configs: Sequence[Configuration],
    means_bps: Sequence[float],
    stds_bps: Sequence[float],
    t_gen_hz: float,
) -> EffectiveAccuracySweep:
    """Data for a Fig. 3-style plot: ``E[ν_eff]`` of each fixed configuration and of the adaptive
    threshold policy over all of them, for ``B ~ N(μ, σ)`` truncated at 0 (σ = 0: constant)."""
    means = np.asarray(means_bps, dtype=float)
    stds = np.asarray(stds_bps, dtype=float)
    policy = threshold_policy(configs, t_gen_hz)
    fixed = {c.name: np.empty((stds.size, means.size)) for c in configs}
    adaptive = np.empty((stds.size, means.size))
    for i, sigma in enumerate(stds):
        for k, mu in enumerate(means):
            dist = bandwidth_distribution(float(mu), float(sigma))
            for c in configs:
                fixed[c.name][i, k] = expected_effective_accuracy(c, dist, t_gen_hz)
            adaptive[i, k] = expected_effective_accuracy(policy, dist, t_gen_hz)
    return EffectiveAccuracySweep(means, stds, fixed, adaptive, t_gen_hz)


def plot_effective_accuracy_sweep(
    sweep: EffectiveAccuracySweep,
    path: str | Path,
    *,
    sigma_panel_mean_bps: float | None = None,
    title: str | None = None,
) -> Path:
    """Plot a sweep like Hu & K's Fig. 3: one panel of ``E[ν_eff]`` against μ per σ, and a last
    panel against σ at one μ (default: the middle of the grid). Fixed configurations are thin
    lines; the adaptive policy is the thick red line."""
    means, stds = sweep.means_bps, sweep.stds_bps
    k = (
        means.size // 2
        if sigma_panel_mean_bps is None
        else int(np.argmin(np.abs(means - sigma_panel_mean_bps)))
    )
    panels = stds.size + (1 if stds.size > 1 else 0)
    fig, axes = new_figure(1, panels, size=(3.6 * panels, 4.2))
    for i, sigma in enumerate(stds):
        ax = axes[0, i]
        for j, (name, grid) in enumerate(sweep.fixed.items()):
            ax.plot(means / 1e6, 100 * grid[i], color=f"C{j % 10}", lw=1.2, marker=".", label=name)
        ax.plot(means / 1e6, 100 * sweep.adaptive[i], color="red", lw=2.5, label="adaptive")
        ax.set_xlabel("bandwidth mean μ (Mbit/s)")
        ax.set_title(f"σ = {sigma / 1e6:.3g} Mbit/s", fontsize=9)
    if stds.size > 1:
        ax = axes[0, -1]
        for j, (name, grid) in enumerate(sweep.fixed.items()):
            ax.plot(
                stds / 1e6, 100 * grid[:, k], color=f"C{j % 10}", lw=1.2, marker=".", label=name
            )
        ax.plot(stds / 1e6, 100 * sweep.adaptive[:, k], color="red", lw=2.5, label="adaptive")
        ax.set_xlabel("bandwidth std σ (Mbit/s)")
        ax.set_title(f"μ = {means[k] / 1e6:.3g} Mbit/s", fontsize=9)
    axes[0, 0].set_ylabel("expected effective accuracy E[ν_eff] (%)")
    # Outside the panels: a bundle has many configurations, and inside the legend hides curves.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7),
               fontsize=7)
    fig.suptitle(
        title or f"Expected effective accuracy, T_gen = {sweep.t_gen_hz:.3g} Hz", fontsize=10
    )
    return save_figure(fig, path)
