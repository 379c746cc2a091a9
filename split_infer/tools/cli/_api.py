"""The verb registry and the entry point of ``split-infer``.

Every verb is a :class:`VerbExtension` in a module of its own, in the shape of ros2cli's verb
extensions: :meth:`~VerbExtension.add_arguments` declares its arguments and
:meth:`~VerbExtension.main` runs it. :data:`VERBS` names them; :func:`build_parser` gives each
its sub-parser and :func:`main` runs the chosen one.

Errors: a :class:`~split_infer.errors.UserError` (unknown model, missing data, bad codec spec,
tampered bundle, a bad option value ...) prints one line and exits with status 2, the status
argparse gives malformed arguments. Anything else is a bug and ends in its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import ClassVar

from split_infer import __version__
from split_infer.errors import UserError
from split_infer.tools.cli._common import ensure_ament_prefix

__all__ = ["PROG", "VERBS", "VerbExtension", "build_parser", "load_verb", "main"]

PROG = "split-infer"

#: verb → ``module:class``, in the order ``split-infer --help`` lists them. Verb modules import
#: their heavy dependencies (torch, rclpy) inside ``main`` so that building the parser stays
#: cheap.
VERBS: dict[str, str] = {
    "demo": "split_infer.tools.cli.demo:DemoVerb",
    "models": "split_infer.tools.cli.models:ModelsVerb",
    "codecs": "split_infer.tools.cli.codecs:CodecsVerb",
    "profile": "split_infer.tools.cli.profile:ProfileVerb",
    "train-backbone": "split_infer.tools.cli.train_backbone:TrainBackboneVerb",
    "train": "split_infer.tools.cli.train:TrainVerb",
    "eval": "split_infer.tools.cli.eval:EvalVerb",
    "bundle": "split_infer.tools.cli.bundle:BundleVerb",
    "plan": "split_infer.tools.cli.plan:PlanVerb",
    "testbed": "split_infer.tools.cli.testbed:TestbedVerb",
    "bench": "split_infer.tools.cli.bench:BenchVerb",
    "bag": "split_infer.tools.cli.bag:BagVerb",
}


class VerbExtension:
    """One verb of ``split-infer``.

    Subclasses set :attr:`HELP` (one line in the verb list) and optionally
    :attr:`DESCRIPTION` (the paragraph of ``split-infer VERB --help``), declare their
    arguments in :meth:`add_arguments`, each with a ``help=`` text, and run in :meth:`main`.
    A mistake the user can fix is raised as :class:`~split_infer.errors.UserError`.
    """

    #: one line for ``split-infer --help``
    HELP: ClassVar[str] = ""
    #: the paragraph of ``split-infer VERB --help`` (default: :attr:`HELP`)
    DESCRIPTION: ClassVar[str] = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the verb's arguments on its sub-parser."""

    def main(self, args: argparse.Namespace) -> int:
        """Run the verb with the parsed ``args``; returns the process exit status."""
        raise NotImplementedError


def load_verb(name: str) -> VerbExtension:
    """A fresh instance of the verb registered as ``name`` in :data:`VERBS`."""
    module_name, _, class_name = VERBS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def build_parser() -> argparse.ArgumentParser:
    """The ``split-infer`` parser: one sub-parser per verb of :data:`VERBS`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Split CNN inference between a robot and a server over ROS 2.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"split_infer {__version__}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands", help="one of:")
    for name in VERBS:
        verb = load_verb(name)
        p = sub.add_parser(name, help=verb.HELP, description=verb.DESCRIPTION or verb.HELP)
        verb.add_arguments(p)
        p.set_defaults(_verb=verb)
    return parser


def _one_line(exc: BaseException) -> str:
    # A KeyError's str() is the repr of its key; the message is the key here.
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split("\n"))


def main(argv: list[str] | None = None) -> int:
    """Run ``split-infer`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    A :class:`~split_infer.errors.UserError` prints ``split-infer VERB: error: MESSAGE`` on
    stderr and returns 2; Ctrl-C returns 130; any other exception propagates.
    """
    ensure_ament_prefix()
    args = build_parser().parse_args(argv)
    try:
        return args._verb.main(args)
    except UserError as exc:
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
