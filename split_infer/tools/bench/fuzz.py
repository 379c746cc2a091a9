"""Coverage-guided fuzzing of the wire-frame decoder and the camera-image converter (atheris).

::

    split-infer bench fuzz --target all --inputs 1000000 --out bench/results/fuzz

Both targets take untrusted bytes from the network, so each may raise exactly one typed
error and nothing else; anything else is a *crash*:

* ``wire`` -- bytes → :meth:`split_infer.pipeline.engine.CloudEngine.decode` (``decode_frame``,
  the route chosen by the frame's configuration id, the calibrated codec, the rateless fill
  and the ONNX cloud part) on a small real bundle built by
  ``split_infer.tools.synthetic_bundle.build_tiny_bundle`` with one configuration per byte
  stage (raw, zstd, lz4, rANS, PNG, JPEG) plus the rateless one. Allowed: ``FrameError``
  whose ``reason`` is a non-empty string from ``FRAME_ERROR_REASONS``; a decoded frame must
  give finite float32 logits ``(1, classes)``.
* ``image`` -- ``image_to_rgb`` on ``sensor_msgs/Image``-like objects built from the fuzz
  bytes (real and bogus encodings, dimensions up to 2**63, mismatched ``step``, truncated or
  padded data, several buffer types, wrongly typed fields) and ``compressed_to_rgb`` on
  PNG/JPEG-ish data. Allowed: ``ImageError`` with a reason from ``IMAGE_ERROR_REASONS``; a
  converted image must be a C-contiguous uint8 ``(H, W, 3)`` array (``(height, width, 3)``
  for raw images).

How a run works: this process builds the bundle once (in a subprocess, so that torch does not
stay resident here: on Linux a child's ``ru_maxrss`` starts from its parent's resident size),
then runs each target in a child process (``--child``) so that a crash, a hang or an
out-of-memory kill cannot take the report down with it. The child imports ``split_infer``
under ``atheris.instrument_imports`` (so libFuzzer sees its branch coverage), writes a seed
corpus of valid inputs (real frames from ``EdgeEngine.encode`` for every configuration;
PNG/JPEG files from OpenCV) to a temporary directory and runs ``atheris.Setup``/
``atheris.Fuzz``. The child counts inputs itself and stops at ``--inputs`` or ``--seconds``:
libFuzzer's own ``-runs``/``-max_total_time`` leave through C ``exit()``, skipping Python, so
the last counts could not be written.

A crash is never swallowed: the harness saves the traceback and the input under
``--out/crashes/`` and re-raises, so libFuzzer reports it too (and writes the raw input as
``<target>-crash-<sha1>``); a native crash, a hang (``-timeout``) or an RSS limit hit leaves
libFuzzer's artifact there. The parent counts every abnormal child exit as a crash and keeps
the child's log; the exit status is 1 when any target crashed. Replay a saved input with
``--target T --reproduce FILE``.

Input modes. The first byte of each input (modulo 3) picks how the rest is used, so that
mutations get past the integrity checks to the code behind them (checksums are the classic
fuzzing wall):

* wire: ``0`` the bytes as they are; ``1`` the bytes plus a correct CRC32 trailer (every
  header, params and payload check behind the CRC); ``2`` a seed frame's valid header around
  fuzzed params/payload (the byte-stage decoders: zstd, lz4, rANS, PNG, JPEG).
* image: ``0`` a raw ``Image`` built field by field with ``atheris.FuzzedDataProvider``;
  ``1`` compressed data as it is; ``2`` compressed data with every PNG chunk CRC recomputed
  (so libpng looks past the CRC into IHDR, palette and zlib data).

Memory: the tracemalloc peak (Python and NumPy allocations while fuzzing), the largest
allocation made for one input (tracemalloc peak above what was live before it) and the
child's ``ru_maxrss`` (the whole process: torch, ONNX Runtime and OpenCV included).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import hashlib
import importlib
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

# common imports only the standard library: the child imports split_infer's targets later,
# instrumented.
from split_infer.tools.bench import common

TARGETS = ("wire", "image")

#: Codecs of the fuzzed bundle: one per byte stage, each with its own ratio (the ratio is only
#: the configuration id here). build_tiny_bundle adds the rateless (last split, 16) one.
FUZZ_CODECS: tuple[tuple[str, float], ...] = (
    ("quant:bits=8+raw", 4.0),
    ("quant:bits=4,per=channel+zstd", 8.0),
    ("quant:bits=6,per=neuron+rans", 5.0),
    ("float16+lz4", 2.0),
    ("quant:bits=8,per=channel+png", 6.0),
    ("quant:bits=8+jpeg:quality=75", 7.0),
)

#: libFuzzer limits: an input taking longer than this many seconds is a hang; a child above
#: this resident size is a memory blow-up. Both count as crashes.
INPUT_TIMEOUT_S = 60
RSS_LIMIT_MB = 2048
#: Raw image data built by the harness is capped here so that a fuzzed 8192×8192 rgba16
#: image (512 MiB) does not spend the run allocating; larger sizes still reach every check.
RAW_DATA_CAP = 1 << 20
#: A rise of the child's peak RSS by at least this much during one input is recorded.
RSS_JUMP_BYTES = 32 << 20
#: How often the child rewrites its stats file (the parent's progress bar reads it).
STATS_INTERVAL_S = 0.5


class ContractViolationError(AssertionError):
    """A target returned something its contract forbids (wrong shape, dtype, reason...)."""


# -- the wire target ----------------------------------------------------------------------


class WireHarness:
    """Fuzz bytes → wire frame → ``CloudEngine.decode`` on a bundle; returns the outcome."""

    def __init__(self, bundle_dir: Path, seed: int = 0) -> None:
        # Imported here, not at module level: the child must import split_infer only inside
        # atheris.instrument_imports, or libFuzzer would see no coverage.
        from split_infer.bundle import Bundle
        from split_infer.errors import FRAME_ERROR_REASONS, FrameError
        from split_infer.pipeline.engine import CloudEngine, EdgeEngine
        from split_infer.wire import Frame, decode_frame, encode_frame

        self._frame_error = FrameError
        self._reasons = FRAME_ERROR_REASONS
        self._frame_type = Frame
        self._encode_frame = encode_frame
        bundle = Bundle.load(bundle_dir)
        self.cloud = CloudEngine.from_bundle(bundle, threads=1)
        self.classes = len(bundle.classes)
        edge = EdgeEngine.from_bundle(bundle, threads=1)
        rng = np.random.default_rng(seed)
        height, width = bundle.preprocessing.size
        images = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        self.frames: list[bytes] = []
        self.configurations: list[dict[str, Any]] = []
        for index, configuration in enumerate(bundle.configurations):
            config = edge.activate(configuration.split_point, configuration.ratio)
            for image_index, x in enumerate(bundle.preprocessing(images)):
                seq = 2 * index + image_index
                self.frames.append(edge.encode(x[None], seq, 1_700_000_000_000_000_000 + seq,
                                               config))
            self.configurations.append({
                "split_point": configuration.split_point, "ratio": configuration.ratio,
                "codec": configuration.codec, "keep_channels": configuration.keep_channels,
                "frame_bytes": len(self.frames[-1])})
        self.headers = [decode_frame(frame) for frame in self.frames]

    def seeds(self) -> list[bytes]:
        """Valid inputs for every mode and every configuration."""
        out = []
        for index, (frame, header) in enumerate(zip(self.frames, self.headers)):
            out.append(b"\x00" + frame)
            out.append(b"\x01" + frame[:-4])
            out.append(bytes([2, 0x80 | index]) + header.payload)
        return out

    def frame_bytes(self, data: bytes) -> bytes:
        """The wire frame an input stands for (see the module docstring's input modes)."""
        if not data:
            return b""
        mode, rest = data[0] % 3, data[1:]
        if mode == 0:
            return rest
        if mode == 1:
            return rest + struct.pack("<I", zlib.crc32(rest))
        if not rest:
            return b""
        header = self.headers[(rest[0] & 0x7F) % len(self.headers)]
        body = rest[1:]
        if rest[0] & 0x80:  # keep the seed's params (fingerprint, quantizer bounds)
            params, payload = header.params, body
        else:
            params, payload = body[: len(header.params)], body[len(header.params):]
        return self._encode_frame(self._frame_type(
            codec_id=header.codec_id, shape=header.shape, payload=payload, params=params,
            dtype=header.dtype, split_point=header.split_point, ratio=header.ratio,
            seq=header.seq, stamp_ns=header.stamp_ns, flags=header.flags))

    def __call__(self, data: bytes) -> str:
        """Decode one input; returns ``"decoded"`` or the FrameError reason, raises
        :class:`ContractViolationError` (or whatever escaped the decoder) otherwise."""
        frame_bytes = self.frame_bytes(data)
        try:
            frame, logits = self.cloud.decode(frame_bytes)
        except self._frame_error as exc:
            if not isinstance(exc.reason, str) or exc.reason not in self._reasons:
                raise ContractViolationError(f"FrameError with reason {exc.reason!r}") from exc
            return exc.reason
        if not isinstance(frame, self._frame_type):
            raise ContractViolationError(f"decode returned a {type(frame).__name__} header")
        if not isinstance(logits, np.ndarray) or logits.shape != (1, self.classes):
            raise ContractViolationError(f"logits {getattr(logits, 'shape', logits)!r}, "
                                    f"expected (1, {self.classes})")
        if logits.dtype != np.float32 or not np.isfinite(logits).all():
            raise ContractViolationError(f"logits {logits.dtype} with non-finite values")
        return "decoded"


# -- the image target ---------------------------------------------------------------------

#: Encodings that are not converted here (cv_bridge ones without a ROS install, float and
#: signed types, near-misses of real names) next to the real ones.
BOGUS_ENCODINGS = ("bayer_rggb8", "yuv422", "nv21", "32FC1", "16SC1", "8UC2", "16UC3",
                   "RGB8", "rgb8 ", "mono8\x00", "", "jpeg", "ünïcödé", "rgb" * 40)
# Lists, not tuples: FuzzedDataProvider.PickValueInList takes only lists.
BOUNDARY_DIMS = [0, 1, 2, 8191, 8192, 8193, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                 2**63 - 1, -1, -(2**31), -(2**63)]
WRONG_FIELD_VALUES: list[Any] = [None, 2.0, "2", True, b"2", [2], np.int32(2),
                                 np.uint64(2**64 - 1), np.float32(2.0)]
BIGENDIAN_VALUES = [0, 1, 0, 1, 255, -1, 2**40]
COMPRESSED_FORMATS = ("png", "jpeg", "rgb8; jpeg compressed bgr8", "bgr8; png compressed ",
                      "", "tiff", "split_infer/1; float32")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BUFFER_KINDS = 7


def as_buffer(data: bytes, kind: int) -> Any:
    """``data`` as one of the buffer types a message field may hold (``kind`` picks)."""
    kind %= BUFFER_KINDS
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(data)
    if kind == 3:
        return array.array("B", data)
    if kind == 4:
        return np.frombuffer(data, np.uint8)
    if kind == 5 and len(data) % 2 == 0:  # multi-byte items: consumers must cast to bytes
        return np.frombuffer(data, np.uint16)
    if kind == 6:  # strided (not contiguous) view of the same bytes
        return np.frombuffer(data, np.uint8).repeat(2)[::2]
    return data


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every complete PNG chunk, so mutations reach the chunk parsers."""
    if not data.startswith(PNG_MAGIC):
        return data
    out = bytearray(data)
    offset = len(PNG_MAGIC)
    while offset + 12 <= len(out):
        (length,) = struct.unpack_from(">I", out, offset)
        end = offset + 8 + length
        if end + 4 > len(out):
            break
        struct.pack_into(">I", out, end, zlib.crc32(out[offset + 4:end]))
        offset = end + 4
    return bytes(out)


class ImageHarness:
    """Fuzz bytes → ``image_to_rgb`` or ``compressed_to_rgb``; returns the outcome."""

    def __init__(self) -> None:
        import atheris

        # Imported here for the same reason as in WireHarness.
        from split_infer.pipeline.images import (
            IMAGE_ERROR_REASONS,
            MAX_IMAGE_SIDE,
            RAW_ENCODINGS,
            ImageError,
            compressed_to_rgb,
            image_to_rgb,
        )

        self._provider = atheris.FuzzedDataProvider
        self._image_error = ImageError
        self._reasons = IMAGE_ERROR_REASONS
        self._image_to_rgb = image_to_rgb
        self._compressed_to_rgb = compressed_to_rgb
        self._layouts = RAW_ENCODINGS
        self.max_side = MAX_IMAGE_SIDE
        self.encodings = [*RAW_ENCODINGS, *BOGUS_ENCODINGS]

    def seeds(self) -> list[bytes]:
        """Raw-mode byte strings (some that convert, see :meth:`raw_seeds`) and real PNG/JPEG
        files of several kinds."""
        import cv2

        rng = np.random.default_rng(0)
        colour = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
        grey = colour[:, :, 0].copy()
        wide = (colour.astype(np.uint16) * 257)[:7, :5]
        rgba = np.concatenate([colour, np.full((12, 17, 1), 200, np.uint8)], axis=2)
        files = [
            cv2.imencode(".png", colour)[1], cv2.imencode(".png", grey)[1],
            cv2.imencode(".png", wide)[1], cv2.imencode(".png", rgba)[1],
            cv2.imencode(".jpg", colour)[1], cv2.imencode(".jpg", grey)[1],
            cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1],
            cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_RST_INTERVAL, 1,
                                          cv2.IMWRITE_JPEG_QUALITY, 30])[1],
        ]
        out = [b"\x00" + bytes(range(256)), b"\x00" + bytes(64), b"\x00" + b"\xff" * 64]
        out += self.raw_seeds()
        for encoded in files:
            out += [b"\x01" + encoded.tobytes(), b"\x02" + encoded.tobytes()]
        return out

    def raw_seeds(self, count: int = 6, tries: int = 20_000) -> list[bytes]:
        """Raw-mode inputs that convert, each with another encoding: the first ones of a fixed
        pseudo-random sequence (the field-by-field layout of :meth:`raw_message` makes them
        hard to write by hand, and a corpus without them leaves libFuzzer to find one)."""
        rng = np.random.default_rng(0)
        found: dict[str, bytes] = {}
        for _ in range(tries):
            size = int(rng.integers(16, 256))
            data = b"\x00" + rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            if self(data) == "raw:converted":
                found.setdefault(self.raw_message(data[1:]).encoding, data)
                if len(found) == count:
                    break
        return list(found.values())

    def raw_message(self, data: bytes) -> SimpleNamespace:
        """A ``sensor_msgs/Image``-like object whose every field comes from ``data``."""
        fdp = self._provider(data)
        encoding = fdp.PickValueInList(self.encodings)
        layout = self._layouts.get(encoding)
        pixel_bytes = layout.channels * layout.itemsize if layout else fdp.ConsumeIntInRange(1, 8)
        height, width = self._dimension(fdp), self._dimension(fdp)
        row = width * pixel_bytes
        step_kind = fdp.ConsumeIntInRange(0, 3)
        if step_kind == 0:
            step = row
        elif step_kind == 1:
            step = row + fdp.ConsumeIntInRange(1, 64)  # row padding
        elif step_kind == 2:
            step = row - fdp.ConsumeIntInRange(1, 8)  # shorter than a row
        else:
            step = fdp.ConsumeInt(8)
        expected = height * step
        size_kind = fdp.ConsumeIntInRange(0, 2)
        if size_kind == 0 and 0 <= expected <= RAW_DATA_CAP:
            size = expected
        elif size_kind == 1:
            size = min(max(expected + fdp.ConsumeIntInRange(-8, 8), 0), RAW_DATA_CAP)
        else:
            size = fdp.ConsumeIntInRange(0, 4096)
        fields: dict[str, Any] = {
            "height": height, "width": width, "encoding": encoding, "step": step,
            "is_bigendian": fdp.PickValueInList(BIGENDIAN_VALUES),
        }
        buffer_kind = fdp.ConsumeIntInRange(0, BUFFER_KINDS - 1)
        wrong_field = fdp.ConsumeIntInRange(0, 15)
        wrong_value = fdp.PickValueInList(WRONG_FIELD_VALUES)
        pattern = fdp.ConsumeBytes(fdp.remaining_bytes()) or b"\x00"
        fields["data"] = as_buffer((pattern * (size // len(pattern) + 1))[:size], buffer_kind)
        names = ("height", "width", "encoding", "step", "is_bigendian", "data")
        if wrong_field < len(names):  # one field of the wrong type
            fields[names[wrong_field]] = wrong_value
        return SimpleNamespace(**fields)

    def _dimension(self, fdp: Any) -> int:
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 0:
            return fdp.ConsumeIntInRange(1, 48)
        if kind == 1:
            return fdp.PickValueInList(BOUNDARY_DIMS)
        if kind == 2:
            return fdp.ConsumeIntInRange(1, self.max_side)
        return fdp.ConsumeInt(8)

    def compressed_message(self, data: bytes) -> SimpleNamespace:
        """A ``sensor_msgs/CompressedImage``-like object: ``data[0]`` picks the mode, format
        and buffer type, the rest is the image file."""
        body = data[1:]
        if data[0] % 3 == 2:
            body = fix_png_crcs(body)
        fmt = COMPRESSED_FORMATS[(data[0] >> 2) % len(COMPRESSED_FORMATS)]
        return SimpleNamespace(format=fmt, data=as_buffer(body, data[0] >> 5))

    def __call__(self, data: bytes) -> str:
        """Convert one input; returns ``"<kind>:converted"`` or ``"<kind>:<reason>"``."""
        if not data or data[0] % 3 == 0:
            kind, msg = "raw", self.raw_message(data[1:])
            convert: Callable[[Any], np.ndarray] = self._image_to_rgb
        else:
            kind, msg = "compressed", self.compressed_message(data)
            convert = self._compressed_to_rgb
        try:
            rgb = convert(msg)
        except self._image_error as exc:
            if not isinstance(exc.reason, str) or exc.reason not in self._reasons:
                raise ContractViolationError(f"ImageError with reason {exc.reason!r}") from exc
            return f"{kind}:{exc.reason}"
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3:
            raise ContractViolationError(f"{kind} result {type(rgb).__name__} "
                                    f"{getattr(rgb, 'dtype', '')} {getattr(rgb, 'shape', '')}")
        if rgb.shape[2] != 3 or not rgb.flags.c_contiguous:
            raise ContractViolationError(f"{kind} result of shape {rgb.shape} is not (H, W, 3) "
                                    "C-contiguous")
        if kind == "raw" and rgb.shape[:2] != (msg.height, msg.width):
            raise ContractViolationError(f"{rgb.shape} from a {msg.width}×{msg.height} image")
        if not (min(rgb.shape[:2]) >= 1 and max(rgb.shape[:2]) <= self.max_side):
            raise ContractViolationError(f"{rgb.shape} is outside the side cap")
        return f"{kind}:converted"


# -- the child: one target under atheris ----------------------------------------------------


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def make_harness(target: str, bundle_dir: Path | None) -> Callable[[bytes], str]:
    """Import split_infer instrumented for coverage and build ``target``'s harness."""
    import atheris

    # Only the modules a target needs: the engine pulls in torch and ONNX Runtime, which would
    # inflate the image target's resident size.
    modules = (("split_infer.wire", "split_infer.pipeline.engine") if target == "wire"
               else ("split_infer.pipeline.images",))
    with atheris.instrument_imports(include=["split_infer"]):
        for module in modules:
            importlib.import_module(module)
    if target == "wire":
        if bundle_dir is None:
            raise SystemExit("the wire target needs --bundle")
        return WireHarness(bundle_dir)
    return ImageHarness()


def run_child(args: argparse.Namespace) -> None:
    """Fuzz one target; never returns (libFuzzer ends the process)."""
    import atheris

    started = time.perf_counter()
    harness = make_harness(args.child, args.bundle)
    corpus = Path(args.corpus)
    seeds = harness.seeds()
    for seed in seeds:
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    max_len = max(4096, 2 * max(len(seed) for seed in seeds))
    stats_path, crash_dir = Path(args.stats), Path(args.crash_dir)
    stats: dict[str, Any] = {
        "target": args.child, "phase": "fuzzing", "finished": False, "stopped_by": None,
        "inputs": 0, "crashes": 0, "crash_files": [], "outcomes": {},
        "setup_s": time.perf_counter() - started, "fuzz_s": 0.0,
        "rss_after_setup_bytes": _rss_bytes(), "tracemalloc_peak_bytes": 0,
        "max_input_alloc_bytes": 0, "max_input_alloc_len": 0, "rss_jumps": [],
    }
    if args.child == "wire":
        stats["configurations"] = harness.configurations
    outcomes: Counter[str] = Counter()
    fuzz_started = time.perf_counter()
    deadline = fuzz_started + args.seconds if args.seconds else None
    last_write = 0.0
    last_rss = _rss_bytes()
    tracemalloc.start()

    def flush(finished: bool = False, stopped_by: str | None = None) -> None:
        stats.update(finished=finished, stopped_by=stopped_by, outcomes=dict(outcomes),
                     fuzz_s=time.perf_counter() - fuzz_started, ru_maxrss_bytes=_rss_bytes())
        common.write_json(stats_path, stats)  # atomic: the parent never reads half a file

    def test_one_input(data: bytes) -> None:
        nonlocal last_write, last_rss
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            outcome = harness(data)
            if args.canary and outcome.endswith(("decoded", "converted")):
                raise ContractViolationError("canary: a valid input is treated as a crash")
        except Exception:
            # Save what is needed to replay it, then let atheris report the crash and stop.
            name = f"{args.child}-crash-{hashlib.sha1(data).hexdigest()}"
            (crash_dir / f"{name}.txt").write_text(
                f"target: {args.child}\ninput ({len(data)} bytes, hex): {data.hex()}\n\n"
                f"{traceback.format_exc()}")
            stats["crashes"] += 1
            stats["crash_files"].append(name)
            stats["inputs"] += 1
            flush()
            raise
        peak = tracemalloc.get_traced_memory()[1]
        if peak - before > stats["max_input_alloc_bytes"]:
            stats["max_input_alloc_bytes"], stats["max_input_alloc_len"] = peak - before, len(data)
        stats["tracemalloc_peak_bytes"] = max(stats["tracemalloc_peak_bytes"], peak)
        outcomes[outcome] += 1
        stats["inputs"] += 1
        rss = _rss_bytes()
        if rss - last_rss >= RSS_JUMP_BYTES and len(stats["rss_jumps"]) < 20:
            # Native allocations (OpenCV, ONNX Runtime) are invisible to tracemalloc: name
            # the inputs that raised the process's peak so a large ru_maxrss is explained.
            stats["rss_jumps"].append({"input": stats["inputs"], "outcome": outcome,
                                       "bytes": len(data), "ru_maxrss_bytes": rss})
        last_rss = rss
        now = time.perf_counter()
        stop = ("inputs" if stats["inputs"] >= args.inputs
                else "seconds" if deadline is not None and now >= deadline else None)
        if stop:
            flush(finished=True, stopped_by=stop)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)  # libFuzzer has nothing left to report; see the module docstring
        if now - last_write >= STATS_INTERVAL_S:
            last_write = now
            flush()

    flush()
    atheris.Setup([sys.argv[0], f"-seed={args.seed}", f"-max_len={max_len}",
                   f"-timeout={INPUT_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                   f"-artifact_prefix={crash_dir}/{args.child}-", str(corpus)], test_one_input)
    atheris.Fuzz()


def reproduce(target: str, bundle_dir: Path | None, path: Path) -> int:
    """Run one saved input through ``target``'s harness, without catching anything."""
    harness = make_harness(target, bundle_dir)
    print(f"{path}: {harness(path.read_bytes())}")
    return 0


# -- the parent: bundle, children, report ---------------------------------------------------


def build_bundle(out_dir: Path) -> Path:
    """The fuzzed bundle: ``build_tiny_bundle`` with one configuration per byte stage."""
    from split_infer.tools.synthetic_bundle import build_tiny_bundle

    return Path(build_tiny_bundle(out_dir, codecs=FUZZ_CODECS).path)


_STATUS_LINE = re.compile(rb"cov: (\d+) ft: (\d+) corp: (\d+)/")


def libfuzzer_coverage(log: bytes) -> dict[str, int] | None:
    """Edges, features and corpus size from libFuzzer's last status line, if any."""
    matches = _STATUS_LINE.findall(log)
    if not matches:
        return None
    edges, features, corpus = (int(v) for v in matches[-1])
    return {"edges": edges, "features": features, "corpus": corpus}


def run_target(target: str, args: argparse.Namespace, bundle_dir: Path | None,
               work_dir: Path, crash_dir: Path) -> dict[str, Any]:
    """Fuzz ``target`` in a child process with a progress bar; returns its report entry."""
    from tqdm import tqdm

    corpus, stats_path = work_dir / f"{target}-corpus", work_dir / f"{target}-stats.json"
    log_path = work_dir / f"{target}.log"
    corpus.mkdir()
    command = [sys.executable, "-m", __spec__.name, "--child", target,
               "--inputs", str(args.inputs), "--seed", str(args.seed),
               "--corpus", str(corpus), "--stats", str(stats_path),
               "--crash-dir", str(crash_dir)]
    if args.seconds:
        command += ["--seconds", str(args.seconds)]
    if bundle_dir is not None:
        command += ["--bundle", str(bundle_dir)]
    if args.canary:
        command.append("--canary")
    started = time.perf_counter()
    stats: dict[str, Any] = {}
    with open(log_path, "wb") as log, \
            tqdm(total=args.inputs, desc=target, unit=" inputs", disable=None) as bar:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while True:
            done = child.poll() is not None
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                stats = json.loads(stats_path.read_text())
            bar.update(stats.get("inputs", 0) - bar.n)
            bar.set_postfix(crashes=stats.get("crashes", 0), refresh=False)
            if done:
                break
            time.sleep(0.25)
    log_bytes = log_path.read_bytes()
    if stats.get("phase") != "fuzzing":
        tail = log_bytes[-4000:].decode(errors="replace")
        raise SystemExit(f"{target}: the fuzzer did not start (exit {child.returncode}):\n{tail}")
    entry = {key: stats.get(key) for key in (
        "inputs", "crashes", "crash_files", "stopped_by", "outcomes", "setup_s", "fuzz_s",
        "tracemalloc_peak_bytes", "max_input_alloc_bytes", "max_input_alloc_len",
        "rss_after_setup_bytes", "ru_maxrss_bytes", "rss_jumps")}
    entry["exit_status"] = child.returncode
    entry["wall_s"] = time.perf_counter() - started
    entry["inputs_per_s"] = stats["inputs"] / stats["fuzz_s"] if stats.get("fuzz_s") else None
    entry["coverage"] = libfuzzer_coverage(log_bytes)
    if "configurations" in stats:
        entry["configurations"] = stats["configurations"]
    if child.returncode != 0 or not stats.get("finished"):
        # A Python crash was counted by the child; anything else (a native crash, a hang, a
        # memory blow-up, a kill) only shows in the exit status and libFuzzer's artifact.
        entry["crashes"] = max(entry["crashes"] or 0, 1)
        entry["artifacts"] = sorted(p.name for p in crash_dir.glob(f"{target}-*"))
        shutil.copy(log_path, crash_dir / f"{target}.log")
        entry["log"] = str(crash_dir / f"{target}.log")
    return entry


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def print_table(report: dict[str, Any]) -> None:
    """One line per target: inputs, crashes, rate and memory."""
    header = ("target", "inputs", "crashes", "inputs/s", "tracemalloc peak", "max/input",
              "ru_maxrss", "edges")
    rows = [header]
    for target, entry in report["targets"].items():
        rate = entry["inputs_per_s"]
        rows.append((target, f"{entry['inputs']:,}", str(entry["crashes"]),
                     "-" if rate is None else f"{rate:,.0f}",
                     _mib(entry["tracemalloc_peak_bytes"]), _mib(entry["max_input_alloc_bytes"]),
                     _mib(entry["ru_maxrss_bytes"]),
                     str((entry["coverage"] or {}).get("edges", "-"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))


def run_parent(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Fuzz every requested target and write ``--out/fuzz.json``; 1 if anything crashed.

    ``argv`` (default: this process's arguments) is recorded as the command."""
    import atheris  # noqa: F401  (fail here, with a clear message, rather than in a child)

    targets = TARGETS if args.target == "all" else (args.target,)
    out = Path(args.out)
    crash_dir = out / "crashes"
    crash_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": common.command_line("fuzz", argv),
        "engine": f"atheris {_atheris_version()} (libFuzzer; split_infer instrumented)",
        "started": common.timestamp(), "machine": common.machine_info(),
        "seed": args.seed, "canary": args.canary,
        "limits": {"input_timeout_s": INPUT_TIMEOUT_S, "rss_limit_mb": RSS_LIMIT_MB,
                   "raw_data_cap_bytes": RAW_DATA_CAP},
        "targets": {},
    }
    with tempfile.TemporaryDirectory(prefix="split_infer_fuzz_") as tmp:
        work_dir = Path(tmp)
        bundle_dir = args.bundle
        if "wire" in targets and bundle_dir is None:
            # In a subprocess: see the module docstring (ru_maxrss of the children).
            print("building the fuzz bundle ...", flush=True)
            bundle_dir = work_dir / "bundle"
            subprocess.run([sys.executable, "-m", __spec__.name,
                            "--build-bundle", str(bundle_dir)], check=True)
        report["bundle"] = str(args.bundle) if args.bundle else "build_tiny_bundle(FUZZ_CODECS)"
        for target in targets:
            report["targets"][target] = run_target(target, args, bundle_dir, work_dir,
                                                   crash_dir)
    report["crashes_total"] = sum(e["crashes"] for e in report["targets"].values())
    if not any(crash_dir.iterdir()):
        crash_dir.rmdir()
    common.write_json(out / "fuzz.json", report)
    print_table(report)
    print(f"report: {out / 'fuzz.json'}")
    if report["crashes_total"]:
        print(f"CRASHES: {report['crashes_total']}; inputs and tracebacks in {crash_dir}")
        return 1
    return 0


def _atheris_version() -> str:
    from importlib.metadata import version

    return version("atheris")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``split-infer bench fuzz`` (and of its child processes, hidden)."""
    parser = common.bench_parser("fuzz", __doc__)
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all",
                        help="what to fuzz (default: %(default)s)")
    parser.add_argument("--inputs", type=int, default=1_000_000, metavar="N",
                        help="inputs per target (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop a target after this many seconds of fuzzing even if fewer "
                             "inputs were tried")
    common.add_out_argument(parser, "fuzz", what="fuzz.json and the crashing inputs (crashes/)")
    parser.add_argument("--seed", type=int, default=1,
                        help="libFuzzer's random seed (default: %(default)s)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="fuzz the wire decoder with this bundle instead of building one")
    parser.add_argument("--reproduce", type=Path, default=None, metavar="FILE",
                        help="run one saved input through --target (wire or image) and exit")
    parser.add_argument("--canary", action="store_true",
                        help="self-test: treat the first decoded frame / converted image as a "
                             "crash, to check that crashes are caught, saved and counted")
    # The child process's own arguments (see run_target).
    for name in ("--child", "--corpus", "--stats", "--crash-dir", "--build-bundle"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inputs < 1:
        parser.error("--inputs must be >= 1")
    if args.reproduce and args.target == "all":
        parser.error("--reproduce needs --target wire or --target image")
    return args


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench fuzz [ARGS]``: 0 when nothing crashed, 1 otherwise."""
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    if args.build_bundle:
        build_bundle(Path(args.build_bundle))
        return 0
    if args.reproduce:
        bundle = args.bundle
        if args.target == "wire" and bundle is None:
            tmp = tempfile.TemporaryDirectory(prefix="split_infer_fuzz_")
            bundle = build_bundle(Path(tmp.name) / "bundle")
        return reproduce(args.target, bundle, args.reproduce)
    return run_parent(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
