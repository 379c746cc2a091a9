"""Rate/distortion/speed of codecs on real features, measured through real wire frames.

::

    calibration (N,C,H,W) ──codec.calibrate──▶ codec
    frames (M,C,H,W) ──wire.pack──▶ bytes ──wire.unpack──▶ x̂      (timed, repeated)
                                      │                     │
                                bytes_per_frame      mse, max_abs_err

Used by ``split-infer bench codecs``. Timings are wall clock where it runs, medians over
``frames × repeats`` calls, and include frame serialization, parsing and the CRC.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from split_infer.codecs._api import get_codec
from split_infer.codecs.entropy import histogram_entropy_bits
from split_infer.errors import EncodeError

__all__ = ["DEFAULT_BENCH_SPECS", "benchmark_codecs"]


def _default_specs() -> list[str]:
    specs = ["float32", "float32+zstd", "float16", "float16+zstd"]
    for bits in (8, 6, 4, 2):
        for per in ("tensor", "channel"):
            specs += [f"quant:bits={bits},per={per}+{b}" for b in ("raw", "zstd", "lz4", "rans")]
    specs += ["quant:bits=4,per=neuron+rans", "quant:bits=2,per=neuron+rans"]
    specs += ["quant:bits=8,per=tensor+png", "quant:bits=8,per=channel+png"]
    specs += [f"quant:bits=8,per=channel+jpeg:quality={q}" for q in (95, 75, 50, 20)]
    return specs


#: What ``benchmark_codecs`` measures when no specs are given.
DEFAULT_BENCH_SPECS: tuple[str, ...] = tuple(_default_specs())


def _as_batch(name: str, array: np.ndarray) -> np.ndarray:
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ValueError(f"{name} must be (N, *tensor_shape) with N >= 1, got {arr.shape}")
    return arr


def benchmark_codecs(
    calibration: np.ndarray,
    frames: np.ndarray,
    specs: Sequence[str] | None = None,
    repeats: int = 3,
    *,
    split_point: int = 0,
    ratio: float = 1.0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Calibrate each codec on ``calibration``, then pack/unpack every frame ``repeats`` times.

    Returns one dict per spec with keys ``spec`` (canonical), ``codec_id``, ``lossless``,
    ``bytes_per_frame`` (mean serialized wire frame), ``payload_bytes`` (mean), ``ratio``
    (float32 tensor bytes / bytes_per_frame), ``encode_ms`` and ``decode_ms`` (medians, frame
    included), ``bits_per_symbol`` (payload bits per element), ``empirical_entropy_bits``
    (entropy of the frames' symbol histogram for integer-symbol codecs, else None), ``mse``
    and ``max_abs_err`` against the float32 features. A spec the features' shape does not
    suit (e.g. an image stage on 2-D features) yields ``{"spec": ..., "error": ...}``.
    """
    # Imported here: wire imports split_infer.codecs, which this module is part of.
    from split_infer.wire import pack, unpack

    calib = _as_batch("calibration", calibration)
    batch = _as_batch("frames", frames)
    if calib.shape[1:] != batch.shape[1:]:
        raise ValueError(f"calibration {calib.shape[1:]} and frames {batch.shape[1:]} differ")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    specs = list(DEFAULT_BENCH_SPECS if specs is None else specs)
    elements = math.prod(batch.shape[1:])
    tensor_bytes = elements * 4
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs) * len(batch), unit="frame", disable=not progress)
    try:
        for spec in specs:
            bar.set_description(spec)
            codec = get_codec(spec)
            try:
                codec.calibrate(calib)
            except EncodeError as exc:
                results.append({"spec": codec.spec, "error": str(exc)})
                bar.update(len(batch))
                continue
            decoders = {codec.codec_id: codec}
            frame_bytes, payload_bytes, enc_ms, dec_ms = [], [], [], []
            sq_err = 0.0
            max_err = 0.0
            hist = np.zeros(codec.symbols.levels, np.int64) if codec.symbols.is_integer else None
            for seq, x in enumerate(batch):
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    data = pack(
                        codec,
                        x,
                        split_point=split_point,
                        ratio=ratio,
                        seq=seq,
                        stamp_ns=time.time_ns(),
                    )
                    t1 = time.perf_counter()
                    frame, y = unpack(data, decoders)
                    t2 = time.perf_counter()
                    enc_ms.append((t1 - t0) * 1e3)
                    dec_ms.append((t2 - t1) * 1e3)
                frame_bytes.append(len(data))
                payload_bytes.append(len(frame.payload))
                err = y.astype(np.float64) - x
                sq_err += float(np.square(err).sum())
                max_err = max(max_err, float(np.abs(err).max()))
                if hist is not None:
                    hist += np.bincount(codec.to_symbols(x).reshape(-1), minlength=len(hist))
                bar.update(1)
            mean_frame = statistics.fmean(frame_bytes)
            mean_payload = statistics.fmean(payload_bytes)
            results.append(
                {
                    "spec": codec.spec,
                    "codec_id": codec.codec_id,
                    "lossless": codec.lossless,
                    "bytes_per_frame": mean_frame,
                    "payload_bytes": mean_payload,
                    "ratio": tensor_bytes / mean_frame,
                    "encode_ms": statistics.median(enc_ms),
                    "decode_ms": statistics.median(dec_ms),
                    "bits_per_symbol": mean_payload * 8 / elements,
                    "empirical_entropy_bits": (
                        None if hist is None else histogram_entropy_bits(hist)
                    ),
                    "mse": sq_err / (elements * len(batch)),
                    "max_abs_err": max_err,
                }
            )
    finally:
        bar.close()
    return results
