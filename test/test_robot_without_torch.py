"""A robot's runtime without torch: the README's robot install has ONNX Runtime, not torch.

The edge, stage and cloud nodes of a three-stage chain start and serve a frame in a process
where ``import torch`` fails (the default backend, ONNX Runtime; the middle stage's segment is
cut out of the bundle's tapped ONNX model, not exported from the weights)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from ros_fixtures import build_tiny_bundle, ros_domain_id

pytestmark = pytest.mark.ros

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys, threading, time

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"{name} is not installed on this robot")
            return None

    sys.meta_path.insert(0, NoTorch())
    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from diagnostic_msgs.msg import DiagnosticArray

    from split_infer.pipeline.images import rgb_to_image
    from split_infer.ros.cloud_node import CloudNode
    from split_infer.ros.common import ExecutorPerNode
    from split_infer.ros.edge_node import EdgeNode
    from split_infer.ros.messages import CAMERA_QOS
    from split_infer.ros.stage_node import StageNode

    bundle, domain = sys.argv[1], int(sys.argv[2])
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    p = lambda name, value: Parameter(name, value=value)
    edge = EdgeNode(context=context, namespace="/robot", parameter_overrides=[
        p("bundle", bundle), p("split_point", 2), p("ratio", 4.0), p("preload", ["2:4"]),
        p("backpressure", False)])
    stage = StageNode(context=context, namespace="/", parameter_overrides=[
        p("bundle", bundle), p("upstream", "robot"), p("output_namespace", "pi"),
        p("input_configuration", "s2_r4"), p("output_configuration", "s3_r4")])
    cloud = CloudNode(context=context, namespace="/", parameter_overrides=[
        p("bundle", bundle), p("edge_namespaces", ["pi"])])
    probe = rclpy.create_node("probe", context=context)
    results = []
    probe.create_subscription(DiagnosticArray, "/pi/results", results.append, 10)
    camera = probe.create_publisher(Image, "/robot/image", CAMERA_QOS)
    executor = ExecutorPerNode(context)
    for node in (edge, stage, cloud, probe):
        executor.add_node(node)
    raw = rgb_to_image(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    frame = Image(height=raw.height, width=raw.width, encoding=raw.encoding,
                  is_bigendian=raw.is_bigendian, step=raw.step)
    frame.data = bytes(raw.data)
    deadline = time.monotonic() + 60
    while not results and time.monotonic() < deadline:
        if camera.get_subscription_count():
            camera.publish(frame)
        time.sleep(0.2)
    executor.shutdown()
    assert "torch" not in sys.modules
    print("RESULTS", len(results), results[0].status[0].name if results else None)
    sys.exit(0 if results else 1)
""")


def test_edge_stage_and_cloud_serve_frames_without_torch(tmp_path):
    bundle = build_tiny_bundle(tmp_path / "bundle")
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle.path),
                          str(ros_domain_id())], env=env, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "RESULTS 1" in run.stdout or "RESULTS" in run.stdout, run.stdout
