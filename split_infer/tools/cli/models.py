"""``split-infer models``: the registered backbones and their split points."""

from __future__ import annotations

import argparse

from split_infer.tools.cli._api import VerbExtension

__all__ = ["ModelsVerb"]


class ModelsVerb(VerbExtension):
    """List the registered backbones (name, family, input shape), optionally their splits."""

    HELP = "list registered backbones"
    DESCRIPTION = ("List the registered backbones: name, family, input shape and a short "
                   "description; with -v also every split point (index:block name).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--family`` and ``-v``."""
        parser.add_argument("--family", choices=["cifar", "imagenet"],
                            help="only the models of this family (default: all)")
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="also list split points")

    def main(self, args: argparse.Namespace) -> int:
        """Print one line per model."""
        from split_infer.models import get_model, get_model_spec, list_models

        for name in list_models(args.family):
            spec = get_model_spec(name)
            line = f"{name:26s} {spec.family:9s} input {'x'.join(map(str, spec.input_shape)):11s}"
            print(f"{line} {spec.description}")
            if args.verbose:
                points = get_model(name).split_points()
                print("    split points: " + ", ".join(f"{p.index}:{p.name}" for p in points))
        return 0
