"""``train_bundle``: slimming, search and export at every split, then one measured bundle.

::

    dataset ─▶ train / search / eval images (disjoint search and eval)
    backbone ─▶ [slim_backbone] ─▶ reference top-1 on the search set
    per split: baseline codecs ─▶ SplitData ─▶ per method: search_split ─▶ keep rows
               (within / best / all) ─▶ export ─▶ bundle configurations
    manifest ─▶ write_bundle ─▶ measure_bundle (real wire frames) ─▶ learned parts retimed
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from split_infer.bundle import Bundle, BundleConfiguration, write_bundle
from split_infer.codecs import get_codec
from split_infer.codecs.learned import get_method, get_slimming, list_methods
from split_infer.data import ArrayDataset
from split_infer.defaults import resolve_weights
from split_infer.errors import UserError
from split_infer.models import get_model, save_weights, split
from split_infer.models.macs import count_macs
from split_infer.pipeline.torch_backend import export_tapped
from split_infer.training.baseline import (
    DEFAULT_BASELINE_CODECS,
    FULL_ONNX,
    bundle_manifest,
    default_split_points,
    export_baseline_split,
    measure_bundle,
)
from split_infer.training.datasets import load_dataset
from split_infer.training.features import head_features
from split_infer.training.learned.data import LearnedTrainConfig, SplitData
from split_infer.training.learned.export import _export_trained, _retime_learned
from split_infer.training.learned.search import _ratios_for, search_split
from split_infer.training.learned.slimming import slim_backbone

__all__ = ["train_bundle"]


def _search_and_eval_sets(test: ArrayDataset, train: ArrayDataset, eval_images: int | None,
                          search_images: int) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset]:
    """(train, search, eval): the search set is disjoint from the images the bundle is
    measured on (a held-out part of the test split, or of the training split when the whole
    test split is measured)."""
    def pick(ds: ArrayDataset, idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset(ds.name, ds.images[idx], ds.labels[idx], ds.classes,
                            ds.preprocessing)

    n = len(test)
    if eval_images is not None and eval_images < n:
        # The same draw as ArrayDataset.subset(eval_images, seed=1), as build_baseline_bundle.
        eval_idx = np.sort(np.random.default_rng(1).choice(n, eval_images, replace=False))
        rest = np.setdiff1d(np.arange(n), eval_idx)
        search_idx = np.sort(np.random.default_rng(4).choice(
            rest, min(search_images, len(rest)), replace=False))
        return train, pick(test, search_idx), pick(test, eval_idx)
    m = len(train)
    held = np.sort(np.random.default_rng(4).choice(m, min(search_images, m // 5), replace=False))
    kept = np.setdiff1d(np.arange(m), held)
    return pick(train, kept), pick(train, held), test


def _label_free(model, train: ArrayDataset, test: ArrayDataset, settings: LearnedTrainConfig,
                progress: bool) -> tuple[ArrayDataset, ArrayDataset, LearnedTrainConfig]:
    """Pseudo-labels from the unsplit model for the training images (and for the test
    images when they have no labels), and the distillation-only loss."""
    from split_infer.training.distill import pseudo_labelled

    classes = list(test.classes) or [str(i) for i in range(model.num_classes)]
    train = pseudo_labelled(model, train, classes, progress=progress)
    if (test.labels < 0).any():
        test = pseudo_labelled(model, test, classes, progress=progress)
    return train, test, replace(settings, cross_entropy=0.0, distill=settings.distill or 1.0)


def train_bundle(
    model_name: str,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    weights: str | Path | None = None,
    dataset: str = "cifar10",
    data_path: str | Path | None = None,
    split_points: Sequence[int | str] | None = None,
    ratios: Sequence[float] | dict[str, Sequence[float]] | None = None,
    epochs: int = 3,
    threshold_points: float = 2.0,
    freeze_backbone: bool = True,
    work_dir: str | Path | None = None,
    train_images: int | None = None,
    eval_images: int | None = 1000,
    search_images: int = 1000,
    keep: str = "within",
    method_options: dict[str, dict[str, Any]] | None = None,
    baseline_codecs: Sequence[str] | None = None,
    slim: float | None = None,
    slim_epochs: tuple[int, int] = (1, 1),
    settings: LearnedTrainConfig | None = None,
    profile_repeats: int = 10,
    force: bool = False,
    progress: bool = True,
    label_free: bool = False,
    learned_split_points: Sequence[int | str] | None = None,
    train_set: ArrayDataset | None = None,
    test_set: ArrayDataset | None = None,
) -> Bundle:
    """Train learned bottlenecks at split points, run the accuracy-aware search and write a
    bundle with every kept configuration (plus baseline codecs with ``"baseline"``).

    * ``methods``: any of :func:`~split_infer.codecs.learned.list_methods` and ``"baseline"``
      (the codecs of ``baseline_codecs``, default those of ``build_baseline_bundle``).
    * ``weights``: backbone safetensors (default: the shipped weights of ``model_name``).
    * ``split_points``: indices or block names (default: three spread over the network).
    * ``ratios``: nominal ratios tried by every method (a list) or per method (a dict);
      default each method's ladder (Hu & K: γ = 2, 4, 8; AECNN: V = 2…64; rateless: C/k).
    * ``epochs``: per training stage; ``settings`` holds the other hyper-parameters.
    * ``threshold_points``: accepted top-1 loss against the uncompressed backbone on the
      search set (BottleNet §3.2 uses 2, BBNet 2.5).
    * ``freeze_backbone``: train only encoder/decoder on precomputed features (fast path);
      False fine-tunes the backbone too (Hu & K end to end), one backbone copy per
      configuration.
    * ``keep``: ``"within"`` exports every tried configuration within the threshold,
      ``"best"`` only the highest compression within it per (split, method) (Alg. 1's
      output), ``"all"`` every ratio asked for (the search then does not stop at the first
      ratio over the threshold).
    * ``work_dir``: checkpoints (default ``<out_dir>.work`` next to the bundle); reruns skip
      finished configurations and resume unfinished ones.
    * ``train_images``: a random subset of the training split (None: all of it).
    * ``eval_images``: test images the bundle is measured on from real wire frames (None:
      the whole test split); ``search_images``: disjoint images the search measures on.
    * ``method_options``: per-method builder options, e.g. ``{"bottlenet": {"wire_codec":
      "quant:bits=8,per=channel+rans", "spatial": 2}, "hu_ae": {"codec_in_loop": True}}``.
    * ``slim``: BBNet network slimming of the backbone first (fraction pruned, e.g. 0.4;
      ``slim_epochs`` = (sparse-training, fine-tuning) epochs); the slimmed backbone is then
      the bundle's backbone.
    * ``learned_split_points``: where the learned methods train (default: every split point;
      the baseline codecs are calibrated at all of ``split_points``).
    * ``train_set`` / ``test_set``: data sets already loaded (instead of ``dataset``'s
      splits), e.g. unlabelled robot footage and a labelled evaluation set.
    * ``label_free``: the training and search images' labels are replaced by the unsplit
      model's top-1 (:mod:`split_infer.training.distill`), the loss is the distillation term
      alone (``settings.distill``, default 1; cross-entropy weight 0), and the search bounds
      the loss of *agreement* with the unsplit model. The bundle is measured on
      ``test_set`` against its own labels (pseudo-labels too when it has none). Beyond the
      seed papers, which all train with labels.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    if keep not in ("within", "best", "all"):
        raise ValueError(f"keep must be 'within', 'best' or 'all', got {keep!r}")
    methods = list(dict.fromkeys(methods))
    learned_methods = [m for m in methods if m != "baseline"]
    for m in learned_methods:
        get_method(m)  # unknown names fail before any work
    if not methods:
        raise ValueError(f"no methods given; choose from {['baseline', *list_methods()]}")
    codec_specs = list(baseline_codecs or DEFAULT_BASELINE_CODECS) if "baseline" in methods \
        else []
    for spec in codec_specs:
        get_codec(spec)
    settings = replace(settings or LearnedTrainConfig(), epochs=epochs)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)

    model = get_model(model_name, weights=resolve_weights(model_name, weights))
    train_full = train_set if train_set is not None else load_dataset(dataset, "train",
                                                                      data_path)
    test_full = test_set if test_set is not None else load_dataset(dataset, "test", data_path)
    if label_free:
        train_full, test_full, settings = _label_free(model, train_full, test_full, settings,
                                                      progress)
    if len(test_full.classes) != model.num_classes:
        raise ValueError(f"{model_name} has {model.num_classes} outputs but {test_full.name} "
                         f"has {len(test_full.classes)} classes")
    if label_free:  # the search measures agreement: on held-out pseudo-labelled images
        train, search, _ = _search_and_eval_sets(train_full, train_full, None, search_images)
        test = test_full if eval_images is None else test_full.subset(eval_images, seed=1)
    else:
        train, search, test = _search_and_eval_sets(test_full, train_full, eval_images,
                                                    search_images)
    if train_images is not None:
        train = train.subset(train_images, seed=3)

    slimming = None
    if slim:
        slimming = slim_backbone(model, train, search, fraction=slim,
                                 sparse_epochs=slim_epochs[0], finetune_epochs=slim_epochs[1],
                                 settings=settings, work_dir=work, progress=progress)
        model.eval()
    points = [model.split_point(p) for p in (split_points or default_split_points(model))]
    learned_at = {p.index for p in points} if learned_split_points is None else \
        {model.split_point(p).index for p in learned_split_points}
    from split_infer.training.backbone import evaluate_top1

    reference = evaluate_top1(model, search)
    tqdm.write(f"{model_name}: {reference:.2f}% top-1 on the {len(search)}-image search set")

    (out / "weights").mkdir(parents=True)
    (out / "onnx").mkdir()
    (out / "calibration").mkdir()
    if slimming:
        get_slimming().save_weights(model, slimming["widths"],
                                    out / "weights" / "backbone.safetensors")
    else:
        save_weights(model, out / "weights" / "backbone.safetensors")
    example = torch.from_numpy(test.preprocessing(test.images[:1]))
    export_tapped(model.blocks, example, out / FULL_ONNX)
    backbone_macs = count_macs(model, model.input_shape)
    calibration = train.subset(settings.calibration_images, seed=2)

    configurations: list[BundleConfiguration] = []
    split_info, search_rows, learned = [], [], {}
    selected: dict[str, str | None] = {}
    for point in points:
        taken: set[float] = set()
        head, _ = split(model, point)
        features = head_features(head, calibration, progress=progress) if codec_specs else \
            np.zeros((0,), np.float32)
        entry, baseline_configs = export_baseline_split(out, point, head, example,
                                                        features, codec_specs, taken)
        split_info.append(entry)
        configurations.extend(baseline_configs)
        if not learned_methods or point.index not in learned_at:
            continue
        data = SplitData(model, point, train, search, settings, frozen=freeze_backbone,
                         progress=progress)
        shared: dict[str, Any] = {}
        for method in learned_methods:
            rows, trained = search_split(
                data, method, _ratios_for(method, ratios), work_dir=work,
                reference_accuracy=reference, threshold_points=threshold_points,
                frozen=freeze_backbone, options=(method_options or {}).get(method),
                progress=progress, shared=shared,
                # Keeping all: every ratio asked for is trained, not only those up to the
                # first one over the threshold.
                early_exit=keep != "all")
            within = [r for r in rows if r.within]
            best = max(within, key=lambda r: r.ratio) if within else None
            chosen = {"within": within, "best": [best] if best else [], "all": rows}[keep]
            exported_ids = []
            for result in trained:
                mine = [r for r in chosen if r.method == result.method and (
                    get_method(result.method).rateless or r.ratio == result.ratio)]
                if not mine:
                    continue
                exported = _export_trained(out, result, mine, example, data, taken,
                                           backbone_macs)
                configurations.extend(exported.configurations)
                learned.update(exported.learned)
                exported_ids += [c.id for c in exported.configurations]
            best_id = None
            if best is not None:
                best_id = next((cid for cid, info in learned.items()
                                if info["method"] == method and cid.startswith(
                                    f"split{point.index}_") and info["nominal_ratio"] ==
                                best.ratio), None)
            selected[f"split{point.index}/{method}"] = best_id
            search_rows += [{**asdict(r), "exported": any(
                learned[c]["nominal_ratio"] == r.ratio for c in exported_ids)} for r in rows]

    if not configurations:
        raise UserError(f"no configuration was kept: none came within {threshold_points:g} "
                        "points of the unsplit model on the search set; train longer "
                        "(--epochs), allow more loss (--threshold), or keep every trained one "
                        "(--keep all)")
    manifest = bundle_manifest(model, test_full.name if test_set is not None else dataset,
                               test, split_info,
                               calibration_images=len(calibration),
                               profile_repeats=profile_repeats, progress=progress,
                               train_dataset=train_full.name if train_set is not None else None)
    manifest["learned"] = {
        "methods": learned_methods, "threshold_points": threshold_points,
        "freeze_backbone": freeze_backbone, "keep": keep, "settings": settings.key(),
        "train_images": len(train), "search_images": len(search),
        "reference_accuracy": reference, "configurations": learned, "search": search_rows,
        "selected": selected, "label_free": label_free}
    if slimming:
        manifest["model"]["slimming"] = slimming
    bundle = write_bundle(out, manifest, configurations)
    bundle = measure_bundle(bundle, test, progress=progress)
    return _retime_learned(bundle, profile_repeats)
