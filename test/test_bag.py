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
