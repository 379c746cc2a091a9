"""Ship a bundle without its backbone, and put it back together on the machine that runs it.

A 224-px bundle's backbone (safetensors weights and the tapped whole-model ONNX, ~19 MB each
for EfficientNet-Lite0) comes from published weights every machine installs anyway; what the
project trained (bottlenecks, calibration, the manifest) is a few MB. So::

    bundle ─▶ pack ─▶ packed dir: every file but the derivable ones + assembly.json
    packed dir ─▶ assemble ─▶ published weights (sha256-pinned source) ─▶ backbone.safetensors
                            ─▶ tapped ONNX export of that backbone     ─▶ onnx/full.onnx
                            ─▶ Bundle.load: every file, regenerated ones too, checked against
                               the manifest's sha256

A file counts as derivable only if regenerating it at pack time gave exactly the bytes the
manifest lists; assembling regenerates it the same way and the bundle's own verification
refuses anything else (another torch version that exports different bytes, a different
weights file): the result is the bundle that was packed, or an error naming the file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from split_infer.bundle import MANIFEST, PACKED_MARKER, Bundle, BundleError, sha256_file

__all__ = ["ASSEMBLY", "assemble_bundle", "assembled", "pack_bundle"]

#: The packed directory's list of files to regenerate, next to its manifest.
ASSEMBLY = PACKED_MARKER
_WEIGHTS, _TAPPED = "backbone_weights", "tapped_onnx"


def _regenerate(bundle_manifest: dict, kinds: set[str]) -> dict[str, bytes]:
    """The bytes of the derivable files of ``kinds``, from one load of the backbone: its
    published (or shipped) weights saved as the bundle saves them, and the tapped ONNX
    export of that backbone."""
    import torch

    from split_infer.defaults import resolve_weights
    from split_infer.models import get_model, save_weights
    from split_infer.pipeline.torch_backend import export_tapped

    name = bundle_manifest["model"]["name"]
    model = get_model(name, weights=resolve_weights(name, None))
    out = {}
    if _TAPPED in kinds:
        out[_TAPPED] = export_tapped(model.blocks, torch.zeros(1, *model.input_shape))
    if _WEIGHTS in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "weights.safetensors"
            save_weights(model, path)
            out[_WEIGHTS] = path.read_bytes()
    return out


def _derivable(bundle: Bundle) -> dict[str, str]:
    """``{relative path: kind}`` of the files that regenerate to the manifest's bytes."""
    import hashlib

    if bundle.manifest["model"].get("slimming"):
        return {}  # a slimmed backbone is the bundle's own, not the published one
    candidates = {bundle.manifest["model"]["weights"]: _WEIGHTS}
    if bundle.manifest["model"].get("onnx"):
        candidates[bundle.manifest["model"]["onnx"]] = _TAPPED
    try:
        regenerated = _regenerate(bundle.manifest, set(candidates.values()))
    except (BundleError, OSError, ValueError) as exc:
        raise BundleError(f"cannot regenerate {', '.join(candidates)}: {exc}") from None
    return {relative: kind for relative, kind in candidates.items()
            if hashlib.sha256(regenerated[kind]).hexdigest()
            == bundle.manifest["files"].get(relative)}


def pack_bundle(bundle_dir: str | Path, out_dir: str | Path,
                drop_methods: tuple[str, ...] = ()) -> dict[str, str]:
    """Copy the verified bundle at ``bundle_dir`` to ``out_dir`` without the files that
    :func:`assemble_bundle` can regenerate byte for byte; returns those (path → kind).
    ``drop_methods`` leaves out every configuration of those methods and the files only they
    use (the manifest keeps the search rows that trained them)."""
    bundle = Bundle.load(bundle_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    if drop_methods:
        with tempfile.TemporaryDirectory(prefix="split_infer_pack_") as tmp:
            subset = _without_methods(bundle, set(drop_methods), Path(tmp) / "bundle")
            return pack_bundle(subset.path, out)
    derived = _derivable(bundle)
    for relative in [*bundle.manifest["files"], MANIFEST]:
        if relative in derived:
            continue
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle.path / relative, target)
    (out / ASSEMBLY).write_text(json.dumps(
        {"model": bundle.model_name, "derived": derived}, indent=2) + "\n")
    return derived


def _named_files(bundle: Bundle, config) -> set[str]:
    """What ``config`` reads, plus its learned pair's safetensors (the torch backend's)."""
    names = set(config.named_files())
    learned = (bundle.manifest.get("learned") or {}).get("configurations", {}).get(config.id)
    if learned and learned.get("weights"):
        names.add(learned["weights"])
    return names


def _without_methods(bundle: Bundle, methods: set[str], out: Path) -> Bundle:
    """A copy of ``bundle`` in ``out`` without the configurations of ``methods``."""
    from split_infer.bundle import write_bundle

    present = {c.method for c in bundle.configurations}
    unknown = methods - present
    if unknown:
        raise BundleError(f"{bundle.path} has no {', '.join(sorted(unknown))} configurations "
                          f"(it has {', '.join(sorted(present))})")
    kept = [c for c in bundle.configurations if c.method not in methods]
    if not kept:
        raise BundleError(f"dropping {', '.join(sorted(methods))} leaves no configuration")
    used = set().union(*(_named_files(bundle, c) for c in kept))
    dropped = set().union(*(_named_files(bundle, c) for c in bundle.configurations
                            if c.method in methods)) - used
    for relative in bundle.manifest["files"]:
        if relative not in dropped:
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle.path / relative, out / relative)
    manifest = json.loads(json.dumps(bundle.base_manifest()))
    learned = manifest.get("learned")
    if learned:
        ids = {c.id for c in kept}
        learned["configurations"] = {k: v for k, v in learned["configurations"].items()
                                     if k in ids}
        learned["methods"] = [m for m in learned["methods"] if m not in methods]
        learned["selected"] = {k: v for k, v in learned["selected"].items()
                               if k.split("/")[-1] not in methods}
    return write_bundle(out, manifest, kept)


def assemble_bundle(packed_dir: str | Path, out_dir: str | Path) -> Bundle:
    """The packed bundle at ``packed_dir`` completed in ``out_dir`` (created; replaced when it
    is an earlier, incomplete assembly) and loaded, every file verified by sha256."""
    packed = Path(packed_dir)
    try:
        plan = json.loads((packed / ASSEMBLY).read_text())
        manifest = json.loads((packed / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{packed} is not a packed bundle ({exc})") from None
    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for relative in [*manifest["files"], MANIFEST]:
        if relative in plan["derived"]:
            continue
        source = packed / relative
        if not source.is_file():
            raise BundleError(f"{packed}: {relative} is missing")
        if relative != MANIFEST and sha256_file(source) != manifest["files"][relative]:
            raise BundleError(f"{packed}: sha256 mismatch for {relative} (tampered or corrupt)")
        (partial / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, partial / relative)
    regenerated = _regenerate(manifest, set(plan["derived"].values())) if plan["derived"] \
        else {}
    for relative, kind in plan["derived"].items():
        (partial / relative).parent.mkdir(parents=True, exist_ok=True)
        (partial / relative).write_bytes(regenerated[kind])
    try:
        Bundle.load(partial)
    except BundleError as exc:
        raise BundleError(f"the assembled bundle does not verify ({exc}); was it packed with "
                          "another torch or weights package version?") from None
    shutil.rmtree(out, ignore_errors=True)
    partial.replace(out)
    return Bundle.load(out)


def assembled(packed_dir: str | Path) -> Path:
    """The bundle of the packed directory, assembled into ``~/.cache/split_infer/bundles`` on
    first use (keyed by the packed manifest's sha256, so a new version assembles anew) and
    verified on every call; the set-up calls this once so that the first run does not wait."""
    from split_infer.data import cache_dir

    packed = Path(packed_dir)
    if not (packed / MANIFEST).is_file():
        raise BundleError(f"{packed} is not a packed bundle ({MANIFEST} not found)")
    out = cache_dir() / "bundles" / f"{packed.name}-{sha256_file(packed / MANIFEST)[:12]}"
    if (out / MANIFEST).is_file():
        try:
            Bundle.load(out)
            return out
        except BundleError:
            pass  # damaged since: assemble it again
    return assemble_bundle(packed, out).path
