"""Regression metrics in the target's original units."""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """n, mse, rmse, mae, r2 (1 - SSE/SST around the split's own mean) and the split's target
    variance (population, ddof=0: the MSE of predicting the split's own mean)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    n = len(y_true)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "mse": nan, "rmse": nan, "mae": nan, "r2": nan, "target_var": nan}
    err = y_pred - y_true
    mse = float(np.mean(err**2))
    var = float(np.var(y_true))
    return {
        "n": n,
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - mse / var) if var > 0 else float("nan"),
        "target_var": var,
    }
