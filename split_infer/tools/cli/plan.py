"""``split-infer plan [BUNDLE]``: the latency and effective-accuracy analysis of a bundle,
or with ``--devices`` an n-stage chain written as a plan and its launch file."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from split_infer.defaults import DEFAULT_BUNDLE
from split_infer.errors import UserError
from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import bundle_directory, require

__all__ = ["PlanVerb"]


class PlanVerb(VerbExtension):
    """Plan a bundle over bandwidths (two devices), or partition it over a chain."""

    HELP = "latency and effective-accuracy analysis of a bundle"
    DESCRIPTION = ("The thesis's latency model (best strategy per bandwidth region, crossovers), "
                   "Hu & Krishnamachari's effective-accuracy thresholds and the configuration "
                   "chosen at each --bandwidth; writes plan.json and figures. With --devices: "
                   "an n-stage chain (Hu & K eq. (2)) written as a plan YAML, a launch file "
                   "that starts it and a stage-rate plot.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The bundle, the link and camera model, and the chain options."""
        parser.add_argument("bundle", type=bundle_directory, nargs="?", default=DEFAULT_BUNDLE,
                            help="bundle directory, or a packed one (assembled on first "
                                 "use; default: the shipped bundle)")
        parser.add_argument("--bandwidth", type=float, nargs="+", default=[0.1, 1.0, 10.0],
                            metavar="MBPS", help="bandwidths to plan for, Mbit/s "
                                                 "(default: 0.1 1 10)")
        parser.add_argument("--rtt-ms", type=float, default=20.0,
                            help="round-trip time of the link, ms (default: %(default)g)")
        parser.add_argument("--frame-rate", type=float, default=30.0, metavar="HZ",
                            help="camera rate T_gen, Hz (default: %(default)g)")
        parser.add_argument("--deadline-ms", type=float, default=0.0,
                            help="latency deadline, ms (0: none)")
        parser.add_argument("--edge-time-scale", type=float, default=1.0, metavar="FACTOR",
                            help="multiply the profiled edge times (a robot slower than the "
                                 "machine that profiled the bundle)")
        parser.add_argument("--cloud-time-scale", type=float, default=1.0, metavar="FACTOR",
                            help="multiply the profiled cloud times")
        parser.add_argument("--edge-cpu", type=float, default=None, metavar="FRACTION",
                            help="measure the edge time scale instead: time the bundle's edge "
                                 "parts here in a process limited to FRACTION cores (a cgroup "
                                 "quota, as 'split-infer testbed --edge-cpu'; root) against its "
                                 "profiled edge times; every configuration's time per "
                                 "frame (the scheduler's edge_timing.json) starts from a "
                                 "raw camera frame of --camera-size")
        parser.add_argument("--camera-size", default="640x480", metavar="WIDTHxHEIGHT",
                            help="with --edge-cpu: the camera frame the robot reads and "
                                 "preprocesses at every frame (default: %(default)s)")
        parser.add_argument("--devices", action="append", metavar="NAME=GMACS,...",
                            help="plan an n-stage chain instead: devices in chain order with "
                                 "their speed in GMAC/s, e.g. robot=2,pi=2.5,server=40 "
                                 "(Hu & K eq. (2))")
        parser.add_argument("--link-mbps", type=float, nargs="+", default=None, metavar="MBPS",
                            help="with --devices: bandwidth of every link, or one per link "
                                 "(default 10)")
        parser.add_argument("--max-link-loss", type=float, default=1.0, metavar="POINTS",
                            help="with --devices: top-1 points a link's codec may cost "
                                 "(default 1)")
        parser.add_argument("--out", type=Path, default=Path("out/plan"),
                            help="output directory; with --devices a plan .yaml (its launch "
                                 "file and plot are written next to it) (default: %(default)s)")

    def main(self, args: argparse.Namespace) -> int:
        """Run the two-device analysis, or the chain planner with ``--devices``."""
        if args.devices:
            require(args.edge_cpu is None, "--edge-cpu applies to the two-device plan, not "
                                           "to --devices")
            return _plan_pipeline(args)
        from split_infer.tools.plan.report import plan_bundle

        require(all(b > 0 for b in args.bandwidth),
                "--bandwidth values must be positive (Mbit/s)")
        for flag, value, low_ok in (("--rtt-ms", args.rtt_ms, True),
                                    ("--frame-rate", args.frame_rate, False),
                                    ("--deadline-ms", args.deadline_ms, True),
                                    ("--edge-time-scale", args.edge_time_scale, False),
                                    ("--cloud-time-scale", args.cloud_time_scale, False)):
            require(math.isfinite(value) and (value >= 0 if low_ok else value > 0),
                    f"{flag} must be {'>= 0' if low_ok else 'positive'}, got {value:g}")
        edge_time_scale = args.edge_time_scale
        if args.edge_cpu is not None:
            require(math.isfinite(args.edge_cpu) and args.edge_cpu > 0,
                    "--edge-cpu must be a positive number of cores")
            require(args.edge_time_scale == 1.0,
                    "--edge-cpu measures the edge time scale: leave out --edge-time-scale")
            edge_time_scale = _measured_edge_scale(args)
        report = plan_bundle(
            args.bundle,
            bandwidths_bps=tuple(b * 1e6 for b in args.bandwidth),
            rtt_s=args.rtt_ms / 1e3,
            frame_rate_hz=args.frame_rate,
            deadline_s=args.deadline_ms / 1e3 if args.deadline_ms else None,
            edge_time_scale=edge_time_scale,
            cloud_time_scale=args.cloud_time_scale,
            out_dir=args.out,
        )
        print(report.format_text())
        return 0


def _measured_edge_scale(args: argparse.Namespace) -> float:
    """The bundle's edge parts timed under ``--edge-cpu`` cores against its profiled edge
    times (:mod:`split_infer.tools.plan.edge_timing`); writes ``edge_timing.json``."""
    from split_infer.bundle import Bundle
    from split_infer.tools.plan.edge_timing import parse_camera_size, write_robot_timing

    try:
        camera = parse_camera_size(args.camera_size)
    except ValueError as exc:
        raise UserError(f"--camera-size: {exc}") from None
    timing = write_robot_timing(Bundle.load(args.bundle), args.edge_cpu, args.out, camera)
    ratios = timing.ratios
    print(f"edge time scale measured under {args.edge_cpu:g} CPU: {timing.edge_time_scale:.2f}× "
          f"the bundle's profile (median of {len(ratios)}, {min(ratios.values()):.2f}–"
          f"{max(ratios.values()):.2f}); a {args.camera_size} camera frame costs "
          f"{timing.camera_frame_ms:.1f} ms of it per frame ({timing.path})\n")
    return timing.edge_time_scale


def _plan_pipeline(args: argparse.Namespace) -> int:
    """``plan --devices``: Hu & K's partition over a chain, saved as a plan + launch file."""
    from split_infer.tools.plan.chain import parse_devices, plan_pipeline, write_launch_file

    devices = parse_devices(args.devices)
    links = args.link_mbps or [10.0]
    require(all(b > 0 for b in links), "--link-mbps values must be positive (Mbit/s)")
    plan = plan_pipeline(args.bundle, devices,
                         links[0] * 1e6 if len(links) == 1 else [b * 1e6 for b in links],
                         max_link_loss_points=args.max_link_loss)
    out = args.out if args.out.suffix in (".yaml", ".yml") else args.out / "plan.yaml"
    plan.save(out)
    launch = write_launch_file(plan, out.with_name(out.stem + ".launch.py"), out)
    figure = plan.plot(out.with_suffix(".png"))
    print(plan.format_text())
    print(f"\nwrote {out}, {launch} (ros2 launch {launch.name} [stage:=DEVICE]) and {figure}")
    return 0
