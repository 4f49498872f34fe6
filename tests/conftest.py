"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_CORN = PROJECT_ROOT.parent / "shared" / "datasets" / "corn"
TECATOR_CSV = PROJECT_ROOT / "data" / "01_raw" / "tecator" / "tecator.csv"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def corn_dir() -> Path:
    """The shared corn data (never committed); tests skip cleanly without it."""
    if not (SHARED_CORN / "corn_m5.csv").exists():
        pytest.skip(f"corn data not found at {SHARED_CORN} (it is never committed)")
    return SHARED_CORN


@pytest.fixture
def tmp_project(tmp_path: Path) -> Path:
    """A copy of the project's configuration in a temp dir: runs never touch the real data/."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local")
    )
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()
    raw = tmp_path / "data" / "01_raw" / "tecator"
    raw.mkdir(parents=True)
    shutil.copy(TECATOR_CSV, raw / "tecator.csv")
    return tmp_path
