"""Bandwidth distributions for the expected-performance analysis (Hu & K §V), in bits/s.

Hu & K model each link's bandwidth as a random variable and, citing measurements, take it as
Gaussian ``N(μ, σ)`` (σ the standard deviation, as in their eq. (7)). A Gaussian puts mass on
negative bandwidths, which their integrals from ``-∞`` would count as negative throughput; here it
is **truncated at 0 and renormalised** (:class:`GaussianBandwidth`). Beyond the paper,
:class:`EmpiricalBandwidth` uses a measured trace instead of a parametric fit.

The analysis only needs three operations, all numpy-only (no scipy):

* ``prob(lo, hi)``: ``P(lo <= B < hi)``;
* ``sf(b, inclusive)``: ``P(B > b)`` or ``P(B >= b)`` (the ``1 − P_i(·)`` factors of eqs. (4)–(5));
* ``integrate(h, lo, hi)``: ``∫_[lo, hi) h(b) dP(b)`` — Gauss–Legendre for the Gaussian, an exact
  sum for the trace.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

__all__ = [
    "BandwidthDistribution",
    "EmpiricalBandwidth",
    "GaussianBandwidth",
    "bandwidth_distribution",
    "normal_cdf",
    "normal_pdf",
    "normal_sf",
]

_SQRT2 = math.sqrt(2.0)
_erfc = np.frompyfunc(math.erfc, 1, 1)

# Gaussian mass beyond 12σ is < 1e-32: nothing there can move an expectation of a bounded
# (or linearly growing) integrand.
_TAIL_SIGMAS = 12
_GL_NODES = 16


def normal_pdf(x: np.ndarray | float) -> np.ndarray:
    """Standard normal density ``φ``."""
    x = np.asarray(x, dtype=float)
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def normal_cdf(x: np.ndarray | float) -> np.ndarray:
    """Standard normal CDF ``Φ`` via ``erfc`` (accurate in both tails)."""
    x = np.asarray(x, dtype=float)
    return 0.5 * np.asarray(_erfc(-x / _SQRT2), dtype=float)


def normal_sf(x: np.ndarray | float) -> np.ndarray:
    """``1 − Φ(x)``, computed without cancellation."""
    x = np.asarray(x, dtype=float)
    return 0.5 * np.asarray(_erfc(x / _SQRT2), dtype=float)


@cache
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(_GL_NODES)


class BandwidthDistribution(ABC):
    """A distribution of link bandwidth in bits/s, supported on ``[0, inf)``."""

    @property
    @abstractmethod
    def expected_bps(self) -> float:
        """``E[B]``."""

    @abstractmethod
    def prob(self, lo: float, hi: float) -> float:
        """``P(lo <= B < hi)``."""

    @abstractmethod
    def sf(self, b: np.ndarray | float, *, inclusive: bool = False) -> np.ndarray:
        """``P(B > b)``, or ``P(B >= b)`` with ``inclusive``."""

    @abstractmethod
    def integrate(
        self,
        h: Callable[[np.ndarray], np.ndarray],
        lo: float,
        hi: float,
        breakpoints: Sequence[float] = (),
    ) -> float:
        """``∫_[lo, hi) h(b) dP(b)``; ``h`` is vectorised, ``breakpoints`` are its kinks/jumps."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent draws."""

    @abstractmethod
    def quantile(self, p: np.ndarray | float) -> np.ndarray:
        """The ``p``-quantile, the smallest ``b`` with ``P(B <= b) > p``; ``p`` in ``[0, 1)``."""

    def stratified_sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws, one from each of ``size`` equal-probability strata, in random order.

        Stratified Monte-Carlo: unbiased like :meth:`sample`, with far less sampling noise in the
        bandwidth, so a short simulation can resolve small differences.
        """
        p = (np.arange(size) + rng.random(size)) / size
        return rng.permutation(self.quantile(p))

    def discontinuities(self) -> np.ndarray:
        """Bandwidths where the CDF jumps (atoms); none for a continuous distribution."""
        return np.empty(0)


@dataclass(frozen=True)
class GaussianBandwidth(BandwidthDistribution):
    """``N(mean_bps, std_bps)`` truncated to ``[0, inf)`` and renormalised (``std_bps > 0``).

    For a constant bandwidth (the paper's Dirac case) use :func:`bandwidth_distribution` with
    ``std_bps=0``, which returns a one-point :class:`EmpiricalBandwidth`.
    """

    mean_bps: float
    std_bps: float
    _mass: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean_bps) and math.isfinite(self.std_bps) and self.std_bps > 0):
            raise ValueError("GaussianBandwidth needs a finite mean and a std > 0")
        mass = float(normal_sf(-self.mean_bps / self.std_bps))  # P(X >= 0) before truncation
        if mass < 1e-12:
            raise ValueError("almost all of this Gaussian's mass is below 0 bits/s")
        object.__setattr__(self, "_mass", mass)

    @property
    def expected_bps(self) -> float:
        """``E[B]`` after truncation, ``μ + σ·φ(α)/(1 − Φ(α))`` with ``α = −μ/σ`` (>= μ)."""
        alpha = -self.mean_bps / self.std_bps
        return self.mean_bps + self.std_bps * float(normal_pdf(alpha)) / self._mass

    def pdf(self, b: np.ndarray | float) -> np.ndarray:
        b = np.asarray(b, dtype=float)
        z = (b - self.mean_bps) / self.std_bps
        return np.where(b >= 0, normal_pdf(z) / (self.std_bps * self._mass), 0.0)

    def cdf(self, b: np.ndarray | float) -> np.ndarray:
        """``P(B <= b)``."""
        return 1.0 - self.sf(b)

    def sf(self, b: np.ndarray | float, *, inclusive: bool = False) -> np.ndarray:
        b = np.asarray(b, dtype=float)
        z = (np.maximum(b, 0.0) - self.mean_bps) / self.std_bps
        return np.minimum(normal_sf(z) / self._mass, 1.0)

    def prob(self, lo: float, hi: float) -> float:
        if not hi > lo:
            return 0.0
        return float(max(self.sf(lo) - self.sf(hi), 0.0))

    def integrate(
        self,
        h: Callable[[np.ndarray], np.ndarray],
        lo: float,
        hi: float,
        breakpoints: Sequence[float] = (),
    ) -> float:
        mu, sigma = self.mean_bps, self.std_bps
        lo = max(lo, 0.0, mu - _TAIL_SIGMAS * sigma)
        hi = min(hi, mu + _TAIL_SIGMAS * sigma)
        if not hi > lo:
            return 0.0
        # Panels one σ wide resolve the bell; the caller's breakpoints keep kinks of h at panel
        # edges, where Gauss–Legendre stays exact-to-rounding.
        grid = mu + sigma * np.arange(-_TAIL_SIGMAS, _TAIL_SIGMAS + 1)
        edges = np.unique(np.concatenate([[lo, hi], grid, np.asarray(breakpoints, float)]))
        edges = edges[(edges >= lo) & (edges <= hi)]
        nodes, weights = _gauss_legendre()
        left, right = edges[:-1, None], edges[1:, None]
        half = 0.5 * (right - left)
        x = (left + right) * 0.5 + half * nodes[None, :]
        values = np.asarray(h(x.ravel()), dtype=float).reshape(x.shape) * self.pdf(x)
        return float(np.sum(values * weights[None, :] * half))

    def quantile(self, p: np.ndarray | float) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if np.any((p < 0) | (p >= 1)):
            raise ValueError("quantile needs p in [0, 1)")
        # Bisection on the survival function: monotone, and no inverse erf without scipy.
        lo = np.zeros_like(p)
        hi = np.full_like(p, self.mean_bps + 40 * self.std_bps)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            below = 1.0 - self.sf(mid) < p
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return hi

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty(0)
        while out.size < size:
            # Rejection from the untruncated normal; acceptance rate is the kept mass.
            draw = rng.normal(
                self.mean_bps, self.std_bps, int((size - out.size) / self._mass * 1.1) + 16
            )
            out = np.concatenate([out, draw[draw >= 0]])
        return out[:size]


class EmpiricalBandwidth(BandwidthDistribution):
    """The empirical distribution of a measured bandwidth trace (bits/s), each sample weight 1/N.

    Beyond the paper, which fits a Gaussian: expectations under it are exact sums over the trace,
    so a planner can use the estimator's history directly.
    """

    def __init__(self, samples_bps: Sequence[float] | np.ndarray) -> None:
        samples = np.sort(np.asarray(samples_bps, dtype=float).ravel())
        if samples.size == 0 or np.any(samples < 0) or not np.all(np.isfinite(samples)):
            raise ValueError("an empirical bandwidth needs >= 1 finite sample >= 0 bits/s")
        self.samples_bps = samples
        self.samples_bps.setflags(write=False)

    def __repr__(self) -> str:
        return f"EmpiricalBandwidth(n={self.samples_bps.size}, mean={self.expected_bps:.4g} bps)"

    @property
    def expected_bps(self) -> float:
        return float(self.samples_bps.mean())

    def sf(self, b: np.ndarray | float, *, inclusive: bool = False) -> np.ndarray:
        side = "left" if inclusive else "right"
        below = np.searchsorted(self.samples_bps, np.asarray(b, dtype=float), side=side)
        return 1.0 - below / self.samples_bps.size

    def prob(self, lo: float, hi: float) -> float:
        if not hi > lo:
            return 0.0
        return float(self.sf(lo, inclusive=True) - self.sf(hi, inclusive=True))

    def integrate(
        self,
        h: Callable[[np.ndarray], np.ndarray],
        lo: float,
        hi: float,
        breakpoints: Sequence[float] = (),
    ) -> float:
        s = self.samples_bps
        inside = s[(s >= lo) & (s < hi)]
        if inside.size == 0:
            return 0.0
        return float(np.sum(np.asarray(h(inside), dtype=float)) / s.size)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.choice(self.samples_bps, size=size, replace=True)

    def quantile(self, p: np.ndarray | float) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if np.any((p < 0) | (p >= 1)):
            raise ValueError("quantile needs p in [0, 1)")
        index = np.floor(p * self.samples_bps.size).astype(int)
        return self.samples_bps[index]

    def discontinuities(self) -> np.ndarray:
        return np.unique(self.samples_bps)


def bandwidth_distribution(mean_bps: float, std_bps: float) -> BandwidthDistribution:
    """A truncated Gaussian, or a constant bandwidth (point mass) when ``std_bps == 0``."""
    if std_bps == 0:
        return EmpiricalBandwidth([mean_bps])
    return GaussianBandwidth(mean_bps, std_bps)
