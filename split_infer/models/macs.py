"""Multiply-accumulates of a module, counted with forward hooks: the ops the planners divide
between devices (Hu & Krishnamachari's eq. (2), the share of MACs on the robot)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["count_macs", "counting_macs", "eval_mode"]


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


def _layer_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        # Every output element is a dot product over (C_in / groups) × kH × kW inputs.
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.ConvTranspose2d):
        # The transpose scatters every input element through (C_out / groups) × kH × kW taps.
        per_input = (module.out_channels // module.groups) * math.prod(module.kernel_size)
        return inputs[0].numel() * per_input
    if isinstance(module, nn.Linear):
        return inputs[0].numel() * module.out_features
    return 0


_COUNTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


class _MacCounter:
    """Forward hooks that add up the MACs of every counted layer run while installed."""

    def __init__(self, module: nn.Module) -> None:
        self.macs = 0
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in module.modules()
            if isinstance(m, _COUNTED)
        ]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        self.macs += _layer_macs(module, inputs, output)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def counting_macs(module: nn.Module) -> Iterator[_MacCounter]:
    """Count the MACs of everything ``module`` runs inside the block (``counter.macs``)."""
    counter = _MacCounter(module)
    try:
        yield counter
    finally:
        counter.close()


def _module_device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def count_macs(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass, counted with forward hooks.

    ``input_shape`` is one sample without the batch dimension, e.g. ``(3, 32, 32)``; a 4-D
    shape is taken as a whole batch and the count covers every sample in it.

    Counted: ``nn.Conv2d`` (any groups, so depthwise too), ``nn.ConvTranspose2d`` and
    ``nn.Linear``, each every time it is called. Not counted: bias additions, BatchNorm (it
    folds into the convolution at export), activations, pooling, residual additions, and any
    arithmetic done by functional calls rather than by one of those modules. The module runs
    once in eval mode on zeros; its modes are restored afterwards.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    x = torch.zeros(shape, device=_module_device(module))
    with eval_mode(module), torch.no_grad(), counting_macs(module) as counter:
        module(x)
    return counter.macs
