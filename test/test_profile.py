"""MAC counting, per-split profiling, and the torch / ONNX Runtime backends."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from split_infer.models import SplittableModel, get_model, split
from split_infer.models.macs import count_macs
from split_infer.pipeline.backends import BACKENDS, Backend, OrtBackend
from split_infer.pipeline.profiling import (
    Latency,
    ModelProfile,
    _OnnxParts,
    profile_model,
    run_profile,
)
from split_infer.pipeline.torch_backend import TorchBackend, export_onnx, make_backend

# resnet8_cifar by hand (C_out·H·W · C_in/groups·k·k per conv, option-B 1×1 shortcuts).
RESNET8_HEAD_MACS = [
    16 * 32 * 32 * 3 * 9,  # stem
    16 * 32 * 32 * 3 * 9 + 2 * 16 * 32 * 32 * 16 * 9,  # + layer1.0
    5_160_960 + 32 * 16 * 16 * (16 * 9 + 32 * 9 + 16),  # + layer2.0
    8_830_976 + 64 * 8 * 8 * (32 * 9 + 64 * 9 + 32),  # + layer3.0
]
RESNET8_TOTAL_MACS = RESNET8_HEAD_MACS[-1] + 64 * 10


@pytest.fixture(autouse=True)
def _one_thread():
    # Shared cores: oversubscribed intra-op threads slow these small runs several-fold.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    profile = run_profile(
        "resnet8_cifar", out, repeats=3, warmup=1, threads=1, progress=False
    )
    return profile, out


# ---------------------------------------------------------------------------- MACs


class _Twice(nn.Module):
    """Calls one Linear twice: each call must be counted."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.fc(x)))


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8·10·10 outputs × 3·3·3      = 21 600
        nn.BatchNorm2d(8),  # not counted
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise: 8·5·5 × 9 = 1 800
        nn.Conv2d(8, 4, 1, groups=2),  # grouped: 4·5·5 × 4          = 400
        nn.ConvTranspose2d(4, 6, 2, stride=2),  # 4·5·5 inputs × 6·2·2 = 2 400
        nn.AdaptiveAvgPool2d(2),  # not counted
        nn.Flatten(1),
        nn.Linear(24, 10),  # 24 × 10                                = 240
        _Twice(),  # 2 × 10 × 10                                     = 200
    )


def test_count_macs_matches_hand_computed_values():
    net = tiny_net()
    expected = 21_600 + 1_800 + 400 + 2_400 + 240 + 200
    assert count_macs(net, (3, 10, 10)) == expected
    # A 4-D shape is a whole batch.
    assert count_macs(net, (3, 3, 10, 10)) == 3 * expected
    assert count_macs(nn.Conv2d(16, 16, 3, padding=1, groups=16), (16, 7, 7)) == 16 * 49 * 9


def test_count_macs_runs_in_eval_mode_and_restores_modes():
    net = tiny_net().train()
    net[1].eval()  # a deliberately mixed state must survive
    bn = net[1]
    stats = bn.running_mean.clone()
    count_macs(net, (3, 10, 10))
    assert net.training and not bn.training
    assert all(m.training for i, m in enumerate(net) if i != 1)
    assert torch.equal(bn.running_mean, stats)
    assert not any(m._forward_hooks for m in net.modules())


def test_count_macs_of_resnet8_matches_hand_count():
    model = get_model("resnet8_cifar")
    assert count_macs(model.net, (3, 32, 32)) == RESNET8_TOTAL_MACS
    for point, expected in zip(model.split_points(), RESNET8_HEAD_MACS, strict=True):
        head, _ = split(model, point)
        assert count_macs(head, (3, 32, 32)) == expected


# ------------------------------------------------------------------------- backends


def test_export_onnx_names_dynamic_batch_and_restores_modes(tmp_path):
    model = get_model("resnet8_cifar").train()
    model.net.layer2[0].bn1.eval()
    head, _ = split(model, "layer2.0")
    path = tmp_path / "head.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        data = export_onnx(head, torch.randn(1, 3, 32, 32), path)
    assert path.read_bytes() == data
    graph = onnx.load_from_string(data).graph
    assert [v.name for v in graph.input] == ["input"]
    assert [v.name for v in graph.output] == ["output"]
    dims = graph.output[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 16, 16]
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)
    # Modes are restored module by module, including the one left in eval on purpose.
    assert not model.net.layer2[0].bn1.training
    others = [m for m in model.modules() if m is not model.net.layer2[0].bn1]
    assert all(m.training for m in others)


def test_torch_and_onnxruntime_agree_on_head_and_tail():
    model = get_model("resnet8_cifar")
    head, tail = split(model, "layer1.0")
    example = torch.randn(1, 3, 32, 32)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    heads = {kind: make_backend(kind, head, example) for kind in BACKENDS}
    assert {b.name for b in heads.values()} == set(BACKENDS)
    assert all(isinstance(b, Backend) for b in heads.values())
    ref = heads["torch"](x)
    # Batch 3 through a graph exported at batch 1: the batch axis is dynamic.
    got = heads["onnxruntime"](x)
    assert got.shape == ref.shape == (3, 16, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    with torch.no_grad():
        expected_logits = model.net(torch.from_numpy(x)).numpy()
    ort_tail = make_backend("onnxruntime", tail, torch.from_numpy(ref[:1]), threads=1)
    logits = ort_tail(got)
    np.testing.assert_allclose(
        logits, expected_logits, rtol=1e-4, atol=1e-4 * np.abs(expected_logits).max()
    )


def test_backends_accept_awkward_inputs_without_changing_results():
    model = get_model("resnet8_cifar")
    head, _ = split(model, "stem")
    torch_backend = TorchBackend(head)
    ort_backend = OrtBackend(export_onnx(head, torch.randn(1, 3, 32, 32)), intra_op_threads=1)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    read_only = np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)
    assert not read_only.flags.writeable
    variants = [x.astype(np.float64), np.asfortranarray(x), read_only]
    for backend in (torch_backend, ort_backend):
        ref = backend(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. torch's non-writable-array warning
            for variant in variants:
                np.testing.assert_array_equal(backend(variant), ref)


def test_make_backend_rejects_unknown_kinds():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorrt'.*'onnxruntime', 'torch'"):
        make_backend("tensorrt", nn.Identity(), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="intra_op_threads"):
        OrtBackend(export_onnx(nn.Conv2d(3, 3, 1), torch.zeros(1, 3, 4, 4)), intra_op_threads=0)


# -------------------------------------------------------------------------- profile


def test_profile_sizes_and_macs_are_consistent(profiled):
    profile, _ = profiled
    assert profile.model == "resnet8_cifar"
    assert profile.input_shape == (3, 32, 32)
    assert profile.backends == BACKENDS
    assert profile.torch_threads == 1 and profile.onnxruntime_threads == 1
    assert profile.onnxruntime_version and profile.torch_version == torch.__version__
    assert profile.machine["cpu_count"] >= 1
    assert [s.name for s in profile.splits] == ["stem", "layer1.0", "layer2.0", "layer3.0"]
    assert [s.shape for s in profile.splits] == [
        (16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)
    ]
    for s in profile.splits:
        assert s.bytes == math.prod(s.shape) * 4
    assert profile.input_bytes == 3 * 32 * 32 * 4
    macs = [s.head_macs for s in profile.splits]
    assert macs == RESNET8_HEAD_MACS
    assert all(a <= b for a, b in itertools.pairwise(macs))
    assert macs[-1] <= profile.total_macs == RESNET8_TOTAL_MACS


def test_profile_has_a_latency_per_part_and_backend(profiled):
    # Which parts and backends were timed, not how fast they ran: timings belong in bench/.
    profile, _ = profiled
    for entry in [profile.full, *(s.head for s in profile.splits),
                  *(s.tail for s in profile.splits)]:
        assert set(entry) == set(BACKENDS)
        for latency in entry.values():
            assert all(math.isfinite(v) for v in (latency.median_ms, latency.p90_ms,
                                                  latency.mean_ms))


def test_a_latency_summarises_its_samples():
    latency = Latency.from_samples_ns([1_000_000 * k for k in range(1, 11)])  # 1..10 ms
    assert latency == Latency(median_ms=5.5, p90_ms=pytest.approx(9.1), mean_ms=5.5)
    assert Latency.from_dict(latency.to_dict()) == latency
    assert Latency.from_dict({"median_ms": 2, "p90_ms": 3}).mean_ms is None  # older profiles


def test_profile_json_round_trip(profiled, tmp_path):
    profile, out = profiled
    data = json.loads(json.dumps(profile.to_dict()))
    assert ModelProfile.from_dict(data) == profile
    assert ModelProfile.load(out / "resnet8_cifar_profile.json") == profile
    profile.save(tmp_path / "again.json")
    assert ModelProfile.load(tmp_path / "again.json") == profile
    assert profile.split("layer2.0") == profile.split(3) == profile.splits[2]
    with pytest.raises(KeyError, match="layer9"):
        profile.split("layer9")
    data["schema"] = 99
    with pytest.raises(ValueError, match="schema"):
        ModelProfile.from_dict(data)


def test_profile_plot_and_table(profiled, tmp_path):
    profile, out = profiled
    assert (out / "resnet8_cifar_profile.png").stat().st_size > 0
    path = tmp_path / "fig.png"
    profile.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = profile.format_table()
    lines = table.splitlines()
    assert len(lines) == 3 + len(profile.splits) + 1
    for s, line in zip(profile.splits, lines[3:], strict=False):
        assert line.split()[:4] == [str(s.index), s.name, "x".join(map(str, s.shape)),
                                    f"{s.kb:.1f}"]
    for backend in BACKENDS:
        assert f"head {backend} ms" in lines[1] and f"tail {backend} ms" in lines[1]
    # Every row is as wide as the header: the columns line up.
    assert len({len(line) for line in lines[1:3]}) == 1


def test_profile_input_shape_override_single_backend_restores_state():
    model = get_model("resnet8_cifar").train()
    torch.set_num_threads(2)  # the fixture restores the original count afterwards
    profile = profile_model(
        model, backends=("torch",), repeats=1, warmup=0, progress=False, input_shape=(3, 16, 16),
        threads=1,
    )
    assert profile.input_shape == (3, 16, 16)
    assert [s.shape for s in profile.splits] == [(16, 16, 16), (16, 16, 16), (32, 8, 8),
                                                 (64, 4, 4)]
    # Convolution MACs scale with the feature-map area; the classifier's do not.
    assert [s.head_macs for s in profile.splits] == [m // 4 for m in RESNET8_HEAD_MACS]
    assert profile.total_macs == RESNET8_HEAD_MACS[-1] // 4 + 64 * 10
    assert profile.backends == ("torch",) and profile.onnxruntime_version is None
    assert set(profile.full) == {"torch"}
    assert profile.torch_threads == 1
    assert all(m.training for m in model.modules())
    # Including the stem/classifier wrappers that live outside the model's module tree.
    head, tail = split(model, "layer3.0")
    assert all(m.training for m in (*head.modules(), *tail.modules()))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"backends": ("tensorrt",)}, {"backends": ()}, {"repeats": 0}, {"batch": 0},
     {"threads": 0}, {"input_shape": (32, 32)}],
)
def test_profile_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        profile_model(get_model("resnet8_cifar"), progress=False, **kwargs)


class _InplaceRelu(nn.Module):
    """Starts a block by rewriting its input in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu_() * 2


def test_profile_times_the_right_graph_when_a_block_writes_its_input():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        _InplaceRelu(),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4, 2)),
    )
    blocks = [("conv", net[0]), ("act", net[1]), ("classifier", net[2])]
    model = SplittableModel("inplace", net, blocks, (3, 8, 8), 2)
    x = torch.randn(1, 3, 8, 8)
    # The whole-model graph exposes the rewritten tensor at the first boundary ...
    cut = OrtBackend(_OnnxParts([b for _, b in blocks], x).part(0, 1))
    with torch.no_grad():
        conv = net[0](x).numpy()
    assert not np.allclose(cut(x.numpy()), conv)
    # ... so the profile must fall back to a separate export, which its check verifies.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the exporter's in-place notice
        profile = profile_model(model, repeats=1, warmup=0, progress=False)
    assert [s.name for s in profile.splits] == ["conv", "act"]
