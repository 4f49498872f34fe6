"""The shipped bring-your-own-data example end to end: sites as natural clients (or contiguous
time blocks), a chronological test period, validation that looks like it, and a regressor
choice that cannot silently pick a model that stays inside the training range."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fdrmfl_pipeline.core.selection import LINEAR_TAILS, base_regressor
from fdrmfl_pipeline.examples import make_sites_table

from ..conftest import EXAMPLE_SITES, latest, run_session


def _read(project, rel):
    return pd.read_parquet(latest(project, rel))


def test_the_committed_example_is_what_the_generator_writes():
    committed = pd.read_csv(EXAMPLE_SITES / "sites.csv")
    fresh = make_sites_table()
    assert list(committed.columns) == list(fresh.columns)
    assert committed.shape == (3 * 730, 57)
    num = fresh.select_dtypes("number").columns
    np.testing.assert_allclose(committed[num].to_numpy(), fresh[num].to_numpy(), atol=1e-9)
    # the point of the example: the last fifth of the days reaches above the training targets
    days = committed["day"]
    train, test = committed[days < 584], committed[days >= 584]
    assert (test["output"] > train["output"].max()).mean() > 0.05


def test_example_env_sites_as_clients_chronological_split_and_a_safe_choice(tmp_project):
    run_session(
        tmp_project, env="example_sites", params={"training": {"federation": {"rounds": 3}}}
    )
    assign = _read(tmp_project, "data/03_primary/client_assignments.parquet")
    data = pd.read_csv(EXAMPLE_SITES / "sites.csv")
    data["sample_id"] = "row_" + data.index.astype(str)
    a = assign.merge(data[["sample_id", "site", "day"]], on="sample_id", validate="one_to_one")
    # one client per site, test = each site's last 20 % of days, val = the last of its training
    assert sorted(a["client_name"].unique()) == ["east", "north", "south"]
    assert (a.groupby("client_name")["client"].nunique() == 1).all()
    for _, g in a.groupby("client"):
        by = g.groupby("split")["day"]
        assert by.max()["train"] < by.min()["val"] <= by.max()["val"] < by.min()["test"]
        assert by.count()["test"] == pytest.approx(0.2 * len(g), abs=1)

    choice = _read(tmp_project, "data/08_reporting/regressor_choice.parquet").set_index("method")
    assert (choice["val_outside_share"] > 0.1).all()  # validation leaves the training range
    fdrmfl = choice.loc["fdrmfl"]
    assert base_regressor(fdrmfl["regressor"]) in LINEAR_TAILS
    assert choice.loc["raw_pooled", "regressor"] == "ridge_pooled"

    m = _read(tmp_project, "data/08_reporting/evaluation_metrics.parquet")
    pooled = m[(m["split"] == "test") & (m["scope"] == "pooled")].set_index(
        ["method", "regressor"]
    )["r2"]
    ours = pooled[("fdrmfl", fdrmfl["regressor"])]
    # the forest on the same features cannot follow the trend; the choice rule avoided it
    assert ours > pooled[("fdrmfl", "rf")] + 0.1
    # and the chosen model is at least as good as ridge on every site's raw inputs pooled
    assert ours >= pooled[("raw_pooled", "ridge_pooled")]

    report = sorted((tmp_project / "data/08_reporting/report.html").glob("*/*"))[-1].read_text()
    assert "Which regressor represents each method" in report
    assert "so the restriction applies" in report and "val_strategy: last" in report
    assert "raw_pooled" in report and "client_mean" in report


def test_example_table_with_time_block_clients(tmp_project):
    run_session(
        tmp_project,
        pipelines=("ingestion", "partitioning"),
        env="example_sites",
        params={"partitioning": {"scheme": "time_blocks", "n_clients": 4}},
    )
    assign = _read(tmp_project, "data/03_primary/client_assignments.parquet")
    data = pd.read_csv(EXAMPLE_SITES / "sites.csv")
    data["sample_id"] = "row_" + data.index.astype(str)
    a = assign.merge(data[["sample_id", "day"]], on="sample_id", validate="one_to_one")
    spans = a.groupby("client")["day"].agg(["min", "max"]).sort_index()
    assert len(spans) == 4
    # contiguous, non-overlapping periods in time order
    assert (spans["min"].to_numpy()[1:] > spans["max"].to_numpy()[:-1]).all()
    for _, g in a.groupby("client"):
        assert g.loc[g["split"] == "test", "day"].min() > g.loc[g["split"] != "test", "day"].max()
