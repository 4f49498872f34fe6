"""Partition schemes: complete and disjoint, deterministic, skewed as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fdrmfl_pipeline.core import seeding
from fdrmfl_pipeline.core.partition import (
    NATURAL,
    SCHEMES,
    PartitionOptions,
    apply_covariate_shift,
    partition,
    summarise,
)
from fdrmfl_pipeline.errors import PartitionError
from fdrmfl_pipeline.params import PartitioningParams

MODS = ["image", "text", "vector"]


def _data(n_train=600, n_test=150, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n_train + n_test)
    ids = np.array([f"s{i}" for i in range(len(y))])
    split = np.array(["train"] * n_train + ["test"] * n_test)
    return ids, y, split


def _run(scheme, seed=0, n_train=600, n_test=150, **kw):
    ids, y, split = _data(n_train, n_test)
    opts = PartitionOptions(scheme=scheme, **kw)
    return partition(ids, y, MODS, split, opts, seeding.rng(seed, "partition")), y


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s not in NATURAL])
def test_every_scheme_is_complete_disjoint_and_deterministic(scheme):
    a, _ = _run(scheme, seed=1, n_clients=4)
    b, _ = _run(scheme, seed=1, n_clients=4)
    c, _ = _run(scheme, seed=2, n_clients=4)
    assert len(a) == 750 and a["sample_id"].is_unique  # every sample exactly once
    assert set(a["split"]) == {"train", "val", "test"}
    assert sorted(a["client"].unique()) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    # the predefined test pool stays the test pool; val only comes from training samples
    is_test = a["sample_id"].str[1:].astype(int) >= 600
    assert (a.loc[is_test, "split"] == "test").all()
    assert (a.loc[~is_test, "split"] != "test").all()
    for col in ("available_image", "available_text", "available_vector"):
        assert a[col].dtype == bool


def test_paper_reproduces_the_reference_sizes():
    a, _ = _run("paper", n_train=2000, n_test=500, val_fraction=0.0)
    sizes = a.groupby(["client", "split"]).size().unstack()
    assert list(sizes["train"]) == [666, 666, 668]
    assert list(sizes["test"]) == [166, 166, 168]


def test_val_is_carved_from_each_clients_training_part():
    a, _ = _run("paper", n_train=2000, n_test=500, val_fraction=0.2)
    sizes = a.groupby(["client", "split"]).size().unstack()
    assert list(sizes["train"] + sizes["val"]) == [666, 666, 668]
    assert list(sizes["val"]) == [133, 133, 134]


def test_random_test_split_without_predefined_split():
    ids, y, _ = _data()
    opts = PartitionOptions(scheme="iid", test_fraction=0.1)
    a = partition(ids, y, MODS, None, opts, seeding.rng(0, "p"))
    assert (a["split"] == "test").sum() == 75
    opts = PartitionOptions(scheme="iid", test_fraction=0.1, use_predefined_split=False)
    _, _, split = _data()
    b = partition(ids, y, MODS, split, opts, seeding.rng(0, "p"))
    assert (b["split"] == "test").sum() == 75


def _client_mean_spread(assign: pd.DataFrame, y: np.ndarray) -> float:
    df = assign.assign(y=y[assign["sample_id"].str[1:].astype(int)])
    return float(df[df["split"] != "test"].groupby("client")["y"].mean().std())


def test_small_dirichlet_alpha_skews_client_targets_more_than_large_alpha():
    small, large = [], []
    for seed in range(5):
        a, y = _run("dirichlet", seed=seed, n_clients=5, dirichlet_alpha=0.1, min_client_size=3)
        small.append(_client_mean_spread(a, y))
        b, y = _run("dirichlet", seed=seed, n_clients=5, dirichlet_alpha=100.0)
        large.append(_client_mean_spread(b, y))
    assert np.mean(small) > 3 * np.mean(large)


def test_target_shift_orders_clients_by_target():
    a, y = _run("target_shift", n_clients=4, shift_strictness=1.0)
    df = a.assign(y=y[a["sample_id"].str[1:].astype(int)])
    means = df[df["split"] == "train"].groupby("client")["y"].mean().to_numpy()
    assert np.all(np.diff(means) > 0)
    iid, y = _run("target_shift", n_clients=4, shift_strictness=0.0)
    assert _client_mean_spread(iid, y) < 0.2 * _client_mean_spread(a, y)


def test_quantity_skew_gives_power_law_sizes():
    a, _ = _run("quantity_skew", n_clients=4, skew_power=1.0, val_fraction=0.0)
    sizes = a[a["split"] == "train"].groupby("client").size().to_numpy()
    expected = 600 / np.array([1, 1 / 2, 1 / 3, 1 / 4]).sum() * np.array([1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(sizes, expected, atol=1)


def test_covariate_shift_transforms_are_per_client_and_applied():
    a, _ = _run("covariate_shift", n_clients=3)
    per_client = a.groupby("client")[
        ["covariate_gain", "covariate_offset", "covariate_noise"]
    ].nunique()
    assert (per_client == 1).all().all()  # one transform per client
    tf = a.groupby("client")[["covariate_gain", "covariate_offset", "covariate_noise"]].first()
    assert tf["covariate_gain"].nunique() == 3 and tf["covariate_noise"].iloc[0] == 0.0
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    out = apply_covariate_shift(x, 2.0, 0.5, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(out, 2.0 * x + 0.5 * x.std(), rtol=1e-5)
    assert apply_covariate_shift(x, 1.0, 0.0, 0.0, np.random.default_rng(0)) is x
    other, _ = _run("iid", n_clients=3)
    assert (other["covariate_gain"] == 1.0).all() and (other["covariate_noise"] == 0.0).all()


def test_missing_modality_from_an_explicit_map():
    a, _ = _run("missing_modality", missing_map={0: ["text"], 2: ["image", "vector"]})
    avail = a.groupby("client")[["available_image", "available_text", "available_vector"]].all()
    assert avail.loc[0].tolist() == [True, False, True]
    assert avail.loc[1].tolist() == [True, True, True]
    assert avail.loc[2].tolist() == [False, True, False]


def test_missing_modality_from_a_probability_keeps_one_modality_per_client():
    a, _ = _run("missing_modality", n_clients=8, missing_probability=0.9)
    avail = a.groupby("client")[["available_image", "available_text", "available_vector"]].all()
    assert avail.any(axis=1).all() and not avail.all(axis=None)


def test_bad_missing_map_names_the_client_or_modality():
    with pytest.raises(PartitionError, match="client 7"):
        _run("missing_modality", missing_map={7: ["text"]})
    with pytest.raises(PartitionError, match="'audio'"):
        _run("missing_modality", missing_map={0: ["audio"]})
    with pytest.raises(PartitionError, match="every modality from client 1"):
        _run("missing_modality", missing_map={1: MODS})


def test_a_scheme_that_empties_a_client_names_it_and_suggests_a_fix():
    with pytest.raises(
        PartitionError, match=r"client \d+ gets \d+ 'train'.*raise partitioning\.dirichlet\.alpha"
    ):
        _run("dirichlet", n_clients=20, dirichlet_alpha=0.01, min_client_size=20, max_tries=5)
    with pytest.raises(PartitionError, match=r"client \d+ gets 0 'test'.*quantity_skew\.power"):
        _run("quantity_skew", n_clients=10, skew_power=6.0, n_train=600, n_test=20)


def test_summary_counts_and_target_stats():
    a, y = _run("iid", n_clients=2)
    targets = pd.Series(y, index=[f"s{i}" for i in range(len(y))])
    s = summarise(a, targets, MODS)
    assert len(s) == 6 and s["n"].sum() == 750
    assert list(s["split"][:3]) == ["train", "val", "test"]
    row = s[(s["client"] == 1) & (s["split"] == "test")].iloc[0]
    ys = targets[a.loc[(a["client"] == 1) & (a["split"] == "test"), "sample_id"]]
    assert row["target_mean"] == pytest.approx(ys.mean())
    assert row["target_max"] == pytest.approx(ys.max())
    assert row["modalities"] == "image,text,vector"


def test_partitioning_params_validation_names_the_parameter():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="val_fraction"):
        PartitioningParams.model_validate({"val_fraction": 1.5})
    with pytest.raises(ValidationError, match="n_clients"):
        PartitioningParams.model_validate({"n_clients": 0})
    with pytest.raises(ValidationError, match="scheme"):
        PartitioningParams.model_validate({"scheme": "random"})
    opts = PartitioningParams.model_validate(
        {"scheme": "dirichlet", "dirichlet": {"alpha": 0.3}}
    ).options()
    assert opts.dirichlet_alpha == 0.3 and opts.scheme == "dirichlet"


def test_random_test_split_keeps_duplicate_groups_together():
    ids, y, _ = _data(n_train=200, n_test=0)
    groups = np.array([f"g{i // 2}" for i in range(200)])  # 100 pairs of duplicates
    opts = PartitionOptions(scheme="iid", test_fraction=0.2)
    a = partition(ids, y, MODS, None, opts, seeding.rng(0, "p"), groups=groups)
    side = a.assign(g=groups, test=a["split"] == "test").groupby("g")["test"].nunique()
    assert (side == 1).all() and (a["split"] == "test").sum() == 40


def test_tecator_duplicates_never_straddle_the_random_split(project_root):
    from fdrmfl_pipeline.core.modalities import to_arrow
    from fdrmfl_pipeline.core.sources import build_tecator
    from fdrmfl_pipeline.pipelines.partitioning.nodes import assign_clients, duplicate_groups

    df = pd.read_csv(project_root / "data/01_raw/tecator/tecator.csv")
    table = to_arrow(build_tecator(df, "fat", ["spectrum", "lab"], standard_split=False))
    groups = duplicate_groups(table)
    assert len(groups) - len(set(groups)) == 22  # the 22 known duplicate pairs
    params = PartitioningParams(scheme="paper", use_predefined_split=False, test_fraction=0.1)
    for seed in range(5):
        a = assign_clients(table, params, seed)
        side = a.assign(g=groups, test=a["split"] == "test").groupby("g")["test"].nunique()
        assert (side == 1).all()
