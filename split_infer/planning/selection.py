"""Split selection for latency or mobile energy (BottleNet Algorithm 1; BBNet Algorithm 1, eq. 5).

The *selection phase* of BottleNet's Algorithm 1 (lines 40–46) picks, among the trained
partitions ``j``::

    min latency:  argmin_j  TM_j + TU_j + TC_j
    min energy:   argmin_j  TM_j · PM_j + TU_j · PU

with ``TM = edge_s``, ``TC = cloud_s``, ``TU = 8·D/B``. BBNet's eq. (5) is the same latency
argmin written as a one-hot integer program. Both papers first discard models whose accuracy loss
against the target accuracy exceeds a threshold (BottleNet 2 %, BBNet 2.5 %), and BottleNet then
keeps, per split point, the acceptable model with the fewest bytes (Algorithm 1, lines 28–30).

The uplink power ``PU = α_u·t_u + β`` comes from Huang et al. (MobiSys '12) with the parameters of
BottleNet's Table 3 (:data:`UPLINK_POWER_MODELS`).

Units: bits/s, bytes, seconds, joules, watts; accuracy as a fraction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from split_infer.planning.configuration import BITS_PER_BYTE, Configuration, preference_key
from split_infer.planning.latency import total_latency_s

__all__ = [
    "UPLINK_POWER_MODELS",
    "Selection",
    "UplinkPowerModel",
    "acceptable_configurations",
    "mobile_energy_j",
    "select_split",
    "smallest_per_split",
]


@dataclass(frozen=True)
class UplinkPowerModel:
    """Uplink radio power ``P_u = α_u·t_u + β`` (BottleNet §3.1, after Huang et al. [19]).

    Stored in the paper's units (Mbit/s, mW/(Mbit/s), mW); :meth:`power_w` converts.
    ``throughput_mbps`` is the network's average upload rate the paper used, the default
    bandwidth for this network.
    """

    name: str
    throughput_mbps: float
    alpha_mw_per_mbps: float
    beta_mw: float

    @property
    def bandwidth_bps(self) -> float:
        return self.throughput_mbps * 1e6

    def power_w(self, throughput_bps: float | None = None) -> float:
        """Uplink power in watts while sending at ``throughput_bps`` (default: the paper's t_u)."""
        t_u = self.throughput_mbps if throughput_bps is None else throughput_bps / 1e6
        return (self.alpha_mw_per_mbps * t_u + self.beta_mw) / 1e3


#: BottleNet Table 3 ("Wireless networks parameters"): t_u (Mbps), α_u (mW/Mbps), β (mW).
UPLINK_POWER_MODELS: dict[str, UplinkPowerModel] = {
    "3g": UplinkPowerModel("3g", 1.1, 868.98, 817.88),
    "4g": UplinkPowerModel("4g", 5.85, 438.39, 1288.04),
    "wifi": UplinkPowerModel("wifi", 18.88, 283.17, 132.86),
}


def mobile_energy_j(
    config: Configuration, bandwidth_bps: float, uplink: UplinkPowerModel, edge_power_w: float
) -> float:
    """Mobile energy per frame, ``TM·PM + TU·PU`` (BottleNet Algorithm 1, line 45).

    ``PU`` is evaluated at the actual uplink throughput ``t_u = bandwidth_bps``, as the power model
    prescribes; the cloud's time costs the mobile nothing (BottleNet counts mobile energy only).
    """
    if bandwidth_bps <= 0:
        return math.inf if config.transmits else config.edge_s * edge_power_w
    upload_s = BITS_PER_BYTE * config.bytes_per_frame / bandwidth_bps
    return config.edge_s * edge_power_w + upload_s * uplink.power_w(bandwidth_bps)


def acceptable_configurations(
    configs: Sequence[Configuration],
    max_accuracy_loss: float,
    reference_accuracy: float | None = None,
) -> tuple[Configuration, ...]:
    """Configurations whose accuracy loss ``reference − ν`` is at most ``max_accuracy_loss``.

    The accuracy constraint of BottleNet (2 %) and BBNet (2.5 %, "accuracy loss threshold"); the
    loss is absolute (fractions: 0.025 means 2.5 points). ``reference_accuracy`` is the target
    accuracy of the unmodified model; by default the best accuracy among ``configs``.
    """
    if not configs:
        return ()
    reference = (
        max(c.accuracy for c in configs) if reference_accuracy is None else reference_accuracy
    )
    # A small tolerance so that e.g. 0.9427 − 0.9188 <= 0.025 is not lost to rounding.
    return tuple(c for c in configs if reference - c.accuracy <= max_accuracy_loss + 1e-12)


def smallest_per_split(configs: Sequence[Configuration]) -> tuple[Configuration, ...]:
    """Per split point, the configuration with the fewest bytes (BottleNet Alg. 1, lines 28–30).

    Configurations without a split point (client-only, server-only) are kept as they are.
    Apply it to :func:`acceptable_configurations` to get the paper's candidate set ``{D_j}``.
    """
    best: dict[int, Configuration] = {}
    others: list[Configuration] = []
    for config in configs:
        if config.kind != "split" or config.split_point is None:
            others.append(config)
        elif (
            config.split_point not in best
            or config.bytes_per_frame < best[config.split_point].bytes_per_frame
        ):
            best[config.split_point] = config
    return (*(best[k] for k in sorted(best)), *others)


@dataclass(frozen=True)
class Selection:
    """The chosen configuration, its cost (s or J) and every candidate's cost, by name."""

    configuration: Configuration
    cost: float
    costs: Mapping[str, float]
    objective: str


def select_split(
    configs: Sequence[Configuration],
    bandwidth_bps: float,
    objective: Literal["latency", "energy"] = "latency",
    *,
    rtt_s: float = 0.0,
    uplink: UplinkPowerModel | str | None = None,
    edge_power_w: float | None = None,
    max_accuracy_loss: float | None = None,
    reference_accuracy: float | None = None,
) -> Selection:
    """BottleNet/BBNet selection phase: the argmin over configurations of latency or energy.

    * ``"latency"``: ``TM + TU + TC`` (+ ``rtt_s``, 0 by default as in the papers; with it, this
      is exactly the thesis's eq. 4.1 via :func:`.latency.total_latency_s`).
    * ``"energy"``: ``TM·PM + TU·PU`` with ``uplink`` a :class:`UplinkPowerModel` or a key of
      :data:`UPLINK_POWER_MODELS` and ``edge_power_w`` the mobile's compute power ``PM``.

    With ``max_accuracy_loss`` set, only :func:`acceptable_configurations` compete (BBNet's
    accuracy-constrained variant). The search runs over all acceptable configurations rather than
    only the smallest per split (a superset of BottleNet's candidates, so never worse).
    Ties go to higher accuracy, then fewer bytes, then list order.
    """
    candidates = (
        tuple(configs)
        if max_accuracy_loss is None
        else acceptable_configurations(configs, max_accuracy_loss, reference_accuracy)
    )
    if not candidates:
        raise ValueError("no configuration satisfies the accuracy constraint")
    if bandwidth_bps < 0 or math.isnan(bandwidth_bps):
        raise ValueError("bandwidth must be >= 0 bits/s")
    if objective == "latency":
        costs = [float(total_latency_s(c, bandwidth_bps, rtt_s)) for c in candidates]
    elif objective == "energy":
        if uplink is None or edge_power_w is None:
            raise ValueError("the energy objective needs uplink and edge_power_w")
        model = UPLINK_POWER_MODELS[uplink.lower()] if isinstance(uplink, str) else uplink
        costs = [mobile_energy_j(c, bandwidth_bps, model, edge_power_w) for c in candidates]
    else:
        raise ValueError(f"objective must be 'latency' or 'energy', got {objective!r}")
    best = min(range(len(candidates)), key=lambda i: (costs[i], *preference_key(candidates[i], i)))
    return Selection(
        candidates[best],
        costs[best],
        {c.name: cost for c, cost in zip(candidates, costs)},
        objective,
    )
