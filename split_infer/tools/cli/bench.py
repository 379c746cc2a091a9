"""``split-infer bench NAME [ARGS...]``: the benchmarks of :mod:`split_infer.tools.bench`.

``codecs`` is parsed here; every other name runs
``split_infer.tools.bench.NAME.main(ARGS)`` with the remaining arguments passed through
untouched, so ``split-infer bench NAME --help`` shows that benchmark's own options.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap
from pathlib import Path

from split_infer.errors import UserError
from split_infer.tools.cli._api import PROG, VerbExtension
from split_infer.tools.cli._common import add_threads_argument, require, set_threads

__all__ = ["BENCHMARKS", "BenchVerb", "codecs_parser"]

#: benchmark name (a module of split_infer.tools.bench) → one line for the help
BENCHMARKS: dict[str, str] = {
    "codecs": "bytes per frame, encode/decode ms and bits per symbol of every codec on real "
              "features from a real split",
    "concealment": "top-1 against the fraction of the feature tensor lost, per concealment "
                   "method (thesis §3.2)",
    "estimate_step": "bandwidth-estimate step response over the real-link testbed (root)",
    "faults": "fault injection over the real-link testbed (root): stale outputs and recovery",
    "fuzz": "coverage-guided fuzzing of the wire-frame decoder and the image converter "
            "(atheris)",
    "rate_accuracy": "bytes per frame against top-1 on the CIFAR-10 test set",
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
        if name == "codecs":
            return _bench_codecs(codecs_parser().parse_args(args.args))
        module = importlib.import_module(f"split_infer.tools.bench.{name}")
        return module.main(list(args.args))


def codecs_parser() -> argparse.ArgumentParser:
    """The options of ``split-infer bench codecs``."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} bench codecs",
        description="Every codec on real features from a real split: bytes per frame, "
                    "encode/decode ms, bits per symbol against the empirical entropy. Writes "
                    "codecs.json and codecs.png to --out.")
    parser.add_argument("--model", default="resnet20_cifar",
                        help="registered model name (default: %(default)s)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="safetensors weights (default: the shipped CIFAR-10 weights)")
    parser.add_argument("--split", default="layer2.2",
                        help="split point index or block name (default: %(default)s)")
    parser.add_argument("--codec", action="append",
                        help="codec spec (repeatable; default: all)")
    parser.add_argument("--calibration-images", type=int, default=512, metavar="N",
                        help="training images the codecs are calibrated on "
                             "(default: %(default)s)")
    parser.add_argument("--frames", type=int, default=64, metavar="N",
                        help="test images whose features are encoded (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="output directory (default: %(default)s)")
    add_threads_argument(parser)
    return parser


def _bench_codecs(args: argparse.Namespace) -> int:
    from split_infer.tools.bench.codecs import bench_codecs

    require(args.calibration_images >= 1 and args.frames >= 1,
            "--calibration-images and --frames must be at least 1")
    set_threads(args.threads)
    rows, _ = bench_codecs(
        model_name=args.model,
        weights=args.weights,
        split_point=args.split,
        specs=args.codec or None,
        calibration_images=args.calibration_images,
        frames=args.frames,
        out_dir=args.out,
    )
    return 0 if rows else 1
