"""What every side shares about images: the preprocessing recorded in a bundle (it travels
with the weights, as torchvision's ``Weights`` carry their transforms) and the in-memory
dataset type the loaders, evaluation and bag tools exchange."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from split_infer.errors import UserError

__all__ = ["ArrayDataset", "DatasetError", "Preprocessing"]


class DatasetError(UserError, RuntimeError):
    """A dataset is missing or malformed; the message says what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """How raw RGB uint8 frames become network input; stored in every bundle manifest."""

    size: tuple[int, int] = (32, 32)  # (height, width) fed to the network
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
    resize: str = "area"  # OpenCV interpolation used when a frame is not `size`

    def to_dict(self) -> dict:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(tuple(d["size"]), tuple(d["mean"]), tuple(d["std"]), d.get("resize", "area"))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(N, H, W, 3)`` or ``(H, W, 3)`` → float32 NCHW, normalized."""
        batch = images[None] if images.ndim == 3 else images
        height, width = self.size
        if batch.shape[1:3] != (height, width):
            import cv2

            interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[self.resize]
            batch = np.stack([cv2.resize(im, (width, height), interpolation=interp)
                              for im in batch])
        x = batch.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class ArrayDataset:
    """Images as uint8 RGB ``(N, H, W, 3)`` with int64 labels."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise DatasetError(f"{self.name}: images must be uint8 (N, H, W, 3), "
                               f"got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{self.name}: {len(self.images)} images but "
                               f"{len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int, seed: int = 0) -> ArrayDataset:
        """A class-stratified-by-chance random subset of ``count`` samples (deterministic)."""
        if count >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), count, replace=False))
        return ArrayDataset(self.name, self.images[idx], self.labels[idx], self.classes,
                            self.preprocessing)
