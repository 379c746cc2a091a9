"""The testbed's cloud-only senders: the camera frame as JPEG, or the model's input crop."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
cv2 = pytest.importorskip("cv2")

from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from split_infer.data import Preprocessing  # noqa: E402
from split_infer.ros.common import ExecutorPerNode  # noqa: E402
from split_infer.ros.messages import CAMERA_QOS  # noqa: E402
from split_infer.tools.testbed.references import IMAGE_TRANSPORT_QOS, JpegSender  # noqa: E402

DOMAIN_ID = 100 + os.getpid() % 50
RECIPE = Preprocessing((224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "area", 256)


def _frame() -> np.ndarray:
    y, x = np.mgrid[0:480, 0:640]
    return np.stack([(x * 255 // 639), (y * 255 // 479), ((x + y) % 256)],
                    axis=-1).astype(np.uint8)


@pytest.mark.parametrize("crop", [None, RECIPE], ids=["camera_frame", "input_crop"])
def test_jpeg_sender_sends_the_frame_or_the_models_input_crop(crop):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = ExecutorPerNode(context)
    nodes = []
    try:
        sender = JpegSender(90, crop=crop, context=context)
        probe = Node("probe", context=context)
        got: list[CompressedImage] = []
        lock = threading.Lock()

        def keep(msg: CompressedImage) -> None:
            with lock:
                got.append(msg)

        probe.create_subscription(CompressedImage, "image/compressed", keep,
                                  IMAGE_TRANSPORT_QOS)
        camera = probe.create_publisher(Image, "image", CAMERA_QOS)
        nodes = [sender, probe]
        for node in nodes:
            executor.add_node(node)
        rgb = _frame()
        msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=rgb.tobytes())
        msg.header.frame_id = "camera"
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            camera.publish(msg)
            time.sleep(0.1)
            with lock:
                if got:
                    break
        assert got, "no JPEG came out"
        out = got[0]
        assert out.header.frame_id == "camera" and "jpeg" in out.format
        decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(out.data, np.uint8),
                                            cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        expected = rgb if crop is None else crop.resize_camera_frame(rgb)
        assert decoded.shape == expected.shape
        assert np.abs(decoded.astype(int) - expected).mean() < 3.0  # JPEG q90 of a smooth image
        if crop is not None:
            # The receiver's preprocessing leaves a frame of the input size as it is.
            assert np.array_equal(crop(decoded), crop.at_input_size()(decoded))
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_merging_keeps_other_cells_and_regates_a_robot_that_spent_its_budget():
    from split_infer.tools.bench.testbed_e2e import merge_rows

    spent = {"trace": "const_3mbps.csv", "strategy": "9:9.36", "repeat": 0,
             "delivered_fps": 23.0, "bound_fps": 28.3, "bound_by": "edge", "gate": "applied",
             "valid": False, "cpu_percent_mean": {"edge": 24.9}, "edge_cpu_budget": 0.25}
    rerun = {**spent, "strategy": "adaptive"}
    failed = {"trace": "const_3mbps.csv", "strategy": "edge_only", "repeat": 0, "error": "x"}
    merged = merge_rows([spent, rerun, failed], {("const_3mbps.csv", "adaptive")})
    assert [r["strategy"] for r in merged] == ["9:9.36", "edge_only"]
    assert merged[0]["gate"] == "robot-limited" and merged[0]["valid"]
    assert merged[1] == failed
    starved = {**spent, "cpu_percent_mean": {"edge": 12.0}}
    assert not merge_rows([starved], set())[0]["valid"]


def test_merging_refuses_to_compare_strategies_across_machines():
    from split_infer.tools.bench.testbed_e2e import merge_conflicts

    xeon = {"trace": "const_3mbps.csv", "strategy": "9:9.36", "machine_cpu": "Xeon"}
    other_trace = {**xeon, "trace": "const_1mbps.csv"}
    cells = {("const_3mbps.csv", "adaptive")}
    assert merge_conflicts([xeon, other_trace], cells, "EPYC") == ["const_3mbps.csv"]
    assert merge_conflicts([xeon, other_trace], cells, "Xeon") == []
    # Every strategy of the trace run again: nothing of it is kept, nothing compared.
    assert merge_conflicts([xeon], {("const_3mbps.csv", "9:9.36"), *cells}, "EPYC") == []


def test_a_benchmark_strategy_names_the_testbed_strategy_the_fallback_and_a_companion():
    from split_infer.tools.bench.testbed_e2e import EdgeStrategy, testbed_strategy

    assert testbed_strategy("9:20.8", True) == EdgeStrategy("9:20.8", "drop")
    assert testbed_strategy("9:20.8+fallback", False) == EdgeStrategy("9:20.8", "edge_only")
    # The adaptive robot holds the whole model when the scheduler may choose it.
    assert testbed_strategy("adaptive", True) == EdgeStrategy("adaptive", "edge_only")
    assert testbed_strategy("adaptive", False) == EdgeStrategy("adaptive", "drop")
    assert testbed_strategy("edge_only", True) == EdgeStrategy("edge_only", "drop")
    assert testbed_strategy("9:20.8+0:58.4@0.24", True) == EdgeStrategy(
        "9:20.8", "drop", "0:58.4", 0.24)
    for bad in ("adaptive+fallback", "edge_only+fallback", "adaptive+0:58.4@0.2"):
        with pytest.raises(ValueError, match="follows a fixed configuration"):
            testbed_strategy(bad, True)
    for bad in ("9:20.8+fallbackx", "9:20.8+0:58.4", "9:20.8+0:58.4@1.5", "9:20.8+0:58.4@x",
                "9:20.8+fast@0.2", "9:20.8+0:58.4@0"):
        with pytest.raises(ValueError, match="split:ratio@share"):
            testbed_strategy(bad, True)


def test_the_control_plane_runs_on_the_side_asked_and_the_rest_stays():
    from split_infer.tools.testbed.sides import ROLE_GROUP, role_group, role_side

    for role in ROLE_GROUP:
        assert role_side(role) == ("cloud" if role in ("cloud", "probe_echo") else "edge")
        assert role_group(role) == ROLE_GROUP[role]
    for role in ("monitor", "scheduler"):
        assert role_side(role, "server") == "cloud" and role_group(role, "server") == "cloud"
    # The edge node and the prober send across the link; the harness is no product process.
    for role, group in (("edge", "edge"), ("prober", "edge"), ("camera", "harness"),
                        ("recorder", "harness")):
        assert role_side(role, "server") == "edge" and role_group(role, "server") == group
    with pytest.raises(ValueError, match="robot"):
        role_side("monitor", "cloud")
