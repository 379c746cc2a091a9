"""Label-free training: bottlenecks distilled from the unsplit model on unlabelled images from
a folder or a recorded camera bag (tiny data; the 224-px runs are benchmarks)."""

import json

import cv2
import numpy as np
import pytest
import torch

from split_infer.data import ArrayDataset, Preprocessing
from split_infer.models import get_model, save_weights
from split_infer.tools.cli import main
from split_infer.training.distill import pseudo_labelled, teacher_top1
from split_infer.training.learned.data import LearnedTrainConfig
from split_infer.training.learned.runs import _loss


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("label_free")
    rng = np.random.default_rng(0)
    photos = root / "photos"
    for i in range(40):  # unlabelled, nested, mixed sizes: what a robot records
        folder = photos / f"run{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (40, 48) if i % 2 else (36, 36)
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    for i in range(20):  # a small labelled evaluation set
        folder = root / "data" / "test" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    model = get_model("resnet8_cifar")
    weights = root / "r8.safetensors"
    save_weights(model, weights)
    return root, weights


def _train(root, weights, source, out, *more):
    return main(["train", "resnet8_cifar", "--weights", str(weights), "--label-free",
                 "--train-data", str(source), "--dataset", "folder", "--data",
                 str(root / "data"), "--method", "bbnet", "--ratio", "8", "--split", "3",
                 "--epochs", "1", "--calibration-images", "16", "--keep", "all",
                 "--out", str(out), *more])


def test_label_free_training_from_an_image_folder(tiny, capsys):
    root, weights = tiny
    # Baseline codecs at two split points, the learned method at one of them.
    assert _train(root, weights, root / "photos", root / "from_folder", "--method", "baseline",
                  "--split", "2", "--learned-split", "3",
                  "--codec", "quant:bits=8,per=channel+zstd") == 0
    manifest = json.loads((root / "from_folder" / "manifest.json").read_text())
    where = {(c["method"], c["split_point"]) for c in manifest["configurations"]}
    assert where == {("baseline", 2), ("baseline", 3), ("bbnet", 3)}
    learned = manifest["learned"]
    assert learned["label_free"] is True
    assert learned["settings"]["cross_entropy"] == 0.0 and learned["settings"]["distill"] == 1.0
    # The search set is pseudo-labelled: the unsplit model agrees with itself everywhere.
    assert learned["reference_accuracy"] == 100.0
    assert learned["train_images"] + learned["search_images"] == 40
    assert manifest["dataset"]["eval_images"] == 20  # measured on the labelled set
    assert any(c["method"] == "bbnet" for c in manifest["configurations"])


def test_label_free_training_from_a_camera_bag(tiny):
    from split_infer.tools.bag.storage import write_frames_bag

    root, weights = tiny
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(30)]
    write_frames_bag(root / "bag", frames, [-1] * 30, [], jpeg_quality=90, progress=False)
    assert _train(root, weights, root / "bag", root / "from_bag") == 0
    learned = json.loads((root / "from_bag" / "manifest.json").read_text())["learned"]
    assert learned["label_free"] and learned["train_images"] + learned["search_images"] == 30


def test_label_free_arguments_are_checked(tiny, capsys, monkeypatch):
    import dataclasses

    from split_infer.training.learned import bundle as learned_bundle

    root, weights = tiny
    # A random backbone on noise answers one class for everything, so any bottleneck may
    # agree with it: the search's verdict is forced here to reach "nothing within".
    real = learned_bundle.search_split

    def nothing_within(*args, **kwargs):
        rows, trained = real(*args, **kwargs)
        return [dataclasses.replace(r, within=False) for r in rows], trained

    monkeypatch.setattr(learned_bundle, "search_split", nothing_within)
    assert main(["train", "resnet8_cifar", "--weights", str(weights), "--label-free",
                 "--train-data", str(root / "photos"), "--dataset", "folder", "--data",
                 str(root / "data"), "--method", "bbnet", "--ratio", "64", "--split", "3",
                 "--epochs", "1", "--threshold", "0", "--out", str(root / "none")]) == 2
    assert "no configuration was kept" in capsys.readouterr().err
    assert main(["train", "resnet8_cifar", "--label-free", "--out", str(root / "x")]) == 2
    assert "--train-data" in capsys.readouterr().err
    assert main(["train", "resnet8_cifar", "--dataset", "imagenet_sample",
                 "--out", str(root / "y")]) == 2
    assert "no training split" in capsys.readouterr().err


def test_pseudo_labels_are_the_teachers_top1():
    model = get_model("resnet8_cifar")
    images = np.random.default_rng(2).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    data = ArrayDataset("u", images, np.full(12, -1), [], Preprocessing())
    labelled = pseudo_labelled(model, data, [str(i) for i in range(10)], progress=False)
    with torch.no_grad():
        expected = model(torch.from_numpy(data.preprocessing(images))).argmax(1).numpy()
    assert (labelled.labels == expected).all()
    assert (teacher_top1(model, data, batch_size=5, progress=False) == expected).all()


def test_distillation_only_loss_ignores_the_labels():
    settings = LearnedTrainConfig(cross_entropy=0.0, distill=1.0)
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    teacher = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    a = _loss(logits, torch.tensor([0, 1, 2, 3]), teacher, settings)
    b = _loss(logits, torch.tensor([9, 9, 9, 9]), teacher, settings)
    assert torch.equal(a, b) and a > 0
    assert _loss(teacher, torch.zeros(4, dtype=torch.long), teacher, settings) < 1e-6
