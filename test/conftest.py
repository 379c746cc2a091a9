"""Shared test set-up: ament index for the ros-* wheels, few threads, small fixtures."""

import os
import sys
from pathlib import Path

import pytest

# rclpy from the ros-* wheels finds its type support through AMENT_PREFIX_PATH.
if "AMENT_PREFIX_PATH" not in os.environ and (Path(sys.prefix) / "share/ament_index").is_dir():
    os.environ["AMENT_PREFIX_PATH"] = sys.prefix

REPO = Path(__file__).resolve().parents[1]

# Tiny models on a shared 2-core machine: one intra-op thread is fastest and steadiest (with
# two, oversubscription made some tests up to 30x slower while other jobs ran).
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the lint-only and README tests do not need torch
    pass


#: Test tiers. The README's test command runs them all; ``-m unit`` (or ``-m "not root"``...)
#: picks a tier. ``ros`` is assigned to every test that uses the ``ros_context`` fixture and
#: ``unit`` to every test with no other tier; ``root`` and ``realtime`` are marked by hand.
TIERS = {
    "unit": "no ROS graph, no root, no dependence on wall-clock rates",
    "ros": "in-process ROS 2 graph (nodes on one executor, an rclpy context of its own)",
    "root": "real links: network namespaces, veth, tc, iptables (skipped without root)",
    "realtime": "depends on wall-clock rates (frames per second through a live graph); "
                "asserts on what arrived with margins a loaded machine still meets",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "ros_context" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ros)
        if not any(item.iter_markers(name) for name in ("ros", "root", "realtime")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
