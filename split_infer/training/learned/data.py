"""Trainer settings and what training at one split point reads.

::

    ArrayDataset (train) ─▶ head ─▶ train_x: (1 + augment_copies, N, C, H, W) float32
                                    (fast path; else the head runs per batch)
                                    ─▶ tail ─▶ train_teacher: (copies, N, classes) logits
                                    (fast path with distillation: once, not once per step)
    ArrayDataset (search) ─▶ head ─▶ val_x        calibration subset ─▶ head ─▶ calib_x
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from split_infer.data import ArrayDataset
from split_infer.models import SplittableModel, split
from split_infer.training.backbone import augment, batches
from split_infer.training.features import head_features

__all__ = ["LearnedTrainConfig", "SplitData"]


@dataclass
class LearnedTrainConfig:
    """Hyper-parameters of the learned-bottleneck trainer (Adam, per-step cosine decay)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 5e-3
    backbone_lr: float = 1e-4  # when the backbone is fine-tuned too (freeze_backbone=False)
    weight_decay: float = 0.0
    augment_copies: int = 1
    memory_budget_mb: int = 3072
    calibration_images: int = 256
    seed: int = 0
    # Beyond the papers (all train with cross-entropy only): weight of a distillation term
    # KL(backbone logits ‖ compressed logits); 0 keeps the papers' loss.
    distill: float = 0.0
    # Weight of the cross-entropy against the labels; label-free training sets it to 0 and
    # learns from the distillation term alone (the labels are then the teacher's own).
    cross_entropy: float = 1.0
    # Beyond the papers too: weight of a feature-reconstruction term ‖x̂ − x‖² / Var(x) next
    # to the cross-entropy. The papers train for tens of epochs on GPUs; on a CPU budget of a
    # few epochs this anchors a freshly initialised decoder to the features the tail expects.
    reconstruction: float = 0.0
    # Beyond the papers too: epochs of feature matching (‖x̂ − x‖² / Var(x) alone, no tail)
    # before the method's own schedule, as head-network distillation trains a student head
    # to reproduce the teacher's features. It needs no pass through the tail, so it costs a
    # small fraction of a task-loss epoch; at 224 px it gives the decoder a start the few
    # task-loss epochs a CPU allows can refine.
    warmup_epochs: int = 0
    slim_l1: float = 1e-4  # λ of BBNet eq. 1 (network slimming)

    def key(self) -> dict[str, Any]:
        """The settings that key a run (the memory budget changes no result)."""
        return {k: v for k, v in asdict(self).items() if k != "memory_budget_mb"}


class SplitData:
    """What training at one split point needs: head/tail of the (frozen) backbone, training
    inputs (precomputed features on the fast path, else images), search-set and calibration
    features, and feature statistics."""

    def __init__(self, model: SplittableModel, point: int | str, train: ArrayDataset,
                 val: ArrayDataset, settings: LearnedTrainConfig, *, frozen: bool = True,
                 progress: bool = True) -> None:
        self.model = model.eval()
        self.point = model.split_point(point)
        self.head, self.tail = split(model, self.point)
        self.train_set, self.val_set = train, val
        self.settings = settings
        self.frozen = frozen
        self.progress = progress
        calibration = train.subset(settings.calibration_images, seed=2)
        self.calib_x = head_features(self.head, calibration, progress=progress)
        self.feature_shape = tuple(int(d) for d in self.calib_x.shape[1:])
        #: ResNet block outputs end in a ReLU; MobileNetV2's are linear (decoders follow suit).
        self.nonnegative = bool(self.calib_x.min() >= 0)
        self.val_x = head_features(self.head, val, progress=progress) if frozen else None
        self.train_x: np.ndarray | None = None
        self.train_teacher: np.ndarray | None = None
        copies = 1 + max(0, settings.augment_copies)
        need = copies * len(train) * math.prod(self.feature_shape) * 4
        if frozen and need <= settings.memory_budget_mb << 20:
            self.train_x = self._precompute(copies)

    @property
    def fast(self) -> bool:
        """True when training batches are precomputed features."""
        return self.train_x is not None

    @torch.inference_mode()
    def _precompute(self, copies: int) -> np.ndarray:
        n = len(self.train_set)
        out = np.empty((copies, n, *self.feature_shape), np.float32)
        bs = 256
        bar = tqdm(total=copies * n, desc=f"features @{self.point.name}", leave=False,
                   disable=not self.progress)
        for copy_index in range(copies):
            generator = torch.Generator().manual_seed(self.settings.seed * 1000 + copy_index)
            for start in range(0, n, bs):
                x = torch.from_numpy(self.train_set.preprocessing(
                    self.train_set.images[start:start + bs]))
                if copy_index:
                    x = augment(x, generator)
                out[copy_index, start:start + len(x)] = self.head(x).numpy()
                bar.update(len(x))
        bar.close()
        return out

    @torch.inference_mode()
    def _teacher_logits(self) -> np.ndarray:
        """The unsplit model's logits of every precomputed training feature (each copy)."""
        assert self.train_x is not None
        copies, n = self.train_x.shape[:2]
        out: np.ndarray | None = None
        bs = 128
        bar = tqdm(total=copies * n, desc=f"teacher @{self.point.name}", leave=False,
                   disable=not self.progress)
        for copy_index in range(copies):
            for start in range(0, n, bs):
                logits = self.tail(torch.from_numpy(
                    self.train_x[copy_index, start:start + bs])).numpy()
                if out is None:
                    out = np.empty((copies, n, logits.shape[1]), np.float32)
                out[copy_index, start:start + len(logits)] = logits
                bar.update(len(logits))
        bar.close()
        assert out is not None
        return out

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return math.ceil(len(self.train_set) / self.settings.batch_size)

    def train_batches(self, epoch: int, images: bool = False
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool, torch.Tensor | None]]:
        """``(inputs, labels, inputs_are_features, teacher_logits)`` for one epoch
        (deterministic per epoch); ``images`` asks for augmented images (a configuration that
        fine-tunes its head). Teacher logits come precomputed on the fast path when the loss
        distils (computed once per split and shared by its configurations), else None."""
        seed = self.settings.seed + 7919 * epoch
        bs = self.settings.batch_size
        labels = self.train_set.labels
        if self.train_x is not None and not images:
            if self.settings.distill > 0 and self.train_teacher is None:
                self.train_teacher = self._teacher_logits()
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(labels))
            version = rng.integers(0, self.train_x.shape[0], len(labels))
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                x = torch.from_numpy(self.train_x[version[idx], idx])
                teacher = (None if self.train_teacher is None else
                           torch.from_numpy(self.train_teacher[version[idx], idx]))
                yield x, torch.from_numpy(labels[idx]), True, teacher
            return
        generator = torch.Generator().manual_seed(seed)
        for x, y in batches(self.train_set, bs, shuffle=True, seed=seed):
            x = augment(x, generator)
            if images:
                yield x, y, False, None
            else:
                with torch.no_grad():
                    x = self.head(x)
                yield x, y, True, None

    def val_batches(self, head: nn.Module | None = None, batch_size: int = 250
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Search-set features through the frozen head, or through ``head`` (fine-tuned)."""
        labels = self.val_set.labels
        for start in range(0, len(labels), batch_size):
            y = torch.from_numpy(labels[start:start + batch_size])
            if self.val_x is not None and head is None:
                yield torch.from_numpy(self.val_x[start:start + batch_size]), y
            else:
                x = torch.from_numpy(self.val_set.preprocessing(
                    self.val_set.images[start:start + batch_size]))
                with torch.no_grad():
                    yield (head or self.head)(x), y

    def features(self, dataset: ArrayDataset, head: nn.Module | None = None) -> np.ndarray:
        """Head features of ``dataset`` (through ``head`` when it is fine-tuned)."""
        return head_features(head or self.head, dataset, progress=False)
