"""Evaluation nodes: metrics per (method, regressor, client, split) and pooled over clients."""

from __future__ import annotations

import logging

import pandas as pd

from fdrmfl_pipeline.params import EvaluationParams

logger = logging.getLogger(__name__)

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


def choose_regressors(
    evaluation_metrics: pd.DataFrame, extracted_features: pd.DataFrame, params: EvaluationParams
) -> pd.DataFrame:
    """Per method, the regressor that represents it, chosen on validation rows only by
    ``params.selection`` (core.selection), with the reason."""
    from fdrmfl_pipeline.core.selection import SelectionRule, choose_regressors, outside_share

    rule = SelectionRule(**params.selection.model_dump())
    share = outside_share(extracted_features[["client", "split", "target"]])
    out = choose_regressors(evaluation_metrics, share, rule)
    if out["restricted"].any():
        logger.warning(
            "%.0f %% of validation targets lie outside their client's training range: only "
            "regressors with linear tails may represent a method (evaluation.selection)",
            100 * share,
        )
    for r in out.itertuples():
        logger.info("%s is represented by %s: %s", r.method, r.regressor, r.reason)
    return out
