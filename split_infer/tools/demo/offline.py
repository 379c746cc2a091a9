"""The offline main job: edge → codec → wire → cloud over CIFAR-10 test images, in-process.

It exercises exactly the per-frame path the ROS nodes run (one frame at a time, real wire
frames), and compares the split result with the unsplit model on the same images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from split_infer.codecs import get_codec
from split_infer.defaults import resolve_weights
from split_infer.models import get_model, split
from split_infer.pipeline.engine import CloudEngine, EdgeEngine, Route
from split_infer.pipeline.torch_backend import make_backend
from split_infer.training.datasets import load_dataset
from split_infer.training.features import head_features

__all__ = ["run_offline_demo"]


def run_offline_demo(
    model_name: str,
    weights: str | Path | None,
    split_point: str | int,
    codec_spec: str,
    images: int = 500,
    backend: str = "onnxruntime",
    out_dir: str | Path = "out/demo",
    dataset: str = "cifar10",
    calibration_images: int = 512,
    progress: bool = True,
) -> dict:
    """Run the pipeline frame by frame and write ``report.json``; returns the report."""
    if images < 1:
        raise ValueError("--images must be at least 1")
    codec = get_codec(codec_spec)  # a bad spec fails before any heavy loading
    model = get_model(model_name, weights=resolve_weights(model_name, weights))
    point = model.split_point(split_point)
    head, tail = split(model, point)
    test = load_dataset(dataset, "test").subset(images, seed=1)
    calibration = load_dataset(dataset, "train").subset(calibration_images, seed=2)

    codec.calibrate(head_features(head, calibration, progress=progress))

    example = torch.from_numpy(test.preprocessing(test.images[:1]))
    edge = EdgeEngine.single(make_backend(backend, head, example), codec, point.index)
    cloud = CloudEngine()
    cloud.add_route(point.index, 1.0, Route(codec, make_backend(backend, tail, head(example))))
    full = make_backend(backend, model, example)

    frame_bytes, edge_ms, cloud_ms = [], [], []
    split_correct = full_correct = agree = 0
    for seq in tqdm(range(len(test)), desc="frames", disable=not progress):
        x = test.preprocessing(test.images[seq])
        label = int(test.labels[seq])
        t0 = time.perf_counter()
        data = edge.encode(x, seq=seq, stamp_ns=time.time_ns())
        t1 = time.perf_counter()
        frame, logits = cloud.decode(data)
        t2 = time.perf_counter()
        if frame.seq != seq:
            raise RuntimeError(f"frame {seq} came back as {frame.seq}")
        frame_bytes.append(len(data))
        edge_ms.append((t1 - t0) * 1e3)
        cloud_ms.append((t2 - t1) * 1e3)
        split_pred, full_pred = int(np.argmax(logits)), int(np.argmax(full(x)))
        split_correct += int(split_pred == label)
        full_correct += int(full_pred == label)
        agree += int(split_pred == full_pred)

    feature_shape = tuple(int(d) for d in head(example).shape[1:])
    float32_bytes = int(np.prod(feature_shape)) * 4
    summary = {
        "model": model_name,
        "split_point": f"{point.index}:{point.name}",
        "codec": codec.spec,
        "backend": backend,
        "frames": len(test),
        "feature_shape": list(feature_shape),
        "top1_split_percent": round(100.0 * split_correct / len(test), 2),
        "top1_unsplit_percent": round(100.0 * full_correct / len(test), 2),
        "agreement_with_unsplit_percent": round(100.0 * agree / len(test), 2),
        "bytes_per_frame_mean": round(float(np.mean(frame_bytes)), 1),
        "float32_feature_bytes": float32_bytes,
        "compression_vs_float32": round(float32_bytes / float(np.mean(frame_bytes)), 1),
        "edge_ms_p50": round(float(np.median(edge_ms)), 3),
        "cloud_ms_p50": round(float(np.median(cloud_ms)), 3),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"summary": summary, "frame_bytes": frame_bytes}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
