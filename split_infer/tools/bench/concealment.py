"""Error concealment of missing feature data (thesis §3.2, Fig. 3.3): top-1 against the
fraction of the split-point tensor that never arrived, per concealment method.

::

    split-infer bench concealment [--bundle B] [--split layer2.2 ...] [--images N]
        [--out bench/results/concealment]

The bundle's backbone (its safetensors weights, cut at the split and run with ONNX Runtime)
computes the float32 features of the CIFAR-10 test images. Per frame, a fraction ``f`` of the
tensor is marked missing with one of three loss patterns:

* ``channels`` -- whole channels (round(f·C) of them; the fractional part is drawn per frame so
  that the expected fraction is f, e.g. f = 0.01 of 32 channels loses one channel in 32% of
  the frames);
* ``elements`` -- round(f·N) elements at random positions;
* ``segments`` -- packets: the flattened tensor (C, H, W order) is cut into consecutive
  ``--segment`` elements (default 350, ≈ 1400 B of float32, one MTU's payload) and whole
  packets are lost (round(f·packets), drawn like channels).

The missing positions are filled by

1. ``zeros``;
2. ``channel_mean`` -- the mean of that channel's *received* elements in the same frame;
   a channel with nothing received falls back to the dataset mean (so under whole-channel
   loss this equals 3 by construction);
3. ``dataset_mean`` -- the per-channel mean over training-set features (mean over images and
   positions, 2048 training images by default), the same statistic the bundle's ``fill``
   holds for rateless configurations (there of the learned code, here of the backbone's
   features).

Every (pattern, fraction) draws one set of masks, shared by the three methods, so they are
compared on the same losses. Fraction 0 goes through the same masking path (an empty mask).
Writes ``concealment.json`` and ``concealment.png`` to ``--out``; ``--threads`` (default 1)
pins the process to that many CPUs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from split_infer.tools.bench import common
from split_infer.tools.bench.rate_accuracy import Part, backbone_parts, batches, head_features

if TYPE_CHECKING:
    from split_infer.data import ArrayDataset

FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
PATTERNS = ("channels", "elements", "segments")
METHODS = ("zeros", "channel_mean", "dataset_mean")
DEFAULT_SEGMENT = 350  # float32 elements per lost packet: 1400 B, about one MTU of payload


def _stochastic_round(value: float, rng: np.random.Generator) -> int:
    base = int(np.floor(value))
    return base + int(rng.random() < value - base)


def loss_masks(count: int, shape: Sequence[int], fraction: float, pattern: str,
               rng: np.random.Generator, segment: int = DEFAULT_SEGMENT) -> np.ndarray:
    """Boolean ``(count, *shape)`` masks, True where data is missing."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    c = shape[0]
    n = int(np.prod(shape))
    masks = np.zeros((count, n), bool)
    for mask in masks:
        if pattern == "elements":
            lost = rng.choice(n, round(fraction * n), replace=False)
            mask[lost] = True
        elif pattern == "channels":
            per_channel = n // c
            for channel in rng.choice(c, _stochastic_round(fraction * c, rng), replace=False):
                mask[channel * per_channel:(channel + 1) * per_channel] = True
        elif pattern == "segments":
            if segment < 1:
                raise ValueError(f"segment must be >= 1, got {segment}")
            packets = -(-n // segment)
            # round(f · packets) packets: a packet is picked uniformly, so the expected
            # missing fraction is f even with a shorter last packet.
            lost = rng.choice(packets, _stochastic_round(fraction * packets, rng),
                              replace=False)
            for packet in lost:
                mask[packet * segment:(packet + 1) * segment] = True
        else:
            raise ValueError(f"unknown loss pattern {pattern!r}; choose one of {PATTERNS}")
    return masks.reshape(count, *shape)


def dataset_channel_mean(features: np.ndarray) -> np.ndarray:
    """Per-channel mean over images and positions of ``(N, C, H, W)`` training features
    (as the rateless exporter computes the bundle's fill)."""
    return features.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)


def conceal(features: np.ndarray, missing: np.ndarray, method: str,
            dataset_mean: np.ndarray) -> np.ndarray:
    """``features`` ``(B, C, H, W)`` with the ``missing`` positions filled by ``method``;
    a new array, received values untouched."""
    if method == "zeros":
        fill = np.zeros(features.shape[:2], np.float32)
    elif method == "dataset_mean":
        fill = np.broadcast_to(dataset_mean[None], features.shape[:2])
    elif method == "channel_mean":
        received = ~missing
        counts = received.sum(axis=(2, 3))
        sums = np.where(received, features, 0.0).sum(axis=(2, 3), dtype=np.float64)
        fill = np.where(counts > 0, sums / np.maximum(counts, 1), dataset_mean[None])
    else:
        raise ValueError(f"unknown concealment method {method!r}; choose one of {METHODS}")
    return np.where(missing, fill[:, :, None, None].astype(np.float32), features)


def measure_concealment(head: Part, tail: Part, dataset: ArrayDataset,
                        dataset_mean: np.ndarray, *,
                        fractions: Sequence[float] = FRACTIONS,
                        patterns: Sequence[str] = PATTERNS, methods: Sequence[str] = METHODS,
                        segment: int = DEFAULT_SEGMENT, seed: int = 0, batch_size: int = 200,
                        progress: bool = True) -> dict:
    """Top-1 per (pattern, fraction, method) on ``dataset``.

    Returns ``{"reference": {...}, "rows": [...]}``: the reference is the unconcealed
    tail(head(x)); each row has pattern, fraction, method, missing_fraction (mean over
    frames), correct, frames, accuracy and ``agree`` (fraction of predictions equal to the
    reference's)."""
    combos = [(p, f) for p in patterns for f in fractions]
    tallies = {(p, f, m): {"correct": 0, "agree": 0} for p, f in combos for m in methods}
    missing_total = {(p, f): 0 for p, f in combos}
    reference = {"correct": 0, "predictions": []}
    bar = tqdm(total=len(dataset) * len(combos) * len(methods), unit="frame",
               desc="concealment", disable=not progress, leave=False)
    for start, x in batches(dataset, batch_size):
        labels = dataset.labels[start:start + len(x)]
        features = head(x)
        base = tail(features).argmax(1)
        reference["correct"] += int((base == labels).sum())
        reference["predictions"].append(base)
        for ci, (pattern, fraction) in enumerate(combos):
            # One generator per (combination, batch): independent of the methods and of
            # which other combinations run.
            rng = np.random.default_rng([seed, ci, start])
            missing = loss_masks(len(features), features.shape[1:], fraction, pattern, rng,
                                 segment)
            missing_total[pattern, fraction] += int(missing.sum())
            for method in methods:
                predictions = tail(conceal(features, missing, method, dataset_mean)).argmax(1)
                tally = tallies[pattern, fraction, method]
                tally["correct"] += int((predictions == labels).sum())
                tally["agree"] += int((predictions == base).sum())
                bar.update(len(features))
    bar.close()
    frames = len(dataset)
    elements = frames * int(np.prod(features.shape[1:]))
    rows = [{"pattern": p, "fraction": f, "method": m,
             "missing_fraction": missing_total[p, f] / elements,
             "frames": frames, "correct": t["correct"], "accuracy": t["correct"] / frames,
             "agree": t["agree"] / frames}
            for (p, f, m), t in tallies.items()]
    return {"reference": {"frames": frames, "correct": reference["correct"],
                          "accuracy": reference["correct"] / frames,
                          "predictions": np.concatenate(reference["predictions"]).tolist()},
            "rows": rows}


def format_table(result: dict) -> str:
    """Per pattern: methods × fractions, top-1 in %."""
    rows, ref = result["rows"], result["reference"]
    fractions = sorted({r["fraction"] for r in rows})
    lines = [f"unconcealed reference: {100 * ref['accuracy']:.2f}% top-1 ({ref['frames']} images)"]
    for pattern in dict.fromkeys(r["pattern"] for r in rows):
        header = f"{pattern:14s}" + "".join(f"{100 * f:>8.0f}%" for f in fractions)
        lines += ["", header, "-" * len(header)]
        actual = {r["fraction"]: r["missing_fraction"] for r in rows if r["pattern"] == pattern}
        lines.append(f"{'(missing)':14s}" + "".join(f"{100 * actual[f]:>8.2f}%"
                                                   for f in fractions))
        for method in dict.fromkeys(r["method"] for r in rows):
            acc = {r["fraction"]: r["accuracy"] for r in rows
                   if r["pattern"] == pattern and r["method"] == method}
            lines.append(f"{method:14s}" + "".join(f"{100 * acc[f]:>9.2f}" for f in fractions))
    return "\n".join(lines)


def loss_at(result: dict, fraction: float) -> list[dict]:
    """Per pattern, the best method at ``fraction`` and its loss (points) from fraction 0."""
    out = []
    rows = result["rows"]
    for pattern in dict.fromkeys(r["pattern"] for r in rows):
        at = [r for r in rows if r["pattern"] == pattern and r["fraction"] == fraction]
        if not at:
            continue
        best = max(at, key=lambda r: r["accuracy"])
        zero = next(r for r in rows if r["pattern"] == pattern and r["fraction"] == 0.0
                    and r["method"] == best["method"])
        out.append({"pattern": pattern, "fraction": fraction, "best_method": best["method"],
                    "accuracy": best["accuracy"],
                    "loss_points": 100 * (zero["accuracy"] - best["accuracy"]),
                    "by_method": {r["method"]: 100 * (zero["accuracy"] - r["accuracy"])
                                  for r in at}})
    return out


def plot_concealment(panels: list[dict], path: Path, title: str) -> None:
    """Fig. 3.3-style: top-1 against fraction missing, one line per method; a row of panels
    (one per loss pattern) per split."""
    plt = common.pyplot()
    patterns = list(dict.fromkeys(r["pattern"] for p in panels for r in p["result"]["rows"]))
    fig, axes = plt.subplots(len(panels), len(patterns), figsize=(5 * len(patterns),
                             4.2 * len(panels)), squeeze=False, sharey=True)
    for row_axes, panel in zip(axes, panels, strict=True):
        rows = panel["result"]["rows"]
        for ax, pattern in zip(row_axes, patterns, strict=True):
            for method, marker in zip(METHODS, "os^", strict=False):
                sub = sorted((r for r in rows if r["pattern"] == pattern
                              and r["method"] == method), key=lambda r: r["fraction"])
                if sub:
                    ax.plot([100 * r["missing_fraction"] for r in sub],
                            [100 * r["accuracy"] for r in sub], marker=marker, label=method)
            ax.axhline(100 * panel["result"]["reference"]["accuracy"], color="black", lw=0.6,
                       ls=":")
            ax.set(xlabel="data missing (%)", ylabel="top-1 (%)",
                   title=f"{panel['split']['name']}: lost {pattern}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    common.save_figure(fig, path)


def run(bundle_path: str | Path | None, splits: Sequence[str], images: int,
        calibration_images: int, out_dir: str | Path, *, threads: int = 1,
        segment: int = DEFAULT_SEGMENT, seed: int = 0, progress: bool = True) -> dict:
    """Measure every split of ``splits``, print the tables and write ``concealment.json`` and
    ``concealment.png`` to ``out_dir``; returns the result."""
    from split_infer.bundle import Bundle
    from split_infer.defaults import DEFAULT_BUNDLE
    from split_infer.pipeline.parts import load_backbone
    from split_infer.training.datasets import load_dataset

    started, start_time = time.time(), common.timestamp()
    bundle_path = Path(bundle_path) if bundle_path is not None else DEFAULT_BUNDLE
    bundle = Bundle.load(bundle_path)
    dataset_name = bundle.manifest.get("dataset", {}).get("name", "cifar10")
    test = load_dataset(dataset_name, "test").subset(images)
    train = load_dataset(dataset_name, "train").subset(calibration_images, seed=5)
    model = load_backbone(bundle)
    panels = []
    for split in splits:
        point, head, tail = backbone_parts(bundle, split, threads, model)
        train_features = head_features(head, train)
        mean = dataset_channel_mean(train_features)
        result = measure_concealment(head, tail, test, mean, segment=segment, seed=seed,
                                     progress=progress)
        at5 = loss_at(result, 0.05)
        result["reference"].pop("predictions")
        panels.append({"split": {"index": point.index, "name": point.name},
                       "feature_shape": list(train_features.shape[1:]),
                       "dataset_mean": mean.tolist(), "result": result, "at_5_percent": at5})
        print(f"\nsplit {point.index} ({point.name}): top-1 (%) by fraction missing")
        print(format_table(result))
        for entry in at5:
            by = ", ".join(f"{m} {v:+.2f}" for m, v in entry["by_method"].items())
            print(f"5% missing, {entry['pattern']}: best {entry['best_method']} loses "
                  f"{entry['loss_points']:.2f} points (all: {by})")
    result = {"started": start_time, "bundle": str(bundle_path), "model": bundle.model_name,
              "dataset": dataset_name, "test_images": len(test),
              "calibration_images": len(train),
              "segment_elements": segment, "seed": seed, "fractions": list(FRACTIONS),
              "splits": panels, "seconds": time.time() - started,
              "machine": common.machine_info(threads=threads)}
    out = Path(out_dir)
    common.write_json(out / "concealment.json", result)
    plot_concealment(panels, out / "concealment.png",
                     f"{bundle.model_name} on {dataset_name} test ({len(test)} images): "
                     "error concealment of missing features")
    print(f"\nwrote {out / 'concealment.json'} and {out / 'concealment.png'}")
    return result


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench concealment [ARGS]``."""
    parser = common.bench_parser("concealment", __doc__)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="bundle whose backbone is used (default: the shipped one)")
    parser.add_argument("--split", nargs="+", default=["layer2.2"],
                        help="split points by name or index (default: %(default)s)")
    parser.add_argument("--images", type=int, default=10000, metavar="N",
                        help="test images (default: all)")
    parser.add_argument("--calibration-images", type=int, default=2048, metavar="N",
                        help="training images for the dataset mean (default: %(default)s)")
    parser.add_argument("--segment", type=int, default=DEFAULT_SEGMENT, metavar="N",
                        help="elements per lost packet of the segments pattern "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the loss masks (default: %(default)s)")
    common.add_threads_argument(parser)
    common.add_out_argument(parser, "concealment")
    args = parser.parse_args(argv)
    common.limit_threads(args.threads)
    run(args.bundle, args.split, args.images, args.calibration_images, args.out,
        threads=args.threads, segment=args.segment, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
