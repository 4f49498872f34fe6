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
EXAMPLE_SITES = PROJECT_ROOT / "data" / "01_raw" / "example_sites"
EXAMPLES_RAW = ("example_sites", "example_classification", "example_anomaly")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def corn_dir() -> Path:
    """The shared corn data (never committed); tests skip cleanly without it."""
    if not (SHARED_CORN / "corn_m5.csv").exists():
        pytest.skip(f"corn data not found at {SHARED_CORN} (it is never committed)")
    return SHARED_CORN


def make_project(root: Path, flower_app: bool = False) -> Path:
    """A copy of the project's configuration (and the committed Tecator data and generated
    example table) in ``root``: Kedro runs there never touch the real data/ folder."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    raw = root / "data" / "01_raw" / "tecator"
    raw.mkdir(parents=True)
    shutil.copy(TECATOR_CSV, raw / "tecator.csv")
    for name in EXAMPLES_RAW:
        shutil.copytree(PROJECT_ROOT / "data" / "01_raw" / name, root / "data" / "01_raw" / name)
    if flower_app:
        shutil.copytree(PROJECT_ROOT / "flower_app", root / "flower_app")
    return root


def run_session(
    project: Path, pipelines=None, params: dict | None = None, env: str | None = None
) -> None:
    """``kedro run`` of ``pipelines`` (all: None) in ``project`` with nested runtime params."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as s:
        s.run(pipeline_names=list(pipelines) if pipelines else None)


def latest(project: Path, rel: str) -> Path:
    """The newest version's file of a versioned dataset at ``rel``."""
    files = sorted((project / rel).glob("*/*"))
    assert files, f"nothing written under {rel}"
    return files[-1]


@pytest.fixture
def tmp_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def merge(a: dict, b: dict) -> dict:
    """``b`` over ``a``, nested dictionaries merged key by key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
