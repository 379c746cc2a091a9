"""Supervised training of a backbone classifier on an :class:`ArrayDataset`.

Plain SGD + Nesterov with a one-cycle schedule, random-crop (pad 4) and horizontal-flip
augmentation done on whole batches in torch (cheap on a few cores), a tqdm bar per epoch, and a
safetensors checkpoint after every epoch so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from split_infer.data import ArrayDataset

__all__ = ["TrainConfig", "augment", "batches", "evaluate_top1", "train_backbone"]


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = True


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip, per sample."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    cropped = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    cropped[flip] = cropped[flip].flip(-1)
    return cropped


def batches(dataset: ArrayDataset, batch_size: int, shuffle: bool, seed: int = 0):
    """Yield ``(x, y)`` float32 NCHW (preprocessed) and int64 label tensors."""
    order = np.arange(len(dataset))
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = torch.from_numpy(dataset.preprocessing(dataset.images[idx]))
        yield x, torch.from_numpy(dataset.labels[idx])


@torch.no_grad()
def evaluate_top1(model: nn.Module, dataset: ArrayDataset, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = 0
    for x, y in batches(dataset, batch_size, shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / len(dataset)


def train_backbone(
    model: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    config: TrainConfig,
    checkpoint: Path | None = None,
) -> list[dict]:
    """Train ``model`` in place; returns per-epoch history. Resumes from ``checkpoint``."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.15)
    history: list[dict] = []
    start_epoch = 0
    state_path = checkpoint.with_suffix(".json") if checkpoint else None
    if checkpoint and checkpoint.is_file() and state_path and state_path.is_file():
        model.load_state_dict(load_file(str(checkpoint)))
        saved = json.loads(state_path.read_text())
        history = saved["history"]
        start_epoch = len(history)
        with warnings.catch_warnings():
            # Fast-forwarding the schedule to where the run stopped: no optimizer step is due.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for _ in range(start_epoch * steps_per_epoch):
                scheduler.step()
        print(f"resuming from epoch {start_epoch} ({checkpoint})")
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        total_loss, seen = 0.0, 0
        bar = tqdm(batches(train, config.batch_size, True, config.seed + epoch),
                   total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                   leave=False)
        for x, y in bar:
            if config.augment:
                x = augment(x, generator)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        top1 = evaluate_top1(model, test)
        history.append({"epoch": epoch + 1, "loss": total_loss / seen, "top1": top1})
        print(f"epoch {epoch + 1}/{config.epochs}: loss {total_loss / seen:.3f}, "
              f"test top-1 {top1:.2f}%", flush=True)
        if checkpoint:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
            state_path.write_text(json.dumps({"history": history}))
    return history
