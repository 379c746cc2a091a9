"""A real, verified bundle built in seconds without any data set: an untrained ResNet-8
(CIFAR-style, 32×32), two split points × two codecs plus one rateless configuration (channel
prefix + calibrated fill), ONNX parts and codec calibration on random images.

Accuracy is meaningless; every byte path is the production one. The tests, the fuzzer and
anyone trying the nodes on a fresh machine use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "TINY_CODECS",
    "TINY_SPLITS",
    "build_tiny_bundle",
    "random_images",
    "with_measurements",
]

#: (codec spec, ratio) pairs of the tiny bundle's baseline configurations, per split point.
TINY_CODECS: tuple[tuple[str, float], ...] = (
    ("quant:bits=8+raw", 4.0),
    ("quant:bits=4,per=channel+zstd", 8.0),
)
TINY_SPLITS: tuple[int, ...] = (2, 3)
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def random_images(count: int, seed: int = 0, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """``count`` random uint8 RGB images ``(N, H, W, 3)``: camera frames whose labels do not
    matter."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *size, 3), dtype=np.uint8)


def build_tiny_bundle(out_dir: str | Path, *, calibration_images: int = 32, seed: int = 0,
                      codecs: tuple[tuple[str, float], ...] = TINY_CODECS,
                      splits: tuple[int, ...] = TINY_SPLITS):
    """Build a small real bundle in ``out_dir`` and return the loaded :class:`Bundle`.

    Configurations: for each split point in ``splits`` one per ``codecs`` entry, plus a
    rateless ``(last split, 16.0)`` configuration that sends half the channels and fills the
    rest with calibrated channel means.
    """
    import torch
    from safetensors.numpy import save_file

    from split_infer.bundle import BundleConfiguration, write_bundle
    from split_infer.codecs import get_codec
    from split_infer.data import Preprocessing
    from split_infer.models import get_model, save_weights, split
    from split_infer.pipeline.torch_backend import export_onnx, export_tapped

    torch.manual_seed(seed)
    out = Path(out_dir)
    for sub in ("weights", "onnx", "calibration"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    model = get_model("resnet8_cifar")
    preprocessing = Preprocessing()
    images = random_images(calibration_images, seed=seed + 1)
    x = torch.from_numpy(preprocessing(images))
    _spread_classifier(model, x)
    save_weights(model, out / "weights" / "backbone.safetensors")
    export_tapped(model.blocks, x[:1], out / "onnx" / "full.onnx")

    configurations: list[BundleConfiguration] = []
    for point_index in splits:
        point = model.split_point(point_index)
        head, tail = split(model, point)
        edge_onnx, cloud_onnx = f"onnx/edge_{point.index}.onnx", f"onnx/cloud_{point.index}.onnx"
        with torch.no_grad():
            features = head.eval()(x).numpy()
        export_onnx(head, x[:1], out / edge_onnx)
        export_onnx(tail, torch.from_numpy(features[:1]), out / cloud_onnx)
        shape = tuple(int(d) for d in features.shape[1:])
        variants: list[tuple[str, float, int | None]] = [(s, r, None) for s, r in codecs]
        if point_index == splits[-1]:
            variants.append(("quant:bits=8+raw", 16.0, shape[0] // 2))
        for spec, ratio, keep in variants:
            config_id = f"s{point.index}_r{ratio:g}"
            sent = features if keep is None else features[:, :keep]
            codec = get_codec(spec, shape=sent.shape[1:]).calibrate(sent)
            calibration = f"calibration/{config_id}.safetensors"
            save_file(codec.state_dict(), str(out / calibration))
            fill = None
            if keep is not None:
                fill = f"calibration/{config_id}_fill.safetensors"
                save_file({"channel_mean": features.mean(axis=(0, 2, 3)).astype(np.float32)},
                          str(out / fill))
            configurations.append(BundleConfiguration(
                id=config_id, split_point=point.index, split_name=point.name, ratio=ratio,
                codec=codec.spec, feature_shape=shape, edge_onnx=edge_onnx,
                cloud_onnx=cloud_onnx, method="baseline" if keep is None else "rateless",
                keep_channels=keep, calibration=calibration, fill=fill))
    manifest = {
        "model": {"name": "resnet8_cifar", "weights": "weights/backbone.safetensors",
                  "onnx": "onnx/full.onnx"},
        "dataset": "random",
        "preprocessing": preprocessing.to_dict(),
        "classes": CIFAR_CLASSES,
    }
    return write_bundle(out, manifest, configurations)


def with_measurements(bundle, out_dir: str | Path, measure, *,
                      files: dict[str, bytes] | None = None, **manifest_extra):
    """A copy of ``bundle`` in ``out_dir`` whose configurations carry the fields
    ``measure(config)`` returns (accuracy, bytes_per_frame, ...), with ``files`` added and
    ``manifest_extra`` in its manifest: what planning, the scheduler and the edge-only
    fallback read from a measured bundle."""
    import shutil

    from split_infer.bundle import BundleConfiguration, write_bundle

    out = Path(out_dir)
    shutil.copytree(bundle.path, out)
    for name, data in (files or {}).items():
        (out / name).write_bytes(data)
    manifest = bundle.base_manifest()
    manifest.update(manifest_extra)
    configurations = [BundleConfiguration.from_dict({**c.to_dict(), **measure(c)})
                      for c in bundle.configurations]
    return write_bundle(out, manifest, configurations)


def _spread_classifier(model, x) -> None:
    """Re-initialise the classifier on standardised pooled features of ``x``.

    An untrained ResNet predicts the same class for nearly every input, so a test comparing
    top-1 against an offline run could not fail; with a classifier that sees standardised
    features, random images get varied predictions.
    """
    import torch

    from split_infer.models import split

    head, _ = split(model, model.split_points()[-1])
    with torch.no_grad():
        pooled = head.eval()(x).mean(dim=(2, 3))
        mean, std = pooled.mean(0), pooled.std(0) + 1e-6
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(model.num_classes, pooled.shape[1], generator=generator) / std
        model.net.fc.weight.copy_(weight)
        model.net.fc.bias.copy_(-(weight * mean).sum(1))
