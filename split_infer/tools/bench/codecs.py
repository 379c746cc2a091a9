"""Benchmarks behind ``split-infer bench``: they write JSON and PNG, never assert timings."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from split_infer.defaults import resolve_weights
from split_infer.models import get_model, split
from split_infer.training.datasets import load_dataset
from split_infer.training.features import head_features

__all__ = ["bench_codecs", "format_codec_table", "plot_codec_bench"]


def format_codec_table(rows: list[dict]) -> str:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": model_name,
        "split_point": {"index": point.index, "name": point.name},
        "feature_shape": list(features.shape[1:]),
        "calibration_images": calibration_images,
        "frames": len(features),
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "platform": platform.platform(),
        },
        "rows": rows,
    }
    json_path = out / "codecs.json"
    json_path.write_text(json.dumps(result, indent=2))
    plot_codec_bench(
        rows,
        out / "codecs.png",
        f"{model_name} @ {point.name}, features {tuple(features.shape[1:])}",
    )
    print(f"wrote {json_path} and {out / 'codecs.png'}")
    return rows, json_path
