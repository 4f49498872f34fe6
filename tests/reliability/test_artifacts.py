"""Stored artifacts: a failed save leaves the previous version as the latest and no temporary
file; an unreadable version names itself and the way out."""

from __future__ import annotations

import errno

import pandas as pd
import pyarrow as pa
import pytest
from kedro.io.core import DatasetError, Version

from fdrmfl_pipeline.datasets import ArrowParquetDataset, ParquetDataset
from fdrmfl_pipeline.errors import CheckpointError, StoredArtifactError

from ..conftest import latest, make_project, run_session


def _versions(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _fail_midway(real_write):
    """A writer that puts some bytes on disk, then hits a file-size limit."""

    def write(data, f, *a, **k):
        f.write(b"PAR1 partial")
        raise OSError(errno.EFBIG, "File too large")

    return write


@pytest.mark.parametrize("kind", ["pandas", "arrow"])
def test_an_interrupted_save_keeps_the_previous_version_latest(tmp_path, monkeypatch, kind):
    path = str(tmp_path / "x.parquet")
    df = pd.DataFrame({"a": [1.0, 2.0]})
    if kind == "pandas":
        ds, data = (
            ParquetDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")),
            df,
        )
    else:
        ds, data = (
            ArrowParquetDataset(path, Version(None, "2026-01-01T00.00.00.000Z")),
            pa.table(df),
        )
    ds.save(data)
    before = _versions(tmp_path)
    if kind == "pandas":
        monkeypatch.setattr(
            pd.DataFrame, "to_parquet", lambda self, f, **k: _fail_midway(None)(self, f)
        )
        again = ParquetDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z"))
    else:
        import pyarrow.parquet as pq

        monkeypatch.setattr(pq, "write_table", _fail_midway(None))
        again = ArrowParquetDataset(path, Version(None, "2026-01-02T00.00.00.000Z"))
    with pytest.raises(DatasetError, match="File too large"):
        again.save(data)
    assert _versions(tmp_path) == before  # no partial file, no *.tmp, no empty version folder
    assert not (tmp_path / "x.parquet" / "2026-01-02T00.00.00.000Z").exists()
    monkeypatch.undo()
    reread = ParquetDataset(filepath=path, version=Version(None, None)).load()
    pd.testing.assert_frame_equal(reread, df)


def test_a_truncated_version_names_itself_and_the_fix(tmp_path):
    path = tmp_path / "x.parquet"
    ds = ParquetDataset(filepath=str(path), version=Version(None, "2026-01-01T00.00.00.000Z"))
    ds.save(pd.DataFrame({"a": range(1000)}))
    f = path / "2026-01-01T00.00.00.000Z" / "x.parquet"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DatasetError) as err:
        ParquetDataset(filepath=str(path), version=Version(None, None)).load()
    assert isinstance(err.value.__cause__, StoredArtifactError)
    text = str(err.value)
    assert "2026-01-01T00.00.00.000Z" in text and "--load-versions" in text and "delete" in text


def test_a_corrupt_latest_dataset_stops_the_next_stage_with_the_version_named(tmp_path):
    project = make_project(tmp_path / "p")
    small = {"ingestion": {"synthetic": {"n_train": 90, "n_test": 30}}}
    run_session(project, ["ingestion"], small)
    f = latest(project, "data/02_intermediate/multimodal_dataset.parquet")
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    with pytest.raises(DatasetError) as err:
        run_session(project, ["partitioning"], small)
    text = str(err.value)
    assert f.parent.name in text and "--load-versions" in text
    assert not (project / "data/03_primary/client_assignments.parquet").exists()


def test_a_failed_checkpoint_write_is_named_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    from fdrmfl_pipeline.core import engine
    from fdrmfl_pipeline.core.client import LocalTrainConfig
    from fdrmfl_pipeline.core.engine import FederationConfig, checkpoint_round, run_federated

    from ..tiny import tiny_clients

    _, _, clients, scalers, config = tiny_clients()
    ck = tmp_path / "ck.pt"
    cfg = LocalTrainConfig(local_epochs=1, batch_size=16)
    fed = FederationConfig(strategy="fedavg", rounds=2, seed=0)
    calls = {"n": 0}
    real_save = torch.save

    def save_then_fail(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # round 2's checkpoint: a file-size limit halfway
            with open(f, "wb") as out:
                out.write(b"x" * 1000)
            raise OSError(errno.EFBIG, "File too large")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(engine.torch, "save", save_then_fail)
    with pytest.raises(CheckpointError, match=r"round 2 checkpoint .*File too large.*previous"):
        run_federated(config, clients, scalers, cfg, fed, checkpoint_path=ck)
    assert checkpoint_round(ck) == 1
    assert int(torch.load(ck, weights_only=True)["round"]) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_a_read_only_output_folder_fails_before_any_node(tmp_path, monkeypatch):
    """Checked up front (root ignores permission bits, so the test makes os.access say no)."""
    import os

    from fdrmfl_pipeline.errors import ConfigError

    project = make_project(tmp_path / "p")
    small = {"ingestion": {"synthetic": {"n_train": 90, "n_test": 30}}}
    run_session(project, ["ingestion"], small)
    real_access = os.access
    blocked = project / "data"  # the outputs' folders do not exist yet: data/ is checked

    def access(path, mode, *a, **k):
        if mode == os.W_OK and str(path).startswith(str(blocked)):
            return False
        return real_access(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(ConfigError, match=r"cannot write to .*/data: .*nothing was run"):
        run_session(project, ["partitioning"], small)
    assert not (project / "data/08_reporting/partition_summary.parquet").exists()
