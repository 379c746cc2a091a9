"""End-to-end latency against bandwidth (Ulhaq's thesis §4.2, eqs. 4.1–4.6, Fig. 4.4).

Every configuration's latency is a line in ``1/B``::

    I_t(B) = b + 8·D / B,  b = I_c + E_c + E_s + I_s + RTT  (split 4.2, server-only 4.3)
    I_t(B) = b = I_c                                        (client-only 4.4: no RTT, no D)

so the best configuration as a function of bandwidth is the lower envelope of those lines. The
envelope is computed exactly (no sampling): the crossover of two configurations is
``B* = 8·(D_j − D_i) / (b_i − b_j)``.

Units: bandwidth in bits/s, ``D`` in bytes, times in seconds (see :mod:`.configuration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from split_infer.planning._plotting import new_figure, save_figure
from split_infer.planning.configuration import BITS_PER_BYTE, Configuration, Region, preference_key

__all__ = [
    "crossover_bandwidth_bps",
    "crossover_bandwidths_bps",
    "latency_intercept_s",
    "latency_regions",
    "plot_latency_vs_bandwidth",
    "total_latency_s",
]


def latency_intercept_s(config: Configuration, rtt_s: float = 0.0) -> float:
    """The bandwidth-independent part ``b^(l)`` of eqs. 4.2–4.4 (RTT only if frames cross)."""
    return config.edge_s + config.cloud_s + (rtt_s if config.transmits else 0.0)


def total_latency_s(
    config: Configuration, bandwidth_bps: float | np.ndarray, rtt_s: float = 0.0
) -> float | np.ndarray:
    """Total inference time ``I_t = I_c + E_c + D/B + RTT + E_s + I_s`` (thesis eq. 4.1).

    ``ε`` (other latencies) is taken as 0, as the thesis does. Accepts a scalar or an array of
    bandwidths; a transmitting configuration at ``B = 0`` takes ``inf``.
    """
    b = np.asarray(bandwidth_bps, dtype=float)
    if np.any(b < 0) or np.any(np.isnan(b)):
        raise ValueError("bandwidth must be >= 0 bits/s")
    intercept = latency_intercept_s(config, rtt_s)
    if config.transmits:
        with np.errstate(divide="ignore"):
            out = intercept + BITS_PER_BYTE * config.bytes_per_frame / b
    else:
        out = np.full_like(b, intercept)
    return float(out) if out.ndim == 0 else out


def crossover_bandwidth_bps(
    a: Configuration, b: Configuration, rtt_s: float = 0.0
) -> float | None:
    """Bandwidth where the latency lines of ``a`` and ``b`` cross, or None if they never do.

    From ``b_a + 8·D_a/B = b_b + 8·D_b/B``. Parallel lines (equal ``D``) and crossings at
    ``B <= 0`` give None.
    """
    slope_a = BITS_PER_BYTE * a.bytes_per_frame
    slope_b = BITS_PER_BYTE * b.bytes_per_frame
    d_intercept = latency_intercept_s(b, rtt_s) - latency_intercept_s(a, rtt_s)
    d_slope = slope_a - slope_b
    if d_slope == 0 or d_intercept == 0:
        return None
    crossing = d_slope / d_intercept
    return crossing if crossing > 0 else None


def latency_regions(configs: Sequence[Configuration], rtt_s: float = 0.0) -> tuple[Region, ...]:
    """Best configuration per bandwidth region: the exact lower envelope of eqs. 4.2–4.4.

    Returns regions ordered by bandwidth, covering ``[0, inf)``; consecutive regions meet at the
    crossover bandwidths. A configuration that is never fastest (dominated, possibly by two
    non-adjacent ones) gets no region. With the thesis's conditions 4.5–4.6 and a split line below
    the client/server crossing, the order is client-only, split, server-only (Fig. 4.4).
    """
    if not configs:
        raise ValueError("need at least one configuration")
    lines = [
        (BITS_PER_BYTE * c.bytes_per_frame, latency_intercept_s(c, rtt_s), preference_key(c, i), c)
        for i, c in enumerate(configs)
    ]
    # As B -> 0 the smallest slope 8·D wins; among equal slopes the smallest intercept.
    slope, intercept, _, current = min(lines, key=lambda line: (line[0], line[1], line[2]))
    regions: list[Region] = []
    low = 0.0
    while True:
        # Lines that get below the current one at a larger bandwidth: steeper in 8·D, lower in b.
        # The next region belongs to the one crossing first; at a common crossing, the steepest
        # line is lowest just beyond it.
        candidates = [
            ((s - slope) / (intercept - c0), -s, key, (s, c0, config))
            for s, c0, key, config in lines
            if s > slope and c0 < intercept
        ]
        if not candidates:
            regions.append(Region(current, low, math.inf))
            return tuple(regions)
        at, _, _, (slope, intercept, next_config) = min(candidates, key=lambda t: t[:3])
        if at > low:  # rounding at a three-way crossing could otherwise leave an empty region
            regions.append(Region(current, low, at))
            low = at
        current = next_config


def crossover_bandwidths_bps(
    configs: Sequence[Configuration], rtt_s: float = 0.0
) -> tuple[float, ...]:
    """The bandwidths where the fastest configuration changes (region boundaries), ascending."""
    return tuple(r.low_bps for r in latency_regions(configs, rtt_s)[1:])


def plot_latency_vs_bandwidth(
    configs: Sequence[Configuration],
    path: str | Path,
    b_range: tuple[float, float] = (1e4, 1e9),
    rtt_s: float = 0.0,
    *,
    points: int = 400,
    title: str | None = None,
) -> Path:
    """Latency against bandwidth on a log axis, like the thesis's Fig. 4.4.

    One line per configuration, the envelope in bold, each bandwidth region shaded in the colour
    of its winner, and the crossovers marked. ``b_range`` is in bits/s; the y axis is in ms.
    """
    lo, hi = b_range
    if not 0 < lo < hi:
        raise ValueError("b_range must satisfy 0 < low < high (bits/s)")
    bandwidth = np.geomspace(lo, hi, points)
    fig, axes = new_figure()
    ax = axes[0, 0]
    colours = {c.name: f"C{i % 10}" for i, c in enumerate(configs)}
    curves = np.array([total_latency_s(c, bandwidth, rtt_s) for c in configs]) * 1e3
    for config, curve in zip(configs, curves):
        ax.plot(bandwidth / 1e6, curve, color=colours[config.name], lw=1.2, label=config.name)
    ax.plot(bandwidth / 1e6, curves.min(axis=0), color="k", lw=2.5, alpha=0.35, label="best")
    for region in latency_regions(configs, rtt_s):
        left, right = max(region.low_bps, lo), min(region.high_bps, hi)
        if left < right:
            ax.axvspan(
                left / 1e6, right / 1e6, color=colours[region.configuration.name], alpha=0.12, lw=0
            )
    for crossing in crossover_bandwidths_bps(configs, rtt_s):
        if lo <= crossing <= hi:
            ax.axvline(crossing / 1e6, color="k", ls="--", lw=0.8)
            ax.annotate(
                f" {crossing / 1e6:.3g} Mbit/s",
                (crossing / 1e6, 0.98),
                xycoords=("data", "axes fraction"),
                ha="left",
                va="top",
                fontsize=8,
            )
    finite = curves[np.isfinite(curves)]
    top = 2.0 * max(latency_intercept_s(c, rtt_s) for c in configs) * 1e3
    ax.set_ylim(0, min(float(finite.max()), top) if finite.size else 1.0)
    ax.set_xscale("log")
    ax.set_xlabel("bandwidth B (Mbit/s)")
    ax.set_ylabel("total latency I_t (ms)")
    ax.set_title(title or f"Latency vs bandwidth (RTT {rtt_s * 1e3:.3g} ms)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
