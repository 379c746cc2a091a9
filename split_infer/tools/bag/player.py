"""bag_player: replays a rosbag2 (MCAP or sqlite3) into the graph, without ros2bag.

It republishes every recorded topic with its recorded type and timing (scaled by ``rate``),
optionally in a loop. With ``restamp`` (the default) header stamps are shifted to "now" by
one offset per pass, so end-to-end latency is measured against the live clock while frames
and their labels keep identical stamps and still pair up.

Parameters: ``bag`` (path), ``rate`` (playback speed, 1.0 = recorded), ``loop``,
``restamp``, ``start_delay`` (s), ``topics`` (empty = all), ``decompress`` (JPEG/PNG
``…/compressed`` topics published decoded as ``sensor_msgs/Image`` ``bgr8`` on the topic without
``/compressed``, as a camera driver publishes raw frames). Publishes
``metrics/frames_published``.
"""

from __future__ import annotations

import importlib
import threading
import time

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from split_infer.ros.common import (
    MetricPublishers,
    declare_bool,
    declare_float,
    declare_str,
    run_node,
    shutting_down,
)
from split_infer.tools.bag.storage import (
    COMPRESSED_SUFFIX,
    COMPRESSED_TYPE,
    BagError,
    read_bag_raw,
)

__all__ = ["BagPlayer", "main"]


def _stamp_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def message_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` → ``sensor_msgs.msg.Image``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class BagPlayer(Node):
    """Publishes a bag's messages on their recorded topics at their recorded pace.

    ``gate`` (in-process use only): playback waits until the event is set, after
    ``start_delay``. The testbed creates the player before the link is shaped and opens the
    gate when the clock starts: a node created later would put its discovery traffic (~KBs
    per endpoint) on the shaped link, seconds of it at 100 kbit/s.
    """

    def __init__(self, gate: threading.Event | None = None, **kwargs) -> None:
        super().__init__("bag_player", **kwargs)
        self._gate = gate
        self._bag = declare_str(self, "bag", "", "rosbag2 directory to play", read_only=True)
        self._rate = declare_float(self, "rate", 1.0, 0.01, 100.0,
                                   "playback speed relative to the recording", read_only=True)
        self._loop = declare_bool(self, "loop", False, "start again at the end", read_only=True)
        self._restamp = declare_bool(self, "restamp", True,
                                     "shift header stamps to the live clock", read_only=True)
        self._start_delay = declare_float(
            self, "start_delay", 0.0, 0.0, 60.0,
            "seconds to wait before the first message, so subscribers can be discovered",
            read_only=True)
        self._decompress = declare_bool(
            self, "decompress", False,
            "publish .../compressed image topics decoded, as sensor_msgs/Image bgr8 on the "
            "topic without /compressed (what a camera driver publishes)", read_only=True)
        self.declare_parameter("topics", [""])
        wanted = [t for t in self.get_parameter("topics").value if t] or None
        if not self._bag:
            raise BagError("parameter 'bag' is required")
        # A short camera bag fits in memory; preloading (and decoding) keeps the replay
        # timing steady.
        self._messages = [self._preload(topic, msgtype, stamp, raw)
                          for topic, msgtype, stamp, raw in read_bag_raw(self._bag, wanted)]
        if not self._messages:
            raise BagError(f"{self._bag} holds no messages to play")
        qos = QoSProfile(depth=10)
        self._topic_publishers = {}
        for topic, cls, _, _ in self._messages:
            if topic not in self._topic_publishers:
                self._topic_publishers[topic] = self.create_publisher(cls, topic, qos)
        self._metrics = MetricPublishers(self, ["frames_published"])
        self.published = 0
        self.passes = 0
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="bag_player", daemon=True)
        self._thread.start()
        self.get_logger().info(f"playing {len(self._messages)} messages from {self._bag} "
                               f"at {self._rate}x{' in a loop' if self._loop else ''}")

    def _preload(self, topic: str, msgtype: str, stamp: int, raw: bytes
                 ) -> tuple[str, type, int, bytes | tuple[Image, int]]:
        """One bag message as (topic, class, bag time, CDR bytes or a decoded Image with its
        recorded header stamp in ns)."""
        if not (self._decompress and msgtype == COMPRESSED_TYPE
                and topic.endswith(COMPRESSED_SUFFIX)):
            return topic, message_class(msgtype), stamp, raw
        import cv2

        compressed = deserialize_message(raw, CompressedImage)
        bgr = cv2.imdecode(np.frombuffer(compressed.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BagError(f"{self._bag}: a {topic} message at {stamp} ns does not decode "
                           f"(format {compressed.format!r})")
        image = Image(header=compressed.header, height=bgr.shape[0], width=bgr.shape[1],
                      encoding="bgr8", is_bigendian=0, step=bgr.shape[1] * 3)
        image.data = bgr.tobytes()
        return (topic[:-len(COMPRESSED_SUFFIX)], Image, stamp,
                (image, _stamp_ns(compressed.header.stamp)))

    def _play(self) -> None:
        if self._stop.wait(self._start_delay):
            return
        while self._gate is not None and not self._gate.is_set():
            if self._stop.wait(0.01):
                return
        first = self._messages[0][2]
        span = self._messages[-1][2] - first
        period = span / max(len(self._messages) - 1, 1)
        while not self._stop.is_set():
            start = time.monotonic()
            offset_ns = self.get_clock().now().nanoseconds - first
            for topic, cls, stamp, raw in self._messages:
                due = start + (stamp - first) / 1e9 / self._rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                if isinstance(raw, bytes):
                    message = deserialize_message(raw, cls)
                    recorded_ns = (_stamp_ns(message.header.stamp)
                                   if hasattr(message, "header") else None)
                else:  # decoded at preload: one message object and its recorded stamp
                    message, recorded_ns = raw
                if self._restamp and recorded_ns is not None:
                    stamped = recorded_ns + offset_ns
                    message.header.stamp = Time(sec=stamped // 1_000_000_000,
                                                nanosec=stamped % 1_000_000_000)
                if shutting_down(self):
                    return  # Ctrl-C / SIGTERM: the context is gone, stopping is not an error
                self._topic_publishers[topic].publish(message)
                self.published += 1
            self.passes += 1
            self._metrics.publish(frames_published=self.published)
            if not self._loop:
                break
            # Keep the frame period across the wrap instead of firing two frames at once.
            self._stop.wait(period / 1e9 / self._rate)
        self.finished.set()

    def destroy_node(self) -> None:
        if hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join(timeout=2.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer bag_player --ros-args -p bag:=DIR``."""
    return run_node(BagPlayer, "bag_player", args)


if __name__ == "__main__":
    raise SystemExit(main())
