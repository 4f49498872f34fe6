"""Regression nodes: downstream regressors on the extracted features Z."""

from __future__ import annotations

import logging

import pandas as pd

from fdrmfl_pipeline.params import RegressionParams

logger = logging.getLogger(__name__)


def predict_from_features(
    extracted_features: pd.DataFrame,
    params: RegressionParams,
    strategy: str,
    seed: int,
    task: str = "regression",
) -> pd.DataFrame:
    """Per client: fit each regressor (a classification task: each classifier) on its train
    features, predict val and test (+ the head; test from a refit on train + val when
    ``refit_on_val``)."""
    from fdrmfl_pipeline.core.downstream import fit_predict_per_client, head_predictions

    method = params.method or strategy
    cols = [c for c in extracted_features.columns if c.startswith("z_")]
    refit = params.refit_on_val
    if task == "classification":
        return _classify(extracted_features, cols, method, params, seed)
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


def _classify(
    features: pd.DataFrame, cols: list[str], method: str, params: RegressionParams, seed: int
) -> pd.DataFrame:
    from fdrmfl_pipeline.core.downstream import classify_per_client, head_predictions
    from fdrmfl_pipeline.errors import ConfigError

    n_classes = sum(1 for c in features.columns if c.startswith("head_p") and c[6:].isdigit())
    if not n_classes:
        raise ConfigError(
            "task is classification but the extracted features hold no class probabilities "
            "(head_p0, ...): the model was trained for another task; rerun the training pipeline"
        )
    parts = [
        classify_per_client(
            features,
            cols,
            method,
            params.classifiers,
            n_classes,
            seed,
            pooled=pooled,
            refit_on_val=params.refit_on_val,
        )
        for pooled in ((False, True) if params.pooled else (False,))
    ]
    if params.include_head:
        parts.append(head_predictions(features, method))
    out = pd.concat(parts, ignore_index=True)
    logger.info("Class predictions for method '%s': %d rows", method, len(out))
    return out
