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
        p.add_argument("--dataset", default="cifar10", choices=DATASETS,
                       help="data set to take the images from (default: %(default)s)")
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


def _make(args: argparse.Namespace) -> int:
    from split_infer.tools.bag.storage import write_dataset_bag
    from split_infer.training.datasets import load_dataset

    require(args.count >= 1, "--count must be at least 1")
    require(args.rate > 0, "--rate must be positive")
    dataset = load_dataset(args.dataset, args.split, args.data).subset(args.count, seed=args.seed)
    with user_output_errors():  # rosbag2 writers never overwrite --out
        path = write_dataset_bag(args.out, dataset, rate_hz=args.rate)
    print(f"wrote {len(dataset)} frames of {args.dataset}/{args.split} at {args.rate} Hz "
          f"to {path}")
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
            Parameter("loop", value=args.loop), Parameter("start_delay", value=args.delay)])
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
