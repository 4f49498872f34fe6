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
    task: str = "regression",
) -> pd.DataFrame:
    """n, mse, rmse, mae, r2 and target variance, in the target's original units; for a
    classification task n, accuracy, macro-F1, ROC-AUC, log-loss and calibration error (ECE)
    from the predicted class probabilities."""
    allp = pd.concat([predictions, baseline_predictions], ignore_index=True)
    score = _scorer(allp, task)
    rows = []
    keys = ["method", "regressor", "split"]
    for (method, reg, split), g in allp.groupby(keys, sort=True):
        for client, gc in g.groupby("client", sort=True):
            rows.append(
                {"method": method, "regressor": reg, "client": int(client), "split": split}
                | score(gc)
            )
        rows.append(
            {"method": method, "regressor": reg, "client": POOLED, "split": split} | score(g)
        )
    out = pd.DataFrame(rows)
    out["scope"] = out["client"].map(lambda c: "pooled" if c == POOLED else "client")
    return out.assign(experiment=params.experiment, seed=seed, strategy=strategy)


def _scorer(predictions: pd.DataFrame, task: str):
    """rows -> metrics: the regression metrics of y_pred, or a classifier's from p0, p1, ..."""
    if task != "classification":
        from fdrmfl_pipeline.core.metrics import regression_metrics

        return lambda g: regression_metrics(g["y_true"], g["y_pred"])
    from fdrmfl_pipeline.core.tasks import classification_metrics
    from fdrmfl_pipeline.errors import ConfigError

    pcols = sorted(
        (c for c in predictions.columns if c[:1] == "p" and c[1:].isdigit()),
        key=lambda c: int(c[1:]),
    )
    if not pcols:
        raise ConfigError(
            "task is classification but the predictions hold no class probabilities (p0, p1, "
            "...): they were made for another task; rerun the training and regression pipelines"
        )
    return lambda g: classification_metrics(g["y_true"].to_numpy(), g[pcols].to_numpy())


def choose_regressors(
    evaluation_metrics: pd.DataFrame, extracted_features: pd.DataFrame, params: EvaluationParams
) -> pd.DataFrame:
    """Per method, the regressor that represents it, chosen on validation rows only by
    ``params.selection`` (core.selection), with the reason."""
    from fdrmfl_pipeline.core.selection import SelectionRule, choose_regressors, outside_share

    rule = SelectionRule(**params.selection.model_dump())
    classes = "log_loss" in evaluation_metrics.columns  # class codes have no range to leave
    share = (
        float("nan")
        if classes
        else outside_share(extracted_features[["client", "split", "target"]])
    )
    out = choose_regressors(evaluation_metrics, share, rule, score="log_loss" if classes else "mse")
    if out["restricted"].any():
        logger.warning(
            "%.0f %% of validation targets lie outside their client's training range: only "
            "regressors with linear tails may represent a method (evaluation.selection)",
            100 * share,
        )
    for r in out.itertuples():
        logger.info("%s is represented by %s: %s", r.method, r.regressor, r.reason)
    return out


ANOMALY_SPLITS = ("val", "test")


def score_anomalies(
    extracted_features: pd.DataFrame,
    multimodal_dataset,
    client_assignments: pd.DataFrame,
    params: EvaluationParams,
    task: str,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Task anomaly: every row's scores and, where the data set has anomaly labels, ROC-AUC and
    PR-AUC per client and pooled on val and test (empty frames for other tasks).

    Scores (higher: more unusual): ``density``, the squared Mahalanobis distance of Z under
    one Gaussian fitted from the clients' summed moments of their training Z (count, sum, sum
    of outer products: no row leaves a client), divided by Z's width; ``residual``, the head's
    squared error on the monitored target over the clients' pooled training mean squared
    error (again a sum); ``combined``, their sum. The baseline ``isolation_forest`` is fitted
    on each client's own standardised raw training inputs. Training rows carry unlabelled
    anomalies as they come; labels only judge the scores."""
    from fdrmfl_pipeline.core import tasks
    from fdrmfl_pipeline.core.modalities import from_arrow

    if task != "anomaly":
        return _empty_scores(), _empty_anomaly_metrics()
    data = from_arrow(multimodal_dataset)
    labels = (
        pd.Series(data.anomaly.astype(float), index=data.sample_ids)
        if data.anomaly is not None
        else None
    )
    cols = [c for c in extracted_features.columns if c.startswith("z_")]
    feats = extracted_features.sort_values(["client", "split", "sample_id"], kind="stable")
    train = feats[feats["split"] == "train"]
    clients = sorted(feats["client"].unique())
    parts = [tasks.z_moments(train.loc[train["client"] == c, cols].to_numpy()) for c in clients]
    mean, precision = tasks.gaussian_from_moments(parts)
    sq = [
        float(((g["target"] - g["head_pred"]) ** 2).sum())
        for _, g in train.groupby("client", sort=True)
    ]
    sigma2 = max(sum(sq) / max(len(train), 1), 1e-12)
    density = tasks.mahalanobis2(feats[cols].to_numpy(), mean, precision) / len(cols)
    residual = ((feats["target"] - feats["head_pred"]) ** 2).to_numpy() / sigma2
    scores = feats[["sample_id", "client", "split"]].assign(
        method="fdrmfl",
        density=density,
        residual=residual,
        combined=density + residual,
    )
    scores["score"] = scores[params.anomaly_score]
    scores = pd.concat(
        [scores, _isolation_forest(data, client_assignments, seed)], ignore_index=True
    )
    scores["label"] = (
        scores["sample_id"].map(labels).to_numpy() if labels is not None else float("nan")
    )
    return scores, _anomaly_metrics(scores, labels is not None)


def _isolation_forest(data, client_assignments: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per client: an isolation forest on its own standardised raw training inputs."""
    from sklearn.ensemble import IsolationForest

    from fdrmfl_pipeline.core.clientdata import build_clients
    from fdrmfl_pipeline.core.warmstart import design

    names = data.modality_names
    clients, _ = build_clients(data, client_assignments, names, "local", seed)
    out = []
    for c, cd in clients.items():
        forest = IsolationForest(n_estimators=200, random_state=seed).fit(
            design(cd.splits["train"], names)
        )
        for s in ("train", *ANOMALY_SPLITS):
            sp = cd.splits[s]
            if sp.n:
                raw = -forest.score_samples(design(sp, names))
                out.append(
                    pd.DataFrame(
                        {
                            "sample_id": sp.sample_ids,
                            "client": c,
                            "split": s,
                            "method": "isolation_forest",
                            "score": raw,
                        }
                    )
                )
    return pd.concat(out, ignore_index=True) if out else _empty_scores()


def _anomaly_metrics(scores: pd.DataFrame, labelled: bool) -> pd.DataFrame:
    from fdrmfl_pipeline.core.tasks import anomaly_metrics

    if not labelled:
        return _empty_anomaly_metrics()
    rows = []
    kinds = {"fdrmfl": ("combined", "density", "residual")}
    for method, g in scores[scores["split"].isin(ANOMALY_SPLITS)].groupby("method", sort=True):
        for kind in kinds.get(method, ("score",)):
            for split, gs in g.groupby("split", sort=True):
                for client, gc in gs.groupby("client", sort=True):
                    rows.append(
                        {"method": method, "score": kind, "client": int(client), "split": split}
                        | anomaly_metrics(gc["label"], gc[kind])
                    )
                rows.append(
                    {"method": method, "score": kind, "client": POOLED, "split": split}
                    | anomaly_metrics(gs["label"], gs[kind])
                )
    out = pd.DataFrame(rows)
    out["scope"] = out["client"].map(lambda c: "pooled" if c == POOLED else "client")
    return out


def _empty_scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in (
                ("sample_id", str),
                ("client", "int64"),
                ("split", str),
                ("method", str),
                ("score", float),
            )
        }
    )


def _empty_anomaly_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in (
                ("method", str),
                ("score", str),
                ("client", "int64"),
                ("split", str),
                ("n", "int64"),
                ("anomaly_share", float),
                ("roc_auc", float),
                ("pr_auc", float),
                ("scope", str),
            )
        }
    )
