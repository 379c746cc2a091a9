"""The configurations the scheduler chooses among, from a bundle's manifest, without ROS.

::

    bundle manifest ──configuration_from_bundle──▶ Configuration (one per split × ratio)
        ├─ client_only ──edge_only_configuration──▶ (-1, 1): the whole model on the robot
        └─ client_only / server_only ──reference_configuration──▶ the thesis's references
    plan --edge-cpu's edge_timing.json ──with_edge_timing / planned_cpu_times──▶ robot times

Also the start-up choice (:func:`startup_configuration`, before the link is measured) and the
override parser. :mod:`split_infer.adaptation.scheduling` decides among what this builds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from split_infer.bundle import Bundle, BundleConfiguration
from split_infer.config_key import EDGE_ONLY_KEY, ConfigKey, config_key, parse_config_key
from split_infer.planning import Configuration
from split_infer.planning.configuration import KINDS

__all__ = [
    "REFERENCE_FIELDS",
    "configuration_from_bundle",
    "configurations_from_bundle",
    "edge_only_configuration",
    "initial_configuration",
    "parse_override",
    "planned_cpu_times",
    "reference_configuration",
    "startup_configuration",
    "with_edge_timing",
]

#: The manifest's whole-model references (``manifest[kind]``) and the measured fields each needs.
REFERENCE_FIELDS: dict[str, tuple[str, ...]] = {
    "client_only": ("accuracy", "edge_ms"),
    "server_only": ("accuracy", "bytes_per_frame", "cloud_ms"),
}


def parse_override(text: str) -> ConfigKey | None:
    """``"split:ratio"`` → its :func:`~split_infer.config_key.config_key`; ``""`` → None;
    ValueError if malformed."""
    if not text.strip():
        return None
    try:
        return parse_config_key(text)
    except ValueError as exc:
        raise ValueError(f"override: {exc} (or empty for the policy)") from None


def configuration_from_bundle(config: BundleConfiguration) -> Configuration:
    """One bundle configuration as a planning :class:`Configuration` (``name`` = its id).

    Needs the measured numbers (accuracy, bytes_per_frame, edge_ms, cloud_ms). The kind is
    ``method`` when the bundle says ``client_only``/``server_only``; split point 0 (the edge
    sends the input) is server-only; anything else is a split.
    """
    missing = [f for f in ("accuracy", "bytes_per_frame", "edge_ms", "cloud_ms")
               if getattr(config, f) is None]
    if missing:
        raise ValueError(f"configuration {config.id!r} lacks measured {', '.join(missing)}")
    if config.method in KINDS and config.method != "split":
        kind = config.method
    else:
        kind = "server_only" if config.split_point == 0 else "split"
    return Configuration(
        name=config.id,
        kind=kind,  # type: ignore[arg-type]
        split_point=config.split_point,
        split_name=config.split_name,
        ratio=config.key[1],
        codec=config.codec,
        bytes_per_frame=float(config.bytes_per_frame),  # type: ignore[arg-type]
        accuracy=float(config.accuracy),  # type: ignore[arg-type]
        edge_s=float(config.edge_ms) / 1e3,  # type: ignore[arg-type]
        cloud_s=float(config.cloud_ms) / 1e3,  # type: ignore[arg-type]
    )


def startup_configuration(configs: Sequence[BundleConfiguration]) -> BundleConfiguration:
    """The configuration an edge starts with, before anything is known about the link.

    The assumption is the cautious one: the link carries the smallest frames ``D_min`` at the
    camera rate and no more. At that bandwidth a configuration sending ``D`` bytes delivers a
    fraction ``min(1, D_min / D)`` of the frames, so Hu & K's effective accuracy is
    ``accuracy × min(1, D_min / D)`` whatever the camera rate; the start is its maximum (ties:
    fewer bytes). With a learned bundle that is rarely the very smallest frames: a rateless
    k = 1 prefix (92 B, 23 %) loses to BBNet ×32 (190 B, 85.6 %), which at worst halves the
    frame rate on a link too slow for it until the first measurement moves the scheduler down.
    Configurations without measured bytes or accuracy fall back to the smallest frames
    (measured bytes first, then the highest ratio). ValueError if ``configs`` is empty.
    """
    if not configs:
        raise ValueError("no configurations to start with")
    sized = [c for c in configs if c.bytes_per_frame]  # a frame sent, its size measured
    scored = [c for c in sized if c.accuracy is not None]
    if not scored:
        return min(sized, key=lambda c: c.bytes_per_frame) if sized else max(
            configs, key=lambda c: c.ratio)
    floor = float(min(c.bytes_per_frame for c in sized))
    return max(scored, key=lambda c: (float(c.accuracy) * min(1.0, floor / c.bytes_per_frame),
                                      -float(c.bytes_per_frame)))


def initial_configuration(configs: Sequence[BundleConfiguration], split_point: int = -1,
                          ratio: float = 0.0) -> BundleConfiguration:
    """:func:`startup_configuration` among ``configs`` that match the requested split point
    and ratio (-1 / 0: any); LookupError listing the pairs when none does."""
    candidates = [c for c in configs
                  if (split_point == -1 or c.split_point == split_point)
                  and (ratio == 0.0 or c.key[1] == config_key(0, ratio)[1])]
    if not candidates:
        pairs = ", ".join(f"({c.split_point}, {c.ratio:g})" for c in configs)
        raise LookupError(f"no preloaded configuration matches split_point={split_point}, "
                          f"ratio={ratio:g}; preloaded (split_point, ratio): {pairs}")
    return startup_configuration(candidates)


def reference_configuration(bundle: Bundle, kind: str) -> Configuration | None:
    """The manifest's ``client_only`` or ``server_only`` reference as a planning Configuration.

    These are the thesis's other two strategies (Ulhaq §4.2): client-only, eq. 4.4 — the whole
    model on the edge, ``I_t = I_c^(c)`` (``edge_ms``), nothing sent; server-only, eq. 4.3 — the
    input image as JPEG (``bytes_per_frame``) into the whole model in the cloud (``cloud_ms``).
    ``E_c^(s)``, the JPEG encoding on the edge, is ``manifest["server_only"]["edge_ms"]`` when the
    manifest has it and 0 otherwise (the baseline builder does not measure it). The server-only
    ratio is the float32 input size (``profile.input_bytes``) over the JPEG bytes, comparable with
    the split ratios (float32 features over wire bytes); client-only's ratio is 1.

    ``name`` is ``kind`` (``kind + "_reference"`` if a bundle configuration already has that id);
    ``split_point`` is None: the edge node cannot be switched to a reference, and
    :class:`SchedulingLoop` refuses configurations without a split point. Returns None if the
    manifest has no such entry; ValueError naming the missing fields if it is incomplete.
    """
    if kind not in REFERENCE_FIELDS:
        raise ValueError(f"kind must be one of {sorted(REFERENCE_FIELDS)}, got {kind!r}")
    entry = bundle.manifest.get(kind)
    if entry is None:
        return None
    missing = [f for f in REFERENCE_FIELDS[kind]
               if not isinstance(entry, dict) or entry.get(f) is None]
    if missing:
        raise ValueError(f"reference {kind!r} lacks measured {', '.join(missing)}")
    ids = {c.id for c in bundle.configurations}
    name = kind if kind not in ids else f"{kind}_reference"
    accuracy = float(entry["accuracy"])
    if kind == "client_only":
        return Configuration(
            name=name, kind="client_only", split_name="full model", codec="",
            bytes_per_frame=0.0, accuracy=accuracy,
            edge_s=float(entry["edge_ms"]) / 1e3, cloud_s=0.0)
    nbytes = float(entry["bytes_per_frame"])
    input_bytes = (bundle.manifest.get("profile") or {}).get("input_bytes")
    quality = entry.get("jpeg_quality")
    return Configuration(
        name=name, kind="server_only", split_name="input",
        codec="jpeg" if quality is None else f"jpeg:quality={quality}",
        ratio=float(input_bytes) / nbytes if input_bytes and nbytes > 0 else 1.0,
        bytes_per_frame=nbytes, accuracy=accuracy,
        edge_s=float(entry.get("edge_ms") or 0.0) / 1e3,
        cloud_s=float(entry["cloud_ms"]) / 1e3)


def edge_only_configuration(bundle: Bundle) -> Configuration | None:
    """The manifest's client-only reference as a configuration the edge can be switched to:
    ``split_point`` -1, ratio 1 (:data:`~split_infer.config_key.EDGE_ONLY_KEY`), nothing sent.
    None when the bundle has no whole model to run (``client_only.onnx``) or no measured
    accuracy and edge time for it."""
    entry = bundle.manifest.get("client_only")
    if not isinstance(entry, dict) or not entry.get("onnx"):
        return None
    try:
        reference = reference_configuration(bundle, "client_only")
    except ValueError:
        return None
    if reference is None:
        return None
    return replace(reference, name="edge_only", split_point=EDGE_ONLY_KEY[0],
                   ratio=EDGE_ONLY_KEY[1])


def configurations_from_bundle(
    bundle: Bundle, *, include_references: bool = False, include_edge_only: bool = False
) -> tuple[list[Configuration], list[str]]:
    """Every configuration of ``bundle`` the scheduler can reason about, and the ids of those
    skipped because a measured number is missing. ValueError if none is usable.

    With ``include_edge_only`` the edge-only configuration (:func:`edge_only_configuration`)
    is appended when the bundle can run it (skipped as ``edge_only`` otherwise). With
    ``include_references`` (for planning, not for the scheduler: the edge cannot run them),
    the manifest's client-only and server-only references (:func:`reference_configuration`) are
    appended when present; an incomplete one is skipped and reported by its kind."""
    usable: list[Configuration] = []
    skipped: list[str] = []
    for config in bundle.configurations:
        try:
            usable.append(configuration_from_bundle(config))
        except ValueError:
            skipped.append(config.id)
    if not usable:
        raise ValueError(f"{bundle.path}: no configuration has measured accuracy, "
                         "bytes_per_frame, edge_ms and cloud_ms")
    if include_edge_only:
        edge_only = edge_only_configuration(bundle)
        if edge_only is None:
            skipped.append("edge_only")
        else:
            usable.append(edge_only)
    if include_references:
        for kind in REFERENCE_FIELDS:
            try:
                reference = reference_configuration(bundle, kind)
            except ValueError:
                skipped.append(kind)
                continue
            if reference is not None:
                usable.append(reference)
    return usable, skipped


def with_edge_timing(configs: Sequence[Configuration], measured_ms: Mapping[str, float],
                     scale: float | None = None) -> list[Configuration]:
    """``configs`` with the robot's edge times replaced by measured ones: ``measured_ms`` by
    configuration name (``edge_only`` may be given as ``client_only``, the manifest's name for
    the whole model), as ``split-infer plan --edge-cpu`` writes them (``edge_timing.json``).
    A configuration it does not name is scaled by ``scale`` (the file's median ratio), or
    kept when ``scale`` is None. ValueError for a time that is not a positive number."""
    out = []
    for config in configs:
        ms = measured_ms.get(config.name)
        if ms is None and config.name == "edge_only":
            ms = measured_ms.get("client_only")
        if ms is not None:
            if not (math.isfinite(float(ms)) and float(ms) > 0):
                raise ValueError(f"measured edge time of {config.name!r} is not a positive "
                                 f"number of ms: {ms!r}")
            out.append(replace(config, edge_s=float(ms) / 1e3))
        elif scale is not None:
            out.append(replace(config, edge_s=config.edge_s * float(scale)))
        else:
            out.append(config)
    return out


def planned_cpu_times(configs: Sequence[Configuration], measured_cpu_ms: Mapping[str, float]
                      ) -> dict[str, float]:
    """CPU seconds per frame by configuration name from ``measured_cpu_ms`` (by id, the
    whole model as ``client_only``, as ``split-infer plan --edge-cpu`` writes them); the
    configurations it does not name are left out. ValueError for a time that is not a
    positive number."""
    out = {}
    for config in configs:
        ms = measured_cpu_ms.get(config.name)
        if ms is None and config.name == "edge_only":
            ms = measured_cpu_ms.get("client_only")
        if ms is None:
            continue
        if not (isinstance(ms, int | float) and math.isfinite(ms) and ms > 0):
            raise ValueError(f"measured CPU time of {config.name!r} is not a positive number "
                             f"of ms: {ms!r}")
        out[config.name] = float(ms) / 1e3
    return out
