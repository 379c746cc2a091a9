"""ROS-free runtime: backends, edge/cloud engines, estimator, link emulation, scheduling.

Submodules are imported on demand: the bandwidth monitor and scheduler nodes use the
estimator and scheduling loop and should not pay for importing torch.
"""

from importlib import import_module

__all__ = [
    "BACKENDS",
    "Backend",
    "OrtBackend",
    "TorchBackend",
    "eval_mode",
    "export_onnx",
    "make_backend",
]


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module(".backends", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
