"""Every bad-input case raises its specific project error, naming what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fdrmfl_pipeline.core.sources import TableModality, build_corn, build_table, build_tecator
from fdrmfl_pipeline.datasets import LazyTableDataset
from fdrmfl_pipeline.errors import (
    DuplicateSampleIdError,
    EmptyDataError,
    FdrmflError,
    InputDataError,
    MissingColumnError,
    MissingFileError,
    NonFiniteValueError,
    NonNumericColumnError,
    OverlappingModalityError,
    ShapeMismatchError,
)
from fdrmfl_pipeline.params import IngestionParams

from ..conftest import TECATOR_CSV


def _df(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "y": rng.normal(size=n)})
    for i in range(4):
        df[f"v{i}"] = rng.normal(size=n)
    return df


VEC = [TableModality("vec", "vector", ("v0", "v1", "v2", "v3"))]


def test_error_types_share_one_base():
    for err in (MissingFileError, MissingColumnError, NonFiniteValueError, ShapeMismatchError):
        assert issubclass(err, InputDataError) and issubclass(err, FdrmflError)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.csv"
    lazy = LazyTableDataset(str(path)).load()
    with pytest.raises(MissingFileError, match=str(path)):
        lazy()


def test_missing_corn_directory_names_the_path(tmp_path):
    lazy = LazyTableDataset(str(tmp_path / "corn"), filename_template="corn_{name}.csv").load()
    with pytest.raises(MissingFileError, match="corn"):
        lazy("m5")


def test_missing_target_column():
    with pytest.raises(MissingColumnError, match="'yy'"):
        build_table(_df(), "yy", VEC, id_column="id")


def test_missing_modality_columns_are_named():
    mods = [TableModality("vec", "vector", ("v0", "v9", "v8"))]
    with pytest.raises(MissingColumnError, match=r"'v9', 'v8'"):
        build_table(_df(), "y", mods, id_column="id")


def test_pattern_matching_nothing():
    with pytest.raises(MissingColumnError, match="pattern 'px_.*'"):
        build_table(_df(), "y", [TableModality("img", "image", pattern="px_.*")])


def test_non_numeric_columns_are_named():
    df = _df()
    df["v2"] = ["a", "b", "c", "d", "e", "f"]
    with pytest.raises(NonNumericColumnError, match="'v2'"):
        build_table(df, "y", VEC, id_column="id")


def test_non_numeric_target():
    df = _df()
    df["y"] = "high"
    with pytest.raises(NonNumericColumnError, match="target 'y'"):
        build_table(df, "y", VEC, id_column="id")


def test_nan_in_inputs_reports_count_and_first_ids():
    df = _df()
    df.loc[[1, 4], "v0"] = np.nan
    df.loc[4, "v3"] = np.inf
    with pytest.raises(NonFiniteValueError, match=r"3 NaN/inf value\(s\) in 2 sample\(s\).*s1, s4"):
        build_table(df, "y", VEC, id_column="id")


def test_nan_in_target():
    df = _df()
    df.loc[2, "y"] = np.nan
    with pytest.raises(NonFiniteValueError, match=r"target holds 1 NaN/inf.*s2"):
        build_table(df, "y", VEC, id_column="id")


def test_empty_table():
    with pytest.raises(EmptyDataError, match="no rows"):
        build_table(_df().iloc[:0], "y", VEC)


def test_shape_mismatch():
    mods = [TableModality("vec", "image", ("v0", "v1", "v2", "v3"), shape=(1, 3, 3))]
    with pytest.raises(ShapeMismatchError, match=r"'vec' has 4 column\(s\).*\[1, 3, 3\] needs 9"):
        build_table(_df(), "y", mods)


def test_duplicate_sample_ids():
    df = _df()
    df.loc[3, "id"] = "s0"
    with pytest.raises(DuplicateSampleIdError, match="s0"):
        build_table(df, "y", VEC, id_column="id")


def test_column_claimed_by_two_modalities():
    mods = [
        TableModality("a", "vector", ("v0", "v1")),
        TableModality("b", "vector", pattern=r"v[1-3]"),
    ]
    with pytest.raises(OverlappingModalityError, match="'v1' is claimed by modalities 'a' and 'b'"):
        build_table(_df(), "y", mods)


def test_target_used_as_modality_column():
    with pytest.raises(OverlappingModalityError, match="'y'"):
        build_table(_df(), "y", [TableModality("a", "vector", ("v0", "y"))])


def test_tecator_missing_channel_and_nan():
    df = pd.read_csv(TECATOR_CSV)
    with pytest.raises(MissingColumnError, match="a_5"):
        build_tecator(df.drop(columns=["a_5"]), "fat", ["spectrum"], True)
    bad = df.copy()
    bad.loc[10, "a_3"] = np.nan
    with pytest.raises(NonFiniteValueError, match="tecator_011"):
        build_tecator(bad, "fat", ["spectrum"], True)


def test_corn_instruments_must_hold_the_same_samples():
    rng = np.random.default_rng(0)
    cols = {f"a_{i}": rng.normal(size=4) for i in range(700)}
    props = {k: rng.normal(size=4) for k in ("moisture", "oil", "protein", "starch")}
    a = pd.DataFrame({"sample": [1, 2, 3, 4], **cols, **props})
    b = a.copy()
    b["oil"] = b["oil"][::-1].to_numpy()
    with pytest.raises(InputDataError, match="'m5' and 'mp5' do not hold the same samples"):
        build_corn({"m5": a, "mp5": b}, "moisture", ["m5", "mp5"])


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"source": "nope"}, "source"),
        ({"source": "table"}, "ingestion.table.modalities"),
        ({"tecator": {"target": "salt"}}, "tecator.target"),
        ({"tecator": {"sg_window": 4}}, "sg_window"),
        ({"table": {"modalities": {"a": {"columns": ["x"], "pattern": "x"}}}}, "exactly one"),
        ({"synthetic": {"n_train": 0}}, "synthetic.n_train"),
        ({"synthetic": {"functoin": "f1"}}, "functoin"),
    ],
)
def test_bad_ingestion_parameters_name_the_parameter(raw, needle):
    with pytest.raises(ValidationError, match=needle.replace(".", r"\.?")):
        IngestionParams.model_validate(raw)
