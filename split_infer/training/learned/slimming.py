"""Backbone slimming before any bottleneck is trained (BBNet §3.1 network slimming).

::

    backbone ─▶ "sparse": cross-entropy + λ·penalty(prunable groups)   (sparse_epochs)
             ─▶ prune `fraction` of the channels in place (widths recorded in the run)
             ─▶ "finetune": cross-entropy                               (finetune_epochs)

What is pruned and how is the method's :class:`~split_infer.codecs.learned.BackboneSlimming`;
the run is checkpointed in ``work_dir/slimming`` like the bottleneck runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from split_infer.codecs.learned import get_slimming
from split_infer.data import ArrayDataset
from split_infer.models import SplittableModel
from split_infer.models.macs import count_macs
from split_infer.training.backbone import augment, batches
from split_infer.training.learned.data import LearnedTrainConfig
from split_infer.training.learned.runs import Stage, _model_fingerprint, _Run

__all__ = ["slim_backbone"]


def slim_backbone(model: SplittableModel, train: ArrayDataset, val: ArrayDataset, *,
                  fraction: float = 0.4, sparse_epochs: int = 1, finetune_epochs: int = 1,
                  settings: LearnedTrainConfig | None = None, work_dir: Path,
                  progress: bool = True, method: str | None = None) -> dict[str, Any]:
    """BBNet §3.1 network slimming in place: train with λ·Σ|γ| on the prunable BNs, prune
    ``fraction`` of their channels by |γ| (one global threshold), fine-tune. Resumable like
    the bottleneck runs. Returns widths, MACs and accuracy before/after.

    ``method`` names the learned method whose backbone slimming runs (default: the only
    method that registers one).
    """
    from split_infer.training.backbone import evaluate_top1

    slimming = get_slimming(method)
    settings = settings or LearnedTrainConfig()
    groups_holder = {"groups": slimming.groups(model)}
    data = _ImageData(train, settings)
    info: dict[str, Any] = {"fraction": fraction, "l1": settings.slim_l1}

    def step(x, y, are_features, generator, teacher=None):
        loss = nn.functional.cross_entropy(model(x), y)
        if run.stages[run._locate(run.state["epoch"])[0]].name == "sparse":
            loss = loss + settings.slim_l1 * slimming.penalty(groups_holder["groups"])
        return loss

    def prune() -> None:
        widths = slimming.prune(model, fraction)
        groups_holder["groups"] = slimming.groups(model)
        run.state["widths"] = widths

    def prepare(saved: dict) -> None:
        if "widths" in saved:
            slimming.apply_widths(model, saved["widths"])
            groups_holder["groups"] = slimming.groups(model)

    params = lambda: [[], list(model.parameters())]  # noqa: E731
    # The whole backbone trains here: its (smaller) learning rate is the run's only one.
    backbone_settings = replace(settings, lr=settings.backbone_lr)
    stages = [Stage("sparse", sparse_epochs, params), Stage("finetune", finetune_epochs, params,
                                                            start=prune)]
    run = _Run(work_dir / "slimming", {"model": model.model_name, "fraction": fraction,
                                       "sparse": sparse_epochs, "finetune": finetune_epochs,
                                       "settings": settings.key(),
                                       "train_images": len(train),
                                       "fingerprint": _model_fingerprint(model)},
               {"net": model.net}, stages, step, data, backbone_settings, "slimming", progress,
               trainable_modules=lambda: [model], prepare=prepare)
    run.needs_images = True
    if run.load() and run.done:
        model.eval()
        return run.state["result"]
    if run.state["epoch"] == 0:
        run.state["before"] = {"macs": count_macs(model, model.input_shape),
                               "accuracy": evaluate_top1(model, val)}
    run.train()
    if "widths" not in run.state:  # finetune_epochs == 0: prune without fine-tuning
        prune()
    model.eval()
    info.update({"widths": run.state["widths"],
                 "macs_before": run.state["before"]["macs"],
                 "accuracy_before": run.state["before"]["accuracy"],
                 "macs_after": count_macs(model, model.input_shape),
                 "accuracy_after": evaluate_top1(model, val)})
    run.finish(info)
    return info


class _ImageData:
    """The bits of :class:`SplitData` a whole-backbone run needs (augmented image batches)."""

    def __init__(self, train: ArrayDataset, settings: LearnedTrainConfig) -> None:
        self.train_set = train
        self.settings = settings

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.settings.batch_size)

    def train_batches(self, epoch: int, images: bool = True
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool, None]]:
        seed = self.settings.seed + 7919 * epoch
        generator = torch.Generator().manual_seed(seed)
        for x, y in batches(self.train_set, self.settings.batch_size, shuffle=True, seed=seed):
            yield augment(x, generator), y, False, None
