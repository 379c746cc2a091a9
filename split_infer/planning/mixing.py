"""Two configurations time-shared frame by frame (beyond Hu & K and the thesis).

Hu & K choose one configuration per bandwidth; a fixed configuration is bound by one resource,
``T = min(T_gen, 1/e, 1/s, B/(8·D))`` (robot time ``e``, server time ``s``, bytes ``D``), and
leaves the others partly idle. On a weak robot two configurations bound by *different*
resources can share the frames: a late split (few bytes, much robot time) is robot-bound, an
early one (little robot time, many bytes) link-bound; running a share ``x`` of the frames with
the second one keeps both busy::

    e(x) = (1−x)·e_A + x·e_B      D(x), s(x) alike        ν(x) = (1−x)·ν_A + x·ν_B
    T(x) = min(T_gen, 1/e(x), 1/s(x), B/(8·D(x)))         ν_eff(x) = T(x)·ν(x) / T_gen

Each bound is ``1/g_k(x)`` with ``g_k`` linear in ``x``, so ``T(x) = 1/max_k g_k(x)`` and on
every piece where one bound binds, ``ν_eff(x)`` is a ratio of two linear functions, monotone on
that piece: the best share is at ``x = 0``, ``x = 1`` or where two bounds cross
(:func:`best_share`), found exactly by checking those few points. This is the linear program
"frames per second of each configuration, subject to the robot's, the server's and the link's
time and the camera's rate" restricted to two configurations; with four constraints its
optimum may mix more, but two capture the robot/link trade-off that a weak robot has.

The edge realises a share by a credit counter (``companion`` and ``companion_share``,
:class:`~split_infer.pipeline.edge.EdgePipeline`): every frame adds ``x`` and a frame that
brings the credit to 1 runs the companion, so the shares hold over any few frames.

A mix at a fixed share *is* a configuration: its robot, server and link times and its accuracy
are the shares' averages, and ``T(x)`` above is Hu & K's ``T`` of those averages.
:func:`blend` builds it (:class:`MixedConfiguration`), so every planner of this package (the
thresholds, ``E[ν_eff]`` over a bandwidth distribution, the edge's fallback) takes mixes as
they are; :func:`companion_mixes` gives each configuration its best companion at a bandwidth,
which the scheduler adds to its candidates.

Units: bits/s, bytes, seconds, frames/s, accuracy in [0, 1].
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from split_infer.planning.configuration import BITS_PER_BYTE, Configuration

__all__ = [
    "Mix",
    "MixedConfiguration",
    "best_mix",
    "best_share",
    "blend",
    "companion_mixes",
    "mix_rate_hz",
    "primary_of",
    "same_plan",
]


@dataclass(frozen=True, kw_only=True)
class MixedConfiguration(Configuration):
    """``primary`` on ``1 − share`` of the frames and ``companion`` on ``share``, as one
    configuration (:func:`blend`): ``split_point`` and ``ratio`` are the primary's (what the
    edge's ``split_point`` and ``ratio`` name), the numbers the shares' averages."""

    primary: Configuration
    companion: Configuration
    share: float


def blend(primary: Configuration, companion: Configuration, share: float
          ) -> MixedConfiguration:
    """The mix of ``companion`` on ``share`` of the frames with ``primary`` on the rest, as
    one configuration named ``primary+companion``; ValueError for a share outside (0, 1)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"a companion's share is in (0, 1), got {share!r}")

    def mean(field: str) -> float:
        return (1.0 - share) * getattr(primary, field) + share * getattr(companion, field)

    return MixedConfiguration(
        name=f"{primary.name}+{companion.name}", bytes_per_frame=mean("bytes_per_frame"),
        accuracy=mean("accuracy"), edge_s=mean("edge_s"), cloud_s=mean("cloud_s"),
        kind=primary.kind, split_point=primary.split_point, split_name=primary.split_name,
        ratio=primary.ratio, codec=primary.codec, primary=primary, companion=companion,
        share=share)


@dataclass(frozen=True)
class Mix:
    """``primary`` on ``1 − share`` of the frames and ``companion`` on ``share`` (None: the
    primary alone, ``share`` 0), ``rate_hz`` frames per second in all, and the ``ν_eff`` that
    gives."""

    primary: Configuration
    companion: Configuration | None
    share: float
    rate_hz: float
    effective_accuracy: float

    @property
    def name(self) -> str:
        """The pair's name (the primary's alone without a companion); the share is not part
        of it, so a share that follows the bandwidth is no new choice."""
        return self.primary.name if self.companion is None else \
            f"{self.primary.name}+{self.companion.name}"


def _loads(a: Configuration, b: Configuration, bandwidth_bps: float,
           t_gen_hz: float) -> list[tuple[float, float]]:
    """Each bound's time per frame as ``(g(0), g(1))``, linear in the share in between (a
    positive bandwidth: without one nothing that transmits runs at all)."""
    link = tuple(BITS_PER_BYTE * c.bytes_per_frame / bandwidth_bps for c in (a, b))
    return [(1.0 / t_gen_hz, 1.0 / t_gen_hz), (a.edge_s, b.edge_s), (a.cloud_s, b.cloud_s),
            link]


def mix_rate_hz(a: Configuration, b: Configuration, share: float, bandwidth_bps: float,
                t_gen_hz: float) -> float:
    """Frames per second when ``share`` of them run ``b`` and the rest ``a``: the slowest of
    the camera, the robot, the server and the link at the mixed time per frame."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share!r}")
    if not (math.isfinite(t_gen_hz) and t_gen_hz > 0):
        raise ValueError(f"t_gen_hz must be finite and > 0, got {t_gen_hz!r}")
    if not bandwidth_bps >= 0:
        raise ValueError(f"bandwidth must be >= 0 bits/s, got {bandwidth_bps!r}")
    if bandwidth_bps == 0:
        sends = (share < 1 and a.transmits) or (share > 0 and b.transmits)
        if sends:
            return 0.0
        bandwidth_bps = math.inf  # nothing crosses the link
    slowest = max((1 - share) * g0 + share * g1
                  for g0, g1 in _loads(a, b, bandwidth_bps, t_gen_hz))
    return 1.0 / slowest


def _value(a: Configuration, b: Configuration, share: float, bandwidth_bps: float,
           t_gen_hz: float) -> float:
    accuracy = (1.0 - share) * a.accuracy + share * b.accuracy
    return mix_rate_hz(a, b, share, bandwidth_bps, t_gen_hz) * accuracy / t_gen_hz


def best_share(a: Configuration, b: Configuration, bandwidth_bps: float,
               t_gen_hz: float) -> tuple[float, float]:
    """``(share, ν_eff)``: the share of frames to run with ``b`` (the rest with ``a``) that
    maximises ``ν_eff``, exactly (the candidates are 0, 1 and every crossing of two bounds;
    see the module docstring). Ties go to the smaller share."""
    candidates = {0.0, 1.0}
    loads = _loads(a, b, bandwidth_bps, t_gen_hz) if bandwidth_bps > 0 else []
    for (p0, p1), (q0, q1) in itertools.combinations(loads, 2):
        slope = (p1 - p0) - (q1 - q0)
        if slope != 0:
            share = (q0 - p0) / slope
            if 0.0 < share < 1.0:
                candidates.add(share)
    return max(((s, _value(a, b, s, bandwidth_bps, t_gen_hz)) for s in sorted(candidates)),
               key=lambda sv: (sv[1], -sv[0]))


def best_mix(configs: Sequence[Configuration], primary: Configuration, bandwidth_bps: float,
             t_gen_hz: float, min_gain: float = 0.0) -> Mix:
    """The best use of ``primary`` with at most one companion from ``configs`` (any that
    sends frames; the whole model on the robot is the edge's fallback, not a companion). A
    companion must add more than ``min_gain`` of ``ν_eff`` over the primary alone, and its share
    must leave the primary the larger part (a pair the other way round is that configuration's
    own mix)."""
    alone = _value(primary, primary, 0.0, bandwidth_bps, t_gen_hz)
    best = Mix(primary, None, 0.0, mix_rate_hz(primary, primary, 0.0, bandwidth_bps, t_gen_hz),
               alone)
    if not primary.transmits:
        return best
    for companion in configs:
        if companion is primary or companion.name == primary.name or not companion.transmits:
            continue
        share, value = best_share(primary, companion, bandwidth_bps, t_gen_hz)
        if 0.0 < share <= 0.5 and value > best.effective_accuracy and value - alone > min_gain:
            best = Mix(primary, companion, share,
                       mix_rate_hz(primary, companion, share, bandwidth_bps, t_gen_hz), value)
    return best


def companion_mixes(configs: Sequence[Configuration], bandwidth_bps: float, t_gen_hz: float,
                    min_gain: float = 0.0, keep: MixedConfiguration | None = None
                    ) -> list[MixedConfiguration]:
    """Every configuration of ``configs`` that sends frames (a split, or the image to the
    server) and gains more than ``min_gain`` of ``ν_eff`` from a companion at
    ``bandwidth_bps``, with its best one (:func:`best_mix`) at its best share, as a
    :class:`MixedConfiguration`. Only pairs that trade one resource for another are tried: a
    companion that needs less robot time and more bytes, or the reverse. ``keep`` (a running
    mix) stays among them whatever its gain, at its best share now (its own where no share
    beats either part alone), as ``configs`` plan its parts: a scheduler's hysteresis, not
    one estimate, should end it."""
    splits = [c for c in configs if c.transmits]
    out = []
    for primary in splits:
        partners = [c for c in splits if (c.edge_s < primary.edge_s)
                    != (c.bytes_per_frame < primary.bytes_per_frame)]
        mix = best_mix(partners, primary, bandwidth_bps, t_gen_hz, min_gain)
        if mix.companion is not None:
            out.append(blend(primary, mix.companion, mix.share))
    if keep is not None and all(m.name != keep.name for m in out):
        parts = [next((c for c in configs if c.name == part.name), None)
                 for part in (keep.primary, keep.companion)]
        if parts[0] is not None and parts[1] is not None:
            share, _ = best_share(parts[0], parts[1], bandwidth_bps, t_gen_hz)
            out.append(blend(parts[0], parts[1], share if 0.0 < share < 1.0 else keep.share))
    return out


def primary_of(config: Configuration | None) -> Configuration | None:
    """A mix's primary (what the edge's ``split_point`` and ``ratio`` run), else ``config``."""
    return config.primary if isinstance(config, MixedConfiguration) else config


def same_plan(a: Configuration | None, b: Configuration | None, share_step: float) -> bool:
    """Whether an edge running ``b`` already runs what ``a`` asks: the same name, and for a
    mix a share within ``share_step``."""
    if a is None or b is None or a.name != b.name:
        return a is None and b is None
    if isinstance(a, MixedConfiguration) and isinstance(b, MixedConfiguration):
        return abs(a.share - b.share) <= share_step
    return True
