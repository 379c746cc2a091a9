"""The analysis behind ``split-infer plan BUNDLE``: one bundle's measured numbers through the whole
planning library, as text, JSON and figures.

For the bundle's split configurations and, when the manifest has them, its client-only and
server-only references (:func:`split_infer.adaptation.configurations.reference_configuration`):

1. **Latency** (Ulhaq's thesis §4.2): every strategy is a line ``I_t(B) = b + 8·D/B`` (eqs.
   4.1–4.4); the fastest one per bandwidth interval and the crossovers between them are the
   exact lower envelope (:func:`.latency.latency_regions`), plotted like Fig. 4.4.
2. **Effective accuracy** (Hu & Krishnamachari §III–IV): ``ν_eff = T·ν/T_gen`` with
   ``T = min(T_gen, T_p, B/(8·D))``; the threshold policy Θ (eq. (3) generalised,
   :func:`.effective_accuracy.threshold_policy`) is the upper envelope of the ``ν_eff`` curves.
3. **The plan** at each requested bandwidth: :func:`.policy.choose_configuration` — the same
   function the scheduler node calls — for the ``effective_accuracy`` and ``latency`` objectives
   (and, given a deadline, ``accuracy`` under it; the deadline then constrains all three).
4. **Fig. 3 of Hu & K on this bundle**: ``E[ν_eff]`` (eqs. (4)–(6)) of every fixed configuration
   and of the adaptive policy for ``B ~ N(μ, σ)`` truncated at 0, over a linear grid of means μ.
   As in the paper, σ is an absolute bandwidth per panel: ``σ = f · μ_ref`` for each fraction
   ``f`` of ``sigma_fraction``, where ``μ_ref`` is the middle of the μ grid — the μ of the plot's
   last (E[ν_eff] vs σ) panel — so there ``σ/μ = f`` exactly. The default grid runs up to 1.5×
   the largest bandwidth any configuration of the adaptive policy can use (its knee
   ``8·D·min(T_gen, T_p)``), so every curve of interest reaches its plateau.

Units follow :mod:`split_infer.planning`: bits/s, bytes, seconds, frames/s, accuracy fractions.
The text output shows Mbit/s (10⁶ bit/s), ms and % for reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from split_infer.adaptation.configurations import (
    REFERENCE_FIELDS,
    configuration_from_bundle,
    reference_configuration,
)
from split_infer.adaptation.policy import choose_configuration
from split_infer.bundle import Bundle, BundleError
from split_infer.planning._plotting import new_figure, save_figure
from split_infer.planning.configuration import BITS_PER_BYTE, Configuration, Region
from split_infer.planning.effective_accuracy import (
    EffectiveAccuracySweep,
    ThresholdPolicy,
    effective_accuracy,
    pipeline_throughput_hz,
    plot_effective_accuracy_sweep,
    sweep_expected_effective_accuracy,
    threshold_policy,
)
from split_infer.planning.latency import (
    latency_regions,
    plot_latency_vs_bandwidth,
    total_latency_s,
)

__all__ = [
    "DEFAULT_BANDWIDTHS_BPS",
    "DEFAULT_SIGMA_FRACTION",
    "FIGURES",
    "PlanChoice",
    "PlanReport",
    "knee_bps",
    "plan_bundle",
    "planning_configurations",
]

DEFAULT_BANDWIDTHS_BPS: tuple[float, ...] = (1e5, 1e6, 1e7)
DEFAULT_SIGMA_FRACTION: tuple[float, ...] = (0.0, 0.25, 0.5)
SWEEP_POINTS = 24

#: Figure keys and the file names :func:`plan_bundle` writes them to.
FIGURES: dict[str, str] = {
    "latency": "latency_vs_bandwidth.png",
    "effective_accuracy": "effective_accuracy_vs_bandwidth.png",
    "fig3": "fig3_effective_accuracy.png",
}
PLAN_JSON = "plan.json"


def knee_bps(config: Configuration, t_gen_hz: float) -> float:
    """The bandwidth above which the link stops being the bottleneck: ``8·D·min(T_gen, T_p)``.

    Below it ``T = B/(8·D)`` (Hu & K eq. (5)); above it ``T = min(T_gen, T_p)`` (eq. (4)), so it is
    where the configuration's ``ν_eff`` curve reaches its plateau. 0 for client-only.
    """
    return BITS_PER_BYTE * config.bytes_per_frame * min(t_gen_hz, config.compute_bound_hz)


def planning_configurations(
    bundle: Bundle, *, skip_unmeasured: bool = False
) -> tuple[tuple[Configuration, ...], tuple[str, ...]]:
    """The bundle's configurations plus its client-only/server-only references, as planning
    :class:`.Configuration` s, and the ids left out.

    Conversion is :func:`~split_infer.adaptation.configurations.configuration_from_bundle` and
    :func:`~split_infer.adaptation.configurations.reference_configuration` (the scheduler's own). A
    configuration (or reference) without its measured numbers is a :class:`BundleError` (a
    ValueError) naming every such one and its missing fields, unless ``skip_unmeasured``: then
    it is left out and its id returned. BundleError if nothing is left.
    """
    configs: list[Configuration] = []
    problems: list[tuple[str, str]] = []
    for bundle_config in bundle.configurations:
        try:
            configs.append(configuration_from_bundle(bundle_config))
        except ValueError as exc:
            problems.append((bundle_config.id, str(exc)))
    for kind in REFERENCE_FIELDS:
        try:
            reference = reference_configuration(bundle, kind)
        except ValueError as exc:
            problems.append((kind, str(exc)))
            continue
        if reference is not None:
            configs.append(reference)
    if problems and not skip_unmeasured:
        # The bundle the user gave cannot be planned with: theirs to fix (re-measure it).
        raise BundleError(
            f"{bundle.path}: cannot plan, {len(problems)} configuration(s) lack measurements: "
            + "; ".join(message for _, message in problems)
            + " (measure the bundle, or plan the rest with skip_unmeasured=True)"
        )
    if not configs:
        raise BundleError(f"{bundle.path}: no configuration has measured numbers to plan with")
    return tuple(configs), tuple(name for name, _ in problems)


@dataclass(frozen=True)
class PlanChoice:
    """One decision of the plan: ``objective`` at ``bandwidth_bps``, by
    :func:`.choose_configuration`, and what the models predict for the chosen configuration:
    ``latency_s`` (thesis eq. 4.1, with the report's RTT), ``throughput_hz``
    ``T = min(T_gen, T_p, B/(8·D))`` and ``effective_accuracy`` ``ν_eff = T·ν/T_gen`` (Hu & K
    §III). ``score`` is the decision's score (higher is better, in the objective's units);
    ``meets_deadline`` is False only when a deadline was set and nothing met it."""

    bandwidth_bps: float
    objective: str
    configuration: Configuration
    latency_s: float
    throughput_hz: float
    effective_accuracy: float
    score: float
    deadline_s: float | None = None
    meets_deadline: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "bandwidth_bps": self.bandwidth_bps,
            "objective": self.objective,
            "configuration": self.configuration.name,
            "kind": self.configuration.kind,
            "split_point": self.configuration.split_point,
            "ratio": self.configuration.ratio,
            "accuracy": self.configuration.accuracy,
            "latency_s": self.latency_s,
            "throughput_hz": self.throughput_hz,
            "effective_accuracy": self.effective_accuracy,
            "score": _finite_or_none(self.score),
            "deadline_s": self.deadline_s,
            "meets_deadline": self.meets_deadline,
        }


@dataclass(frozen=True)
class PlanReport:
    """Everything ``split-infer plan`` shows; see the module docstring for what each part is.

    ``latency_regions`` are the thesis's Fig. 4.4 regions (fastest configuration per bandwidth
    interval), ``policy`` Hu & K's threshold policy at ``frame_rate_hz``, ``choices`` the plan
    (bandwidth-major, in the order requested), ``sweep`` the Fig. 3-style grid (σ in bits/s,
    ``sigma_fraction[i] · reference_mean_bps``), ``files`` what was written (figure key → path).
    ``configurations`` carry the edge/cloud times already multiplied by the time scales.
    """

    bundle_path: str
    model: str
    dataset: str
    configurations: tuple[Configuration, ...]
    skipped: tuple[str, ...]
    rtt_s: float
    frame_rate_hz: float
    deadline_s: float | None
    edge_time_scale: float
    cloud_time_scale: float
    bandwidths_bps: tuple[float, ...]
    latency_regions: tuple[Region, ...]
    policy: ThresholdPolicy
    choices: tuple[PlanChoice, ...]
    sweep: EffectiveAccuracySweep
    sigma_fraction: tuple[float, ...]
    reference_mean_bps: float
    files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def crossovers_bps(self) -> tuple[float, ...]:
        """Bandwidths where the fastest configuration changes (thesis Fig. 4.4), ascending."""
        return tuple(r.low_bps for r in self.latency_regions[1:])

    @property
    def thresholds_bps(self) -> tuple[float, ...]:
        """Hu & K's thresholds Θ: where the ``ν_eff``-best configuration changes, ascending."""
        return self.policy.thresholds_bps

    def choice(self, bandwidth_bps: float, objective: str) -> PlanChoice:
        """The plan's decision for ``objective`` at one of the requested bandwidths."""
        for c in self.choices:
            if c.objective == objective and math.isclose(c.bandwidth_bps, bandwidth_bps):
                return c
        raise KeyError(f"no {objective!r} decision at {bandwidth_bps!r} bit/s in this plan")

    # -- output ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``json.dumps(..., allow_nan=False)`` works): SI units as in
        :mod:`split_infer.planning`; an unbounded region ends at ``high_bps = None``."""
        t_gen = self.frame_rate_hz
        sweep = self.sweep
        return {
            "bundle": self.bundle_path,
            "model": self.model,
            "dataset": self.dataset,
            "units": {"bandwidth": "bit/s", "time": "s", "rate": "frames/s",
                      "size": "bytes", "accuracy": "fraction"},
            "settings": {
                "rtt_s": self.rtt_s,
                "frame_rate_hz": t_gen,
                "deadline_s": self.deadline_s,
                "edge_time_scale": self.edge_time_scale,
                "cloud_time_scale": self.cloud_time_scale,
                "bandwidths_bps": list(self.bandwidths_bps),
                "sigma_fraction": list(self.sigma_fraction),
            },
            "configurations": [
                {**c.to_dict(), "knee_bps": knee_bps(c, t_gen)} for c in self.configurations
            ],
            "skipped": list(self.skipped),
            "latency": {
                "regions": [_region_dict(r) for r in self.latency_regions],
                "crossovers_bps": list(self.crossovers_bps),
            },
            "effective_accuracy": {
                "frame_rate_hz": t_gen,
                "thresholds_bps": list(self.thresholds_bps),
                "regions": [
                    {**_region_dict(r),
                     "plateau": float(effective_accuracy(r.configuration, math.inf, t_gen))}
                    for r in self.policy.regions
                ],
            },
            "plan": [c.to_dict() for c in self.choices],
            "sweep": {
                "means_bps": sweep.means_bps.tolist(),
                "stds_bps": sweep.stds_bps.tolist(),
                "sigma_fraction": list(self.sigma_fraction),
                "reference_mean_bps": self.reference_mean_bps,
                "fixed": {name: grid.tolist() for name, grid in sweep.fixed.items()},
                "adaptive": sweep.adaptive.tolist(),
            },
            "files": {key: str(path) for key, path in self.files.items()},
        }

    def format_text(self) -> str:
        """The report as plain text for a terminal (Mbit/s, ms, %)."""
        t_gen = self.frame_rate_hz
        lines = [
            f"Plan for {self.bundle_path} (model {self.model}, dataset {self.dataset})",
            f"RTT {self.rtt_s * 1e3:g} ms, camera T_gen {t_gen:g} frames/s"
            + ("" if self.deadline_s is None else f", deadline {self.deadline_s * 1e3:g} ms")
            + "; bandwidths in Mbit/s",
            *([f"edge times x{self.edge_time_scale:g}, cloud times x{self.cloud_time_scale:g} "
               "(scaled from the bundle's profile)"]
              if (self.edge_time_scale, self.cloud_time_scale) != (1.0, 1.0) else []),
            "",
            f"Configurations ({len(self.configurations)})",
            *_indent(_configuration_table(self.configurations, t_gen)),
        ]
        if self.skipped:
            lines.append(f"  left out (not measured): {', '.join(self.skipped)}")
        lines += [
            "",
            "Latency (thesis eqs. 4.1-4.4: I_t = I_c + E_c + 8D/B + RTT + E_s + I_s); fastest:",
            *_indent(_region_rows(
                self.latency_regions,
                lambda c: f"b = {total_latency_s(c, math.inf, self.rtt_s) * 1e3:.3g} ms, "
                f"D = {c.bytes_per_frame:.0f} B")),
            f"  crossovers: {_mbps_list(self.crossovers_bps)}",
            "",
            "Effective accuracy (Hu & K: nu_eff = T*nu/T_gen, T = min(T_gen, T_p, B/8D)); "
            "threshold policy:",
            *_indent(_region_rows(
                self.policy.regions,
                lambda c: f"plateau nu_eff {100 * effective_accuracy(c, math.inf, t_gen):.1f} %"
                + (f" (reached at {knee_bps(c, t_gen) / 1e6:.3g})" if c.transmits else ""))),
            f"  thresholds Theta: {_mbps_list(self.thresholds_bps)}",
            "",
            "Plan (choose_configuration, as the scheduler decides)",
            *_indent(self._plan_table()),
            "",
            *self._sweep_text(),
        ]
        if self.files:
            lines += ["", "Wrote:", *(f"  {path}" for path in self.files.values())]
        return "\n".join(lines)

    def _plan_table(self) -> list[str]:
        rows = [["B Mbit/s", "objective", "choice", "split", "ratio", "latency ms", "T fps",
                 "nu_eff %"]]
        for c in self.choices:
            config = c.configuration
            rows.append([
                f"{c.bandwidth_bps / 1e6:g}",
                c.objective + ("" if c.meets_deadline else " (misses deadline)"),
                config.name,
                _split_label(config),
                _ratio_label(config),
                f"{c.latency_s * 1e3:.1f}",
                f"{c.throughput_hz:.3g}",
                f"{100 * c.effective_accuracy:.1f}",
            ])
        return _table(rows, right=(0, 4, 5, 6, 7))

    def _sweep_text(self) -> list[str]:
        sweep = self.sweep
        names = list(sweep.fixed)
        fixed = np.stack([sweep.fixed[n] for n in names])  # [config, std, mean]
        best = fixed.argmax(axis=0)
        head = [
            "Fig. 3 style: E[nu_eff] % for B ~ N(mu, sigma) truncated at 0, "
            f"sigma = f x {self.reference_mean_bps / 1e6:.3g} Mbit/s",
            "  (adaptive threshold policy / best fixed configuration)",
        ]
        header = ["mu Mbit/s"] + [
            f"f={f:g} (sigma {s / 1e6:.3g})" for f, s in zip(self.sigma_fraction, sweep.stds_bps)
        ]
        rows = [header]
        picks = sorted({round(k) for k in np.linspace(0, sweep.means_bps.size - 1, 7)})
        for k in picks:
            rows.append([f"{sweep.means_bps[k] / 1e6:.3g}"] + [
                f"{100 * sweep.adaptive[i, k]:.1f} / {100 * fixed[best[i, k], i, k]:.1f} "
                f"{names[best[i, k]]}"
                for i in range(sweep.stds_bps.size)
            ])
        gain = sweep.adaptive - fixed.max(axis=0)
        i, k = np.unravel_index(int(np.argmax(gain)), gain.shape)
        tail = [
            f"  largest adaptive gain over the best fixed configuration: "
            f"{100 * gain[i, k]:+.2f} points at mu {sweep.means_bps[k] / 1e6:.3g}, "
            f"sigma {sweep.stds_bps[i] / 1e6:.3g} Mbit/s"
        ]
        return head + _indent(_table(rows, right=(0,))) + tail


def plan_bundle(
    bundle: Bundle | str | Path,
    *,
    bandwidths_bps: Sequence[float] = DEFAULT_BANDWIDTHS_BPS,
    rtt_s: float = 0.02,
    frame_rate_hz: float = 30.0,
    sigma_fraction: Sequence[float] = DEFAULT_SIGMA_FRACTION,
    deadline_s: float | None = None,
    sweep_means_bps: Sequence[float] | None = None,
    edge_time_scale: float = 1.0,
    cloud_time_scale: float = 1.0,
    skip_unmeasured: bool = False,
    out_dir: Path | str | None = None,
) -> PlanReport:
    """Run the planning analysis of ``bundle`` (a loaded :class:`Bundle` or its path).

    * ``bandwidths_bps``: where to show the plan (bits/s, > 0);
    * ``rtt_s``: the RTT of thesis eqs. 4.1–4.3 (it does not enter ``ν_eff``);
    * ``frame_rate_hz``: the camera rate ``T_gen`` of Hu & K;
    * ``sigma_fraction``: the Fig. 3 sweep's σ values as fractions of the grid's middle mean
      (module docstring); ``sweep_means_bps`` overrides the default μ grid;
    * ``deadline_s``: adds the ``accuracy`` objective (most accurate configuration meeting it) and
      constrains the other two objectives;
    * ``edge_time_scale`` / ``cloud_time_scale``: multiply every configuration's edge time
      ``I_c + E_c`` (client-only: the whole model) / cloud time ``E_s + I_s`` — a bundle's
      profile measures both sides on the machine that built it, whereas the thesis's Fig. 4.4
      regions need ``b^(s) < b^(l) < b^(c)`` (eq. 4.6), i.e. an edge slower than the cloud;
    * ``skip_unmeasured``: plan without unmeasured configurations instead of raising;
    * ``out_dir``: write ``plan.json`` and the three figures (:data:`FIGURES`) there.
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    bandwidths = tuple(float(b) for b in bandwidths_bps)
    if not bandwidths or not all(math.isfinite(b) and b > 0 for b in bandwidths):
        raise ValueError(f"bandwidths_bps must be finite and > 0 bit/s, got {bandwidths!r}")
    if not (math.isfinite(rtt_s) and rtt_s >= 0):
        raise ValueError(f"rtt_s must be finite and >= 0, got {rtt_s!r}")
    if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise ValueError(f"frame_rate_hz must be finite and > 0, got {frame_rate_hz!r}")
    fractions = tuple(float(f) for f in sigma_fraction)
    if not fractions or not all(math.isfinite(f) and f >= 0 for f in fractions):
        raise ValueError(f"sigma_fraction must be finite and >= 0, got {fractions!r}")
    if deadline_s is not None and not deadline_s > 0:
        raise ValueError(f"deadline_s must be > 0 (or None), got {deadline_s!r}")
    for label, scale in (("edge_time_scale", edge_time_scale),
                         ("cloud_time_scale", cloud_time_scale)):
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{label} must be finite and > 0, got {scale!r}")

    configs, skipped = planning_configurations(bundle, skip_unmeasured=skip_unmeasured)
    if edge_time_scale != 1.0 or cloud_time_scale != 1.0:
        configs = tuple(
            replace(c, edge_s=c.edge_s * edge_time_scale, cloud_s=c.cloud_s * cloud_time_scale)
            for c in configs)
    regions = latency_regions(configs, rtt_s)
    policy = threshold_policy(configs, frame_rate_hz)
    choices = tuple(
        _choose(configs, b, rtt_s, objective, frame_rate_hz, deadline_s)
        for b in bandwidths
        for objective in (("effective_accuracy", "latency") if deadline_s is None
                          else ("effective_accuracy", "latency", "accuracy"))
    )

    means = (_default_means(configs, policy, frame_rate_hz) if sweep_means_bps is None
             else np.asarray(sweep_means_bps, dtype=float))
    if means.ndim != 1 or means.size == 0 or not np.all(np.isfinite(means) & (means > 0)):
        raise ValueError("sweep_means_bps must be a non-empty list of bandwidths > 0 bit/s")
    reference_mean = float(means[means.size // 2])
    sweep = sweep_expected_effective_accuracy(
        configs, means, [f * reference_mean for f in fractions], frame_rate_hz)

    dataset = bundle.manifest.get("dataset", "")
    report = PlanReport(
        bundle_path=str(bundle.path),
        model=str(bundle.manifest.get("model", {}).get("name", "?")),
        dataset=str(dataset.get("name", "?") if isinstance(dataset, dict) else dataset),
        configurations=configs,
        skipped=skipped,
        rtt_s=float(rtt_s),
        frame_rate_hz=float(frame_rate_hz),
        deadline_s=None if deadline_s is None else float(deadline_s),
        edge_time_scale=float(edge_time_scale),
        cloud_time_scale=float(cloud_time_scale),
        bandwidths_bps=bandwidths,
        latency_regions=regions,
        policy=policy,
        choices=choices,
        sweep=sweep,
        sigma_fraction=fractions,
        reference_mean_bps=reference_mean,
    )
    if out_dir is None:
        return report
    return _write(report, Path(out_dir))


# -- internals ---------------------------------------------------------------------------------

def _choose(
    configs: Sequence[Configuration],
    bandwidth_bps: float,
    rtt_s: float,
    objective: str,
    t_gen_hz: float,
    deadline_s: float | None,
) -> PlanChoice:
    decision = choose_configuration(
        configs, bandwidth_bps, rtt_s, objective,  # type: ignore[arg-type]
        deadline_s=deadline_s, t_gen_hz=t_gen_hz)
    config = decision.configuration
    return PlanChoice(
        bandwidth_bps=bandwidth_bps,
        objective=objective,
        configuration=config,
        latency_s=decision.latency_s,
        throughput_hz=float(pipeline_throughput_hz(config, bandwidth_bps, t_gen_hz)),
        effective_accuracy=float(effective_accuracy(config, bandwidth_bps, t_gen_hz)),
        score=decision.score,
        deadline_s=deadline_s,
        meets_deadline=decision.meets_deadline,
    )


def _default_means(
    configs: Sequence[Configuration], policy: ThresholdPolicy, t_gen_hz: float
) -> np.ndarray:
    """A linear μ grid up to 1.5× the largest knee among the adaptive policy's configurations
    (all transmitting configurations if the policy uses none); Fig. 3 uses a linear μ axis."""
    knees = [knee_bps(c, t_gen_hz) for c in policy.configurations if c.transmits]
    knees = knees or [knee_bps(c, t_gen_hz) for c in configs if c.transmits] or [1e6]
    top = 1.5 * max(knees)
    return np.linspace(top / SWEEP_POINTS, top, SWEEP_POINTS)


def _bandwidth_range(report: PlanReport) -> tuple[float, float]:
    """A log-axis range holding every requested bandwidth, crossover, threshold and knee."""
    marks = [*report.bandwidths_bps, *report.crossovers_bps, *report.thresholds_bps]
    marks += [knee_bps(c, report.frame_rate_hz) for c in report.configurations if c.transmits]
    marks = [m for m in marks if math.isfinite(m) and m > 0]
    return min(marks) / 10, max(marks) * 10


def _write(report: PlanReport, out_dir: Path) -> PlanReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    b_range = _bandwidth_range(report)
    files = {
        "latency": plot_latency_vs_bandwidth(
            report.configurations, out_dir / FIGURES["latency"], b_range, report.rtt_s,
            title=f"{report.model}: latency vs bandwidth (RTT {report.rtt_s * 1e3:g} ms)"),
        "effective_accuracy": _plot_effective_accuracy(
            report, out_dir / FIGURES["effective_accuracy"], b_range),
        "fig3": plot_effective_accuracy_sweep(
            report.sweep, out_dir / FIGURES["fig3"],
            sigma_panel_mean_bps=report.reference_mean_bps,
            title=f"{report.model}: expected effective accuracy, T_gen = "
                  f"{report.frame_rate_hz:g} Hz, σ = f·{report.reference_mean_bps / 1e6:.3g} "
                  "Mbit/s"),
    }
    files["json"] = out_dir / PLAN_JSON
    report = replace(report, files=files)
    files["json"].write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    return report


def _plot_effective_accuracy(report: PlanReport, path: Path, b_range: tuple[float, float],
                             points: int = 400) -> Path:
    """``ν_eff`` against bandwidth (log axis) per configuration, the adaptive threshold policy's
    envelope in bold red (Hu & K §IV-D) and the thresholds Θ dashed."""
    t_gen = report.frame_rate_hz
    bandwidth = np.geomspace(*b_range, points)
    fig, axes = new_figure(size=(8.0, 4.8))
    ax = axes[0, 0]
    styles = ("-", "--", ":", "-.")
    for i, config in enumerate(report.configurations):
        curve = 100 * np.asarray(effective_accuracy(config, bandwidth, t_gen))
        ax.plot(bandwidth / 1e6, curve, color=f"C{i % 10}", ls=styles[(i // 10) % len(styles)],
                lw=1.1, label=config.name)
    envelope = [report.policy.effective_accuracy(float(b)) for b in bandwidth]
    ax.plot(bandwidth / 1e6, 100 * np.asarray(envelope), color="red", lw=2.5, alpha=0.6,
            label="adaptive (threshold policy)")
    for theta in report.thresholds_bps:
        ax.axvline(theta / 1e6, color="k", ls="--", lw=0.8)
        ax.annotate(f" {theta / 1e6:.3g}", (theta / 1e6, 0.02),
                    xycoords=("data", "axes fraction"), fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("bandwidth B (Mbit/s)")
    ax.set_ylabel("effective accuracy ν_eff (%)")
    ax.set_title(f"{report.model}: ν_eff = T·ν/T_gen vs bandwidth, T_gen = {t_gen:g} Hz",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=1 + len(report.configurations) // 12)
    return save_figure(fig, path)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _region_dict(region: Region) -> dict[str, Any]:
    return {"configuration": region.configuration.name, "low_bps": region.low_bps,
            "high_bps": _finite_or_none(region.high_bps)}


def _split_label(config: Configuration) -> str:
    if config.kind != "split":
        return config.kind
    name = config.split_name or ""
    return f"{config.split_point} {name}".strip() if config.split_point is not None else name


def _ratio_label(config: Configuration) -> str:
    return "-" if config.kind == "client_only" else f"{config.ratio:.3g}"


def _configuration_table(configs: Sequence[Configuration], t_gen_hz: float) -> list[str]:
    rows = [["id", "split", "ratio", "bytes/frame", "acc %", "edge ms", "cloud ms",
             "knee Mbit/s"]]
    for c in configs:
        rows.append([
            c.name,
            _split_label(c),
            _ratio_label(c),
            f"{c.bytes_per_frame:.0f}",
            f"{100 * c.accuracy:.1f}",
            f"{c.edge_s * 1e3:.2f}",
            f"{c.cloud_s * 1e3:.2f}",
            f"{knee_bps(c, t_gen_hz) / 1e6:.3g}" if c.transmits else "-",
        ])
    return _table(rows, right=(2, 3, 4, 5, 6, 7))


def _region_rows(regions: Sequence[Region], describe: Any) -> list[str]:
    rows = []
    for r in regions:
        high = "inf" if math.isinf(r.high_bps) else f"{r.high_bps / 1e6:.3g}"
        rows.append([f"[{r.low_bps / 1e6:.3g}, {high})", r.configuration.name,
                     describe(r.configuration)])
    return _table(rows, right=())


def _mbps_list(values: Sequence[float]) -> str:
    return ", ".join(f"{v / 1e6:.3g}" for v in values) + " Mbit/s" if values else "none"


def _table(rows: list[list[str]], right: Sequence[int]) -> list[str]:
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    return [
        "  ".join(cell.rjust(w) if j in right else cell.ljust(w)
                  for j, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    ]


def _indent(lines: list[str]) -> list[str]:
    return [f"  {line}" for line in lines]
