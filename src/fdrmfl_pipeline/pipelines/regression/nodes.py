"""Regression nodes: downstream regressors on the extracted features Z."""

from __future__ import annotations

import logging

import pandas as pd

from fdrmfl_pipeline.params import RegressionParams

logger = logging.getLogger(__name__)


def predict_from_features(
    extracted_features: pd.DataFrame, params: RegressionParams, strategy: str, seed: int
) -> pd.DataFrame:
    """Per client: fit each regressor on its train features, predict val and test (+ the head;
    test from a refit on train + val when ``refit_on_val``)."""
    from fdrmfl_pipeline.core.downstream import fit_predict_per_client, head_predictions

    method = params.method or strategy
    cols = [c for c in extracted_features.columns if c.startswith("z_")]
    refit = params.refit_on_val
    parts = [
        fit_predict_per_client(
            extracted_features,
            cols,
            method,
            params.regressors,
            seed,
            refit_on_val=refit,
            gp_inputs=params.experimental.gp_fed_inputs,
        )
    ]
    if params.pooled:
        parts.append(
            fit_predict_per_client(
                extracted_features,
                cols,
                method,
                params.regressors,
                seed,
                pooled=True,
                refit_on_val=refit,
            )
        )
    if params.include_head:
        parts.append(head_predictions(extracted_features, method))
    out = pd.concat(parts, ignore_index=True)
    logger.info(
        "Predictions for method '%s': %d rows (%s)",
        method,
        len(out),
        ", ".join(out["regressor"].unique()),
    )
    return out
