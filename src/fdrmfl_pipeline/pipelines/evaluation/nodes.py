"""Evaluation nodes: metrics per (method, regressor, client, split) and pooled over clients."""

from __future__ import annotations

import pandas as pd

from fdrmfl_pipeline.params import EvaluationParams

POOLED = -1  # the ``client`` value of rows pooled over all clients


def compute_metrics(
    predictions: pd.DataFrame,
    baseline_predictions: pd.DataFrame,
    params: EvaluationParams,
    strategy: str,
    seed: int,
) -> pd.DataFrame:
    """n, mse, rmse, mae, r2 and target variance, in the target's original units."""
    from fdrmfl_pipeline.core.metrics import regression_metrics

    allp = pd.concat([predictions, baseline_predictions], ignore_index=True)
    rows = []
    keys = ["method", "regressor", "split"]
    for (method, reg, split), g in allp.groupby(keys, sort=True):
        for client, gc in g.groupby("client", sort=True):
            rows.append(
                {
                    "method": method,
                    "regressor": reg,
                    "client": int(client),
                    "split": split,
                    **regression_metrics(gc["y_true"], gc["y_pred"]),
                }
            )
        rows.append(
            {
                "method": method,
                "regressor": reg,
                "client": POOLED,
                "split": split,
                **regression_metrics(g["y_true"], g["y_pred"]),
            }
        )
    out = pd.DataFrame(rows)
    out["scope"] = out["client"].map(lambda c: "pooled" if c == POOLED else "client")
    return out.assign(experiment=params.experiment, seed=seed, strategy=strategy)
