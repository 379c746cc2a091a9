"""``split-infer bag make/info/play/record``: rosbag2 (MCAP) camera bags without ros2bag."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from split_infer.tools.cli._api import VerbExtension
from split_infer.tools.cli._common import DATASETS, require, user_output_errors

__all__ = ["BagVerb"]


class BagVerb(VerbExtension):
    """Write, inspect, play and record camera bags through ``rosbags``."""

    HELP = "rosbag2 (MCAP) camera bags without ros2bag"
    DESCRIPTION = ("rosbag2 (MCAP) camera bags with labels, through rosbags (no ros2bag "
                   "needed): write one from a data set, list its topics, play it, or record "
                   "live topics.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One sub-parser per bag command."""
        sub = parser.add_subparsers(dest="bag_command", required=True, metavar="BAG_COMMAND",
                                    title="bag commands", help="one of:")
        p = sub.add_parser("make", help="write dataset images + labels as a camera bag",
                           description="Write data-set images and their labels as a camera "
                                       "bag (MCAP).")
        p.add_argument("--out", type=Path, required=True,
                       help="bag directory to create (must not exist)")
        p.add_argument("--dataset", default="cifar10", choices=[*DATASETS, "imagenet_sample"],
                       help="data set to take the images from; imagenet_sample: the labelled "
                            "ImageNet photographs (imagenet-sample-800.zip) at their own "
                            "sizes (default: %(default)s)")
        p.add_argument("--data", type=Path, default=None,
                       help="data path (zip, IDX dir, folder; default: the data set's usual "
                            "place)")
        p.add_argument("--split", default="test", choices=["train", "test"],
                       help="data-set split (default: %(default)s)")
        p.add_argument("--count", type=int, default=300, metavar="N",
                       help="frames: a random subset of the split (default: %(default)s)")
        p.add_argument("--rate", type=float, default=30.0, metavar="HZ",
                       help="frames per second (default: %(default)g)")
        p.add_argument("--seed", type=int, default=0,
                       help="seed of the random subset (default: %(default)s)")
        p.add_argument("--size", type=_frame_size, default=None, metavar="WxH",
                       help="camera frame size: every image scaled to cover it and "
                            "centre-cropped, e.g. 640x480 (default: the images' own sizes)")
        p.add_argument("--jpeg", type=int, default=None, metavar="QUALITY",
                       help="write JPEG CompressedImage frames at this quality (1-100) on "
                            "/camera/image_raw/compressed, as image_transport records a "
                            "camera (default: raw rgb8 Image frames)")
        p.add_argument("--order", choices=["shuffled", "dataset"], default="shuffled",
                       help="frame order: shuffled (classes mixed, as a robot sees them) or "
                            "the data set's own (often class by class; default: "
                            "%(default)s)")
        p.set_defaults(_bag=_make)

        p = sub.add_parser("info", help="topics, types and counts of a bag",
                           description="List a bag's topics with their types and message "
                                       "counts, and its duration.")
        p.add_argument("bag", type=Path, help="bag directory")
        p.set_defaults(_bag=_info)

        p = sub.add_parser("play", help="publish a bag's topics at the recorded pace",
                           description="Publish every topic of a bag at its recorded pace "
                                       "(scaled by --rate), stamps shifted to now.")
        p.add_argument("bag", type=Path, help="bag directory")
        p.add_argument("--rate", type=float, default=1.0,
                       help="playback speed, 1 = as recorded (default: %(default)g)")
        p.add_argument("--loop", action="store_true", help="start again at the end")
        p.add_argument("--decompress", action="store_true",
                       help="publish .../compressed frames decoded as raw bgr8 Image on the "
                            "topic without /compressed, as a camera driver would")
        p.add_argument("--delay", type=float, default=1.0, metavar="SECONDS",
                       help="seconds before the first message (lets subscribers connect; "
                            "default: %(default)g)")
        p.set_defaults(_bag=_play)

        p = sub.add_parser("record", help="record live topics into a bag",
                           description="Record live topics into a new bag until --duration "
                                       "passes or Ctrl-C.")
        p.add_argument("--out", type=Path, required=True,
                       help="bag directory to create (must not exist)")
        p.add_argument("--topic", action="append", required=True,
                       help="topic to record (repeatable)")
        p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                       help="seconds (default: until Ctrl-C)")
        p.set_defaults(_bag=_record)

    def main(self, args: argparse.Namespace) -> int:
        """Run the chosen bag command."""
        return args._bag(args)


def _frame_size(text: str) -> tuple[int, int]:
    """``"640x480"`` → ``(480, 640)`` (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"frame size {text} out of range 1..8192")
    return height, width


def _make(args: argparse.Namespace) -> int:
    import numpy as np

    from split_infer.data import Preprocessing
    from split_infer.tools.bag.storage import write_frames_bag

    require(args.count >= 1, "--count must be at least 1")
    require(args.rate > 0, "--rate must be positive")
    require(args.jpeg is None or 1 <= args.jpeg <= 100, "--jpeg must be 1..100")
    if args.dataset == "imagenet_sample":
        from split_infer.training.datasets import decode_zip_images, imagenet_sample_index

        path, names, all_labels, classes = imagenet_sample_index(args.data)
        rng = np.random.default_rng(args.seed)
        chosen = np.sort(rng.choice(len(names), min(args.count, len(names)), replace=False))
        decoded = decode_zip_images(path, [names[i] for i in chosen])
        keep = [k for k, image in enumerate(decoded) if image is not None]
        images = [decoded[k] for k in keep]
        labels = all_labels[chosen[keep]]
        source = f"{path.name}"
    else:
        from split_infer.training.datasets import load_dataset

        dataset = load_dataset(args.dataset, args.split, args.data).subset(args.count,
                                                                           seed=args.seed)
        images, labels, classes = list(dataset.images), dataset.labels, dataset.classes
        source = f"{args.dataset}/{args.split}"
    if args.size is not None:
        camera = Preprocessing(size=args.size, resize="area", resize_shorter=min(args.size))
        images = [camera.resize_frame(image) for image in images]
    if args.order == "shuffled":
        order = np.random.default_rng(args.seed + 1).permutation(len(images))
        images, labels = [images[i] for i in order], np.asarray(labels)[order]
    with user_output_errors():  # rosbag2 writers never overwrite --out
        path = write_frames_bag(args.out, images, labels, classes, rate_hz=args.rate,
                                jpeg_quality=args.jpeg)
    sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    size_text = sizes[0] if len(sizes) == 1 else f"{len(sizes)} sizes"
    kind = f"JPEG q{args.jpeg}" if args.jpeg is not None else "raw rgb8"
    print(f"wrote {len(images)} frames of {source} ({size_text}, {kind}, {args.order}) at "
          f"{args.rate} Hz to {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from collections import Counter

    from split_infer.tools.bag.storage import read_bag_raw

    counts: Counter = Counter()
    types, first, last = {}, None, None
    for topic, msgtype, stamp, _ in read_bag_raw(args.bag):
        counts[topic] += 1
        types[topic] = msgtype
        first = stamp if first is None else first
        last = stamp
    print(f"{args.bag}: {sum(counts.values())} messages over "
          f"{((last or 0) - (first or 0)) / 1e9:.2f} s")
    for topic, count in sorted(counts.items()):
        print(f"  {topic:32s} {types[topic]:40s} {count}")
    return 0


def _spin_until(node: Any, done: Callable[[], bool], timeout_s: float | None,
                stop: threading.Event) -> None:
    """Spin ``node`` until ``done()`` is true, ``timeout_s`` passes, or ``stop`` is set."""
    from split_infer.ros.common import make_executor

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    executor = make_executor()
    executor.add_node(node)
    try:
        while not stop.is_set() and not done():
            if deadline is not None and time.monotonic() >= deadline:
                break
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()


def _play(args: argparse.Namespace) -> int:
    from rclpy.parameter import Parameter

    from split_infer.ros.common import until_signalled
    from split_infer.tools.bag.player import BagPlayer

    require(args.rate > 0, "--rate must be positive")
    require(args.delay >= 0, "--delay must be >= 0")
    with until_signalled() as stop:
        node = BagPlayer(parameter_overrides=[
            Parameter("bag", value=str(args.bag)), Parameter("rate", value=args.rate),
            Parameter("loop", value=args.loop), Parameter("start_delay", value=args.delay),
            Parameter("decompress", value=args.decompress)])
        try:
            _spin_until(node, node.finished.is_set, None, stop)
            print(f"published {node.published} messages")
        finally:
            node.destroy_node()
    return 0


def _record(args: argparse.Namespace) -> int:
    from split_infer.ros.common import until_signalled
    from split_infer.tools.bag.recorder import BagRecorder

    require(args.duration is None or args.duration > 0, "--duration must be positive")
    with until_signalled() as stop:
        with user_output_errors():  # rosbag2 writers never overwrite --out
            node = BagRecorder(args.out, args.topic)
        try:
            _spin_until(node, lambda: False, args.duration, stop)
        finally:
            path = node.close()
            print(f"wrote {path}: " + ", ".join(f"{t} {n}" for t, n in node.counts.items()))
            node.destroy_node()
    return 0
