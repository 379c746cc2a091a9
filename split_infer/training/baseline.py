"""Build a bundle of baseline (non-learned) configurations from a trained backbone.

::

    backbone weights ─▶ one tapped ONNX of the whole model ─▶ head model[0:k] (edge) /
                                │                            tail model[k:] (cloud)
                                │
         calibration images ─▶ head features ─▶ codec.calibrate ─▶ calibration/*.safetensors
                                │
         test images ─▶ real wire frames ─▶ accuracy + bytes per frame ─▶ manifest.json

Each (split point, codec) pair becomes one configuration whose ratio is the measured
compression ratio against float32 features on the calibration set. The manifest also holds
the model profile (ONNX Runtime latency per split) and the client-only / server-only
references (the whole model on the edge; the input image as JPEG into the whole model in
the cloud) so the planner can compare every strategy.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from split_infer.bundle import Bundle, BundleConfiguration, write_bundle
from split_infer.codecs import get_codec
from split_infer.config_key import config_key
from split_infer.data import ArrayDataset, Preprocessing
from split_infer.defaults import resolve_weights
from split_infer.models import get_model, get_model_spec, save_weights, split
from split_infer.pipeline.evaluate import evaluate_bundle, evaluate_client_only
from split_infer.pipeline.profiling import ModelProfile, profile_model
from split_infer.pipeline.torch_backend import export_tapped
from split_infer.training.datasets import load_dataset
from split_infer.training.features import head_features
from split_infer.wire import pack

__all__ = ["DEFAULT_BASELINE_CODECS", "build_baseline_bundle", "bundle_manifest",
           "default_split_points", "export_baseline_split", "jpeg_round_trip",
           "measure_bundle", "server_only_reference"]

DEFAULT_BASELINE_CODECS = (
    "quant:bits=8,per=channel+zstd",
    "quant:bits=4,per=channel+rans",
    "quant:bits=2,per=channel+rans",
)

#: The whole model in a bundle, with every split point tapped (see pipeline.onnx_parts).
FULL_ONNX = "onnx/full.onnx"


def default_split_points(model, count: int = 3) -> list[int]:
    """``count`` split points spread evenly over the network (the last one included)."""
    points = [p.index for p in model.split_points()]
    picks = np.linspace(0, len(points) - 1, num=min(count, len(points)) + 1)[1:]
    return sorted({points[round(i)] for i in picks})


def jpeg_round_trip(image: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
    """A uint8 RGB image through JPEG at ``quality``: (decoded RGB, encoded size in bytes)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), len(buf)


def server_only_reference(dataset: ArrayDataset, full_onnx: Path, quality: int = 90) -> dict:
    """The input image as JPEG (what ``image_transport/compressed`` sends) into the full model."""
    sizes, decoded = [], []
    for image in dataset.images:
        back, size = jpeg_round_trip(image, quality)
        sizes.append(size)
        decoded.append(back)
    jpeg_set = ArrayDataset(dataset.name, np.stack(decoded), dataset.labels, dataset.classes,
                            dataset.preprocessing)
    result = evaluate_client_only(full_onnx, jpeg_set)
    return {"jpeg_quality": quality, "bytes_per_frame": float(np.mean(sizes)),
            "accuracy": result["accuracy"], "frames": result["frames"]}


def _measured_ratio(codec, features: np.ndarray, taken: set[float],
                    reference_nbytes: int | None = None) -> float:
    """float32 bytes / mean wire-frame bytes on calibration features, 3 significant digits,
    nudged so that it is unique at its split point (it is part of the wire config id).
    ``reference_nbytes`` is the float32 size to compare with when ``features`` are not the
    split's features themselves (a learned encoder's output)."""
    sample = features[: min(len(features), 32)]
    frame_bytes = np.mean([len(pack(codec, f, split_point=0, ratio=1.0, seq=0, stamp_ns=0))
                           for f in sample])
    reference = features[0].nbytes if reference_nbytes is None else reference_nbytes
    ratio = float(f"{reference / frame_bytes:.3g}")
    while config_key(0, ratio)[1] in taken:
        ratio = float(f"{ratio * 1.01:.4g}")
    taken.add(config_key(0, ratio)[1])
    return ratio


def build_baseline_bundle(
    model_name: str,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    dataset: str = "cifar10",
    data_path: str | Path | None = None,
    split_points: list[int | str] | None = None,
    codecs: list[str] | None = None,
    calibration_images: int = 256,
    eval_images: int | None = 1000,
    profile_repeats: int = 10,
    force: bool = False,
    progress: bool = True,
) -> Bundle:
    """Calibrate ``codecs`` at ``split_points`` of a trained backbone and write a bundle.

    ``weights`` defaults to the shipped CIFAR-10 weights of ``model_name``. Accuracy and
    bytes per frame are measured from real wire frames on ``eval_images`` test images
    (None = the whole test split).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    codec_specs = list(codecs or DEFAULT_BASELINE_CODECS)
    probes = [get_codec(spec) for spec in codec_specs]  # bad specs fail before heavy work
    del probes

    model = get_model(model_name, weights=resolve_weights(model_name, weights))
    points = [model.split_point(p) for p in (split_points or default_split_points(model))]
    train = load_dataset(dataset, "train", data_path)
    test = load_dataset(dataset, "test", data_path)
    if eval_images is not None:
        test = test.subset(eval_images, seed=1)
    calibration = train.subset(calibration_images, seed=2)
    if len(train.classes) != model.num_classes:
        raise ValueError(f"{model_name} has {model.num_classes} outputs but {dataset} has "
                         f"{len(train.classes)} classes")

    (out / "weights").mkdir(parents=True)
    (out / "onnx").mkdir()
    (out / "calibration").mkdir()
    save_weights(model, out / "weights" / "backbone.safetensors")
    example = torch.from_numpy(test.preprocessing(test.images[:1]))
    export_tapped(model.blocks, example, out / FULL_ONNX)

    configurations: list[BundleConfiguration] = []
    split_info = []
    taken_by_split: dict[int, set[float]] = {}
    for point in points:
        head, _ = split(model, point)
        features = head_features(head, calibration, progress=progress)
        entry, configs = export_baseline_split(out, point, head, example, features,
                                               codec_specs, taken_by_split.setdefault(
                                                   point.index, set()))
        split_info.append(entry)
        configurations.extend(configs)

    manifest = bundle_manifest(model, dataset, test, split_info,
                               calibration_images=len(calibration),
                               profile_repeats=profile_repeats, progress=progress)
    bundle = write_bundle(out, manifest, configurations)
    return measure_bundle(bundle, test, progress=progress)


def export_baseline_split(
    out: Path,
    point,
    head: torch.nn.Module,
    example: torch.Tensor,
    features: np.ndarray,
    codec_specs: list[str],
    taken: set[float],
) -> tuple[dict, list[BundleConfiguration]]:
    """One calibrated configuration per codec spec at ``point``, its parts segments of the
    bundle's tapped whole model; returns the manifest's split entry and the configurations.
    ``taken`` holds the ratios already used at this split (ratios are part of the wire
    configuration id)."""
    from safetensors.numpy import save_file

    with torch.no_grad():
        feature_example = head(example)
    feature_shape = tuple(int(d) for d in feature_example.shape[1:])
    entry = {"index": point.index, "name": point.name, "shape": list(feature_shape),
             "float32_bytes": int(np.prod(feature_shape)) * 4}
    configurations: list[BundleConfiguration] = []
    # The parts are segments of the bundle's tapped whole model (bundle.part_components):
    # the backbone is stored once, not once per split point.
    edge_onnx, cloud_onnx = f"model[0:{point.index}]", f"model[{point.index}:]"
    for j, spec in enumerate(codec_specs):
        # Calibrate every codec that has state (quant works uncalibrated, sending per-frame
        # min/max, but calibrated statistics are both smaller and better, thesis §2.1).
        codec = get_codec(spec).calibrate(features)
        calibration_file = None
        if codec.state_dict():
            calibration_file = f"calibration/split{point.index}_c{j}.safetensors"
            save_file(codec.state_dict(), str(out / calibration_file))
        configurations.append(BundleConfiguration(
            id=f"split{point.index}_c{j}", split_point=point.index, split_name=point.name,
            ratio=_measured_ratio(codec, features, taken), codec=codec.spec,
            feature_shape=feature_shape, edge_onnx=edge_onnx, cloud_onnx=cloud_onnx,
            method="baseline", calibration=calibration_file))
    return entry, configurations


def _recorded_preprocessing(model_name: str, test: ArrayDataset) -> Preprocessing:
    """The recipe the bundle's users apply to camera frames. Data sets loaded by the model's
    recipe were resized and cropped at load and keep only its normalisation; the manifest
    records the whole recipe (the edge node gets 640×480 frames, not 224-px crops)."""
    recipe = get_model_spec(model_name).preprocessing
    if recipe is not None and test.preprocessing == recipe.at_input_size():
        return recipe
    return test.preprocessing


def bundle_manifest(model, dataset: str, test: ArrayDataset, split_info: list[dict], *,
                    calibration_images: int, profile_repeats: int = 10,
                    progress: bool = True, train_dataset: str | None = None) -> dict:
    """The manifest fields every bundle writer shares (model, data, classes, splits and the
    ONNX Runtime profile), for ``write_bundle``."""
    profile = profile_model(model, backends=("onnxruntime",), repeats=profile_repeats,
                            progress=progress, threads=1)
    return {
        "model": {"name": model.model_name, "num_classes": model.num_classes,
                  "input_shape": list(model.input_shape),
                  "weights": "weights/backbone.safetensors",
                  # the whole model, every split point tapped (pipeline.onnx_parts)
                  "onnx": FULL_ONNX},
        # "name": what the bundle is measured on (split-infer eval loads it); "train": the
        # images it was trained and calibrated on, when they are another set (label-free).
        "dataset": {"name": dataset, "calibration_images": calibration_images,
                    "eval_images": len(test),
                    **({"train": train_dataset} if train_dataset not in (None, dataset) else {})},
        "preprocessing": _recorded_preprocessing(model.model_name, test).to_dict(),
        "classes": list(test.classes),
        "split_points": split_info,
        "profile": profile.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def measure_bundle(bundle: Bundle, test: ArrayDataset, progress: bool = True) -> Bundle:
    """Re-measure every configuration and the references on ``test`` and rewrite the manifest."""
    rows = {row["id"]: row for row in evaluate_bundle(bundle, test, progress=progress)}
    profile = ModelProfile.from_dict(bundle.manifest["profile"])
    measured = []
    for config in bundle.configurations:
        row = rows[config.id]
        timing = profile.split(config.split_point)
        measured.append(BundleConfiguration.from_dict({
            **config.to_dict(),
            "accuracy": row["accuracy"],
            "bytes_per_frame": row["bytes_per_frame"],
            "edge_ms": timing.head["onnxruntime"].median_ms + row["encode_ms"],
            "cloud_ms": timing.tail["onnxruntime"].median_ms + row["decode_ms"],
        }))
    full = bundle.file(FULL_ONNX)
    full_ms = profile.full["onnxruntime"].median_ms
    client = evaluate_client_only(full, test)
    manifest = bundle.base_manifest()
    manifest["client_only"] = {"onnx": FULL_ONNX, "accuracy": client["accuracy"],
                               "edge_ms": full_ms}
    manifest["server_only"] = {"onnx": FULL_ONNX, "cloud_ms": full_ms,
                               **server_only_reference(test, full)}
    manifest["dataset"] = {**manifest["dataset"], "eval_images": len(test)}
    return write_bundle(bundle.path, manifest, measured)
