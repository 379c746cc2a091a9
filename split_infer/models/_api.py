"""Model registry and the splittable-model abstraction.

Every registered backbone is wrapped in a :class:`SplittableModel`: the original ``nn.Module``
(which owns the parameters, so its ``state_dict`` keys stay those of the upstream
implementation) plus an ordered list of *blocks*. Block boundaries are the candidate split
points; residual blocks are always kept whole, as in the seed papers::

    input ─▶ [stem] ─▶ [block 1] ─▶ ... ─▶ [block n] ─▶ [classifier] ─▶ logits
                     ▲            ▲               ▲
               split point 1  split point 2  ...  split point n

``split(model, point)`` returns ``(head, tail)`` whose composition equals ``model(x)``.
The registry API mirrors torchvision's ``models/_api.py``: ``register_model``,
``get_model`` and ``list_models``.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from split_infer.data import Preprocessing
from split_infer.errors import MissingFileError, UserError

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


class _UnknownNameError(UserError, KeyError):
    """A name the user gave is not known; a ``KeyError`` for callers that catch one."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its key; this one's argument is a sentence.
        return str(self.args[0]) if self.args else ""


class UnknownModelError(_UnknownNameError):
    """No model is registered under the name; the message lists the registered ones."""


class UnknownSplitPointError(_UnknownNameError):
    """The model has no split point of that index or block name; the message lists them."""


class WeightsError(UserError, ValueError):
    """A weights file that cannot be loaded: not safetensors, or not for this model."""


@dataclass(frozen=True)
class SplitPoint:
    """A cut between two blocks: the head holds ``index`` blocks, named up to ``name``."""

    index: int
    name: str

    def __str__(self) -> str:
        return self.name


class SplittableModel(nn.Module):
    """A CNN seen as a flat sequence of named blocks.

    ``net`` is the upstream module and owns every parameter; ``blocks`` are views onto its
    submodules (or tiny wrappers around them) that, run in order, reproduce ``net.forward``.
    """

    def __init__(
        self,
        name: str,
        net: nn.Module,
        blocks: list[tuple[str, nn.Module]],
        input_shape: tuple[int, int, int],
        num_classes: int,
    ) -> None:
        super().__init__()
        if len(blocks) < 2:
            raise ValueError(f"{name}: a splittable model needs at least two blocks")
        names = [block_name for block_name, _ in blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: block names must be unique, got {names}")
        self.model_name = name
        self.net = net
        # Kept out of the module tree: the blocks share parameters with ``net`` and would
        # otherwise duplicate every key in ``state_dict``.
        object.__setattr__(self, "_blocks", list(blocks))
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def train(self, mode: bool = True) -> SplittableModel:
        """Set the mode of ``net`` and of every block, like ``nn.Module.train``.

        Blocks may wrap ``net``'s layers in modules of their own (a stem ``nn.Sequential``, a
        classifier with a ``Flatten``) that are outside the module tree, so the default
        recursion would leave their flags stale.
        """
        super().train(mode)
        for _, block in self._blocks:
            block.train(mode)
        return self

    @property
    def blocks(self) -> list[nn.Module]:
        """The blocks in order (views sharing ``net``'s parameters)."""
        return [block for _, block in self._blocks]

    @property
    def block_names(self) -> list[str]:
        return [block_name for block_name, _ in self._blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, block in self._blocks:
            x = block(x)
        return x

    def split_points(self) -> list[SplitPoint]:
        """Every boundary strictly inside the network (input and logits are not splits)."""
        return [
            SplitPoint(index=i, name=self._blocks[i - 1][0]) for i in range(1, len(self._blocks))
        ]

    def split_point(self, point: int | str | SplitPoint) -> SplitPoint:
        """Resolve a split point given by index, block name or :class:`SplitPoint`."""
        points = self.split_points()
        if isinstance(point, SplitPoint):
            # A SplitPoint of another model may share the index but cut somewhere else.
            if point not in points:
                raise KeyError(
                    f"{self.model_name} has no split point {point.index} named {point.name!r}"
                )
            return point
        if isinstance(point, str) and not point.lstrip("-").isdigit():
            for candidate in points:
                if candidate.name == point:
                    return candidate
            raise UnknownSplitPointError(
                f"{self.model_name} has no split point {point!r}; choose one of "
                f"{[p.name for p in points]}"
            )
        # operator.index takes Python and NumPy integers and rejects floats; bools are ints
        # to it, so they are refused first.
        if isinstance(point, bool):
            raise TypeError(f"split point must be an index or a block name, got {point!r}")
        index = int(point) if isinstance(point, str) else operator.index(point)
        for candidate in points:
            if candidate.index == index:
                return candidate
        raise UnknownSplitPointError(
            f"{self.model_name} has no split point {index}; valid indices are "
            f"{points[0].index}..{points[-1].index}"
        )

    def head_tail(self, point: int | str | SplitPoint) -> tuple[nn.Sequential, nn.Sequential]:
        """``(head, tail)`` sharing this model's modules, cut at ``point``."""
        resolved = self.split_point(point)
        return self.segment(0, resolved.index), self.segment(resolved.index, None)

    def segment(self, start: int, end: int | None) -> nn.Sequential:
        """Blocks ``start+1 .. end`` (``end=None``: through the logits) as one module sharing
        this model's parameters: the work of one stage of an n-stage pipeline, which runs
        layers ``(s_{i-1}, s_i]``. ``segment(0, s)`` is the head and ``segment(s, None)`` the
        tail of a split at ``s``."""
        last = len(self._blocks) if end is None else end
        if not 0 <= start < last <= len(self._blocks):
            raise ValueError(f"{self.model_name}: no segment ({start}, {end}]; blocks run "
                             f"0..{len(self._blocks)} (end=None: through the logits)")
        # The wrapper inherits the model's mode: a fresh nn.Sequential is in training mode and
        # exporters that "restore" it would flip the shared BatchNorms back to batch stats.
        # Only the wrappers' own flag is set: .train() would recurse into the shared blocks
        # and undo modes set on purpose (e.g. BatchNorms frozen in eval while fine-tuning).
        part = _sequential(self._blocks[start:last])
        part.training = self.training
        return part


def _sequential(blocks: list[tuple[str, nn.Module]]) -> nn.Sequential:
    # Module names may not contain dots, block names ("layer1.0") do.
    return nn.Sequential(OrderedDict((name.replace(".", "_"), block) for name, block in blocks))


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before building it."""

    name: str
    builder: Callable[..., SplittableModel]
    input_shape: tuple[int, int, int]
    num_classes: int
    family: str
    description: str
    #: The published weights as safetensors (converted and cached on first use); None when
    #: the model has none (the CIFAR backbones ship trained weights as package assets).
    pretrained: Callable[[], Path] | None = None
    #: The preprocessing those weights expect; None: the data set's own.
    preprocessing: Preprocessing | None = None


_MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    family: str,
    description: str,
    pretrained: Callable[[], Path] | None = None,
    preprocessing: Preprocessing | None = None,
) -> Callable[[Callable[..., SplittableModel]], Callable[..., SplittableModel]]:
    """Decorator that adds a builder to the registry under ``name``."""

    def wrapper(builder: Callable[..., SplittableModel]) -> Callable[..., SplittableModel]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelSpec(name, builder, input_shape, num_classes, family, description,
                                  pretrained, preprocessing)
        return builder

    return wrapper


def list_models(family: str | None = None) -> list[str]:
    """Names of all registered models, optionally only one family (``cifar``/``imagenet``)."""
    return sorted(n for n, spec in _MODELS.items() if family is None or spec.family == family)


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; the error for an unknown name lists the valid ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {list_models()}") from None


def get_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    **kwargs: object,
) -> SplittableModel:
    """Build a registered model, optionally loading safetensors ``weights``.

    The model is returned in eval mode. ``num_classes`` overrides the registry default.
    """
    spec = get_model_spec(name)
    if num_classes is None:
        num_classes = spec.num_classes
    elif num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = spec.builder(num_classes=num_classes, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def pretrained_weights(name: str) -> Path:
    """The safetensors file of ``name``'s published weights (see ``ModelSpec.pretrained``);
    MissingFileError when the model has none."""
    spec = get_model_spec(name)
    if spec.pretrained is None:
        raise MissingFileError(f"{name} has no published weights registered; pass a "
                               ".safetensors file")
    return spec.pretrained()


def split(
    model: SplittableModel, point: int | str | SplitPoint
) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut ``model`` at ``point`` into ``(head, tail)`` with ``tail(head(x)) == model(x)``."""
    return model.head_tail(point)


def save_weights(model: SplittableModel, path: str | Path) -> None:
    """Write the upstream module's ``state_dict`` as safetensors."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.net.state_dict().items()}
    save_file(tensors, str(path), metadata={"model": model.model_name})


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of serialized safetensors (its JSON header), without loading any
    tensor; WeightsError when the header is malformed."""
    import json
    import struct

    try:
        (length,) = struct.unpack_from("<Q", data)
        if length > len(data) - 8:
            raise ValueError("header longer than the data")
        header = json.loads(bytes(data[8:8 + length]))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"not a valid safetensors header ({exc})") from None
    return dict(header.get("__metadata__") or {}) if isinstance(header, dict) else {}


def load_weights(model: SplittableModel, source: str | Path | bytes) -> None:
    """Load safetensors weights (a ``.safetensors`` file, or its bytes; never pickle) into the
    upstream module, strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if isinstance(source, bytes):
        path, data = "weights", source
    else:
        path = Path(source)
        if path.suffix != ".safetensors":
            raise WeightsError(f"{path}: weights must be a .safetensors file (pickle is never "
                               "loaded)")
        if not path.is_file():
            raise MissingFileError(f"weights file not found: {path}")
        data = path.read_bytes()
    try:
        state = load(data)
    except SafetensorError as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from None
    # Checked before loading anything: load_state_dict copies tensor by tensor and would leave
    # a half-overwritten model behind when it fails (size mismatches raise RuntimeError).
    expected = model.net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"{path} does not fit {model.model_name}: {_listing('missing keys', missing)}, "
            f"{_listing('unexpected keys', unexpected)}, "
            f"{_listing('shape mismatches', mismatched)}"
        )
    model.net.load_state_dict(state, strict=True)


def _listing(what: str, items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {what} {items[:limit]}{more}"
