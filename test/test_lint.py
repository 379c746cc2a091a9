"""The code base is ruff-clean (config in ruff.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    venv_ruff = Path(sys.executable).with_name("ruff")
    if venv_ruff.is_file():
        return [str(venv_ruff)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.fail("ruff is not installed; run scripts/setup.sh --test")


def test_ruff_check_passes():
    result = subprocess.run(
        [*_ruff(), "check", "."],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
