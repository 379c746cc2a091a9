"""Add "send the camera image" to a bundle: a split-0 configuration whose wire frames carry the
model's input crop as a colour JPEG and whose cloud part is the whole model.

::

    camera frame ─▶ preprocessing (crop, normalise) ─▶ model[0:0] (the input as it is)
        ─▶ quant:bits=8 over the input's exact range ─▶ jpeg_rgb ─▶ wire frame (split 0)
        ─▶ cloud: decode ─▶ model[0:] (the whole model) ─▶ logits

The thesis's server-only strategy (Ulhaq §4.2, eq. 4.3) is a reference the planner compares
against; as a bundle configuration it is one more choice the scheduler makes at run time, so
on a fast link a weak robot can hand the whole model to the server. The quantizer's clip
interval is the preprocessed range of a black and a white image, so the 8-bit symbols are the
crop's pixels (to within half a bin) and no calibration data is needed; accuracy, bytes per
frame and the ratio are measured from real wire frames on the bundle's evaluation images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from split_infer.bundle import Bundle, BundleConfiguration, write_bundle
from split_infer.codecs import Codec, get_codec
from split_infer.data import ArrayDataset, Preprocessing
from split_infer.pipeline.evaluate import evaluate_bundle
from split_infer.pipeline.profiling import ModelProfile
from split_infer.training.baseline import _measured_ratio
from split_infer.training.datasets import load_dataset

__all__ = ["INPUT_SPLIT_NAME", "add_input_jpeg_configuration", "input_codec",
           "input_configuration_id"]

#: ``split_name`` of a split-0 configuration.
INPUT_SPLIT_NAME = "input"


def input_configuration_id(quality: int) -> str:
    """The bundle id of the input-JPEG configuration at ``quality``."""
    return f"split0_jpeg_q{int(quality)}"


def input_codec(preprocessing: Preprocessing, quality: int) -> Codec:
    """The calibrated codec of the input image: 8-bit bins spanning exactly the preprocessed
    values of pixels 0..255 in each channel, then colour JPEG at ``quality``."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    height, width = preprocessing.size
    recipe = preprocessing.at_input_size()
    extremes = recipe(np.stack([np.full((height, width, 3), value, np.uint8)
                                for value in (0, 255)]))
    # Over one black and one white image, each channel's μ ± 1σ is exactly its value range.
    return get_codec(f"quant:bits=8,w=1,per=channel+jpeg_rgb:quality={quality}"
                     ).calibrate(extremes)


def add_input_jpeg_configuration(bundle_dir: str | Path, quality: int = 90, *,
                                 data_path: str | Path | None = None,
                                 test: ArrayDataset | None = None,
                                 progress: bool = True) -> BundleConfiguration:
    """Add (or replace) the input-JPEG configuration of an assembled bundle, measured on the
    bundle's evaluation images (``data_path``: where its data set is, default its usual
    place; ``test``: these images instead); returns the configuration as written."""
    from safetensors.numpy import save_file

    bundle = Bundle.load(bundle_dir)
    preprocessing = Preprocessing.from_dict(bundle.manifest["preprocessing"])
    codec = input_codec(preprocessing, quality)
    if test is None:
        dataset = bundle.manifest.get("dataset")
        dataset = dataset if isinstance(dataset, dict) else {}
        test = load_dataset(dataset.get("name", "cifar10"), "test", data_path,
                            recipe=preprocessing)
        if dataset.get("eval_images") and dataset["eval_images"] < len(test):
            test = test.subset(int(dataset["eval_images"]), seed=1)
    config_id = input_configuration_id(quality)
    others = [c for c in bundle.configurations if c.id != config_id]
    taken = {c.key[1] for c in others if c.split_point == 0}
    sample = test.preprocessing(test.images[:32])
    calibration = f"calibration/{config_id}.safetensors"
    (bundle.path / "calibration").mkdir(exist_ok=True)
    save_file(codec.state_dict(), str(bundle.path / calibration))
    config = BundleConfiguration(
        id=config_id, split_point=0, split_name=INPUT_SPLIT_NAME,
        ratio=_measured_ratio(codec, sample, taken), codec=codec.spec,
        feature_shape=tuple(int(d) for d in sample.shape[1:]), edge_onnx="model[0:0]",
        cloud_onnx="model[0:]", method="baseline", calibration=calibration)
    bundle = write_bundle(bundle.path, bundle.base_manifest(), [*others, config])
    config = bundle.configuration_by_id(config_id)
    (row,) = evaluate_bundle(bundle, test, [config], progress=progress)
    profile = bundle.manifest.get("profile")
    # No model runs on the edge: its time is the codec's. The cloud runs the whole model, as
    # profiled; a bundle without a profile leaves the cloud time unmeasured.
    cloud_ms = (ModelProfile.from_dict(profile).full["onnxruntime"].median_ms + row["decode_ms"]
                if profile else None)
    measured = BundleConfiguration.from_dict({
        **config.to_dict(), "accuracy": row["accuracy"],
        "bytes_per_frame": row["bytes_per_frame"], "edge_ms": row["encode_ms"],
        "cloud_ms": cloud_ms})
    bundle = write_bundle(bundle.path, bundle.base_manifest(), [*others, measured])
    return bundle.configuration_by_id(config_id)
