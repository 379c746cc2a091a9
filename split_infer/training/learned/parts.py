"""What one configuration trains through and how it is measured on the search set.

::

    _Parts: head ─▶ [pair] ─▶ tail      the shared frozen backbone, or the configuration's own
                                        fine-tuned copy (end to end)
    evaluate_config: search-set features ─▶ pair.wire_forward(real wire codec) ─▶ tail ─▶ top-1
    _Context: the three services above lent to the method's hooks (TrainingContext)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from split_infer.codecs import get_codec
from split_infer.codecs.learned import CodecSTE, LearnedBottleneck
from split_infer.models import SplittableModel, split
from split_infer.training.learned.data import SplitData

__all__ = ["TrainedConfig", "evaluate_config"]


@dataclass
class TrainedConfig:
    """A trained (split, method, ratio): the modules to export and what the search measured."""

    method: str
    split_index: int
    split_name: str
    ratio: float  # nominal
    bottleneck: LearnedBottleneck
    head: nn.Module
    tail: nn.Module
    net: nn.Module | None  # the configuration's own fine-tuned backbone, if any
    accuracy: float  # % on the search set, through the real wire codec
    code_bytes: float  # mean codec payload + params bytes per frame
    history: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class _Parts:
    """Head and tail a configuration trains through: the shared frozen ones, or its own copy
    of the backbone when it is fine-tuned end to end."""

    def __init__(self, data: SplitData, frozen: bool, init_state: dict | None = None) -> None:
        self.frozen = frozen
        if frozen:
            self.net: SplittableModel | None = None
            self.head, self.tail = data.head, data.tail
            for p in data.model.parameters():
                p.requires_grad_(False)
        else:
            self.net = copy.deepcopy(data.model)
            if init_state is not None:
                self.net.net.load_state_dict(init_state)
            for p in self.net.parameters():
                p.requires_grad_(True)
            self.head, self.tail = split(self.net, data.point)

    @classmethod
    def of(cls, trained: TrainedConfig, data: SplitData) -> _Parts:
        """The parts a trained configuration ran with (its own backbone, if it has one)."""
        parts = cls.__new__(cls)
        parts.frozen = trained.net is None
        parts.net = trained.net
        parts.head, parts.tail = (data.head, data.tail) if parts.frozen else (trained.head,
                                                                              trained.tail)
        return parts

    def features(self, x: torch.Tensor, are_features: bool) -> torch.Tensor:
        if are_features:
            return x
        return self.head(x)

    def backbone_params(self) -> list[nn.Parameter]:
        return [] if self.net is None else list(self.net.parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {} if self.net is None else {"backbone": self.net.net}

    def trainable(self) -> list[nn.Module]:
        return [] if self.net is None else [self.net]


def _calibration_features(parts: _Parts, data: SplitData) -> np.ndarray:
    if parts.frozen:
        return data.calib_x
    calibration = data.train_set.subset(data.settings.calibration_images, seed=2)
    return data.features(calibration, parts.head)


def _train_features_sample(parts: _Parts, data: SplitData, count: int = 2048) -> np.ndarray:
    """Un-augmented training features (a sample) for training-set statistics."""
    if parts.frozen and data.train_x is not None:
        return data.train_x[0, :count]
    return data.features(data.train_set.subset(count, seed=5), parts.head)


@torch.no_grad()
def evaluate_config(parts: _Parts, bottleneck: LearnedBottleneck, data: SplitData,
                    transmit: Callable[[torch.Tensor], torch.Tensor] | None,
                    keep: int | None = None) -> float:
    """Top-1 (%) on the search set with ``transmit`` (the real wire codec) on the code sent
    (its first ``keep`` channels for a rateless pair)."""
    bottleneck.eval()
    if parts.net is not None:
        parts.net.eval()
    correct = total = 0
    head = None if parts.frozen else parts.head
    for feats, y in data.val_batches(head):
        decoded = bottleneck.wire_forward(feats, transmit, keep)
        correct += int((parts.tail(decoded).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)


def _wire_codec_ste(bottleneck: LearnedBottleneck, codes: np.ndarray) -> CodecSTE:
    ste = CodecSTE(bottleneck.wire_codec)
    if get_codec(bottleneck.wire_codec).needs_calibration or "quant" in bottleneck.wire_codec:
        ste.calibrate(codes)
    return ste


class _Context:
    """The :class:`~split_infer.codecs.learned.TrainingContext` of one configuration."""

    def __init__(self, parts: _Parts, data: SplitData, bottleneck: LearnedBottleneck) -> None:
        self.parts, self.data, self.bottleneck = parts, data, bottleneck

    def calibration_features(self) -> np.ndarray:
        return _calibration_features(self.parts, self.data)

    def train_features(self) -> np.ndarray:
        return _train_features_sample(self.parts, self.data)

    def evaluate(self, transmit: Callable[[torch.Tensor], torch.Tensor] | None,
                 keep: int | None = None) -> float:
        return evaluate_config(self.parts, self.bottleneck, self.data, transmit, keep)
