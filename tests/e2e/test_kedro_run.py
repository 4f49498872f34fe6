"""Kedro sessions on a temporary copy of the project's configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fdrmfl_pipeline.core.modalities import from_arrow

from ..conftest import latest, make_project, run_session


def _run(project: Path, pipelines=("ingestion", "partitioning"), params=None, env=None):
    run_session(project, pipelines, params, env)


SMALL_SYNTHETIC = {"ingestion": {"synthetic": {"n_train": 120, "n_test": 30}}}


def test_ingestion_and_partitioning_run_in_a_session(tmp_project):
    _run(tmp_project, params=SMALL_SYNTHETIC)
    data = from_arrow(
        pq.read_table(latest(tmp_project, "data/02_intermediate/multimodal_dataset.parquet"))
    )
    assert data.n == 150 and data.arrays["image"].shape == (150, 3, 32, 32)
    assign = pd.read_parquet(latest(tmp_project, "data/03_primary/client_assignments.parquet"))
    assert len(assign) == 150 and assign["sample_id"].is_unique
    summary = pd.read_parquet(latest(tmp_project, "data/08_reporting/partition_summary.parquet"))
    assert summary["n"].sum() == 150 and set(summary["client"]) == {0, 1, 2}
    assert (tmp_project / "data/08_reporting/client_targets.png").stat().st_size > 1000


def test_same_seed_same_artifacts_other_seed_other_artifacts(tmp_path):
    outs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        p = make_project(tmp_path / name)
        _run(p, params={**SMALL_SYNTHETIC, "seed": seed, "partitioning": {"scheme": "dirichlet"}})
        outs.append(pd.read_parquet(latest(p, "data/03_primary/client_assignments.parquet")))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    assert not outs[0].equals(outs[2])


def test_tecator_source_with_standard_split(tmp_project):
    _run(
        tmp_project,
        params={
            "ingestion": {"source": "tecator", "tecator": {"modalities": ["spectrum_d2", "lab"]}},
            "partitioning": {"scheme": "iid", "n_clients": 2},
        },
    )
    assign = pd.read_parquet(latest(tmp_project, "data/03_primary/client_assignments.parquet"))
    test_ids = set(assign.loc[assign["split"] == "test", "sample_id"])
    assert test_ids == {f"tecator_{i:03d}" for i in range(173, 216)}


def test_corn_source_from_a_configured_directory(tmp_project, corn_dir):
    _run(
        tmp_project,
        pipelines=("ingestion",),
        params={
            "paths": {"corn_dir": str(corn_dir)},
            "ingestion": {"source": "corn", "corn": {"target": "starch", "modalities": ["mp6"]}},
        },
    )
    data = from_arrow(
        pq.read_table(latest(tmp_project, "data/02_intermediate/multimodal_dataset.parquet"))
    )
    assert data.n == 80 and data.modality_names == ["mp6"]
    assert not (tmp_project / "data/01_raw/corn").exists()


def test_bad_input_fails_and_writes_nothing(tmp_project):
    bad = tmp_project / "data/01_raw/table.csv"
    df = pd.DataFrame({"y": [1.0, 2.0, np.nan], "a": [1.0, 2.0, 3.0]})
    df.to_csv(bad, index=False)
    from fdrmfl_pipeline.errors import NonFiniteValueError

    params = {
        "ingestion": {
            "source": "table",
            "table": {"target": "y", "modalities": {"m": {"columns": ["a"]}}},
        }
    }
    with pytest.raises(NonFiniteValueError, match="row_2"):
        _run(tmp_project, params=params)
    assert not (tmp_project / "data/02_intermediate/multimodal_dataset.parquet").exists()
    assert not (tmp_project / "data/03_primary/client_assignments.parquet").exists()


def test_bad_input_keeps_earlier_versions_intact(tmp_project):
    _run(tmp_project, pipelines=("ingestion",), params=SMALL_SYNTHETIC)
    first = latest(tmp_project, "data/02_intermediate/multimodal_dataset.parquet")
    before = first.read_bytes()
    with pytest.raises(Exception, match="input file not found"):
        _run(
            tmp_project,
            pipelines=("ingestion",),
            params={
                "ingestion": {
                    "source": "table",
                    "table": {"modalities": {"m": {"columns": ["a"]}}},
                },
                "paths": {"table": str(tmp_project / "missing.csv")},
            },
        )
    versions = list((tmp_project / "data/02_intermediate/multimodal_dataset.parquet").iterdir())
    assert len(versions) == 1 and first.read_bytes() == before


def test_cli_exits_non_zero_with_a_clear_message_on_bad_parameters(tmp_project):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--pipeline",
            "ingestion",
            "--params",
            "ingestion.synthetic.function=f9",
        ],
        check=False,
        cwd=tmp_project,
        capture_output=True,
        text=True,
        timeout=300,
        env={"KEDRO_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin", "HOME": str(tmp_project)},
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "ingestion" in out and "function" in out
    assert not (tmp_project / "data/02_intermediate/multimodal_dataset.parquet").exists()
