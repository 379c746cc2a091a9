"""Plans for n-stage pipelines: which device runs which layers, and how each link is coded.

Hu & Krishnamachari (§IV-A, eq. (2)) partition a CNN over a chain of devices so that the
slowest stage is as fast as possible. This module runs that dynamic program
(:func:`.partition.partition_layers`) on a bundle:

* the "layers" are the stretches between the bundle's split points, because a link can only
  sit where the bundle has a calibrated codec; their ops are MACs (from the bundle's profile,
  or counted on its backbone);
* ``C_i`` are the devices' speeds in MAC/s;
* each link carries the bundle's most compressed baseline configuration at that split whose
  accuracy is within ``max_link_loss_points`` of the unsplit model, and its bytes per frame
  against the link's bandwidth join the ``min`` of eq. (2) as communication stages (beyond the
  paper, which assumes links are never the bottleneck).

The result is a :class:`PipelinePlan`, saved as YAML (``split-infer plan --devices ... --out
plan.yaml``) together with a ``launch_ros`` file that starts the chain from it: the first
stage is an ``edge_node`` (camera → layers ``(0, s_1]``), the middle ones ``stage_node``\\ s and
the last a ``cloud_node``. Stage ``i`` lives in namespace ``/<chain>/<device name>`` and
publishes ``features`` there; stage ``i+1`` reads them (and returns receipts) in that
namespace, exactly as a cloud node serves an edge namespace.

Accuracy along a chain is not the product of the links' measured accuracies (errors of two
quantizers interact); the plan lists each link's own accuracy, and ``split-infer eval`` style
measurement of a whole chain is left to :func:`split_infer.pipeline.stages`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from split_infer.bundle import Bundle, BundleConfiguration
from split_infer.defaults import DEFAULT_BUNDLE
from split_infer.errors import UserError
from split_infer.planning.partition import partition_layers, throughput_upper_bound_hz

__all__ = [
    "PLAN_FORMAT",
    "Device",
    "LinkPlan",
    "PipelinePlan",
    "PlanError",
    "StagePlan",
    "load_plan",
    "parse_devices",
    "plan_pipeline",
    "write_launch_file",
]

PLAN_FORMAT = "split_infer.plan/1"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class PlanError(UserError, ValueError):
    """Devices, links or a plan file the user gave do not make a pipeline; says why."""


@dataclass(frozen=True)
class Device:
    """One device of the chain: a ROS-name-safe ``name`` and its speed in MAC/s."""

    name: str
    macs_per_s: float


def parse_devices(spec: str | Sequence[str]) -> list[Device]:
    """``"robot=2,pi=2.5,server=40"`` (or a list of ``name=GMACs`` entries) → devices, in
    chain order; speeds are in GMAC/s (10⁹ multiply-accumulates per second)."""
    entries = spec.split(",") if isinstance(spec, str) else [
        part for item in spec for part in item.split(",")]
    devices: list[Device] = []
    for entry in (e.strip() for e in entries):
        name, sep, speed = entry.partition("=")
        if not sep:
            raise PlanError(f"device {entry!r}: expected NAME=GMACS, e.g. robot=2.5")
        if not _NAME.match(name):
            raise PlanError(f"device name {name!r}: use letters, digits and '_' (it becomes "
                            "a ROS namespace), starting with a letter")
        try:
            value = float(speed)
        except ValueError:
            raise PlanError(f"device {entry!r}: {speed!r} is not a number (GMAC/s)") from None
        if not (value > 0 and math.isfinite(value)):
            raise PlanError(f"device {entry!r}: the speed must be a positive number of GMAC/s")
        devices.append(Device(name, value * 1e9))
    if len(devices) < 2:
        raise PlanError("a pipeline needs at least two devices")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise PlanError(f"device names must be unique, got {names}")
    return devices


@dataclass(frozen=True)
class LinkPlan:
    """The link after a stage: where it cuts, which configuration codes it, what it costs."""

    split_point: int
    split_name: str
    configuration: str
    codec: str
    ratio: float
    bytes_per_frame: float
    bytes_measured: bool
    accuracy: float | None
    bandwidth_bps: float
    link_hz: float


@dataclass(frozen=True)
class StagePlan:
    """One device's share: blocks ``(start, end]`` (``end=None``: through the logits)."""

    device: str
    macs_per_s: float
    node: str  # edge_node | stage_node | cloud_node
    start: int
    end: int | None
    macs: float
    compute_hz: float
    input_configuration: str | None
    output_configuration: str | None


@dataclass
class PipelinePlan:
    """A partition of a bundle's model over a chain of devices (Hu & K eq. (2))."""

    bundle: str
    model: str
    stages: list[StagePlan]
    links: list[LinkPlan]
    throughput_hz: float
    upper_bound_hz: float
    bottleneck: str
    max_link_loss_points: float
    reference_accuracy: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        """Write the plan as YAML (what :func:`load_plan` and the launch file read)."""
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))
        return path

    def format_text(self) -> str:
        lines = [f"{len(self.stages)}-stage pipeline for {self.model} ({self.bundle})",
                 f"  throughput {self.throughput_hz:.1f} frames/s (bottleneck: "
                 f"{self.bottleneck}); perfect balance would give {self.upper_bound_hz:.1f}"]
        header = f"  {'stage':<12}{'node':<12}{'blocks':<12}{'MMAC':>9}{'GMAC/s':>9}{'fps':>10}"
        lines += ["", header]
        for stage in self.stages:
            blocks = f"({stage.start}, {'end' if stage.end is None else stage.end}]"
            lines.append(f"  {stage.device:<12}{stage.node:<12}{blocks:<12}"
                         f"{stage.macs / 1e6:>9.2f}{stage.macs_per_s / 1e9:>9.2f}"
                         f"{stage.compute_hz:>10.1f}")
        lines += ["", f"  {'link':<14}{'configuration':<22}{'B/frame':>9}{'acc %':>7}"
                      f"{'Mbit/s':>9}{'fps':>10}"]
        for i, link in enumerate(self.links):
            name = f"{self.stages[i].device}→{self.stages[i + 1].device}"
            acc = "–" if link.accuracy is None else f"{100 * link.accuracy:.2f}"
            size = f"{link.bytes_per_frame:.0f}" + ("" if link.bytes_measured else "*")
            lines.append(f"  {name:<14}{link.configuration:<22}{size:>9}{acc:>7}"
                         f"{link.bandwidth_bps / 1e6:>9.3g}{link.link_hz:>10.1f}")
        if any(not link.bytes_measured for link in self.links):
            lines.append("  * not measured on wire frames: float32 size / ratio")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Bar chart of every stage's and link's rate (frames/s) with the bottleneck marked."""
        from split_infer.planning._plotting import new_figure, save_figure

        fig, axes = new_figure(size=(7.5, 4.0))
        ax = axes[0][0]
        labels, rates, colors = [], [], []
        for i, stage in enumerate(self.stages):
            end = "m" if stage.end is None else stage.end
            labels.append(f"{stage.device}\n({stage.start},{end}]")
            rates.append(stage.compute_hz)
            colors.append("tab:blue")
            if i < len(self.links):
                labels.append(f"link {i + 1}\n{self.links[i].bytes_per_frame:.0f} B")
                rates.append(self.links[i].link_hz)
                colors.append("tab:orange")
        finite = [r for r in rates if math.isfinite(r)]
        cap = 2 * max(finite) if finite else 1.0
        shown = [min(r, cap) for r in rates]
        ax.bar(range(len(shown)), shown, color=colors)
        ax.axhline(self.throughput_hz, color="tab:red", linestyle="--",
                   label=f"pipeline {self.throughput_hz:.1f} fps")
        ax.set_xticks(range(len(shown)), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("frames/s (compute: blue, link: orange)")
        ax.set_title(f"{self.model}: stage rates of the planned chain (Hu & K eq. (2))")
        ax.legend()
        return save_figure(fig, path)


def _plain(value: Any) -> Any:
    """YAML-safe: tuples → lists, numpy scalars → floats, inf → a large string-free float."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _block_macs(bundle: Bundle, cuts: Sequence[int]) -> list[float]:
    """MACs of the stretches between consecutive ``cuts`` (0, split points..., end)."""
    profile = bundle.manifest.get("profile")
    if profile:
        heads = {int(s["index"]): float(s["head_macs"]) for s in profile["splits"]}
        total = float(profile["total_macs"])
        cumulative = [0.0] + [heads[c] for c in cuts[1:-1]] + [total]
    else:
        from split_infer.models.macs import count_macs
        from split_infer.pipeline.parts import load_backbone

        model = load_backbone(bundle)
        total = float(count_macs(model, model.input_shape))
        cumulative = [0.0] + [float(count_macs(model.segment(0, c), model.input_shape))
                              for c in cuts[1:-1]] + [total]
    return list(np.diff(cumulative))


def _reference_accuracy(bundle: Bundle) -> float | None:
    client = bundle.manifest.get("client_only") or {}
    if client.get("accuracy") is not None:
        return float(client["accuracy"])
    measured = [c.accuracy for c in bundle.configurations if c.accuracy is not None]
    return max(measured) if measured else None


def _link_bytes(config: BundleConfiguration) -> tuple[float, bool]:
    if config.bytes_per_frame is not None:
        return float(config.bytes_per_frame), True
    return 4.0 * float(np.prod(config.feature_shape)) / float(config.ratio), False


def _link_configuration(configs: list[BundleConfiguration], reference: float | None,
                        max_loss_points: float) -> BundleConfiguration:
    """The smallest-frame configuration within the loss budget, else the most accurate."""
    if reference is not None:
        within = [c for c in configs if c.accuracy is not None
                  and 100 * (reference - c.accuracy) <= max_loss_points]
        if within:
            return min(within, key=lambda c: (_link_bytes(c)[0], -c.accuracy))
        measured = [c for c in configs if c.accuracy is not None]
        if measured:
            return max(measured, key=lambda c: (c.accuracy, -_link_bytes(c)[0]))
    return min(configs, key=lambda c: _link_bytes(c)[0])


def plan_pipeline(bundle: Bundle | str | Path, devices: Sequence[Device],
                  link_bandwidths_bps: float | Sequence[float], *,
                  max_link_loss_points: float = 1.0) -> PipelinePlan:
    """Partition ``bundle``'s model over ``devices`` (in chain order) with Hu & K's DP.

    ``link_bandwidths_bps``: one value for every link or one per link (``len(devices) - 1``).
    Raises ValueError when the bundle has too few usable split points for the chain.
    """
    from split_infer.bundle import check_chain, is_link_configuration

    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    devices = list(devices)
    n = len(devices)
    if n < 2:
        raise PlanError("a pipeline needs at least two devices")
    bandwidths = ([float(link_bandwidths_bps)] * (n - 1)
                  if isinstance(link_bandwidths_bps, (int, float))
                  else [float(b) for b in link_bandwidths_bps])
    if len(bandwidths) != n - 1 or not all(b > 0 and math.isfinite(b) for b in bandwidths):
        raise PlanError(f"give one positive link bandwidth, or {n - 1} (one per link)")
    reference = _reference_accuracy(bundle)
    by_split: dict[int, list[BundleConfiguration]] = {}
    for config in bundle.configurations:
        if is_link_configuration(config):
            by_split.setdefault(config.split_point, []).append(config)
    if len(by_split) < n - 1:
        raise PlanError(f"{n} devices need {n - 1} links, but the bundle has baseline "
                        f"configurations at only {len(by_split)} split point(s) "
                        f"({sorted(by_split)}); links can only sit where a codec is "
                        "calibrated")
    splits = sorted(by_split)
    chosen = {s: _link_configuration(by_split[s], reference, max_link_loss_points)
              for s in splits}
    cuts = [0, *splits, None]
    ops = _block_macs(bundle, cuts)
    activation = [0.0, *(_link_bytes(chosen[s])[0] for s in splits), 0.0]
    speeds = [d.macs_per_s for d in devices]
    partition = partition_layers(ops, speeds, activation_bytes=activation,
                                 link_bandwidths_bps=bandwidths)
    # Units → split points: unit boundary u (1..len(splits)) is split point splits[u-1].
    boundaries = [0, *(splits[u - 1] for u in partition.split_points), None]
    unit_bounds = [0, *partition.split_points, len(ops)]
    links = []
    for i, split_point in enumerate(boundaries[1:-1]):
        config = chosen[split_point]
        size, measured = _link_bytes(config)
        links.append(LinkPlan(split_point, config.split_name, config.id, config.codec,
                              float(config.ratio), size, measured, config.accuracy,
                              bandwidths[i], partition.link_hz[i]))
    check_chain([bundle.configuration_by_id(link.configuration) for link in links])
    stages = []
    for i, device in enumerate(devices):
        node = "edge_node" if i == 0 else "cloud_node" if i == n - 1 else "stage_node"
        macs = float(sum(ops[unit_bounds[i]:unit_bounds[i + 1]]))
        stages.append(StagePlan(
            device.name, device.macs_per_s, node, boundaries[i], boundaries[i + 1], macs,
            partition.compute_hz[i], links[i - 1].configuration if i > 0 else None,
            links[i].configuration if i < n - 1 else None))
    rates = [(s.compute_hz, f"stage {s.device} (compute)") for s in stages] + [
        (link.link_hz, f"link {stages[i].device}→{stages[i + 1].device}")
        for i, link in enumerate(links)]
    bottleneck = min(rates, key=lambda r: r[0])[1]
    notes = []
    if any(not link.bytes_measured for link in links):
        notes.append("some link sizes are estimates (the bundle was not measured)")
    return PipelinePlan(
        bundle=_bundle_reference(bundle.path), model=bundle.model_name, stages=stages,
        links=links, throughput_hz=partition.throughput_hz,
        upper_bound_hz=throughput_upper_bound_hz(ops, speeds), bottleneck=bottleneck,
        max_link_loss_points=max_link_loss_points, reference_accuracy=reference, notes=notes)


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read and check a plan YAML written by :meth:`PipelinePlan.save`."""
    import yaml

    path = Path(path)
    try:
        plan = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc})") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise PlanError(f"{path}: not a split_infer plan (format {PLAN_FORMAT!r})")
    stages = plan.get("stages")
    if not isinstance(stages, list) or len(stages) < 2:
        raise PlanError(f"{path}: a plan needs at least two stages")
    for stage in stages:
        if not isinstance(stage, dict) or not _NAME.match(str(stage.get("device", ""))):
            raise PlanError(f"{path}: stage {stage!r} has no valid device name")
    return plan


#: How a plan names the package's shipped default bundle (a launch file then finds it in the
#: package's share directory, wherever the package is installed).
SHIPPED_BUNDLE = "default"


def _bundle_reference(path: str | Path) -> str:
    """The plan's ``bundle``: :data:`SHIPPED_BUNDLE` for the shipped default bundle, else the
    bundle's absolute path (a user's bundle stays where the user put it)."""
    resolved = Path(path).resolve()
    return SHIPPED_BUNDLE if resolved == DEFAULT_BUNDLE.resolve() else str(resolved)


def _bundle_default(reference: str) -> str:
    if reference == SHIPPED_BUNDLE:
        return 'PathJoinSubstitution([FindPackageShare("split_infer"), "bundles", "default"])'
    return repr(reference)


_LAUNCH_TEMPLATE = '''"""Launch the {n}-stage {model} pipeline planned in {plan_name}.

Generated by ``split-infer plan --devices ...``: change the plan and regenerate rather than
editing this file.

    ros2 launch {launch_name}    # every stage on this host
    ros2 launch {launch_name} stage:={first}    # one device's stage (one per device)

Chain: {chain}. The first stage (edge_node) runs in ``<chain>/{first}``, reads the camera
on ``image_topic`` and publishes ``<chain>/{first}/features``; every later stage runs in
``<chain>`` and reads ``<chain>/<previous device>/features`` (answering on ``receipts`` there);
a middle stage (stage_node) publishes ``<chain>/<its device>/features``, and the last
(cloud_node) ``<chain>/{last_upstream}/results``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

BUNDLE = ParameterValue(LaunchConfiguration("bundle"), value_type=str)
BUNDLE_DEFAULT = (
    {bundle_default}
)


def on_stage(device):
    # A stage runs with stage:=all or stage:=<its device>.
    return IfCondition(PythonExpression(
        ["'", LaunchConfiguration("stage"), "' in ('all', '" + device + "')"]))


def generate_launch_description():
    chain = LaunchConfiguration("chain")
    return LaunchDescription([
        DeclareLaunchArgument("stage", default_value="all",
                              choices=["all", {choices}],
                              description="which device's stage to start (all: every one)"),
        DeclareLaunchArgument("chain", default_value="chain",
                              description="namespace of the whole chain"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic of the first stage"),
        DeclareLaunchArgument("bundle", default_value=BUNDLE_DEFAULT,
                              description="the bundle every stage loads"),
{nodes}    ])
'''


def _node_source(stage: dict[str, Any], upstream: str | None, plan: dict[str, Any]) -> str:
    links = {link["configuration"]: link for link in plan["links"]}
    device = stage["device"]
    remap = None
    if stage["node"] == "edge_node":
        link = links[stage["output_configuration"]]
        split, ratio = int(link["split_point"]), float(link["ratio"])
        namespace = f'[chain, "/{device}"]'
        params = {"bundle": "BUNDLE", "split_point": repr(split), "ratio": repr(ratio),
                  "preload": f'["{split}:{ratio!r}"]'}
        remap = '[("image", LaunchConfiguration("image_topic"))]'
    elif stage["node"] == "stage_node":
        namespace = "chain"
        params = {"bundle": "BUNDLE", "upstream": f'"{upstream}"',
                  "output_namespace": f'"{device}"',
                  "input_configuration": f'"{stage["input_configuration"]}"',
                  "output_configuration": f'"{stage["output_configuration"]}"'}
    else:
        namespace = "chain"
        params = {"bundle": "BUNDLE", "edge_namespaces": f'["{upstream}"]'}
    lines = [
        "        Node(",
        '            package="split_infer",',
        f'            executable="{stage["node"]}",',
        f'            name="{device}",',
        f"            namespace={namespace},",
        "            parameters=[{",
        *(f'                "{key}": {value},' for key, value in params.items()),
        "            }],",
    ]
    if remap:
        lines.append(f"            remappings={remap},")
    lines += [f'            condition=on_stage("{device}"),',
              '            output="screen",', "        ),"]
    return "\n".join(lines) + "\n"


def write_launch_file(plan: dict[str, Any] | PipelinePlan, path: str | Path,
                      plan_path: str | Path | None = None) -> Path:
    """Write a ``launch_ros`` Python launch file that starts the chain of ``plan``."""
    if isinstance(plan, PipelinePlan):
        plan = _plain(plan.to_dict())
    path = Path(path)
    stages = plan["stages"]
    devices = [s["device"] for s in stages]
    nodes = "".join(_node_source(stage, devices[i - 1] if i else None, plan)
                    for i, stage in enumerate(stages))
    text = _LAUNCH_TEMPLATE.format(
        n=len(stages), model=plan["model"], plan_name=Path(plan_path or "plan.yaml").name,
        launch_name=path.name, first=devices[0], chain=" → ".join(devices),
        last_upstream=devices[-2], bundle_default=_bundle_default(plan["bundle"]),
        choices=", ".join(f'"{d}"' for d in devices), nodes=nodes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
