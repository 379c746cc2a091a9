"""Bundles: a trained, deployable set of split configurations in one directory.

::

    BUNDLE/
      manifest.json                      what is in here, measured accuracy, sha256 of every file
      weights/backbone.safetensors       backbone weights (never pickle)
      weights/<codec>.safetensors        learned encoder/decoder weights, when any
      calibration/<config>.safetensors   codec calibration (quantizer statistics, entropy model)
      onnx/<part>.onnx                   edge part: input image → features sent on the wire
                                         cloud part: received features → logits

A *configuration* is one (split point, ratio) pair: the edge ONNX part it runs, the codec
spec that turns its output into wire bytes, and the cloud ONNX part that finishes the job.
Several configurations may share ONNX parts (a rateless codec serves every ratio from one
model: the edge sends the first ``keep_channels`` channels and the cloud fills the rest).

A part is named by a *part spec*: one bundle file (``onnx/split4_edge.onnx``), or a chain of
components joined by ``+``, each a bundle file or a segment of the bundle's tapped whole
model (``model[0:7]``: the input through split point 7; ``model[7:]``: split 7 through the
logits). ``model[0:7]+onnx/split7_bbnet_encoder.onnx`` is a learned edge part whose backbone
lives once in the bundle, however many configurations use it (:func:`part_components`).
``model[0:0]``, the one empty segment, is the input as it is: the edge part of a split-0
configuration, whose wire frames carry the (encoded) input image and whose cloud part
``model[0:]`` is the whole model.

Loading verifies the sha256 of every file against the manifest and refuses files the
manifest does not list, so a tampered or unexpected file never reaches ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from split_infer import __version__
from split_infer.codecs import Codec, get_codec
from split_infer.config_key import ConfigKey, config_key
from split_infer.data import Preprocessing
from split_infer.errors import UserError

__all__ = [
    "BUNDLE_FORMAT",
    "PACKED_MARKER",
    "Bundle",
    "BundleConfiguration",
    "BundleError",
    "check_chain",
    "is_link_configuration",
    "link_problem",
    "part_components",
    "sha256_file",
    "write_bundle",
]

BUNDLE_FORMAT = "split_infer.bundle/1"
MANIFEST = "manifest.json"
#: Written next to the manifest of a packed bundle (``training.assemble``): its list of the
#: backbone files regenerated at assembly.
PACKED_MARKER = "assembly.json"


class BundleError(UserError, ValueError):
    """A bundle is missing, malformed, tampered with, or does not have what was asked."""


_SEGMENT = re.compile(r"model\[(\d+):(\d*)\]")


def part_components(spec: str) -> list[str | tuple[int, int | None]]:
    """A part spec (see the module docstring) as its components in order: a bundle file's
    relative path, or ``(start, end)`` of a segment of the tapped whole model (``end``
    None: through the logits; ``(0, 0)``: the input itself). BundleError for an empty component
    or any other empty segment."""
    components: list[str | tuple[int, int | None]] = []
    for text in spec.split("+"):
        text = text.strip()
        match = _SEGMENT.fullmatch(text)
        if match:
            start, end = int(match[1]), (int(match[2]) if match[2] else None)
            if end is not None and end <= start and (start, end) != (0, 0):
                raise BundleError(f"part spec {spec!r}: segment {text} is empty")
            components.append((start, end))
        elif text and not text.startswith("model["):
            components.append(text)
        else:
            raise BundleError(f"part spec {spec!r}: {text!r} is neither a bundle file nor a "
                              "segment model[START:END]")
    return components


@dataclass(frozen=True)
class BundleConfiguration:
    """One deployable (split point, ratio) configuration."""

    id: str
    split_point: int
    split_name: str
    ratio: float
    codec: str
    feature_shape: tuple[int, ...]  # what the edge part outputs, (C, H, W)
    edge_onnx: str  # part spec (see the module docstring): image → features sent
    cloud_onnx: str  # part spec: received features → logits
    method: str = "baseline"  # baseline | bottlenet | hu_ae | aecnn | bbnet | rateless
    keep_channels: int | None = None  # rateless: channels sent; None = all
    calibration: str | None = None
    fill: str | None = None  # rateless/concealment: per-channel fill values (calibration file)
    accuracy: float | None = None  # top-1 fraction measured from real wire frames
    bytes_per_frame: float | None = None  # mean serialized wire-frame size
    edge_ms: float | None = None
    cloud_ms: float | None = None

    @property
    def wire_shape(self) -> tuple[int, ...]:
        """Shape of the tensor inside the wire frame (rateless sends a channel prefix)."""
        if self.keep_channels is None:
            return tuple(self.feature_shape)
        return (self.keep_channels, *self.feature_shape[1:])

    @property
    def key(self) -> ConfigKey:
        """The wire configuration id ``(split_point, ratio)``, ratio at float32 precision."""
        return config_key(self.split_point, self.ratio)

    def named_files(self) -> list[str]:
        """The bundle files this configuration reads: calibration, fill and the small ONNX
        files of its part specs (segments of the tapped model are not files)."""
        named = [self.calibration, self.fill]
        for spec in (self.edge_onnx, self.cloud_onnx):
            named += [c for c in part_components(spec) if isinstance(c, str)]
        return [n for n in named if n is not None]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feature_shape"] = list(self.feature_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BundleConfiguration:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise BundleError(f"configuration {d.get('id')!r}: unknown fields {sorted(unknown)}")
        try:
            values = dict(d)
            values["feature_shape"] = tuple(int(v) for v in d["feature_shape"])
            config = cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"configuration {d.get('id')!r} is malformed: {exc}") from None
        if not (math.isfinite(config.ratio) and config.ratio > 0):
            raise BundleError(f"configuration {config.id!r}: ratio must be > 0")
        return config


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_relative(bundle_dir: Path, relative: str) -> Path:
    """Resolve a manifest path, refusing anything that escapes the bundle directory."""
    if not relative or os.path.isabs(relative) or ".." in Path(relative).parts:
        raise BundleError(f"manifest path {relative!r} must be relative and stay in the bundle")
    return bundle_dir / relative


@dataclass
class Bundle:
    """A loaded, verified bundle."""

    path: Path
    manifest: dict[str, Any]
    configurations: list[BundleConfiguration] = field(default_factory=list)

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Read ``path/manifest.json``; with ``verify``, check every file's sha256 and refuse
        files the manifest does not list."""
        bundle_dir = Path(path)
        manifest_path = bundle_dir / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{bundle_dir} is not a bundle: {MANIFEST} not found")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
        found = manifest.get("format") if isinstance(manifest, dict) else None
        if found != BUNDLE_FORMAT:
            raise BundleError(f"{manifest_path}: format must be {BUNDLE_FORMAT!r}, got {found!r}")
        for key in ("model", "preprocessing", "classes", "configurations", "files"):
            if key not in manifest:
                raise BundleError(f"{manifest_path}: missing {key!r}")
        if verify:
            if (bundle_dir / PACKED_MARKER).is_file():
                missing = [f for f in manifest["files"] if not (bundle_dir / f).is_file()]
                if missing:
                    raise BundleError(
                        f"{bundle_dir} is a packed bundle (its backbone files, e.g. "
                        f"{missing[0]}, are regenerated at assembly): run 'split-infer bundle "
                        f"assemble {bundle_dir}' and use the directory it prints")
            cls._verify(bundle_dir, manifest["files"])
        configurations = [BundleConfiguration.from_dict(c) for c in manifest["configurations"]]
        bundle = cls(bundle_dir, manifest, configurations)
        tapped = manifest["model"].get("onnx")
        for config in configurations:
            for spec in (config.edge_onnx, config.cloud_onnx):
                if any(isinstance(c, tuple) for c in part_components(spec)) and not tapped:
                    raise BundleError(f"configuration {config.id!r}: {spec!r} cuts the whole "
                                      "model, but the manifest names no tapped model.onnx")
            for relative in config.named_files():
                if relative not in manifest["files"]:
                    raise BundleError(f"configuration {config.id!r} names {relative}, which the "
                                      "manifest's file list does not hold")
        keys = [c.key for c in configurations]
        if len(set(keys)) != len(keys):
            raise BundleError(f"{manifest_path}: two configurations share a (split, ratio) id")
        return bundle

    @staticmethod
    def _verify(bundle_dir: Path, files: Mapping[str, str]) -> None:
        listed = set()
        for relative, expected in files.items():
            path = _safe_relative(bundle_dir, relative)
            if not path.is_file():
                raise BundleError(f"{bundle_dir}: {relative} is listed but missing")
            actual = sha256_file(path)
            if actual != expected:
                raise BundleError(f"{bundle_dir}: sha256 mismatch for {relative} (tampered or "
                                  f"corrupt): manifest {expected[:12]}…, file {actual[:12]}…")
            listed.add(path.resolve())
        for path in bundle_dir.rglob("*"):
            if path.is_file() and path.name != MANIFEST and path.resolve() not in listed:
                raise BundleError(f"{bundle_dir}: unknown file "
                                  f"{path.relative_to(bundle_dir)} is not in the manifest")

    # -- queries -----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def preprocessing(self):
        """The :class:`~split_infer.training.datasets.Preprocessing` the model was trained with."""
        return Preprocessing.from_dict(self.manifest["preprocessing"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def split_points(self) -> list[int]:
        return sorted({c.split_point for c in self.configurations})

    def ratios(self, split_point: int) -> list[float]:
        return sorted(c.ratio for c in self.configurations if c.split_point == split_point)

    def file(self, relative: str) -> Path:
        """The path of a bundle file, for tools that write or list bundles. Whatever runs a
        bundle's contents reads them with :meth:`read`, which verifies them."""
        return _safe_relative(self.path, relative)

    def read(self, relative: str) -> bytes:
        """The bytes of a listed file, verified against the manifest's sha256 at this read.

        Every runtime consumer (ONNX Runtime sessions, safetensors, calibration, fill values)
        takes these bytes, never the path: a file swapped or corrupted after :meth:`load` is
        refused (BundleError) instead of run. A backend switch, the edge-only fallback and
        lazily read calibration all go through here.
        """
        expected = self.manifest["files"].get(relative)
        if expected is None:
            raise BundleError(f"{self.path}: {relative} is not in the manifest")
        path = _safe_relative(self.path, relative)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{self.path}: cannot read {relative} ({exc.strerror})") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise BundleError(f"{self.path}: {relative} changed since the bundle was loaded "
                              f"(sha256 {actual[:12]}…, manifest {expected[:12]}…); refusing "
                              "to run it")
        return data

    def configuration(self, split_point: int, ratio: float) -> BundleConfiguration:
        """The configuration with exactly this wire id; BundleError listing the valid ones."""
        key = config_key(split_point, ratio)
        for config in self.configurations:
            if config.key == key:
                return config
        raise BundleError(f"no configuration for split {split_point}, ratio {ratio}; the bundle "
                          f"has {sorted(c.key for c in self.configurations)}")

    def configuration_by_id(self, config_id: str) -> BundleConfiguration:
        for config in self.configurations:
            if config.id == config_id:
                return config
        raise BundleError(f"no configuration {config_id!r}; the bundle has "
                          f"{[c.id for c in self.configurations]}")

    def codec(self, config: BundleConfiguration) -> Codec:
        """The configuration's codec with its calibration loaded."""
        codec = get_codec(config.codec, shape=config.wire_shape)
        if config.calibration is not None:
            from safetensors.numpy import load

            codec.load_state_dict(load(self.read(config.calibration)))
        return codec

    def fill_values(self, config: BundleConfiguration) -> np.ndarray | None:
        """Per-channel fill values for channels the edge did not send (dataset means)."""
        if config.fill is None:
            return None
        from safetensors.numpy import load

        return load(self.read(config.fill))["channel_mean"].astype(np.float32)

    def base_manifest(self) -> dict[str, Any]:
        """The manifest without what :func:`write_bundle` fills in (format, version,
        configurations, file hashes): what to pass back to it when rewriting a bundle."""
        return {k: v for k, v in self.manifest.items() if k not in _WRITTEN_KEYS}


def is_link_configuration(config: BundleConfiguration) -> bool:
    """Whether ``config`` can sit between two stages: a baseline codec on the plain features
    (a learned decoder is fused with its trained tail; a rateless prefix needs its fill)."""
    return config.method == "baseline" and config.keep_channels is None


def link_problem(config: BundleConfiguration) -> str | None:
    """Why ``config`` cannot link two stages of a chain, or None when it can."""
    if not is_link_configuration(config):
        return (f"configuration {config.id} ({config.method}) cannot link two stages: only "
                "baseline codecs can (a learned decoder is fused with its trained tail)")
    return None


def check_chain(configs: Sequence[BundleConfiguration]) -> None:
    """Raise ValueError unless ``configs`` can be the links of one chain, in order: split
    points strictly increasing, and every link but the last a baseline codec."""
    if not configs:
        raise ValueError("a chain needs at least one link configuration")
    for config in configs[:-1]:
        problem = link_problem(config)
        if problem:
            raise ValueError(problem)
    splits = [c.split_point for c in configs]
    if any(b <= a for a, b in itertools.pairwise(splits)):
        raise ValueError(f"link split points must increase along the chain, got {splits}")


_WRITTEN_KEYS = ("format", "split_infer_version", "configurations", "files")


def write_bundle(
    out_dir: str | Path,
    manifest: dict[str, Any],
    configurations: Iterable[BundleConfiguration],
) -> Bundle:
    """Finish a bundle whose files are already in ``out_dir``: hash every file, write the
    manifest, and load it back verified. ``manifest`` holds everything but ``format``,
    ``configurations`` and ``files``."""
    bundle_dir = Path(out_dir)
    files = {}
    for path in sorted(bundle_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(bundle_dir).as_posix()] = sha256_file(path)
    full = {
        "format": BUNDLE_FORMAT,
        "split_infer_version": __version__,
        **manifest,
        "configurations": [c.to_dict() for c in configurations],
        "files": files,
    }
    tmp = bundle_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(full, indent=2) + "\n")
    tmp.replace(bundle_dir / MANIFEST)
    return Bundle.load(bundle_dir)
