"""Inference backends for heads and tails: eager torch and ONNX Runtime on CPU.

A :class:`Backend` is a callable ``float32 NCHW ndarray -> float32 ndarray`` with a ``name``.
The edge and cloud pipelines call one per frame, so construction does all the expensive work
(export, session creation, graph optimisation) and ``__call__`` is a thin wrapper around a
single run.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = [
    "BACKENDS",
    "Backend",
    "OrtBackend",
    "TorchBackend",
    "eval_mode",
    "export_onnx",
    "make_backend",
]

#: Backend kinds understood by :func:`make_backend`.
BACKENDS = ("torch", "onnxruntime")


@runtime_checkable
class Backend(Protocol):
    """Runs one network part: float32 NCHW array in, float32 array out."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode and restore every submodule's own mode afterwards.

    Restoring per submodule (not ``module.train(previous)``) matters because head/tail
    wrappers share their children with the full model: a blanket ``train()`` on the wrapper
    would flip BatchNorms the caller had deliberately left in another mode.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path | None = None,
    opset: int = 17,
    *,
    output_names: Sequence[str] = ("output",),
) -> bytes:
    """Export ``module`` to ONNX and return the serialized model (also written to ``path``).

    Uses the TorchScript exporter (the dynamo exporter needs onnxscript) in eval mode, so
    BatchNorm is folded into the preceding convolutions; every submodule's mode is restored
    afterwards. The graph has one input ``"input"`` and one output ``"output"`` (a module
    returning a tuple names one output per entry of ``output_names``), all with a dynamic
    batch axis; the other dimensions are fixed by ``example``. The result is validated with
    ``onnx.checker``.
    """
    import onnx

    names = list(output_names)
    buffer = io.BytesIO()
    with eval_mode(module), torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns on every call that it is deprecated; it is the only one
        # usable without onnxscript, so the warning is noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["input"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    if path is not None:
        Path(path).write_bytes(data)
    return data


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


class TorchBackend:
    """Eager PyTorch on CPU under ``torch.inference_mode``.

    The module is switched to eval mode for good: a backend only ever serves inference. The
    input array is shared with torch without a copy, so modules must not modify it in place.
    """

    name = "torch"

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(_as_input(x, writeable=True)))
        return out.numpy()


class OrtBackend:
    """ONNX Runtime on the CPU execution provider, one session for the backend's lifetime.

    ``model`` is a serialized ONNX model or a path to one. ``intra_op_threads`` caps the
    threads used inside an operator (ORT's default is one per physical core). ``spin`` lets
    idle worker threads busy-wait between operators: slightly lower latency on an otherwise
    idle machine, but on a robot's few cores shared with the ROS executor, camera driver and
    codec it steals the CPU they need (measured here under load: 8 ms with spinning against
    4 ms without for a MobileNetV2 head on 2 threads), so it is off by default.
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


def make_backend(
    kind: str,
    module: nn.Module,
    example: torch.Tensor,
    *,
    threads: int | None = None,
) -> Backend:
    """Build a backend of ``kind`` (one of :data:`BACKENDS`) that runs ``module``.

    ``example`` fixes the non-batch input shape of the ONNX export. ``threads`` is passed to
    ONNX Runtime as its intra-op thread count; torch's thread pool is process-wide and is
    left alone.
    """
    if kind == "torch":
        return TorchBackend(module)
    if kind == "onnxruntime":
        return OrtBackend(export_onnx(module, example), intra_op_threads=threads)
    raise ValueError(f"unknown backend {kind!r}; choose one of {list(BACKENDS)}")
