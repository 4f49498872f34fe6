"""What the federated features serve: regression, classification or anomaly scores.

Plain numpy and scikit-learn (no torch): label encoding, the metrics of each task and the
federated Gaussian density of Z that anomaly scores come from.

- ``regression``: the target is a number (the default).
- ``classification``: the target is a class; the model's head gives one logit per class, the
  loss is cross-entropy, and the mutual-information term takes its supervised-contrastive form
  (samples of one class pulled together in Z).
- ``anomaly``: the model is trained as a regression of a monitored quantity on the sensors (on
  the training rows as they come, anomalies unlabelled); each row's score is how unusual its
  fused feature Z is under a Gaussian fitted from the clients' summed statistics of their
  training Z, plus how far the monitored quantity is from the head's prediction. Labelled
  anomalies only judge the scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TASKS = ("regression", "classification", "anomaly")
CLASSIFIERS = ("logistic", "rf")
ANOMALY_SCORES = ("combined", "density", "residual")


def encode_labels(values: Sequence, what: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class codes 0..C-1 (in the sorted order of the distinct labels) and the class names.
    Numbers that are whole (1.0, 2.0) are named without the decimal point."""
    from fdrmfl_pipeline.errors import InputDataError

    arr = np.asarray(values, dtype=object)
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in arr])
    if missing.any():
        raise InputDataError(f"{what}: {int(missing.sum())} row(s) have no class label")

    def name(v) -> str:
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    names = np.array([name(v) for v in arr])
    classes = sorted(set(names), key=lambda c: (not _is_number(c), _num(c), c))
    if len(classes) < 2:
        raise InputDataError(
            f"{what}: a classification target needs at least two classes; every row is "
            f"'{classes[0] if classes else ''}'"
        )
    if len(classes) > max(50, len(names) // 5):
        raise InputDataError(
            f"{what}: {len(classes)} distinct labels in {len(names)} rows does not look like a "
            "class label; for a number to predict, set task: regression"
        )
    code = {c: i for i, c in enumerate(classes)}
    return np.array([code[c] for c in names], np.float64), tuple(classes)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _num(text: str) -> float:
    return float(text) if _is_number(text) else 0.0


def quantile_classes(
    response: np.ndarray, reference: np.ndarray, n_classes: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Classes from a continuous response: its quantile bins on ``reference`` rows (the
    training rows), named q1..qK from low to high."""
    edges = np.quantile(reference, np.linspace(0, 1, n_classes + 1)[1:-1])
    return (
        np.searchsorted(edges, response, side="right").astype(np.float64),
        tuple(f"q{i + 1}" for i in range(n_classes)),
    )


# --------------------------------------------------------------------------- classification
def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: the row-weighted mean |accuracy - confidence| over equal-width
    confidence bins."""
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total / max(len(y), 1))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """n, accuracy, macro-F1, ROC-AUC (one-vs-rest, macro; NaN where a class is absent or
    only one is present), log-loss (probabilities clipped at 1e-15) and top-label ECE."""
    from sklearn.metrics import f1_score, roc_auc_score

    y = np.asarray(y_true).astype(np.int64)
    p = np.clip(np.asarray(proba, np.float64), 1e-15, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    if len(y) == 0:
        nan = float("nan")
        return {
            "n": 0,
            "accuracy": nan,
            "macro_f1": nan,
            "roc_auc": nan,
            "log_loss": nan,
            "ece": nan,
        }
    pred = p.argmax(axis=1)
    present = np.unique(y)
    auc = float("nan")
    if len(present) > 1:
        if k == 2:
            auc = float(roc_auc_score(y, p[:, 1]))
        else:  # one-vs-rest over the classes present in these rows
            auc = float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "roc_auc": auc,
        "log_loss": float(-np.mean(np.log(p[np.arange(len(y)), y]))),
        "ece": expected_calibration_error(y, p),
    }


# --------------------------------------------------------------------------- anomaly
def z_moments(z: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """One client's summable statistics of its training Z: count, sum and sum of outer
    products (a federated Gaussian needs nothing else)."""
    z = np.asarray(z, np.float64)
    return len(z), z.sum(axis=0), z.T @ z


def gaussian_from_moments(
    parts: Sequence[tuple[int, np.ndarray, np.ndarray]], ridge: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision matrix of Z from the clients' summed moments (summed in the given
    order); the covariance gets ``ridge`` times its mean variance on the diagonal."""
    n = sum(p[0] for p in parts)
    s1 = sum(p[1] for p in parts)
    s2 = sum(p[2] for p in parts)
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    cov = cov + ridge * max(float(np.trace(cov)) / len(mean), 1e-12) * np.eye(len(mean))
    return mean, np.linalg.inv(cov)


def mahalanobis2(z: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = np.asarray(z, np.float64) - mean
    return np.einsum("ij,jk,ik->i", d, precision, d)


def anomaly_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """n, share of anomalies, ROC-AUC and PR-AUC (average precision); NaN without both kinds."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, np.float64)
    both = len(np.unique(y)) == 2
    return {
        "n": int(len(y)),
        "anomaly_share": float(y.mean()) if len(y) else float("nan"),
        "roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, s)) if both else float("nan"),
    }
