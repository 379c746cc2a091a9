"""``split-infer train MODEL --out BUNDLE``: calibrate or train codecs and write a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from split_infer.errors import UserError
from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import (
    DATASETS,
    add_threads_argument,
    format_configurations,
    require,
    set_threads,
    user_output_errors,
)

__all__ = ["TrainVerb"]

METHODS = ("baseline", "bottlenet", "hu_ae", "aecnn", "bbnet", "rateless")


class TrainVerb(VerbExtension):
    """Build a bundle: baseline codecs calibrated at split points, or learned codecs trained."""

    HELP = "calibrate codecs at split points and write a bundle"
    DESCRIPTION = ("Calibrate codecs at split points of a trained backbone (or train learned "
                   "codecs with --method) and write a bundle: ONNX parts, safetensors, and the "
                   "measured accuracy and bytes per frame of every configuration.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Model, output, data, split points, codecs and the learned-codec search."""
        parser.add_argument("model", help="registered model name (see 'split-infer models')")
        parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
        parser.add_argument("--weights", type=Path, default=None,
                            help="backbone safetensors (default: the shipped CIFAR-10 weights)")
        parser.add_argument("--dataset", default="cifar10",
                            choices=[*DATASETS, "imagenet_sample"],
                            help="calibration and evaluation data set; imagenet_sample (the "
                                 "labelled ImageNet photographs) is an evaluation set for "
                                 "--label-free (default: %(default)s)")
        parser.add_argument("--data", type=Path, default=None,
                            help="data path (zip, IDX dir, folder)")
        parser.add_argument("--split", action="append",
                            help="split point index or block name (repeatable; default: "
                                 "points spread over the network)")
        parser.add_argument("--learned-split", action="append",
                            help="split point where the learned methods train (repeatable; "
                                 "default: every --split; baselines go to every --split)")
        parser.add_argument("--codec", action="append",
                            help="baseline codec spec (repeatable; see 'split-infer codecs')")
        parser.add_argument("--method", action="append", choices=METHODS,
                            help="codec method to train (repeatable; default: baseline only)")
        parser.add_argument("--ratio", action="append",
                            help="compression ratio to try, R for every method or METHOD=R for "
                                 "one (repeatable; default: each method's ladder)")
        parser.add_argument("--option", action="append", metavar="METHOD.KEY=VALUE",
                            help="builder option of a learned method, e.g. "
                                 "rateless.wire_codec=quant:bits=4,per=channel+rans "
                                 "(repeatable)")
        parser.add_argument("--epochs", type=int, default=3,
                            help="epochs per learned configuration (default: %(default)s)")
        parser.add_argument("--threshold", type=float, default=2.0,
                            help="accuracy loss allowed by the search, top-1 points "
                                 "(Algorithm 1; default: %(default)g)")
        parser.add_argument("--keep", default="within", choices=["within", "best", "all"],
                            help="export every ratio within the threshold, only the best, or "
                                 "all, every ratio asked for trained (default: %(default)s)")
        parser.add_argument("--no-freeze", action="store_true",
                            help="fine-tune the backbone too (Hu & K); default: frozen backbone")
        parser.add_argument("--slim", type=float, default=None, metavar="FRACTION",
                            help="BBNet network slimming of the backbone first (fraction, "
                                 "e.g. 0.4)")
        parser.add_argument("--train-images", type=int, default=0, metavar="N",
                            help="training subset (0 = all)")
        parser.add_argument("--work-dir", type=Path, default=None,
                            help="checkpoints for resuming (default: OUT.work)")
        parser.add_argument("--calibration-images", type=int, default=512, metavar="N",
                            help="training images the codecs are calibrated on "
                                 "(default: %(default)s)")
        parser.add_argument("--eval-images", type=int, default=1000, metavar="N",
                            help="test images every configuration is measured on "
                                 "(0 = the whole test split; default: %(default)s)")
        parser.add_argument("--reconstruction", type=float, default=0.0, metavar="WEIGHT",
                            help="weight of a feature-reconstruction term ||x^ - x||^2 / Var(x) "
                                 "next to the task loss (beyond the papers: it anchors a fresh "
                                 "decoder on a budget of few epochs; default: %(default)g)")
        parser.add_argument("--warmup-epochs", type=int, default=0, metavar="N",
                            help="epochs of feature matching (the reconstruction loss alone, "
                                 "no pass through the tail) before each learned "
                                 "configuration's own schedule (beyond the papers: a cheap "
                                 "start for large backbones; default: %(default)s)")
        parser.add_argument("--batch-size", type=int, default=128, metavar="N",
                            help="learned-codec training batch (default: %(default)s)")
        parser.add_argument("--lr", type=float, default=5e-3,
                            help="learned-codec Adam learning rate, cosine-decayed per stage "
                                 "(default: %(default)g)")
        parser.add_argument("--label-free", action="store_true",
                            help="train by distillation from the unsplit model on unlabelled "
                                 "images (--train-data): no labels needed; the search bounds "
                                 "the loss of agreement with the unsplit model")
        parser.add_argument("--train-data", type=Path, default=None, metavar="PATH",
                            help="with --label-free: an image folder, a zip of images or a "
                                 "recorded camera bag (rosbag2 directory)")
        parser.add_argument("--force", action="store_true", help="replace an existing bundle")
        add_threads_argument(parser)

    def main(self, args: argparse.Namespace) -> int:
        """Build the bundle and print its configurations."""
        set_threads(args.threads)
        methods = args.method or ["baseline"]
        require(args.eval_images >= 0 and args.train_images >= 0,
                "--eval-images and --train-images must be >= 0 (0 = all)")
        require(args.label_free == (args.train_data is not None),
                "--label-free and --train-data go together (unlabelled images to distil on)")
        require(args.dataset != "imagenet_sample" or args.label_free,
                "imagenet_sample has no training split; use it as the evaluation set of "
                "--label-free --train-data PATH")
        with user_output_errors():  # --out exists and is not empty, and no --force
            if args.label_free:
                bundle = self._learned(args, methods, **self._label_free_sets(args))
            elif methods == ["baseline"]:
                bundle = self._baseline(args)
            else:
                bundle = self._learned(args, methods)
        print(format_configurations(bundle))
        print(f"\nwrote bundle {bundle.path}")
        return 0

    @staticmethod
    def _baseline(args: argparse.Namespace) -> Any:
        from split_infer.training.baseline import build_baseline_bundle

        return build_baseline_bundle(
            args.model,
            args.out,
            weights=args.weights,
            dataset=args.dataset,
            data_path=args.data,
            split_points=args.split or None,
            codecs=args.codec or None,
            calibration_images=args.calibration_images,
            eval_images=args.eval_images or None,
            force=args.force,
        )

    @staticmethod
    def _label_free_sets(args: argparse.Namespace) -> dict[str, Any]:
        """The unlabelled training images (folder, zip or bag) and the evaluation set, both
        prepared with the model's own recipe (the data set's for models without one)."""
        import dataclasses

        import numpy as np

        from split_infer.data import Preprocessing
        from split_infer.models import get_model_spec
        from split_infer.training.datasets import load_dataset, load_imagenet_sample

        recipe = get_model_spec(args.model).preprocessing or Preprocessing()
        source = args.train_data
        if (source / "metadata.yaml").is_file():  # a recorded camera bag
            from split_infer.tools.bag.storage import bag_dataset

            frames = bag_dataset(source, [], recipe)  # a bag's own labels are not used
            train = dataclasses.replace(frames, labels=np.full(len(frames), -1, np.int64))
        else:
            from split_infer.training.datasets import load_unlabelled_images

            train = load_unlabelled_images(source, recipe)
        if args.train_images:  # a random draw: files are often sorted by place or category
            train = train.subset(args.train_images, seed=3)
        test = load_imagenet_sample(recipe, args.data) if args.dataset == "imagenet_sample" \
            else load_dataset(args.dataset, "test", args.data)
        return {"train_set": train, "test_set": test, "label_free": True}

    @staticmethod
    def _learned(args: argparse.Namespace, methods: list[str], **data: Any) -> Any:
        from split_infer.training.learned import LearnedTrainConfig, train_bundle

        require(args.reconstruction >= 0, "--reconstruction must be >= 0")
        require(args.warmup_epochs >= 0, "--warmup-epochs must be >= 0")
        require(args.batch_size >= 1, "--batch-size must be >= 1")
        require(args.lr > 0, "--lr must be > 0")
        settings = LearnedTrainConfig(reconstruction=args.reconstruction,
                                      warmup_epochs=args.warmup_epochs,
                                      batch_size=args.batch_size, lr=args.lr)
        return train_bundle(
            args.model,
            args.out,
            methods=methods,
            weights=args.weights,
            dataset=args.dataset,
            data_path=args.data,
            split_points=args.split or None,
            learned_split_points=args.learned_split or None,
            ratios=parse_ratios(args.ratio, methods),
            method_options=parse_method_options(args.option, methods),
            epochs=args.epochs,
            threshold_points=args.threshold,
            freeze_backbone=not args.no_freeze,
            work_dir=args.work_dir,
            train_images=args.train_images or None,
            eval_images=args.eval_images or None,
            keep=args.keep,
            baseline_codecs=args.codec or None,
            settings=settings,
            slim=args.slim,
            force=args.force,
            **data,
        )


def parse_ratios(values: list[str] | None, methods: list[str]
                 ) -> list[float] | dict[str, list[float]] | None:
    """``--ratio 4`` applies to every method, ``--ratio bbnet=16`` to one; mixing them gives
    the plain values to the methods that have none of their own."""
    if not values:
        return None
    common: list[float] = []
    per_method: dict[str, list[float]] = {}
    for value in values:
        method, sep, number = value.rpartition("=")
        if sep and method not in methods:
            raise UserError(f"--ratio {value}: {method!r} is not one of the --method values "
                            f"{methods}")
        try:
            ratio = float(number)
        except ValueError:
            raise UserError(f"--ratio {value}: {number!r} is not a number") from None
        if not ratio > 0:
            raise UserError(f"--ratio {value}: a ratio must be positive")
        (per_method.setdefault(method, []) if sep else common).append(ratio)
    if not per_method:
        return common
    return {m: per_method.get(m, common) for m in methods if m in per_method or common}


def parse_method_options(values: list[str] | None, methods: list[str]
                         ) -> dict[str, dict[str, Any]] | None:
    """``METHOD.KEY=VALUE`` → ``{METHOD: {KEY: VALUE}}``; numbers and true/false are typed."""
    if not values:
        return None
    options: dict[str, dict[str, Any]] = {}
    for value in values:
        target, sep, raw = value.partition("=")
        method, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise UserError(f"--option {value}: expected METHOD.KEY=VALUE")
        if method not in methods:
            raise UserError(f"--option {value}: {method!r} is not one of the --method values "
                            f"{methods}")
        options.setdefault(method, {})[key] = _typed(raw)
    return options


def _typed(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw
