"""What every side shares about images: the preprocessing recorded in a bundle (it travels
with the weights, as torchvision's ``Weights`` carry their transforms) and the in-memory
dataset type the loaders, evaluation and bag tools exchange."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from split_infer.errors import UserError

__all__ = ["ArrayDataset", "CameraFrame", "DatasetError", "Preprocessing", "cache_dir"]


class DatasetError(UserError, RuntimeError):
    """A dataset is missing or malformed; the message says what to do."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/split_infer`` (default ``~/.cache/split_infer``), created: decoded
    data sets and converted weights live here, outside the repository."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    path = Path(base) / "split_infer"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    """``(H, W, C)`` uint8 in ``order`` → a fresh C-contiguous RGB array.

    Always a copy: the input may be a read-only view of the message's buffer, which the caller
    must be free to release or reuse.
    """
    if order == "L":
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[:, :, 2::-1] if order.startswith("BGR") else pixels[:, :, :3]
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)


@dataclass(frozen=True)
class CameraFrame:
    """Validated pixels of a camera message, not yet converted: uint8 ``(H, W, C)`` in channel
    ``order`` (``RGB``, ``RGBA``, ``BGR``, ``BGRA`` or ``L``), possibly a read-only view of the
    message's buffer.

    Converting a full camera frame to RGB costs a copy of every pixel; a network that sees
    224×224 or 32×32 only needs the channels swapped after the resize.
    :meth:`Preprocessing.__call__` takes a CameraFrame and does just that;
    :meth:`rgb` is the full conversion for everything else.
    """

    pixels: np.ndarray
    order: str

    def rgb(self) -> np.ndarray:
        """A fresh C-contiguous RGB uint8 ``(H, W, 3)`` copy."""
        return _to_rgb(self.pixels, self.order)


#: Decimate before the area resize when the frame is at least 4×this times the input per axis.
_DECIMATE_FROM = 4
#: Preprocessing.resize → the OpenCV interpolation flag's name.
_INTERPOLATIONS = {"area": "INTER_AREA", "linear": "INTER_LINEAR"}


@dataclass(frozen=True)
class Preprocessing:
    """How raw RGB uint8 frames become network input; stored in every bundle manifest."""

    size: tuple[int, int] = (32, 32)  # (height, width) fed to the network
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
    resize: str = "area"  # OpenCV interpolation used when a frame is not `size`
    #: ImageNet-style recipe: scale the shorter side to this many pixels (keeping the aspect
    #: ratio; more where the crop would not fit), then cut the centre ``size`` out. None:
    #: squash the whole frame to ``size`` (the CIFAR bundles' recipe).
    resize_shorter: int | None = None

    def __post_init__(self) -> None:
        if self.resize not in _INTERPOLATIONS:
            raise DatasetError(f"preprocessing: resize must be one of {sorted(_INTERPOLATIONS)}, "
                               f"got {self.resize!r}")
        if self.resize_shorter is not None and self.resize_shorter < min(self.size):
            raise DatasetError(f"preprocessing: resize_shorter {self.resize_shorter} is smaller "
                               f"than the crop {self.size}")

    def to_dict(self) -> dict:
        d = {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
             "resize": self.resize}
        if self.resize_shorter is not None:  # absent in the CIFAR bundles' manifests
            d["resize_shorter"] = self.resize_shorter
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        shorter = d.get("resize_shorter")
        return cls(tuple(d["size"]), tuple(d["mean"]), tuple(d["std"]), d.get("resize", "area"),
                   None if shorter is None else int(shorter))

    def __call__(self, images: np.ndarray | CameraFrame) -> np.ndarray:
        """uint8 RGB ``(N, H, W, 3)`` or ``(H, W, 3)``, or one
        :class:`CameraFrame` → float32 NCHW, normalized.

        A BGR or RGB camera frame is resized in its own channel order and only then reordered:
        the same numbers as converting the full frame first (resizing works per channel), at
        the cost of the small image instead of the camera's.
        """
        if not isinstance(images, np.ndarray):
            return self._camera_frame(images)
        batch = images[None] if images.ndim == 3 else images
        height, width = self.size
        if batch.shape[1:3] != (height, width):
            batch = np.stack([self.resize_frame(im) for im in batch])
        return self._normalize(batch)

    def at_input_size(self) -> Preprocessing:
        """This recipe for frames it has already resized and cropped: normalisation only."""
        return Preprocessing(self.size, self.mean, self.std, self.resize)

    def resized_size(self, frame_height: int, frame_width: int) -> tuple[int, int]:
        """(height, width) a ``frame_height × frame_width`` frame is scaled to before the
        centre crop (``size`` itself without ``resize_shorter``)."""
        if self.resize_shorter is None:
            return self.size
        # The shorter side to resize_shorter, unless the crop would then not fit (a crop
        # wider than tall in a portrait frame): then just enough to cover the crop.
        scale = max(self.resize_shorter / min(frame_height, frame_width),
                    self.size[0] / frame_height, self.size[1] / frame_width)
        return (max(self.size[0], round(frame_height * scale)),
                max(self.size[1], round(frame_width * scale)))

    def resize_frame(self, image: np.ndarray) -> np.ndarray:
        """One uint8 ``(H, W, C)`` frame → ``size``: the recipe's resize (and centre crop),
        without normalising; channels stay in their order. Data sets, evaluation and
        calibration use this; the robot's frames go through :meth:`resize_camera_frame`."""
        import cv2

        if image.shape[:2] == self.size:
            return image
        height, width = self.resized_size(*image.shape[:2])
        interp = _INTERPOLATIONS[self.resize]
        # A camera frame many times the input (1280×720 → 32×32) is first decimated so that
        # each output pixel still averages >= 4 samples per axis: an area resize of the whole
        # frame costs several times more, for outputs within 2/255 of each other
        # (bench/results/cpu).
        step = min(image.shape[0] // height, image.shape[1] // width) // 4
        if self.resize == "area" and step >= _DECIMATE_FROM:
            image = image[::step, ::step]
        if image.shape[:2] != (height, width):
            image = cv2.resize(np.ascontiguousarray(image), (width, height),
                               interpolation=getattr(cv2, interp))
        if (height, width) == self.size:  # no crop (the CIFAR recipe squashes the frame)
            return np.ascontiguousarray(image)  # a decimated view may already be the size
        # The centre crop, rounded the way torchvision's CenterCrop rounds.
        top = round((height - self.size[0]) / 2.0)
        left = round((width - self.size[1]) / 2.0)
        return np.ascontiguousarray(image[top:top + self.size[0], left:left + self.size[1]])

    def resize_camera_frame(self, image: np.ndarray) -> np.ndarray:
        """:meth:`resize_frame` for the robot's per-frame path: with ``resize_shorter`` the
        frame region under the centre crop is cut first and only that region is resized.

        Beyond the recipe, for the robot's CPU: the area resize reads and writes about half
        the pixels (640×480 → 420×420 → 224×224 instead of 640×480 → 341×256, then the crop).
        The crop window is rounded to whole frame pixels, so the crop differs from
        :meth:`resize_frame`'s by a sub-pixel shift and scale: on 800 ImageNet photographs
        99.25 % of the whole model's top-1 predictions stay the same (bench/README.md, "Crop
        first"). Offline tables (evaluation, the plan) are measured with :meth:`resize_frame`.
        """
        if image.shape[:2] == self.size or self.resize_shorter is None:
            return self.resize_frame(image)
        height, width = self.resized_size(*image.shape[:2])
        region = image[self._crop_window(image.shape[0], height, self.size[0]),
                       self._crop_window(image.shape[1], width, self.size[1])]
        return self._region_recipe.resize_frame(region)

    @functools.cached_property
    def _region_recipe(self) -> Preprocessing:
        # Built once, not per frame: the recipe that squashes the cut region to ``size``.
        return self.at_input_size()

    @staticmethod
    def _crop_window(frame_side: int, resized_side: int, crop_side: int) -> slice:
        """The frame's pixels under the centre ``crop_side`` crop of the frame resized to
        ``resized_side`` (one axis): the crop's offset rounded as torchvision's CenterCrop
        rounds it, mapped back to the frame and rounded to whole pixels."""
        offset = round((resized_side - crop_side) / 2.0)
        scale = frame_side / resized_side
        return slice(round(offset * scale), min(frame_side, round((offset + crop_side) * scale)))

    def _normalize(self, batch: np.ndarray) -> np.ndarray:
        # (x / 255 - mean) / std as one multiply-add per channel, written straight into the
        # NCHW result: one float pass instead of four (a camera frame's largest cost after
        # the resize; within 1e-7 of the two-step form).
        std = np.asarray(self.std, np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
        offset = (-np.asarray(self.mean, np.float64) / std).astype(np.float32)[:, None, None]
        x = np.empty((batch.shape[0], batch.shape[3], *batch.shape[1:3]), np.float32)
        np.multiply(batch.transpose(0, 3, 1, 2), scale, out=x, dtype=np.float32)
        x += offset
        return x

    def input_crop(self, frame: np.ndarray | CameraFrame) -> tuple[np.ndarray, str] | None:
        """The uint8 ``(H, W, 3)`` pixels :meth:`__call__` normalizes for one frame (a uint8
        RGB ``(H, W, 3)`` array, or a :class:`CameraFrame`), still in the frame's channel
        order, and that order (``"RGB"`` or ``"BGR"``); None for any other input.

        ``self(frame)`` equals ``normalize_crop(*input_crop(frame))``, so a caller can look at
        the pixels first (:meth:`split_infer.codecs.Codec.compress_image` encodes them
        without the float tensor).
        """
        if isinstance(frame, CameraFrame):
            if frame.order not in ("RGB", "BGR") or frame.pixels.shape[2] != 3:
                return self.resize_frame(frame.rgb()), "RGB"
            return self.resize_camera_frame(frame.pixels), frame.order
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            return None
        return self.resize_frame(frame), "RGB"

    def normalize_crop(self, crop: np.ndarray, order: str) -> np.ndarray:
        """An :meth:`input_crop` → float32 ``(1, 3, H, W)``, normalized, in RGB order."""
        return self._normalize((crop[:, :, ::-1] if order == "BGR" else crop)[None])

    @functools.cached_property
    def channel_values(self) -> np.ndarray:
        """``(3, 256)`` float32: what level ``k`` of RGB channel ``c`` normalizes to, computed
        exactly as :meth:`__call__` computes it (the same float32 operations)."""
        levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None],
                                 (1, 1, 256, 3))
        return np.ascontiguousarray(self._normalize(levels)[0, :, 0, :])

    def _camera_frame(self, frame: CameraFrame) -> np.ndarray:
        return self.normalize_crop(*self.input_crop(frame))  # type: ignore[misc]


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
