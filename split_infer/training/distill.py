"""Label-free training data: what a robot's owner has is unlabelled footage, and the unsplit
model's own outputs are the targets (head-network distillation, as sc2bench trains its
bottlenecks: KL divergence to the teacher's softened outputs, no labels).

::

    image folder │ zip of photos │ camera bag ─▶ recipe's resize + crop ─▶ unlabelled set
    unlabelled set ─▶ unsplit model ─▶ top-1 ─▶ pseudo-labelled set (labels = the teacher's
                                                 own answers: accuracy on it = agreement)

With these pseudo-labels the accuracy-aware search (Algorithm 1) bounds the loss of
*agreement* with the unsplit model instead of top-1 against labels nobody has.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from split_infer.data import ArrayDataset, DatasetError

__all__ = ["pseudo_labelled", "teacher_top1"]


@torch.inference_mode()
def teacher_top1(model: torch.nn.Module, dataset: ArrayDataset, batch_size: int = 64,
                 progress: bool = True) -> np.ndarray:
    """The unsplit model's top-1 class for every image of ``dataset``."""
    model.eval()
    answers = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="teacher outputs",
                      leave=False, disable=not progress):
        x = torch.from_numpy(dataset.preprocessing(dataset.images[start:start + batch_size]))
        answers.append(model(x).argmax(1).numpy())
    return np.concatenate(answers).astype(np.int64)


def pseudo_labelled(model: torch.nn.Module, dataset: ArrayDataset, classes: list[str],
                    progress: bool = True) -> ArrayDataset:
    """``dataset`` labelled with the unsplit model's own top-1 over ``classes``."""
    if not len(dataset):
        raise DatasetError(f"{dataset.name}: no images to label")
    labels = teacher_top1(model, dataset, progress=progress)
    return ArrayDataset(dataset.name, dataset.images, labels, list(classes),
                        dataset.preprocessing)
