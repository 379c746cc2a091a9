"""Codec registry, spec strings, round-trip properties, calibration and rate of every stage."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from split_infer.codecs import (
    EXAMPLE_SPECS,
    LEARNED_STAGE_ID_BASE,
    Codec,
    Param,
    SymbolSpec,
    TensorStage,
    _api,
    codec_from_id,
    get_codec,
    is_registered_codec_id,
    list_codecs,
    parse_spec,
    register_byte_stage,
    register_tensor_stage,
)
from split_infer.codecs.bytestages import pack_symbols, unpack_symbols
from split_infer.codecs.entropy import empirical_entropy_bits
from split_infer.codecs.image import from_grey, mosaic_grid, tile, to_grey, untile
from split_infer.errors import ENCODE_ERROR_REASONS, FRAME_ERROR_REASONS, EncodeError, FrameError
from split_infer.tools.bench.codec_table import DEFAULT_BENCH_SPECS, benchmark_codecs

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes_3d = st.tuples(st.integers(1, 7), st.integers(1, 9), st.integers(1, 9))


def tensors(max_abs: float = 1e4) -> st.SearchStrategy[np.ndarray]:
    """Small (C, H, W) float32 tensors, including constants and sign changes."""
    bound = float(np.float32(max_abs))
    elements = st.floats(-bound, bound, width=32, allow_subnormal=False)
    return shapes_3d.flatmap(lambda s: hnp.arrays(np.float32, s, elements=elements))


def roundtrip(codec: Codec, x: np.ndarray) -> np.ndarray:
    enc = codec.compress(x)
    y = codec.decompress(enc.payload, enc.params, enc.shape)
    assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all()
    return y


def relu_features(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """ReLU'd Gaussian features with a different scale per channel, like a conv block output."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.2, 3.0, size=(1, shape[0]) + (1,) * (len(shape) - 1))
    return np.maximum(rng.normal(0.3, 1.0, size=(n, *shape)) * scale, 0).astype(np.float32)


def dynamic_bounds(params: bytes, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """lo/hi from uncalibrated quant params: cflags u8, then bits/per/mode, then f32 lo, hi."""
    assert params[0] == 0 and params[3] == 0  # uncalibrated codec, dynamic quant mode
    bounds = np.frombuffer(params, "<f4", offset=4)
    assert bounds.size == 2 * groups
    return bounds[:groups], bounds[groups:]


def assert_quant_error(x, y, lo, hi, bits):
    """|x - x̂| <= step/2 inside [lo, hi]; outside, at most the distance to it plus step/2."""
    step = (hi.astype(np.float64) - lo) / 2**bits
    x64 = x.astype(np.float64)
    outside = np.maximum(lo - x64, 0) + np.maximum(x64 - hi, 0)
    tol = 1e-6 * (np.abs(lo) + np.abs(hi) + np.abs(x64)) + 1e-30
    assert (np.abs(y - x64) <= step / 2 + outside + tol).all()


# ---------------------------------------------------------------------------------------
# Registry and spec strings
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "canonical", "codec_id"),
    [
        ("float32", "float32+raw", 0x0100),
        ("float16+zstd", "float16+zstd:level=3", 0x0201),
        ("quant:bits=8", "quant:bits=8,w=3.3,per=tensor+raw", 0x0300),
        (
            "quant:bits=4,w=3.3,per=channel+zstd:level=3",
            "quant:bits=4,w=3.3,per=channel+zstd:level=3",
            0x0301,
        ),
        ("QUANT : bits = 8 + LZ4", "quant:bits=8,w=3.3,per=tensor+lz4", 0x0302),
        ("quant:bits=6,per=neuron+rans", "quant:bits=6,w=3.3,per=neuron+rans", 0x0303),
        ("quant:bits=8+png", "quant:bits=8,w=3.3,per=tensor+png:level=3", 0x0304),
        ("quant:w=1e+1+jpeg:quality=75", "quant:bits=8,w=10,per=tensor+jpeg:quality=75", 0x0305),
    ],
)
def test_spec_canonical_form_and_codec_id(spec, canonical, codec_id):
    codec = get_codec(spec)
    assert codec.spec == canonical
    assert codec.codec_id == codec_id
    assert get_codec(codec.spec).spec == canonical  # canonical is a fixed point


@pytest.mark.parametrize("spec", list(EXAMPLE_SPECS) + list(DEFAULT_BENCH_SPECS))
def test_every_listed_spec_builds(spec):
    codec = get_codec(spec)
    assert is_registered_codec_id(codec.codec_id)
    assert get_codec(codec.spec).codec_id == codec.codec_id


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "non-empty"),
        ("nope", r"unknown tensor stage 'nope'.*float16.*quant"),
        ("quant+nope", r"unknown byte stage 'nope'.*jpeg.*zstd"),
        ("quant:foo=1", r"unknown parameter 'foo'.*bits"),
        ("quant:bits=9", r"quant:bits.*outside"),
        ("quant:bits=0", "outside"),
        ("quant:bits=x", "expected int"),
        ("quant:w=nan", "finite"),
        ("quant:per=row", r"not one of \['tensor', 'channel', 'neuron'\]"),
        ("quant:bits=4,bits=5", "given twice"),
        ("quant:bits", "expected k=v"),
        ("quant+zstd+lz4", "more than one"),
        ("float32:bits=8", "unknown parameter"),
        ("float32+png", "integer symbols"),
        ("float16+rans", "integer symbols"),
        ("quant+jpeg:quality=101", "outside"),
    ],
)
def test_bad_specs_raise_value_error_naming_the_choices(spec, match):
    with pytest.raises(ValueError, match=match):
        get_codec(spec)


def test_parse_spec_fills_defaults():
    assert parse_spec("quant:per=channel+zstd") == (
        "quant",
        {"bits": 8, "w": 3.3, "per": "channel"},
        "zstd",
        {"level": 3},
    )


def test_list_codecs_and_codec_from_id():
    listing = list_codecs()
    assert listing["tensor"][:3] == ["float32", "float16", "quant"]
    assert listing["byte"] == ["raw", "zstd", "lz4", "rans", "png", "jpeg", "jpeg_rgb"]
    assert listing["examples"] == list(EXAMPLE_SPECS)
    assert codec_from_id(0x0303).spec == "quant:bits=8,w=3.3,per=tensor+rans"
    assert not is_registered_codec_id(0x0007) and not is_registered_codec_id(0x0F00)
    with pytest.raises(ValueError, match="unknown codec id"):
        codec_from_id(0x0307)


def test_registry_rejects_duplicates_and_bad_ids(monkeypatch):
    monkeypatch.setattr(_api, "_TENSOR_STAGES", dict(_api._TENSOR_STAGES))
    monkeypatch.setattr(_api, "_TENSOR_IDS", dict(_api._TENSOR_IDS))

    class Dummy(TensorStage):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_tensor_stage("quant", 200)(Dummy)
    with pytest.raises(ValueError, match="taken by 'quant'"):
        register_tensor_stage("dummy", 3)(Dummy)
    with pytest.raises(ValueError, match="outside"):
        register_tensor_stage("dummy", 256)
    with pytest.raises(ValueError, match="must match"):
        register_byte_stage("Bad-Name", 9)
    with pytest.raises(TypeError, match="must subclass"):
        register_tensor_stage("dummy", 200)(int)


def test_a_learned_stage_can_register_and_travel_the_wire(monkeypatch):
    """Extension point: a stage with its own symbol shape and non-string constructor args."""
    from split_infer import wire

    monkeypatch.setattr(_api, "_TENSOR_STAGES", dict(_api._TENSOR_STAGES))
    monkeypatch.setattr(_api, "_TENSOR_IDS", dict(_api._TENSOR_IDS))

    @register_tensor_stage("evenchan", LEARNED_STAGE_ID_BASE + 1)
    class EvenChannels(TensorStage):
        """Sends the even channels; a context-supplied 'tail' rebuilds the rest."""

        PARAMS = {"gain": Param(float, 1.0, low=0.1, high=10)}  # noqa: RUF012

        def __init__(self, *, gain, restore):
            super().__init__(gain=gain)
            self.restore = restore

        @property
        def symbols(self):
            return SymbolSpec("float16")

        def check_shape(self, shape):
            return None if len(shape) == 3 and shape[0] % 2 == 0 else "needs even C"

        def symbol_shape(self, shape):
            return (shape[0] // 2, *shape[1:])

        def encode(self, x):
            return (x[::2] * self.params["gain"]).astype(np.float16), b""

        def decode(self, symbols, params, shape):
            return self.restore(symbols.astype(np.float32) / self.params["gain"])

    codec = get_codec("evenchan:gain=2+zstd", restore=lambda z: np.repeat(z, 2, axis=0))
    assert codec.codec_id == (17 << 8) | 1 and codec.spec == "evenchan:gain=2+zstd:level=3"
    x = np.repeat(np.arange(12, dtype=np.float32).reshape(3, 2, 2), 2, axis=0)
    assert codec.raw_payload_bytes(x.shape) == 3 * 2 * 2 * 2
    data = wire.pack(codec, x, split_point=1, ratio=2.0, seq=0, stamp_ns=0)
    frame, y = wire.unpack(data, {codec.codec_id: codec})
    assert frame.shape == (6, 2, 2)
    np.testing.assert_array_equal(y, x)
    with pytest.raises(EncodeError, match="even C"):
        codec.compress(np.zeros((3, 2, 2), np.float32))


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------


@FAST
@given(x=tensors(3e38), byte=st.sampled_from(["raw", "zstd", "lz4"]))
def test_float32_is_bit_exact(x, byte):
    y = roundtrip(get_codec(f"float32+{byte}"), x)
    np.testing.assert_array_equal(y.view(np.uint32), x.view(np.uint32))


@FAST
@given(x=tensors(6e4), byte=st.sampled_from(["raw", "zstd", "lz4"]))
def test_float16_relative_error(x, byte):
    y = roundtrip(get_codec(f"float16+{byte}"), x)
    # Half an ulp of fp16 (11-bit significand), or half the subnormal spacing near zero.
    bound = np.maximum(np.abs(x) * 2.0**-11, 2.0**-25)
    assert (np.abs(y - x) <= bound).all()


def test_float16_clips_to_the_finite_range():
    x = np.array([[[1e6, -1e6, 65504.0, 7e4]]], np.float32)
    y = roundtrip(get_codec("float16"), x)
    np.testing.assert_array_equal(y, [[[65504.0, -65504.0, 65504.0, 65504.0]]])


@FAST
@given(
    x=tensors(),
    bits=st.integers(1, 8),
    per=st.sampled_from(["tensor", "channel"]),
    byte=st.sampled_from(["raw", "zstd", "lz4", "png"]),
)
def test_dynamic_quant_error_and_lossless_byte_stages(x, bits, per, byte):
    """Uncalibrated quant: every element is within half a step; lossless stages match raw."""
    codec = get_codec(f"quant:bits={bits},per={per}+{byte}")
    enc = codec.compress(x)
    y = codec.decompress(enc.payload, enc.params, enc.shape)
    reference = roundtrip(get_codec(f"quant:bits={bits},per={per}"), x)
    np.testing.assert_array_equal(y, reference)
    groups = 1 if per == "tensor" else x.shape[0]
    lo, hi = dynamic_bounds(enc.params, groups)
    shape = (1, 1, 1) if per == "tensor" else (-1, 1, 1)
    lo, hi = lo.reshape(shape), hi.reshape(shape)
    assert (lo <= x).all() and (x <= hi).all()
    assert_quant_error(x, y, lo, hi, bits)


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=shapes_3d,
    bits=st.integers(1, 8),
    per=st.sampled_from(["tensor", "channel", "neuron"]),
    w=st.floats(0.5, 5),
    byte=st.sampled_from(["raw", "zstd", "lz4", "rans", "png"]),
)
def test_calibrated_quant_error_and_lossless_byte_stages(seed, shape, bits, per, w, byte):
    """Calibrated quant: half a step inside [μ−wσ, μ+wσ] ∩ observed range, clip outside."""
    feats = relu_features(6, shape, seed)
    codec = get_codec(f"quant:bits={bits},w={w},per={per}+{byte}").calibrate(feats[:5])
    x = feats[5] * 1.5  # new data, partly outside the calibrated interval
    y = roundtrip(codec, x)
    stage = codec.tensor
    lo = stage._broadcast(stage.lo, 3)
    hi = stage._broadcast(stage.hi, 3)
    assert_quant_error(x, y, lo, hi, bits)
    reference = get_codec(f"quant:bits={bits},w={w},per={per}")
    reference.load_state_dict(
        {k: v for k, v in codec.state_dict().items() if k.startswith("tensor.")}
    )
    np.testing.assert_array_equal(y, roundtrip(reference, x))


@FAST
@given(x=tensors(), bits=st.sampled_from([2, 4, 8]))
def test_jpeg_q95_error_is_bounded(x, bits):
    y = roundtrip(get_codec(f"quant:bits={bits}+jpeg:quality=95"), x)
    reference = roundtrip(get_codec(f"quant:bits={bits}"), x)
    lo, hi = float(x.min()), float(x.max())
    step = max(hi - lo, 1e-6 * max(1.0, abs(lo + hi) / 2)) / 2**bits
    grey_error = np.abs(y.astype(np.float64) - reference) / step * 255 / (2**bits - 1)
    assert grey_error.max() <= 16 + 1e-3
    assert grey_error.mean() <= 4


def test_jpeg_quality_trades_size_for_error():
    x = relu_features(1, (16, 12, 12), seed=3)[0]
    sizes, errors = [], []
    for quality in (95, 50, 10):
        codec = get_codec(f"quant:bits=8+jpeg:quality={quality}")
        sizes.append(len(codec.compress(x).payload))
        errors.append(float(np.mean((roundtrip(codec, x) - x) ** 2)))
    assert sizes[0] > sizes[1] > sizes[2]
    assert errors[0] < errors[1] < errors[2]
    assert not get_codec("quant+jpeg").lossless and get_codec("quant+png").lossless


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 7, 10, 16, 17, 64])
def test_mosaic_tiling(channels):
    rows, cols = mosaic_grid(channels)
    assert cols == math.ceil(math.sqrt(channels)) and rows == math.ceil(channels / cols)
    rng = np.random.default_rng(channels)
    sym = rng.integers(0, 256, (channels, 3, 5), dtype=np.uint8)
    image = tile(sym)
    assert image.shape == (rows * 3, cols * 5)
    # Channel k sits at grid cell (k // cols, k % cols); padding tiles are zero.
    k = channels - 1
    r, c = divmod(k, cols)
    np.testing.assert_array_equal(image[r * 3 : r * 3 + 3, c * 5 : c * 5 + 5], sym[k])
    assert image.sum() == sym.astype(np.int64).sum()
    np.testing.assert_array_equal(untile(image, sym.shape), sym)


@pytest.mark.parametrize("bits", range(1, 9))
def test_grey_level_map_round_trips(bits):
    levels = 2**bits
    q = np.arange(levels, dtype=np.uint8)
    grey = to_grey(q, levels)
    assert grey[0] == 0 and grey[-1] == 255 and (np.diff(grey.astype(int)) > 0).all()
    np.testing.assert_array_equal(from_grey(grey, levels), q)


@pytest.mark.parametrize("byte", ["png", "jpeg"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 3), (3, 4, 4), (5, 2, 9)])
def test_image_stages_handle_one_and_odd_channel_counts(byte, shape):
    x = relu_features(1, shape, seed=1)[0]
    y = roundtrip(get_codec(f"quant:bits=8+{byte}"), x)
    if byte == "png":
        np.testing.assert_array_equal(y, roundtrip(get_codec("quant:bits=8"), x))


def test_image_stages_need_three_dims():
    codec = get_codec("quant+png")
    with pytest.raises(EncodeError) as info:
        codec.compress(np.zeros((4, 4), np.float32))
    assert info.value.reason == "shape_mismatch"


# ---------------------------------------------------------------------------------------
# Raw bit packing
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 1001])
def test_bit_packing_size_and_round_trip(bits, count):
    spec = SymbolSpec("uint8", 2**bits)
    rng = np.random.default_rng(bits * count)
    sym = rng.integers(0, 2**bits, count, dtype=np.uint8)
    packed = pack_symbols(sym, spec)
    assert len(packed) == math.ceil(count * bits / 8) == spec.raw_nbytes((count,))
    np.testing.assert_array_equal(unpack_symbols(packed, count, spec), sym)


def test_packing_is_msb_first():
    spec = SymbolSpec("uint8", 16)
    assert pack_symbols(np.array([0x1, 0x2, 0xF], np.uint8), spec) == bytes([0x12, 0xF0])


@pytest.mark.parametrize(
    ("bits", "per_element"), [(8, 1.0), (6, 0.75), (4, 0.5), (2, 0.25), (1, 1 / 8)]
)
def test_raw_quant_payload_size(bits, per_element):
    x = relu_features(1, (4, 8, 8), seed=2)[0]
    enc = get_codec(f"quant:bits={bits}").compress(x)
    assert len(enc.payload) == x.size * per_element
    assert len(get_codec("float16").compress(x).payload) == 2 * x.size
    assert len(get_codec("float32").compress(x).payload) == 4 * x.size


# ---------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------


def test_per_tensor_calibration_matches_the_definition():
    feats = relu_features(32, (4, 5, 5), seed=4)
    codec = get_codec("quant:bits=8,w=2,per=tensor").calibrate(feats)
    stage = codec.tensor
    mean, std = feats.astype(np.float64).mean(), feats.astype(np.float64).std()
    np.testing.assert_allclose(stage.mean, [mean], rtol=1e-6)
    np.testing.assert_allclose(stage.std, [std], rtol=1e-6)
    # μ − 2σ < 0 after the ReLU, so the observed minimum (0) bounds the interval.
    np.testing.assert_allclose(stage.lo, [max(mean - 2 * std, 0.0)], atol=1e-6)
    np.testing.assert_allclose(stage.hi, [min(mean + 2 * std, feats.max())], rtol=1e-6)
    assert stage.lo[0] == 0.0


def test_per_channel_and_per_neuron_statistics_have_the_right_shape():
    feats = relu_features(16, (3, 4, 5), seed=5)
    channel = get_codec("quant:per=channel").calibrate(feats).tensor
    neuron = get_codec("quant:per=neuron").calibrate(feats).tensor
    assert channel.mean.shape == (3,) and neuron.mean.shape == (3, 4, 5)
    np.testing.assert_allclose(channel.mean, feats.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(neuron.std, feats.std(axis=0), rtol=1e-5, atol=1e-7)


def test_per_channel_beats_per_tensor_when_channel_scales_differ():
    rng = np.random.default_rng(6)
    scales = np.array([0.01, 0.1, 1.0, 10.0, 100.0], np.float32).reshape(1, 5, 1, 1)
    feats = (rng.normal(size=(40, 5, 6, 6)) * scales).astype(np.float32)
    calib, test = feats[:32], feats[32:]
    mse = {}
    for per in ("tensor", "channel"):
        codec = get_codec(f"quant:bits=4,per={per}").calibrate(calib)
        mse[per] = np.mean([np.mean((roundtrip(codec, x) - x) ** 2) for x in test])
    assert mse["channel"] < mse["tensor"] / 5


def test_per_neuron_beats_per_channel_when_neurons_differ():
    """The thesis's §2.1.3 setting: each neuron has its own mean within a channel."""
    rng = np.random.default_rng(7)
    means = rng.uniform(-20, 20, size=(1, 3, 4, 4)).astype(np.float32)
    feats = (means + rng.normal(size=(300, 3, 4, 4))).astype(np.float32)
    calib, test = feats[:280], feats[280:]
    mse = {}
    for per in ("channel", "neuron"):
        codec = get_codec(f"quant:bits=4,per={per}").calibrate(calib)
        mse[per] = np.mean([np.mean((roundtrip(codec, x) - x) ** 2) for x in test])
    assert mse["neuron"] < mse["channel"] / 10


def test_clip_width_sets_the_interval():
    feats = np.random.default_rng(8).normal(size=(64, 2, 8, 8)).astype(np.float32)
    narrow = get_codec("quant:w=1").calibrate(feats).tensor
    wide = get_codec("quant:w=3").calibrate(feats).tensor
    np.testing.assert_allclose(narrow.hi - narrow.lo, 2 * narrow.std, rtol=1e-5)
    np.testing.assert_allclose(wide.hi - wide.lo, 6 * wide.std, rtol=1e-5)
    x = np.full((2, 8, 8), 2.5, np.float32)  # outside μ + σ: clipped to the top bin
    y = roundtrip(get_codec("quant:w=1").calibrate(feats), x)
    step = (narrow.hi[0] - narrow.lo[0]) / 256
    np.testing.assert_allclose(y, narrow.hi[0] - step / 2, rtol=1e-6)


def test_constant_calibration_data_does_not_divide_by_zero():
    feats = np.zeros((4, 2, 3, 3), np.float32)
    feats[:, 1] = 5.0  # channel 0 is a dead ReLU, channel 1 a constant
    for per in ("channel", "neuron"):
        codec = get_codec(f"quant:bits=4,per={per}+rans").calibrate(feats)
        np.testing.assert_allclose(roundtrip(codec, feats[0]), feats[0], atol=1e-4)
    # One interval [0, 5] for both channels: both constants land within half a step.
    codec = get_codec("quant:bits=4,per=tensor+rans").calibrate(feats)
    np.testing.assert_allclose(roundtrip(codec, feats[0]), feats[0], atol=5 / 16 / 2 + 1e-6)


# ---------------------------------------------------------------------------------------
# rANS
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "per"), [(8, "channel"), (4, "tensor"), (2, "channel")])
def test_rans_is_within_two_percent_of_the_empirical_entropy(bits, per):
    feats = relu_features(33, (64, 28, 28), seed=9)  # 50k elements per frame
    codec = get_codec(f"quant:bits={bits},per={per}+rans").calibrate(feats[:32])
    x = feats[32]
    payload_bits = 8 * len(codec.compress(x).payload)
    entropy_bits = empirical_entropy_bits(codec.to_symbols(x), 2**bits) * x.size
    assert entropy_bits * 0.9 < payload_bits <= 1.02 * entropy_bits
    raw_bits = 8 * len(get_codec(f"quant:bits={bits},per={per}").compress(x).payload)
    assert payload_bits < raw_bits


def test_rans_codes_symbols_never_seen_in_calibration():
    # Calibration only ever sees ±1, i.e. the two outermost of 64 levels.
    feats = np.where(np.random.default_rng(10).random((8, 4, 6, 6)) < 0.5, -1, 1)
    codec = get_codec("quant:bits=6,w=0.5+rans").calibrate(feats.astype(np.float32))
    counts = codec.byte.counts
    assert (counts[1:-1] == 1).all() and counts[0] > 1 and counts[-1] > 1  # Laplace +1
    x = np.linspace(-0.55, 0.55, 144, dtype=np.float32).reshape(4, 6, 6)  # every level
    assert len(np.unique(codec.to_symbols(x))) == 64
    reference = get_codec("quant:bits=6,w=0.5")
    reference.load_state_dict({k: v for k, v in codec.state_dict().items() if k != "byte.counts"})
    np.testing.assert_array_equal(roundtrip(codec, x), roundtrip(reference, x))


# ---------------------------------------------------------------------------------------
# Calibration state, fingerprints and mismatches
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", ["quant:bits=4,per=channel+rans", "quant:bits=6,per=neuron+zstd", "quant+png"]
)
def test_state_dict_round_trip_through_safetensors(spec, tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    feats = relu_features(8, (4, 6, 6), seed=11)
    encoder = get_codec(spec).calibrate(feats)
    state = encoder.state_dict()
    assert state and all(isinstance(v, np.ndarray) for v in state.values())
    safetensors_numpy.save_file(state, tmp_path / "codec.safetensors")
    decoder = get_codec(spec)
    decoder.load_state_dict(safetensors_numpy.load_file(tmp_path / "codec.safetensors"))
    assert decoder.calibrated and decoder.fingerprint() == encoder.fingerprint()
    assert 0 <= encoder.fingerprint() < 2**32
    enc = encoder.compress(feats[0])
    np.testing.assert_array_equal(
        decoder.decompress(enc.payload, enc.params, enc.shape), roundtrip(encoder, feats[0])
    )
    assert len(enc.params) == 1 + 4 + 3  # cflags, fingerprint, bits/per/mode: no bounds


def test_decoder_with_other_calibration_rejects_the_frame():
    feats = relu_features(16, (4, 6, 6), seed=12)
    encoder = get_codec("quant:bits=4,per=channel+zstd").calibrate(feats[:8])
    other = get_codec("quant:bits=4,per=channel+zstd").calibrate(feats[8:])
    assert other.fingerprint() != encoder.fingerprint()
    enc = encoder.compress(feats[0])

    def reason(decoder):
        with pytest.raises(FrameError) as info:
            decoder.decompress(enc.payload, enc.params, enc.shape)
        return info.value.reason

    assert reason(other) == "bad_params"
    assert reason(get_codec("quant:bits=4,per=channel+zstd")) == "not_calibrated"
    # Same calibration, different bit width: the fingerprint covers the tensor-stage spec.
    assert reason(get_codec("quant:bits=2,per=channel+zstd").calibrate(feats[:8])) == "bad_params"
    # A calibrated decoder refuses a dynamic (uncalibrated) frame, and vice versa for bits.
    dynamic = get_codec("quant:bits=4,per=channel+zstd").compress(feats[0])
    with pytest.raises(FrameError, match="without calibration"):
        encoder.decompress(dynamic.payload, dynamic.params, dynamic.shape)
    with pytest.raises(FrameError) as info:
        get_codec("quant:bits=8,per=channel+zstd").decompress(
            dynamic.payload, dynamic.params, dynamic.shape
        )
    assert info.value.reason == "bad_params"


def test_fingerprint_ignores_decoding_irrelevant_parameters():
    feats = relu_features(4, (2, 4, 4), seed=13)
    a = get_codec("quant:bits=8+zstd:level=1").calibrate(feats)
    b = get_codec("quant:bits=8+zstd:level=19").calibrate(feats)
    assert a.fingerprint() == b.fingerprint()
    enc = a.compress(feats[0])
    np.testing.assert_array_equal(
        b.decompress(enc.payload, enc.params, enc.shape), roundtrip(a, feats[0])
    )


def test_load_state_dict_validates():
    feats = relu_features(4, (2, 4, 4), seed=14)
    state = get_codec("quant:per=channel+rans").calibrate(feats).state_dict()
    assert set(state) == {"tensor.mean", "tensor.std", "tensor.lo", "tensor.hi", "byte.counts"}
    bad_cases = [
        {**state, "tensor.extra": np.zeros(2)},
        {**state, "junk": np.zeros(2)},
        {**state, "tensor.hi": state["tensor.lo"] - 1},
        {**state, "tensor.lo": np.full(2, np.nan, np.float32)},
        {**state, "byte.counts": np.zeros(256, np.int64)},
        {**state, "tensor.mean": np.zeros(3, np.float32)},
        {**state, "tensor.lo": np.zeros((2, 1), np.float32)},
        {k: v for k, v in state.items() if k != "tensor.std"},
    ]
    for bad in bad_cases:
        with pytest.raises(ValueError):
            get_codec("quant:per=channel+rans").load_state_dict(bad)
    with pytest.raises(ValueError, match="stateless"):
        get_codec("float32").load_state_dict({"tensor.lo": np.zeros(1)})
    fresh = get_codec("quant:per=channel+rans")
    fresh.load_state_dict(state)
    fresh.load_state_dict({})
    assert not fresh.calibrated


def test_calibrated_shape_is_enforced():
    feats = relu_features(4, (3, 4, 4), seed=15)
    codec = get_codec("quant:per=channel").calibrate(feats)
    assert codec.shape == (3, 4, 4)
    with pytest.raises(EncodeError) as info:
        codec.compress(np.zeros((2, 4, 4), np.float32))
    assert info.value.reason == "shape_mismatch"
    enc = codec.compress(feats[0])
    with pytest.raises(FrameError) as frame_info:
        codec.decompress(enc.payload, enc.params, (3, 4, 5))
    assert frame_info.value.reason == "shape_mismatch"
    with pytest.raises(EncodeError):
        codec.calibrate(relu_features(4, (3, 5, 4)))


# ---------------------------------------------------------------------------------------
# Encoder-side input errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "reason"),
    [
        (np.array([[[np.nan, 1.0]]], np.float32), "nonfinite"),
        (np.array([[[np.inf, 1.0]]], np.float32), "nonfinite"),
        (np.array([[[1e300, 1.0]]], np.float64), "nonfinite"),
        (np.zeros((1, 1, 1, 1, 1), np.float32), "bad_shape"),
        (np.float32(1.0), "bad_shape"),
        (np.zeros((0, 3, 3), np.float32), "bad_shape"),
        (np.array([["a"]]), "bad_dtype"),
        (np.zeros((1, 2, 2), np.complex64), "bad_dtype"),
    ],
)
def test_bad_encoder_input_raises_encode_error(x, reason):
    for spec in ("float32", "quant:bits=4+zstd"):
        with pytest.raises(EncodeError) as info:
            get_codec(spec).compress(x)
        assert info.value.reason == reason
        assert reason in ENCODE_ERROR_REASONS


def test_codecs_that_need_calibration_refuse_to_encode_without_it():
    x = np.zeros((2, 3, 3), np.float32)
    for spec in ("quant:per=neuron", "quant+rans"):
        codec = get_codec(spec)
        assert codec.needs_calibration and not codec.calibrated
        with pytest.raises(EncodeError) as info:
            codec.compress(x)
        assert info.value.reason == "not_calibrated"
    assert not get_codec("quant:per=channel").needs_calibration
    with pytest.raises(EncodeError) as info:
        get_codec("quant").calibrate(np.full((2, 2, 3, 3), np.nan, np.float32))
    assert info.value.reason == "nonfinite"


def test_integer_and_float16_inputs_are_accepted():
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    np.testing.assert_array_equal(roundtrip(get_codec("float32"), x), x)
    enc = get_codec("float16").compress(x.astype(np.float16))
    assert enc.dtype == "float16"


# ---------------------------------------------------------------------------------------
# Decoder-side param tampering (the payload/frame-level suite lives in test_wire.py)
# ---------------------------------------------------------------------------------------


def _with_bounds(enc, lo: float, hi: float) -> bytes:
    return enc.params[:4] + struct.pack("<ff", lo, hi)


@pytest.mark.parametrize(
    ("lo", "hi", "reason"),
    [(float("nan"), 1.0, "nonfinite"), (0.0, float("inf"), "nonfinite"), (2.0, 1.0, "bad_params")],
)
def test_dynamic_quant_params_are_validated(lo, hi, reason):
    codec = get_codec("quant:bits=8")
    enc = codec.compress(np.ones((2, 2, 2), np.float32))
    with pytest.raises(FrameError) as info:
        codec.decompress(enc.payload, _with_bounds(enc, lo, hi), enc.shape)
    assert info.value.reason == reason


def test_extreme_but_finite_params_cannot_produce_inf():
    codec = get_codec("quant:bits=8")
    enc = codec.compress(np.ones((2, 2, 2), np.float32))
    params = _with_bounds(enc, -3.4e38, 3.4e38)
    y = codec.decompress(b"\xff" * 8, params, enc.shape)
    assert np.isfinite(y).all()
    with pytest.raises(FrameError):
        codec.decompress(b"\xff" * 8, enc.params[:-1], enc.shape)
    with pytest.raises(FrameError):
        codec.decompress(b"\xff" * 8, b"\x02" + enc.params[1:], enc.shape)


def test_png_decoder_checks_declared_size_before_decoding():
    codec = get_codec("quant:bits=8+png")
    enc = codec.compress(np.ones((4, 8, 8), np.float32))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    huge = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )
    assert len(huge) < 1024
    with pytest.raises(FrameError) as info:
        codec.decompress(huge, enc.params, enc.shape)
    assert info.value.reason == "shape_mismatch"
    with pytest.raises(FrameError) as info:
        codec.decompress(enc.payload, enc.params, (2, 8, 8))  # a 8x16 mosaic, not 16x16
    assert info.value.reason == "shape_mismatch"


def test_jpeg_decoder_checks_declared_size_before_decoding():
    codec = get_codec("quant:bits=8+jpeg")
    small = codec.compress(np.ones((1, 8, 8), np.float32))
    big = codec.compress(np.ones((4, 8, 8), np.float32))
    with pytest.raises(FrameError) as info:
        codec.decompress(small.payload, big.params, big.shape)
    assert info.value.reason == "shape_mismatch"
    import cv2

    ok, progressive = cv2.imencode(
        ".jpg", np.zeros((16, 16), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    )
    assert ok
    forged = [progressive.tobytes(), b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02"]
    for payload in [*forged, b"\xff\xd8\xff\xc0\x00\x01"]:
        with pytest.raises(FrameError) as info:
            codec.decompress(payload, big.params, big.shape)
        assert info.value.reason == "corrupt_payload"


def test_png_rejects_grey_values_outside_the_level_map():
    import cv2

    codec = get_codec("quant:bits=2+png")
    enc = codec.compress(np.arange(4, dtype=np.float32).reshape(1, 2, 2))
    ok, forged = cv2.imencode(".png", np.full((2, 2), 7, np.uint8))
    assert ok
    with pytest.raises(FrameError) as info:
        codec.decompress(forged.tobytes(), enc.params, enc.shape)
    assert info.value.reason == "symbol_range"


def test_frame_error_carries_a_documented_reason():
    err = FrameError("crc_mismatch", "details")
    assert isinstance(err, ValueError) and str(err) == "crc_mismatch: details"
    assert err.reason in FRAME_ERROR_REASONS
    import copy

    # deepcopy goes through __reduce_ex__, as pickling between processes does.
    assert copy.deepcopy(err).reason == "crc_mismatch"


# ---------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------


def test_benchmark_reports_real_frame_sizes():
    from split_infer import wire

    feats = relu_features(10, (8, 6, 6), seed=16)
    specs = ["float32", "quant:bits=4,per=channel+rans", "quant:bits=8+jpeg:quality=50"]
    rows = benchmark_codecs(feats[:6], feats[6:], specs, repeats=2, progress=False)
    assert [r["spec"] for r in rows] == [get_codec(s).spec for s in specs]
    f32, rans, jpeg = rows
    header = len(
        wire.pack(get_codec("float32"), feats[6], split_point=0, ratio=1, seq=0, stamp_ns=0)
    )
    assert f32["bytes_per_frame"] == header and f32["payload_bytes"] == 4 * 288
    assert f32["mse"] == 0 and f32["max_abs_err"] == 0 and f32["empirical_entropy_bits"] is None
    assert f32["ratio"] == pytest.approx(4 * 288 / header)
    assert rans["bytes_per_frame"] > rans["payload_bytes"]
    assert rans["bits_per_symbol"] == pytest.approx(rans["payload_bytes"] * 8 / 288)
    assert 0 < rans["empirical_entropy_bits"] <= 4
    assert jpeg["mse"] > 0 and not jpeg["lossless"]
    for row in rows:
        assert row["encode_ms"] and row["decode_ms"]  # measured (durations, not compared)
    flat = benchmark_codecs(feats[:6, :, 0, 0], feats[6:, :, 0, 0], ["quant+png"], progress=False)
    assert "error" in flat[0]
