"""The torch side of the backends: eager PyTorch inference and ONNX export.

Imported only where torch is wanted (``backend:=torch``, training, profiling, exports); the
ONNX Runtime backend in :mod:`.backends` never imports it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from split_infer.models.macs import eval_mode
from split_infer.pipeline.backends import BACKENDS, Backend, OrtBackend, _as_input

__all__ = ["TorchBackend", "eval_mode", "export_onnx", "export_tapped", "frozen_batchnorm",
           "make_backend"]


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path | None = None,
    opset: int = 17,
    *,
    output_names: Sequence[str] = ("output",),
) -> bytes:
    """Export ``module`` to ONNX and return the serialized model (also written to ``path``).

    Uses the TorchScript exporter (the dynamo exporter needs onnxscript) in eval mode; every
    submodule's mode is restored afterwards. BatchNorm layers in eval mode are exported as a
    per-channel multiply and add whose constants are computed in float64
    (:func:`frozen_batchnorm`), not folded into the convolutions by the exporter: its float32
    folding rounds differently on different CPUs (one ulp in ~10 % of the weights), so the
    same weights exported the same bytes only on the machine that exported them, and a
    bundle assembled elsewhere failed its sha256 check. ONNX Runtime fuses the multiply and
    add into the convolution when it loads the graph.

    The graph has one input ``"input"`` and one output ``"output"`` (a module returning a
    tuple names one output per entry of ``output_names``), all with a dynamic batch axis;
    the other dimensions are fixed by ``example``. The result is validated with
    ``onnx.checker``.
    """
    import onnx

    names = list(output_names)
    buffer = io.BytesIO()
    with eval_mode(module), frozen_batchnorm(module), torch.no_grad(), \
            warnings.catch_warnings():
        # The legacy exporter warns on every call that it is deprecated; it is the only one
        # usable without onnxscript, so the warning is noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        # TF-style asymmetric padding lowers to a Slice with a negative step, which the
        # exporter cannot fold and says so; ONNX Runtime folds the constant subgraph itself.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
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


@contextlib.contextmanager
def frozen_batchnorm(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every BatchNorm of ``module`` in eval mode with running statistics
    computes ``x * scale + shift``, its constants rounded once to float32 from float64 (each
    float64 operation is correctly rounded, so the bits are the same on every IEEE-754
    machine). The layers' own ``forward`` is patched, not the modules replaced: a model may
    call a BatchNorm through another attribute than the one the module tree lists."""
    patched = []
    for layer in module.modules():
        if (isinstance(layer, nn.modules.batchnorm._BatchNorm) and not layer.training
                and layer.running_mean is not None and "forward" not in vars(layer)):
            var = layer.running_var.detach().double().numpy()
            mean = layer.running_mean.detach().double().numpy()
            gamma = (layer.weight.detach().double().numpy() if layer.weight is not None
                     else np.ones_like(var))
            beta = (layer.bias.detach().double().numpy() if layer.bias is not None
                    else np.zeros_like(var))
            scale64 = gamma / np.sqrt(var + layer.eps)
            shift64 = beta - mean * scale64
            scale = torch.from_numpy(scale64.astype(np.float32))
            shift = torch.from_numpy(shift64.astype(np.float32))

            def forward(x: torch.Tensor, scale=scale, shift=shift) -> torch.Tensor:
                shape = (1, -1, *[1] * (x.dim() - 2))
                return x * scale.reshape(shape) + shift.reshape(shape)

            layer.forward = forward
            patched.append(layer)
    try:
        yield module
    finally:
        for layer in patched:
            del layer.forward


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


class _Tap(nn.Module):
    """Runs the blocks in order; returns the logits first, then every inner block output."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return (outs[-1], *outs[:-1])


def export_tapped(blocks: Sequence[nn.Module], example: torch.Tensor,
                  path: str | Path | None = None) -> bytes:
    """The whole model (``blocks`` in order) as one ONNX graph whose first output is the
    logits and whose other outputs are the activations after each inner block, named by
    :func:`split_infer.pipeline.onnx_parts.tap_name` (see :mod:`.onnx_parts`)."""
    from split_infer.pipeline.onnx_parts import OUTPUT, tap_name

    names = [OUTPUT, *(tap_name(i) for i in range(1, len(blocks)))]
    return export_onnx(_Tap(list(blocks)), example, path, output_names=names)
