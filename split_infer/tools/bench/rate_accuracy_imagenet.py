"""Rate–accuracy at 224 px: bytes per frame against top-1 *and* agreement with the unsplit
model, on the labelled ImageNet sample, for a bundle with an ImageNet recipe
(EfficientNet-Lite0).

::

    split-infer bench rate_accuracy_imagenet BUNDLE [--split N ...] [--images 800]
        [--calibration-images 512] [--out bench/results/rate_accuracy_imagenet]

    ImageNet sample ─▶ recipe (shorter side 256, centre 224) ─▶ test crops ─▶ unsplit model
                                                                         ─▶ teacher top-1
    unlabelled photos (Caltech-101) ─▶ same recipe ─▶ calibration of the feature codecs
    per split: float32, 8-bit+zstd, tiled feature JPEG, the bundle's configurations
    cloud-only: the 224 crop as JPEG (qualities), the 640×480 camera frame as JPEG q90

Every row: ``split`` (0 for cloud-only), ``codec`` (a spec, or the bundle configuration's id),
``bytes_per_frame`` (real wire frames, header included; cloud-only: the JPEG file),
``top1`` (against the labels), ``agreement`` (with the unsplit model's top-1 on the
uncompressed crop) and ``edge_macs_fraction`` (the share of the model's MACs the robot runs).
Targets (issue 15), each a verdict in the results:

* ``jpeg_third``: at a split with ≤ 30 % of the MACs on the robot, a configuration within 1
  point of the unsplit top-1 whose frames are ≤ 1/3 of the bytes of the cheapest 224-crop
  JPEG that is at least as accurate (the thesis reached 0.6 at ResNet-34 ``add_7``);
* ``64x_1pt`` / ``256x_3pt``: at some split, ≥ 64× fewer bytes than that split's float32
  features at ≤ 1 point, ≥ 256× at ≤ 3 points;
* ``bottlenet_anchor``: ≤ 400 B per frame at ≤ 2 points (BottleNet: 316 B at about −2 with
  ResNet-50).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from split_infer.tools.bench import common
from split_infer.tools.bench.rate_accuracy import (
    CLOUD_JPEG_QUALITIES,
    FEATURE_JPEG_QUALITIES,
    add_arguments,
    backbone_parts,
    feature_codec_specs,
    head_features,
    measure_bundle_configs,
    measure_feature_codecs,
    write_results,
)

__all__ = ["check_targets", "main", "run"]

#: The camera frame image_transport/compressed would send, and its JPEG quality.
CAMERA_SIZE = (480, 640)
CAMERA_JPEG_QUALITY = 90
MAX_EDGE_MACS_FOR_JPEG_TARGET = 0.30


def _predict(full, dataset, batch_size: int) -> np.ndarray:
    return np.concatenate([full(dataset.preprocessing(dataset.images[i:i + batch_size]))
                           .argmax(1) for i in range(0, len(dataset), batch_size)])


def measure_cloud_only(full, test, photos: list[np.ndarray] | None, recipe, teacher: np.ndarray,
                       qualities: Sequence[int], batch_size: int, progress: bool) -> list[dict]:
    """The 224 crop as JPEG at each quality, and the camera frame (``CAMERA_SIZE``, cover-fit
    and centre-cropped from each photograph) as JPEG q90 then resized and cropped by the
    model's ``recipe``, into the unsplit model."""
    from split_infer.data import ArrayDataset, Preprocessing
    from split_infer.training.baseline import jpeg_round_trip

    cases = [(f"224-px crop JPEG q{q}", q, None) for q in qualities]
    if photos is not None:
        cases.append((f"{CAMERA_SIZE[1]}x{CAMERA_SIZE[0]} frame JPEG q{CAMERA_JPEG_QUALITY}",
                      CAMERA_JPEG_QUALITY, CAMERA_SIZE))
    camera = Preprocessing(size=CAMERA_SIZE, resize_shorter=min(CAMERA_SIZE))
    rows = []
    for label, quality, frame in tqdm(cases, desc="cloud-only JPEG", disable=not progress,
                                      leave=False):
        decoded, sizes = [], []
        sources = test.images if frame is None else photos
        for image in sources:
            if frame is not None:
                image = camera.resize_frame(image)
            back, size = jpeg_round_trip(image, quality)
            decoded.append(back if frame is None else recipe.resize_frame(back))
            sizes.append(size)
        jpeg_set = ArrayDataset(test.name, np.stack(decoded), test.labels, test.classes,
                                test.preprocessing)
        predictions = _predict(full, jpeg_set, batch_size)
        rows.append({"kind": "cloud_only", "label": label, "codec": f"input jpeg:quality="
                     f"{quality}" + ("" if frame is None else f",frame={frame[1]}x{frame[0]}"),
                     "split": 0, "split_point": None, "jpeg_quality": quality,
                     "camera_frame": frame is not None, "frames": len(predictions),
                     "accuracy": float((predictions == test.labels).mean()),
                     "agreement": float((predictions == teacher).mean()),
                     "bytes_per_frame": float(np.mean(sizes)), "edge_macs_fraction": 0.0})
    return rows


def _flat(row: dict, split: int, macs_fraction: float) -> dict:
    """A row in the results file's layout (the keys checks outside the repository read)."""
    # A bundle configuration's id, a feature codec's spec, a cloud-only row's input codec.
    codec = row.get("id") or row.get("spec") or row.get("codec")
    if codec is None:
        raise ValueError(f"row {row.get('label')!r} names no codec")
    return {"split": split, "codec": codec, "kind": row["kind"],
            "label": row["label"], "bytes_per_frame": row["bytes_per_frame"],
            "top1": row["accuracy"], "agreement": row["agreement"],
            "edge_macs_fraction": macs_fraction, "frames": row["frames"],
            **({"method": row["method"]} if "method" in row else {})}


def check_targets(rows: list[dict], unsplit_top1: float) -> list[dict]:
    """The issue's targets as verdicts over the flat ``rows``."""
    cloud = sorted((r for r in rows if r["split"] == 0 and "frame=" not in r["codec"]),
                   key=lambda r: r["bytes_per_frame"])
    split_rows = [r for r in rows if r["split"] > 0]
    verdicts = []
    # jpeg_third
    best = None
    for r in split_rows:
        if r["edge_macs_fraction"] > MAX_EDGE_MACS_FOR_JPEG_TARGET or \
                r["top1"] < unsplit_top1 - 0.01 - 1e-12:
            continue
        equal = next((c for c in cloud if c["top1"] >= r["top1"] - 1e-12), None)
        if equal is None:
            continue
        fraction = r["bytes_per_frame"] / equal["bytes_per_frame"]
        if best is None or fraction < best["fraction"]:
            best = {"row": r["codec"], "split": r["split"], "fraction": fraction,
                    "jpeg": equal["codec"], "jpeg_bytes": equal["bytes_per_frame"]}
    verdicts.append({"target": "jpeg_third", "met": bool(best and best["fraction"] <= 1 / 3),
                     "best": best})
    # 64x_1pt / 256x_3pt against each split's float32 features
    for name, reduction, points in (("64x_1pt", 64.0, 1.0), ("256x_3pt", 256.0, 3.0)):
        met_by = []
        for r in split_rows:
            ref = next((f for f in split_rows if f["split"] == r["split"]
                        and f["kind"] == "float32"), None)
            if ref and ref["bytes_per_frame"] / r["bytes_per_frame"] >= reduction and \
                    r["top1"] >= ref["top1"] - points / 100 - 1e-12:
                met_by.append(r["codec"])
        verdicts.append({"target": name, "met": bool(met_by), "met_by": met_by})
    anchor = [r["codec"] for r in split_rows
              if r["bytes_per_frame"] <= 400 and r["top1"] >= unsplit_top1 - 0.02 - 1e-12]
    verdicts.append({"target": "bottlenet_anchor", "met": bool(anchor), "met_by": anchor})
    return verdicts


def run(bundle_path: str | Path, splits: Sequence[str] | None, images: int,
        calibration_images: int, out_dir: str | Path, *, data_zip: Path | None = None,
        unlabelled: Path | None = None, threads: int = 1,
        feature_qualities: Sequence[int] = FEATURE_JPEG_QUALITIES,
        cloud_qualities: Sequence[int] = CLOUD_JPEG_QUALITIES, batch_size: int = 50,
        progress: bool = True) -> dict:
    """Measure, print, and write ``rate_accuracy.json`` + ``rate_accuracy.png``."""
    from split_infer.bundle import Bundle
    from split_infer.codecs import get_codec
    from split_infer.errors import UserError
    from split_infer.models.macs import count_macs
    from split_infer.pipeline.parts import load_backbone, segment_backend
    from split_infer.training.datasets import (
        decode_zip_images,
        default_shared_data,
        imagenet_sample_index,
        load_imagenet_sample,
        load_unlabelled_images,
    )

    started, start_time = time.time(), common.timestamp()
    bundle = Bundle.load(bundle_path)
    recipe = bundle.preprocessing
    if recipe.resize_shorter is None:
        raise UserError(f"{bundle_path}: not an ImageNet-recipe bundle (no resize_shorter); "
                        "use 'split-infer bench rate_accuracy' for 32-px bundles")
    test = load_imagenet_sample(recipe, data_zip)
    path, names, _, _ = imagenet_sample_index(data_zip)
    # The camera-frame row needs the very photographs of the evaluated crops: only when
    # every photograph decoded are crops and names in step.
    in_step = len(names) == len(test)
    chosen = np.arange(len(test))
    if images < len(test):
        chosen = np.sort(np.random.default_rng(1).choice(len(test), images, replace=False))
        test = test.subset(images, seed=1)  # the same draw
    photos = decode_zip_images(path, [names[i] for i in chosen]) if in_step else None
    calibration = load_unlabelled_images(
        unlabelled or default_shared_data("caltech101-unlabeled-3030.zip"), recipe,
        limit=calibration_images)
    model = load_backbone(bundle)
    full = segment_backend(bundle, 0, None, threads=threads, model=None)
    teacher = _predict(full, test, batch_size)
    unsplit_top1 = float((teacher == test.labels).mean())
    total_macs = count_macs(model, model.input_shape)
    rows, panels = [], []
    cloud = measure_cloud_only(full, test, photos, recipe, teacher, cloud_qualities,
                               batch_size, progress)
    chosen = list(splits) if splits else [str(p) for p in bundle.split_points]
    for split in chosen:
        point, head, tail = backbone_parts(bundle, split, threads, model)
        fraction = count_macs(model.segment(0, point.index), model.input_shape) / total_macs
        features = head_features(head, calibration, batch_size)
        codecs = [(kind, label, get_codec(spec, shape=features.shape[1:]).calibrate(features))
                  for kind, label, spec in feature_codec_specs(feature_qualities)]
        measured = measure_feature_codecs(head, tail, point.index, codecs, test, batch_size,
                                          progress, teacher=teacher)
        measured += measure_bundle_configs(bundle, point.index, test, progress, teacher)
        rows += [_flat(r, point.index, fraction) for r in measured]
        reference = next(r for r in measured if r["kind"] == "float32")
        panel_rows = [{**r, "reduction": reference["bytes_per_frame"] / r["bytes_per_frame"],
                       "loss_points": 100 * (reference["accuracy"] - r["accuracy"])}
                      for r in measured + cloud]
        panels.append({"split": {"index": point.index, "name": point.name},
                       "feature_shape": list(features.shape[1:]), "edge_macs_fraction":
                       fraction, "reference": reference, "rows": panel_rows})
    rows += [_flat(r, 0, 0.0) for r in cloud]
    targets = check_targets(rows, unsplit_top1)
    print(format_rows(rows))
    for t in targets:
        print(f"target {t['target']}: {'met' if t['met'] else 'not met'} "
              f"{t.get('best') or t.get('met_by')}")
    result: dict[str, Any] = {
        "started": start_time, "bundle": str(bundle_path), "model": bundle.model_name,
        "test_images": len(test), "calibration_images": len(calibration),
        "calibration_source": str(unlabelled or "caltech101-unlabeled-3030.zip"),
        "unsplit_top1": unsplit_top1, "rows": rows, "targets": targets,
        "seconds": time.time() - started, "machine": common.machine_info(threads=threads),
    }
    return write_results(out_dir, result, panels,
                         f"{bundle.model_name}, ImageNet sample ({len(test)} images): bytes per "
                         f"frame vs top-1 (unsplit {100 * unsplit_top1:.1f} %)")


def format_rows(rows: list[dict]) -> str:
    """The flat rows as an aligned table, by split then bytes."""
    header = (f"{'split':>5s} {'codec':46s} {'bytes/frame':>11s} {'top-1 %':>8s} "
              f"{'agree %':>8s} {'edge MACs':>9s}")
    lines = [header, "-" * len(header)]
    for r in sorted(rows, key=lambda r: (r["split"], -r["bytes_per_frame"])):
        lines.append(f"{r['split']:5d} {str(r['codec'])[:46]:46s} {r['bytes_per_frame']:11.1f} "
                     f"{100 * r['top1']:8.2f} {100 * r['agreement']:8.2f} "
                     f"{r['edge_macs_fraction']:9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench rate_accuracy_imagenet BUNDLE [ARGS]``."""
    parser = common.bench_parser("rate_accuracy_imagenet", __doc__)
    add_arguments(parser, images=800, calibration_images=512,
                  calibration_help="unlabelled photographs the feature codecs are calibrated "
                                   "on")
    parser.add_argument("--data", type=Path, default=None,
                        help="imagenet-sample-800.zip (default: ../shared/data or "
                             "$SPLIT_INFER_DATA)")
    parser.add_argument("--unlabelled", type=Path, default=None,
                        help="calibration photographs: a zip or a folder (default: "
                             "caltech101-unlabeled-3030.zip beside the sample)")
    common.add_out_argument(parser, "rate_accuracy_imagenet")
    args = parser.parse_args(argv)
    common.limit_threads(args.threads)
    run(args.bundle, args.split, args.images, args.calibration_images, args.out,
        data_zip=args.data, unlabelled=args.unlabelled, threads=args.threads,
        feature_qualities=args.feature_jpeg, cloud_qualities=args.cloud_jpeg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
