"""Every codec on real features from a real split: bytes per frame, encode/decode ms and
bits per symbol against the empirical entropy.

::

    split-infer bench codecs [--model M] [--split layer2.2] [--codec SPEC ...]
        [--calibration-images 512] [--frames 64] [--out bench/results]

The model's head computes the features of ``--calibration-images`` training images (the
codecs are calibrated on them) and of ``--frames`` test images, which every codec packs into
real wire frames and unpacks again (``codec_table.benchmark_codecs``). Writes
``codecs.json`` and ``codecs.png`` to ``--out`` and prints the table; timings are reported,
never asserted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from split_infer.defaults import resolve_weights
from split_infer.models import get_model, split
from split_infer.tools.bench import common
from split_infer.training.datasets import load_dataset
from split_infer.training.features import head_features

__all__ = ["bench_codecs", "build_parser", "format_codec_table", "main", "plot_codec_bench"]


def format_codec_table(rows: list[dict]) -> str:
    """One aligned line per codec row of :func:`bench_codecs` (errors as "not applicable")."""
    header = (
        f"{'codec':50s} {'bytes/frame':>11s} {'ratio':>7s} {'enc ms':>7s} {'dec ms':>7s} "
        f"{'bits/sym':>8s} {'H (bits)':>8s} {'mse':>9s}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['spec'][:50]:50s} not applicable: {r['error']}")
            continue
        entropy = r.get("empirical_entropy_bits")
        lines.append(
            f"{r['spec'][:50]:50s} {r['bytes_per_frame']:11.1f} {r['ratio']:7.1f} "
            f"{r['encode_ms']:7.3f} {r['decode_ms']:7.3f} {r['bits_per_symbol']:8.3f} "
            f"{'-' if entropy is None else f'{entropy:.3f}':>8s} {r['mse']:9.2e}"
        )
    return "\n".join(lines)


def plot_codec_bench(rows: list[dict], path: Path, title: str) -> None:
    """Rate against distortion, and encode/decode time per codec, side by side."""
    plt = common.pyplot()
    rows = [r for r in rows if "error" not in r]
    fig, (ax_rate, ax_time) = plt.subplots(1, 2, figsize=(13, 5.5))
    for r in rows:
        ax_rate.scatter(r["bytes_per_frame"], max(r["mse"], 1e-12), s=18)
        ax_rate.annotate(r["spec"], (r["bytes_per_frame"], max(r["mse"], 1e-12)), fontsize=6)
    ax_rate.set(
        xscale="log",
        yscale="log",
        xlabel="bytes per wire frame",
        ylabel="feature MSE",
        title="rate vs distortion",
    )
    ax_rate.grid(alpha=0.3)
    order = sorted(rows, key=lambda r: r["bytes_per_frame"])
    y = np.arange(len(order))
    ax_time.barh(y - 0.2, [r["encode_ms"] for r in order], 0.4, label="encode")
    ax_time.barh(y + 0.2, [r["decode_ms"] for r in order], 0.4, label="decode")
    ax_time.set_yticks(y, [r["spec"] for r in order], fontsize=6)
    ax_time.set(xlabel="ms per frame (median)", title="codec time")
    ax_time.legend()
    fig.suptitle(title)
    fig.tight_layout()
    common.save_figure(fig, path)


def bench_codecs(
    model_name: str,
    weights: str | Path | None,
    split_point: str | int,
    specs: list[str] | None,
    calibration_images: int,
    frames: int,
    out_dir: str | Path,
    dataset: str = "cifar10",
) -> tuple[list[dict], Path]:
    """Every codec on real features of ``model_name`` at ``split_point``; writes JSON+PNG."""
    from split_infer.tools.bench.codec_table import DEFAULT_BENCH_SPECS, benchmark_codecs

    started = common.timestamp()
    model = get_model(model_name, weights=resolve_weights(model_name, weights))
    point = model.split_point(split_point)
    head, _ = split(model, point)
    calibration = head_features(head, load_dataset(dataset, "train").subset(calibration_images))
    features = head_features(head, load_dataset(dataset, "test").subset(frames, seed=1))
    rows = benchmark_codecs(calibration, features, specs or list(DEFAULT_BENCH_SPECS))
    print(
        f"{model_name} split {point.index}:{point.name}, features {features.shape[1:]} "
        f"({features[0].nbytes} B float32), {len(features)} frames"
    )
    print(format_codec_table(rows))
    out = Path(out_dir)
    result = {
        "started": started,
        "model": model_name,
        "split_point": {"index": point.index, "name": point.name},
        "feature_shape": list(features.shape[1:]),
        "calibration_images": calibration_images,
        "frames": len(features),
        "machine": common.machine_info(),
        "rows": rows,
    }
    json_path = common.write_json(out / "codecs.json", result)
    plot_codec_bench(
        rows,
        out / "codecs.png",
        f"{model_name} @ {point.name}, features {tuple(features.shape[1:])}",
    )
    print(f"wrote {json_path} and {out / 'codecs.png'}")
    return rows, json_path


def build_parser() -> argparse.ArgumentParser:
    """The options of ``split-infer bench codecs``."""
    parser = common.bench_parser("codecs", __doc__)
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
    common.add_out_argument(parser, what="codecs.json and codecs.png")
    common.add_threads_argument(parser, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench codecs [ARGS]``; 0 when at least one codec was measured."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.calibration_images < 1 or args.frames < 1:
        parser.error("--calibration-images and --frames must be at least 1")
    common.limit_threads(args.threads)
    rows, _ = bench_codecs(model_name=args.model, weights=args.weights, split_point=args.split,
                           specs=args.codec or None, calibration_images=args.calibration_images,
                           frames=args.frames, out_dir=args.out)
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
