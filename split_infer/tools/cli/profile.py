"""``split-infer profile MODEL``: per split point shapes, bytes, MACs and latency."""

from __future__ import annotations

import argparse
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

    def main(self, args: argparse.Namespace) -> int:
        """Profile, print the table and write the outputs."""
        from split_infer.pipeline.profiling import run_profile

        require(args.repeats >= 1, "--repeats must be at least 1")
        require(args.threads >= 1, "--threads must be at least 1")
        if args.input_shape:
            require(all(d >= 1 for d in args.input_shape), "--input-shape values must be >= 1")
        out = args.out if args.out is not None else Path("profiles") / args.model
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
