"""Checkpointed, resumable training runs and the loss every run shares.

::

    work_dir/split{i}/{method}/{r<ratio>|all|<pretraining>}[-<options hash>]/
        progress.json       key (settings, data, backbone fingerprint), epoch, history, result
        state.safetensors   module states ("<module>.<key>") + Adam state ("optimizer.<i>.<k>")

A run walks its stages epoch by epoch and writes both files after every epoch; a rerun with
the same key resumes at the next epoch (Adam state included) or, once ``done``, only loads.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from split_infer.models import SplittableModel
from split_infer.training.learned.data import LearnedTrainConfig, SplitData

__all__ = ["Stage"]


@dataclass
class Stage:
    """One step of a training schedule (AECNN's Alg. 1 has several)."""

    name: str
    epochs: int
    params: Callable[[], list[list[nn.Parameter]]]  # param groups: [codec params, backbone]
    start: Callable[[], None] | None = None  # once, when the stage starts (changes state)
    enter: Callable[[], None] | None = None  # every time the stage is (re)entered (modes)
    before_epoch: Callable[[int], None] | None = None


class _Run:
    """Checkpointed, resumable training of a set of modules through a list of stages."""

    def __init__(self, directory: Path, key: dict[str, Any], modules: dict[str, nn.Module],
                 stages: list[Stage], step: Callable[..., torch.Tensor], data: SplitData,
                 settings: LearnedTrainConfig, desc: str, progress: bool,
                 trainable_modules: Callable[[], list[nn.Module]],
                 prepare: Callable[[dict], None] | None = None) -> None:
        self.directory = directory
        self.key = json.loads(json.dumps(key))
        self.modules = modules
        self.stages = [s for s in stages if s.epochs > 0]
        self.step = step
        self.data = data
        self.settings = settings
        self.desc = desc
        self.progress = progress
        self.trainable_modules = trainable_modules
        self.prepare = prepare
        self.state: dict[str, Any] = {"key": self.key, "epoch": 0, "history": [], "done": False}
        #: True when the step needs images (its head trains), not precomputed features.
        self.needs_images = False

    # -- persistence ------------------------------------------------------------------------
    @property
    def _progress_file(self) -> Path:
        return self.directory / "progress.json"

    @property
    def _state_file(self) -> Path:
        return self.directory / "state.safetensors"

    def _module_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, module in self.modules.items():
            for k, v in module.state_dict().items():
                out[f"{name}.{k}"] = v.detach().contiguous().cpu()
        return out

    def save(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = self._module_state()
        if optimizer is not None:
            for i, state in optimizer.state_dict()["state"].items():
                for k, v in state.items():
                    tensors[f"optimizer.{i}.{k}"] = torch.as_tensor(v).contiguous().cpu()
        tmp = self._state_file.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(self._state_file)
        tmp = self._progress_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self._progress_file)

    def load(self) -> bool:
        """Restore a checkpoint with the same key; False when there is none (or it is stale)."""
        from safetensors.torch import load_file

        if not (self._progress_file.is_file() and self._state_file.is_file()):
            return False
        saved = json.loads(self._progress_file.read_text())
        if saved.get("key") != self.key:
            tqdm.write(f"{self.desc}: settings changed since the checkpoint; retraining")
            return False
        if self.prepare is not None:
            self.prepare(saved)
        tensors = load_file(str(self._state_file))
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                    if k.startswith(prefix)}, strict=True)
        self._optimizer_tensors = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
        self.state = saved
        return True

    # -- training ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return bool(self.state.get("done"))

    def _locate(self, epoch: int) -> tuple[int, int]:
        start = 0
        for i, stage in enumerate(self.stages):
            if epoch < start + stage.epochs:
                return i, epoch - start
            start += stage.epochs
        return len(self.stages), 0

    def _optimizer(self, stage: Stage, resume: bool) -> torch.optim.Optimizer:
        groups = stage.params()
        lrs = [self.settings.lr, self.settings.backbone_lr]
        param_groups = [{"params": g, "lr": lrs[min(i, 1)], "base_lr": lrs[min(i, 1)]}
                        for i, g in enumerate(groups) if g]
        optimizer = torch.optim.Adam(param_groups, weight_decay=self.settings.weight_decay)
        saved = getattr(self, "_optimizer_tensors", {})
        if resume and saved:
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in saved.items():
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
            full = optimizer.state_dict()
            full["state"] = state
            optimizer.load_state_dict(full)
        return optimizer

    def train(self) -> None:
        """Run (or finish) every stage; checkpoint after each epoch."""
        total = sum(s.epochs for s in self.stages)
        resumed = self.state["epoch"]
        if resumed and resumed < total:
            tqdm.write(f"{self.desc}: resuming at epoch {resumed + 1}/{total}")
        while self.state["epoch"] < total:
            index, local = self._locate(self.state["epoch"])
            stage = self.stages[index]
            if local == 0 and stage.start is not None:
                stage.start()
            if stage.enter is not None:
                stage.enter()
            optimizer = self._optimizer(stage, resume=local > 0)
            for _ in range(local, stage.epochs):
                epoch = self.state["epoch"]
                if stage.before_epoch is not None:
                    stage.before_epoch(epoch)
                loss = _run_epoch(self, stage, optimizer, epoch)
                self.state["epoch"] = epoch + 1
                self.state["history"].append({"epoch": epoch + 1, "stage": stage.name,
                                              "loss": loss})
                self.save(optimizer)
            self._optimizer_tensors = {}

    def finish(self, result: dict[str, Any]) -> None:
        self.state["done"] = True
        self.state["result"] = result
        self.save()


def _run_epoch(run: _Run, stage: Stage, optimizer: torch.optim.Optimizer, epoch: int) -> float:
    """One epoch of ``stage``; returns the mean loss. (Module level so tests can count it.)"""
    data = run.data
    for module in run.modules.values():
        module.eval()
    for module in run.trainable_modules():
        module.train()
    steps = data.steps_per_epoch()
    _, local = run._locate(epoch)
    total_steps = max(1, stage.epochs * steps)
    generator = torch.Generator().manual_seed(run.settings.seed + 104729 * epoch)
    total, seen = 0.0, 0
    bar = tqdm(data.train_batches(epoch, images=run.needs_images), total=steps, leave=False,
               desc=f"{run.desc} {stage.name} ep {epoch + 1}", disable=not run.progress)
    for i, (x, y, are_features, teacher) in enumerate(bar):
        t = local * steps + i
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * t / total_steps))
        loss = run.step(x, y, are_features, generator, teacher)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / max(seen, 1)


def _loss(logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None,
          settings: LearnedTrainConfig, decoded: torch.Tensor | None = None,
          target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (weighted; 0 when training label-free), plus the optional
    reconstruction and distillation terms."""
    loss = logits.new_zeros(())
    if settings.cross_entropy > 0:
        loss = settings.cross_entropy * nn.functional.cross_entropy(logits, y)
    if settings.reconstruction > 0 and decoded is not None and target is not None:
        scale = target.detach().var().clamp_min(1e-8)
        loss = loss + settings.reconstruction * nn.functional.mse_loss(decoded, target) / scale
    if teacher is not None and settings.distill > 0:
        t = 2.0
        kd = nn.functional.kl_div(nn.functional.log_softmax(logits / t, 1),
                                  nn.functional.softmax(teacher / t, 1), reduction="batchmean")
        loss = loss + settings.distill * t * t * kd
    return loss


def _config_dir(work_dir: Path, split_index: int, method: str, ratio: float | str,
                options: dict[str, Any] | None = None) -> Path:
    tag = ratio if isinstance(ratio, str) else f"r{ratio:g}"
    if options:
        # Variants of one ratio (another wire codec, no codec in the loop) train side by side.
        text = json.dumps(options, sort_keys=True, default=str)
        tag += "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return work_dir / f"split{split_index}" / method / tag


def _key(data: SplitData, method: str, ratio: Any, options: dict, frozen: bool,
         extra: dict | None = None) -> dict[str, Any]:
    return {"split": data.point.index, "method": method, "ratio": ratio,
            "options": {k: v for k, v in sorted(options.items())}, "frozen": frozen,
            "settings": data.settings.key(), "train_images": len(data.train_set),
            "fingerprint": _model_fingerprint(data.model), **(extra or {})}


def _model_fingerprint(model: SplittableModel) -> str:
    """Hash of the backbone's name and weights: a changed backbone retrains its runs."""
    digest = hashlib.sha256(model.model_name.encode())
    for k, v in sorted(model.net.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

