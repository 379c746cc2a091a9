"""Run a network head over a data set to collect split-point features (calibration, benches)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from split_infer.data import ArrayDataset

__all__ = ["head_features"]


@torch.inference_mode()
def head_features(
    head: nn.Module, dataset: ArrayDataset, batch_size: int = 256, progress: bool = True
) -> np.ndarray:
    """float32 ``(N, C, H, W)`` features of every image in ``dataset``."""
    head.eval()
    chunks = []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="features", disable=not progress, leave=False):
        images = dataset.images[start : start + batch_size]
        x = torch.from_numpy(dataset.preprocessing(images))
        chunks.append(head(x).numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False)
