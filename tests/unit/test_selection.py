"""The regressor choice: validation MSE, restricted to linear tails when validation leaves the
training range."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fdrmfl_pipeline.core.selection import (
    SelectionRule,
    choose_regressors,
    describe,
    outside_share,
)


def _metrics(rows):
    return pd.DataFrame(
        [
            {"method": m, "regressor": r, "split": "val", "scope": "pooled", "mse": mse}
            for m, r, mse in rows
        ]
        # test rows must never influence the choice: give them the opposite ranking
        + [
            {"method": m, "regressor": r, "split": "test", "scope": "pooled", "mse": -mse}
            for m, r, mse in rows
        ]
    )


METRICS = _metrics(
    [
        ("fdrmfl", "rf", 6.5),
        ("fdrmfl", "ridge", 7.0),
        ("fdrmfl", "head", 7.4),
        ("pca90", "rf", 8.0),
        ("pca90", "ridge", 7.9),
        ("client_mean", "mean", 20.0),
    ]
)


def _features(val_targets, train_targets=(0.0, 1.0, 2.0, 3.0)):
    rows = [{"client": 0, "split": "train", "target": t} for t in train_targets]
    rows += [{"client": 0, "split": "val", "target": t} for t in val_targets]
    rows += [{"client": 0, "split": "test", "target": 100.0}]  # never looked at
    return pd.DataFrame(rows)


def test_outside_share_counts_validation_rows_outside_their_clients_training_range():
    assert outside_share(_features([1.0, 2.5])) == 0.0
    assert outside_share(_features([1.0, 3.5, -1.0, 2.0])) == 0.5
    # each client against its own range: client 1's targets are all above client 0's
    two = pd.concat(
        [_features([1.0]), _features([11.0], train_targets=(10.0, 12.0)).assign(client=1)]
    )
    assert outside_share(two) == 0.0
    assert np.isnan(outside_share(_features([])))


def test_rule_val_takes_the_lowest_validation_mse():
    out = choose_regressors(METRICS, share=0.5, rule=SelectionRule(rule="val")).set_index("method")
    assert out.loc["fdrmfl", "regressor"] == "rf" and out.loc["pca90", "regressor"] == "ridge"
    assert not out["restricted"].any()
    assert out.loc["fdrmfl", "val_mse"] == 6.5


def test_rule_auto_keeps_the_validation_choice_when_validation_stays_in_range():
    out = choose_regressors(METRICS, share=0.05, rule=SelectionRule()).set_index("method")
    assert out.loc["fdrmfl", "regressor"] == "rf"
    assert out.loc["fdrmfl", "reason"] == "lowest validation MSE"


def test_rule_auto_sets_bounded_regressors_aside_when_validation_leaves_the_range():
    out = choose_regressors(METRICS, share=0.23, rule=SelectionRule()).set_index("method")
    assert out.loc["fdrmfl", "regressor"] == "ridge" and out.loc["fdrmfl", "restricted"]
    assert "rf had a lower validation MSE" in out.loc["fdrmfl", "reason"]
    assert out.loc["pca90", "regressor"] == "ridge"
    # a method with no linear-tailed regressor keeps its own, and says why
    assert out.loc["client_mean", "regressor"] == "mean"
    assert "no regressor with linear tails" in out.loc["client_mean", "reason"]


def test_pooled_variants_extrapolate_like_their_base():
    m = _metrics([("raw_pooled", "rf_pooled", 1.0), ("raw_pooled", "ridge_pooled", 2.0)])
    out = choose_regressors(m, share=0.5, rule=SelectionRule())
    assert out["regressor"].tolist() == ["ridge_pooled"]


def test_the_threshold_is_strict_and_validated():
    assert choose_regressors(METRICS, 0.1, SelectionRule())["restricted"].sum() == 0
    with pytest.raises(ValueError, match="max_outside_share"):
        SelectionRule(max_outside_share=1.5)
    with pytest.raises(ValueError, match="selection rule"):
        SelectionRule(rule="test")  # type: ignore[arg-type]


def test_the_report_sentence_says_whether_the_restriction_applies():
    assert "does not apply" in describe(SelectionRule(), 0.02)
    assert "so the restriction applies" in describe(SelectionRule(), 0.3)
    assert "rule 'val'" in describe(SelectionRule(rule="val"), 0.3)
