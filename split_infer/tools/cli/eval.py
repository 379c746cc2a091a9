"""``split-infer eval BUNDLE``: re-measure a bundle from real serialized wire frames."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import (
    add_threads_argument,
    bundle_directory,
    format_configurations,
    require,
    set_threads,
)

__all__ = ["EvalVerb"]


class EvalVerb(VerbExtension):
    """Measure accuracy and bytes per frame of a bundle's configurations on test images."""

    HELP = "re-measure a bundle from real wire frames"
    DESCRIPTION = ("Re-measure top-1 accuracy and bytes per frame of a bundle's configurations "
                   "from real serialized wire frames, next to the unsplit model on the same "
                   "test images.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The bundle, the images, the configurations and an optional JSON output."""
        parser.add_argument("bundle", type=bundle_directory,
                            help="bundle directory to measure, or a packed one (assembled "
                                 "on first use)")
        parser.add_argument("--images", type=int, default=0, metavar="N",
                            help="test images (0 = all)")
        parser.add_argument("--config", action="append",
                            help="configuration id, e.g. split2_c1 (repeatable; default: all)")
        parser.add_argument("--data", type=Path, default=None,
                            help="data path of the bundle's data set (default: its usual place)")
        parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
        add_threads_argument(parser)

    def main(self, args: argparse.Namespace) -> int:
        """Measure, print the table and optionally write JSON."""
        import numpy as np

        from split_infer.bundle import Bundle
        from split_infer.data import Preprocessing
        from split_infer.pipeline.evaluate import evaluate_bundle, evaluate_client_only
        from split_infer.training.datasets import load_dataset

        set_threads(args.threads)
        require(args.images >= 0, "--images must be >= 0 (0 = all)")
        bundle = Bundle.load(args.bundle)
        dataset_name = bundle.manifest.get("dataset", {}).get("name", "cifar10")
        test = load_dataset(dataset_name, "test", args.data,
                            recipe=Preprocessing.from_dict(bundle.manifest["preprocessing"]))
        if args.images:
            test = test.subset(args.images, seed=1)
        configs = ([bundle.configuration_by_id(i) for i in args.config] if args.config
                   else bundle.configurations)
        rows = evaluate_bundle(bundle, test, configs)
        full_onnx = bundle.manifest.get("client_only", {}).get("onnx")
        client = evaluate_client_only(bundle.read(full_onnx), test) if full_onnx else None
        if client:  # the fidelity that matters when the labels are the model's own
            unsplit = np.asarray(client["predictions"])
            for row in rows:
                row["agreement"] = float((np.asarray(row["predictions"]) == unsplit).mean())
        print(f"{bundle.path}: {len(test)} {dataset_name} test images, real wire frames")
        print(format_configurations(bundle, rows))
        if client:
            print(f"unsplit model top-1 on the same images: {100 * client['accuracy']:.2f} %")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"bundle": str(bundle.path), "images": len(test),
                                            "rows": rows, "unsplit": client}, indent=2))
            print(f"wrote {args.out}")
        return 0
