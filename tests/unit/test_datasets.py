"""Project datasets: atomic versioned saves and pruning of old versions."""

from __future__ import annotations

import pyarrow as pa
import pytest
from kedro.io.core import DatasetError, Version

from fdrmfl_pipeline.datasets import ArrowParquetDataset, LazyTableDataset
from fdrmfl_pipeline.prune import prune


def test_versioned_saves_keep_every_earlier_version(tmp_path):
    path = str(tmp_path / "t.parquet")
    t1 = pa.table({"a": [1, 2]})
    t2 = pa.table({"a": [3]})
    ArrowParquetDataset(path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(t1)
    ArrowParquetDataset(path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(t2)
    assert ArrowParquetDataset(path, version=Version(None, None)).load().equals(t2)
    old = ArrowParquetDataset(path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    assert old.equals(t1)


def test_a_failed_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "t.parquet"
    ds = ArrowParquetDataset(str(path), save_args={"compression": "not-a-codec"})
    with pytest.raises(DatasetError):
        ds.save(pa.table({"a": [1]}))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind either


def test_lazy_dataset_does_not_read_until_called(tmp_path):
    ds = LazyTableDataset(str(tmp_path / "later.csv"))
    loader = ds.load()  # no error: nothing read yet
    (tmp_path / "later.csv").write_text("a,b\n1,2\n")
    assert loader().to_dict("list") == {"a": [1], "b": [2]}


def test_prune_keeps_the_newest_versions(tmp_path):
    ds = tmp_path / "02_intermediate" / "x.parquet"
    stamps = [f"2026-01-0{i}T00.00.00.000Z" for i in range(1, 6)]
    for s in stamps:
        (ds / s).mkdir(parents=True)
        (ds / s / "x.parquet").write_text("x")
    removed = prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == stamps[:3]
    assert sorted(p.name for p in ds.iterdir()) == stamps[3:]
    with pytest.raises(ValueError, match="--keep"):
        prune(tmp_path, keep=0)
