"""``split-infer bench NAME [ARGS...]``: the benchmarks of :mod:`split_infer.tools.bench`.

Every name runs ``split_infer.tools.bench.NAME.main(ARGS)`` with the remaining arguments
passed through untouched, so ``split-infer bench NAME --help`` shows that benchmark's own
options.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap

from split_infer.errors import UserError
from split_infer.tools.cli._api import PROG, VerbExtension

__all__ = ["BENCHMARKS", "BenchVerb"]

#: benchmark name (a module of split_infer.tools.bench) → one line for the help
BENCHMARKS: dict[str, str] = {
    "auth_cost": "bytes and sign/verify microseconds per frame of frame authentication",
    "cpu": "CPU per frame of the edge and cloud nodes by component, camera-size frames, idle "
           "CPU and the no-work graph",
    "codecs": "bytes per frame, encode/decode ms and bits per symbol of every codec on real "
              "features from a real split",
    "concealment": "top-1 against the fraction of the feature tensor lost, per concealment "
                   "method (thesis §3.2)",
    "estimate_step": "bandwidth-estimate step response over the real-link testbed (root)",
    "faults": "fault injection over the real-link testbed (root): stale outputs and recovery",
    "fuzz": "coverage-guided fuzzing of the wire-frame decoder and the image converter "
            "(atheris)",
    "rate_accuracy": "bytes per frame against top-1 on the CIFAR-10 test set",
    "rate_accuracy_imagenet": "bytes per frame against top-1 and agreement with the unsplit "
                              "model at 224 px (ImageNet sample), with the cloud-only JPEGs",
    "receiver_fuzz": "stateful fuzzing of the receiving half: genuine frames keep being "
                     "served whatever an unauthenticated publisher interleaves",
    "ros_graph": "edge and cloud nodes in one process over direct DDS (no emulated link)",
    "soak": "the whole demo graph at 30 fps for a long time, watching for leaks and drift",
    "testbed_e2e": "every strategy on every trace over the real-link testbed (root)",
}


class BenchVerb(VerbExtension):
    """Dispatch to one benchmark; each writes JSON and plots and never asserts timings."""

    HELP = "benchmarks (write JSON and plots)"
    DESCRIPTION = ("Run a benchmark. The arguments after NAME go to the benchmark unchanged: "
                   f"'{PROG} bench NAME --help' lists its options.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``NAME`` and the arguments passed through; the names are listed in the epilog."""
        # The epilog is a table: keep its line breaks (and so wrap it, and the description,
        # here).
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.description = textwrap.fill(self.DESCRIPTION, 79)
        width = max(map(len, BENCHMARKS))
        parser.epilog = "benchmarks:\n" + "\n".join(
            textwrap.fill(text, 79, initial_indent=f"  {name:{width}s}  ",
                          subsequent_indent=" " * (width + 4))
            for name, text in BENCHMARKS.items())
        parser.add_argument("name", metavar="NAME",
                            help=f"benchmark to run: {', '.join(BENCHMARKS)}")
        parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                            help="arguments for the benchmark, passed through unchanged")

    def main(self, args: argparse.Namespace) -> int:
        """Run the named benchmark with the remaining arguments."""
        name = args.name.replace("-", "_")
        if name not in BENCHMARKS:
            raise UserError(f"unknown benchmark {args.name!r}; choose one of "
                            f"{', '.join(BENCHMARKS)}")
        module = importlib.import_module(f"split_infer.tools.bench.{name}")
        return module.main(list(args.args))
