"""regression/baselines ``refit_on_val``: val from train-only fits, test from train + val refits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fdrmfl_pipeline.core.downstream import fit_predict_per_client, make_regressor
from fdrmfl_pipeline.core.fedgp import GPSettings

FAST = GPSettings(n_features=64, steps=30, starts=(1.0,))
COLS = [f"z_{i}" for i in range(3)]


def _features(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 90
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)
    split = np.array((["train"] * 20 + ["val"] * 5 + ["test"] * 5) * 3)
    return pd.DataFrame(x, columns=COLS).assign(
        sample_id=[f"s{i}" for i in range(n)],
        client=np.repeat([0, 1, 2], 30),
        split=split,
        target=y,
    )


def _pred(out: pd.DataFrame, reg: str, split: str) -> np.ndarray:
    rows = out[(out["regressor"] == reg) & (out["split"] == split)]
    return rows.sort_values("sample_id")["y_pred"].to_numpy()


@pytest.mark.parametrize("pooled", [False, True])
def test_refit_changes_test_predictions_only(pooled):
    feats = _features()
    regs = ["ridge", "pls"] if pooled else ["ridge", "pls", "gp_fed"]
    kw = dict(pooled=pooled, gp_settings=FAST)
    plain = fit_predict_per_client(feats, COLS, "m", regs, 0, **kw)
    refit = fit_predict_per_client(feats, COLS, "m", regs, 0, refit_on_val=True, **kw)
    for reg in (f"{r}_pooled" if pooled else r for r in regs):
        np.testing.assert_array_equal(_pred(plain, reg, "val"), _pred(refit, reg, "val"))
        assert not np.allclose(_pred(plain, reg, "test"), _pred(refit, reg, "test"))


def test_refit_equals_a_fit_on_train_and_val():
    feats = _features()
    out = fit_predict_per_client(feats, COLS, "m", ["ridge"], 0, refit_on_val=True)
    for c in (0, 1, 2):
        mine = feats[feats["client"] == c]
        fit_rows = mine[mine["split"].isin(["train", "val"])]
        model = make_regressor("ridge", 0, len(fit_rows), 3).fit(fit_rows[COLS], fit_rows["target"])
        test = mine[mine["split"] == "test"]
        got = out[(out["client"] == c) & (out["split"] == "test")]
        np.testing.assert_allclose(got["y_pred"].to_numpy(), model.predict(test[COLS]))


def test_refit_never_sees_test_rows_and_val_never_sees_val_targets():
    feats = _features()
    regs = ["ridge", "gp_fed"]
    base = fit_predict_per_client(feats, COLS, "m", regs, 0, gp_settings=FAST, refit_on_val=True)
    poked = feats.copy()
    test = poked["split"] == "test"
    poked.loc[test, "target"] = 1e6
    again = fit_predict_per_client(poked, COLS, "m", regs, 0, gp_settings=FAST, refit_on_val=True)
    np.testing.assert_array_equal(base["y_pred"], again["y_pred"])
    # a val target moves the refitted test predictions, never the val predictions
    shifted = feats.copy()
    shifted.loc[shifted["split"] == "val", "target"] += 3.0
    moved = fit_predict_per_client(shifted, COLS, "m", regs, 0, gp_settings=FAST, refit_on_val=True)
    for reg in regs:
        np.testing.assert_array_equal(_pred(base, reg, "val"), _pred(moved, reg, "val"))
        assert not np.allclose(_pred(base, reg, "test"), _pred(moved, reg, "test"))
