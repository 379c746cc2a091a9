"""The configuration key: one definition of how a (split point, ratio) pair is named.

Every wire frame names its configuration by split point (u16) and ratio (f32), so every
table that maps configurations to parts, codecs or results is keyed by the pair with the
ratio rounded to float32: ``config_key(10, 0.1)`` equals the key of a frame decoded from the
wire. The text form ``"split:ratio"`` is what parameters, launch files and the CLI take.

One key names no cut: :data:`EDGE_ONLY_KEY` (``"-1:1"``), the whole model on the robot and
nothing sent. Edge-only results carry it, and a scheduler may choose it like any split.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EDGE_ONLY_KEY", "EDGE_ONLY_SPLIT", "ConfigKey", "config_key", "format_config_key",
           "parse_config_key"]

#: ``(split_point, ratio)``, ratio at float32 precision.
ConfigKey = tuple[int, float]

#: ``split_point`` of the edge-only configuration (no cut: the whole model on the robot).
EDGE_ONLY_SPLIT = -1


def config_key(split_point: int, ratio: float) -> ConfigKey:
    """``(split_point, ratio)`` with the ratio rounded to float32, the precision of the wire."""
    with np.errstate(over="ignore"):  # out-of-range ratios become inf; the frame refuses them
        return int(split_point), float(np.float32(ratio))


#: The edge-only configuration's key: nothing crosses the link, so its "ratio" is 1.
EDGE_ONLY_KEY: ConfigKey = (EDGE_ONLY_SPLIT, 1.0)


def format_config_key(split_point: int, ratio: float) -> str:
    """``"split:ratio"``, the ratio in its shortest form (``"10:86.4"``)."""
    return f"{int(split_point)}:{float(ratio):g}"


def parse_config_key(text: str) -> ConfigKey:
    """``"split:ratio"`` → :func:`config_key`; ValueError naming the problem otherwise."""
    parts = text.strip().split(":")
    if len(parts) != 2:
        raise ValueError(f"expected 'split:ratio' (e.g. '3:4'), got {text!r}")
    try:
        split_point, ratio = int(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"expected 'split:ratio' with an integer split point and a number "
                         f"ratio, got {text!r}") from None
    if (split_point, ratio) == EDGE_ONLY_KEY:
        return EDGE_ONLY_KEY
    if split_point < 0 or not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"'split:ratio' needs split >= 0 and ratio > 0 (or '-1:1', edge-only), "
                         f"got {text!r}")
    return config_key(split_point, ratio)
