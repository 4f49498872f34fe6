"""Clients and splits from the data: natural clients by column, time blocks, chronological
test and validation, predefined train/val/test."""

from __future__ import annotations

import numpy as np
import pytest

from fdrmfl_pipeline.core import seeding
from fdrmfl_pipeline.core.partition import PartitionOptions, partition
from fdrmfl_pipeline.errors import PartitionError

MODS = ["m"]


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"r{i}" for i in range(n)])
    keys = rng.choice(["site_b", "site_a", "site_c"], size=n, p=[0.5, 0.3, 0.2])
    order = rng.permutation(n).astype(float)  # a shuffled time axis
    y = order / n + rng.normal(0, 0.1, n)
    return ids, y, keys, order


def _run(scheme, keys=None, order=None, split=None, **kw):
    ids, y, k, o = _data()
    return partition(
        ids,
        y,
        MODS,
        split,
        PartitionOptions(scheme=scheme, **kw),
        seeding.rng(0, "partition"),
        client_keys=k if keys is None else keys,
        order=o if order is None else order,
    ), (ids, y, k, o)


def test_column_clients_come_from_the_data_with_their_sizes():
    a, (_, _, keys, _) = _run("column", use_predefined_split=False)
    assert sorted(a["client"].unique()) == [0, 1, 2]
    names = dict(zip(a["client"], a["client_name"], strict=False))
    assert names == {0: "site_a", 1: "site_b", 2: "site_c"}  # sorted keys
    # every row, test rows included, stays with its own client; sizes as they come
    assert (a["client_name"].to_numpy() == keys).all()
    assert set(a["split"]) == {"train", "val", "test"}
    for _, g in a.groupby("client"):
        assert (g["split"] == "test").sum() >= 1 and (g["split"] == "val").sum() >= 1


def test_a_client_too_small_for_its_splits_is_named():
    ids, y, keys, order = _data()
    keys = keys.astype(object)
    keys[0] = "tiny_site"
    with pytest.raises(PartitionError, match=r"\('tiny_site'\) gets 0 '.*' sample.*merge small"):
        partition(
            ids,
            y,
            MODS,
            None,
            PartitionOptions(scheme="column", use_predefined_split=False),
            seeding.rng(0, "partition"),
            client_keys=keys,
            order=order,
        )


def test_natural_schemes_name_the_missing_column():
    ids, y, _, _ = _data()
    with pytest.raises(PartitionError, match="ingestion.table.client_column"):
        partition(ids, y, MODS, None, PartitionOptions(scheme="column"), seeding.rng(0, "p"))
    with pytest.raises(PartitionError, match="ingestion.table.order_column"):
        partition(ids, y, MODS, None, PartitionOptions(scheme="time_blocks"), seeding.rng(0, "p"))


def test_time_blocks_are_contiguous_periods():
    a, (_, _, _, order) = _run("time_blocks", n_clients=4, use_predefined_split=False)
    a["order"] = order
    spans = a.groupby("client")["order"].agg(["min", "max"]).sort_index()
    assert len(spans) == 4
    assert (spans["max"].to_numpy()[:-1] < spans["min"].to_numpy()[1:]).all()
    assert a.groupby("client").size().tolist() == [75, 75, 75, 75]


def test_chronological_test_and_validation_per_client():
    """test: each client's latest rows; val: the latest of its training rows."""
    a, (_, _, _, order) = _run(
        "column",
        use_predefined_split=False,
        test_strategy="last",
        val_strategy="last",
        test_fraction=0.2,
        val_fraction=0.2,
    )
    a["order"] = order
    for _, g in a.groupby("client"):
        t = g.groupby("split")["order"].agg(["min", "max"])
        assert t.loc["train", "max"] < t.loc["val", "min"]
        assert t.loc["val", "max"] < t.loc["test", "min"]
        assert (g["split"] == "test").mean() == pytest.approx(0.2, abs=0.02)


def test_chronological_test_for_a_synthetic_scheme_is_the_overall_latest():
    a, (_, _, _, order) = _run("iid", n_clients=3, use_predefined_split=False, test_strategy="last")
    a["order"] = order
    assert a.loc[a["split"] == "test", "order"].min() > a.loc[a["split"] != "test", "order"].max()


def test_a_predefined_split_may_hold_val_rows():
    ids, y, keys, order = _data()
    split = np.where(order < 200, "train", np.where(order < 250, "val", "test"))
    a = partition(
        ids,
        y,
        MODS,
        split,
        PartitionOptions(scheme="column"),
        seeding.rng(0, "partition"),
        client_keys=keys,
        order=order,
    )
    assert (a["split"].to_numpy() == split).all()
    b = partition(ids, y, MODS, split, PartitionOptions(scheme="iid"), seeding.rng(0, "p"))
    assert (b["split"].to_numpy() == split).all()  # val rows kept, none carved at random


def test_rows_with_the_same_time_stay_together():
    """Several sites per day: a time block or a chronological hold-out never cuts a day."""
    from fdrmfl_pipeline.core.partition import last_fraction, natural_clients

    order = np.repeat(np.arange(100, dtype=float), 3)  # 100 days x 3 rows
    client, names = natural_clients("time_blocks", 4, None, order)
    for day in range(100):
        assert len(set(client[order == day])) == 1
    assert len(names) == 4 and np.bincount(client).min() >= 72
    rows = np.arange(len(order))
    held = last_fraction(rows, 0.2, order, "test")
    assert set(order[held]) == set(range(80, 100))  # whole days only
    # a tie bigger than the hold-out takes every tied row, unless that would take them all
    assert len(last_fraction(np.arange(4), 0.25, np.array([0.0, 1.0, 1.0, 1.0]), "test")) == 3
    assert len(last_fraction(np.arange(3), 0.4, np.ones(3), "test")) == 1
