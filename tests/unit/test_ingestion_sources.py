"""Each source round-trips through the canonical Parquet artifact with shapes from metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fdrmfl_pipeline.core import modalities
from fdrmfl_pipeline.core.sources import build_corn, build_tecator
from fdrmfl_pipeline.core.synthetic import generate_synthetic
from fdrmfl_pipeline.datasets import ArrowParquetDataset, LazyTableDataset
from fdrmfl_pipeline.params import IngestionParams
from fdrmfl_pipeline.pipelines.ingestion.nodes import build_multimodal_dataset

from ..conftest import TECATOR_CSV


def _roundtrip(data: modalities.MultimodalData, tmp_path) -> modalities.MultimodalData:
    ds = ArrowParquetDataset(filepath=str(tmp_path / "mm.parquet"))
    ds.save(modalities.to_arrow(data))
    # rebuild from the file alone: raw pyarrow read, no project object carried over
    table = pq.read_table(tmp_path / "mm.parquet")
    return modalities.from_arrow(table)


def _assert_same(a: modalities.MultimodalData, b: modalities.MultimodalData) -> None:
    assert list(a.sample_ids) == list(b.sample_ids)
    np.testing.assert_array_equal(a.target, b.target)
    assert a.specs == b.specs
    for s in a.specs:
        assert b.arrays[s.name].shape == (a.n, *s.shape)
        assert b.arrays[s.name].dtype == np.float32
        np.testing.assert_array_equal(a.arrays[s.name], b.arrays[s.name])
    if a.split is None:
        assert b.split is None
    else:
        assert list(a.split) == list(b.split)


def test_synthetic_roundtrip(tmp_path):
    data = generate_synthetic("f2", 30, 10, seed=0)
    back = _roundtrip(data, tmp_path)
    _assert_same(data, back)
    table = pq.read_table(tmp_path / "mm.parquet")
    image_type = table.schema.field("image").type
    assert pa.types.is_fixed_size_list(image_type) and image_type.list_size == 3072
    assert pa.types.is_float32(image_type.value_type)
    assert [s.to_dict() for s in back.specs][0] == {
        "name": "image",
        "kind": "image",
        "shape": [3, 32, 32],
    }


def test_tecator_roundtrip_all_modalities(tmp_path):
    df = pd.read_csv(TECATOR_CSV)
    data = build_tecator(df, "fat", ["spectrum", "spectrum_d1", "spectrum_d2", "lab"], True)
    assert data.n == 215
    assert [s.shape for s in data.specs] == [(100,), (100,), (100,), (2,)]
    assert data.spec("lab").kind == "vector" and data.spec("spectrum").kind == "spectrum"
    np.testing.assert_allclose(
        data.arrays["lab"], df[["moisture", "protein"]].to_numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(data.target, df["fat"].to_numpy())
    assert (data.split[:172] == "train").all() and (data.split[172:] == "test").all()
    # the first derivative of a smooth spectrum is small compared to the spectrum itself
    assert np.abs(data.arrays["spectrum_d1"]).mean() < 0.1 * np.abs(data.arrays["spectrum"]).mean()
    _assert_same(data, _roundtrip(data, tmp_path))


def test_tecator_split_switch_off():
    df = pd.read_csv(TECATOR_CSV)
    assert build_tecator(df, "protein", ["spectrum"], standard_split=False).split is None


def test_corn_roundtrip(corn_dir, tmp_path):
    lazy = LazyTableDataset(str(corn_dir), filename_template="corn_{name}.csv").load()
    inst = {m: lazy(m) for m in ("m5", "mp5", "mp6")}
    data = build_corn(inst, "oil", ["m5", "mp5", "mp6", "lab"])
    assert data.n == 80
    assert [s.shape for s in data.specs] == [(700,), (700,), (700,), (3,)]
    assert data.split is None
    np.testing.assert_allclose(
        data.arrays["lab"], inst["m5"][["moisture", "protein", "starch"]].to_numpy(), rtol=1e-6
    )
    _assert_same(data, _roundtrip(data, tmp_path))


def _user_table(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "y": rng.normal(size=n)})
    for i in range(6):
        df[f"px_{i}"] = rng.normal(size=n)
    for i in range(3):
        df[f"sensor{i}"] = rng.normal(size=n)
    df["grp"] = ["train"] * (n - 3) + ["test"] * 3
    return df


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_table_source_roundtrip_csv_and_parquet(tmp_path, suffix):
    df = _user_table()
    path = tmp_path / f"mine.{suffix}"
    df.to_csv(path, index=False) if suffix == "csv" else df.to_parquet(path)
    params = IngestionParams.model_validate(
        {
            "source": "table",
            "table": {
                "target": "y",
                "id_column": "id",
                "split_column": "grp",
                "modalities": {
                    "img": {"pattern": r"px_\d+", "kind": "image", "shape": [1, 2, 3]},
                    "sens": {"columns": ["sensor0", "sensor1", "sensor2"]},
                },
            },
        }
    )
    lazy = LazyTableDataset(str(path)).load()
    table = build_multimodal_dataset(params, 0, None, None, lazy)
    back = modalities.from_arrow(table)
    assert back.arrays["img"].shape == (12, 1, 2, 3)
    np.testing.assert_allclose(
        back.arrays["img"].reshape(12, -1), df[[f"px_{i}" for i in range(6)]], rtol=1e-6
    )
    assert back.spec("sens").kind == "vector" and back.spec("sens").shape == (3,)
    assert list(back.sample_ids) == list(df["id"])
    assert list(back.split) == list(df["grp"])


def test_ingestion_node_reads_only_the_selected_source():
    def boom(*_a):
        raise AssertionError("a source that was not selected was read")

    params = IngestionParams.model_validate(
        {"source": "synthetic", "synthetic": {"n_train": 9, "n_test": 3}}
    )
    table = build_multimodal_dataset(params, 1, boom, boom, boom)
    assert table.num_rows == 12
    # synthetic.seed overrides the project seed; otherwise the project seed drives it
    t2 = build_multimodal_dataset(params, 1, boom, boom, boom)
    t3 = build_multimodal_dataset(params, 2, boom, boom, boom)
    assert t2.equals(table) and not t3.equals(table)
