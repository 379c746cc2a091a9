"""What several verbs share: process set-up, common arguments, checks and tables."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from split_infer.defaults import DEFAULT_BUNDLE, DEMO_BAG, DEMO_TRACE
from split_infer.errors import UserError

__all__ = [
    "DATASETS",
    "add_threads_argument",
    "bundle_directory",
    "ensure_ament_prefix",
    "format_configurations",
    "graph_arguments",
    "require",
    "set_threads",
    "user_output_errors",
]

#: the ``--dataset`` choices of the verbs that read images (see ``training.datasets``)
DATASETS = ("cifar10", "fashion_mnist", "folder")


def ensure_ament_prefix() -> None:
    """Point ``AMENT_PREFIX_PATH`` at the running prefix when it holds an ament index.

    rclpy from the ``ros-*`` wheels finds its message packages through that variable, which
    nothing sets in a plain virtual environment; an existing value (a sourced ROS 2) wins.
    """
    if "AMENT_PREFIX_PATH" not in os.environ:
        index = Path(sys.prefix) / "share" / "ament_index"
        if index.is_dir():
            os.environ["AMENT_PREFIX_PATH"] = sys.prefix


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count; ``None`` or 0 leaves torch's default."""
    if threads:
        import torch  # imported here: listing verbs must not pay for torch

        torch.set_num_threads(threads)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--threads`` option of the verbs that run torch (default: torch's own choice)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch intra-op threads (default: torch's own choice)")


def require(condition: bool, message: str) -> None:
    """Raise a :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


@contextlib.contextmanager
def user_output_errors() -> Iterator[None]:
    """Turn ``FileExistsError`` into a :class:`UserError` inside the block.

    Only around code that writes to an output the user named (``--out``) and refuses to
    overwrite it: there the error is the user's to fix (another path, or ``--force``).
    """
    try:
        yield
    except FileExistsError as exc:
        raise UserError(str(exc)) from exc


def bundle_directory(text: str) -> Path:
    """An argparse ``type`` for bundle arguments: a packed bundle (shipped without its
    backbone files) is assembled on first use into the cache, every file verified, and that
    directory is used; any other path is passed on as it is."""
    from split_infer.bundle import MANIFEST, PACKED_MARKER, BundleError

    path = Path(text)
    if not (path / PACKED_MARKER).is_file():
        return path
    from split_infer.training.assemble import assembled

    try:
        return assembled(path)
    except BundleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{path}: cannot assemble the packed bundle "
                                         f"({exc}; {MANIFEST} damaged?)") from None


def control_side_argument(parser: argparse.ArgumentParser) -> None:
    """``--control-side``, as ``testbed`` and ``bench testbed_e2e`` take it (the testbed's
    ``CONTROL_SIDES``)."""
    parser.add_argument("--control-side", choices=("robot", "server"), default="robot",
                        help="where the bandwidth monitor and the scheduler run: beside the "
                             "edge node, under its CPU budget, or beside the cloud node "
                             "(default: %(default)s)")


def graph_arguments(parser: argparse.ArgumentParser, duration_s: float | None, out: str,
                    scenario: str = "") -> None:
    """The arguments ``demo`` and ``testbed`` share: what runs, over which trace, how long.
    With ``scenario`` (the demo) bundle, bag, trace and duration default to None, and the
    help names the scenario that fills them in."""
    default = (lambda value: None) if scenario else (lambda value: value)
    said = f"set by {scenario}" if scenario else None
    parser.add_argument("--bundle", type=bundle_directory, default=default(DEFAULT_BUNDLE),
                        help="bundle directory (or a packed one, assembled on first use): "
                             "model parts, codecs and their measurements (default: "
                             f"{said or 'the shipped CIFAR-10 ResNet-20 bundle'})")
    parser.add_argument("--bag", type=Path, default=default(DEMO_BAG),
                        help="camera bag with labels (default: "
                             f"{said or 'the shipped CIFAR-10 bag'})")
    parser.add_argument("--trace", default=default(DEMO_TRACE),
                        help="bandwidth trace: a file, or a name in config/traces/ "
                             "(time_s,rate_bps,delay_ms,loss; default: "
                             f"{said or '%(default)s'})")
    parser.add_argument("--duration", type=float, default=default(duration_s),
                        metavar="SECONDS", help="how long to run, seconds (default: "
                        f"{said or '%(default)g'})")
    parser.add_argument("--objective", default="effective_accuracy",
                        choices=["effective_accuracy", "latency", "accuracy"],
                        help="what the scheduler maximises (default: %(default)s)")
    parser.add_argument("--frame-rate", type=float, default=30.0, metavar="HZ",
                        help="camera rate T_gen the scheduler plans for, Hz "
                             "(default: %(default)g)")
    parser.add_argument("--out", type=Path, default=Path(out),
                        help="output directory for report.json and timeline.png "
                             "(default: %(default)s)")


def format_configurations(bundle: Any, rows: list[dict] | None = None) -> str:
    """Aligned table of a bundle's configurations (or of fresh evaluation ``rows``)."""
    entries = rows or [c.to_dict() for c in bundle.configurations]
    agreement = any(e.get("agreement") is not None for e in entries)
    width = max([14, *(len(e["id"]) for e in entries)])
    header = (f"{'id':{width}s} {'split':>14s} {'ratio':>7s} {'top-1 %':>8s}"
              + (f" {'agree %':>8s}" if agreement else "") + f" {'bytes/frame':>11s}  codec")
    lines = [header, "-" * (len(header) + 30)]
    for e in entries:
        split_label = f"{e['split_point']}:{e['split_name']}"
        accuracy = "-" if e.get("accuracy") is None else f"{100 * e['accuracy']:.2f}"
        agrees = "" if not agreement else " " + (
            f"{'-':>8s}" if e.get("agreement") is None else f"{100 * e['agreement']:8.2f}")
        size = "-" if e.get("bytes_per_frame") is None else f"{e['bytes_per_frame']:.1f}"
        lines.append(f"{e['id']:{width}s} {split_label:>14s} {e['ratio']:7.3g} {accuracy:>8s}"
                     f"{agrees} {size:>11s}  {e['codec']}")
    references = {
        "client_only": "whole model on the edge",
        "server_only": "input image as JPEG q{jpeg_quality} into the whole model",
    }
    for key, description in references.items():
        ref = bundle.manifest.get(key)
        if ref and rows is None:  # references were measured on the manifest's image set
            size = f"{ref.get('bytes_per_frame', 0.0):.1f}"
            lines.append(f"{key:{width}s} {'':>14s} {'':>7s} {100 * ref['accuracy']:8.2f} "
                         f"{size:>11s}  {description.format(**ref)}")
    return "\n".join(lines)
