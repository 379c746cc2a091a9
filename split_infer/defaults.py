"""Shipped assets and the defaults the CLI and nodes fall back to."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = "resnet20_cifar"
DEFAULT_SPLIT = "layer2.2"


def shipped_weights(model_name: str) -> Path | None:
    """Path of the CIFAR-10 weights shipped for ``model_name``, or None."""
    path = ASSETS_DIR / f"{model_name}_cifar10.safetensors"
    return path if path.is_file() else None


def resolve_weights(model_name: str, weights: str | Path | None) -> Path:
    """``weights`` if given, else the shipped file; a clear error if neither exists."""
    if weights is not None:
        return Path(weights)
    shipped = shipped_weights(model_name)
    if shipped is None:
        raise FileNotFoundError(
            f"no weights shipped for {model_name}; pass --weights FILE.safetensors "
            f"(shipped: {sorted(p.name for p in ASSETS_DIR.glob('*.safetensors'))})"
        )
    return shipped
