"""The accuracy-aware search at one split (BottleNet Alg. 1, BBNet Alg. 1) and BottleNet's
compression-aware vs naive comparison (§3.3, Fig. 7).

::

    ratios low → high ─▶ train_config ─▶ loss = reference − accuracy ─▶ SearchRow
                          └─ stop after the first row over the threshold (early exit)
    rateless method ─▶ one train_config ─▶ one SearchRow per kept-channel count
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from split_infer.codecs.learned import get_method
from split_infer.training.learned.data import SplitData
from split_infer.training.learned.parts import (
    TrainedConfig,
    _calibration_features,
    _Parts,
    _wire_codec_ste,
    evaluate_config,
)
from split_infer.training.learned.trainer import train_config

__all__ = ["SearchRow", "compare_compression_aware", "search_split"]


@dataclass
class SearchRow:
    """One tried configuration of the accuracy-aware search."""

    split: int
    method: str
    ratio: float  # nominal ratio (γ, V, C/k, element ratio)
    accuracy: float  # % on the search set
    loss_points: float
    within: bool
    keep_channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _ratios_for(method: str, ratios: Sequence[float] | dict[str, Sequence[float]] | None
                ) -> list[float]:
    """The ratios ``method`` tries: given per method or for all, else its default ladder;
    restricted to the ratios it supports."""
    spec = get_method(method)
    chosen = ratios.get(method) if isinstance(ratios, dict) else ratios
    values = [float(r) for r in (chosen or spec.default_ratios)]
    if spec.supported_ratios is not None:
        values = [r for r in values if r in spec.supported_ratios] or list(spec.default_ratios)
    return sorted(set(values))


def search_split(data: SplitData, method: str, ratios: Sequence[float], *, work_dir: Path,
                 reference_accuracy: float, threshold_points: float = 2.0,
                 frozen: bool = True, options: dict[str, Any] | None = None,
                 progress: bool = True, early_exit: bool = True,
                 shared: dict[str, Any] | None = None
                 ) -> tuple[list[SearchRow], list[TrainedConfig]]:
    """Accuracy-aware search at one split (BottleNet Alg. 1 lines 19-30, BBNet Alg. 1 with
    its early exit): ratios from low to high compression, each trained and measured through
    the real wire codec; the loss is ``reference_accuracy − accuracy`` in points. The search
    stops after the first ratio whose loss exceeds ``threshold_points`` (compression only
    gets harder from there). A rateless model is trained once and measured at every k."""
    rows: list[SearchRow] = []
    trained: list[TrainedConfig] = []
    ratios = sorted(float(r) for r in ratios)
    if get_method(method).rateless:
        result = train_config(data, method, None, work_dir=work_dir, frozen=frozen,
                              options=options, ratios=ratios, progress=progress, shared=shared)
        trained.append(result)
        seen: set[int] = set()
        for r in ratios:
            k = result.bottleneck.keep_channels(r)
            if k is None or k in seen:  # two requested ratios that round to the same count
                continue
            seen.add(k)
            acc = result.extra["per_keep"][str(k)]["accuracy"]
            loss = reference_accuracy - acc
            rows.append(SearchRow(data.point.index, method, result.bottleneck.prefix_ratio(k),
                                  acc, loss, loss <= threshold_points, k,
                                  {"code_bytes": result.extra["per_keep"][str(k)]["code_bytes"]}))
            tqdm.write(f"split {data.point.name} {method} k={k} (×{rows[-1].ratio:g}): "
                       f"{acc:.2f}% (loss {loss:+.2f} points)")
        return rows, trained
    for r in ratios:
        result = train_config(data, method, r, work_dir=work_dir, frozen=frozen, options=options,
                              progress=progress, shared=shared)
        loss = reference_accuracy - result.accuracy
        reported = result.bottleneck.reported_extras
        row = SearchRow(data.point.index, method, r, result.accuracy, loss,
                        loss <= threshold_points, None,
                        {"code_bytes": result.code_bytes, **{
                            k: v for k, v in result.extra.items() if k in reported}})
        rows.append(row)
        trained.append(result)
        tqdm.write(f"split {data.point.name} {method} ×{r:g}: {result.accuracy:.2f}% "
                   f"(loss {loss:+.2f} points, {result.code_bytes:.0f} B/frame codec payload)")
        if early_exit and not row.within:
            break
    return rows, trained


def compare_compression_aware(data: SplitData, *, ratio: float = 16.0,
                              qualities: Sequence[int] = (90, 50, 20), work_dir: Path,
                              frozen: bool = True, progress: bool = True) -> list[dict]:
    """BottleNet's Fig. 7: accuracy loss of the *naive* way (the unit trained without the
    codec, JPEG inserted afterwards) against *compression-aware* training (JPEG in the
    forward pass, identity backward), for each JPEG ``quality`` at one split and ratio.

    Returns one row per quality: codec bytes per frame and search-set top-1 of both.
    """
    # The experiment of one paper on that paper's method and codec, not a per-method branch.
    naive = train_config(data, "bottlenet", ratio, work_dir=work_dir, frozen=frozen,
                         options={"codec_in_loop": False}, progress=progress)
    rows = []
    for quality in qualities:
        spec = f"quant:bits=8,per=channel+jpeg:quality={quality}"
        aware = train_config(data, "bottlenet", ratio, work_dir=work_dir, frozen=frozen,
                             options={"wire_codec": spec}, progress=progress)
        parts = _Parts.of(naive, data)
        naive.bottleneck.wire_codec = spec
        codes = naive.bottleneck.encode_array(_calibration_features(parts, data))
        ste = _wire_codec_ste(naive.bottleneck, codes)
        naive_accuracy = evaluate_config(parts, naive.bottleneck, data, ste)
        rows.append({"quality": quality, "ratio": ratio,
                     "naive_accuracy": naive_accuracy,
                     "naive_bytes": ste.bytes_seen / max(ste.frames_seen, 1),
                     "aware_accuracy": aware.accuracy, "aware_bytes": aware.code_bytes})
    return rows
