"""``split-infer demo``: the main job, the whole ROS graph in one process (or ``--offline``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from split_infer.errors import UserError
from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import (
    add_threads_argument,
    bundle_directory,
    graph_arguments,
    require,
    set_threads,
)

__all__ = ["DemoVerb"]


class DemoVerb(VerbExtension):
    """Run the graph over an emulated, trace-shaped link, or the offline pipeline."""

    HELP = "run the main job: the whole ROS graph in one process"
    DESCRIPTION = ("Run the main job: camera bag → edge node → emulated link following a "
                   "bandwidth trace → cloud node, with the bandwidth monitor and the scheduler "
                   "switching split point and ratio while frames flow, all in one process. "
                   "Writes report.json and timeline.png. --offline runs edge → codec → cloud "
                   "without ROS on test images instead.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The graph arguments, threads, and the ``--offline`` group."""
        from split_infer.tools.demo.scenarios import SCENARIOS

        graph_arguments(parser, duration_s=None, out="out/demo", scenario="--scenario")
        parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="imagenet",
                            help="what runs: " + "; ".join(
                                f"{name}: {s.summary}" for name, s in SCENARIOS.items())
                            + " (default: %(default)s)")
        parser.add_argument("--robot-slowdown", type=float, default=None, metavar="FACTOR",
                            help="emulate a robot this many times slower than this machine: "
                                 "every frame's edge compute is stretched, and the scheduler "
                                 "plans with each configuration's time per frame measured at "
                                 "start × FACTOR (default: the scenario's)")
        parser.add_argument("--no-probing", dest="probing", action="store_false",
                            help="no probe trains: the monitor then sees only what the frames "
                                 "use, a lower bound whenever they do not fill the link")
        add_threads_argument(parser)
        offline = parser.add_argument_group(
            "--offline: edge → codec → cloud without ROS, on test images")
        offline.add_argument("--offline", action="store_true",
                             help="run the per-frame pipeline in-process without ROS, next to "
                                  "the unsplit model on the same images")
        offline.add_argument("--model", default="resnet20_cifar",
                             help="registered model name (default: %(default)s)")
        offline.add_argument("--weights", type=Path, default=None,
                             help="safetensors weights (default: the shipped CIFAR-10 weights)")
        offline.add_argument("--split", default="layer2.2",
                             help="split point index or block name (default: %(default)s)")
        offline.add_argument("--codec", default="quant:bits=4,per=channel+rans",
                             help="codec spec (see 'split-infer codecs'; default: %(default)s)")
        offline.add_argument("--images", type=int, default=500, metavar="N",
                             help="CIFAR-10 test images (default: %(default)s)")
        offline.add_argument("--backend", choices=["torch", "onnxruntime"],
                             default="onnxruntime",
                             help="what runs head, tail and the unsplit model "
                                  "(default: %(default)s)")

    def main(self, args: argparse.Namespace) -> int:
        """Run the offline pipeline or the ROS graph; print the summary."""
        set_threads(args.threads)
        if args.offline:
            return _offline(args)
        from split_infer.defaults import find_trace
        from split_infer.tools.demo.graph import DemoSettings, run_demo
        from split_infer.tools.demo.scenarios import SCENARIOS

        scenario = SCENARIOS[args.scenario]
        duration = scenario.duration_s if args.duration is None else args.duration
        slowdown = (scenario.robot_slowdown if args.robot_slowdown is None
                    else args.robot_slowdown)
        require(duration > 0, "--duration must be positive")
        require(math.isfinite(slowdown) and slowdown >= 1,
                "--robot-slowdown must be >= 1 (1: the robot runs as fast as this machine)")
        trace = find_trace(args.trace or scenario.trace)  # before assembling a bundle
        bundle = args.bundle
        if bundle is None:
            try:
                bundle = bundle_directory(str(scenario.bundle))
            except argparse.ArgumentTypeError as exc:
                raise UserError(f"the {args.scenario} scenario's bundle: {exc} (scripts/"
                                "setup.sh installs what it needs; --scenario cifar runs "
                                "without it)") from None
        settings = DemoSettings(bundle=bundle, bag=args.bag or scenario.bag,
                                trace=trace,
                                duration_s=duration, out_dir=args.out,
                                objective=args.objective, frame_rate=args.frame_rate,
                                probing=args.probing, robot_slowdown=slowdown,
                                edge_only=scenario.edge_only)
        print(f"split-infer demo ({args.scenario}): {settings.bundle.name} bundle, bag "
              f"{settings.bag.name}, trace {settings.trace.name}, {settings.duration_s:g} s"
              + (f", robot {slowdown:g}x slower" if slowdown != 1 else ""))
        report = run_demo(settings)
        print(json.dumps(report["summary"], indent=2))
        print(f"wrote {settings.out_dir / 'report.json'} and "
              f"{settings.out_dir / 'timeline.png'}")
        return 0


def _offline(args: argparse.Namespace) -> int:
    from split_infer.tools.demo.offline import run_offline_demo

    require(args.images >= 1, "--images must be at least 1")
    report = run_offline_demo(
        model_name=args.model,
        weights=args.weights,
        split_point=args.split,
        codec_spec=args.codec,
        images=args.images,
        backend=args.backend,
        out_dir=args.out,
    )
    print(json.dumps(report["summary"], indent=2))
    return 0
