"""rosbag2 (MCAP) camera bags with labels, read and written with the pure-Python ``rosbags``.

A camera bag holds two topics whose header stamps pair them up::

    /camera/image_raw   sensor_msgs/msg/Image               rgb8 frames
    /camera/labels      diagnostic_msgs/msg/DiagnosticArray  one status "label" per frame:
                                                             class_id, class, index

The labels use the same layout as the cloud node's results (a DiagnosticArray whose header is
the camera header), so a bag replayed through the graph can be scored frame by frame. Bags
written here open with ``ros2 bag info/play`` on a robot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from split_infer.data import ArrayDataset
from split_infer.errors import UserError

__all__ = [
    "IMAGE_TOPIC",
    "LABEL_TOPIC",
    "BagError",
    "BagFrame",
    "bag_dataset",
    "header_stamp_ns",
    "read_bag_messages",
    "read_bag_raw",
    "read_camera_bag",
    "typestore",
    "write_dataset_bag",
]

IMAGE_TOPIC = "/camera/image_raw"
LABEL_TOPIC = "/camera/labels"
IMAGE_TYPE = "sensor_msgs/msg/Image"
LABEL_TYPE = "diagnostic_msgs/msg/DiagnosticArray"


class BagError(UserError, ValueError):
    """A bag is missing, unreadable, or lacks what was asked for."""


def typestore():
    """The ROS 2 Kilted message definitions (the distro the ``ros-*`` wheels carry)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


@dataclass(frozen=True)
class BagFrame:
    """One camera frame of a bag, with its label when the bag has one."""

    index: int
    stamp_ns: int
    image: object  # rosbags sensor_msgs/msg/Image (fields as in rclpy's message)
    label: int | None
    label_name: str | None


def _stamp(store, stamp_ns: int):
    Time = store.types["builtin_interfaces/msg/Time"]
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def _header(store, stamp_ns: int, frame_id: str):
    Header = store.types["std_msgs/msg/Header"]
    return Header(stamp=_stamp(store, stamp_ns), frame_id=frame_id)


def label_message(store, stamp_ns: int, frame_id: str, class_id: int, name: str, index: int):
    """The labels-topic message for one frame (shape documented in the module docstring)."""
    types = store.types
    KeyValue = types["diagnostic_msgs/msg/KeyValue"]
    Status = types["diagnostic_msgs/msg/DiagnosticStatus"]
    status = Status(level=0, name="label", message=name, hardware_id="",
                    values=[KeyValue(key="class_id", value=str(class_id)),
                            KeyValue(key="class", value=name),
                            KeyValue(key="index", value=str(index))])
    return types[LABEL_TYPE](header=_header(store, stamp_ns, frame_id), status=[status])


def write_dataset_bag(
    path: str | Path,
    dataset: ArrayDataset,
    count: int | None = None,
    rate_hz: float = 30.0,
    start_ns: int = 1_700_000_000_000_000_000,
    frame_id: str = "camera",
    image_topic: str = IMAGE_TOPIC,
    label_topic: str = LABEL_TOPIC,
    progress: bool = True,
) -> Path:
    """Write ``count`` images of ``dataset`` (in order) as an MCAP camera bag at ``rate_hz``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; rosbag2 writers never overwrite")
    if rate_hz <= 0:
        raise ValueError("rate_hz must be positive")
    count = len(dataset) if count is None else min(count, len(dataset))
    store = typestore()
    Image = store.types[IMAGE_TYPE]
    period_ns = round(1e9 / rate_hz)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection(image_topic, IMAGE_TYPE, typestore=store)
        labels = writer.add_connection(label_topic, LABEL_TYPE, typestore=store)
        for i in tqdm(range(count), desc="bag frames", disable=not progress, leave=False):
            stamp_ns = start_ns + i * period_ns
            pixels = np.ascontiguousarray(dataset.images[i])
            height, width = pixels.shape[:2]
            image = Image(header=_header(store, stamp_ns, frame_id), height=height,
                          width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                          data=pixels.reshape(-1))
            writer.write(images, stamp_ns, store.serialize_cdr(image, IMAGE_TYPE))
            class_id = int(dataset.labels[i])
            label = label_message(store, stamp_ns, frame_id, class_id,
                                  dataset.classes[class_id], i)
            writer.write(labels, stamp_ns, store.serialize_cdr(label, LABEL_TYPE))
    return path


def read_bag_raw(path: str | Path, topics: list[str] | None = None
                 ) -> Iterator[tuple[str, str, int, bytes]]:
    """Yield ``(topic, msgtype, bag_time_ns, cdr_bytes)`` in bag order.

    The CDR bytes are exactly what rclpy's ``deserialize_message`` takes, so a player can
    republish any topic without knowing its type in advance.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (metadata.yaml not found)")
    try:
        with Reader(path) as reader:
            connections = [c for c in reader.connections if topics is None or c.topic in topics]
            if topics is not None and not connections:
                raise BagError(f"{path} has none of the topics {topics}; it has "
                               f"{sorted(c.topic for c in reader.connections)}")
            for connection, timestamp, raw in reader.messages(connections=connections):
                yield connection.topic, connection.msgtype, timestamp, bytes(raw)
    except BagError:
        raise
    except Exception as exc:  # rosbags raises a family of reader errors; name the bag
        raise BagError(f"cannot read bag {path}: {exc}") from exc


def read_bag_messages(path: str | Path, topics: list[str] | None = None
                      ) -> Iterator[tuple[str, str, int, object]]:
    """Yield ``(topic, msgtype, bag_time_ns, message)`` in bag order (rosbags messages)."""
    store = typestore()
    for topic, msgtype, timestamp, raw in read_bag_raw(path, topics):
        yield topic, msgtype, timestamp, store.deserialize_cdr(raw, msgtype)


def header_stamp_ns(header) -> int:
    """A ``std_msgs/Header`` stamp (rclpy or rosbags message) in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def read_camera_bag(path: str | Path, image_topic: str = IMAGE_TOPIC,
                    label_topic: str = LABEL_TOPIC) -> list[BagFrame]:
    """All camera frames of a bag with their labels paired by header stamp."""
    images, labels = [], {}
    for topic, _, _, message in read_bag_messages(path, [image_topic, label_topic]):
        if topic == image_topic:
            images.append(message)
        else:
            values = {kv.key: kv.value for status in message.status for kv in status.values}
            if "class_id" in values:
                labels[header_stamp_ns(message.header)] = (int(values["class_id"]),
                                                     values.get("class"))
    if not images:
        raise BagError(f"{path} has no messages on {image_topic}")
    frames = []
    for index, image in enumerate(images):
        stamp_ns = header_stamp_ns(image.header)
        label, name = labels.get(stamp_ns, (None, None))
        frames.append(BagFrame(index, stamp_ns, image, label, name))
    return frames


def bag_dataset(path: str | Path, classes: list[str], preprocessing=None,
                image_topic: str = IMAGE_TOPIC, label_topic: str = LABEL_TOPIC) -> ArrayDataset:
    """A camera bag as an :class:`ArrayDataset` (frames in bag order), for offline
    evaluation of exactly what a replay feeds the graph. Unlabelled frames get label -1."""
    from split_infer.pipeline.images import image_to_rgb

    frames = read_camera_bag(path, image_topic, label_topic)
    images = np.stack([image_to_rgb(frame.image) for frame in frames])
    labels = np.asarray([-1 if f.label is None else f.label for f in frames], np.int64)
    dataset = ArrayDataset(Path(path).name, images, labels, list(classes))
    if preprocessing is not None:
        dataset.preprocessing = preprocessing
    return dataset
