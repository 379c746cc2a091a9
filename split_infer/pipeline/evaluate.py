"""Measure a bundle's configurations from real serialized wire frames.

For every configuration: the edge ONNX part runs over the test images (batched, since only
the wire path is per frame), each feature tensor is packed into a real wire frame, unpacked
by the cloud engine, and the cloud ONNX part classifies the batch of decoded features. The
accuracy and the bytes per frame are those of the frames that would cross the network, not
entropy estimates.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
from tqdm import tqdm

from split_infer.bundle import Bundle, BundleConfiguration
from split_infer.data import ArrayDataset
from split_infer.pipeline.backends import OrtBackend
from split_infer.pipeline.engine import CloudEngine, EdgeEngine

__all__ = ["evaluate_bundle", "evaluate_client_only"]


#: Input pixels per evaluation batch: 200 CIFAR images, 16 at 224 px. ONNX Runtime's CPU
#: arena keeps each session's peak, and an evaluation holds a session per part: a batch of
#: 200 at 224 px (a 321-MB first activation) ran a 27-configuration bundle out of 24 GB.
_BATCH_PIXELS = 200 * 64 * 64


def default_batch_size(dataset: ArrayDataset) -> int:
    """Images per evaluation batch for ``dataset``'s input size (at most 200)."""
    height, width = dataset.preprocessing.size
    return max(1, min(200, _BATCH_PIXELS // (height * width)))


def _batches(dataset: ArrayDataset, batch_size: int | None):
    batch_size = batch_size or default_batch_size(dataset)
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        yield start, dataset.preprocessing(dataset.images[start:stop])


def evaluate_bundle(
    bundle: Bundle,
    dataset: ArrayDataset,
    configs: Iterable[BundleConfiguration] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Top-1 and bytes per frame of each configuration on ``dataset`` via real wire frames.

    Returns one dict per configuration: id, split_point, ratio, codec, accuracy (fraction),
    correct, frames, bytes_per_frame (mean), bytes_min/max, encode_ms/decode_ms (median per
    frame, codec + wire only), predictions (list of class ids, for frame-by-frame checks).
    """
    configs = list(configs if configs is not None else bundle.configurations)
    edge = EdgeEngine.from_bundle(bundle, configs)
    cloud = CloudEngine.from_bundle(bundle, configs)
    # Configurations sharing an edge part (rateless ratios, several codecs at one split) reuse
    # its features: run each edge part once per batch.
    edge_parts = {c.edge_onnx: edge.activate(c.split_point, c.ratio).part for c in configs}
    results = {c.id: {"predictions": [], "bytes": [], "enc": [], "dec": []} for c in configs}
    total = len(dataset) * len(configs)
    bar = tqdm(total=total, desc="eval frames", disable=not progress, leave=False)
    for start, x in _batches(dataset, batch_size):
        features_by_part = {name: part(x) for name, part in edge_parts.items()}
        for config in configs:
            edge_config = edge.activate(config.split_point, config.ratio)
            decoded = []
            record = results[config.id]
            for i, features in enumerate(features_by_part[config.edge_onnx]):
                sent = features if config.keep_channels is None else features[
                    : config.keep_channels]
                t0 = time.perf_counter()
                data = EdgeEngine.pack_features(edge_config, sent, seq=start + i, stamp_ns=0)
                t1 = time.perf_counter()
                frame, received = cloud.features(data)
                t2 = time.perf_counter()
                if frame.seq != start + i or frame.config != config.key:
                    raise RuntimeError(f"frame {start + i} decoded as {frame.seq} {frame.config}")
                record["bytes"].append(len(data))
                record["enc"].append((t1 - t0) * 1e3)
                record["dec"].append((t2 - t1) * 1e3)
                decoded.append(received[0])
            # The cloud engine's own session: a batch through the same part frames go through.
            logits = cloud.route(config.split_point, config.ratio).part(np.stack(decoded))
            record["predictions"].extend(int(p) for p in logits.argmax(1))
            bar.update(len(decoded))
    bar.close()
    rows = []
    labels = dataset.labels
    for config in configs:
        record = results[config.id]
        predictions = np.asarray(record["predictions"])
        correct = int((predictions == labels).sum())
        rows.append({
            "id": config.id,
            "split_point": config.split_point,
            "split_name": config.split_name,
            "ratio": config.ratio,
            "codec": config.codec,
            "method": config.method,
            "frames": len(predictions),
            "correct": correct,
            "accuracy": correct / len(predictions),
            "bytes_per_frame": float(np.mean(record["bytes"])),
            "bytes_min": int(np.min(record["bytes"])),
            "bytes_max": int(np.max(record["bytes"])),
            "encode_ms": float(np.median(record["enc"])),
            "decode_ms": float(np.median(record["dec"])),
            "predictions": predictions.tolist(),
        })
    return rows


def evaluate_client_only(onnx_path, dataset: ArrayDataset, batch_size: int | None = None
                         ) -> dict:
    """Top-1 of the unsplit model (the client-only / server-only reference)."""
    model = OrtBackend(onnx_path)
    predictions = np.concatenate([model(x).argmax(1) for _, x in _batches(dataset, batch_size)])
    correct = int((predictions == dataset.labels).sum())
    return {"frames": len(predictions), "correct": correct,
            "accuracy": correct / len(predictions), "predictions": predictions.tolist()}
