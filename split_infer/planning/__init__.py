"""ROS-free planning: latency model, split selection, DP partition, thresholds, E[ν_eff].

* :mod:`.latency` — thesis eqs. 4.1–4.6: latency lines, exact crossovers and regions, Fig. 4.4.
* :mod:`.selection` — BottleNet/BBNet Algorithm 1 selection phase (latency or energy).
* :mod:`.partition` — Hu & Krishnamachari eq. (2): load-balanced n-device partition.
* :mod:`.effective_accuracy` — ``ν_eff``, thresholds Θ (eq. (3), generalised), ``E[T]`` and
  ``E[ν_eff]`` (eqs. (4)–(7)), Fig. 3 sweeps.
* :mod:`.mixing` — two configurations time-shared frame by frame, the exact best share
  (beyond the papers).
* :mod:`.bandwidth` — truncated-Gaussian and empirical bandwidth distributions.
* :mod:`.simulation` — frame-level Monte-Carlo pipeline simulator.

Units everywhere: bytes, bits per second, seconds, frames per second, accuracy in [0, 1].
"""

from split_infer.planning.bandwidth import (
    BandwidthDistribution,
    EmpiricalBandwidth,
    GaussianBandwidth,
    bandwidth_distribution,
)
from split_infer.planning.configuration import BITS_PER_BYTE, Configuration, Region
from split_infer.planning.effective_accuracy import (
    EffectiveAccuracySweep,
    ThresholdPolicy,
    effective_accuracy,
    eq3_threshold_bps,
    expected_effective_accuracy,
    expected_pipeline_throughput_hz,
    expected_throughput_hz,
    fallback_rates_hz,
    fallback_throughput_hz,
    paper_fig3_configurations,
    pipeline_throughput_hz,
    plot_effective_accuracy_sweep,
    sweep_expected_effective_accuracy,
    threshold_policy,
)
from split_infer.planning.latency import (
    crossover_bandwidth_bps,
    crossover_bandwidths_bps,
    latency_intercept_s,
    latency_regions,
    plot_latency_vs_bandwidth,
    total_latency_s,
)
from split_infer.planning.mixing import Mix, best_mix, best_share, mix_rate_hz
from split_infer.planning.partition import (
    Partition,
    brute_force_partition,
    evaluate_partition,
    partition_layers,
    throughput_upper_bound_hz,
)
from split_infer.planning.selection import (
    UPLINK_POWER_MODELS,
    Selection,
    UplinkPowerModel,
    acceptable_configurations,
    mobile_energy_j,
    select_split,
    smallest_per_split,
)
from split_infer.planning.simulation import SimulationResult, simulate_pipeline

__all__ = [
    "BITS_PER_BYTE",
    "UPLINK_POWER_MODELS",
    "BandwidthDistribution",
    "Configuration",
    "EffectiveAccuracySweep",
    "EmpiricalBandwidth",
    "GaussianBandwidth",
    "Mix",
    "Partition",
    "Region",
    "Selection",
    "SimulationResult",
    "ThresholdPolicy",
    "UplinkPowerModel",
    "acceptable_configurations",
    "bandwidth_distribution",
    "best_mix",
    "best_share",
    "brute_force_partition",
    "crossover_bandwidth_bps",
    "crossover_bandwidths_bps",
    "effective_accuracy",
    "eq3_threshold_bps",
    "evaluate_partition",
    "expected_effective_accuracy",
    "expected_pipeline_throughput_hz",
    "expected_throughput_hz",
    "fallback_rates_hz",
    "fallback_throughput_hz",
    "latency_intercept_s",
    "latency_regions",
    "mix_rate_hz",
    "mobile_energy_j",
    "paper_fig3_configurations",
    "partition_layers",
    "pipeline_throughput_hz",
    "plot_effective_accuracy_sweep",
    "plot_latency_vs_bandwidth",
    "select_split",
    "simulate_pipeline",
    "smallest_per_split",
    "sweep_expected_effective_accuracy",
    "threshold_policy",
    "throughput_upper_bound_hz",
    "total_latency_s",
]
