"""Metric arithmetic by hand; baselines and downstream regressors see training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fdrmfl_pipeline.core.metrics import regression_metrics
from fdrmfl_pipeline.core.modalities import to_arrow
from fdrmfl_pipeline.params import BaselinesParams, EvaluationParams, TrainingParams
from fdrmfl_pipeline.pipelines.baselines.nodes import baseline_predictions
from fdrmfl_pipeline.pipelines.evaluation.nodes import POOLED, compute_metrics

from ..tiny import tiny_clients


def test_regression_metrics_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])
    m = regression_metrics(y, p)
    # errors .5, 0, -1, 1 -> squared .25, 0, 1, 1 -> mse 2.25/4; abs 2.5/4; var(y) = 1.25
    assert m["n"] == 4
    assert m["mse"] == pytest.approx(0.5625)
    assert m["rmse"] == pytest.approx(0.75)
    assert m["mae"] == pytest.approx(0.625)
    assert m["target_var"] == pytest.approx(1.25)
    assert m["r2"] == pytest.approx(1 - 0.5625 / 1.25)
    assert regression_metrics(y, np.full(4, y.mean()))["r2"] == pytest.approx(0.0)


def test_evaluation_rows_per_client_and_pooled():
    preds = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "d"],
            "client": [0, 0, 1, 1],
            "split": "test",
            "method": "fdrmfl",
            "regressor": "rf",
            "y_true": [1.0, 2.0, 3.0, 4.0],
            "y_pred": [1.0, 3.0, 3.0, 2.0],
        }
    )
    m = compute_metrics(preds, preds.iloc[:0], EvaluationParams(experiment="x"), "fdrmfl", 7)
    assert len(m) == 3
    by = m.set_index("client")
    assert by.loc[0, "mse"] == pytest.approx(0.5) and by.loc[1, "mse"] == pytest.approx(2.0)
    assert by.loc[POOLED, "mse"] == pytest.approx(1.25) and by.loc[POOLED, "scope"] == "pooled"
    assert (
        set(m["experiment"]) == {"x"} and set(m["seed"]) == {7} and set(m["strategy"]) == {"fdrmfl"}
    )


def test_baselines_are_fitted_on_training_rows_only():
    """Perturbing the test rows (inputs and targets) leaves every validation prediction of every
    extractor + regressor bit-identical: no scaler, transform or model saw a test row."""
    data, assign, *_ = tiny_clients()
    params = BaselinesParams(
        extractors=["pca90", "pca_d", "tsvd", "rp", "pls", "vae", "raw"],  # vae is opt-in
        regressors=["ridge", "rf"],
        raw_regressors=["ridge", "rf"],
        vae_epochs=3,
    )
    training = TrainingParams(model={"latent_dim": 3})
    before = baseline_predictions(to_arrow(data), assign, params, training, 0)
    test_ids = assign.loc[assign["split"] == "test", "sample_id"]
    pos = np.flatnonzero(np.isin(data.sample_ids, test_ids))
    rng = np.random.default_rng(9)
    for arr in data.arrays.values():
        arr[pos] = arr[pos] * 5 + rng.normal(size=arr[pos].shape).astype(np.float32)
    data.target[pos] += 100.0
    after = baseline_predictions(to_arrow(data), assign, params, training, 0)
    key = ["method", "regressor", "sample_id", "split"]
    merged = before.merge(after, on=key, suffixes=("_b", "_a"))
    assert len(merged) == len(before) == len(after) > 0
    assert set(merged["method"]) == {
        "pca90",
        "pca_d",
        "tsvd",
        "rp",
        "pls",
        "vae",
        "raw",
        "client_mean",
    }
    val = merged[merged["split"] == "val"]
    np.testing.assert_array_equal(val["y_pred_b"].to_numpy(), val["y_pred_a"].to_numpy())
    test = merged[(merged["split"] == "test") & (merged["method"] != "client_mean")]
    assert not np.allclose(test["y_pred_b"], test["y_pred_a"])  # the perturbation did reach test


def test_extractor_transforms_do_not_depend_on_held_out_rows():
    from fdrmfl_pipeline.core.baselines import extract

    rng = np.random.default_rng(0)
    x_train = {"a": rng.normal(size=(40, 6)), "b": rng.normal(size=(40, 3))}
    y_train = rng.normal(size=40)
    probe = {"a": rng.normal(size=(5, 6)), "b": rng.normal(size=(5, 3))}
    for name in ("pca90", "pca_d", "tsvd", "rp", "pls", "vae", "raw"):
        outs = []
        for scale in (1.0, 50.0):
            test = {"a": probe["a"] * scale, "b": probe["b"] * scale}
            feats = extract(
                name,
                {"train": (x_train, y_train), "probe": (test, np.zeros(5))},
                ["a", "b"],
                seed=1,
                dim=2,
                vae_epochs=2,
            )
            outs.append(feats)
        np.testing.assert_allclose(outs[0]["train"], outs[1]["train"], err_msg=name)
