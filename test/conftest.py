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


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
