"""Dataset loaders on small synthetic folders: what a user's own ImageFolder looks like."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from split_infer.data import DatasetError
from split_infer.training.datasets import load_image_folder


def _write(path, image, ext=".png"):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(ext, image)
    assert ok
    path.with_suffix(ext).write_bytes(data.tobytes())


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    _write(root / "cat" / "a", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    _write(root / "cat" / "b", rng.integers(0, 256, (20, 20), dtype=np.uint8), ".jpg")  # grey
    _write(root / "dog" / "c", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")
    png = (root / "dog" / "c.png").read_bytes()
    (root / "dog" / "broken.png").write_bytes(png[:16] + bytes([png[16] ^ 0xFF]) + png[17:])
    return root


def test_folders_without_images_are_not_classes(folder, capsys):
    dataset = load_image_folder(folder)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.labels.tolist() == [0, 0, 1]
    assert dataset.images.shape == (3, 32, 32, 3)  # mixed sizes, greyscale → RGB
    err = capsys.readouterr().err
    assert "['empty', 'notes']" in err and "broken.png" in err


def test_a_bad_file_is_named_once_and_the_codec_library_stays_quiet(folder):
    code = f"from split_infer.training.datasets import load_image_folder\n" \
           f"load_image_folder({str(folder)!r})\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "broken.png" in run.stderr
    assert "libpng" not in run.stderr and "WARN" not in run.stderr, run.stderr


def test_no_readable_image_is_a_dataset_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no class sub-directory holds an image"):
        load_image_folder(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_image_folder(tmp_path / "missing")
