"""Backbone registry, split points and head/tail splitting (no ROS in here)."""

from . import cifar, imagenet  # noqa: F401  (registers the models)
from ._api import (
    ModelSpec,
    SplitPoint,
    SplittableModel,
    get_model,
    get_model_spec,
    list_models,
    load_weights,
    register_model,
    save_weights,
    split,
)

__all__ = [
    "ModelSpec",
    "SplitPoint",
    "SplittableModel",
    "get_model",
    "get_model_spec",
    "list_models",
    "load_weights",
    "register_model",
    "save_weights",
    "split",
]
