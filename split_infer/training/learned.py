"""Training learned bottlenecks, the accuracy-aware search, and export to a bundle.

::

    backbone ─▶ [BBNet slimming: L1 on BN γ, prune 40 %, fine-tune]            (optional)
       │
       ├─ per split point ─ SplitData: head features of the training images, precomputed once
       │                    when the backbone is frozen (plus augmented copies)
       │     └─ per method ─ per ratio, low → high compression (Alg. 1 of BottleNet / BBNet):
       │            train (resumable, checkpoint per epoch) ─▶ accuracy with the real codec
       │            stop at the first ratio whose loss vs the backbone exceeds the threshold
       ▼
    bundle: head+encoder and decoder+tail ONNX parts per kept configuration (one pair per split
    for the rateless model), calibrated wire codecs, fill values, method weights, measured
    accuracy and bytes per frame from real wire frames (``evaluate_bundle``).

**Frozen-backbone fast path.** With ``freeze_backbone`` (BBNet §3.2.3 freezes everything but
the compression layer; BottleNet and Hu & K fine-tune end to end, which ``freeze_backbone=
False`` does, for all methods or per method through the option ``freeze_backbone``) only the
encoder/decoder learn, so the head is run once: the training images'
features are precomputed for the un-augmented images and for ``augment_copies`` randomly
cropped + flipped copies (the backbone trainer's augmentation). Each epoch draws, per image,
one of those ``1 + augment_copies`` versions, so an epoch costs the same as without
augmentation and the head never runs again. When the copies would not fit
``memory_budget_mb``, the head runs per batch instead (no gradient, fresh augmentation).
The tail stays in the graph (gradients flow through it to the decoder) but is not updated.

**Per-method schedules.**

* ``bottlenet``: the real codec (8-bit quant + JPEG) in the forward pass, identity backward
  (:class:`~split_infer.codecs.learned.CodecSTE`), with each frame's own min/max as in eq. (1)
  (a calibration would go stale while the encoder learns);
  ``codec_in_loop=False`` gives the *naive* insertion of BottleNet §3.3 / Fig. 7
  (:func:`compare_compression_aware` measures both).
* ``hu_ae``: cross-entropy only, end to end when the backbone is not frozen (§IV-C c).
* ``aecnn``: Alg. 1 step by step: the channel-attention module is trained in place once per
  split, importance = mean attention over the training set (eq. 8); per ratio V the C/V most
  important channels are kept, the pruned network is fine-tuned (only when the backbone
  trains: with a frozen backbone nothing is left to tune in that step), then the
  feature-recovery module is inserted and trained.
* ``bbnet``: the 8-bit tanh quantizer in the graph with an identity gradient (bit-identical to
  the ``tanhq`` wire stage); optional network slimming of the backbone first.
* ``rateless``: PCA initialisation, then nested dropout: each sample draws how many leading
  channels survive; the others are replaced by the running channel means (the exact
  training-set means are written as the bundle's fill values).

**Loss and optimiser.** Cross-entropy, as in every paper; Adam with a per-step cosine decay
(the papers' long SGD schedules do not fit a CPU budget of a few epochs). Two optional terms
go beyond the papers: ``distill`` (KL to the uncompressed backbone's logits) and
``reconstruction`` (feature MSE); both default to 0.

**Resumability.** Every (split, method, ratio) trains in its own directory of ``work_dir``
(``progress.json`` + ``state.safetensors``, written after every epoch). A rerun skips finished
configurations and resumes unfinished ones from their last completed epoch; a configuration
whose settings changed is retrained from scratch.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from split_infer.bundle import Bundle, BundleConfiguration, write_bundle
from split_infer.codecs import get_codec
from split_infer.codecs.learned import CodecSTE, LearnedBottleneck, get_method, list_methods
from split_infer.codecs.learned.aecnn import AECNNBottleneck, ChannelAttention
from split_infer.codecs.learned.bbnet import (
    TanhQuantize,
    apply_widths,
    bn_l1_penalty,
    prunable_batchnorms,
    save_slimmed_weights,
    slim_model,
)
from split_infer.codecs.learned.rateless import RatelessBottleneck
from split_infer.data import ArrayDataset
from split_infer.defaults import resolve_weights
from split_infer.models import SplittableModel, get_model, save_weights, split
from split_infer.models.macs import count_macs
from split_infer.pipeline.backends import OrtBackend
from split_infer.pipeline.torch_backend import export_onnx
from split_infer.training.backbone import augment, batches
from split_infer.training.baseline import (
    DEFAULT_BASELINE_CODECS,
    _measured_ratio,
    bundle_manifest,
    default_split_points,
    export_baseline_split,
    measure_bundle,
)
from split_infer.training.datasets import load_dataset
from split_infer.training.features import head_features

__all__ = [
    "LearnedTrainConfig",
    "SplitData",
    "TrainedConfig",
    "compare_compression_aware",
    "search_split",
    "slim_backbone",
    "train_bundle",
    "train_config",
]


@dataclass
class LearnedTrainConfig:
    """Hyper-parameters of the learned-bottleneck trainer (Adam, per-step cosine decay)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 5e-3
    backbone_lr: float = 1e-4  # when the backbone is fine-tuned too (freeze_backbone=False)
    weight_decay: float = 0.0
    augment_copies: int = 1
    memory_budget_mb: int = 3072
    calibration_images: int = 256
    seed: int = 0
    # Beyond the papers (all train with cross-entropy only): weight of a distillation term
    # KL(backbone logits ‖ compressed logits); 0 keeps the papers' loss.
    distill: float = 0.0
    # Beyond the papers too: weight of a feature-reconstruction term ‖x̂ − x‖² / Var(x) next
    # to the cross-entropy. The papers train for tens of epochs on GPUs; on a CPU budget of a
    # few epochs this anchors a freshly initialised decoder to the features the tail expects.
    reconstruction: float = 0.0
    slim_l1: float = 1e-4  # λ of BBNet eq. 1 (network slimming)

    def key(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "memory_budget_mb"}


# --------------------------------------------------------------------------------- data


class SplitData:
    """What training at one split point needs: head/tail of the (frozen) backbone, training
    inputs (precomputed features on the fast path, else images), search-set and calibration
    features, and feature statistics."""

    def __init__(self, model: SplittableModel, point: int | str, train: ArrayDataset,
                 val: ArrayDataset, settings: LearnedTrainConfig, *, frozen: bool = True,
                 progress: bool = True) -> None:
        self.model = model.eval()
        self.point = model.split_point(point)
        self.head, self.tail = split(model, self.point)
        self.train_set, self.val_set = train, val
        self.settings = settings
        self.frozen = frozen
        self.progress = progress
        calibration = train.subset(settings.calibration_images, seed=2)
        self.calib_x = head_features(self.head, calibration, progress=progress)
        self.feature_shape = tuple(int(d) for d in self.calib_x.shape[1:])
        #: ResNet block outputs end in a ReLU; MobileNetV2's are linear (decoders follow suit).
        self.nonnegative = bool(self.calib_x.min() >= 0)
        self.val_x = head_features(self.head, val, progress=progress) if frozen else None
        self.train_x: np.ndarray | None = None
        copies = 1 + max(0, settings.augment_copies)
        need = copies * len(train) * math.prod(self.feature_shape) * 4
        if frozen and need <= settings.memory_budget_mb << 20:
            self.train_x = self._precompute(copies)

    @property
    def fast(self) -> bool:
        """True when training batches are precomputed features."""
        return self.train_x is not None

    @torch.inference_mode()
    def _precompute(self, copies: int) -> np.ndarray:
        n = len(self.train_set)
        out = np.empty((copies, n, *self.feature_shape), np.float32)
        bs = 256
        bar = tqdm(total=copies * n, desc=f"features @{self.point.name}", leave=False,
                   disable=not self.progress)
        for copy_index in range(copies):
            generator = torch.Generator().manual_seed(self.settings.seed * 1000 + copy_index)
            for start in range(0, n, bs):
                x = torch.from_numpy(self.train_set.preprocessing(
                    self.train_set.images[start:start + bs]))
                if copy_index:
                    x = augment(x, generator)
                out[copy_index, start:start + len(x)] = self.head(x).numpy()
                bar.update(len(x))
        bar.close()
        return out

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.settings.batch_size)

    def train_batches(self, epoch: int, images: bool = False
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """``(inputs, labels, inputs_are_features)`` for one epoch (deterministic per epoch);
        ``images`` asks for augmented images (a configuration that fine-tunes its head)."""
        seed = self.settings.seed + 7919 * epoch
        bs = self.settings.batch_size
        labels = self.train_set.labels
        if self.train_x is not None and not images:
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(labels))
            version = rng.integers(0, self.train_x.shape[0], len(labels))
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                x = torch.from_numpy(self.train_x[version[idx], idx])
                yield x, torch.from_numpy(labels[idx]), True
            return
        generator = torch.Generator().manual_seed(seed)
        for x, y in batches(self.train_set, bs, shuffle=True, seed=seed):
            x = augment(x, generator)
            if images:
                yield x, y, False
            else:
                with torch.no_grad():
                    x = self.head(x)
                yield x, y, True

    def val_batches(self, head: nn.Module | None = None, batch_size: int = 250
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Search-set features through the frozen head, or through ``head`` (fine-tuned)."""
        labels = self.val_set.labels
        for start in range(0, len(labels), batch_size):
            y = torch.from_numpy(labels[start:start + batch_size])
            if self.val_x is not None and head is None:
                yield torch.from_numpy(self.val_x[start:start + batch_size]), y
            else:
                x = torch.from_numpy(self.val_set.preprocessing(
                    self.val_set.images[start:start + batch_size]))
                with torch.no_grad():
                    yield (head or self.head)(x), y

    def features(self, dataset: ArrayDataset, head: nn.Module | None = None) -> np.ndarray:
        return head_features(head or self.head, dataset, progress=False)


# --------------------------------------------------------------------------------- runs


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
    for i, (x, y, are_features) in enumerate(bar):
        t = local * steps + i
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * t / total_steps))
        loss = run.step(x, y, are_features, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / max(seen, 1)


# ------------------------------------------------------------------------ per-config work


@dataclass
class TrainedConfig:
    """A trained (split, method, ratio): the modules to export and what the search measured."""

    method: str
    split_index: int
    split_name: str
    ratio: float  # nominal
    bottleneck: LearnedBottleneck
    head: nn.Module
    tail: nn.Module
    net: nn.Module | None  # the configuration's own fine-tuned backbone, if any
    accuracy: float  # % on the search set, through the real wire codec
    code_bytes: float  # mean codec payload + params bytes per frame
    history: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _loss(logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None,
          settings: LearnedTrainConfig, decoded: torch.Tensor | None = None,
          target: torch.Tensor | None = None) -> torch.Tensor:
    loss = nn.functional.cross_entropy(logits, y)
    if settings.reconstruction > 0 and decoded is not None and target is not None:
        scale = target.detach().var().clamp_min(1e-8)
        loss = loss + settings.reconstruction * nn.functional.mse_loss(decoded, target) / scale
    if teacher is not None and settings.distill > 0:
        t = 2.0
        kd = nn.functional.kl_div(nn.functional.log_softmax(logits / t, 1),
                                  nn.functional.softmax(teacher / t, 1), reduction="batchmean")
        loss = loss + settings.distill * t * t * kd
    return loss


class _Parts:
    """Head and tail a configuration trains through: the shared frozen ones, or its own copy
    of the backbone when it is fine-tuned end to end."""

    def __init__(self, data: SplitData, frozen: bool, init_state: dict | None = None) -> None:
        self.frozen = frozen
        if frozen:
            self.net: SplittableModel | None = None
            self.head, self.tail = data.head, data.tail
            for p in data.model.parameters():
                p.requires_grad_(False)
        else:
            self.net = copy.deepcopy(data.model)
            if init_state is not None:
                self.net.net.load_state_dict(init_state)
            for p in self.net.parameters():
                p.requires_grad_(True)
            self.head, self.tail = split(self.net, data.point)

    @classmethod
    def of(cls, trained: TrainedConfig, data: SplitData) -> _Parts:
        """The parts a trained configuration ran with (its own backbone, if it has one)."""
        parts = cls.__new__(cls)
        parts.frozen = trained.net is None
        parts.net = trained.net
        parts.head, parts.tail = (data.head, data.tail) if parts.frozen else (trained.head,
                                                                              trained.tail)
        return parts

    def features(self, x: torch.Tensor, are_features: bool) -> torch.Tensor:
        if are_features:
            return x
        return self.head(x)

    def backbone_params(self) -> list[nn.Parameter]:
        return [] if self.net is None else list(self.net.parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {} if self.net is None else {"backbone": self.net.net}

    def trainable(self) -> list[nn.Module]:
        return [] if self.net is None else [self.net]


def _transmit_for(method: str, bottleneck: LearnedBottleneck, in_loop: bool
                  ) -> nn.Module | None:
    if not in_loop or method == "rateless":
        return None
    if method == "bbnet":
        return TanhQuantize(bottleneck.options["bits"])
    return CodecSTE(bottleneck.wire_codec, adaptive=True)


def _config_dir(work_dir: Path, split_index: int, method: str, ratio: float | str,
                options: dict[str, Any] | None = None) -> Path:
    tag = ratio if isinstance(ratio, str) else f"r{ratio:g}"
    if options:
        # Variants of one ratio (another wire codec, no codec in the loop) train side by side.
        import hashlib

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
    import hashlib

    digest = hashlib.sha256(model.model_name.encode())
    for k, v in sorted(model.net.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def _codes(bottleneck: LearnedBottleneck, data: SplitData,
           features: np.ndarray | None = None) -> np.ndarray:
    """Encoder outputs on the calibration images (for codec calibration)."""
    bottleneck.eval()
    x = data.calib_x if features is None else features
    out = [bottleneck.encoder(torch.from_numpy(x[i:i + 256])).numpy()
           for i in range(0, len(x), 256)]
    return np.concatenate(out)


def _calibration_features(parts: _Parts, data: SplitData) -> np.ndarray:
    if parts.frozen:
        return data.calib_x
    calibration = data.train_set.subset(data.settings.calibration_images, seed=2)
    return data.features(calibration, parts.head)


@torch.no_grad()
def evaluate_config(parts: _Parts, bottleneck: LearnedBottleneck, data: SplitData,
                    transmit: CodecSTE | None, keep: int | None = None) -> float:
    """Top-1 (%) on the search set with ``transmit`` (the real wire codec) on the code."""
    bottleneck.eval()
    if parts.net is not None:
        parts.net.eval()
    correct = total = 0
    head = None if parts.frozen else parts.head
    for feats, y in data.val_batches(head):
        code = bottleneck.encoder(feats)
        if isinstance(bottleneck, RatelessBottleneck):
            k = keep or bottleneck.channels
            sent = code[:, :k]
            if transmit is not None:
                sent = transmit(sent)
            code = torch.cat([sent, code[:, k:]], 1)
            decoded = bottleneck.decoder(bottleneck.fill(code, k))
        else:
            if transmit is not None:
                code = transmit(code)
            decoded = bottleneck.decoder(code)
        correct += int((parts.tail(decoded).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)


def _wire_codec_ste(bottleneck: LearnedBottleneck, codes: np.ndarray) -> CodecSTE:
    ste = CodecSTE(bottleneck.wire_codec)
    if get_codec(bottleneck.wire_codec).needs_calibration or "quant" in bottleneck.wire_codec:
        ste.calibrate(codes)
    return ste


def train_config(data: SplitData, method: str, ratio: float | None, *, work_dir: Path,
                 frozen: bool = True, options: dict[str, Any] | None = None,
                 ratios: Sequence[float] = (), progress: bool = True,
                 shared: dict[str, Any] | None = None) -> TrainedConfig:
    """Train (or load, or resume) one (split, method, ratio) and measure it on the search set.

    ``ratios`` is the ladder a rateless model is trained to serve; ``shared`` carries what is
    trained once per split (AECNN's attention importance).
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
    if method == "aecnn":
        shared = shared if shared is not None else {}
        attention = shared.get(f"aecnn/{frozen}") or _train_attention(data, work_dir, frozen,
                                                                       progress)
        shared[f"aecnn/{frozen}"] = attention
        key_extra["importance"] = [round(float(v), 6) for v in attention["importance"]]
        init_state = attention.get("backbone_state")
    if method == "rateless":
        ladder = ratios or spec.default_ratios
        key_extra["ladder"] = sorted({bottleneck.keep_channels(r) for r in ladder})
    parts = _Parts(data, frozen, init_state)
    transmit = _transmit_for(method, bottleneck, in_loop)
    desc = f"split{data.point.index} {method}" + ("" if ratio is None else f" ×{ratio:g}")
    teacher_tail = data.tail

    def codec_params() -> list[nn.Parameter]:
        return [p for p in bottleneck.parameters() if p.requires_grad]

    def step(x: torch.Tensor, y: torch.Tensor, are_features: bool,
             generator: torch.Generator) -> torch.Tensor:
        feats = parts.features(x, are_features)
        teacher = None
        if settings.distill > 0:
            with torch.no_grad():
                teacher = teacher_tail(feats if parts.frozen else data.head(x))
        if isinstance(bottleneck, RatelessBottleneck):
            keep = bottleneck.sample_keep(len(y), key_extra["ladder"], generator)
            decoded = bottleneck(feats, None, keep=keep)
        else:
            decoded = bottleneck(feats, transmit)
        return _loss(parts.tail(decoded), y, teacher, settings, decoded, feats.detach())

    stages: list[Stage] = []
    epochs = settings.epochs

    groups = lambda: [codec_params(), parts.backbone_params()]  # noqa: E731
    if method == "aecnn":
        assert isinstance(bottleneck, AECNNBottleneck)
        # Deterministic from the importance, so applying it before a checkpoint is loaded
        # is harmless (the checkpoint holds the same indices).
        bottleneck.prune(torch.tensor(attention["importance"]))
        channel_fill = torch.from_numpy(
            _calibration_features(parts, data).mean(axis=(0, 2, 3)).astype(np.float32))

        def pruned_mode() -> None:
            # Alg. 1: the pruned network is fine-tuned before the FR module is inserted;
            # meanwhile the pruned channels carry their training means.
            bottleneck.decoder.enabled = False
            bottleneck.decoder.fill.copy_(channel_fill)

        def recovery_mode() -> None:
            bottleneck.decoder.enabled = True

        stages.append(Stage("pruned", 0 if frozen else epochs,
                            lambda: [[], parts.backbone_params()], enter=pruned_mode))
        stages.append(Stage("recovery", epochs, groups, enter=recovery_mode))
    else:
        start = None
        if isinstance(bottleneck, RatelessBottleneck):
            def start() -> None:
                bottleneck.init_pca(_calibration_features(parts, data))
        stages.append(Stage("train", epochs, groups, start=start))

    modules: dict[str, nn.Module] = {"bottleneck": bottleneck, **parts.modules()}
    run = _Run(_config_dir(work_dir, data.point.index, method,
                           "all" if method == "rateless" else float(ratio), variant),
               _key(data, method, ratio, options, frozen, key_extra), modules, stages, step,
               data, settings, desc, progress,
               trainable_modules=lambda: [bottleneck, *parts.trainable()])
    run.needs_images = not frozen
    loaded = run.load()
    if not (loaded and run.done):
        run.train()
    if isinstance(bottleneck, AECNNBottleneck):
        bottleneck.decoder.enabled = True

    if run.done:
        result = run.state["result"]
        accuracy, code_bytes = result["accuracy"], result["code_bytes"]
        extra = result.get("extra", {})
        if isinstance(bottleneck, RatelessBottleneck):
            bottleneck.fill.channel_mean.copy_(torch.tensor(extra["channel_mean"]))
    else:
        if isinstance(bottleneck, RatelessBottleneck):
            # The exact training-set means replace the running estimate (the bundle's fill).
            codes = _codes(bottleneck, data, _train_features_sample(parts, data))
            bottleneck.fill.channel_mean.copy_(torch.from_numpy(codes.mean(axis=(0, 2, 3))))
        codes = _codes(bottleneck, data, _calibration_features(parts, data))
        extra: dict[str, Any] = {}
        if isinstance(bottleneck, RatelessBottleneck):
            per_keep = {}
            for k in key_extra["ladder"]:
                ste = _wire_codec_ste(bottleneck, codes[:, :k])
                per_keep[str(k)] = {"accuracy": evaluate_config(parts, bottleneck, data, ste, k),
                                    "code_bytes": ste.bytes_seen / max(ste.frames_seen, 1)}
            extra["per_keep"] = per_keep
            extra["channel_mean"] = bottleneck.fill.channel_mean.tolist()
            # The model's own figures are those of its largest prefix.
            largest = per_keep[str(max(key_extra["ladder"]))]
            accuracy, code_bytes = largest["accuracy"], largest["code_bytes"]
        else:
            ste = _wire_codec_ste(bottleneck, codes)
            accuracy = evaluate_config(parts, bottleneck, data, ste)
            code_bytes = ste.bytes_seen / max(ste.frames_seen, 1)
            if method == "aecnn":
                assert isinstance(bottleneck, AECNNBottleneck)
                bottleneck.decoder.enabled = False
                bottleneck.decoder.fill.copy_(torch.from_numpy(
                    _calibration_features(parts, data).mean(axis=(0, 2, 3))))
                # "CA_Pruned" of AECNN Table I: the same pruning without the FR module.
                extra["accuracy_pruned_only"] = evaluate_config(parts, bottleneck, data, ste)
                bottleneck.decoder.enabled = True
                extra["kept_channels"] = bottleneck.encoder.kept.tolist()
                extra["importance"] = [float(v) for v in bottleneck.importance]
        run.finish({"accuracy": accuracy, "code_bytes": code_bytes, "extra": extra})
    return TrainedConfig(method, data.point.index, data.point.name,
                         float(ratio) if ratio is not None else 1.0, bottleneck, parts.head,
                         parts.tail, parts.net, accuracy, code_bytes, run.state["history"],
                         extra)


def _train_features_sample(parts: _Parts, data: SplitData, count: int = 2048) -> np.ndarray:
    """Un-augmented training features (a sample) for training-set statistics."""
    if parts.frozen and data.train_x is not None:
        return data.train_x[0, :count]
    return data.features(data.train_set.subset(count, seed=5), parts.head)


def _train_attention(data: SplitData, work_dir: Path, frozen: bool, progress: bool
                     ) -> dict[str, Any]:
    """AECNN Alg. 1 lines 2-4, once per split: train the CA module in place, then average
    its attention map over the training set (eq. 8)."""
    c = data.feature_shape[0]
    attention = ChannelAttention(c)
    parts = _Parts(data, frozen)
    settings = data.settings

    def step(x, y, are_features, generator):
        feats = parts.features(x, are_features)
        return _loss(parts.tail(attention(feats)), y, None, settings)

    stage = Stage("attention", settings.epochs,
                  lambda: [list(attention.parameters()), parts.backbone_params()])
    run = _Run(_config_dir(work_dir, data.point.index, "aecnn",
                           "attention" if frozen else "attention-e2e"),
               _key(data, "aecnn", "attention", {}, frozen), {"attention": attention,
                                                               **parts.modules()},
               [stage], step, data, settings, f"split{data.point.index} aecnn attention",
               progress, trainable_modules=lambda: [attention, *parts.trainable()])
    run.needs_images = not frozen
    if not (run.load() and run.done):
        run.train()
        attention.eval()
        with torch.no_grad():
            total = torch.zeros(c, dtype=torch.float64)
            count = 0
            if parts.frozen and data.train_x is not None:
                source = (torch.from_numpy(data.train_x[0, i:i + 512])
                          for i in range(0, data.train_x.shape[1], 512))
            else:
                if parts.net is not None:
                    parts.net.eval()
                source = (parts.head(x) for x, _ in batches(data.train_set, 512, False))
            for feats in source:
                total += attention.weights(feats).sum(0).double()
                count += len(feats)
        run.finish({"importance": (total / max(count, 1)).tolist()})
    result = {"importance": run.state["result"]["importance"]}
    if parts.net is not None:
        result["backbone_state"] = copy.deepcopy(parts.net.net.state_dict())
    return result


# ------------------------------------------------------------------------------- search


@dataclass
class SearchRow:
    """One tried configuration of the accuracy-aware search."""

    split: int
    method: str
    ratio: float  # nominal ratio (γ, V, C/k, element ratio)
    accuracy: float  # % on the search set
    loss_points: float
    within: bool
    keep_channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _ratios_for(method: str, ratios: Sequence[float] | dict[str, Sequence[float]] | None
                ) -> list[float]:
    spec = get_method(method)
    chosen = ratios.get(method) if isinstance(ratios, dict) else ratios
    values = [float(r) for r in (chosen or spec.default_ratios)]
    if spec.supported_ratios is not None:
        values = [r for r in values if r in spec.supported_ratios] or list(spec.default_ratios)
    return sorted(set(values))


def search_split(data: SplitData, method: str, ratios: Sequence[float], *, work_dir: Path,
                 reference_accuracy: float, threshold_points: float = 2.0,
                 frozen: bool = True, options: dict[str, Any] | None = None,
                 progress: bool = True, early_exit: bool = True,
                 shared: dict[str, Any] | None = None
                 ) -> tuple[list[SearchRow], list[TrainedConfig]]:
    """Accuracy-aware search at one split (BottleNet Alg. 1 lines 19-30, BBNet Alg. 1 with
    its early exit): ratios from low to high compression, each trained and measured through
    the real wire codec; the loss is ``reference_accuracy − accuracy`` in points. The search
    stops after the first ratio whose loss exceeds ``threshold_points`` (compression only
    gets harder from there). A rateless model is trained once and measured at every k."""
    rows: list[SearchRow] = []
    trained: list[TrainedConfig] = []
    ratios = sorted(float(r) for r in ratios)
    if get_method(method).rateless:
        result = train_config(data, method, None, work_dir=work_dir, frozen=frozen,
                              options=options, ratios=ratios, progress=progress, shared=shared)
        trained.append(result)
        assert isinstance(result.bottleneck, RatelessBottleneck)
        seen: set[int] = set()
        for r in ratios:
            k = result.bottleneck.keep_channels(r)
            if k in seen:  # two requested ratios that round to the same channel count
                continue
            seen.add(k)
            acc = result.extra["per_keep"][str(k)]["accuracy"]
            loss = reference_accuracy - acc
            rows.append(SearchRow(data.point.index, method, result.bottleneck.channels / k, acc,
                                  loss, loss <= threshold_points, k,
                                  {"code_bytes": result.extra["per_keep"][str(k)]["code_bytes"]}))
            tqdm.write(f"split {data.point.name} {method} k={k} (×{rows[-1].ratio:g}): "
                       f"{acc:.2f}% (loss {loss:+.2f} points)")
        return rows, trained
    for r in ratios:
        result = train_config(data, method, r, work_dir=work_dir, frozen=frozen, options=options,
                              progress=progress, shared=shared)
        loss = reference_accuracy - result.accuracy
        row = SearchRow(data.point.index, method, r, result.accuracy, loss,
                        loss <= threshold_points, None,
                        {"code_bytes": result.code_bytes, **{
                            k: v for k, v in result.extra.items() if k == "accuracy_pruned_only"}})
        rows.append(row)
        trained.append(result)
        tqdm.write(f"split {data.point.name} {method} ×{r:g}: {result.accuracy:.2f}% "
                   f"(loss {loss:+.2f} points, {result.code_bytes:.0f} B/frame codec payload)")
        if early_exit and not row.within:
            break
    return rows, trained


# ----------------------------------------------------------------------------- slimming


def slim_backbone(model: SplittableModel, train: ArrayDataset, val: ArrayDataset, *,
                  fraction: float = 0.4, sparse_epochs: int = 1, finetune_epochs: int = 1,
                  settings: LearnedTrainConfig | None = None, work_dir: Path,
                  progress: bool = True) -> dict[str, Any]:
    """BBNet §3.1 network slimming in place: train with λ·Σ|γ| on the prunable BNs, prune
    ``fraction`` of their channels by |γ| (one global threshold), fine-tune. Resumable like
    the bottleneck runs. Returns widths, MACs and accuracy before/after."""
    from split_infer.training.backbone import evaluate_top1

    settings = settings or LearnedTrainConfig()
    groups_holder = {"groups": prunable_batchnorms(model)}
    data = _ImageData(train, settings)
    info: dict[str, Any] = {"fraction": fraction, "l1": settings.slim_l1}

    def step(x, y, are_features, generator):
        loss = nn.functional.cross_entropy(model(x), y)
        if run.stages[run._locate(run.state["epoch"])[0]].name == "sparse":
            loss = loss + settings.slim_l1 * bn_l1_penalty(groups_holder["groups"])
        return loss

    def prune() -> None:
        widths = slim_model(model, fraction)
        groups_holder["groups"] = prunable_batchnorms(model)
        run.state["widths"] = widths

    def prepare(saved: dict) -> None:
        if "widths" in saved:
            apply_widths(model, saved["widths"])
            groups_holder["groups"] = prunable_batchnorms(model)

    params = lambda: [[], list(model.parameters())]  # noqa: E731
    # The whole backbone trains here: its (smaller) learning rate is the run's only one.
    backbone_settings = replace(settings, lr=settings.backbone_lr)
    stages = [Stage("sparse", sparse_epochs, params), Stage("finetune", finetune_epochs, params,
                                                            start=prune)]
    run = _Run(work_dir / "slimming", {"model": model.model_name, "fraction": fraction,
                                       "sparse": sparse_epochs, "finetune": finetune_epochs,
                                       "settings": settings.key(),
                                       "train_images": len(train),
                                       "fingerprint": _model_fingerprint(model)},
               {"net": model.net}, stages, step, data, backbone_settings, "slimming", progress,
               trainable_modules=lambda: [model], prepare=prepare)
    run.needs_images = True
    if run.load() and run.done:
        model.eval()
        return run.state["result"]
    if run.state["epoch"] == 0:
        run.state["before"] = {"macs": count_macs(model, model.input_shape),
                               "accuracy": evaluate_top1(model, val)}
    run.train()
    if "widths" not in run.state:  # finetune_epochs == 0: prune without fine-tuning
        prune()
    model.eval()
    info.update({"widths": run.state["widths"],
                 "macs_before": run.state["before"]["macs"],
                 "accuracy_before": run.state["before"]["accuracy"],
                 "macs_after": count_macs(model, model.input_shape),
                 "accuracy_after": evaluate_top1(model, val)})
    run.finish(info)
    return info


class _ImageData:
    """The bits of :class:`SplitData` a whole-backbone run needs (augmented image batches)."""

    def __init__(self, train: ArrayDataset, settings: LearnedTrainConfig) -> None:
        self.train_set = train
        self.settings = settings

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.settings.batch_size)

    def train_batches(self, epoch: int, images: bool = True):
        seed = self.settings.seed + 7919 * epoch
        generator = torch.Generator().manual_seed(seed)
        for x, y in batches(self.train_set, self.settings.batch_size, shuffle=True, seed=seed):
            yield augment(x, generator), y, False


# ------------------------------------------------------------------ BottleNet §3.3 / Fig. 7


def compare_compression_aware(data: SplitData, *, ratio: float = 16.0,
                              qualities: Sequence[int] = (90, 50, 20), work_dir: Path,
                              frozen: bool = True, progress: bool = True) -> list[dict]:
    """BottleNet's Fig. 7: accuracy loss of the *naive* way (the unit trained without the
    codec, JPEG inserted afterwards) against *compression-aware* training (JPEG in the
    forward pass, identity backward), for each JPEG ``quality`` at one split and ratio.

    Returns one row per quality: codec bytes per frame and search-set top-1 of both.
    """
    naive = train_config(data, "bottlenet", ratio, work_dir=work_dir, frozen=frozen,
                         options={"codec_in_loop": False}, progress=progress)
    rows = []
    for quality in qualities:
        spec = f"quant:bits=8,per=channel+jpeg:quality={quality}"
        aware = train_config(data, "bottlenet", ratio, work_dir=work_dir, frozen=frozen,
                             options={"wire_codec": spec}, progress=progress)
        parts = _Parts.of(naive, data)
        naive.bottleneck.wire_codec = spec
        codes = _codes(naive.bottleneck, data, _calibration_features(parts, data))
        ste = _wire_codec_ste(naive.bottleneck, codes)
        naive_accuracy = evaluate_config(parts, naive.bottleneck, data, ste)
        rows.append({"quality": quality, "ratio": ratio,
                     "naive_accuracy": naive_accuracy,
                     "naive_bytes": ste.bytes_seen / max(ste.frames_seen, 1),
                     "aware_accuracy": aware.accuracy, "aware_bytes": aware.code_bytes})
    return rows


# ------------------------------------------------------------------------------- export


@dataclass
class _Exported:
    configurations: list[BundleConfiguration]
    learned: dict[str, dict[str, Any]]


def _save_module_weights(path: Path, module: nn.Module, metadata: dict[str, Any],
                         net: nn.Module | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {f"bottleneck.{k}": v.detach().contiguous().cpu()
               for k, v in module.state_dict().items()}
    if net is not None:
        tensors.update({f"backbone.{k}": v.detach().contiguous().cpu()
                        for k, v in net.state_dict().items()})
    save_file(tensors, str(path), metadata={"describe": json.dumps(metadata)})


def _export_trained(out: Path, trained: TrainedConfig, rows: list[SearchRow],
                    example: torch.Tensor, data: SplitData, taken: set[float],
                    backbone_macs: int) -> _Exported:
    """ONNX parts, calibration, fill and weights for the kept rows of one trained model."""
    from safetensors.numpy import save_file

    b = trained.bottleneck.eval()
    if trained.net is not None:
        trained.net.eval()
    i, method = trained.split_index, trained.method
    tag = f"split{i}_{method}" + ("" if method == "rateless" else f"_r{trained.ratio:g}")
    edge_onnx, cloud_onnx = f"onnx/{tag}_edge.onnx", f"onnx/{tag}_cloud.onnx"
    export_onnx(nn.Sequential(trained.head, b.encoder), example, out / edge_onnx)
    export_onnx(nn.Sequential(b.decoder, trained.tail), torch.zeros(1, *b.code_shape),
                out / cloud_onnx)
    weights = f"weights/{tag}.safetensors"
    _save_module_weights(out / weights, b, b.describe(), None if trained.net is None
                         else trained.net.net)
    features = _calibration_features(_Parts.of(trained, data), data)
    codes = _codes(b, data, features)
    overhead = {"encoder_macs": count_macs(b.encoder, b.feature_shape),
                "decoder_macs": count_macs(b.decoder, b.code_shape),
                "backbone_macs": backbone_macs}
    overhead["fraction"] = (overhead["encoder_macs"] + overhead["decoder_macs"]) / backbone_macs
    feature_nbytes = math.prod(b.feature_shape) * 4
    fill = None
    if isinstance(b, RatelessBottleneck):
        fill = f"calibration/{tag}_fill.safetensors"
        save_file({"channel_mean": b.fill.channel_mean.numpy().astype(np.float32)},
                  str(out / fill))
    configurations, learned = [], {}
    for row in rows:
        keep = row.keep_channels
        sent = codes if keep is None else np.ascontiguousarray(codes[:, :keep])
        codec = get_codec(b.wire_codec).calibrate(sent)
        config_id = tag if keep is None else f"{tag}_k{keep}"
        calibration_file = None
        if codec.state_dict():
            calibration_file = f"calibration/{config_id}.safetensors"
            save_file(codec.state_dict(), str(out / calibration_file))
        configurations.append(BundleConfiguration(
            id=config_id, split_point=i, split_name=trained.split_name,
            ratio=_measured_ratio(codec, sent, taken, reference_nbytes=feature_nbytes),
            codec=codec.spec, feature_shape=b.code_shape, edge_onnx=edge_onnx,
            cloud_onnx=cloud_onnx, method=method, keep_channels=keep,
            calibration=calibration_file, fill=fill))
        learned[config_id] = {**b.describe(), "nominal_ratio": row.ratio,
                              "search_accuracy": row.accuracy, "loss_points": row.loss_points,
                              "weights": weights, "overhead": overhead,
                              **({"keep_channels": keep} if keep is not None else {}),
                              **{k: v for k, v in trained.extra.items()
                                 if k in ("accuracy_pruned_only",)}}
    return _Exported(configurations, learned)


def _time_part(path: Path, shape: Sequence[int], repeats: int) -> float:
    backend = OrtBackend(path, 1)
    x = np.zeros((1, *shape), np.float32)
    backend(x)
    times = []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        backend(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _retime_learned(bundle: Bundle, repeats: int) -> Bundle:
    """``measure_bundle`` times the backbone's head/tail; a learned configuration's parts
    also run the encoder/decoder, so they are timed as exported."""
    from split_infer.pipeline.profiling import ModelProfile

    profile = ModelProfile.from_dict(bundle.manifest["profile"])
    timed: dict[str, float] = {}
    input_shape = bundle.manifest["model"]["input_shape"]
    updated = []
    for config in bundle.configurations:
        if config.method == "baseline":
            updated.append(config)
            continue
        split_timing = profile.split(config.split_point)
        encode_ms = (config.edge_ms or 0) - split_timing.head["onnxruntime"].median_ms
        decode_ms = (config.cloud_ms or 0) - split_timing.tail["onnxruntime"].median_ms
        if config.edge_onnx not in timed:
            timed[config.edge_onnx] = _time_part(bundle.file(config.edge_onnx), input_shape,
                                                 repeats)
        if config.cloud_onnx not in timed:
            timed[config.cloud_onnx] = _time_part(bundle.file(config.cloud_onnx),
                                                  config.feature_shape, repeats)
        updated.append(BundleConfiguration.from_dict({
            **config.to_dict(), "edge_ms": timed[config.edge_onnx] + max(encode_ms, 0.0),
            "cloud_ms": timed[config.cloud_onnx] + max(decode_ms, 0.0)}))
    manifest = bundle.base_manifest()
    return write_bundle(bundle.path, manifest, updated)


def _search_and_eval_sets(test: ArrayDataset, train: ArrayDataset, eval_images: int | None,
                          search_images: int) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset]:
    """(train, search, eval): the search set is disjoint from the images the bundle is
    measured on (a held-out part of the test split, or of the training split when the whole
    test split is measured)."""
    def pick(ds: ArrayDataset, idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset(ds.name, ds.images[idx], ds.labels[idx], ds.classes,
                            ds.preprocessing)

    n = len(test)
    if eval_images is not None and eval_images < n:
        # The same draw as ArrayDataset.subset(eval_images, seed=1), as build_baseline_bundle.
        eval_idx = np.sort(np.random.default_rng(1).choice(n, eval_images, replace=False))
        rest = np.setdiff1d(np.arange(n), eval_idx)
        search_idx = np.sort(np.random.default_rng(4).choice(
            rest, min(search_images, len(rest)), replace=False))
        return train, pick(test, search_idx), pick(test, eval_idx)
    m = len(train)
    held = np.sort(np.random.default_rng(4).choice(m, min(search_images, m // 5), replace=False))
    kept = np.setdiff1d(np.arange(m), held)
    return pick(train, kept), pick(train, held), test


def train_bundle(
    model_name: str,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    weights: str | Path | None = None,
    dataset: str = "cifar10",
    data_path: str | Path | None = None,
    split_points: Sequence[int | str] | None = None,
    ratios: Sequence[float] | dict[str, Sequence[float]] | None = None,
    epochs: int = 3,
    threshold_points: float = 2.0,
    freeze_backbone: bool = True,
    work_dir: str | Path | None = None,
    train_images: int | None = None,
    eval_images: int | None = 1000,
    search_images: int = 1000,
    keep: str = "within",
    method_options: dict[str, dict[str, Any]] | None = None,
    baseline_codecs: Sequence[str] | None = None,
    slim: float | None = None,
    slim_epochs: tuple[int, int] = (1, 1),
    settings: LearnedTrainConfig | None = None,
    profile_repeats: int = 10,
    force: bool = False,
    progress: bool = True,
) -> Bundle:
    """Train learned bottlenecks at split points, run the accuracy-aware search and write a
    bundle with every kept configuration (plus baseline codecs with ``"baseline"``).

    * ``methods``: any of :func:`~split_infer.codecs.learned.list_methods` and ``"baseline"``
      (the codecs of ``baseline_codecs``, default those of ``build_baseline_bundle``).
    * ``weights``: backbone safetensors (default: the shipped weights of ``model_name``).
    * ``split_points``: indices or block names (default: three spread over the network).
    * ``ratios``: nominal ratios tried by every method (a list) or per method (a dict);
      default each method's ladder (Hu & K: γ = 2, 4, 8; AECNN: V = 2…64; rateless: C/k).
    * ``epochs``: per training stage; ``settings`` holds the other hyper-parameters.
    * ``threshold_points``: accepted top-1 loss against the uncompressed backbone on the
      search set (BottleNet §3.2 uses 2, BBNet 2.5).
    * ``freeze_backbone``: train only encoder/decoder on precomputed features (fast path);
      False fine-tunes the backbone too (Hu & K end to end), one backbone copy per
      configuration.
    * ``keep``: ``"within"`` exports every tried configuration within the threshold,
      ``"best"`` only the highest compression within it per (split, method) (Alg. 1's
      output), ``"all"`` everything that was trained.
    * ``work_dir``: checkpoints (default ``<out_dir>.work`` next to the bundle); reruns skip
      finished configurations and resume unfinished ones.
    * ``train_images``: a random subset of the training split (None: all of it).
    * ``eval_images``: test images the bundle is measured on from real wire frames (None:
      the whole test split); ``search_images``: disjoint images the search measures on.
    * ``method_options``: per-method builder options, e.g. ``{"bottlenet": {"wire_codec":
      "quant:bits=8,per=channel+rans", "spatial": 2}, "hu_ae": {"codec_in_loop": True}}``.
    * ``slim``: BBNet network slimming of the backbone first (fraction pruned, e.g. 0.4;
      ``slim_epochs`` = (sparse-training, fine-tuning) epochs); the slimmed backbone is then
      the bundle's backbone.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    if keep not in ("within", "best", "all"):
        raise ValueError(f"keep must be 'within', 'best' or 'all', got {keep!r}")
    methods = list(dict.fromkeys(methods))
    learned_methods = [m for m in methods if m != "baseline"]
    for m in learned_methods:
        get_method(m)  # unknown names fail before any work
    if not methods:
        raise ValueError(f"no methods given; choose from {['baseline', *list_methods()]}")
    codec_specs = list(baseline_codecs or DEFAULT_BASELINE_CODECS) if "baseline" in methods \
        else []
    for spec in codec_specs:
        get_codec(spec)
    settings = replace(settings or LearnedTrainConfig(), epochs=epochs)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)

    model = get_model(model_name, weights=resolve_weights(model_name, weights))
    train_full = load_dataset(dataset, "train", data_path)
    test_full = load_dataset(dataset, "test", data_path)
    if len(train_full.classes) != model.num_classes:
        raise ValueError(f"{model_name} has {model.num_classes} outputs but {dataset} has "
                         f"{len(train_full.classes)} classes")
    train, search, test = _search_and_eval_sets(test_full, train_full, eval_images,
                                                search_images)
    if train_images is not None:
        train = train.subset(train_images, seed=3)

    slimming = None
    if slim:
        slimming = slim_backbone(model, train, search, fraction=slim,
                                 sparse_epochs=slim_epochs[0], finetune_epochs=slim_epochs[1],
                                 settings=settings, work_dir=work, progress=progress)
        model.eval()
    points = [model.split_point(p) for p in (split_points or default_split_points(model))]
    from split_infer.training.backbone import evaluate_top1

    reference = evaluate_top1(model, search)
    tqdm.write(f"{model_name}: {reference:.2f}% top-1 on the {len(search)}-image search set")

    (out / "weights").mkdir(parents=True)
    (out / "onnx").mkdir()
    (out / "calibration").mkdir()
    if slimming:
        save_slimmed_weights(model, slimming["widths"], out / "weights" / "backbone.safetensors")
    else:
        save_weights(model, out / "weights" / "backbone.safetensors")
    example = torch.from_numpy(test.preprocessing(test.images[:1]))
    export_onnx(model, example, out / "onnx" / "full.onnx")
    backbone_macs = count_macs(model, model.input_shape)
    calibration = train.subset(settings.calibration_images, seed=2)

    configurations: list[BundleConfiguration] = []
    split_info, search_rows, learned = [], [], {}
    selected: dict[str, str | None] = {}
    for point in points:
        taken: set[float] = set()
        head, tail = split(model, point)
        features = head_features(head, calibration, progress=progress) if codec_specs else \
            np.zeros((0,), np.float32)
        entry, baseline_configs = export_baseline_split(out, point, head, tail, example,
                                                        features, codec_specs, taken)
        split_info.append(entry)
        configurations.extend(baseline_configs)
        if not learned_methods:
            continue
        data = SplitData(model, point, train, search, settings, frozen=freeze_backbone,
                         progress=progress)
        shared: dict[str, Any] = {}
        for method in learned_methods:
            rows, trained = search_split(
                data, method, _ratios_for(method, ratios), work_dir=work,
                reference_accuracy=reference, threshold_points=threshold_points,
                frozen=freeze_backbone, options=(method_options or {}).get(method),
                progress=progress, shared=shared)
            within = [r for r in rows if r.within]
            best = max(within, key=lambda r: r.ratio) if within else None
            chosen = {"within": within, "best": [best] if best else [], "all": rows}[keep]
            exported_ids = []
            for result in trained:
                mine = [r for r in chosen if r.method == result.method and (
                    result.method == "rateless" or r.ratio == result.ratio)]
                if not mine:
                    continue
                exported = _export_trained(out, result, mine, example, data, taken,
                                           backbone_macs)
                configurations.extend(exported.configurations)
                learned.update(exported.learned)
                exported_ids += [c.id for c in exported.configurations]
            best_id = None
            if best is not None:
                best_id = next((cid for cid, info in learned.items()
                                if info["method"] == method and cid.startswith(
                                    f"split{point.index}_") and info["nominal_ratio"] ==
                                best.ratio), None)
            selected[f"split{point.index}/{method}"] = best_id
            search_rows += [{**asdict(r), "exported": any(
                learned[c]["nominal_ratio"] == r.ratio for c in exported_ids)} for r in rows]

    manifest = bundle_manifest(model, dataset, test, split_info,
                               calibration_images=len(calibration),
                               profile_repeats=profile_repeats, progress=progress)
    manifest["learned"] = {
        "methods": learned_methods, "threshold_points": threshold_points,
        "freeze_backbone": freeze_backbone, "keep": keep, "settings": settings.key(),
        "train_images": len(train), "search_images": len(search),
        "reference_accuracy": reference, "configurations": learned, "search": search_rows,
        "selected": selected}
    if slimming:
        manifest["model"]["slimming"] = slimming
    bundle = write_bundle(out, manifest, configurations)
    bundle = measure_bundle(bundle, test, progress=progress)
    return _retime_learned(bundle, profile_repeats)
