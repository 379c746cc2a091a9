"""Wire frame: layout, round trips, and a malformed-input suite where only FrameError escapes."""

from __future__ import annotations

import resource
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from split_infer.codecs import get_codec
from split_infer.errors import FRAME_ERROR_REASONS, EncodeError, FrameError
from split_infer.wire import (
    MAGIC,
    Frame,
    decode_frame,
    encode_frame,
    format_string,
    pack,
    parse_format,
    unpack,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One codec per byte stage (and both float tensor stages); calibrated where it matters.
SPECS = [
    "float32",
    "float16+lz4",
    "quant:bits=4,per=channel+zstd",
    "quant:bits=8+lz4",
    "quant:bits=6,per=neuron+rans",
    "quant:bits=3+raw",
    "quant:bits=8,per=channel+png",
    "quant:bits=8+jpeg:quality=75",
]
SHAPE = (5, 6, 7)


def _features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(0.2, 1.0, size=(n, *SHAPE)), 0).astype(np.float32)


@pytest.fixture(scope="module")
def codecs():
    """codec_id -> calibrated codec, for every spec in SPECS."""
    feats = _features(8)
    return {spec: get_codec(spec).calibrate(feats) for spec in SPECS}


@pytest.fixture(scope="module")
def frames(codecs):
    """spec -> (packed frame bytes, original tensor)."""
    x = _features(1, seed=1)[0]
    return {
        spec: (pack(codec, x, split_point=3, ratio=0.25, seq=41, stamp_ns=-5), x)
        for spec, codec in codecs.items()
    }


def _with_crc(body: bytes) -> bytes:
    """Re-seal a (mutated) frame so the checks behind the CRC are exercised too."""
    return body + struct.pack("<I", zlib.crc32(body))


def _reason(data, decoders=None, **kwargs) -> str:
    with pytest.raises(FrameError) as info:
        if decoders is None:
            decode_frame(data, **kwargs)
        else:
            unpack(data, decoders, **kwargs)
    assert info.value.reason in FRAME_ERROR_REASONS
    return info.value.reason


# ---------------------------------------------------------------------------------------
# Round trips and layout
# ---------------------------------------------------------------------------------------


def test_frame_round_trip_and_documented_layout():
    frame = Frame(
        codec_id=0x0301,
        shape=(2, 3, 4),
        payload=b"payload",
        params=b"\x00abc",
        dtype="float16",
        split_point=7,
        ratio=0.1,
        seq=2**64 - 1,
        stamp_ns=-(2**63),
        flags=0xA5,
    )
    data = encode_frame(frame)
    assert decode_frame(data) == frame
    assert decode_frame(bytearray(data)) == frame
    assert decode_frame(memoryview(data)) == frame
    assert decode_frame(np.frombuffer(data, np.uint8)) == frame
    # ratio is kept at wire (float32) precision so configuration ids compare equal.
    assert frame.config == (7, float(np.float32(0.1))) == decode_frame(data).config
    # The offsets in wire.py's docstring table.
    assert data[0:4] == MAGIC == b"SPIF" and data[4] == 1 and data[5] == 0xA5
    assert struct.unpack_from("<HHf", data, 6) == (0x0301, 7, np.float32(0.1))
    assert struct.unpack_from("<Qq", data, 14) == (2**64 - 1, -(2**63))
    assert data[30] == 2 and data[31] == 3
    assert struct.unpack_from("<3I", data, 32) == (2, 3, 4)
    assert struct.unpack_from("<HI", data, 44) == (4, 7)
    assert data[50:54] == b"\x00abc" and data[54:61] == b"payload"
    assert struct.unpack_from("<I", data, 61)[0] == zlib.crc32(data[:61])
    assert len(data) == 65


@pytest.mark.parametrize("spec", SPECS)
def test_pack_unpack_every_codec(spec, codecs, frames):
    data, x = frames[spec]
    codec = codecs[spec]
    frame, y = unpack(data, {codec.codec_id: codec})
    assert (frame.codec_id, frame.shape, frame.dtype) == (codec.codec_id, SHAPE, "float32")
    assert (frame.split_point, frame.ratio, frame.seq, frame.stamp_ns) == (3, 0.25, 41, -5)
    assert y.dtype == np.float32 and y.shape == SHAPE and np.isfinite(y).all()
    expected = codec.compress(x)
    np.testing.assert_array_equal(y, codec.decompress(expected.payload, expected.params, SHAPE))
    # Resolve by configuration instead of by id.
    _, y2 = unpack(data, lambda f: codec if f.config == (3, 0.25) else None)
    np.testing.assert_array_equal(y, y2)


def test_unpack_restores_the_sent_dtype():
    codec = get_codec("float16")
    x = np.linspace(-3, 3, 24, dtype=np.float16).reshape(2, 3, 4)
    frame, y = unpack(pack(codec, x, split_point=0, ratio=1, seq=0, stamp_ns=0), {0x0200: codec})
    assert frame.dtype == "float16" and y.dtype == np.float16
    np.testing.assert_array_equal(y, x)


def test_format_string_round_trip():
    spec = "quant:bits=4,w=3.3,per=channel+zstd:level=3"
    assert format_string(spec) == f"split_infer/1; {spec}"
    assert parse_format(format_string(spec)) == spec
    assert parse_format("split_infer/1;float32+raw") == "float32+raw"
    assert parse_format(format_string(spec, version=2)) == spec  # authenticated frames
    for text, reason in [
        ("jpeg", "bad_format"),
        ("split_infer/1", "bad_format"),
        ("split_infer/1; ", "bad_format"),
        ("split_infer/3; float32", "bad_version"),
        (None, "bad_format"),
    ]:
        with pytest.raises(FrameError) as info:
            parse_format(text)
        assert info.value.reason == reason


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"codec_id": 0x0F00}, "bad_field"),
        ({"split_point": 70000}, "bad_field"),
        ({"ratio": float("nan")}, "bad_field"),
        ({"ratio": 0.0}, "bad_field"),
        ({"ratio": 1e39}, "bad_field"),  # inf once stored as float32
        ({"seq": -1}, "bad_field"),
        ({"stamp_ns": 2**63}, "bad_field"),
        ({"flags": 256}, "bad_field"),
        ({"dtype": "int8"}, "bad_field"),
        ({"shape": ()}, "bad_shape"),
        ({"shape": (1, 1, 1, 1, 1)}, "bad_shape"),
        ({"shape": (0, 3)}, "bad_shape"),
        ({"params": bytes(70000)}, "too_large"),
    ],
)
def test_encode_frame_rejects_fields_that_do_not_fit(kwargs, reason):
    fields = {"codec_id": 0x0100, "shape": (1,), "payload": bytes(4), **kwargs}
    with pytest.raises(EncodeError) as info:
        encode_frame(Frame(**fields))
    assert info.value.reason == reason


# ---------------------------------------------------------------------------------------
# Malformed input
# ---------------------------------------------------------------------------------------


def test_every_truncation_is_rejected(frames):
    data, _ = frames["quant:bits=4,per=channel+zstd"]
    for n in range(len(data)):
        assert _reason(data[:n]) == "truncated", n
    assert _reason(data + b"\x00") == "length_mismatch"


def test_bad_magic_and_version(frames):
    data, _ = frames["float32"]
    assert _reason(b"SPIG" + data[4:]) == "bad_magic"
    assert _reason(b"\x89PNG\r\n\x1a\n" + bytes(64)) == "bad_magic"
    assert _reason(_with_crc(data[:4] + b"\x03" + data[5:-4])) == "bad_version"
    # version 2 (authenticated) needs its 20-byte trailer after the CRC
    assert _reason(_with_crc(data[:4] + b"\x02" + data[5:-4])) == "truncated"


def test_oversized_length_fields_do_not_allocate(frames):
    data, _ = frames["float32"]
    lengths_at = 32 + 4 * 3
    for params_len, payload_len in [(0xFFFF, 0), (0, 0xFFFFFFFF), (0xFFFF, 0xFFFFFFFF)]:
        forged = bytearray(data)
        struct.pack_into("<HI", forged, lengths_at, params_len, payload_len)
        assert _reason(bytes(forged)) == "truncated"
    forged = bytearray(data)
    struct.pack_into("<HI", forged, lengths_at, 0, 8)  # shorter than what is there
    assert _reason(bytes(forged)) == "length_mismatch"


def test_every_single_byte_corruption_is_rejected(frames):
    for spec in ("quant:bits=4,per=channel+zstd", "float16+lz4"):
        data, _ = frames[spec]
        for i in range(len(data)):
            for flip in (0x01, 0x80, 0xFF):
                corrupted = bytearray(data)
                corrupted[i] ^= flip
                _reason(bytes(corrupted))  # asserts FrameError with a documented reason
        middle = bytearray(data)
        middle[len(data) // 2] ^= 0x10
        assert _reason(bytes(middle)) == "crc_mismatch"


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "reason"),
    [
        (31, "<B", 0, "bad_header"),  # ndim 0
        (31, "<B", 5, "bad_header"),  # ndim 5
        (30, "<B", 9, "bad_header"),  # dtype code
        (32, "<I", 0, "bad_header"),  # zero dim
        (10, "<f", float("nan"), "bad_header"),
        (10, "<f", float("inf"), "bad_header"),
        (10, "<f", -1.0, "bad_header"),
        (10, "<f", 0.0, "bad_header"),
        (6, "<H", 0x0F00, "unknown_codec"),  # tensor stage 15 is not registered
        (6, "<H", 0x0107, "unknown_codec"),  # byte stage 7 is not registered
    ],
)
def test_header_fields_are_validated(frames, offset, fmt, value, reason):
    data, _ = frames["float32"]
    forged = bytearray(data[:-4])
    struct.pack_into(fmt, forged, offset, value)
    assert _reason(_with_crc(bytes(forged))) == reason


def test_shape_beyond_the_cap_is_rejected_before_decoding():
    frame = Frame(codec_id=0x0100, shape=(2**32 - 1, 2**32 - 1, 65535, 65535), payload=b"")
    assert _reason(encode_frame(frame)) == "oversize"
    small = Frame(codec_id=0x0100, shape=(4, 4, 4), payload=bytes(256))
    assert _reason(encode_frame(small), max_tensor_bytes=255) == "oversize"
    assert decode_frame(encode_frame(small), max_tensor_bytes=256) == small


def _reseal(frame: Frame, **changes) -> bytes:
    fields = {k: getattr(frame, k) for k in Frame.__dataclass_fields__}
    return encode_frame(Frame(**{**fields, **changes}))


def test_shape_and_payload_must_agree(codecs, frames):
    spec = "quant:bits=3+raw"
    codec = codecs[spec]
    decoders = {codec.codec_id: codec}
    frame = decode_frame(frames[spec][0])
    assert _reason(_reseal(frame, payload=frame.payload[:-1]), decoders) == "length_mismatch"
    assert _reason(_reseal(frame, payload=frame.payload + b"\0"), decoders) == "length_mismatch"
    # The codec was calibrated for SHAPE: any other shape is refused before decoding.
    assert _reason(_reseal(frame, shape=(5, 7, 6)), decoders) == "shape_mismatch"
    # An uncalibrated codec accepts any shape, so the payload size decides.
    loose = get_codec(spec)
    dynamic = decode_frame(
        pack(loose, np.ones(SHAPE, np.float32), split_point=0, ratio=1, seq=0, stamp_ns=0)
    )
    assert _reason(_reseal(dynamic, shape=(5, 6, 8)), {loose.codec_id: loose}) == "length_mismatch"


def test_nonfinite_payload_and_params_are_rejected():
    f32, f16, quant = get_codec("float32"), get_codec("float16"), get_codec("quant:bits=8")
    decoders = {c.codec_id: c for c in (f32, f16, quant)}
    for value in (np.nan, np.inf, -np.inf):
        payload = np.array([1.0, value], "<f4").tobytes()
        frame = Frame(codec_id=0x0100, shape=(2,), payload=payload, params=b"\x00")
        assert _reason(encode_frame(frame), decoders) == "nonfinite"
    inf16 = np.array([0x7C00, 0x3C00], "<u2").tobytes()  # +inf, 1.0 as float16 bits
    frame = Frame(codec_id=0x0200, shape=(2,), payload=inf16, params=b"\x00")
    assert _reason(encode_frame(frame), decoders) == "nonfinite"
    ok = quant.compress(np.ones((2, 2), np.float32))
    for lo, hi in [(np.nan, 1.0), (0.0, np.inf)]:
        params = ok.params[:4] + struct.pack("<ff", lo, hi)
        frame = Frame(codec_id=0x0300, shape=(2, 2), payload=ok.payload, params=params)
        assert _reason(encode_frame(frame), decoders) == "nonfinite"
    # A float64 frame whose float32 values are fine, cast back to the declared float16, may
    # overflow: that is caught too.
    big = Frame(
        codec_id=0x0100,
        shape=(1,),
        payload=np.array([1e6], "<f4").tobytes(),
        params=b"\x00",
        dtype="float16",
    )
    assert _reason(encode_frame(big), decoders) == "nonfinite"


def test_unknown_codec_ids_and_resolvers(frames, codecs):
    data, _ = frames["quant:bits=8+lz4"]
    assert _reason(data, {}) == "unknown_codec"
    assert _reason(data, lambda frame: None) == "unknown_codec"
    assert _reason(data, lambda frame: {}[frame.config]) == "unknown_codec"
    wrong = codecs["quant:bits=4,per=channel+zstd"]
    assert _reason(data, lambda frame: wrong) == "unknown_codec"


# ---------------------------------------------------------------------------------------
# Decompression bombs
# ---------------------------------------------------------------------------------------

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _rle_blocks(count: int, size: int = 1 << 17) -> bytes:
    """zstd RLE blocks: a 3-byte header (last, type=1, size) and the byte to repeat."""
    blocks = []
    for i in range(count):
        header = (size << 3) | (1 << 1) | (i == count - 1)
        blocks.append(header.to_bytes(3, "little") + b"\x00")
    return b"".join(blocks)


def _zstd_bomb_payloads() -> dict[str, bytes]:
    window = bytes([(17 - 10) << 3])  # 128 KiB window descriptor
    return {
        # ~1 KB declaring 1 TiB of content (and holding 32 MiB): a one-shot decoder trusts it.
        "lying_content_size": _ZSTD_MAGIC
        + b"\xc0"
        + window
        + struct.pack("<Q", 1 << 40)
        + _rle_blocks(250),
        # A frame that genuinely inflates to 1 GiB (32 KiB on the wire, no size declared).
        "real_1gib": _ZSTD_MAGIC + b"\x00" + window + _rle_blocks(8192),
        # A 2 TiB window: the decoder would have to reserve it before producing a byte.
        "huge_window": _ZSTD_MAGIC + b"\x00" + bytes([(41 - 10) << 3]) + _rle_blocks(1),
    }


def test_the_bomb_payloads_are_real_zstd():
    bombs = _zstd_bomb_payloads()
    assert len(bombs["lying_content_size"]) < 1100
    assert zstandard.get_frame_parameters(bombs["lying_content_size"]).content_size == 1 << 40
    reader = zstandard.ZstdDecompressor().stream_reader(bombs["real_1gib"])
    assert reader.read(1 << 20) == bytes(1 << 20)  # it really does inflate
    # libzstd refuses even to describe this header: the window is too large to decode.
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.get_frame_parameters(bombs["huge_window"])


@pytest.mark.parametrize("name", ["lying_content_size", "real_1gib", "huge_window"])
def test_zstd_bomb_is_rejected_in_bounded_memory(name):
    codec = get_codec("quant:bits=8+zstd")
    template = codec.compress(np.ones((4, 4, 4), np.float32))  # expects 64 raw bytes
    payload = _zstd_bomb_payloads()[name]
    data = encode_frame(
        Frame(codec_id=codec.codec_id, shape=(4, 4, 4), payload=payload, params=template.params)
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        reason = _reason(data, {codec.codec_id: codec})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert reason in ("decompression_bomb", "length_mismatch")
    assert peak < 64 << 20
    assert rss_growth_kib < 256 << 10  # the process never came near 1 GiB


def test_lz4_overflow_is_rejected():
    import lz4.block

    codec = get_codec("quant:bits=8+lz4")
    template = codec.compress(np.ones((4, 4, 4), np.float32))
    payload = lz4.block.compress(bytes(1 << 20), store_size=False)
    frame = Frame(
        codec_id=codec.codec_id, shape=(4, 4, 4), payload=payload, params=template.params
    )
    assert _reason(encode_frame(frame), {codec.codec_id: codec}) == "corrupt_payload"


# ---------------------------------------------------------------------------------------
# Fuzzing: only FrameError may come out
# ---------------------------------------------------------------------------------------


def _decode_or_frame_error(data: bytes, decoders) -> None:
    try:
        frame, x = unpack(data, decoders)
    except FrameError as exc:
        assert exc.reason in FRAME_ERROR_REASONS
        return
    assert x.shape == frame.shape and np.isfinite(x).all()


@FUZZ
@given(data=st.binary(max_size=256), magic=st.booleans())
def test_random_bytes_only_raise_frame_error(data, magic, codecs):
    decoders = {c.codec_id: c for c in codecs.values()}
    _decode_or_frame_error((MAGIC + b"\x01" + data) if magic else data, decoders)


@FUZZ
@given(
    spec=st.sampled_from(SPECS),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    reseal=st.booleans(),
)
def test_mutated_frames_only_raise_frame_error(spec, edits, cut, reseal, codecs, frames):
    """Byte edits and truncation, optionally re-sealed with a valid CRC so that the header,
    params and payload decoders (zstd, lz4, rANS, PNG, JPEG) see the garbage."""
    data = bytearray(frames[spec][0])
    body = data[:-4]
    for position, value in edits:
        body[position % len(body)] = value
    if cut is not None:
        body = body[: cut % (len(body) + 1)]
    mutated = _with_crc(bytes(body)) if reseal else bytes(body) + bytes(data[-4:])
    _decode_or_frame_error(mutated, {c.codec_id: c for c in codecs.values()})


@FUZZ
@given(spec=st.sampled_from(SPECS), payload=st.binary(max_size=600), params_keep=st.booleans())
def test_random_payloads_behind_valid_headers_only_raise_frame_error(
    spec, payload, params_keep, codecs, frames
):
    frame = decode_frame(frames[spec][0])
    params = frame.params if params_keep else payload[:8]
    forged = _reseal(frame, payload=payload, params=params)
    _decode_or_frame_error(forged, {c.codec_id: c for c in codecs.values()})


def test_fuzz_targets_exercise_the_payload_decoders(codecs, frames):
    """Guard against a fuzz suite that only ever hits the CRC: re-sealed garbage payloads
    reach each byte stage and fail there with payload-level reasons."""
    seen = set()
    for spec in SPECS:
        frame = decode_frame(frames[spec][0])
        garbage = bytes(range(256)) * 2
        try:
            unpack(
                _reseal(frame, payload=garbage[: len(frame.payload)]),
                {frame.codec_id: codecs[spec]},
            )
        except FrameError as exc:
            seen.add(exc.reason)
    assert seen & {"corrupt_payload", "length_mismatch", "symbol_range", "decompression_bomb"}
