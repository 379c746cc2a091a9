"""rosbag2 (MCAP) camera bags with labels, read and written with the pure-Python ``rosbags``.

A camera bag holds two topics whose header stamps pair them up::

    /camera/image_raw   sensor_msgs/msg/Image               rgb8 frames
      (or /camera/image_raw/compressed  sensor_msgs/msg/CompressedImage, JPEG, as
       image_transport's compressed plugin records them)
    /camera/labels      diagnostic_msgs/msg/DiagnosticArray  one status "label" per frame:
                                                             class_id, class, index
                                                             (none for unlabelled frames)

The labels use the same layout as the cloud node's results (a DiagnosticArray whose header is
the camera header), so a bag replayed through the graph can be scored frame by frame. Bags
written here open with ``ros2 bag info/play`` on a robot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from split_infer.data import ArrayDataset
from split_infer.errors import UserError

__all__ = [
    "COMPRESSED_SUFFIX",
    "COMPRESSED_TYPE",
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
    "write_frames_bag",
]

IMAGE_TOPIC = "/camera/image_raw"
LABEL_TOPIC = "/camera/labels"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
#: image_transport's naming: the compressed stream of ``T`` is ``T/compressed``.
COMPRESSED_SUFFIX = "/compressed"
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
    **options,
) -> Path:
    """Write the first ``count`` images of ``dataset`` (in order) as an MCAP camera bag; the
    options are :func:`write_frames_bag`'s."""
    count = len(dataset) if count is None else min(count, len(dataset))
    return write_frames_bag(path, dataset.images[:count], dataset.labels[:count],
                            dataset.classes, **options)


def write_frames_bag(
    path: str | Path,
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    classes: Sequence[str],
    rate_hz: float = 30.0,
    jpeg_quality: int | None = None,
    start_ns: int = 1_700_000_000_000_000_000,
    frame_id: str = "camera",
    image_topic: str = IMAGE_TOPIC,
    label_topic: str = LABEL_TOPIC,
    progress: bool = True,
) -> Path:
    """Write uint8 RGB ``images`` (any sizes) with their ``labels`` (indices into
    ``classes``; -1: unlabelled, no label message) as an MCAP camera bag at ``rate_hz``.

    ``jpeg_quality`` (1..100): frames go to ``image_topic + "/compressed"`` as JPEG
    ``CompressedImage`` messages, the way image_transport's compressed plugin records a
    camera; None: raw ``rgb8`` ``Image`` messages on ``image_topic``.
    """
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; rosbag2 writers never overwrite")
    if rate_hz <= 0:
        raise ValueError("rate_hz must be positive")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be 1..100, got {jpeg_quality}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    store = typestore()
    period_ns = round(1e9 / rate_hz)
    kind = IMAGE_TYPE if jpeg_quality is None else COMPRESSED_TYPE
    topic = image_topic if jpeg_quality is None else image_topic + COMPRESSED_SUFFIX
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        frames = writer.add_connection(topic, kind, typestore=store)
        label_connection = writer.add_connection(label_topic, LABEL_TYPE, typestore=store)
        for i in tqdm(range(len(images)), desc="bag frames", disable=not progress,
                      leave=False):
            stamp_ns = start_ns + i * period_ns
            pixels = np.ascontiguousarray(images[i])
            header = _header(store, stamp_ns, frame_id)
            if jpeg_quality is None:
                height, width = pixels.shape[:2]
                message = store.types[IMAGE_TYPE](
                    header=header, height=height, width=width, encoding="rgb8",
                    is_bigendian=0, step=width * 3, data=pixels.reshape(-1))
            else:
                ok, jpeg = cv2.imencode(".jpg", pixels[:, :, ::-1],
                                        [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
                if not ok:
                    raise ValueError(f"frame {i}: JPEG encoding failed")
                message = store.types[COMPRESSED_TYPE](
                    header=header, format="rgb8; jpeg compressed bgr8", data=jpeg.reshape(-1))
            writer.write(frames, stamp_ns, store.serialize_cdr(message, kind))
            class_id = int(labels[i])
            if class_id >= 0:
                label = label_message(store, stamp_ns, frame_id, class_id, classes[class_id], i)
                writer.write(label_connection, stamp_ns, store.serialize_cdr(label, LABEL_TYPE))
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
    """All camera frames of a bag (raw ``image_topic``, or its ``/compressed`` stream when the
    bag has no raw frames) with their labels paired by header stamp."""
    compressed_topic = image_topic + COMPRESSED_SUFFIX
    images: dict[str, list] = {image_topic: [], compressed_topic: []}
    labels = {}
    for topic, _, _, message in read_bag_messages(
            path, [image_topic, compressed_topic, label_topic]):
        if topic in images:
            images[topic].append(message)
        else:
            values = {kv.key: kv.value for status in message.status for kv in status.values}
            if "class_id" in values:
                labels[header_stamp_ns(message.header)] = (int(values["class_id"]),
                                                     values.get("class"))
    chosen = images[image_topic] or images[compressed_topic]
    if not chosen:
        raise BagError(f"{path} has no messages on {image_topic} or {compressed_topic}")
    frames = []
    for index, image in enumerate(chosen):
        stamp_ns = header_stamp_ns(image.header)
        label, name = labels.get(stamp_ns, (None, None))
        frames.append(BagFrame(index, stamp_ns, image, label, name))
    return frames


def bag_dataset(path: str | Path, classes: list[str], preprocessing=None,
                image_topic: str = IMAGE_TOPIC, label_topic: str = LABEL_TOPIC) -> ArrayDataset:
    """A camera bag as an :class:`ArrayDataset` (frames in bag order), for offline
    evaluation of exactly what a replay feeds the graph. Unlabelled frames get label -1.

    With ``preprocessing``, every frame is resized (and centre-cropped) by its recipe at
    load, as the edge node does frame by frame, and the dataset keeps only the
    normalisation: camera-size frames never pile up in memory, and a bag whose frames differ
    in size still loads. Without it the frames stay as recorded and must share one size.
    """
    from split_infer.pipeline.images import compressed_to_rgb, image_to_rgb

    frames = read_camera_bag(path, image_topic, label_topic)
    images = []
    for frame in frames:
        rgb = (compressed_to_rgb(frame.image) if hasattr(frame.image, "format")
               else image_to_rgb(frame.image))
        images.append(rgb if preprocessing is None else preprocessing.resize_frame(rgb))
    if len({image.shape for image in images}) > 1:
        raise BagError(f"{path}: frames of different sizes "
                       f"{sorted({image.shape[:2] for image in images})[:4]}; give the model's "
                       "preprocessing to crop them at load")
    labels = np.asarray([-1 if f.label is None else f.label for f in frames], np.int64)
    dataset = ArrayDataset(Path(path).name, np.stack(images), labels, list(classes))
    if preprocessing is not None:
        dataset.preprocessing = preprocessing.at_input_size()
    return dataset
