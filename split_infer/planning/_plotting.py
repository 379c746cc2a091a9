"""Headless matplotlib helpers: a Figure without pyplot, so plotting is thread-safe and needs no
display. matplotlib is imported lazily because it is not a runtime dependency of the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(
    nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (7.0, 4.5)
) -> tuple[Any, Any]:
    """A Figure and a 2-D array of axes (always 2-D, even for one panel)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
