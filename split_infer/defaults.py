"""Shipped assets and the defaults the CLI and nodes fall back to."""

from __future__ import annotations

from pathlib import Path

from split_infer.errors import MissingFileError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = "resnet20_cifar"
DEFAULT_SPLIT = "layer2.2"
DEFAULT_BUNDLE = ASSETS_DIR / "default_bundle"
DEMO_BAG = ASSETS_DIR / "cifar10_demo_bag"
#: 100 camera frames (640×480 JPEG, shuffled classes) made from the ImageNet sample.
IMAGENET_DEMO_BAG = ASSETS_DIR / "imagenet_demo_bag"
#: The 224-px EfficientNet-Lite0 bundle, packed: what the project trained, without the backbone
#: files every machine regenerates from the published weights (``split-infer bundle
#: assemble``; any verb given this directory assembles it once into the user cache).
IMAGENET_BUNDLE = ASSETS_DIR / "imagenet_bundle"
DEMO_TRACE = "demo_step.csv"


def find_trace(name: str | Path) -> Path:
    """A trace file by path, or by name from the package's ``config/traces``.

    Looks in the source tree (editable installs) and in ``share/split_infer/config/traces``
    of the install prefix (colcon and pip installs).
    """
    import sys

    path = Path(name)
    if path.is_file():
        return path
    candidates = [
        ASSETS_DIR.parent.parent / "config" / "traces" / path.name,
        Path(sys.prefix) / "share" / "split_infer" / "config" / "traces" / path.name,
    ]
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("split_infer"))
        candidates.append(share / "config" / "traces" / path.name)
    except Exception:  # no ament index, or the package is not installed there
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingFileError(f"trace {name} not found (looked in "
                           f"{', '.join(str(c.parent) for c in candidates)})")


#: The environment variable naming Fast DDS's profile file.
DDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def _shipped_config(name: str) -> Path | None:
    import sys

    for candidate in (ASSETS_DIR.parent.parent / "config" / name,
                      Path(sys.prefix) / "share" / "split_infer" / "config" / name):
        if candidate.is_file():
            return candidate
    return None


def robot_dds_profile() -> Path | None:
    """The shipped Fast DDS profile of split_infer's processes (config/fastdds_robot.xml:
    camera-size messages in shared memory, sparse discovery announcements), or None when
    it is not installed."""
    return _shipped_config("fastdds_robot.xml")


def udp_only_dds_profile() -> Path | None:
    """The testbed's Fast DDS profile (config/fastdds_udp_only.xml), or None."""
    return _shipped_config("fastdds_udp_only.xml")


def with_robot_dds_profile(env: dict[str, str]) -> dict[str, str]:
    """``env`` with :data:`DDS_PROFILE_ENV` naming the robot profile unless it names one
    already (a user's own profile wins)."""
    profile = robot_dds_profile()
    if profile is not None and not env.get(DDS_PROFILE_ENV):
        return {**env, DDS_PROFILE_ENV: str(profile)}
    return env


def shipped_weights(model_name: str) -> Path | None:
    """Path of the CIFAR-10 weights shipped for ``model_name``, or None."""
    path = ASSETS_DIR / f"{model_name}_cifar10.safetensors"
    return path if path.is_file() else None


def resolve_weights(model_name: str, weights: str | Path | None) -> Path:
    """``weights`` if given, else the shipped file, else the model's published weights
    (``ModelSpec.pretrained``, converted on first use); a clear error if none exists."""
    if weights is not None:
        return Path(weights)
    shipped = shipped_weights(model_name)
    if shipped is None:
        from split_infer.models import get_model_spec

        if get_model_spec(model_name).pretrained is not None:
            return get_model_spec(model_name).pretrained()
        raise MissingFileError(
            f"no weights shipped for {model_name}; pass --weights FILE.safetensors "
            f"(shipped: {sorted(p.name for p in ASSETS_DIR.glob('*.safetensors'))})"
        )
    return shipped
