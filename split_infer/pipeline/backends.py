"""Inference backends for heads and tails: ONNX Runtime on CPU, and eager torch on request.

Importing this module does not import torch: a robot runs the bundle's ONNX parts and needs
ONNX Runtime only (tens of MB, against GBs for torch). :mod:`.torch_backend` holds the torch
side (eager backend, ONNX export) and is imported when ``backend:=torch`` is chosen.

A :class:`Backend` is a callable ``float32 NCHW ndarray -> float32 ndarray`` with a ``name``.
The edge and cloud pipelines call one per frame, so construction does all the expensive work
(export, session creation, graph optimisation) and ``__call__`` is a thin wrapper around a
single run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["BACKENDS", "Backend", "OrtBackend", "backend_problem"]

#: Inference backends a bundle's parts run on: ONNX Runtime (the bundle's ONNX files, the
#: default) and torch (the same parts rebuilt from its safetensors).
BACKENDS = ("onnxruntime", "torch")


def backend_problem(backend: str) -> str | None:
    """Why ``backend`` cannot run a bundle's parts, or None when it can."""
    if backend in BACKENDS:
        return None
    return f"unknown backend {backend!r}; choose one of {list(BACKENDS)}"


@runtime_checkable
class Backend(Protocol):
    """Runs one network part: float32 NCHW array in, float32 array out."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def _as_input(x: np.ndarray, *, writeable: bool) -> np.ndarray:
    # Copy only when the array cannot be handed over as is: wrong dtype or layout, or, for
    # torch, read-only memory (e.g. np.frombuffer over a received message), which torch must
    # not alias because a module may write to its input in place. ONNX Runtime only reads.
    if (
        x.dtype != np.float32
        or not x.flags.c_contiguous
        or (writeable and not x.flags.writeable)
    ):
        return np.array(x, dtype=np.float32, order="C")
    return x


class OrtBackend:
    """ONNX Runtime on the CPU execution provider, one session for the backend's lifetime.

    ``model`` is a serialized ONNX model or a path to one. ``intra_op_threads`` caps the
    threads used inside an operator (ORT's default is one per physical core). ``spin`` lets
    idle worker threads busy-wait between operators: slightly lower latency on an otherwise
    idle machine, but on a robot's few cores shared with the ROS executor, camera driver and
    codec it steals the CPU they need, so it is off by default (figures: ``bench/README.md``).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: bytes | str | Path,
        intra_op_threads: int | None = None,
        *,
        spin: bool = False,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A split CNN part is a chain of operators: running them in order with all threads
        # inside each operator beats a parallel executor, which only adds scheduling cost.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if intra_op_threads is not None:
            if intra_op_threads < 1:
                raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
            options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(
            source, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"expected an ONNX model with one input, got {len(inputs)}")
        self.input_name = inputs[0].name
        # Only the first output is fetched; naming it avoids computing any others.
        self._output_names = [outputs[0].name]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        feed = {self.input_name: _as_input(x, writeable=False)}
        return self.session.run(self._output_names, feed)[0]
