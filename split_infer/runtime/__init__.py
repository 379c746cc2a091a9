"""ROS-free runtime: inference backends (and, later, the edge/cloud pipelines)."""

from .backends import (
    BACKENDS,
    Backend,
    OrtBackend,
    TorchBackend,
    eval_mode,
    export_onnx,
    make_backend,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "OrtBackend",
    "TorchBackend",
    "eval_mode",
    "export_onnx",
    "make_backend",
]
