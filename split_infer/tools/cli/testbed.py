"""``split-infer testbed``: the graph over a real tc-shaped link between two namespaces."""

from __future__ import annotations

import argparse
import json

from split_infer.errors import UserError
from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import control_side_argument, graph_arguments, require

__all__ = ["TestbedVerb"]


class TestbedVerb(VerbExtension):
    """Edge and cloud sides as separate processes over DDS/UDP through a shaped veth pair."""

    __test__ = False  # not a pytest test class, despite the name

    HELP = "the graph over a real tc-shaped link between two network namespaces (root)"
    DESCRIPTION = ("Run the graph over a real link (needs root): two network namespaces, a "
                   "veth pair shaped with tc following a trace, every node a process of its "
                   "own over DDS/UDP, the edge side, the cloud side and the harness (camera, "
                   "recorder) on disjoint CPUs, the edge optionally under a CPU budget. Writes "
                   "report.json (with each process's CPU use and the run's physical bound) and "
                   "timeline.png.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The graph arguments plus strategy, start-up choice, jitter and clean-up."""
        graph_arguments(parser, duration_s=30.0, out="out/testbed")
        parser.add_argument("--strategy", default="adaptive",
                            help="'adaptive' (monitor + scheduler), a fixed 'split:ratio', "
                                 "'cloud_only' (JPEG camera frames), 'cloud_only_crop' (JPEG "
                                 "of the model's input crop) or 'edge_only' (whole model on "
                                 "the robot) (default: %(default)s)")
        parser.add_argument("--scheduler-edge-only", action="store_true",
                            help="adaptive: the scheduler may choose edge-only (the whole "
                                 "model on the robot)")
        control_side_argument(parser)
        parser.add_argument("--fallback", choices=("drop", "edge_only"), default="drop",
                            help="split strategies: what the edge does with a frame its link "
                                 "or server cannot take in time: drop it, or classify it with "
                                 "the whole model on the robot (default: %(default)s)")
        parser.add_argument("--edge-timing", default="", metavar="FILE",
                            help="adaptive: the robot's measured edge times, the "
                                 "edge_timing.json 'split-infer plan --edge-cpu' writes "
                                 "(default: the bundle's profile)")
        parser.add_argument("--initial", default="",
                            help="adaptive: the edge's first 'split:ratio' (default: the edge "
                                 "node's start-up choice, the best effective accuracy on a link "
                                 "carrying just the smallest frames)")
        parser.add_argument("--jitter-ms", type=float, default=0.0,
                            help="± uniform jitter added to the delay of trace segments that "
                                 "have one, ms (default: 0)")
        parser.add_argument("--auth", action="store_true",
                            help="sign every frame on the edge and verify it on the cloud "
                                 "(HMAC, a key made for this run)")
        parser.add_argument("--probing", action="store_true",
                            help="split strategies: run the link prober (edge side) and the "
                                 "probe echo (cloud side), so the monitor measures the link's "
                                 "capacity even when the frames do not fill it")
        parser.add_argument("--edge-cpu", type=float, default=None, metavar="FRACTION",
                            help="CPU budget of the edge side's processes, in cores (e.g. "
                                 "0.25: a robot four times slower than one server core); "
                                 "needs cgroups (default: no budget)")
        parser.add_argument("--edge-cpus", default="", metavar="LIST",
                            help="CPUs of the edge side's product processes, e.g. '0' "
                                 "(default: the first CPU)")
        parser.add_argument("--cloud-cpus", default="", metavar="LIST",
                            help="CPUs of the cloud side, disjoint from the edge's "
                                 "(default: the second CPU)")
        parser.add_argument("--harness-cpus", default="", metavar="LIST",
                            help="CPUs of the camera (bag player), the recorder and the packet "
                                 "delayer, never the edge's (default: the CPUs after the "
                                 "second, or the cloud's with two CPUs)")
        parser.add_argument("--cleanup", action="store_true",
                            help="only remove namespaces and cgroups left by killed testbed "
                                 "runs")

    def main(self, args: argparse.Namespace) -> int:
        """Check for root, then clean up or run one strategy over one trace."""
        from split_infer.tools.testbed import cgroups
        from split_infer.tools.testbed.netns import netns_problem, remove_stale

        problem = netns_problem()
        if problem:
            # Not root, or no ip/tc: the user's to fix, so one line rather than a traceback.
            raise UserError(problem)
        if args.cleanup:
            removed = remove_stale()
            groups = cgroups.remove_stale()
            print(f"removed {len(removed)} stale testbed namespaces" +
                  (f": {' '.join(removed)}" if removed else "") +
                  f" and {len(groups)} stale cgroups" +
                  (f": {' '.join(groups)}" if groups else ""))
            return 0
        from split_infer.defaults import find_trace
        from split_infer.tools.testbed.runner import TestbedSettings, run_testbed

        require(args.duration > 0, "--duration must be positive")
        require(args.jitter_ms >= 0, "--jitter-ms must be >= 0")
        require(args.edge_cpu is None or args.edge_cpu > 0,
                "--edge-cpu must be a positive number of cores")
        settings = TestbedSettings(bundle=args.bundle, bag=args.bag,
                                   trace=find_trace(args.trace), duration_s=args.duration,
                                   out_dir=args.out, strategy=args.strategy,
                                   initial=args.initial, objective=args.objective,
                                   frame_rate=args.frame_rate, jitter_ms=args.jitter_ms,
                                   auth=args.auth, probing=args.probing,
                                   edge_cpu=args.edge_cpu,
                                   scheduler_edge_only=args.scheduler_edge_only,
                                   edge_timing=args.edge_timing,
                                   control_side=args.control_side, fallback=args.fallback,
                                   edge_cpus=args.edge_cpus, cloud_cpus=args.cloud_cpus,
                                   harness_cpus=args.harness_cpus)
        # A placement that cannot be had is a CgroupError, a UserError: one line.
        report = run_testbed(settings)
        print(json.dumps(report["summary"], indent=2))
        placement = report["placement"]
        if not placement.get("pinned"):
            print(f"note: processes were not pinned to CPUs: {placement.get('reason')}")
        if report["link"]["not_applied"]:
            print(f"note: this kernel could not apply {report['link']['not_applied']} from the "
                  f"trace (capabilities {report['link']['capabilities']})")
        print(f"wrote {settings.out_dir / 'report.json'} and "
              f"{settings.out_dir / 'timeline.png'}")
        return 0
