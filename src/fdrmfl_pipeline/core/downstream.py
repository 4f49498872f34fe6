"""Downstream regressors on extracted features (Z or a baseline's features).

Every regressor is fitted on a client's ``train`` rows only (or on all clients' ``train`` rows
for the pooled option); its feature scaler too. With ``refit_on_val`` the ``val`` predictions
still come from that train-only fit (so ``val`` stays a held-out score for choosing a regressor),
while the ``test`` predictions come from the same regressor refitted on ``train`` + ``val`` (its
own choices -- ridge penalty, PLS components, GP hyper-parameters -- redone on those rows). Test
rows never enter a fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

REGRESSORS = ("rf", "ridge", "pls", "gp", "gp_fed")
# fitted across clients from summed statistics only (core.fedgp), not per client
FEDERATED_REGRESSORS = ("gp_fed",)
EVAL_SPLITS = ("val", "test")
GP_INPUTS = ("all", "evidence")  # gp_fed: every feature column, or the leading k by evidence


def make_regressor(name: str, seed: int, n_train: int, n_features: int):
    """An sklearn pipeline: RF-100 (the reference protocol, fixed seed), ridge with alpha by
    (efficient leave-one-out) CV on train, PLS with the component count by CV on train, or a
    Gaussian process with an ARD RBF + white-noise kernel."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "rf":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=2)
    if name == "ridge":
        from sklearn.linear_model import RidgeCV

        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    if name == "pls":
        from sklearn.cross_decomposition import PLSRegression
        from sklearn.model_selection import GridSearchCV, KFold

        max_k = max(1, min(15, n_features, n_train - 2))
        cv = KFold(n_splits=min(5, max(2, n_train // 4)), shuffle=True, random_state=seed)
        search = GridSearchCV(
            PLSRegression(scale=False),
            {"n_components": list(range(1, max_k + 1))},
            cv=cv,
            scoring="neg_mean_squared_error",
        )
        return make_pipeline(StandardScaler(), search)
    if name == "gp":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        kernel = ConstantKernel(1.0) * RBF(length_scale=np.ones(n_features)) + WhiteKernel(0.1)
        return make_pipeline(
            StandardScaler(),
            GaussianProcessRegressor(
                kernel=kernel, normalize_y=True, random_state=seed, n_restarts_optimizer=1
            ),
        )
    raise ValueError(f"unknown regressor '{name}'; expected one of {REGRESSORS}")


def _rows(ids, client, split, method, regressor, y_true, y_pred) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": ids,
            "client": np.asarray(client, dtype=np.int64)
            if np.ndim(client)
            else np.full(len(ids), client, np.int64),
            "split": split,
            "method": method,
            "regressor": regressor,
            "y_true": np.asarray(y_true, np.float64),
            "y_pred": np.asarray(y_pred, np.float64).ravel(),
        }
    )


def fit_predict_per_client(
    features: pd.DataFrame,
    feature_cols: Sequence[str],
    method: str,
    regressors: Sequence[str],
    seed: int,
    pooled: bool = False,
    gp_settings=None,
    refit_on_val: bool = False,
    gp_inputs: str = "all",
) -> pd.DataFrame:
    """Fit each regressor on every client's train rows (or all clients' train rows if ``pooled``)
    and predict that client's val and test rows. ``features`` has sample_id, client, split, target.
    A federated regressor (``gp_fed``) is fitted once from every client's sums and is skipped
    when ``pooled`` (it never needs the rows in one place); ``gp_inputs="evidence"`` lets it keep
    only the leading feature columns its marginal likelihood on the train rows prefers.
    ``refit_on_val``: test predictions from a refit on train + val (module docstring)."""
    out = []
    clients = sorted(features["client"].unique())
    for reg in regressors:
        if reg in FEDERATED_REGRESSORS:
            if not pooled:
                out.append(
                    _federated_gp(
                        features,
                        feature_cols,
                        method,
                        clients,
                        seed,
                        gp_settings,
                        refit_on_val,
                        gp_inputs,
                    )
                )
            continue
        name = f"{reg}_pooled" if pooled else reg
        pooled_models: dict[tuple[str, ...], object] = {}
        for c in clients:
            mine = features[features["client"] == c]
            models: dict[tuple[str, ...], object] = pooled_models if pooled else {}
            for split in EVAL_SPLITS:
                rows = mine[mine["split"] == split]
                if len(rows) == 0:
                    continue
                fit_on = _fit_splits(split, refit_on_val)
                if fit_on not in models:
                    fit_rows = features if pooled else mine
                    fit_rows = fit_rows[fit_rows["split"].isin(fit_on)]
                    models[fit_on] = _fit(reg, fit_rows, feature_cols, seed)
                pred = _predict(models[fit_on], rows, feature_cols)
                out.append(
                    _rows(
                        rows["sample_id"].to_numpy(), c, split, method, name, rows["target"], pred
                    )
                )
    return pd.concat(out, ignore_index=True) if out else empty_predictions()


def _fit_splits(split: str, refit_on_val: bool) -> tuple[str, ...]:
    """The rows a regressor predicting ``split`` is fitted on: train, or train + val for test."""
    return ("train", "val") if refit_on_val and split == "test" else ("train",)


def _federated_gp(
    features: pd.DataFrame,
    cols,
    method: str,
    clients,
    seed: int,
    settings=None,
    refit_on_val: bool = False,
    inputs: str = "all",
) -> pd.DataFrame:
    """The random-feature GP fitted from each client's sums (``core.fedgp``); every client then
    predicts its own val and test rows (test from a refit on train + val if ``refit_on_val``).
    ``inputs="evidence"``: the leading columns are chosen once, by the marginal likelihood of the
    train rows, before any val or test prediction, and kept for the refit."""
    from fdrmfl_pipeline.core.fedgp import GPClient, choose_inputs_by_evidence, fit_federated_gp

    if inputs not in GP_INPUTS:
        raise ValueError(
            f"regression.experimental.gp_fed_inputs must be one of {GP_INPUTS}, got {inputs!r}"
        )
    cols = list(cols)
    parts = {c: features[features["client"] == c] for c in clients}
    if inputs == "evidence":
        train = [parts[c][parts[c]["split"] == "train"] for c in clients]
        xy = [GPClient(t[cols].to_numpy(np.float64), t["target"].to_numpy()) for t in train]
        k, _ = choose_inputs_by_evidence(xy, seed, settings)
        cols = cols[:k]
    models = {}
    out = []
    for split in EVAL_SPLITS:
        fit_on = _fit_splits(split, refit_on_val)
        if fit_on not in models:
            gp_clients = []
            for c in clients:
                train = parts[c][parts[c]["split"].isin(fit_on)]
                gp_clients.append(
                    GPClient(train[cols].to_numpy(np.float64), train["target"].to_numpy())
                )
            models[fit_on] = fit_federated_gp(gp_clients, seed, settings)
        for c in clients:
            rows = parts[c][parts[c]["split"] == split]
            if len(rows):
                pred = models[fit_on].predict(rows[cols].to_numpy(np.float64))
                ids = rows["sample_id"].to_numpy()
                out.append(_rows(ids, c, split, method, "gp_fed", rows["target"], pred))
    return pd.concat(out, ignore_index=True) if out else empty_predictions()


def _fit(reg: str, train: pd.DataFrame, cols, seed: int):
    if reg == "mean":
        return float(train["target"].mean())
    model = make_regressor(reg, seed, len(train), len(cols))
    model.fit(train[list(cols)].to_numpy(np.float64), train["target"].to_numpy(np.float64))
    return model


def _predict(model, rows: pd.DataFrame, cols) -> np.ndarray:
    if isinstance(model, float):
        return np.full(len(rows), model)
    return np.asarray(model.predict(rows[list(cols)].to_numpy(np.float64))).ravel()


def empty_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in (
                ("sample_id", str),
                ("client", "int64"),
                ("split", str),
                ("method", str),
                ("regressor", str),
                ("y_true", float),
                ("y_pred", float),
            )
        }
    )


def head_predictions(features: pd.DataFrame, method: str) -> pd.DataFrame:
    """The model's own head (``head_pred`` column; a classifier's ``head_p<k>`` probabilities
    too) on val and test rows."""
    rows = features[features["split"].isin(EVAL_SPLITS)]
    proba_cols = sorted(
        (c for c in features.columns if c.startswith("head_p") and c[6:].isdigit()),
        key=lambda c: int(c[6:]),
    )
    if proba_cols:
        out = _rows(
            rows["sample_id"].to_numpy(),
            rows["client"].to_numpy(),
            rows["split"].to_numpy(),
            method,
            "head",
            rows["target"],
            rows["head_pred"],
        )
        for k, c in enumerate(proba_cols):
            out[f"p{k}"] = rows[c].to_numpy(np.float64)
        return out
    return _rows(
        rows["sample_id"].to_numpy(),
        rows["client"].to_numpy(),
        rows["split"].to_numpy(),
        method,
        "head",
        rows["target"],
        rows["head_pred"],
    )


# --------------------------------------------------------------------------- classification
CLASSIFIER_SMOOTHING = 1e-3  # mixed-in uniform probability: a class a client never saw is not 0


def make_classifier(name: str, seed: int):
    """Logistic regression (standardised inputs, L2, C=1) or a random forest of 100 trees
    (``prior``, the training rows' class frequencies, needs no model)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        from sklearn.linear_model import LogisticRegression

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    if name == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=2)
    from fdrmfl_pipeline.core.tasks import CLASSIFIERS

    raise ValueError(f"unknown classifier '{name}'; expected one of {CLASSIFIERS}")


class _Prior:
    """The training rows' class frequencies (a client that saw one class only)."""

    def __init__(self, y: np.ndarray, n_classes: int) -> None:
        self.p = np.bincount(y, minlength=n_classes) / len(y)

    def proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile(self.p, (len(x), 1))


def _fit_classifier(name: str, x: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    y = y.astype(np.int64)
    if name == "prior" or len(np.unique(y)) < 2:
        return _Prior(y, n_classes)
    model = make_classifier(name, seed)
    model.fit(x, y)
    return model


def _class_proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities over every class (those the fit never saw get 0), smoothed."""
    if isinstance(model, _Prior):
        p = model.proba(x)
    else:
        p = np.zeros((len(x), n_classes))
        p[:, np.asarray(model.classes_, np.int64)] = model.predict_proba(x)
    return (1 - CLASSIFIER_SMOOTHING) * p + CLASSIFIER_SMOOTHING / n_classes


def classify_per_client(
    features: pd.DataFrame,
    feature_cols: Sequence[str],
    method: str,
    classifiers: Sequence[str],
    n_classes: int,
    seed: int,
    pooled: bool = False,
    refit_on_val: bool = False,
) -> pd.DataFrame:
    """Like :func:`fit_predict_per_client` for a class target: each classifier fitted on every
    client's train rows (or all clients' if ``pooled``), predicting its val and test rows;
    ``y_pred`` is the most probable class and ``p<k>`` the probability of class k."""
    cols = list(feature_cols)
    out = []
    for name in classifiers:
        label = f"{name}_pooled" if pooled else name
        shared: dict[tuple[str, ...], object] = {}
        for c in sorted(features["client"].unique()):
            mine = features[features["client"] == c]
            models = shared if pooled else {}
            for split in EVAL_SPLITS:
                rows = mine[mine["split"] == split]
                if len(rows) == 0:
                    continue
                fit_on = _fit_splits(split, refit_on_val)
                if fit_on not in models:
                    fit = features if pooled else mine
                    fit = fit[fit["split"].isin(fit_on)]
                    models[fit_on] = _fit_classifier(
                        name,
                        fit[cols].to_numpy(np.float64),
                        fit["target"].to_numpy(),
                        n_classes,
                        seed,
                    )
                p = _class_proba(models[fit_on], rows[cols].to_numpy(np.float64), n_classes)
                part = _rows(
                    rows["sample_id"].to_numpy(),
                    c,
                    split,
                    method,
                    label,
                    rows["target"],
                    p.argmax(axis=1),
                )
                for k in range(n_classes):
                    part[f"p{k}"] = p[:, k]
                out.append(part)
    return pd.concat(out, ignore_index=True) if out else empty_predictions()
