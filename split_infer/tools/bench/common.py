"""What the benchmarks of :mod:`split_infer.tools.bench` share.

* :func:`bench_parser`, :func:`add_out_argument`, :func:`add_bundle_arguments`,
  :func:`add_threads_argument` -- the argument parser of ``split-infer bench NAME`` and the
  options several benchmarks have;
* :func:`limit_threads` -- keep the process on a number of CPUs;
* :func:`machine_info`, :func:`timestamp`, :func:`command_line` -- what a results file records
  about the run;
* :func:`write_json` -- write a results file (its directory created, replaced atomically);
* :func:`pyplot`, :func:`save_figure` -- matplotlib without a display, figures at one dpi.

Only the standard library is imported at module level: the fuzzer's child process imports
this module before it instruments ``split_infer``, and ``--help`` must stay cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "DPI",
    "PROG",
    "RESULTS",
    "add_bundle_arguments",
    "add_out_argument",
    "add_threads_argument",
    "bench_parser",
    "command_line",
    "limit_threads",
    "machine_info",
    "package_versions",
    "pyplot",
    "save_figure",
    "timestamp",
    "write_json",
]

#: How the benchmarks are run: ``split-infer bench NAME``.
PROG = "split-infer bench"
#: Where results go by default, relative to the current directory (the repository root).
RESULTS = Path("bench/results")
#: Resolution of every saved figure.
DPI = 120
#: Import name → key in :func:`machine_info` of the libraries whose version it records.
PACKAGES = {"numpy": "numpy", "torch": "torch", "onnxruntime": "onnxruntime", "cv2": "opencv"}


# -- arguments -------------------------------------------------------------------------------


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``split-infer bench NAME``, described by the first paragraph of ``doc``
    (the module docstring)."""
    description = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(prog=f"{PROG} {name}", description=description)


def add_out_argument(parser: argparse.ArgumentParser, subdir: str | None = None,
                     what: str = "the results") -> None:
    """``--out DIR``, by default ``bench/results/SUBDIR`` below the current directory."""
    default = RESULTS / subdir if subdir else RESULTS
    parser.add_argument("--out", type=Path, default=default, metavar="DIR",
                        help=f"directory for {what} (default: %(default)s)")


def add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bundle`` and ``--bag``, by default the shipped bundle and demo bag."""
    from split_infer.defaults import DEFAULT_BUNDLE, DEMO_BAG
    from split_infer.tools.cli._common import bundle_directory

    parser.add_argument("--bundle", type=bundle_directory, default=DEFAULT_BUNDLE,
                        help="bundle directory, or a packed one (assembled on first use; "
                             "default: the shipped bundle)")
    parser.add_argument("--bag", type=Path, default=DEMO_BAG,
                        help="camera bag with labels (default: the shipped demo bag)")


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = 1) -> None:
    """``--threads N``: the CPUs the process is kept on (see :func:`limit_threads`)."""
    shown = default or "no limit"
    parser.add_argument("--threads", type=int, default=default, metavar="N",
                        help="keep the process on N CPUs, with OpenCV and torch pools of N "
                             f"threads (0: no limit; default: {shown})")


# -- the process -----------------------------------------------------------------------------


def limit_threads(threads: int | None) -> None:
    """Keep this process on ``threads`` CPUs; ``None`` or 0 leaves everything as it is.

    Sets the CPU affinity (so that ONNX Runtime sessions opened with their default thread
    count inside the library stay on those CPUs too) and the OpenCV and torch thread pools
    (torch only where it is installed).
    """
    if not threads:
        return
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[-threads:])
    import cv2

    cv2.setNumThreads(threads)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(threads)


# -- what a results file records -------------------------------------------------------------


def timestamp() -> str:
    """The current time in UTC, ISO 8601 to the second (``2025-01-31T12:00:00+00:00``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def command_line(name: str, argv: Sequence[str] | None) -> str:
    """``split-infer bench NAME ARGS...`` as typed in a shell (``argv`` None: this process's
    own arguments)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join([*PROG.split(), name, *args])


def package_versions(names: dict[str, str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each import name in ``names`` (under its key), None if absent.

    Read from the installed distributions' metadata: nothing is imported.
    """
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    distributions = packages_distributions()
    versions: dict[str, str | None] = {}
    for module, key in names.items():
        versions[key] = None
        for dist in distributions.get(module, []):
            with contextlib.suppress(PackageNotFoundError):
                versions[key] = version(dist)
                break
    return versions


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor()


def machine_info(**extra: Any) -> dict[str, Any]:
    """The ``machine`` entry of a results file: platform, CPU model and count, the CPUs this
    process may use, load average, Python and library versions, then ``extra``.

    Timings from a loaded or different machine are not comparable; this says which it was.
    """
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    info["python"] = platform.python_version()
    info.update(package_versions())
    info.update(extra)
    return info


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path``, creating its directory; returns the path.

    The file is replaced atomically (written next to it, then renamed), so that a reader --
    or a benchmark killed while rewriting its results after every run -- never sees half a
    file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


# -- figures ---------------------------------------------------------------------------------


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = DPI) -> Path:
    """Save ``fig`` to ``path`` (directory created) at ``dpi`` and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
