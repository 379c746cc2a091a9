"""Backbone registry, split points and head/tail splitting (no ROS in here)."""

from split_infer.models import cifar, efficientnet_lite, imagenet  # noqa: F401  (registers)
from split_infer.models._api import (
    ModelSpec,
    SplitPoint,
    SplittableModel,
    UnknownModelError,
    UnknownSplitPointError,
    WeightsError,
    get_model,
    get_model_spec,
    list_models,
    load_weights,
    pretrained_weights,
    register_model,
    safetensors_metadata,
    save_weights,
    split,
)

__all__ = [
    "ModelSpec",
    "SplitPoint",
    "SplittableModel",
    "UnknownModelError",
    "UnknownSplitPointError",
    "WeightsError",
    "get_model",
    "get_model_spec",
    "list_models",
    "load_weights",
    "pretrained_weights",
    "register_model",
    "safetensors_metadata",
    "save_weights",
    "split",
]
