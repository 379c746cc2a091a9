"""Training one (split, method, ratio), resumably, and measuring it through the real codec.

::

    spec.build(feature shape, ratio, options) ─▶ pair
    [spec.pretraining, once per split, shared]  ─▶ pair.use_pretraining   ─▶ run key
    pair.serve_ratios(ladder)                                             ─▶ run key
    pair.training_phases ─▶ stages ─▶ _Run (checkpoint per epoch) ─▶ pair.after_training
    not finished before: pair.finalize ─▶ calibrated wire codec per keep ─▶ search-set top-1,
                         bytes per frame, pair.measure_extra ─▶ run result
    finished before:     run result ─▶ pair.restore_results

Everything that differs between methods is a hook of the pair or of its registry entry
(:mod:`split_infer.codecs.learned._api`); nothing here asks which method it trains.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from split_infer.codecs.learned import SplitPretraining, get_method
from split_infer.training.backbone import batches
from split_infer.training.learned.data import SplitData
from split_infer.training.learned.parts import (
    TrainedConfig,
    _Context,
    _Parts,
    _wire_codec_ste,
)
from split_infer.training.learned.runs import Stage, _config_dir, _key, _loss, _Run

__all__ = ["train_config"]


def train_config(data: SplitData, method: str, ratio: float | None, *, work_dir: Path,
                 frozen: bool = True, options: dict[str, Any] | None = None,
                 ratios: Sequence[float] = (), progress: bool = True,
                 shared: dict[str, Any] | None = None) -> TrainedConfig:
    """Train (or load, or resume) one (split, method, ratio) and measure it on the search set.

    ``ratios`` is the ladder a rateless model is trained to serve (default: the method's
    ratios); ``shared`` carries what is trained once per split (the method's pretraining,
    e.g. AECNN's attention importance).
    """
    spec = get_method(method)
    options = dict(options or {})
    variant = dict(options)  # what makes this run differ from the method's defaults
    in_loop = bool(options.pop("codec_in_loop", spec.codec_in_loop))
    # Per-method override, e.g. Hu & K fine-tune end to end (§IV-C c) while others stay frozen.
    frozen = bool(options.pop("freeze_backbone", frozen))
    build_options = {"nonnegative": data.nonnegative, **options}
    bottleneck = spec.build(data.feature_shape, ratio, **build_options)
    settings = data.settings
    key_extra: dict[str, Any] = {"codec_in_loop": in_loop}
    init_state = None
    if spec.pretraining is not None:
        shared = shared if shared is not None else {}
        cache = f"{method}/{frozen}"
        summary = shared.get(cache) or _pretrain(data, method, spec.pretraining, work_dir,
                                                 frozen, progress)
        shared[cache] = summary
        key_extra.update(bottleneck.use_pretraining(summary))
        init_state = summary.get("backbone_state")
    key_extra.update(bottleneck.serve_ratios(ratios or spec.default_ratios))
    parts = _Parts(data, frozen, init_state)
    context = _Context(parts, data, bottleneck)
    transmit = bottleneck.training_transmit(in_loop)
    desc = f"split{data.point.index} {method}" + ("" if ratio is None else f" ×{ratio:g}")
    teacher_tail = data.tail

    def codec_params() -> list[nn.Parameter]:
        return [p for p in bottleneck.parameters() if p.requires_grad]

    def step(x: torch.Tensor, y: torch.Tensor, are_features: bool,
             generator: torch.Generator, teacher: torch.Tensor | None = None) -> torch.Tensor:
        feats = parts.features(x, are_features)
        decoded = bottleneck.training_forward(feats, transmit, generator)
        if run.stages[run._locate(run.state["epoch"])[0]].name == _WARMUP:
            return _feature_matching(decoded, feats.detach())
        if settings.distill > 0 and teacher is None:
            with torch.no_grad():
                teacher = teacher_tail(feats if parts.frozen else data.head(x))
        return _loss(parts.tail(decoded), y, teacher, settings, decoded, feats.detach())

    groups = lambda: [codec_params(), parts.backbone_params()]  # noqa: E731
    backbone_only = lambda: [[], parts.backbone_params()]  # noqa: E731
    # A phase that trains only the backbone has nothing to train when it is frozen.
    stages = [Stage(phase.name, settings.epochs if phase.train_pair or not frozen else 0,
                    groups if phase.train_pair else backbone_only, start=phase.start,
                    enter=phase.enter)
              for phase in bottleneck.training_phases(context)]
    stages = _with_warmup(stages, settings.warmup_epochs)

    modules: dict[str, nn.Module] = {"bottleneck": bottleneck, **parts.modules()}
    run = _Run(_config_dir(work_dir, data.point.index, method,
                           "all" if spec.rateless else float(ratio), variant),
               _key(data, method, ratio, options, frozen, key_extra), modules, stages, step,
               data, settings, desc, progress,
               trainable_modules=lambda: [bottleneck, *parts.trainable()])
    run.needs_images = not frozen
    loaded = run.load()
    if not (loaded and run.done):
        run.train()
    bottleneck.after_training()

    if run.done:
        result = run.state["result"]
        accuracy, code_bytes = result["accuracy"], result["code_bytes"]
        extra = result.get("extra", {})
        bottleneck.restore_results(extra)
    else:
        bottleneck.finalize(context)
        codes = bottleneck.encode_array(context.calibration_features())
        extra = {}
        ladder = bottleneck.keep_ladder
        if ladder is None:
            ste = _wire_codec_ste(bottleneck, codes)
            accuracy = context.evaluate(ste)
            code_bytes = ste.bytes_seen / max(ste.frames_seen, 1)
        else:
            # One model, several prefixes: each measured with a codec calibrated on it.
            per_keep, codecs = {}, {}
            for k in ladder:
                codecs[k] = _wire_codec_ste(bottleneck, codes[:, :k])
                per_keep[str(k)] = {"accuracy": context.evaluate(codecs[k], k),
                                    "code_bytes": codecs[k].bytes_seen /
                                    max(codecs[k].frames_seen, 1)}
            extra["per_keep"] = per_keep
            # The model's own figures are those of its largest prefix.
            largest = per_keep[str(max(ladder))]
            accuracy, code_bytes = largest["accuracy"], largest["code_bytes"]
            ste = codecs[max(ladder)]
        extra.update(bottleneck.measure_extra(context, ste))
        run.finish({"accuracy": accuracy, "code_bytes": code_bytes, "extra": extra})
    return TrainedConfig(method, data.point.index, data.point.name,
                         float(ratio) if ratio is not None else 1.0, bottleneck, parts.head,
                         parts.tail, parts.net, accuracy, code_bytes, run.state["history"],
                         extra)


_WARMUP = "feature-matching"


def _with_warmup(stages: list[Stage], epochs: int) -> list[Stage]:
    """``epochs`` of feature matching before the first stage that trains the pair, in that
    stage's mode (it starts there: e.g. the rateless pair's PCA initialisation comes first)."""
    first = next((i for i, s in enumerate(stages) if s.epochs > 0 and s.params()[0]), None)
    if epochs <= 0 or first is None:
        return stages
    stage = stages[first]
    warmup = Stage(_WARMUP, epochs, lambda: [stage.params()[0], []], start=stage.start,
                   enter=stage.enter)
    return [*stages[:first], warmup, replace(stage, start=None), *stages[first + 1:]]


def _feature_matching(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖x̂ − x‖² / Var(x): the warm-up loss (no tail in the graph)."""
    return nn.functional.mse_loss(decoded, target) / target.var().clamp_min(1e-8)


def _pretrain(data: SplitData, method: str, pretraining: SplitPretraining, work_dir: Path,
              frozen: bool, progress: bool) -> dict[str, Any]:
    """A method's per-split pretraining (AECNN Alg. 1 lines 2-4: the CA module trained in
    place), resumable like any run; returns its summary, plus the backbone it trained with
    when that is fine-tuned too."""
    name = pretraining.name
    module = pretraining.build(data.feature_shape)
    parts = _Parts(data, frozen)
    settings = data.settings

    def step(x, y, are_features, generator, teacher=None):
        feats = parts.features(x, are_features)
        return _loss(parts.tail(module(feats)), y, None, settings)

    stage = Stage(name, settings.epochs,
                  lambda: [list(module.parameters()), parts.backbone_params()])
    run = _Run(_config_dir(work_dir, data.point.index, method,
                           name if frozen else f"{name}-e2e"),
               _key(data, method, name, {}, frozen), {name: module, **parts.modules()},
               [stage], step, data, settings, f"split{data.point.index} {method} {name}",
               progress, trainable_modules=lambda: [module, *parts.trainable()])
    run.needs_images = not frozen
    if not (run.load() and run.done):
        run.train()
        module.eval()
        with torch.no_grad():
            if parts.frozen and data.train_x is not None:
                source = (torch.from_numpy(data.train_x[0, i:i + 512])
                          for i in range(0, data.train_x.shape[1], 512))
            else:
                if parts.net is not None:
                    parts.net.eval()
                source = (parts.head(x) for x, _ in batches(data.train_set, 512, False))
            summary = pretraining.summarize(module, source)
        run.finish(summary)
    result = dict(run.state["result"])
    if parts.net is not None:
        result["backbone_state"] = copy.deepcopy(parts.net.net.state_dict())
    return result
