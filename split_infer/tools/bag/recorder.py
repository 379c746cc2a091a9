"""bag_recorder: writes live topics into a rosbag2 (MCAP) with rosbags, without ros2bag.

Subscriptions are raw (serialized CDR), so any message type the Kilted type store knows is
recorded without deserializing it. Topic types are discovered from the graph; a topic that
is not up yet is retried until it appears.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile

from split_infer.tools.bag.storage import BagError, typestore

__all__ = ["BagRecorder"]


class BagRecorder(Node):
    """Records ``topics`` into ``path`` until :meth:`close`."""

    def __init__(self, path: str | Path, topics: list[str], **kwargs) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        super().__init__("bag_recorder", **kwargs)
        if not topics:
            raise BagError("name at least one topic to record")
        self._path = Path(path)
        if self._path.exists():
            raise FileExistsError(f"{self._path} exists; rosbag2 writers never overwrite")
        self._store = typestore()
        self._writer = Writer(self._path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._lock = threading.Lock()
        self._pending = {self.resolve_topic_name(t) for t in topics}
        self._connections = {}
        self.counts: dict[str, int] = {}
        self._timer = self.create_timer(0.1, self._discover)
        self._discover()

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic not in self._pending or not types:
                continue
            msgtype = types[0]
            if msgtype not in self._store.types:
                self.get_logger().error(f"cannot record {topic}: type {msgtype} is unknown")
                self._pending.discard(topic)
                continue
            package, kind, name = msgtype.split("/")
            module = __import__(f"{package}.{kind}", fromlist=[name])
            with self._lock:
                self._connections[topic] = self._writer.add_connection(
                    topic, msgtype, typestore=self._store)
            self.counts[topic] = 0
            self.create_subscription(getattr(module, name), topic,
                                     lambda raw, t=topic: self._write(t, raw),
                                     QoSProfile(depth=100), raw=True)
            self._pending.discard(topic)
            self.get_logger().info(f"recording {topic} ({msgtype})")

    def _write(self, topic: str, raw: bytes) -> None:
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(self._connections[topic], self.get_clock().now().nanoseconds,
                               raw)
            self.counts[topic] += 1

    def close(self) -> Path:
        """Flush and close the bag; safe to call twice."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return self._path
