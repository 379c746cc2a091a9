"""The ``split-infer`` command.

Sub-commands (``split-infer COMMAND --help`` for each):

* ``models``            list the registered backbones and their split points
* ``codecs``            list the feature codecs and example specs
* ``profile MODEL``     per-split-point shapes, bytes, MACs and head/tail latency (torch vs ORT)
* ``bench codecs``      bytes per frame and encode/decode time of every codec on real features
* ``demo``              the main job: edge → codec → cloud over test images

Errors a user can cause (unknown model, missing data, bad spec ...) print one line and exit
with status 2; they never end in a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__

__all__ = ["main"]


def _ensure_ament_prefix() -> None:
    """rclpy from the ros-* wheels finds its packages through AMENT_PREFIX_PATH = the venv."""
    if "AMENT_PREFIX_PATH" not in os.environ:
        index = Path(sys.prefix) / "share" / "ament_index"
        if index.is_dir():
            os.environ["AMENT_PREFIX_PATH"] = sys.prefix


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def cmd_models(args: argparse.Namespace) -> int:
    from .models import get_model, get_model_spec, list_models

    for name in list_models(args.family):
        spec = get_model_spec(name)
        line = f"{name:26s} {spec.family:9s} input {'x'.join(map(str, spec.input_shape)):11s}"
        print(f"{line} {spec.description}")
        if args.verbose:
            points = get_model(name).split_points()
            print("    split points: " + ", ".join(f"{p.index}:{p.name}" for p in points))
    return 0


def cmd_codecs(args: argparse.Namespace) -> int:
    from .codecs import list_codecs

    listing = list_codecs()
    if isinstance(listing, dict):
        for key, values in listing.items():
            print(f"{key}:")
            for value in values:
                print(f"  {value}")
    else:
        for value in listing:
            print(value)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .models.profile import run_profile

    _set_threads(args.threads)
    input_shape = tuple(args.input_shape) if args.input_shape else None
    profile = run_profile(
        args.model,
        args.out,
        backends=tuple(args.backends),
        repeats=args.repeats,
        input_shape=input_shape,
        threads=args.threads,
    )
    print(profile.format_table())
    print(f"\nwrote {args.out}/")
    return 0


def cmd_bench_codecs(args: argparse.Namespace) -> int:
    from .benchmarks import bench_codecs

    _set_threads(args.threads)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from .runtime.offline import run_offline_demo

    _set_threads(args.threads)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="split-infer",
        description="Split CNN inference between a robot and a server over ROS 2.",
    )
    parser.add_argument("--version", action="version", version=f"split_infer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list registered backbones")
    p.add_argument("--family", choices=["cifar", "imagenet"])
    p.add_argument("-v", "--verbose", action="store_true", help="also list split points")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("codecs", help="list feature codecs and example specs")
    p.set_defaults(func=cmd_codecs)

    p = sub.add_parser("profile", help="profile every split point of a model")
    p.add_argument("model")
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: profiles/MODEL)"
    )
    p.add_argument(
        "--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"]
    )
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch and ONNX Runtime intra-op threads (default 1: steadier timings)")
    p.set_defaults(func=cmd_profile)

    bench = sub.add_parser("bench", help="benchmarks (write JSON and plots)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = bench_sub.add_parser("codecs", help="every codec on real features from a real split")
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="safetensors weights (default: the shipped CIFAR-10 weights)",
    )
    p.add_argument("--split", default="layer2.2", help="split point index or block name")
    p.add_argument("--codec", action="append", help="codec spec (repeatable; default: all)")
    p.add_argument("--calibration-images", type=int, default=512)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_bench_codecs)

    p = sub.add_parser("demo", help="run the main job: edge → codec → cloud over test images")
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--split", default="layer2.2")
    p.add_argument("--codec", default="quant:bits=4,per=channel+rans")
    p.add_argument("--images", type=int, default=500, help="number of CIFAR-10 test images")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="onnxruntime")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    _ensure_ament_prefix()
    args = build_parser().parse_args(argv)
    if getattr(args, "out", "unset") is None and args.command == "profile":
        args.out = Path("profiles") / args.model
    from .errors import EncodeError, FrameError
    from .training.data import DatasetError

    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError, DatasetError, FrameError, EncodeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"split-infer {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"split-infer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
