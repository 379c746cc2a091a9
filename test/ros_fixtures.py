"""Shared fixtures for in-process ROS 2 graph tests: a tiny bundle and an isolated rclpy context.

Import what a test module needs; pytest registers fixtures imported into a module under
their ``name`` (the functions carry a ``_fixture`` suffix so that test arguments do not
shadow the imports)::

    from ros_fixtures import ros_context_fixture, spin, tiny_bundle_fixture, wait_for  # noqa

    def test_something(ros_context, tiny_bundle): ...

* :func:`tiny_bundle` -- a session-wide bundle from
  :func:`split_infer.tools.synthetic_bundle.build_tiny_bundle` (an untrained ResNet-8:
  accuracy is meaningless, every byte path is the production one; no data set needed).
* :func:`ros_context` -- an ``rclpy`` context on a ROS domain of its own (derived from the
  pid, so parallel test runs and other ROS processes on the host do not cross-talk), with
  discovery limited to localhost; always shut down.
* :func:`spin` -- every given node spinning on its own executor in a background thread;
  stops and destroys everything on exit, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from split_infer.tools.synthetic_bundle import (
    TINY_CODECS,
    build_tiny_bundle,
    random_images,
    with_measurements,
)

# rclpy from the ros-* wheels finds its type support through AMENT_PREFIX_PATH (conftest.py
# sets it too; repeated here so this module also works when imported on its own).
if "AMENT_PREFIX_PATH" not in os.environ:
    import sys

    if (Path(sys.prefix) / "share/ament_index").is_dir():
        os.environ["AMENT_PREFIX_PATH"] = sys.prefix
# Keep DDS discovery on this host: the tests never need another machine.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

__all__ = [
    "TINY_CODECS",
    "build_tiny_bundle",
    "random_images",
    "ros_context_fixture",
    "ros_domain_id",
    "spin",
    "tiny_bundle_fixture",
    "wait_for",
    "with_measurements",
]

_session_bundle = None


@pytest.fixture(scope="session", name="tiny_bundle")
def tiny_bundle_fixture(tmp_path_factory: pytest.TempPathFactory):
    """A session-wide tiny bundle (see :func:`build_tiny_bundle`).

    Built once per session even when several modules import this fixture (pytest would
    otherwise keep one instance per importing module).
    """
    global _session_bundle
    if _session_bundle is None:
        _session_bundle = build_tiny_bundle(tmp_path_factory.mktemp("tiny_bundle"))
    return _session_bundle


def ros_domain_id() -> int:
    """A ROS domain for this process: 1..100, derived from the pid.

    Fast DDS maps a domain to UDP ports; ids up to 101 keep every port valid on Linux with
    the default participant-id range, and skipping 0 avoids the domain everyone else uses.
    """
    return 1 + os.getpid() % 100


@pytest.fixture(name="ros_context")
def ros_context_fixture():
    """An initialised rclpy context on this process's own domain; shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id())
    try:
        yield context
    finally:
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=context)


@contextlib.contextmanager
def spin(context, *nodes) -> Iterator:
    """Spin ``nodes`` in background threads, each on its own executor (as the demo and the
    testbed do: :class:`split_infer.ros.common.ExecutorPerNode`); yields the executor.

    On exit the executors are shut down, the threads joined and every node destroyed.
    """
    from split_infer.ros.common import ExecutorPerNode

    executor = ExecutorPerNode(context)
    for node in nodes:
        executor.add_node(node)
    try:
        yield executor
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in nodes:
            with contextlib.suppress(Exception):
                node.destroy_node()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, poll: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value.

    Used only to wait for messages to arrive, never to assert on timing: the timeout is a
    generous bound on a loaded 2-core machine, and a test fails on *what* arrived.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())
