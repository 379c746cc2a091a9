"""Stateful fuzzing of the receiving half: genuine frames keep being served whatever else arrives.

    split-infer bench receiver_fuzz [--frames 1000000] [--engine-frames 20000] [--out DIR]

A genuine robot sends frames at 30 fps; it restarts (seq back to 0) and its clock steps
(within what the freshness rules cover: up to ``window - future_tolerance`` behind the
receiver, less than ``future_tolerance`` ahead) at random. Between its frames an attacker on
the same DDS domain sends, at random: exact replays of earlier genuine frames, reordered
ones, frames stamped far in the future or past, forged CRC-valid copies with any seq, stamp or
configuration, unknown configurations, and garbage. Every message goes through
:class:`~split_infer.pipeline.receiving.StreamReceiver`, the receiving half the cloud and the
stage nodes share. Checked on every genuine frame: it is served; and, with authentication on
(genuine frames signed, the attacker's not), on every replay of a genuine frame: it is not.

Two runs: ``--frames`` messages against a stand-in engine that only knows the configuration
(the state logic at full speed), and ``--engine-frames`` against the real decoders and parts
of the default bundle: the cloud's route (decoder + tail) and a middle stage (decoder +
segment + encoder). Writes ``receiver_fuzz.json``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from split_infer.tools.bench import common

__all__ = ["fuzz_stream", "main"]

S = 10**9
ATTACKS = ("replay", "reorder", "future", "past", "forge", "unknown_config", "garbage")


def fuzz_stream(frames: int, make_wire: Callable[[int, int, int], bytes], fmt: str,
                decode: Callable, known_split: int, seed: int = 0, progress: bool = True,
                authenticated: bool = False) -> dict[str, Any]:
    """``frames`` messages, about one in three genuine; returns counts and the invariants.

    Without authentication the invariant is that genuine frames are served: an attacker who
    can forge frames can also get replays served (a forged frame is as good as a replayed
    one, and served forgeries push genuine frames out of the exact-repeat memory). With it
    (genuine frames signed, the attacker's not), no replay of a genuine frame is served
    either."""
    from tqdm import tqdm

    from split_infer.frame_auth import FrameKey, KeyRing, sign
    from split_infer.pipeline.receiving import StreamReceiver
    from split_infer.wire import Frame, decode_frame, encode_frame

    rng = random.Random(seed)
    key = FrameKey(7, bytes(range(32)))
    genuine_wire = (lambda s, st, sp: sign(make_wire(s, st, sp), key)) if authenticated \
        else make_wire
    receiver = StreamReceiver("/robot", keys=KeyRing({7: key}) if authenticated else None)
    now, offset, seq = 1_700_000_000 * S, 0, 0
    sent: list[bytes] = []
    outcomes: Counter[str] = Counter()
    genuine_refused: Counter[str] = Counter()
    replays_served = genuine = 0
    started = time.perf_counter()
    for _ in tqdm(range(frames), desc="receiver fuzz", unit="frame", disable=not progress,
                  mininterval=1.0):
        if rng.random() < 0.35 or not sent:
            now += S // 30
            if rng.random() < 0.002:
                seq = 0  # the robot restarts
            if rng.random() < 0.002:
                offset = rng.randint(-7_000, 1_900) * 1_000_000  # its clock steps
            data = genuine_wire(seq, now + offset - 5_000_000, known_split)
            seq += 1
            genuine += 1
            sent.append(data)
            if len(sent) > 4096:
                del sent[:1024]
            received = receiver.receive(data, fmt, 0, now, decode)
            outcomes[f"genuine:{received.reason or 'served'}"] += 1
            if received.reason:
                genuine_refused[received.reason] += 1
            continue
        attack = rng.choice(ATTACKS)
        if attack == "replay":
            data = rng.choice(sent[-1024:])  # within the exact-repeat memory
        elif attack == "reorder":
            data = sent[max(0, len(sent) - rng.randint(2, 8))]
        elif attack in ("future", "past"):
            direction = 1 if attack == "future" else -1
            data = make_wire(rng.randint(0, 2**40), now + direction * rng.randint(3, 7200) * S,
                             known_split)
        elif attack == "forge":  # a copy of a genuine frame, re-sealed (without the key)
            frame = decode_frame(make_wire(0, 0, known_split) if authenticated
                                 else rng.choice(sent))
            data = encode_frame(Frame(**{**frame.__dict__, "seq": rng.randint(0, 2**64 - 1),
                                         "stamp_ns": now + rng.randint(-7200, 7200) * S}))
        elif attack == "unknown_config":
            data = make_wire(seq + rng.randint(0, 100), now, known_split + 1)
        else:
            data = rng.randbytes(rng.randint(0, 120))
        received = receiver.receive(data, fmt, 0, now, decode)
        outcomes[f"{attack}:{received.reason or 'served'}"] += 1
        if attack in ("replay", "reorder") and received.reason is None:
            replays_served += 1
    elapsed = time.perf_counter() - started
    return {"frames": frames, "genuine": genuine, "seconds": round(elapsed, 2),
            "frames_per_s": round(frames / elapsed), "genuine_refused": dict(genuine_refused),
            "replays_served": replays_served, "outcomes": dict(sorted(outcomes.items())),
            "rejects": receiver.rejects.snapshot(),
            "authenticated": authenticated,
            "invariants_hold": not genuine_refused and (replays_served == 0
                                                         or not authenticated)}


def _stand_in(known_split: int):
    import numpy as np

    from split_infer.codecs import get_codec
    from split_infer.errors import FrameError
    from split_infer.wire import format_string, pack

    codec = get_codec("quant:bits=8+raw")
    features = np.random.default_rng(0).normal(size=(4, 2, 2)).astype(np.float32)

    def make_wire(seq: int, stamp: int, split: int) -> bytes:
        return pack(codec, features, split_point=split, ratio=8.0, seq=seq, stamp_ns=stamp)

    def decode(frame):
        if frame.split_point != known_split:
            raise FrameError("unknown_config", f"no route for {frame.config}")
        return frame, None

    return make_wire, format_string(codec.spec), decode


def _real(bundle_path: Path, stage: bool):
    """(make_wire, format, decode) with the bundle's real edge part and codec on one
    baseline configuration, decoded by the cloud's route or a middle stage."""
    import numpy as np

    from split_infer.bundle import Bundle, is_link_configuration
    from split_infer.pipeline.engine import CloudEngine, EdgeEngine
    from split_infer.pipeline.stages import StageEngine
    from split_infer.wire import format_string

    bundle = Bundle.load(bundle_path)
    links = sorted((c for c in bundle.configurations if is_link_configuration(c)),
                   key=lambda c: c.split_point)
    inbound = links[0]
    outbound = next(c for c in links if c.split_point > inbound.split_point)
    edge = EdgeEngine.from_bundle(bundle, [inbound], threads=1)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    features = edge.features(bundle.preprocessing(image))
    config = edge.active

    def make_wire(seq: int, stamp: int, split: int) -> bytes:
        return edge.pack_features(dataclasses.replace(config, split_point=split), features,
                                  seq, stamp)

    if stage:
        engine = StageEngine.from_bundle(bundle, inbound, outbound, threads=1)

        def decode(frame):
            decoded, out = engine.run(frame)
            return decoded, engine.encode(out, decoded.seq, decoded.stamp_ns)
    else:
        engine = CloudEngine.from_bundle(bundle, [inbound], threads=1)
        decode = engine.decode
    return make_wire, format_string(config.codec.spec), decode, inbound.split_point


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench receiver_fuzz [ARGS]``; 0 when every invariant held."""
    from split_infer.defaults import DEFAULT_BUNDLE

    parser = common.bench_parser("receiver_fuzz", __doc__)
    parser.add_argument("--frames", type=int, default=1_000_000,
                        help="messages against the stand-in engine (default: %(default)s)")
    parser.add_argument("--engine-frames", type=int, default=20_000,
                        help="messages against the bundle's real cloud route and middle stage "
                             "each (default: %(default)s)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help="bundle for the real-engine runs (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    common.add_out_argument(parser, "fuzz", "receiver_fuzz.json")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.engine_frames < 0:
        parser.error("--frames must be >= 1 and --engine-frames >= 0")
    common.limit_threads(1)
    make_wire, fmt, decode = _stand_in(known_split=3)
    runs = {"stand_in": fuzz_stream(args.frames, make_wire, fmt, decode, 3, args.seed),
            "stand_in_authenticated": fuzz_stream(args.frames, make_wire, fmt, decode, 3,
                                                  args.seed, authenticated=True)}
    if args.engine_frames:
        for name, stage in (("cloud", False), ("stage", True)):
            make_wire, fmt, decode, split = _real(args.bundle, stage)
            runs[name] = fuzz_stream(args.engine_frames, make_wire, fmt, decode, split,
                                     args.seed + 1)
    report = {"command": common.command_line("receiver_fuzz", argv),
              "started": common.timestamp(), "machine": common.machine_info(), "runs": runs}
    path = common.write_json(args.out / "receiver_fuzz.json", report)
    for name, run in runs.items():
        print(f"{name}: {run['frames']} messages ({run['genuine']} genuine) in "
              f"{run['seconds']} s; genuine refused {run['genuine_refused'] or 0}, replays "
              f"served {run['replays_served']}")
    print(f"wrote {path}")
    return 0 if all(run["invariants_hold"] for run in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
