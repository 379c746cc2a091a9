"""Learned bottlenecks (BottleNet, Hu & K AE, AECNN, BBNet, rateless), the ``tanhq`` stage,
compression-aware training, the accuracy-aware search and bundle export.

Everything runs on resnet8_cifar with random weights and tiny synthetic data, one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from split_infer.bundle import Bundle, BundleError, part_components
from split_infer.codecs import get_codec
from split_infer.codecs.learned import CodecSTE, build_method, get_method, list_methods
from split_infer.codecs.learned import bbnet as bbnet_module
from split_infer.codecs.learned.bbnet import tanh_quantize
from split_infer.data import ArrayDataset, Preprocessing
from split_infer.models import get_model, save_weights, split
from split_infer.pipeline.engine import CloudEngine, EdgeEngine
from split_infer.pipeline.evaluate import evaluate_bundle
from split_infer.training import learned
from split_infer.training.datasets import load_dataset
from split_infer.training.learned import LearnedTrainConfig, SplitData, train_bundle
from split_infer.training.learned import runs as learned_runs
from split_infer.wire import pack, unpack

METHODS = ["aecnn", "bbnet", "bottlenet", "hu_ae", "rateless"]


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def synthetic(n: int, classes: int = 10, seed: int = 0) -> ArrayDataset:
    """Images whose mean colour encodes the class (separable), with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = (labels[:, None] * (200 // max(classes - 1, 1))).astype(np.float64)
    images = base[:, None, None, :] + rng.normal(0, 12, (n, 32, 32, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    return ArrayDataset("synthetic", images, labels.astype(np.int64),
                        [f"c{i}" for i in range(classes)], Preprocessing())


# ------------------------------------------------------------------------------ tanhq


def test_tanhq_round_trip_and_wire_frame_has_no_min_max():
    codec = get_codec("tanhq:bits=8")
    assert codec.codec_id >> 8 == 4 and not codec.needs_calibration
    rng = np.random.default_rng(0)
    x = np.tanh(rng.normal(0, 2, (6, 5, 7))).astype(np.float32)
    x[0, 0, :3] = [-1.0, 1.0, 0.0]
    enc = codec.compress(x)
    assert enc.params == b"\x00"  # cflags only: no min/max, no stage params at all
    assert len(enc.payload) == x.size  # one byte per element
    y = codec.decompress(enc.payload, enc.params, enc.shape)
    assert np.abs(y - x).max() <= 1 / 255 + 1e-6  # half a step of 2/(2^8 - 1)
    assert y[0, 0, 0] == -1.0 and y[0, 0, 1] == 1.0
    # V' = round((V + 1)(2^n − 1)/2), checked against the formula directly.
    symbols = codec.to_symbols(x)
    np.testing.assert_array_equal(symbols, np.rint((x + 1) * 255 / 2).astype(np.uint8))
    # Out-of-range inputs clip to the ends.
    z = codec.compress(np.array([[[-3.0, 5.0]]], np.float32))
    np.testing.assert_array_equal(codec.decompress(z.payload, z.params, z.shape), [[[-1, 1]]])
    frame, decoded = unpack(pack(codec, x, split_point=3, ratio=16.0, seq=1, stamp_ns=2),
                            lambda f: codec)
    assert frame.params == b"\x00"
    np.testing.assert_array_equal(decoded, y)


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_training_quantizer_equals_the_wire_stage(bits):
    codec = get_codec(f"tanhq:bits={bits}")
    v = torch.tanh(torch.randn(3, 4, 5, 5) * 2)
    wire = np.stack([codec.decompress(*_enc(codec, s.numpy())) for s in v])
    np.testing.assert_array_equal(tanh_quantize(v, bits).numpy(), wire)


def _enc(codec, x):
    e = codec.compress(x)
    return e.payload, e.params, e.shape


# ------------------------------------------------------------------------ registry/shape


def test_registry_lists_the_five_methods():
    assert list_methods() == METHODS
    with pytest.raises(KeyError, match="registered"):
        get_method("nope")
    with pytest.raises(ValueError, match="supports ratios"):
        build_method("hu_ae", (16, 8, 8), 3)
    assert get_method("bbnet").wire_codec.startswith("tanhq")
    assert get_method("rateless").rateless


def _feature_shapes(model_name: str = "resnet8_cifar") -> list[tuple[int, int, int]]:
    model = get_model(model_name)
    shapes = []
    for point in (2, 3):  # layer1.0 (16×32×32) and layer2.0 (32×16×16)
        head, _ = split(model, point)
        with torch.no_grad():
            shapes.append(tuple(head(torch.zeros(1, 3, 32, 32)).shape[1:]))
    return shapes


@pytest.mark.parametrize("method", METHODS)
def test_shape_round_trip_through_the_wire_codec(method):
    spec = get_method(method)
    rng = np.random.default_rng(1)
    for shape in _feature_shapes():
        features = torch.from_numpy(np.maximum(rng.normal(0.2, 1, (8, *shape)), 0)
                                    .astype(np.float32))
        for ratio in spec.default_ratios:
            pair = spec.build(shape, ratio).eval()
            with torch.no_grad():
                codes = pair.encoder(features)
            keep = pair.keep_channels(ratio) if spec.rateless else None
            sent = codes if keep is None else codes[:, :keep]
            codec = get_codec(pair.wire_codec).calibrate(sent.numpy())
            received = torch.from_numpy(np.stack(
                [codec.decompress(*_enc(codec, s)) for s in sent.numpy()]))
            assert received.shape == sent.shape
            with torch.no_grad():
                if spec.rateless:
                    full = torch.cat([received, codes[:, keep:]], 1)
                    out = pair.decoder(pair.fill(full, keep))
                else:
                    out = pair.decoder(received)
            assert tuple(out.shape) == (8, *shape), (method, shape, ratio)
            if spec.rateless or method == "aecnn":
                # C/k channels of the full size, at least one channel.
                assert sent.shape[1:] == (max(1, round(shape[0] / ratio)), *shape[1:])
            else:
                # The code really is C·H·W / ratio elements (Hu & K exactly γ).
                assert pair.element_ratio == pytest.approx(ratio, rel=0.35)


def test_hu_ae_follows_table_i():
    for gamma, (layers, code) in {2: (1, (32, 8, 8)), 4: (2, (16, 8, 8)),
                                  8: (2, (32, 4, 4))}.items():
        pair = build_method("hu_ae", (16, 16, 16), gamma)
        assert len(pair.encoder) == layers and len(pair.decoder) == layers + 1  # + ReLU
        assert pair.code_shape == code and pair.element_ratio == gamma
        depthwise = [m for m in pair.modules() if isinstance(m, (torch.nn.Conv2d,
                     torch.nn.ConvTranspose2d)) and m.groups > 1]
        assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in depthwise)


# ------------------------------------------------------------------------------- STE


def test_codec_ste_forward_is_the_codec_and_backward_is_identity():
    ste = CodecSTE("quant:bits=2,per=channel+jpeg:quality=30")
    x = torch.rand(4, 3, 8, 8) * 3
    ste.calibrate(x)
    x.requires_grad_(True)
    y = ste(x)
    codec = ste.codec
    expected = np.stack([codec.decompress(*_enc(codec, s)) for s in x.detach().numpy()])
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    assert not torch.allclose(y, x)  # 2-bit + JPEG really is lossy
    weights = torch.randn_like(x)
    (y * weights).sum().backward()
    via_ste = x.grad.clone()
    x.grad = None
    (x * weights).sum().backward()  # the identity in place of the codec
    torch.testing.assert_close(via_ste, x.grad, rtol=0, atol=0)
    assert ste.frames_seen == 4 and ste.bytes_seen > 0


def test_adaptive_codec_ste_codes_each_frame_with_its_own_range():
    x = torch.rand(3, 4, 6, 6) * torch.tensor([1.0, 5.0, 50.0])[:, None, None, None]
    ste = CodecSTE("quant:bits=4,per=channel+raw", adaptive=True)
    y = ste(x)
    # BottleNet eq. (1): per-frame min/max, so a frame 50× larger is no more clipped.
    plain = get_codec("quant:bits=4,per=channel+raw")
    expected = np.stack([plain.decompress(*_enc(plain, s)) for s in x.numpy()])
    np.testing.assert_array_equal(y.numpy(), expected)
    assert (y.amax(dim=(1, 2, 3)) > 0.8 * x.amax(dim=(1, 2, 3))).all()
    # rANS needs a model: it is fitted to the batch being coded.
    ste = CodecSTE("quant:bits=4,per=channel+rans", adaptive=True)
    assert ste(x).shape == x.shape and ste.codec.calibrated


def test_codec_ste_gradient_reaches_the_encoder_like_identity():
    pair = build_method("bottlenet", (8, 8, 8), 4).eval()
    x = torch.rand(2, 8, 8, 8)
    ste = CodecSTE(pair.wire_codec)
    with torch.no_grad():
        ste.calibrate(pair.encoder(x))
        received = ste.roundtrip(pair.encoder(x))

    def encoder_grads(transmit):
        pair.zero_grad()
        pair.decoder(transmit(pair.encoder(x))).square().sum().backward()
        return [p.grad.clone() for p in pair.encoder.parameters()]

    # Same decoder input (the codec's output) both times; the identity's gradient is that of
    # c ↦ c + const, which is what BottleNet's backward pass uses (§2.2, Fig. 4).
    got = encoder_grads(ste)
    expected = encoder_grads(lambda c: c + (received - c).detach())
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in got)


# ----------------------------------------------------------------------- AECNN / BBNet


def test_aecnn_prune_keeps_the_top_channels_by_importance():
    pair = build_method("aecnn", (16, 4, 4), 4)
    importance = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.0, 0.5, 0.95, 0.2,
                               0.4, 0.05, 0.6, 0.7, 0.15, 0.25, 0.35, 0.45])
    kept = pair.prune(importance)
    assert kept.tolist() == sorted(torch.argsort(importance, descending=True)[:4].tolist())
    assert kept.tolist() == [1, 3, 6, 11]
    x = torch.randn(2, 16, 4, 4)
    pair.eval()
    with torch.no_grad():
        code = pair.encoder(x)
        out = pair.decoder(code)
    torch.testing.assert_close(code, x[:, kept])
    torch.testing.assert_close(out[:, kept], x[:, kept])  # received channels pass through
    assert out.shape == x.shape


def test_aecnn_attention_is_normalized_pooling_and_sigmoid():
    attention = build_method("aecnn", (6, 3, 3), 2).attention
    x = torch.randn(2, 6, 3, 3)
    a, m = x.mean((2, 3)), x.amax((2, 3))

    def norm(v):
        return (v - v.mean(1, keepdim=True)) / torch.sqrt(v.var(1, unbiased=False,
                                                                 keepdim=True) + 1e-5)

    torch.testing.assert_close(attention.weights(x), torch.sigmoid(norm(a) + norm(m)))


def test_bbnet_slimming_prunes_40_percent_of_bn_channels_by_gamma():
    model = get_model("resnet8_cifar")
    groups = bbnet_module.prunable_batchnorms(model)
    assert [g.name for g in groups] == ["layer1.0.bn1", "layer2.0.bn1", "layer3.0.bn1"]
    total = sum(g.bn.num_features for g in groups)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for g in groups:
            g.bn.weight.copy_(torch.from_numpy(rng.permutation(g.bn.num_features)
                                               .astype(np.float32) * rng.choice([-1, 1])))
            g.bn.running_var.uniform_(0.5, 2)
    gammas = torch.cat([g.bn.weight.abs() for g in groups])
    threshold = torch.sort(gammas).values[round(0.4 * total) - 1]
    masks = bbnet_module.slimming_masks(groups, 0.4)
    kept = torch.cat([masks[g.name] for g in groups])
    assert int((~kept).sum()) == round(0.4 * total)
    assert (gammas[~kept] <= threshold).all() and (gammas[kept] >= threshold).all()

    # Physically slimmed == the original with the pruned channels silenced.
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for g in groups:
            off = ~masks[g.name]
            g.bn.weight[off] = 0
            g.bn.bias[off] = 0
        expected = model(x)
    before = sum(p.numel() for p in model.parameters())
    widths = bbnet_module.slim_model(model, 0.4)
    assert sum(widths.values()) == int(kept.sum())
    assert sum(p.numel() for p in model.parameters()) < before
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_slimmed_weights_load_into_a_fresh_model(tmp_path):
    model = get_model("resnet8_cifar")
    widths = bbnet_module.slim_model(model, 0.4)
    path = tmp_path / "slim.safetensors"
    bbnet_module.save_slimmed_weights(model, widths, path)
    fresh = get_model("resnet8_cifar")
    assert bbnet_module.load_slimmed_weights(fresh, path) == widths
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


# ------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def split_data():
    torch.manual_seed(0)  # the backbone's random init, independent of test order
    model = get_model("resnet8_cifar", num_classes=2)
    settings = LearnedTrainConfig(epochs=1, batch_size=32, calibration_images=32, lr=3e-3)
    return SplitData(model, 3, synthetic(96, 2), synthetic(40, 2, seed=1), settings,
                     progress=False)


def _train_loss(data: SplitData, pair) -> float:
    pair.eval()
    with torch.no_grad():
        x = torch.from_numpy(data.train_x[0])
        y = torch.from_numpy(data.train_set.labels)
        return float(torch.nn.functional.cross_entropy(data.tail(pair(x)), y))


@pytest.mark.parametrize("method", ["bbnet", "hu_ae", "rateless"])
def test_training_reduces_the_loss(split_data, tmp_path, method):
    data = split_data
    data.settings.epochs, data.settings.batch_size = 4, 16
    try:
        # The same initialisation the trainer starts from: the builder is seeded the same way.
        torch.manual_seed(0)
        initial = get_method(method).build(data.feature_shape, 4, nonnegative=True)
        if method == "rateless":
            initial.init_pca(data.calib_x)
        before = _train_loss(data, initial)
        torch.manual_seed(0)
        trained = learned.train_config(data, method, None if method == "rateless" else 4,
                                       work_dir=tmp_path, ratios=[1, 4], progress=False)
        after = _train_loss(data, trained.bottleneck)
    finally:
        data.settings.epochs, data.settings.batch_size = 1, 32
    assert after < 0.8 * before, (before, after)
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("method", ["bbnet", "rateless"])
def test_feature_matching_warmup_runs_first_without_the_tail(split_data, tmp_path, method,
                                                             monkeypatch):
    """The warm-up epochs come first (after the rateless pair's PCA start), train only the
    pair (the tail never runs) and lower the feature-matching loss; the method's schedule
    follows in full."""
    data = split_data
    tail_calls = []
    hook = data.tail.register_forward_hook(lambda *a: tail_calls.append(1))
    data.settings.warmup_epochs, data.settings.batch_size = 3, 16
    stages_seen: list[str] = []
    real = learned_runs._run_epoch

    def recording(run, stage, optimizer, epoch):
        stages_seen.append(stage.name)
        before = len(tail_calls)
        loss = real(run, stage, optimizer, epoch)
        if stage.name == "feature-matching":
            assert len(tail_calls) == before, "the warm-up ran the tail"
        return loss

    monkeypatch.setattr(learned_runs, "_run_epoch", recording)
    try:
        torch.manual_seed(0)
        trained = learned.train_config(data, method, None if method == "rateless" else 4,
                                       work_dir=tmp_path, ratios=[1, 4], progress=False)
    finally:
        hook.remove()
        data.settings.warmup_epochs, data.settings.batch_size = 0, 32
    assert stages_seen == ["feature-matching"] * 3 + ["train"]
    warmup = [h["loss"] for h in trained.history if h["stage"] == "feature-matching"]
    assert len(warmup) == 3 and warmup[-1] < warmup[0], warmup


def test_teacher_logits_are_computed_once_and_match_the_tail(split_data):
    data = split_data
    data.settings.distill = 1.0
    try:
        x, _, are_features, teacher = next(data.train_batches(0))
        cached = data.train_teacher
        next(data.train_batches(1))
    finally:
        data.settings.distill = 0.0
        data.train_teacher = None
    assert are_features and teacher is not None
    assert data.train_teacher is None and cached is not None
    with torch.no_grad():
        torch.testing.assert_close(teacher, data.tail(x), rtol=1e-4, atol=1e-4)
    # Without distillation no logits are computed.
    assert next(data.train_batches(0))[3] is None


def test_search_resumes_and_skips_finished_configurations(split_data, tmp_path, monkeypatch):
    data = split_data
    data.settings.epochs = 2
    calls: list[int] = []
    real = learned_runs._run_epoch

    def counting(run, stage, optimizer, epoch, fail_at=None):
        calls.append(epoch)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(run, stage, optimizer, epoch)

    try:
        # Interrupt in the second epoch of the second configuration.
        monkeypatch.setattr(learned_runs, "_run_epoch",
                            lambda *a: counting(*a, fail_at=4))
        with pytest.raises(KeyboardInterrupt):
            learned.search_split(data, "bbnet", [2, 4], work_dir=tmp_path,
                                 reference_accuracy=0.0, threshold_points=100,
                                 progress=False)
        first = json.loads((tmp_path / "split3/bbnet/r2/progress.json").read_text())
        second = json.loads((tmp_path / "split3/bbnet/r4/progress.json").read_text())
        assert first["done"] and not second["done"] and second["epoch"] == 1
        calls.clear()
        monkeypatch.setattr(learned_runs, "_run_epoch", lambda *a: counting(*a))
        rows, _ = learned.search_split(data, "bbnet", [2, 4], work_dir=tmp_path,
                                       reference_accuracy=0.0, threshold_points=100,
                                       progress=False)
        assert calls == [1]  # only the missing epoch of ×4; ×2 is loaded, not retrained
        assert [r.ratio for r in rows] == [2, 4]
        assert rows[0].accuracy == first["result"]["accuracy"]
        calls.clear()
        learned.search_split(data, "bbnet", [2, 4], work_dir=tmp_path, reference_accuracy=0.0,
                             threshold_points=100, progress=False)
        assert calls == []
    finally:
        data.settings.epochs = 1


def test_search_stops_at_the_first_ratio_over_the_threshold(split_data, tmp_path):
    rows, _ = learned.search_split(split_data, "bbnet", [2, 4, 8], work_dir=tmp_path,
                                   reference_accuracy=150.0, threshold_points=2.0,
                                   progress=False)
    assert len(rows) == 1 and not rows[0].within


def test_aecnn_keeps_the_most_important_channels_after_attention_training(split_data,
                                                                           tmp_path):
    result = learned.train_config(split_data, "aecnn", 4, work_dir=tmp_path, progress=False)
    importance = torch.tensor(result.extra["importance"])
    assert importance.shape == (split_data.feature_shape[0],)
    assert ((importance > 0) & (importance < 1)).all()  # a mean of sigmoids
    keep = split_data.feature_shape[0] // 4
    top = sorted(torch.argsort(importance, descending=True)[:keep].tolist())
    assert result.extra["kept_channels"] == top
    assert "accuracy_pruned_only" in result.extra


# --------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("learned")
    for split_name, count in (("train", 6), ("test", 4)):
        data = synthetic(count * 10, seed=2 if split_name == "train" else 3)
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            folder = root / "data" / split_name / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    weights = root / "r8.safetensors"
    save_weights(get_model("resnet8_cifar"), weights)
    bundle = train_bundle(
        "resnet8_cifar", root / "bundle", methods=["baseline", *METHODS], weights=weights,
        dataset="folder", data_path=root / "data", split_points=[3],
        ratios={"bottlenet": [4], "hu_ae": [2], "bbnet": [8], "aecnn": [4],
                "rateless": [1, 2, 4]},
        epochs=1, keep="all", eval_images=20, search_images=20,
        settings=LearnedTrainConfig(batch_size=32, calibration_images=24),
        baseline_codecs=["quant:bits=8,per=channel+zstd"], profile_repeats=2,
        progress=False, work_dir=root / "work")
    return root, bundle


def test_export_writes_a_verified_bundle(exported):
    _, bundle = exported
    loaded = Bundle.load(bundle.path)  # sha256 of every file verified
    methods = {c.method for c in loaded.configurations}
    assert methods == {"baseline", *METHODS}
    rateless = [c for c in loaded.configurations if c.method == "rateless"]
    assert sorted(c.keep_channels for c in rateless) == [8, 16, 32]
    assert len({c.edge_onnx for c in rateless}) == 1 and len({c.cloud_onnx for c in rateless}) == 1
    fill = loaded.fill_values(rateless[0])
    assert fill is not None and fill.shape == (32,)
    learned_info = loaded.manifest["learned"]
    for config in loaded.configurations:
        assert config.accuracy is not None and config.bytes_per_frame > 0
        assert config.edge_ms and config.cloud_ms  # measured (durations, not compared)
        if config.method != "baseline":
            info = learned_info["configurations"][config.id]
            assert (loaded.path / info["weights"]).is_file()
            assert info["overhead"]["fraction"] > 0
    bbnet = next(c for c in loaded.configurations if c.method == "bbnet")
    assert bbnet.codec.startswith("tanhq:bits=8") and bbnet.calibration is None
    hu = next(c for c in loaded.configurations if c.method == "hu_ae")
    assert hu.feature_shape == (64, 8, 8)  # γ = 2: twice the channels at half the size
    # A frozen backbone is not copied: learned parts chain the tapped model's segments with
    # the bottleneck's own small files.
    head, encoder_file = part_components(hu.edge_onnx)
    decoder_file, tail = part_components(hu.cloud_onnx)
    assert head == (0, hu.split_point) and tail == (hu.split_point, None)
    assert encoder_file.endswith("_encoder.onnx") and decoder_file.endswith("_decoder.onnx")
    assert not [f for f in loaded.manifest["files"] if f.endswith(("_edge.onnx", "_cloud.onnx"))]
    # A tampered file is refused.
    onnx_file = loaded.path / decoder_file
    original = onnx_file.read_bytes()
    try:
        onnx_file.write_bytes(original + b"\0")
        with pytest.raises(BundleError, match="sha256"):
            Bundle.load(loaded.path)
    finally:
        onnx_file.write_bytes(original)


def test_eval_of_the_exported_bundle_reproduces_the_manifest(exported):
    root, bundle = exported
    test = load_dataset("folder", "test", root / "data").subset(20, seed=1)
    rows = {r["id"]: r for r in evaluate_bundle(bundle, test, progress=False)}
    for config in bundle.configurations:
        assert rows[config.id]["accuracy"] == pytest.approx(config.accuracy)
        assert rows[config.id]["bytes_per_frame"] == pytest.approx(config.bytes_per_frame)


def test_rateless_ratio_changes_per_frame_without_reload(exported):
    _, bundle = exported
    configs = sorted((c for c in bundle.configurations if c.method == "rateless"),
                     key=lambda c: c.keep_channels)
    edge = EdgeEngine.from_bundle(bundle, configs)
    cloud = CloudEngine.from_bundle(bundle, configs)
    part = edge.active.part
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    fill = bundle.fill_values(configs[0])
    # One frame per k, alternating, through the same engines (no reload in between).
    for seq, config in enumerate([*configs, configs[0], configs[-1]]):
        edge.activate(config.split_point, config.ratio)
        assert edge.active.part is part  # one edge model for every ratio
        frame, features = cloud.features(edge.encode(x, seq, 0))
        k = config.keep_channels
        assert frame.shape == (k, 16, 16) and frame.config == config.key
        assert features.shape == (1, 32, 16, 16)
        np.testing.assert_array_equal(features[0, k:], np.broadcast_to(
            fill[k:, None, None], (32 - k, 16, 16)))
        _, logits = cloud.decode(edge.encode(x, seq, 0))
        assert logits.shape == (1, 10)
    # Fewer channels, fewer bytes.
    sizes = [len(edge.encode(x, 0, 0, edge.activate(c.split_point, c.ratio)))
             for c in configs]
    assert sizes[0] < sizes[1] < sizes[2]
    ratios = [c.ratio for c in configs]
    assert ratios[0] > ratios[1] > ratios[2]


def test_torch_backend_rebuilds_every_part_from_safetensors(exported):
    """backend='torch' rebuilds head+encoder and decoder+tail of every configuration (all five
    methods and the baseline) from the bundle's safetensors; they compute what its ONNX parts
    compute."""
    _, bundle = exported
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    onnx_edge = EdgeEngine.from_bundle(bundle)
    torch_edge = EdgeEngine.from_bundle(bundle, backend="torch")
    onnx_cloud = CloudEngine.from_bundle(bundle)
    torch_cloud = CloudEngine.from_bundle(bundle, backend="torch")
    methods = set()
    for config in bundle.configurations:
        methods.add(config.method)
        onnx_part, torch_part = (e.activate(*config.key).part for e in (onnx_edge, torch_edge))
        assert torch_part.name == "torch" and onnx_part.name == "onnxruntime"
        code = onnx_part(x)
        np.testing.assert_allclose(torch_part(x), code, rtol=1e-3, atol=1e-4)
        # The edge part's whole output (a rateless config sends a prefix of it, and the cloud
        # part takes all channels once the rest is filled).
        routes = [c.route(*config.key).part for c in (onnx_cloud, torch_cloud)]
        np.testing.assert_allclose(routes[1](code), routes[0](code), rtol=1e-3, atol=1e-4)
    assert methods >= {"baseline", *METHODS}
    with pytest.raises(ValueError, match="unknown backend"):
        EdgeEngine.from_bundle(bundle, backend="tensorrt")


def test_search_table_and_selection_are_recorded(exported):
    _, bundle = exported
    info = bundle.manifest["learned"]
    assert info["threshold_points"] == 2.0 and info["keep"] == "all"
    tried = {(r["method"], r["ratio"]) for r in info["search"]}
    assert ("hu_ae", 2.0) in tried and ("rateless", 4.0) in tried
    assert set(info["selected"]) == {f"split3/{m}" for m in METHODS}
    assert Path(bundle.path.parent / "work" / "split3").is_dir()


def test_hu_ae_can_fine_tune_end_to_end_without_touching_the_shared_backbone(split_data,
                                                                              tmp_path):
    before = {k: v.clone() for k, v in split_data.model.net.state_dict().items()}
    result = learned.train_config(split_data, "hu_ae", 2, work_dir=tmp_path, progress=False,
                                  options={"freeze_backbone": False})
    assert result.net is not None  # its own backbone copy, trained with the AE (§IV-C c)
    tuned = result.net.net.state_dict()
    assert any(not torch.equal(tuned[k], before[k]) for k in before if k.endswith("weight"))
    for k, v in split_data.model.net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_slim_backbone_prunes_and_fine_tunes(tmp_path):
    model = get_model("resnet8_cifar", num_classes=2)
    initial = {k: v.clone() for k, v in model.net.state_dict().items()}
    settings = LearnedTrainConfig(batch_size=32)
    info = learned.slim_backbone(model, synthetic(64, 2), synthetic(32, 2, seed=1),
                                 fraction=0.4, settings=settings, work_dir=tmp_path,
                                 progress=False)
    assert sum(info["widths"].values()) == 112 - round(0.4 * 112)
    assert info["macs_after"] < info["macs_before"]
    assert sum(g.bn.num_features for g in bbnet_module.prunable_batchnorms(model)) == 67
    # A rerun loads the slimmed, fine-tuned weights instead of training again.
    fresh = get_model("resnet8_cifar", num_classes=2)
    fresh.net.load_state_dict(initial)  # the same backbone (weights are part of the run key)
    again = learned.slim_backbone(fresh, synthetic(64, 2), synthetic(32, 2, seed=1),
                                  fraction=0.4, settings=settings, work_dir=tmp_path,
                                  progress=False)
    assert again == info
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
