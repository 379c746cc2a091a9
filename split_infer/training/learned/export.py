"""Export of trained configurations into a bundle, and timing of their ONNX parts.

::

    TrainedConfig + kept SearchRows ─▶ onnx/<tag>_edge.onnx      head + encoder
                                    ─▶ onnx/<tag>_cloud.onnx     decoder + tail
                                    ─▶ weights/<tag>.safetensors pair (+ fine-tuned backbone)
                                    ─▶ calibration/<id>.safetensors per kept row (wire codec)
                                    ─▶ calibration/<tag>_fill.safetensors (pair.fill_values)
    <tag> = split<i>_<method>[_r<ratio>] (no ratio for a model serving every ratio);
    <id>  = <tag>[_k<keep>] (one per kept-channel count of a rateless model)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from split_infer.bundle import Bundle, BundleConfiguration, write_bundle
from split_infer.codecs import get_codec
from split_infer.codecs.learned import get_method
from split_infer.models.macs import count_macs
from split_infer.pipeline.backends import OrtBackend
from split_infer.pipeline.parts import part_bytes
from split_infer.pipeline.torch_backend import export_onnx
from split_infer.training.baseline import _measured_ratio
from split_infer.training.learned.data import SplitData
from split_infer.training.learned.parts import TrainedConfig, _calibration_features, _Parts
from split_infer.training.learned.search import SearchRow

__all__: list[str] = []


@dataclass
class _Exported:
    configurations: list[BundleConfiguration]
    learned: dict[str, dict[str, Any]]


def _save_module_weights(path: Path, module: nn.Module, metadata: dict[str, Any],
                         net: nn.Module | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {f"bottleneck.{k}": v.detach().contiguous().cpu()
               for k, v in module.state_dict().items()}
    if net is not None:
        tensors.update({f"backbone.{k}": v.detach().contiguous().cpu()
                        for k, v in net.state_dict().items()})
    save_file(tensors, str(path), metadata={"describe": json.dumps(metadata)})


def _export_trained(out: Path, trained: TrainedConfig, rows: list[SearchRow],
                    example: torch.Tensor, data: SplitData, taken: set[float],
                    backbone_macs: int) -> _Exported:
    """ONNX parts, calibration, fill and weights for the kept rows of one trained model."""
    from safetensors.numpy import save_file

    b = trained.bottleneck.eval()
    if trained.net is not None:
        trained.net.eval()
    i, method = trained.split_index, trained.method
    tag = f"split{i}_{method}" + ("" if get_method(method).rateless else
                                  f"_r{trained.ratio:g}")
    code_example = torch.zeros(1, *b.code_shape)
    if trained.net is None:
        # Frozen backbone: the bundle's tapped whole model holds it once; only the bottleneck
        # is exported, and the parts are chained at load (bundle.part_components).
        encoder_onnx, decoder_onnx = f"onnx/{tag}_encoder.onnx", f"onnx/{tag}_decoder.onnx"
        with torch.no_grad():
            feature_example = trained.head(example)
        export_onnx(b.encoder, feature_example, out / encoder_onnx)
        export_onnx(b.decoder, code_example, out / decoder_onnx)
        edge_onnx, cloud_onnx = f"model[0:{i}]+{encoder_onnx}", f"{decoder_onnx}+model[{i}:]"
    else:  # fine-tuned with its bottleneck (Hu & K): a backbone of its own
        edge_onnx, cloud_onnx = f"onnx/{tag}_edge.onnx", f"onnx/{tag}_cloud.onnx"
        export_onnx(nn.Sequential(trained.head, b.encoder), example, out / edge_onnx)
        export_onnx(nn.Sequential(b.decoder, trained.tail), code_example, out / cloud_onnx)
    weights = f"weights/{tag}.safetensors"
    _save_module_weights(out / weights, b, b.describe(), None if trained.net is None
                         else trained.net.net)
    features = _calibration_features(_Parts.of(trained, data), data)
    codes = b.encode_array(features)
    overhead = {"encoder_macs": count_macs(b.encoder, b.feature_shape),
                "decoder_macs": count_macs(b.decoder, b.code_shape),
                "backbone_macs": backbone_macs}
    overhead["fraction"] = (overhead["encoder_macs"] + overhead["decoder_macs"]) / backbone_macs
    feature_nbytes = math.prod(b.feature_shape) * 4
    fill = None
    fill_values = b.fill_values()
    if fill_values is not None:
        fill = f"calibration/{tag}_fill.safetensors"
        save_file(fill_values, str(out / fill))
    configurations, learned = [], {}
    for row in rows:
        keep = row.keep_channels
        sent = codes if keep is None else np.ascontiguousarray(codes[:, :keep])
        codec = get_codec(b.wire_codec).calibrate(sent)
        config_id = tag if keep is None else f"{tag}_k{keep}"
        calibration_file = None
        if codec.state_dict():
            calibration_file = f"calibration/{config_id}.safetensors"
            save_file(codec.state_dict(), str(out / calibration_file))
        configurations.append(BundleConfiguration(
            id=config_id, split_point=i, split_name=trained.split_name,
            ratio=_measured_ratio(codec, sent, taken, reference_nbytes=feature_nbytes),
            codec=codec.spec, feature_shape=b.code_shape, edge_onnx=edge_onnx,
            cloud_onnx=cloud_onnx, method=method, keep_channels=keep,
            calibration=calibration_file, fill=fill))
        learned[config_id] = {**b.describe(), "nominal_ratio": row.ratio,
                              "search_accuracy": row.accuracy, "loss_points": row.loss_points,
                              "weights": weights, "overhead": overhead,
                              **({"keep_channels": keep} if keep is not None else {}),
                              **{k: v for k, v in trained.extra.items()
                                 if k in b.reported_extras}}
    return _Exported(configurations, learned)


def _time_part(model: bytes, shape: Sequence[int], repeats: int) -> float:
    backend = OrtBackend(model, 1)
    x = np.zeros((1, *shape), np.float32)
    backend(x)
    times = []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        backend(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _retime_learned(bundle: Bundle, repeats: int) -> Bundle:
    """``measure_bundle`` times the backbone's head/tail; a learned configuration's parts
    also run the encoder/decoder, so they are timed as exported."""
    from split_infer.pipeline.profiling import ModelProfile

    profile = ModelProfile.from_dict(bundle.manifest["profile"])
    timed: dict[str, float] = {}
    input_shape = bundle.manifest["model"]["input_shape"]
    updated = []
    for config in bundle.configurations:
        if config.method == "baseline":
            updated.append(config)
            continue
        split_timing = profile.split(config.split_point)
        encode_ms = (config.edge_ms or 0) - split_timing.head["onnxruntime"].median_ms
        decode_ms = (config.cloud_ms or 0) - split_timing.tail["onnxruntime"].median_ms
        if config.edge_onnx not in timed:
            timed[config.edge_onnx] = _time_part(part_bytes(bundle, config.edge_onnx),
                                                 input_shape, repeats)
        if config.cloud_onnx not in timed:
            timed[config.cloud_onnx] = _time_part(part_bytes(bundle, config.cloud_onnx),
                                                  config.feature_shape, repeats)
        updated.append(BundleConfiguration.from_dict({
            **config.to_dict(), "edge_ms": timed[config.edge_onnx] + max(encode_ms, 0.0),
            "cloud_ms": timed[config.cloud_onnx] + max(decode_ms, 0.0)}))
    manifest = bundle.base_manifest()
    return write_bundle(bundle.path, manifest, updated)

