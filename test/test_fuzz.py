"""Fuzzing the untrusted-input paths end to end, beyond test_wire.py and test_images.py.

test_wire.py fuzzes ``unpack`` with codecs built in the test and test_images.py fuzzes small,
well-formed or wrongly typed Image fields. This module covers what they do not:

* the cloud's whole decode path (``CloudEngine.decode``: routing by configuration id, the
  bundle's calibrated codecs, the rateless fill, the ONNX tail) on the tiny bundle, with
  arbitrary bytes, mutated real frames and frames relabelled with another configuration;
* Image messages with dimensions up to 2**64, step/size arithmetic that overflows, and every
  buffer type a field may hold (strided ones included), and PNG/JPEG files whose edited
  chunks carry valid CRCs;
* regressions for the bugs ``split-infer bench fuzz`` found (strided buffers, PNG chunk lengths
  that made OpenCV allocate gigabytes);
* a short coverage-guided run of the fuzzer itself (atheris, ``python -m
  split_infer.tools.bench.fuzz``) in a subprocess, and its ``--canary`` self-test proving that
  a crash is caught, saved and counted.
"""

from __future__ import annotations

import importlib
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ros_fixtures import tiny_bundle_fixture  # noqa: F401  (fixture: tiny_bundle)

from split_infer.codecs import get_codec
from split_infer.errors import FRAME_ERROR_REASONS, FrameError
from split_infer.pipeline.engine import CloudEngine, EdgeEngine
from split_infer.pipeline.images import (
    IMAGE_ERROR_REASONS,
    MAX_IMAGE_SIDE,
    RAW_ENCODINGS,
    ImageError,
    compressed_to_rgb,
    image_to_rgb,
)
from split_infer.wire import MAGIC, Frame, decode_frame, encode_frame, pack, unpack

FUZZ_MODULE = "split_infer.tools.bench.fuzz"
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _bench_fuzz():
    """The fuzzer's module (its helpers build the same inputs the fuzzer does)."""
    return importlib.import_module(FUZZ_MODULE)


fuzz = _bench_fuzz()


def _seal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _relabel(frame: Frame, **changes) -> bytes:
    fields = {name: getattr(frame, name) for name in Frame.__dataclass_fields__}
    return encode_frame(Frame(**{**fields, **changes}))


# -- the cloud engine on the tiny bundle ----------------------------------------------------


@pytest.fixture(scope="module")
def cloud(tiny_bundle) -> CloudEngine:
    return CloudEngine.from_bundle(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def real_frames(tiny_bundle) -> list[bytes]:
    """One wire frame per configuration of the tiny bundle, encoded by the edge engine."""
    edge = EdgeEngine.from_bundle(tiny_bundle, threads=1)
    rng = np.random.default_rng(3)
    height, width = tiny_bundle.preprocessing.size
    x = tiny_bundle.preprocessing(rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8))
    frames = []
    for seq, config in enumerate(tiny_bundle.configurations):
        active = edge.activate(config.split_point, config.ratio)
        frames.append(edge.encode(x, seq, 1_000 + seq, active))
    return frames


def decode_or_frame_error(cloud: CloudEngine, data: bytes, classes: int) -> str:
    """``"decoded"`` or the FrameError reason; fails on anything else escaping or on bad
    logits."""
    try:
        frame, logits = cloud.decode(data)
    except FrameError as exc:
        assert isinstance(exc.reason, str) and exc.reason in FRAME_ERROR_REASONS
        return exc.reason
    assert isinstance(frame, Frame)
    assert logits.shape == (1, classes) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    return "decoded"


def test_every_real_frame_decodes(cloud, real_frames, tiny_bundle):
    """The mutation tests below start from these frames: they must be valid to begin with."""
    classes = len(tiny_bundle.classes)
    assert [decode_or_frame_error(cloud, f, classes) for f in real_frames] == \
        ["decoded"] * len(real_frames)


@PROPERTY
@given(prefix=st.sampled_from([b"", MAGIC, MAGIC + b"\x01"]), body=st.binary(max_size=512),
       seal=st.booleans())
def test_arbitrary_bytes_only_raise_frame_error(cloud, tiny_bundle, prefix, body, seal):
    data = prefix + body
    reason = decode_or_frame_error(cloud, _seal(data) if seal else data,
                                   len(tiny_bundle.classes))
    assert reason != "decoded"  # 512 random bytes cannot carry a calibrated frame


@PROPERTY
@given(
    index=st.integers(0, 100),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                   max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    seal=st.booleans(),
)
def test_mutated_real_frames_only_raise_frame_error(cloud, real_frames, tiny_bundle, index,
                                                    edits, cut, seal):
    """Byte edits and truncation of real frames from every configuration (the rateless one
    included); re-sealed with a valid CRC half the time so the checks behind it run."""
    original = real_frames[index % len(real_frames)]
    body = bytearray(original[:-4])
    for position, value in edits:
        body[position % len(body)] = value
    if cut is not None:
        body = body[: cut % (len(body) + 1)]
    data = _seal(bytes(body)) if seal else bytes(body) + original[-4:]
    decode_or_frame_error(cloud, data, len(tiny_bundle.classes))


UNLOADED_CONFIGS = [(2, 16.0), (9, 4.0), (3, 0.5), (0, 1.0)]


@PROPERTY
@given(source=st.integers(0, 100), target=st.integers(0, 100), codec_from=st.integers(0, 100),
       shape_edit=st.sampled_from(["keep", "other", "grow", "shrink", "flatten"]))
def test_relabelled_frames_never_reach_a_tail(cloud, real_frames, tiny_bundle, source, target,
                                              codec_from, shape_edit):
    """A frame whose configuration id, codec id or shape is changed (CRC re-sealed) must be
    refused: the codecs' calibration fingerprints and fixed shapes make any other label a
    FrameError, and only the untouched frame decodes."""
    headers = [decode_frame(f) for f in real_frames]
    frame = headers[source % len(headers)]
    targets = [h.config for h in headers] + UNLOADED_CONFIGS
    split_point, ratio = targets[target % len(targets)]
    codec_id = headers[codec_from % len(headers)].codec_id
    other = headers[(source + 1) % len(headers)].shape
    shape = {"keep": frame.shape, "other": other,
             "grow": (frame.shape[0] + 1, *frame.shape[1:]),
             "shrink": (max(frame.shape[0] - 1, 1), *frame.shape[1:]),
             "flatten": (int(np.prod(frame.shape)),)}[shape_edit]
    data = _relabel(frame, split_point=split_point, ratio=ratio, codec_id=codec_id,
                    shape=shape)
    reason = decode_or_frame_error(cloud, data, len(tiny_bundle.classes))
    untouched = ((split_point, ratio) == frame.config and codec_id == frame.codec_id
                 and shape == frame.shape)
    if untouched:
        assert reason == "decoded"
    else:
        assert reason in {"unknown_config", "unknown_codec", "shape_mismatch", "bad_params"}


# -- raw images: any dimensions, any buffer -------------------------------------------------

ENCODINGS = [*RAW_ENCODINGS, *fuzz.BOGUS_ENCODINGS]
DIMENSIONS = st.one_of(st.integers(1, 12), st.sampled_from(fuzz.BOUNDARY_DIMS),
                       st.integers(-(2**63), 2**64))


@st.composite
def raw_images(draw) -> tuple[SimpleNamespace, bool]:
    """An Image-like message and whether it is well-formed (and so must convert).

    Half the messages are consistent (known encoding, small sides, padded step, exact size),
    so the conversion itself runs on every buffer type; the rest draw each field freely.
    """
    consistent = draw(st.booleans())
    encoding = draw(st.sampled_from(list(RAW_ENCODINGS) if consistent else ENCODINGS))
    layout = RAW_ENCODINGS.get(encoding)
    pixel_bytes = layout.channels * layout.itemsize if layout else draw(st.integers(1, 8))
    sides = st.integers(1, 12) if consistent else DIMENSIONS
    height, width = draw(sides), draw(sides)
    row = width * pixel_bytes
    if consistent:
        step = row + draw(st.integers(0, 16))
    else:
        step = draw(st.one_of(st.just(row), st.integers(1, 16).map(lambda pad: row + pad),
                              st.integers(1, 8).map(lambda short: row - short),
                              st.integers(-(2**63), 2**64)))
    expected = height * step
    if consistent:
        size = expected
    else:
        size = draw(st.one_of(st.integers(-3, 3).map(lambda d: min(max(expected + d, 0), 4096)),
                              st.integers(0, 64)))
    content = draw(st.binary(min_size=1, max_size=32))
    kind = draw(st.integers(0, fuzz.BUFFER_KINDS - 1))
    data = fuzz.as_buffer((content * (size // len(content) + 1))[:size], kind)
    msg = SimpleNamespace(height=height, width=width, encoding=encoding, step=step,
                          is_bigendian=draw(st.integers(0, 255)), data=data)
    well_formed = (layout is not None and 1 <= height <= MAX_IMAGE_SIDE
                   and 1 <= width <= MAX_IMAGE_SIDE and step >= row and size == expected
                   and memoryview(data).c_contiguous)
    return msg, well_formed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_images())
def test_raw_images_of_any_size_convert_or_raise_image_error(case):
    msg, well_formed = case
    try:
        rgb = image_to_rgb(msg)
    except ImageError as exc:
        assert exc.reason in IMAGE_ERROR_REASONS
        assert not well_formed, f"a well-formed {msg.encoding} image was refused: {exc}"
        return
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert rgb.shape == (msg.height, msg.width, 3)


# -- compressed images: edited chunks with valid CRCs ---------------------------------------


def _image_files() -> list[bytes]:
    rng = np.random.default_rng(5)
    colour = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    return [cv2.imencode(ext, image, flags)[1].tobytes() for ext, image, flags in [
        (".png", colour, []), (".png", colour[:, :, 0].copy(), []),
        (".png", colour.astype(np.uint16) * 257, []), (".jpg", colour, []),
        (".jpg", colour, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])]]


IMAGE_FILES = _image_files()


@PROPERTY
@given(index=st.integers(0, len(IMAGE_FILES) - 1),
       edits=st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10**5)), kind=st.integers(0, 6))
def test_edited_png_and_jpeg_convert_or_raise_image_error(index, edits, cut, kind):
    """Edits anywhere (IHDR sizes, chunk lengths, SOF dimensions, Huffman tables), PNG CRCs
    recomputed so that the chunk contents are what gets parsed."""
    data = bytearray(IMAGE_FILES[index])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    msg = SimpleNamespace(format="png", data=fuzz.as_buffer(fuzz.fix_png_crcs(bytes(data)),
                                                            kind))
    try:
        rgb = compressed_to_rgb(msg)
    except ImageError as exc:
        assert exc.reason in IMAGE_ERROR_REASONS
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags.c_contiguous and max(rgb.shape[:2]) <= MAX_IMAGE_SIDE


# -- regressions for what the fuzzer found --------------------------------------------------


def test_strided_image_buffers_are_bad_messages():
    """np.frombuffer raised BufferError on a strided (non-contiguous) view."""
    strided = np.arange(36, dtype=np.uint8)[::2]
    raw = SimpleNamespace(height=2, width=3, encoding="rgb8", is_bigendian=0, step=9,
                          data=strided)
    with pytest.raises(ImageError) as info:
        image_to_rgb(raw)
    assert info.value.reason == "bad_message"
    with pytest.raises(ImageError) as info:
        compressed_to_rgb(SimpleNamespace(format="png", data=strided))
    assert info.value.reason == "bad_message"


def test_strided_frame_buffers_decode_like_bytes(cloud, real_frames):
    """struct and zlib raised BufferError on a strided view of a valid frame."""
    data = real_frames[0]
    strided = np.frombuffer(data, np.uint8).repeat(2)[::2]
    assert not strided.flags.c_contiguous
    assert decode_frame(strided) == decode_frame(data)
    np.testing.assert_array_equal(cloud.decode(strided)[1], cloud.decode(data)[1])


def _png_with_lying_chunk(declared: int) -> bytes:
    """A valid 17×12 IHDR followed by an IDAT that declares ``declared`` bytes but holds 50."""
    ihdr = struct.pack(">IIBBBBB", 17, 12, 8, 0, 0, 0, 0)
    png = bytearray(fuzz.PNG_MAGIC)
    for kind, body in ((b"IHDR", ihdr), (b"IDAT", b"x" * 50)):
        png += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind +
                                                                                         body))
    struct.pack_into(">I", png, len(fuzz.PNG_MAGIC) + 25, declared)
    return bytes(png)


@pytest.fixture
def forbid_imdecode(monkeypatch):
    """OpenCV's PNG reader allocates a chunk's declared length up front (1 GiB for the 95-byte
    file above): such input must be refused before cv2.imdecode is called."""
    def imdecode(*_args, **_kwargs):
        raise AssertionError("cv2.imdecode was called on a PNG whose chunk overruns the data")

    monkeypatch.setattr(cv2, "imdecode", imdecode)


@pytest.mark.parametrize("declared", [51, 0x40000000, 0xFFFFFFFF])
def test_png_chunk_longer_than_the_data_is_refused_before_decoding(forbid_imdecode, declared):
    with pytest.raises(ImageError) as info:
        compressed_to_rgb(SimpleNamespace(format="png", data=_png_with_lying_chunk(declared)))
    assert info.value.reason == "corrupt"


def test_png_codec_payload_with_a_lying_chunk_is_refused_before_decoding(forbid_imdecode):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 3, 5, 6)).astype(np.float32)
    codec = get_codec("quant:bits=8,per=channel+png").calibrate(features)
    frame = decode_frame(pack(codec, features[0], split_point=1, ratio=1.0, seq=0,
                              stamp_ns=0))
    payload = bytearray(frame.payload)
    struct.pack_into(">I", payload, len(fuzz.PNG_MAGIC) + 25, 0x9F001710)  # the IDAT after IHDR
    with pytest.raises(FrameError) as info:
        unpack(_relabel(frame, payload=bytes(payload)), {codec.codec_id: codec})
    assert info.value.reason == "corrupt_payload"


def test_real_pngs_still_decode_with_trailing_bytes():
    """The chunk walk stops at IEND: data after it is ignored, as libpng does."""
    data = IMAGE_FILES[0] + b"trailing garbage"
    assert compressed_to_rgb(SimpleNamespace(format="png", data=data)).shape == (9, 13, 3)


# -- the fuzzer: a short coverage-guided run ------------------------------------------------


def _run_fuzz_script(*args: str, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    pytest.importorskip("atheris", reason="atheris is not installed "
                                          "(pip install -r requirements-test.txt)")
    result = subprocess.run([sys.executable, "-m", FUZZ_MODULE, *args, "--out", str(out)],
                            capture_output=True, text=True, timeout=240)
    report_path = out / "fuzz.json"
    assert report_path.is_file(), result.stdout + result.stderr
    return result, json.loads(report_path.read_text())


def test_short_atheris_run_has_no_crashes(tiny_bundle, tmp_path):
    inputs = 2000
    result, report = _run_fuzz_script("--target", "all", "--inputs", str(inputs), "--bundle",
                                      str(tiny_bundle.path), out=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["crashes_total"] == 0
    assert not (tmp_path / "crashes").exists()
    for target in ("wire", "image"):
        entry = report["targets"][target]
        assert entry["inputs"] == inputs and entry["crashes"] == 0, entry
        assert entry["stopped_by"] == "inputs" and entry["exit_status"] == 0
        assert sum(entry["outcomes"].values()) == inputs
        assert entry["tracemalloc_peak_bytes"] > 0 and entry["ru_maxrss_bytes"] > 0
    # The seed corpus is valid, so each target got past its checks at least once; and the
    # mutated inputs were rejected for more than one reason.
    wire, image = report["targets"]["wire"]["outcomes"], report["targets"]["image"]["outcomes"]
    assert wire.get("decoded", 0) > 0 and len(wire) > 3
    assert image.get("raw:converted", 0) > 0 and image.get("compressed:converted", 0) > 0


def test_canary_crash_is_caught_saved_and_counted(tmp_path):
    """--canary treats the first converted image as a crash: the run must fail, count it and
    leave a replayable input with its traceback."""
    result, report = _run_fuzz_script("--target", "image", "--inputs", "2000", "--canary",
                                      out=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    entry = report["targets"]["image"]
    assert report["crashes_total"] == 1 and entry["crashes"] == 1
    (name,) = entry["crash_files"]
    traceback_text = (tmp_path / "crashes" / f"{name}.txt").read_text()
    assert "ContractViolationError: canary" in traceback_text
    replay = subprocess.run([sys.executable, "-m", FUZZ_MODULE, "--target", "image",
                             "--reproduce", str(tmp_path / "crashes" / name)],
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0 and replay.stdout.strip().endswith(":converted"), replay
