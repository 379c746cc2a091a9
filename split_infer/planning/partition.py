"""Load-balanced partition of a layer chain over an n-device pipeline (Hu & Krishnamachari §IV-A).

Device ``i`` (1-based) runs layers ``s_{i-1}+1 .. s_i`` with ``s_0 = 0`` and ``s_n = m``. Its stage
throughput is ``C_i / Σ ops(j)`` frames/s, and the pipeline runs at the slowest stage. Eq. (2)::

    split(p, q) = max_{m-p < s < m} min{ C_{n-q+1} / Σ_{k=m-p+1..s} ops(k),  split(m-s, q-1) }
    split(i, 1) = C_n / Σ_{k=m-i+1..m} ops(k)

solved for ``split(m, n)`` by filling an ``m × n`` table, ``O(m²·n)``.

Units: ``layer_ops`` in operations (FLOPs, MACs, or measured seconds on a reference device — any
unit, as long as ``device_speeds`` is the same unit per second); throughputs in frames/s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from split_infer.planning.configuration import BITS_PER_BYTE

__all__ = [
    "Partition",
    "brute_force_partition",
    "evaluate_partition",
    "partition_layers",
    "throughput_upper_bound_hz",
]


@dataclass(frozen=True)
class Partition:
    """Split points ``s_1..s_{n-1}`` and the resulting stage throughputs (frames/s).

    ``split_points[i-1]`` is the number of layers on devices ``1..i`` — the same meaning as
    ``models.SplitPoint.index`` for a two-device split. ``link_hz`` is empty unless the
    communication stages were modelled.
    """

    split_points: tuple[int, ...]
    throughput_hz: float
    compute_hz: tuple[float, ...]
    link_hz: tuple[float, ...] = ()


def _stage_rate(speed: float, work: float) -> float:
    return math.inf if work == 0 else speed / work


def _link_rate(bandwidth_bps: float, nbytes: float) -> float:
    return math.inf if nbytes == 0 else bandwidth_bps / (BITS_PER_BYTE * nbytes)


def _check(
    layer_ops: Sequence[float],
    device_speeds: Sequence[float],
    activation_bytes: Sequence[float] | None,
    link_bandwidths_bps: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    ops = np.asarray(layer_ops, dtype=float)
    speeds = np.asarray(device_speeds, dtype=float)
    if ops.ndim != 1 or ops.size == 0 or np.any(ops < 0) or not np.all(np.isfinite(ops)):
        raise ValueError("layer_ops must be a non-empty sequence of finite values >= 0")
    if speeds.ndim != 1 or speeds.size == 0 or np.any(speeds <= 0):
        raise ValueError("device_speeds must be a non-empty sequence of values > 0")
    if (activation_bytes is None) != (link_bandwidths_bps is None):
        raise ValueError("give both activation_bytes and link_bandwidths_bps, or neither")
    if activation_bytes is None:
        return ops, speeds, None, None
    act = np.asarray(activation_bytes, dtype=float)
    links = np.asarray(link_bandwidths_bps, dtype=float)
    if act.shape != (ops.size + 1,) or np.any(act < 0):
        raise ValueError("activation_bytes needs m+1 values >= 0: input, then each layer's output")
    if links.shape != (speeds.size - 1,) or np.any(links <= 0):
        raise ValueError("link_bandwidths_bps needs n-1 values > 0")
    return ops, speeds, act, links


def throughput_upper_bound_hz(layer_ops: Sequence[float], device_speeds: Sequence[float]) -> float:
    """The right-hand bound of Hu & K eq. (1): ``Σ C_i / Σ ops(j)``, reached by perfect balance."""
    ops, speeds, _, _ = _check(layer_ops, device_speeds, None, None)
    return _stage_rate(float(speeds.sum()), float(ops.sum()))


def evaluate_partition(
    layer_ops: Sequence[float],
    device_speeds: Sequence[float],
    split_points: Sequence[int],
    *,
    activation_bytes: Sequence[float] | None = None,
    link_bandwidths_bps: Sequence[float] | None = None,
    allow_idle_devices: bool = False,
) -> Partition:
    """Stage throughputs of a given partition (Hu & K eq. (1), first inequality).

    With ``activation_bytes`` (m+1 values: the input, then each layer's output) and
    ``link_bandwidths_bps`` (n-1 values), the communication stages ``B_i / (8·data(s_i))`` join the
    minimum too. Raises ValueError for an invalid partition.
    """
    ops, speeds, act, links = _check(
        layer_ops, device_speeds, activation_bytes, link_bandwidths_bps
    )
    m, n = ops.size, speeds.size
    bounds = [0, *split_points, m]
    if len(split_points) != n - 1:
        raise ValueError(f"need {n - 1} split points for {n} devices")
    steps = np.diff(bounds)
    if np.any(steps < 0) or (not allow_idle_devices and np.any(steps == 0)):
        raise ValueError(
            f"split points {tuple(split_points)} are not a valid partition of "
            f"{m} layers over {n} devices"
        )
    prefix = np.concatenate([[0.0], np.cumsum(ops)])
    compute = tuple(
        _stage_rate(speeds[i], prefix[bounds[i + 1]] - prefix[bounds[i]]) for i in range(n)
    )
    link: tuple[float, ...] = ()
    if act is not None and links is not None:
        link = tuple(_link_rate(links[i], act[bounds[i + 1]]) for i in range(n - 1))
    return Partition(tuple(int(s) for s in split_points), min(compute + link), compute, link)


def partition_layers(
    layer_ops: Sequence[float],
    device_speeds: Sequence[float],
    *,
    activation_bytes: Sequence[float] | None = None,
    link_bandwidths_bps: Sequence[float] | None = None,
    allow_idle_devices: bool = False,
) -> Partition:
    """Optimal split points by the dynamic program of Hu & K eq. (2), ``O(m²·n)``.

    Maximises the bottleneck stage throughput ``T_p``. As in the paper, every device gets at
    least one layer (so ``m >= n``) and the communication stages are assumed not to be the
    bottleneck.

    Beyond the paper (both off by default):

    * ``activation_bytes`` + ``link_bandwidths_bps``: the link after device ``n-q+1`` adds the
      term ``B / (8·data(s))`` to the ``min`` of eq. (2), so the DP also balances against the
      communication stages of a known, fixed bandwidth. Same complexity.
    * ``allow_idle_devices``: a device may get no layers (it just forwards), i.e. the paper's range
      ``m-p < s`` becomes ``m-p <= s``; a two-device chain then includes client- and server-only.

    Ties are broken towards the earliest split point.
    """
    ops, speeds, act, links = _check(
        layer_ops, device_speeds, activation_bytes, link_bandwidths_bps
    )
    m, n = ops.size, speeds.size
    if not allow_idle_devices and m < n:
        raise ValueError(f"{m} layers cannot give each of {n} devices at least one layer")
    prefix = np.concatenate([[0.0], np.cumsum(ops)])
    # table[q][p] = split(p, q): best throughput of the last p layers on the last q devices.
    table = np.full((n + 1, m + 1), -math.inf)
    choice = np.zeros((n + 1, m + 1), dtype=int)
    for p in range(0 if allow_idle_devices else 1, m + 1):
        table[1][p] = _stage_rate(speeds[n - 1], prefix[m] - prefix[m - p])
    for q in range(2, n + 1):
        device = n - q  # 0-based index of device n-q+1
        for p in range(m + 1):
            first = m - p  # layers m-p+1 .. s go to this device
            best, best_s = -math.inf, -1
            lowest = first if allow_idle_devices else first + 1
            highest = m if allow_idle_devices else m - 1
            for s in range(lowest, highest + 1):
                rest = table[q - 1][m - s]
                if rest == -math.inf:
                    continue
                value = min(_stage_rate(speeds[device], prefix[s] - prefix[first]), rest)
                if act is not None and links is not None:
                    value = min(value, _link_rate(links[device], act[s]))
                if value > best:
                    best, best_s = value, s
            table[q][p], choice[q][p] = best, best_s
    if table[n][m] == -math.inf:
        raise ValueError("no valid partition")
    splits = []
    p = m
    for q in range(n, 1, -1):
        s = int(choice[q][p])
        splits.append(s)
        p = m - s
    stages = evaluate_partition(
        ops,
        speeds,
        splits,
        activation_bytes=act,
        link_bandwidths_bps=links,
        allow_idle_devices=allow_idle_devices,
    )
    return Partition(tuple(splits), float(table[n][m]), stages.compute_hz, stages.link_hz)


def brute_force_partition(
    layer_ops: Sequence[float],
    device_speeds: Sequence[float],
    *,
    activation_bytes: Sequence[float] | None = None,
    link_bandwidths_bps: Sequence[float] | None = None,
    allow_idle_devices: bool = False,
) -> Partition:
    """Exhaustive search over every partition; a reference for testing :func:`partition_layers`."""
    m, n = len(layer_ops), len(device_speeds)
    if allow_idle_devices:
        candidates = itertools.combinations_with_replacement(range(m + 1), n - 1)
    else:
        candidates = itertools.combinations(range(1, m), n - 1)
    best: Partition | None = None
    for splits in candidates:
        result = evaluate_partition(
            layer_ops,
            device_speeds,
            splits,
            activation_bytes=activation_bytes,
            link_bandwidths_bps=link_bandwidths_bps,
            allow_idle_devices=allow_idle_devices,
        )
        if best is None or result.throughput_hz > best.throughput_hz:
            best = result
    if best is None:
        raise ValueError(f"{m} layers cannot give each of {n} devices at least one layer")
    return best
