"""Dataset loaders: every source as a :class:`~split_infer.data.ArrayDataset` of uint8 RGB.

Sources:
* CIFAR-10 read in place from ``cifar10-jpeg.zip`` (``train|test/<class>/NNNN.jpg``);
* Fashion-MNIST from Debian's ``dataset-fashion-mnist`` gzipped IDX files (greyscale → RGB,
  zero-padded from 28×28 to 32×32 so the CIFAR backbones take it unchanged);
* any ImageFolder directory (``root/<class>/<image>``), with mixed sizes resized and
  greyscale converted to RGB; unreadable files are reported, never fatal.

Decoding the CIFAR zip takes a few seconds; the decoded arrays are cached under
``$XDG_CACHE_HOME/split_infer`` (outside the repository) keyed by the zip's size and mtime.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import struct
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from split_infer.data import ArrayDataset, DatasetError, Preprocessing, cache_dir

__all__ = [
    "decode_zip_images",
    "default_cifar_zip",
    "default_shared_data",
    "imagenet_sample_index",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "load_imagenet_sample",
    "load_unlabelled_images",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def default_cifar_zip() -> Path:
    """``$SPLIT_INFER_CIFAR_ZIP``, else ``../shared/data/cifar10-jpeg.zip`` near the package."""
    env = os.environ.get("SPLIT_INFER_CIFAR_ZIP")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data" / "cifar10-jpeg.zip"
        if candidate.is_file():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "cifar10-jpeg.zip"


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Silence OpenCV's log and the codec libraries' own stderr (libpng prints "libpng
    error: IHDR: CRC error" straight to file descriptor 2) while a file is decoded: a bad
    file is reported once, by name, by the loader instead."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        cv2.utils.logging.setLogLevel(level)


def _decode_rgb(data: bytes) -> np.ndarray | None:
    import cv2

    buf = np.frombuffer(data, np.uint8)
    if not buf.size:
        return None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_quietly(data: bytes) -> np.ndarray | None:
    with _quiet_decoders():
        return _decode_rgb(data)


def load_cifar10(split: str = "train", zip_path: str | Path | None = None) -> ArrayDataset:
    """CIFAR-10 from the JPEG zip, read in place (decoded arrays cached outside the repo)."""
    if split not in ("train", "test"):
        raise DatasetError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    path = Path(zip_path) if zip_path else default_cifar_zip()
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 zip not found at {path}; set SPLIT_INFER_CIFAR_ZIP or "
                           "pass --data PATH")
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    cache = cache_dir() / f"cifar10-{split}-{key[:12]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return ArrayDataset("cifar10", data["images"], data["labels"],
                                [str(c) for c in data["classes"]])
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist()
                       if n.startswith(f"{split}/") and not n.endswith("/"))
        classes = sorted({n.split("/")[1] for n in names})
        if len(classes) != 10:
            raise DatasetError(f"{path}: expected 10 class folders under {split}/, "
                               f"found {len(classes)}")
        images, labels, bad = [], [], []
        for name in names:
            image = _decode_rgb(archive.read(name))
            if image is None or image.shape != (32, 32, 3):
                bad.append(name)
                continue
            images.append(image)
            labels.append(classes.index(name.split("/")[1]))
    if bad:
        raise DatasetError(f"{path}: {len(bad)} unreadable images, e.g. {bad[:3]}")
    dataset = ArrayDataset("cifar10", np.stack(images), np.asarray(labels, np.int64), classes)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=dataset.images, labels=dataset.labels, classes=np.asarray(classes))
    tmp.replace(cache)
    return dataset


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def load_fashion_mnist(split: str = "train", root: str | Path = FASHION_MNIST_DIR) -> ArrayDataset:
    """Fashion-MNIST from Debian's IDX files, as 32×32 RGB (zero padded, grey replicated)."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DatasetError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.is_file() or not labels_path.is_file():
        raise DatasetError(f"Fashion-MNIST not found in {root}; install it with "
                           "'apt-get install -y dataset-fashion-mnist'")
    grey = _read_idx(images_path)
    labels = _read_idx(labels_path).astype(np.int64)
    padded = np.pad(grey, ((0, 0), (2, 2), (2, 2)))
    rgb = np.repeat(padded[..., None], 3, axis=-1)
    return ArrayDataset("fashion_mnist", np.ascontiguousarray(rgb), labels,
                        list(FASHION_MNIST_CLASSES),
                        Preprocessing(mean=(0.2860,) * 3, std=(0.3530,) * 3))


def _image_files(folder: Path) -> Iterator[Path]:
    return (f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(
    root: str | Path, size: tuple[int, int] = (32, 32), on_error: str = "warn"
) -> ArrayDataset:
    """An ImageFolder tree ``root/<class>/<image>``; every image resized to ``size`` (H, W).

    Unreadable files are collected; with ``on_error='warn'`` they are skipped and listed on
    stderr, with ``'raise'`` they abort with the full list.
    """
    import cv2

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DatasetError(f"{root}: no class sub-directories (expected root/<class>/<image>)")
    # A folder without a single image file is not a class (an empty or stray directory):
    # counting it would shift every label after it and add an output no image can teach.
    empty = [p.name for p in folders if not any(_image_files(p))]
    if empty:
        print(f"warning: {root}: skipped {len(empty)} folder(s) without images: {empty}",
              file=sys.stderr)
    classes = [p.name for p in folders if p.name not in empty]
    if not classes:
        raise DatasetError(f"{root}: no class sub-directory holds an image "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    images, labels, bad = [], [], []
    for label, cls in enumerate(classes):
        for file in sorted(_image_files(root / cls)):
            image = _decode_quietly(file.read_bytes())
            if image is None:
                bad.append(str(file))
                continue
            if image.shape[:2] != size:
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            images.append(image)
            labels.append(label)
    if bad and on_error == "raise":
        raise DatasetError(f"{root}: {len(bad)} unreadable image(s): {bad}")
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s) in {root}: "
              f"{bad[:5]}{' ...' if len(bad) > 5 else ''}", file=sys.stderr)
    if not images:
        raise DatasetError(f"{root}: no readable images")
    return ArrayDataset(root.name, np.stack(images), np.asarray(labels, np.int64), classes,
                        Preprocessing(size=size))


def default_shared_data(name: str) -> Path:
    """``$SPLIT_INFER_DATA/<name>``, else ``shared/data/<name>`` in the nearest parent of the
    package that has it (a development checkout), else ``../shared/data/<name>``."""
    env = os.environ.get("SPLIT_INFER_DATA")
    if env:
        return Path(env) / name
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / name
        if candidate.exists():
            return candidate
    return Path.cwd().parent / "shared" / "data" / name


def _cached(kind: str, source: Path, recipe: Preprocessing, build) -> ArrayDataset:
    """``build()`` once per (source file, its size and mtime, recipe); later calls read the
    decoded, cropped arrays from the cache outside the repository."""
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:"
                       f"{recipe.to_dict()}".encode()).hexdigest()
    cache = cache_dir() / f"{kind}-{key[:12]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return ArrayDataset(str(data["name"]), data["images"], data["labels"],
                                [str(c) for c in data["classes"]], recipe.at_input_size())
    dataset = build()
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, name=np.asarray(dataset.name), images=dataset.images, labels=dataset.labels,
             classes=np.asarray(dataset.classes))
    tmp.replace(cache)
    return dataset


def _decode_cropped(path: Path, names: list[str], read, recipe: Preprocessing, what: str
                    ) -> tuple[list[np.ndarray], list[int]]:
    """Decode each of ``names`` (its bytes from ``read(name)``) and apply the recipe's resize
    and crop; returns the uint8 crops and the indices of the names that decoded (the rest are
    reported on stderr, once)."""
    from tqdm import tqdm

    crops, kept, bad = [], [], []
    with _quiet_decoders():
        for i, name in enumerate(tqdm(names, desc=what, unit="image", leave=False,
                                      disable=None)):
            image = _decode_rgb(read(name))
            if image is None:
                bad.append(name)
                continue
            crops.append(recipe.resize_frame(image))
            kept.append(i)
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s) in {path}: {bad[:5]}",
              file=sys.stderr)
    if not crops:
        raise DatasetError(f"{path}: no readable images")
    return crops, kept


def _decode_archive(path: Path, names: list[str], recipe: Preprocessing, what: str
                    ) -> tuple[list[np.ndarray], list[int]]:
    """:func:`_decode_cropped` over members of the zip at ``path``."""
    with zipfile.ZipFile(path) as archive:
        return _decode_cropped(path, names, archive.read, recipe, what)


def imagenet_sample_index(zip_path: str | Path | None = None,
                          classes_path: str | Path | None = None
                          ) -> tuple[Path, list[str], np.ndarray, list[str]]:
    """``(zip, member names, labels, the 1000 class names)`` of the labelled ImageNet
    photographs in ``imagenet-sample-800.zip`` (files named ``<wnid>_<class name>.JPEG``);
    labels are the wnids' positions in ``imagenet-classes.txt`` (``wnid<TAB>name`` per line
    in index order, ``#`` comments allowed). Nothing is decoded."""
    path = Path(zip_path) if zip_path else default_shared_data("imagenet-sample-800.zip")
    classes_file = Path(classes_path) if classes_path else path.with_name("imagenet-classes.txt")
    for needed in (path, classes_file):
        if not needed.is_file():
            raise DatasetError(f"{needed} not found; set SPLIT_INFER_DATA to the folder with "
                               "imagenet-sample-800.zip and imagenet-classes.txt")
    rows = [line.split("\t") for line in classes_file.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    if len(rows) != 1000 or any(len(r) != 2 for r in rows):
        raise DatasetError(f"{classes_file}: expected 1000 lines 'wnid<TAB>name'")
    index = {wnid: i for i, (wnid, _) in enumerate(rows)}
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist()
                           if Path(n).suffix.lower() in IMAGE_SUFFIXES)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{path}: not a zip archive ({exc})") from None
    unknown = [n for n in names if Path(n).name.split("_")[0] not in index]
    if unknown:
        raise DatasetError(f"{path}: {len(unknown)} file(s) not named <wnid>_<name> with "
                           f"a wnid of {classes_file.name}, e.g. {unknown[:3]}")
    labels = np.asarray([index[Path(n).name.split("_")[0]] for n in names], np.int64)
    return path, names, labels, [name for _, name in rows]


def decode_zip_images(path: Path, names: list[str]) -> list[np.ndarray | None]:
    """The members ``names`` of the zip at ``path`` as uint8 RGB at their own sizes (None
    where one does not decode)."""
    with zipfile.ZipFile(path) as archive, _quiet_decoders():
        return [_decode_rgb(archive.read(name)) for name in names]


def load_imagenet_sample(recipe: Preprocessing, zip_path: str | Path | None = None,
                         classes_path: str | Path | None = None) -> ArrayDataset:
    """The labelled ImageNet sample (:func:`imagenet_sample_index`), each photograph resized
    and centre-cropped by ``recipe`` at load (cached); the dataset's own preprocessing is
    then normalisation only."""
    path, names, labels, classes = imagenet_sample_index(zip_path, classes_path)

    def build() -> ArrayDataset:
        crops, kept = _decode_archive(path, names, recipe, "ImageNet sample")
        return ArrayDataset("imagenet_sample", np.stack(crops), labels[kept], classes,
                            recipe.at_input_size())

    return _cached("imagenet-sample", path, recipe, build)


def load_unlabelled_images(source: str | Path, recipe: Preprocessing,
                           limit: int | None = None) -> ArrayDataset:
    """Unlabelled photographs (a zip such as ``caltech101-unlabeled-3030.zip``, or a folder
    searched recursively), resized and centre-cropped by ``recipe``; labels are all -1: the
    teacher model provides the targets (label-free distillation). ``limit`` keeps the first
    images in name order."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:limit] if limit else files
        if not files:
            raise DatasetError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        crops, _ = _decode_cropped(path, [str(f) for f in files],
                                   lambda name: Path(name).read_bytes(), recipe, path.name)
        return ArrayDataset(path.name, np.stack(crops), np.full(len(crops), -1, np.int64), [],
                            recipe.at_input_size())
    if not path.is_file():
        raise DatasetError(f"image source not found: {path} (a zip of images or a folder)")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not a zip archive or a folder of images")

    def build() -> ArrayDataset:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist()
                           if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        names = names[:limit] if limit else names
        crops, _ = _decode_archive(path, names, recipe, path.name)
        return ArrayDataset(path.stem, np.stack(crops), np.full(len(crops), -1, np.int64), [],
                            recipe.at_input_size())

    return _cached(f"unlabelled-{limit or 'all'}", path, recipe, build)


def load_dataset(name: str, split: str, path: str | Path | None = None,
                 recipe: Preprocessing | None = None) -> ArrayDataset:
    """``cifar10``, ``fashion_mnist``, ``folder`` (``path`` holds ``<split>/`` or classes) or
    ``imagenet_sample`` (evaluation only; ``path`` is its zip, ``recipe`` the model's
    preprocessing, which crops the photographs at load)."""
    if name == "cifar10":
        return load_cifar10(split, path)
    if name == "fashion_mnist":
        return load_fashion_mnist(split, path or FASHION_MNIST_DIR)
    if name == "folder":
        if path is None:
            raise DatasetError("dataset 'folder' needs a path (root/<split>/<class>/<image>)")
        root = Path(path)
        return load_image_folder(root / split if (root / split).is_dir() else root)
    if name == "imagenet_sample":
        if split != "test":
            raise DatasetError("the ImageNet sample is an evaluation set only (one photograph "
                               f"per class); it has no {split!r} split")
        if recipe is None:
            raise DatasetError("the ImageNet sample needs the model's preprocessing recipe")
        return load_imagenet_sample(recipe, path)
    raise DatasetError(f"unknown dataset {name!r}; choose cifar10, fashion_mnist, folder or "
                       "imagenet_sample")
