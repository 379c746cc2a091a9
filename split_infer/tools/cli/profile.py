"""``split-infer profile MODEL``: per split point shapes, bytes, MACs and latency."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import require, set_threads

__all__ = ["ProfileVerb"]

BACKENDS = ("torch", "onnxruntime")


class ProfileVerb(VerbExtension):
    """Profile every split point of a model with torch eager and ONNX Runtime side by side."""

    HELP = "profile every split point of a model"
    DESCRIPTION = ("Per split point: activation shape and float32 bytes, cumulative MACs, "
                   "head and tail latency with torch eager and ONNX Runtime side by side. "
                   "Writes profile JSON and a plot to --out.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The model, the backends, repeats, input shape and threads."""
        parser.add_argument("model", help="registered model name (see 'split-infer models')")
        parser.add_argument("--out", type=Path, default=None,
                            help="output directory (default: profiles/MODEL)")
        parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                            help="backends to time (default: both)")
        parser.add_argument("--repeats", type=int, default=20,
                            help="timed calls per part and backend; median and p90 are "
                                 "reported (default: %(default)s)")
        parser.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"),
                            help="input shape instead of the model's own, e.g. a smaller "
                                 "image for a quick run")
        parser.add_argument("--threads", type=int, default=1, metavar="N",
                            help="torch and ONNX Runtime intra-op threads "
                                 "(default 1: steadier timings)")
        parser.add_argument("--edge-cpu", type=float, default=None, metavar="FRACTION",
                            help="profile in a process limited to FRACTION cores (a cgroup "
                                 "quota, as 'split-infer testbed --edge-cpu'; root): a robot "
                                 "slower than this machine. Latencies are then the mean per "
                                 "call, throttled periods included")

    def main(self, args: argparse.Namespace) -> int:
        """Profile, print the table and write the outputs."""
        from split_infer.pipeline.profiling import run_profile

        require(args.repeats >= 1, "--repeats must be at least 1")
        require(args.threads >= 1, "--threads must be at least 1")
        if args.input_shape:
            require(all(d >= 1 for d in args.input_shape), "--input-shape values must be >= 1")
        out = args.out if args.out is not None else Path("profiles") / args.model
        if args.edge_cpu is not None:
            require(args.edge_cpu > 0, "--edge-cpu must be a positive number of cores")
            return _profile_under_budget(args, out)
        set_threads(args.threads)
        profile = run_profile(
            args.model,
            out,
            backends=tuple(args.backends),
            repeats=args.repeats,
            input_shape=tuple(args.input_shape) if args.input_shape else None,
            threads=args.threads,
        )
        print(profile.format_table())
        print(f"\nwrote {out}/")
        return 0


def _profile_under_budget(args: argparse.Namespace, out: Path) -> int:
    """The same profile in a child process limited to ``--edge-cpu`` cores; the profile
    records the budget, and its table and plot show the mean per call."""
    import sys

    from split_infer.pipeline.profiling import ModelProfile
    from split_infer.tools.testbed.cgroups import run_under_budget

    command = [sys.executable, "-m", "split_infer.tools.cli", "profile", args.model,
               "--out", str(out), "--backends", *args.backends, "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
    if args.input_shape:
        command += ["--input-shape", *map(str, args.input_shape)]
    result = run_under_budget(command, args.edge_cpu, stdout=subprocess.DEVNULL)
    require(result.returncode == 0,
            f"the profile under {args.edge_cpu:g} CPU failed (exit status {result.returncode})")
    path = out / f"{args.model}_profile.json"
    profile = ModelProfile.load(path)
    profile.machine["cpu_budget_cores"] = args.edge_cpu
    profile.save(path)
    profile.plot(out / f"{args.model}_profile.png")
    print(profile.format_table())
    print(f"\nwrote {out}/")
    return 0
