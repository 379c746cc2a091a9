"""``split-infer train-backbone MODEL --out W.safetensors``: train a backbone classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import DATASETS, add_threads_argument, require, set_threads

__all__ = ["TrainBackboneVerb"]


class TrainBackboneVerb(VerbExtension):
    """Train a registered backbone with SGD and a one-cycle schedule, resumably."""

    HELP = "train a backbone classifier (resumable)"
    DESCRIPTION = ("Train a backbone classifier (SGD, one-cycle learning rate, crop+flip "
                   "augmentation) and write its weights as safetensors. A checkpoint next to "
                   "--out after every epoch lets an interrupted run resume.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Model, output, data and the training schedule."""
        parser.add_argument("model", help="registered model name (see 'split-infer models')")
        parser.add_argument("--out", type=Path, required=True,
                            help="weights file to write (.safetensors); the resume state goes "
                                 "next to it as OUT.checkpoint.safetensors")
        parser.add_argument("--dataset", default="cifar10", choices=DATASETS,
                            help="training data set (default: %(default)s)")
        parser.add_argument("--data", type=Path, default=None,
                            help="data path: the CIFAR-10 zip, the Fashion-MNIST IDX directory "
                                 "or the image folder (default: the data set's usual place)")
        parser.add_argument("--epochs", type=int, default=18,
                            help="training epochs (default: %(default)s)")
        parser.add_argument("--batch-size", type=int, default=128,
                            help="images per SGD step (default: %(default)s)")
        parser.add_argument("--lr", type=float, default=0.1,
                            help="peak one-cycle learning rate (default: %(default)g)")
        parser.add_argument("--train-images", type=int, default=0, metavar="N",
                            help="random training subset (0 = all)")
        parser.add_argument("--test-images", type=int, default=0, metavar="N",
                            help="random test subset (0 = all)")
        parser.add_argument("--seed", type=int, default=0,
                            help="seed of the subsets and of training (default: %(default)s)")
        add_threads_argument(parser)

    def main(self, args: argparse.Namespace) -> int:
        """Train (or resume), then write the weights."""
        from split_infer.models import get_model, save_weights
        from split_infer.training.backbone import TrainConfig, train_backbone
        from split_infer.training.datasets import load_dataset

        set_threads(args.threads)
        require(args.epochs >= 1, "--epochs must be at least 1")
        require(args.batch_size >= 1, "--batch-size must be at least 1")
        require(args.lr > 0, "--lr must be positive")
        require(args.train_images >= 0 and args.test_images >= 0,
                "--train-images and --test-images must be >= 0 (0 = all)")
        train = load_dataset(args.dataset, "train", args.data)
        test = load_dataset(args.dataset, "test", args.data)
        if args.train_images:
            train = train.subset(args.train_images, seed=args.seed)
        if args.test_images:
            test = test.subset(args.test_images, seed=args.seed)
        model = get_model(args.model, num_classes=len(train.classes))
        checkpoint = args.out.with_suffix(".checkpoint.safetensors")
        history = train_backbone(model.net, train, test,
                                 TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                             lr=args.lr, seed=args.seed), checkpoint)
        model.eval()
        save_weights(model, args.out)
        print(f"wrote {args.out}: test top-1 {history[-1]['top1']:.2f}% after {len(history)} "
              f"epochs (resume state in {checkpoint})")
        return 0
