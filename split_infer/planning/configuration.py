"""The unit every planner reasons about: one deployable configuration and its measured numbers.

Conventions shared by the whole ``planning`` package (and used in every name suffix):

* sizes in **bytes** (``bytes_per_frame``); bandwidth in **bits per second** (``*_bps``), so a
  frame of ``D`` bytes takes ``8·D / B`` seconds on the link;
* times in **seconds** (``*_s``); rates in **frames per second** (``*_hz``);
* accuracy ``ν`` as a **fraction in [0, 1]** (not a percentage);
* energy in joules, power in watts (the BottleNet table is converted from mW on the way in).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BITS_PER_BYTE", "KINDS", "Configuration", "Region"]

BITS_PER_BYTE = 8

Kind = Literal["split", "client_only", "server_only"]
KINDS: tuple[str, ...] = ("split", "client_only", "server_only")


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """One way of running the model, with the numbers a bundle measured for it.

    Maps onto the thesis's strategy 4-tuple (Ulhaq §4.2, eqs. 4.2–4.4):

    * ``edge_s`` = ``I_c + E_c``: head + encoder (client-only: the whole model ``I_c^(c)``;
      server-only: encoding the input image, ``E_c^(s)``);
    * ``cloud_s`` = ``E_s + I_s``: decoder + tail (server-only: decode + whole model);
    * ``bytes_per_frame`` = ``D``: real bytes on the wire per frame (0 for client-only);
    * ``accuracy`` = ``ν`` measured for this configuration (fraction in [0, 1]);
    * ``ratio`` = compression ratio ``γ`` (Hu & Krishnamachari's γ; 1 means uncompressed).

    ``split_point`` is the number of head blocks (``models.SplitPoint.index``); ``split_name`` and
    ``codec`` are informative labels. Build it from a dict with :meth:`from_dict`.
    """

    name: str
    bytes_per_frame: float
    accuracy: float
    edge_s: float
    cloud_s: float
    kind: Kind = "split"
    split_point: int | None = None
    split_name: str = ""
    ratio: float = 1.0
    codec: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        for field in ("bytes_per_frame", "edge_s", "cloud_s"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.name}: {field} must be finite and >= 0, got {value!r}")
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(
                f"{self.name}: accuracy is a fraction in [0, 1], got {self.accuracy!r}"
                + (" (a percentage? divide by 100)" if 1.0 < self.accuracy <= 100.0 else "")
            )
        if not (math.isfinite(self.ratio) and self.ratio > 0):
            raise ValueError(f"{self.name}: ratio must be finite and > 0, got {self.ratio!r}")
        if self.kind == "client_only":
            if self.bytes_per_frame != 0 or self.cloud_s != 0:
                raise ValueError(f"{self.name}: client_only sends nothing and uses no cloud time")
        elif self.bytes_per_frame <= 0:
            raise ValueError(f"{self.name}: a {self.kind} configuration must send > 0 bytes")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Configuration:
        """Build from a mapping with this class's field names; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Configuration field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @property
    def transmits(self) -> bool:
        """Whether frames cross the link (and so pay ``D/B`` and the RTT)."""
        return self.bytes_per_frame > 0

    @property
    def compute_bound_hz(self) -> float:
        """Throughput bound of the computation stages, Hu & K's ``T_p`` for a 2-device pipeline.

        Edge and cloud work on different frames at the same time, so the slower of the two
        stages bounds the rate (Hu & K eq. (1), first inequality, with n = 2).
        """
        slowest = max(self.edge_s, self.cloud_s)
        return math.inf if slowest == 0 else 1.0 / slowest


def preference_key(config: Configuration, index: int) -> tuple[float, float, int]:
    """Tie-break shared by every planner: higher accuracy, then fewer bytes, then list order."""
    return (-config.accuracy, config.bytes_per_frame, index)


@dataclass(frozen=True)
class Region:
    """A bandwidth interval ``[low_bps, high_bps)`` where ``configuration`` is the best choice."""

    configuration: Configuration
    low_bps: float
    high_bps: float

    def contains(self, bandwidth_bps: float) -> bool:
        return self.low_bps <= bandwidth_bps < self.high_bps
