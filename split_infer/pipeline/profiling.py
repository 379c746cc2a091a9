"""Per-split-point profile of a splittable model: tensor sizes, MACs and measured latency.

For every split point the profile records the activation that would cross the link (shape
and float32 size), the head's cumulative multiply-accumulates, and the median and p90
latency of the head and of the tail on each inference backend, plus the whole model run on
one side. This is the table a latency planner needs (I_c and I_s of the thesis's latency
model, and the uncompressed D) and what Fig. 1.3 of Ulhaq's thesis plots.

ONNX Runtime parts are not exported split by split: the whole model is exported once with
every block boundary as an extra graph output, and each head and tail is cut out of that
graph with ``onnx.utils.Extractor`` (seconds instead of minutes for ResNet-50 at 224×224).
Every part is checked numerically against eager torch before it is timed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from split_infer.models._api import SplittableModel, get_model
from split_infer.models.macs import counting_macs
from split_infer.pipeline.backends import BACKENDS, Backend, OrtBackend
from split_infer.pipeline.onnx_parts import TappedModel
from split_infer.pipeline.torch_backend import TorchBackend, eval_mode, export_onnx, export_tapped

__all__ = [
    "Latency",
    "ModelProfile",
    "SplitProfile",
    "profile_model",
    "run_profile",
]

#: Version of the JSON layout written by :meth:`ModelProfile.to_dict`.
PROFILE_SCHEMA = 1

# Relative tolerance of the ONNX-vs-eager check, against the largest reference magnitude.
# Different convolution algorithms differ by ~1e-6 relative; a wrongly cut graph by O(1).
_CHECK_RTOL = 1e-3


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Latency:
    """Wall-clock latency of one call in milliseconds: median, 90th percentile and mean.

    The mean is what a call costs at a steady rate under a CPU quota (most calls run at full
    speed, the one that exhausts the period's budget waits), which the median misses; it is
    None in profiles written before it was recorded."""

    median_ms: float
    p90_ms: float
    mean_ms: float | None = None

    @classmethod
    def from_samples_ns(cls, samples: Sequence[int]) -> Latency:
        """Summarise ``time.perf_counter_ns`` durations."""
        ms = np.asarray(samples, dtype=np.float64) / 1e6
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), float(np.mean(ms)))

    def to_dict(self) -> dict[str, float]:
        data = {"median_ms": self.median_ms, "p90_ms": self.p90_ms}
        if self.mean_ms is not None:
            data["mean_ms"] = self.mean_ms
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Latency:
        mean = data.get("mean_ms")
        return cls(float(data["median_ms"]), float(data["p90_ms"]),
                   None if mean is None else float(mean))


@dataclass(frozen=True)
class SplitProfile:
    """One split point: what crosses the link there and what each side costs.

    ``bytes`` is the float32 size of the activation for one sample; ``head_macs`` counts
    everything from the input up to the cut. ``head`` and ``tail`` map backend names to the
    latency of running that part on one batch (see :attr:`ModelProfile.batch`).
    """

    index: int
    name: str
    shape: tuple[int, int, int]
    bytes: int
    head_macs: int
    head: dict[str, Latency]
    tail: dict[str, Latency]

    @property
    def kb(self) -> float:
        return self.bytes / 1024

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "shape": list(self.shape),
            "bytes": self.bytes,
            "head_macs": self.head_macs,
            "head": {k: v.to_dict() for k, v in self.head.items()},
            "tail": {k: v.to_dict() for k, v in self.tail.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitProfile:
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            shape=tuple(int(d) for d in data["shape"]),
            bytes=int(data["bytes"]),
            head_macs=int(data["head_macs"]),
            head={k: Latency.from_dict(v) for k, v in data["head"].items()},
            tail={k: Latency.from_dict(v) for k, v in data["tail"].items()},
        )


@dataclass(frozen=True)
class ModelProfile:
    """Profile of a model at every split point, on every measured backend.

    ``full`` is the whole model on one machine (client-only inference) per backend.
    ``input_bytes`` is the float32 size of one input sample, the data volume of sending the
    raw input (split before the first block). ``onnxruntime_threads`` is ``None`` when ONNX
    Runtime used its default of one thread per physical core. ``machine`` describes where
    the timings were taken; they only transfer to a machine like it. A profile measured under
    a CPU budget (``split-infer profile --edge-cpu``) has ``machine["cpu_budget_cores"]``, and
    its table and plot show the mean per call (:meth:`typical_ms`).
    """

    model: str
    input_shape: tuple[int, int, int]
    batch: int
    backends: tuple[str, ...]
    repeats: int
    warmup: int
    total_macs: int
    input_bytes: int
    full: dict[str, Latency]
    splits: list[SplitProfile]
    torch_version: str
    onnxruntime_version: str | None
    torch_threads: int
    onnxruntime_threads: int | None
    machine: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema: int = PROFILE_SCHEMA

    def typical_ms(self, latency: Latency) -> float:
        """The figure to show for ``latency``: the median, or under a CPU budget the mean."""
        if self.machine.get("cpu_budget_cores") and latency.mean_ms is not None:
            return latency.mean_ms
        return latency.median_ms

    def split(self, point: int | str) -> SplitProfile:
        """The entry of a split point given by index or block name."""
        for entry in self.splits:
            if point in (entry.index, entry.name):
                return entry
        raise KeyError(
            f"{self.model} profile has no split point {point!r}; "
            f"choose one of {[s.name for s in self.splits]}"
        )

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (lists for tuples, plain floats and ints)."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["backends"] = list(self.backends)
        data["full"] = {k: v.to_dict() for k, v in self.full.items()}
        data["splits"] = [s.to_dict() for s in self.splits]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProfile:
        """Inverse of :meth:`to_dict`; rejects layouts of another schema version."""
        schema = data.get("schema")
        if schema != PROFILE_SCHEMA:
            raise ValueError(f"unsupported profile schema {schema!r} (expected {PROFILE_SCHEMA})")
        return cls(
            model=str(data["model"]),
            input_shape=tuple(int(d) for d in data["input_shape"]),
            batch=int(data["batch"]),
            backends=tuple(data["backends"]),
            repeats=int(data["repeats"]),
            warmup=int(data["warmup"]),
            total_macs=int(data["total_macs"]),
            input_bytes=int(data["input_bytes"]),
            full={k: Latency.from_dict(v) for k, v in data["full"].items()},
            splits=[SplitProfile.from_dict(s) for s in data["splits"]],
            torch_version=str(data["torch_version"]),
            onnxruntime_version=data.get("onnxruntime_version"),
            torch_threads=int(data["torch_threads"]),
            onnxruntime_threads=data.get("onnxruntime_threads"),
            machine=dict(data.get("machine", {})),
            created=str(data.get("created", "")),
            schema=int(schema),
        )

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelProfile:
        """Read a profile written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ------------------------------------------------------------------ presentation

    def format_table(self) -> str:
        """Aligned text table: one row per split point, backends side by side."""
        headers = ["split", "name", "shape", "KB", "MMACs"]
        headers += [f"head {b} ms" for b in self.backends]
        headers += [f"tail {b} ms" for b in self.backends]
        rows = []
        for s in self.splits:
            row = [
                str(s.index),
                s.name,
                "x".join(str(d) for d in s.shape),
                f"{s.kb:.1f}",
                f"{s.head_macs / 1e6:.2f}",
            ]
            row += [f"{self.typical_ms(s.head[b]):.3f}" for b in self.backends]
            row += [f"{self.typical_ms(s.tail[b]):.3f}" for b in self.backends]
            rows.append(row)
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        # Names and shapes read better left-aligned, numbers right-aligned.
        left = {1, 2}

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i in left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        shape = "x".join(str(d) for d in self.input_shape)
        threads = f"threads torch {self.torch_threads}"
        if "onnxruntime" in self.backends:
            ort = "default" if self.onnxruntime_threads is None else self.onnxruntime_threads
            threads += f" / onnxruntime {ort}"
        title = (
            f"{self.model}  input {shape} ({self.input_bytes / 1024:.1f} KB)  batch {self.batch}"
            f"  total {self.total_macs / 1e6:.2f} MMACs  {threads}  (median of {self.repeats})"
        )
        budget = self.machine.get("cpu_budget_cores")
        if budget:
            title = title.replace(f"(median of {self.repeats})",
                                  f"(mean of {self.repeats} under a {budget:g}-core CPU budget)")
        full = ", ".join(
            f"{b} {self.typical_ms(self.full[b]):.3f} ms (p90 {self.full[b].p90_ms:.3f})"
            for b in self.backends
        )
        out = [title, line(headers), line(["-" * w for w in widths])]
        out += [line(r) for r in rows]
        out.append(f"full model on one side: {full}")
        return "\n".join(out)

    def plot(self, path: str | Path) -> None:
        """Save a PNG like Fig. 1.3 of Ulhaq's thesis, against the split point.

        (a) cumulative head latency per backend (median, shaded up to p90, full-model
        latency dashed); (b) float32 size of the tensor at each split point on a log scale,
        with the raw input's size for reference.
        """
        # The object-oriented API with an Agg canvas needs no pyplot and so never touches the
        # process-wide backend or figure registry of whoever imported us.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter

        fig = Figure(figsize=(12, 4.6), layout="constrained")
        FigureCanvasAgg(fig)
        ax_lat, ax_size = fig.subplots(1, 2)
        x = np.arange(len(self.splits))
        names = [s.name for s in self.splits]
        for i, backend in enumerate(self.backends):
            color = f"C{i}"
            median = [self.typical_ms(s.head[backend]) for s in self.splits]
            p90 = [s.head[backend].p90_ms for s in self.splits]
            ax_lat.plot(x, median, "o-", color=color, label=backend)
            ax_lat.fill_between(x, median, p90, color=color, alpha=0.2, linewidth=0)
            ax_lat.axhline(
                self.typical_ms(self.full[backend]),
                color=color,
                linestyle="--",
                linewidth=1,
                label=f"{backend}, full model",
            )
        ax_lat.set_title("(a) cumulative inference latency of the head")
        ax_lat.set_ylabel(f"latency [ms], batch {self.batch}")
        ax_lat.set_ylim(bottom=0)
        ax_lat.legend(fontsize="small")

        ax_size.bar(x, [s.kb for s in self.splits], color="C2")
        ax_size.axhline(
            self.input_bytes / 1024,
            color="k",
            linestyle="--",
            linewidth=1,
            label="input (float32)",
        )
        ax_size.set_yscale("log")
        # Plain numbers read better than 6×10¹ on a scale spanning one or two decades.
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax_size.yaxis.set_major_formatter(plain)
        ax_size.yaxis.set_minor_formatter(plain)
        ax_size.tick_params(axis="y", which="minor", labelsize="x-small")
        ax_size.set_title("(b) output tensor size (float32)")
        ax_size.set_ylabel("size [KB]")
        ax_size.legend(fontsize="small")

        for ax in (ax_lat, ax_size):
            ax.set_xticks(x, names, rotation=60, ha="right", fontsize="small")
            ax.set_xlabel("split point")
            ax.grid(True, axis="y", alpha=0.3)
        fig.suptitle(f"{self.model} ({'x'.join(map(str, self.input_shape))})")
        fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- profiling


def _machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    # A loaded machine gives slow, noisy timings; the planner can tell from this.
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


class _OnnxParts:
    """The whole model exported once with every block boundary tapped, heads and tails cut
    out of it on demand (:mod:`split_infer.pipeline.onnx_parts`)."""

    def __init__(self, blocks: list[nn.Module], example: torch.Tensor) -> None:
        self._blocks = len(blocks)
        self._model = TappedModel(export_tapped(blocks, example))

    def part(self, start: int, stop: int) -> bytes:
        """Blocks ``start..stop-1`` (0 = from the input, ``len(blocks)`` = to the logits)."""
        return self._model.part(start, None if stop == self._blocks else stop)


def _max_error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    if got.shape != want.shape:
        return math.inf, 0.0
    if not want.size:
        return 0.0, 0.0
    return float(np.abs(got - want).max()), float(np.abs(want).max())


def _agrees(got: np.ndarray, want: np.ndarray) -> bool:
    err, scale = _max_error(got, want)
    return err <= _CHECK_RTOL * scale + 1e-30


def _check(what: str, got: np.ndarray, want: np.ndarray) -> None:
    if not _agrees(got, want):
        err, scale = _max_error(got, want)
        raise RuntimeError(
            f"{what} disagrees with eager torch (shape {got.shape} vs {want.shape}, max abs "
            f"error {err:.3g} at scale {scale:.3g}); refusing to time a wrong graph"
        )


def _measure(
    runs: dict[Hashable, tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]],
    repeats: int,
    warmup: int,
) -> dict[Hashable, Latency]:
    # Round-robin over the candidates so that background load drifting during the
    # measurement hits every backend alike instead of whichever happened to run then.
    samples: dict[Hashable, list[int]] = {key: [] for key in runs}
    for r in range(warmup + repeats):
        for key, (fn, x) in runs.items():
            start = time.perf_counter_ns()
            fn(x)
            elapsed = time.perf_counter_ns() - start
            if r >= warmup:
                samples[key].append(elapsed)
    return {key: Latency.from_samples_ns(v) for key, v in samples.items()}


def _model_blocks(model: SplittableModel) -> list[nn.Module]:
    # The last split's head and tail together hold every block, in order.
    head, tail = model.head_tail(model.split_points()[-1])
    return [*head.children(), *tail.children()]


def profile_model(
    model: SplittableModel,
    backends: Sequence[str] = BACKENDS,
    repeats: int = 20,
    warmup: int = 3,
    batch: int = 1,
    progress: bool = True,
    *,
    input_shape: Sequence[int] | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> ModelProfile:
    """Measure ``model`` at every split point on every backend in ``backends``.

    Sizes and MACs are per sample; latencies are per call on a batch of ``batch``, the
    median and p90 of ``repeats`` timed calls after ``warmup`` untimed ones, interleaved
    across backends and parts. ``input_shape`` (C, H, W) overrides the model's own, e.g. a
    smaller image for a quick run. ``threads``, when given, sets torch's thread count for the
    duration and ONNX Runtime's intra-op thread count. Timings hardly depend on the weights,
    so an untrained model will do. The modes of the model's modules are restored.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(
            f"unknown backends {unknown}; choose one or more of {list(BACKENDS)}"
            if unknown
            else f"no backend given; choose one or more of {list(BACKENDS)}"
        )
    if repeats < 1 or warmup < 0 or batch < 1:
        raise ValueError(
            f"need repeats >= 1, warmup >= 0, batch >= 1 (got {repeats}, {warmup}, {batch})"
        )
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    backends = tuple(dict.fromkeys(backends))
    shape = tuple(int(d) for d in (input_shape or model.input_shape))
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {shape}")

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        # Blocks may wrap net's layers in modules outside the model's tree (a stem
        # Sequential, a Flatten); their modes are restored too.
        with eval_mode(nn.ModuleList([model, *_model_blocks(model)])):
            return _profile(
                model, backends, repeats, warmup, batch, progress, shape, threads, seed
            )
    finally:
        torch.set_num_threads(previous_threads)


def _profile(
    model: SplittableModel,
    backends: tuple[str, ...],
    repeats: int,
    warmup: int,
    batch: int,
    progress: bool,
    shape: tuple[int, ...],
    threads: int | None,
    seed: int,
) -> ModelProfile:
    from tqdm import tqdm

    points = model.split_points()
    blocks = _model_blocks(model)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *shape), generator=generator)

    # One eager pass gives every boundary activation (the tails' inputs and the reference
    # for the ONNX check) and the MACs of each block.
    activations, block_macs = [], []
    with torch.no_grad():
        h = x
        for block in blocks:
            with counting_macs(block) as counter:
                h = block(h)
            activations.append(h.numpy().copy())
            block_macs.append(counter.macs // batch)
    cumulative = np.cumsum(block_macs).tolist()
    x_np = x.numpy()

    parts = _OnnxParts(blocks, x[:1]) if "onnxruntime" in backends else None

    def build(kind: str, start: int, stop: int, what: str, inp: np.ndarray) -> Backend:
        # Checks run on copies: a module that writes to its input in place must not alter
        # the reference activations.
        want = activations[stop - 1]
        backend: Backend
        if kind == "torch":
            backend = TorchBackend(nn.Sequential(*blocks[start:stop]))
        else:
            assert parts is not None
            backend = OrtBackend(parts.part(start, stop), intra_op_threads=threads)
            if not _agrees(backend(inp.copy()), want):
                # A block that starts with an in-place op rewrites the previous boundary
                # tensor, so the whole-model graph exposes the modified value there; an
                # export of just this part is exact.
                part = nn.Sequential(*blocks[start:stop])
                data = export_onnx(part, torch.from_numpy(inp[:1].copy()))
                backend = OrtBackend(data, intra_op_threads=threads)
        _check(f"{kind} {what}", backend(inp.copy()), want)
        return backend

    full_runs = {b: (build(b, 0, len(blocks), "full model", x_np), x_np) for b in backends}
    full = _measure(full_runs, repeats, warmup)
    del full_runs

    splits = []
    bar = tqdm(points, desc=f"profile {model.model_name}", unit="split", disable=not progress)
    for point in bar:
        bar.set_postfix_str(point.name)
        i = point.index
        act = activations[i - 1]
        runs: dict[Hashable, tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]] = {}
        for b in backends:
            runs[("head", b)] = (build(b, 0, i, f"head up to {point.name}", x_np), x_np)
            runs[("tail", b)] = (build(b, i, len(blocks), f"tail after {point.name}", act), act)
        timed = _measure(runs, repeats, warmup)
        splits.append(
            SplitProfile(
                index=i,
                name=point.name,
                shape=tuple(act.shape[1:]),
                bytes=math.prod(act.shape[1:]) * 4,
                head_macs=int(cumulative[i - 1]),
                head={b: timed[("head", b)] for b in backends},
                tail={b: timed[("tail", b)] for b in backends},
            )
        )
    bar.close()

    ort_version = None
    if "onnxruntime" in backends:
        import onnxruntime

        ort_version = onnxruntime.__version__
    return ModelProfile(
        model=model.model_name,
        input_shape=shape,
        batch=batch,
        backends=backends,
        repeats=repeats,
        warmup=warmup,
        total_macs=int(cumulative[-1]),
        input_bytes=math.prod(shape) * 4,
        full=full,
        splits=splits,
        torch_version=torch.__version__,
        onnxruntime_version=ort_version,
        torch_threads=torch.get_num_threads(),
        onnxruntime_threads=threads if "onnxruntime" in backends else None,
        machine=_machine_info(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def run_profile(
    model_name: str,
    out_dir: str | Path,
    *,
    input_shape: Sequence[int] | None = None,
    backends: Sequence[str] = BACKENDS,
    repeats: int = 20,
    warmup: int = 3,
    batch: int = 1,
    threads: int | None = None,
    progress: bool = True,
) -> ModelProfile:
    """Profile a registered model and write ``<model>_profile.json`` and ``.png`` to ``out_dir``.

    Builds the model untrained (timings and sizes do not depend on weights) and returns the
    :class:`ModelProfile`; see :func:`profile_model` for the arguments.
    """
    model = get_model(model_name)
    profile = profile_model(
        model,
        backends=backends,
        repeats=repeats,
        warmup=warmup,
        batch=batch,
        progress=progress,
        input_shape=input_shape,
        threads=threads,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    profile.save(out / f"{model_name}_profile.json")
    profile.plot(out / f"{model_name}_profile.png")
    return profile
