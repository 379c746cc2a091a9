"""Camera bags: written with rosbags, read back identically, and replayed by bag_player."""

import os
import threading
import time

import numpy as np
import pytest
from ros_fixtures import wait_for

from split_infer.data import ArrayDataset
from split_infer.tools.bag.storage import (
    BagError,
    read_bag_raw,
    read_camera_bag,
    write_dataset_bag,
)


def _dataset(count=12, size=(24, 20)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, *size, 3), dtype=np.uint8)
    return ArrayDataset("random", images, rng.integers(0, 3, count), ["a", "b", "c"])


def test_bag_round_trip_keeps_pixels_labels_and_stamps(tmp_path):
    data = _dataset()
    write_dataset_bag(tmp_path / "bag", data, rate_hz=50.0, progress=False)
    frames = read_camera_bag(tmp_path / "bag")
    assert len(frames) == len(data)
    for i, frame in enumerate(frames):
        image = frame.image
        assert (image.height, image.width, image.encoding) == (24, 20, "rgb8")
        np.testing.assert_array_equal(np.asarray(image.data).reshape(24, 20, 3), data.images[i])
        assert frame.label == data.labels[i] and frame.label_name == data.classes[frame.label]
    gaps = np.diff([f.stamp_ns for f in frames])
    assert (gaps == 20_000_000).all()


def test_bag_errors_are_clear(tmp_path):
    with pytest.raises(BagError, match="not a rosbag2 directory"):
        list(read_bag_raw(tmp_path))
    write_dataset_bag(tmp_path / "bag", _dataset(2), progress=False)
    with pytest.raises(BagError, match="has none of the topics"):
        list(read_bag_raw(tmp_path / "bag", ["/nope"]))
    with pytest.raises(FileExistsError):
        write_dataset_bag(tmp_path / "bag", _dataset(2), progress=False)


def test_bag_player_replays_every_frame_with_paired_restamped_labels(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from split_infer.ros.common import ExecutorPerNode
    from split_infer.tools.bag.player import BagPlayer
    from split_infer.tools.bag.recorder import BagRecorder

    write_dataset_bag(tmp_path / "bag", _dataset(15), rate_hz=100.0, progress=False)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=(os.getpid() % 200) + 10)
    images, labels = [], []
    listener = rclpy.create_node("listener", context=context)
    listener.create_subscription(Image, "/camera/image_raw", images.append, 50)
    listener.create_subscription(DiagnosticArray, "/camera/labels", labels.append, 50)
    recorder = BagRecorder(tmp_path / "recorded", ["/camera/image_raw", "/camera/labels"],
                           context=context)
    executor = ExecutorPerNode(context)
    executor.add_node(listener)
    executor.add_node(recorder)
    player = None
    try:
        started = time.time_ns()
        gate = threading.Event()
        player = BagPlayer(gate=gate, context=context, parameter_overrides=[
            Parameter("bag", value=str(tmp_path / "bag")), Parameter("rate", value=2.0),
            Parameter("start_delay", value=0.2)])
        executor.add_node(player)
        # Discovery before the first frame, so none is missed: both readers of each topic.
        assert wait_for(lambda: all(player.count_subscribers(topic) >= 2
                                    for topic in ("/camera/image_raw", "/camera/labels")))
        time.sleep(0.6)  # past start_delay: the closed gate still holds playback
        assert player.published == 0 and not images
        gate.set()
        assert player.finished.wait(10.0)
        deadline = time.monotonic() + 5.0
        while (len(images) < 15 or len(labels) < 15) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(images) == 15 and len(labels) == 15
        image_stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in images]
        label_stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in labels]
        assert image_stamps == label_stamps
        assert image_stamps[0] >= started  # restamped onto the live clock
        assert np.asarray(images[3].data).size == 24 * 20 * 3
        # the recorder spins on its own thread: it may take its last sample a moment later
        assert wait_for(lambda: len(recorder.counts) == 2
                        and all(n == 15 for n in recorder.counts.values()))
        recorder.close()
        recorded = read_camera_bag(tmp_path / "recorded")
        assert [f.label for f in recorded] == [int(v) for v in _dataset(15).labels]
        np.testing.assert_array_equal(np.asarray(recorded[7].image.data),
                                      _dataset(15).images[7].reshape(-1))
    finally:
        recorder.close()
        recorder.destroy_node()
        executor.shutdown()
        if player is not None:
            player.destroy_node()
        listener.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_bag_play_stops_cleanly_on_a_signal(tmp_path, signal_name):
    """A player stopped the way launch or a terminal stops it exits 0, without a traceback."""
    import signal
    import subprocess
    import sys

    write_dataset_bag(tmp_path / "bag", _dataset(5), rate_hz=10.0, progress=False)
    env = dict(os.environ, ROS_DOMAIN_ID=str((os.getpid() % 100) + 1),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    player = subprocess.Popen(
        [sys.executable, "-m", "split_infer.tools.cli", "bag", "play", str(tmp_path / "bag"),
         "--loop"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "playing" not in line and time.monotonic() < deadline:
            line = player.stderr.readline()  # the node logs "playing N messages" once it runs
        assert "playing" in line
        player.send_signal(getattr(signal, signal_name))
        _, err = player.communicate(timeout=30)
    finally:
        player.kill()
    # SIGTERM (launch stopping it) and Ctrl-C are normal ends
    assert player.returncode == 0, err
    assert "Traceback" not in err and "Failed" not in err, err


def test_jpeg_bag_of_mixed_sizes_reads_back_cropped_by_the_recipe(tmp_path):
    from split_infer.data import Preprocessing
    from split_infer.tools.bag.storage import bag_dataset, write_frames_bag

    rng = np.random.default_rng(1)
    images = [np.full((60, 80, 3), 40 * i, np.uint8) for i in range(3)]
    images.append(rng.integers(0, 256, (90, 50, 3), dtype=np.uint8))  # portrait, other size
    labels = [0, 2, -1, 1]  # the third frame is unlabelled
    write_frames_bag(tmp_path / "bag", images, labels, ["a", "b", "c"], jpeg_quality=95,
                     progress=False)
    frames = read_camera_bag(tmp_path / "bag")
    assert [f.label for f in frames] == [0, 2, None, 1]
    assert all(f.image.format.endswith("jpeg compressed bgr8") for f in frames)
    topics = {topic for topic, *_ in read_bag_raw(tmp_path / "bag")}
    assert topics == {"/camera/image_raw/compressed", "/camera/labels"}
    with pytest.raises(BagError, match="different sizes"):
        bag_dataset(tmp_path / "bag", ["a", "b", "c"])
    recipe = Preprocessing(size=(32, 32), resize_shorter=36)
    data = bag_dataset(tmp_path / "bag", ["a", "b", "c"], recipe)
    assert data.images.shape == (4, 32, 32, 3) and list(data.labels) == [0, 2, -1, 1]
    assert abs(int(data.images[1].mean()) - 40) <= 2  # flat grey survives JPEG closely
    assert data.preprocessing.resize_shorter is None and data.preprocessing.size == (32, 32)


def test_bag_make_writes_camera_size_jpeg_frames_in_shuffled_order(tmp_path, capsys):
    import cv2

    from split_infer.tools.cli import main

    root = tmp_path / "photos"
    for k, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / name / f"{i}.png"), np.full((30, 40, 3), 100 * k, np.uint8))
    out = tmp_path / "bag"
    assert main(["bag", "make", "--out", str(out), "--dataset", "folder", "--data", str(root),
                 "--split", "test", "--count", "6", "--size", "64x48", "--jpeg", "90"]) == 0
    assert "6 frames" in capsys.readouterr().out
    frames = read_camera_bag(out)
    assert len(frames) == 6
    labels = [f.label for f in frames]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1] and labels != sorted(labels)
    first = cv2.imdecode(np.frombuffer(bytes(frames[0].image.data), np.uint8), 1)
    assert first.shape == (48, 64, 3)
    with pytest.raises(SystemExit):
        main(["bag", "make", "--out", str(tmp_path / "x"), "--size", "64by48"])


def test_bag_player_can_publish_compressed_frames_decoded(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from split_infer.tools.bag.player import BagPlayer
    from split_infer.tools.bag.storage import write_frames_bag

    ramp = np.linspace(0, 255, 64, dtype=np.float32)  # smooth: JPEG keeps it closely
    images = [np.stack([np.tile(ramp, (48, 1)), np.full((48, 64), 40.0 * k),
                        np.tile(ramp[::-1], (48, 1))], axis=2).astype(np.uint8)
              for k in range(2)]
    write_frames_bag(tmp_path / "bag", images, [0, 1], ["a", "b"], jpeg_quality=100,
                     progress=False)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=(os.getpid() % 200) + 11)
    player = None
    try:
        player = BagPlayer(gate=threading.Event(), context=context, parameter_overrides=[
            Parameter("bag", value=str(tmp_path / "bag")), Parameter("decompress", value=True)])
        decoded = [(topic, entry) for topic, cls, _, entry in player._messages if cls is Image]
        assert [topic for topic, _ in decoded] == ["/camera/image_raw"] * 2
        image, stamp_ns = decoded[1][1]
        assert (image.height, image.width, image.encoding) == (48, 64, "bgr8")
        pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(48, 64, 3)[:, :, ::-1]
        assert np.abs(pixels.astype(int) - images[1]).mean() < 3  # RGB order kept
        assert stamp_ns == 1_700_000_000_000_000_000 + round(1e9 / 30)
    finally:
        if player is not None:
            player.destroy_node()
        rclpy.shutdown(context=context)


def test_shipped_imagenet_demo_bag_is_camera_size_jpeg_in_mixed_class_order():
    from split_infer.defaults import IMAGENET_DEMO_BAG

    size = sum(f.stat().st_size for f in IMAGENET_DEMO_BAG.iterdir())
    assert size <= 8 * 2**20  # the data's licence allows 100 derived frames, the repo ~8 MB
    frames = read_camera_bag(IMAGENET_DEMO_BAG)
    assert len(frames) == 100
    assert all(f.image.format.endswith("jpeg compressed bgr8") for f in frames)
    labels = [f.label for f in frames]
    assert None not in labels and len(set(labels)) == 100 and labels != sorted(labels)
    import cv2

    first = cv2.imdecode(np.frombuffer(bytes(frames[0].image.data), np.uint8), 1)
    assert first.shape == (480, 640, 3)
