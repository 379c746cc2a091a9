"""``split-infer bundle pack/assemble``: ship a bundle without the backbone every machine can
regenerate, and complete it where it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import user_output_errors

__all__ = ["BundleVerb"]


class BundleVerb(VerbExtension):
    """Pack a bundle for shipping, or assemble a packed one."""

    HELP = "pack a bundle without its derivable backbone files, or assemble a packed one"
    DESCRIPTION = ("pack: copy a bundle without the backbone files that can be regenerated "
                   "byte for byte from published weights (the weights' safetensors and the "
                   "tapped ONNX of the whole model). assemble: regenerate them and verify "
                   "every file of the result against the manifest's sha256.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``pack BUNDLE OUT`` and ``assemble PACKED OUT``."""
        sub = parser.add_subparsers(dest="bundle_command", required=True,
                                    metavar="BUNDLE_COMMAND", title="bundle commands",
                                    help="one of:")
        p = sub.add_parser("pack", help="copy a bundle without its derivable backbone files",
                           description="Copy a verified bundle without the backbone files "
                                       "that regenerate byte for byte from published weights; "
                                       "lists them in assembly.json.")
        p.add_argument("bundle", type=Path, help="bundle directory")
        p.add_argument("out", type=Path, help="packed directory to create (must not exist)")
        p.add_argument("--drop-method", action="append", default=[], metavar="METHOD",
                       help="leave out every configuration of this method and the files only "
                            "it uses (repeatable; the manifest keeps its search rows)")
        p = sub.add_parser("assemble", help="complete a packed bundle and verify it",
                           description="Regenerate a packed bundle's backbone files and "
                                       "verify every file of the result by sha256.")
        p.add_argument("packed", type=Path, help="packed bundle directory")
        p.add_argument("out", type=Path, nargs="?", default=None,
                       help="bundle directory to write (replaced); default: the user cache "
                            "(~/.cache/split_infer/bundles), where verbs given the packed "
                            "directory find it")
        p = sub.add_parser("add-input-jpeg",
                           help="add the split-0 configuration that sends the input image",
                           description="Add (or replace) a split-point-0 configuration to an "
                                       "assembled bundle: the edge sends the model's input "
                                       "crop as a colour JPEG and the cloud runs the whole "
                                       "model, so the scheduler can choose cloud-only like any "
                                       "split. Accuracy and bytes are measured on the "
                                       "bundle's evaluation images.")
        p.add_argument("bundle", type=Path, help="assembled bundle directory (rewritten)")
        p.add_argument("--quality", type=int, default=90, metavar="Q",
                       help="JPEG quality 1..100 (default 90, image_transport's default)")
        p.add_argument("--data", type=Path, default=None,
                       help="data path of the bundle's data set (default: its usual place)")

    def main(self, args: argparse.Namespace) -> int:
        """Run the chosen command and say what it did."""
        from split_infer.training.assemble import assemble_bundle, pack_bundle

        with user_output_errors():  # an existing, non-empty output directory
            if args.bundle_command == "pack":
                derived = pack_bundle(args.bundle, args.out, tuple(args.drop_method))
                size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
                print(f"packed {args.bundle} into {args.out} ({size / 2**20:.1f} MB); "
                      f"regenerated at assembly: {', '.join(derived) or 'nothing'}")
                return 0
        if args.bundle_command == "add-input-jpeg":
            return _add_input_jpeg(args)
        if args.out is None:
            from split_infer.bundle import Bundle
            from split_infer.training.assemble import assembled

            bundle = Bundle.load(assembled(args.packed))
        else:
            bundle = assemble_bundle(args.packed, args.out)
        print(f"assembled {bundle.path}: {len(bundle.configurations)} configurations, "
              f"{len(bundle.manifest['files'])} files verified")
        return 0


def _add_input_jpeg(args: argparse.Namespace) -> int:
    from split_infer.bundle import Bundle, BundleError
    from split_infer.tools.cli._common import require
    from split_infer.training.input_jpeg import add_input_jpeg_configuration

    require(1 <= args.quality <= 100, "--quality must be in 1..100")
    try:  # says what is wrong with a missing, damaged or packed bundle
        Bundle.load(args.bundle)
    except BundleError as exc:
        require(False, f"{exc} (a packed bundle: assemble it first, add the configuration to "
                       "the assembled copy, then pack that again)")
    config = add_input_jpeg_configuration(args.bundle, args.quality, data_path=args.data)
    print(f"{args.bundle}: added {config.id} (split {config.split_point}, ratio "
          f"{config.ratio:g}, {config.codec}): top-1 {100 * config.accuracy:.2f} %, "
          f"{config.bytes_per_frame:.0f} B per frame")
    return 0
