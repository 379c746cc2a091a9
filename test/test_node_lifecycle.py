"""A node's process from start to stop, as ``ros2 run`` and ``ros2 launch`` drive it."""

import os

import pytest


@pytest.mark.ros
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_node_stopped_by_a_signal_exits_0_without_error_lines(tmp_path, signal_name):
    """Ctrl-C or launch's SIGTERM is a normal end for a node: status 0, no traceback, no
    ERROR line (a frame in flight at that moment included)."""
    import signal
    import subprocess
    import sys
    import time

    from split_infer.tools.synthetic_bundle import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path / "bundle")
    env = dict(os.environ, ROS_DOMAIN_ID=str(os.getpid() % 100 + 1),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    node = subprocess.Popen([sys.executable, "-m", "split_infer.ros.edge_node", "--ros-args",
                             "-p", f"bundle:={bundle.path}"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, line = time.monotonic() + 60, ""
        while "preloaded" not in line and time.monotonic() < deadline:
            line = node.stdout.readline()
        assert "preloaded" in line
        node.send_signal(getattr(signal, signal_name))
        out, _ = node.communicate(timeout=30)
    finally:
        node.kill()
    assert node.returncode == 0, out
    assert "Traceback" not in out and "ERROR" not in out, out


@pytest.mark.ros
def test_the_heap_a_node_starts_with_is_out_of_the_garbage_collectors_scans():
    """``run_node`` (and the testbed's and the demo's processes) freeze what exists once the
    nodes are built: a full collection walked every preloaded model again and again
    (``bench/README.md``, "The garbage collector on a weak robot")."""
    import gc
    import inspect

    from split_infer.ros import common
    from split_infer.tools.demo import graph
    from split_infer.tools.testbed import sides

    held = [[k] for k in range(1000)]
    try:
        common.freeze_heap()
        assert gc.get_freeze_count() >= len(held)
    finally:
        gc.unfreeze()
    for runner in (common._run, sides.run_role, graph.run_demo):
        assert "freeze_heap()" in inspect.getsource(runner), runner.__name__
