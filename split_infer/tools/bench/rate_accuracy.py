"""Rate–accuracy report: bytes per frame (log x) against top-1 on the CIFAR-10 test set.

::

    split-infer bench rate_accuracy BUNDLE [--split N ...] [--images N]
        [--out bench/results/rate_accuracy]

Everything at one split point runs on the bundle's own backbone (its safetensors weights, cut
at the split with ``pipeline.parts.segment_backend`` and run with ONNX Runtime) over the same
test images, and every byte count is a real serialized size:

* **float32** features (``float32+raw``) -- the reference point of the targets;
* **8-bit + zstd** (``quant:bits=8,per=channel+zstd``);
* **tiled JPEG** of the 8-bit features at several qualities
  (``quant:bits=8,per=channel+jpeg:quality=Q``, thesis §2.2 / BottleNet);
* every **learned** configuration the bundle has at that split and its **baseline**
  configurations, re-measured with ``pipeline.evaluate.evaluate_bundle`` (the bundle's edge
  and cloud ONNX parts, real wire frames);
* **cloud-only** (the thesis's "server-only"): the input image JPEG-encoded at several
  qualities into the full model (``training.baseline.server_only_reference``); bytes = JPEG
  size. It does not depend on the split and is drawn on every panel.

The feature codecs above are calibrated on features of *training* images; every feature
frame goes through ``wire.pack`` → ``CloudEngine`` (``wire`` decode + codec) → tail, and its
size is ``len()`` of the frame, header and CRC included.

The targets (issue 3), relative to the float32 point of the same split: ≥ 64× fewer bytes
at ≤ 1 point top-1 loss, and ≥ 256× fewer bytes at ≤ 3 points. The plot shades both
regions; the report lists the configurations inside each.

Writes ``rate_accuracy.json`` and ``rate_accuracy.png`` to ``--out``. ``--threads`` (default
1) pins the process to that many CPUs, so ONNX Runtime sessions opened inside the library
stay on them too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from split_infer.config_key import ConfigKey, config_key
from split_infer.tools.bench import common

if TYPE_CHECKING:
    from split_infer.bundle import Bundle
    from split_infer.data import ArrayDataset
    from split_infer.models import SplitPoint, SplittableModel
    from split_infer.pipeline.engine import EdgeConfig

#: A part of the backbone: preprocessed batch (or features) → features (or logits).
Part = Callable[[np.ndarray], np.ndarray]

FLOAT32_SPEC = "float32+raw"
QUANT8_SPEC = "quant:bits=8,per=channel+zstd"
FEATURE_JPEG_QUALITIES = (95, 90, 75, 50, 30, 20, 10)
CLOUD_JPEG_QUALITIES = (95, 90, 75, 50, 30, 20, 10)
KINDS = ("float32", "quant8_zstd", "feature_jpeg", "bundle_learned", "bundle_baseline",
         "cloud_only")


@dataclass(frozen=True)
class Target:
    """At least ``reduction``× fewer bytes than float32 at most ``max_loss_points`` top-1 lost."""

    name: str
    reduction: float
    max_loss_points: float


TARGETS = (
    Target("64x fewer bytes, <=1 point loss", 64.0, 1.0),
    Target("256x fewer bytes, <=3 points loss", 256.0, 3.0),
)


def feature_codec_specs(jpeg_qualities: Iterable[int] = FEATURE_JPEG_QUALITIES
                        ) -> list[tuple[str, str, str]]:
    """``(kind, label, spec)`` of the feature codecs measured outside the bundle."""
    specs = [("float32", "float32", FLOAT32_SPEC), ("quant8_zstd", "8-bit+zstd", QUANT8_SPEC)]
    specs += [("feature_jpeg", f"feature JPEG q{q}", f"quant:bits=8,per=channel+jpeg:quality={q}")
              for q in jpeg_qualities]
    return specs


def short_spec(spec: str) -> str:
    """A codec spec for a label: ``quant:bits=8,w=3.3,per=channel+zstd:level=3`` →
    ``quant8/channel+zstd``, ``...+jpeg:quality=75`` → ``...+jpeg75``."""
    tensor, _, byte = spec.partition("+")
    name, _, params = tensor.partition(":")
    kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
    label = name + kv.get("bits", "") + (f"/{kv['per']}" if "per" in kv else "")
    if byte:
        bname, _, bparams = byte.partition(":")
        bkv = dict(p.split("=", 1) for p in bparams.split(",") if "=" in p)
        label += f"+{bname}{bkv.get('quality', '')}"
    return label


def batches(dataset: ArrayDataset, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, preprocessed NCHW batch)`` over ``dataset`` in order."""
    for start in range(0, len(dataset), batch_size):
        yield start, dataset.preprocessing(dataset.images[start:start + batch_size])


def backbone_parts(bundle: Bundle, split: int | str, threads: int | None = 1,
                   model: SplittableModel | None = None) -> tuple[SplitPoint, Part, Part]:
    """``(split point, head, tail)``: the bundle's backbone cut at ``split``, on ONNX Runtime."""
    from split_infer.pipeline.parts import load_backbone, segment_backend

    model = model if model is not None else load_backbone(bundle)
    point = model.split_point(split)
    head = segment_backend(bundle, 0, point.index, threads=threads, model=model)
    tail = segment_backend(bundle, point.index, None, threads=threads, model=model)
    return point, head, tail


def head_features(head: Part, dataset: ArrayDataset, batch_size: int = 256) -> np.ndarray:
    """float32 ``(N, C, H, W)`` features of every image (calibration)."""
    return np.concatenate([head(x) for _, x in batches(dataset, batch_size)])


def measure_feature_codecs(
    head: Part,
    tail: Part,
    split_point: int,
    codecs: Sequence[tuple[str, str, Any]],
    dataset: ArrayDataset,
    batch_size: int = 200,
    progress: bool = True,
    teacher: np.ndarray | None = None,
) -> list[dict]:
    """Top-1 and bytes per frame of calibrated ``(kind, label, codec)`` triples at one split
    (and ``agreement`` with ``teacher``, the unsplit model's top-1, when given).

    Each image's head features are packed into a real wire frame (``EdgeEngine.pack_features``),
    decoded by a :class:`CloudEngine` route holding that codec and the tail, and the tail
    classifies the decoded batch. ``bytes`` are ``len()`` of the frames.
    """
    from split_infer.pipeline.engine import CloudEngine, EdgeConfig, EdgeEngine, Route

    routes = []
    for kind, label, codec in codecs:
        cloud = CloudEngine()
        cloud.add_route(split_point, 1.0, Route(codec, tail))
        routes.append((kind, label, EdgeConfig(head, codec, split_point, 1.0), cloud,
                       {"bytes": [], "predictions": []}))
    bar = tqdm(total=len(dataset) * len(routes), desc=f"feature codecs @{split_point}",
               unit="frame", disable=not progress, leave=False)
    for start, x in batches(dataset, batch_size):
        features = head(x)
        for _, label, edge_config, cloud, record in routes:
            decoded = []
            for i, f in enumerate(features):
                data = EdgeEngine.pack_features(edge_config, f, seq=start + i, stamp_ns=0)
                frame, received = cloud.features(data)
                if frame.seq != start + i or frame.config != edge_config_key(edge_config):
                    raise RuntimeError(f"{label}: frame {start + i} decoded as {frame.seq}")
                record["bytes"].append(len(data))
                decoded.append(received[0])
            record["predictions"].append(tail(np.stack(decoded)).argmax(1))
            bar.update(len(decoded))
    bar.close()
    rows = []
    for kind, label, edge_config, _, record in routes:
        predictions = np.concatenate(record["predictions"])
        rows.append(_row(kind, label, edge_config.codec.spec, split_point, record["bytes"],
                         predictions, dataset.labels, teacher))
    return rows


def edge_config_key(config: EdgeConfig) -> ConfigKey:
    """The configuration key of an ``EdgeConfig`` (what its frames carry)."""
    return config_key(config.split_point, config.ratio)


def _row(kind: str, label: str, spec: str, split_point: int | None, sizes, predictions,
         labels, teacher: np.ndarray | None = None, **extra) -> dict:
    predictions = np.asarray(predictions)
    correct = int((predictions == np.asarray(labels)).sum())
    if teacher is not None:  # agreement with the unsplit model's top-1 on the same images
        extra["agreement"] = float((predictions == teacher).mean())
    return {"kind": kind, "label": label, "spec": spec, "split_point": split_point,
            "frames": len(predictions), "correct": correct,
            "accuracy": correct / len(predictions),
            "bytes_per_frame": float(np.mean(sizes)), "bytes_min": int(np.min(sizes)),
            "bytes_max": int(np.max(sizes)), **extra}


def measure_bundle_configs(bundle: Bundle, split_point: int, dataset: ArrayDataset,
                           progress: bool = True, teacher: np.ndarray | None = None
                           ) -> list[dict]:
    """The bundle's configurations at ``split_point`` re-measured from real wire frames (and
    their ``agreement`` with ``teacher`` when given)."""
    from split_infer.pipeline.evaluate import evaluate_bundle

    configs = [c for c in bundle.configurations if c.split_point == split_point]
    if not configs:
        return []
    measured = evaluate_bundle(bundle, dataset, configs, progress=progress)
    rows = []
    for config, m in zip(configs, measured, strict=True):
        kind = "bundle_baseline" if config.method == "baseline" else "bundle_learned"
        label = f"{config.id} ({short_spec(config.codec)})"
        rows.append({
            "kind": kind, "label": label, "spec": config.codec, "split_point": split_point,
            "frames": m["frames"], "correct": m["correct"], "accuracy": m["accuracy"],
            "bytes_per_frame": m["bytes_per_frame"], "bytes_min": m["bytes_min"],
            "bytes_max": m["bytes_max"], "id": config.id, "method": config.method,
            "ratio": config.ratio, "keep_channels": config.keep_channels,
            "manifest_accuracy": config.accuracy,
            "manifest_bytes_per_frame": config.bytes_per_frame,
            **({} if teacher is None else
               {"agreement": float((np.asarray(m["predictions"]) == teacher).mean())}),
        })
    return rows


def measure_cloud_only(bundle: Bundle, dataset: ArrayDataset,
                       qualities: Iterable[int] = CLOUD_JPEG_QUALITIES,
                       progress: bool = True) -> list[dict]:
    """The input image as JPEG at each quality into the bundle's full model (its
    ``client_only`` ONNX, else the backbone exported in memory)."""
    from split_infer.training.baseline import server_only_reference

    if "client_only" in bundle.manifest:
        full = bundle.file(bundle.manifest["client_only"]["onnx"])
    else:
        import torch

        from split_infer.pipeline.parts import load_backbone
        from split_infer.pipeline.torch_backend import export_onnx

        model = load_backbone(bundle)
        full = export_onnx(model, torch.zeros(1, *model.input_shape))
    rows = []
    for quality in tqdm(list(qualities), desc="cloud-only JPEG", disable=not progress,
                        leave=False):
        ref = server_only_reference(dataset, full, quality)
        correct = round(ref["accuracy"] * ref["frames"])
        rows.append({"kind": "cloud_only", "label": f"cloud-only JPEG q{quality}",
                     "spec": f"input jpeg:quality={quality}", "split_point": None,
                     "frames": ref["frames"], "correct": correct,
                     "accuracy": ref["accuracy"], "bytes_per_frame": ref["bytes_per_frame"],
                     "jpeg_quality": quality})
    return rows


def relative_to(rows: list[dict], reference: dict) -> list[dict]:
    """Copies of ``rows`` with ``reduction`` (reference bytes / bytes) and ``loss_points``
    (reference top-1 − top-1, in points)."""
    out = []
    for row in rows:
        out.append({**row,
                    "reduction": reference["bytes_per_frame"] / row["bytes_per_frame"],
                    "loss_points": 100.0 * (reference["accuracy"] - row["accuracy"])})
    return out


def check_targets(rows: list[dict], reference: dict, targets: Sequence[Target] = TARGETS
                  ) -> list[dict]:
    """For each target: its byte and accuracy bounds and the labels of the rows inside it."""
    report = []
    for target in targets:
        max_bytes = reference["bytes_per_frame"] / target.reduction
        min_accuracy = reference["accuracy"] - target.max_loss_points / 100.0
        # The reference itself (1x) can never be inside a target region.
        met = [r["label"] for r in rows
               if r["bytes_per_frame"] <= max_bytes and r["accuracy"] >= min_accuracy - 1e-12]
        report.append({"target": target.name, "reduction": target.reduction,
                       "max_loss_points": target.max_loss_points, "max_bytes": max_bytes,
                       "min_accuracy": min_accuracy, "met_by": met})
    return report


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`relative_to`, largest frames first, as an aligned table."""
    header = (f"{'configuration':44s} {'kind':16s} {'bytes/frame':>11s} {'x fewer':>8s} "
              f"{'top-1 %':>8s} {'loss pts':>8s}")
    lines = [header, "-" * len(header)]
    for r in sorted(rows, key=lambda r: -r["bytes_per_frame"]):
        lines.append(f"{r['label'][:44]:44s} {r['kind']:16s} {r['bytes_per_frame']:11.1f} "
                     f"{r['reduction']:8.1f} {100 * r['accuracy']:8.2f} "
                     f"{r['loss_points']:+8.2f}")
    return "\n".join(lines)


def format_targets(report: list[dict]) -> str:
    """One line per target of :func:`check_targets`: its bounds and who meets it."""
    lines = []
    for t in report:
        met = ", ".join(t["met_by"]) if t["met_by"] else "none"
        lines.append(f"target {t['target']}: <= {t['max_bytes']:.1f} B at >= "
                     f"{100 * t['min_accuracy']:.2f}% -> met by: {met}")
    return "\n".join(lines)


_STYLE = {
    "float32": dict(marker="*", s=160, color="black"),
    "quant8_zstd": dict(marker="D", s=50, color="tab:blue"),
    "feature_jpeg": dict(marker="o", s=30, color="tab:orange"),
    "bundle_baseline": dict(marker="s", s=40, color="tab:green"),
    "cloud_only": dict(marker="^", s=35, color="tab:purple"),
}
FLOOR_POINTS = 25.0


def _short_label(row: dict) -> str:
    if "id" in row:
        return row["id"].split("_", 1)[-1]
    return row["label"]


_LEARNED_COLORS = ["tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]


def plot_rate_accuracy(panels: list[dict], path: Path, title: str) -> None:
    """One panel per split: bytes per frame (log) against top-1, with the target regions."""
    from matplotlib.patches import Rectangle

    plt = common.pyplot()

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 6.5 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        rows, ref = panel["rows"], panel["reference"]
        every = [r["bytes_per_frame"] for r in rows]
        lo, hi = min(every) / 2, max(every) * 2
        accs = [100 * r["accuracy"] for r in rows]
        # At most 25 points below the reference: rows further down are pointed at from the
        # bottom edge, so that the region of the targets keeps its resolution.
        floor = 100 * ref["accuracy"] - FLOOR_POINTS
        y_lo = max(0.0, min(max(min(accs), floor), 100 * ref["accuracy"] - 12) - 2)
        for target, colour in zip(TARGETS, ("tab:green", "gold"), strict=True):
            x_max = ref["bytes_per_frame"] / target.reduction
            y_min = 100 * ref["accuracy"] - target.max_loss_points
            lo = min(lo, x_max / 2)
            ax.add_patch(Rectangle((lo / 10, y_min), x_max - lo / 10, 100 - y_min,
                                   color=colour, alpha=0.15, zorder=0))
            ax.scatter([x_max], [y_min], marker="X", s=90, color=colour, edgecolor="black",
                       zorder=5, label=f"target: {target.name}")
        learned_methods = sorted({r.get("method") for r in rows if r["kind"] == "bundle_learned"})
        for kind in KINDS:
            group = sorted((r for r in rows if r["kind"] == kind),
                           key=lambda r: r["bytes_per_frame"])
            if not group:
                continue
            if kind == "bundle_learned":
                for i, method in enumerate(learned_methods):
                    sub = [r for r in group if r.get("method") == method]
                    colour = _LEARNED_COLORS[i % len(_LEARNED_COLORS)]
                    ax.plot([r["bytes_per_frame"] for r in sub],
                            [100 * r["accuracy"] for r in sub], "-P", color=colour,
                            markersize=9, label=f"learned: {method}")
                    for r in sub:
                        ax.annotate(_short_label(r),
                                    (r["bytes_per_frame"], 100 * r["accuracy"]), fontsize=6,
                                    xytext=(3, -8), textcoords="offset points")
                continue
            style = dict(_STYLE[kind])
            xs = [r["bytes_per_frame"] for r in group]
            ys = [100 * r["accuracy"] for r in group]
            if kind in ("feature_jpeg", "cloud_only"):
                ax.plot(xs, ys, "-", color=style["color"], alpha=0.6)
            ax.scatter(xs, ys, label=kind.replace("_", " "), zorder=4, **style)
            for r in group:
                tag = {"feature_jpeg": lambda r: "q" + r["spec"].rsplit("=", 1)[-1],
                       "cloud_only": lambda r: f"q{r['jpeg_quality']}",
                       "bundle_baseline": lambda r: short_spec(r["spec"])}.get(kind)
                if tag is not None:
                    ax.annotate(tag(r), (r["bytes_per_frame"], 100 * r["accuracy"]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
        below = sorted((r for r in rows if 100 * r["accuracy"] < y_lo),
                       key=lambda r: r["bytes_per_frame"])
        for i, r in enumerate(below):
            ax.annotate(f"{_short_label(r)}: {100 * r['accuracy']:.1f}%",
                        xy=(r["bytes_per_frame"], y_lo), xytext=(0, 14 + 9 * (i % 3)),
                        textcoords="offset points", fontsize=6, ha="center",
                        arrowprops=dict(arrowstyle="->", lw=0.6))
        ax.axhline(100 * ref["accuracy"], color="black", lw=0.6, ls=":")
        ax.set(xscale="log", xlim=(lo, hi), ylim=(y_lo, min(100.0, 100 * ref["accuracy"] + 3)),
               xlabel="bytes per frame (wire frame incl. header; cloud-only: JPEG file)",
               ylabel="top-1 (%)",
               title=f"split {panel['split']['index']} ({panel['split']['name']}), "
                     f"features {tuple(panel['feature_shape'])}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    common.save_figure(fig, path)


def run(bundle_path: str | Path, splits: Sequence[str] | None, images: int,
        calibration_images: int, out_dir: str | Path, *, threads: int = 1,
        feature_qualities: Sequence[int] = FEATURE_JPEG_QUALITIES,
        cloud_qualities: Sequence[int] = CLOUD_JPEG_QUALITIES, batch_size: int = 200,
        progress: bool = True) -> dict:
    """Measure every split of ``splits`` (default: the bundle's), print the tables and write
    ``rate_accuracy.json`` and ``rate_accuracy.png`` to ``out_dir``; returns the result."""
    from split_infer.bundle import Bundle
    from split_infer.codecs import get_codec
    from split_infer.pipeline.parts import load_backbone
    from split_infer.training.datasets import load_dataset

    started, start_time = time.time(), common.timestamp()
    bundle = Bundle.load(bundle_path)
    dataset_name = bundle.manifest.get("dataset", {}).get("name", "cifar10")
    test = load_dataset(dataset_name, "test").subset(images)
    train = load_dataset(dataset_name, "train").subset(calibration_images, seed=2)
    model = load_backbone(bundle)
    chosen = list(splits) if splits else [str(p) for p in bundle.split_points]
    cloud_rows = measure_cloud_only(bundle, test, cloud_qualities, progress)
    panels = []
    for split in chosen:
        point, head, tail = backbone_parts(bundle, split, threads, model)
        calibration = head_features(head, train)
        codecs = [(kind, label, get_codec(spec, shape=calibration.shape[1:]).calibrate(
            calibration)) for kind, label, spec in feature_codec_specs(feature_qualities)]
        rows = measure_feature_codecs(head, tail, point.index, codecs, test, batch_size,
                                      progress)
        rows += measure_bundle_configs(bundle, point.index, test, progress)
        reference = next(r for r in rows if r["kind"] == "float32")
        rows = relative_to(rows + cloud_rows, reference)
        reference = next(r for r in rows if r["kind"] == "float32")
        targets = check_targets(rows, reference)
        panel = {"split": {"index": point.index, "name": point.name},
                 "feature_shape": list(calibration.shape[1:]), "reference": reference,
                 "rows": rows, "targets": targets}
        panels.append(panel)
        print(f"\nsplit {point.index} ({point.name}), features {tuple(calibration.shape[1:])}, "
              f"{len(test)} test images")
        print(format_table(rows))
        print(format_targets(targets))
    learned = bundle.manifest.get("learned", {})
    result = {
        "started": start_time,
        "bundle": str(bundle_path),
        "model": bundle.model_name,
        "dataset": dataset_name,
        "test_images": len(test),
        "calibration_images": len(train),
        "backbone_frozen_for_learned": learned.get("freeze_backbone") if learned else None,
        "targets": [t.__dict__ for t in TARGETS],
        "cloud_only": cloud_rows,
        "splits": panels,
        "seconds": time.time() - started,
        "machine": common.machine_info(threads=threads),
    }
    return write_results(out_dir, result, panels,
                         f"{bundle.model_name} on {dataset_name} test ({len(test)} images): "
                         f"bytes per frame vs top-1 ({Path(bundle_path).name})")


def write_results(out_dir: str | Path, result: dict, panels: list[dict], title: str) -> dict:
    """``rate_accuracy.json`` and ``rate_accuracy.png`` in ``out_dir``; returns ``result``."""
    out = Path(out_dir)
    common.write_json(out / "rate_accuracy.json", result)
    plot_rate_accuracy(panels, out / "rate_accuracy.png", title)
    print(f"\nwrote {out / 'rate_accuracy.json'} and {out / 'rate_accuracy.png'}")
    return result


def add_arguments(parser: Any, *, images: int, calibration_images: int,
                  calibration_help: str) -> None:
    """The options every rate–accuracy benchmark has."""
    from split_infer.tools.cli._common import bundle_directory

    parser.add_argument("bundle", type=bundle_directory,
                        help="bundle directory, or a packed one (assembled on first use)")
    parser.add_argument("--split", nargs="+", default=None,
                        help="split points by index or name (default: the bundle's)")
    parser.add_argument("--images", type=int, default=images, metavar="N",
                        help="test images (default: %(default)s, or all there are)")
    parser.add_argument("--calibration-images", type=int, default=calibration_images,
                        metavar="N", help=f"{calibration_help} (default: %(default)s)")
    parser.add_argument("--feature-jpeg", type=int, nargs="+", default=FEATURE_JPEG_QUALITIES,
                        metavar="Q", help="qualities of the tiled feature JPEG")
    parser.add_argument("--cloud-jpeg", type=int, nargs="+", default=CLOUD_JPEG_QUALITIES,
                        metavar="Q", help="qualities of the cloud-only input JPEG")
    common.add_threads_argument(parser)


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench rate_accuracy BUNDLE [ARGS]``."""
    parser = common.bench_parser("rate_accuracy", __doc__)
    add_arguments(parser, images=10000, calibration_images=1024,
                  calibration_help="training images the non-bundle codecs are calibrated on")
    common.add_out_argument(parser, "rate_accuracy")
    args = parser.parse_args(argv)
    common.limit_threads(args.threads)
    run(args.bundle, args.split, args.images, args.calibration_images, args.out,
        threads=args.threads, feature_qualities=args.feature_jpeg,
        cloud_qualities=args.cloud_jpeg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
