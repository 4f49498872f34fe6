"""Federated lasso (FISTA; each gradient one aggregated ``X^T X w`` query)."""

from __future__ import annotations

import logging

import numpy as np

from fdrmfl_pipeline.core.warmstart.protocol import AggregateOracle, PLSFit

logger = logging.getLogger(__name__)


def _lipschitz(oracle: AggregateOracle, n: int, p: int) -> float:
    """Largest eigenvalue of X^T X / n by power iteration (30 aggregated queries)."""
    v = np.full(p, 1.0 / np.sqrt(p))
    lam = 0.0
    for _ in range(30):
        u = oracle.gram_times(v) / n
        lam = float(np.linalg.norm(u))
        if lam == 0.0:
            raise ValueError("federated lasso: the training design is all zeros")
        v = u / lam
    return lam


def lasso_path(oracle: AggregateOracle, alphas, iterations: int = 200) -> np.ndarray:
    """(p, len(alphas)) lasso weights, min (1/2n)|y - Xw|^2 + alpha |w|_1 for each alpha in turn
    (warm-started), by FISTA; each gradient is one aggregated ``X^T X w`` query."""
    n = oracle.n_train()
    c = oracle.cross()
    p = c.shape[0]
    step = 1.0 / (1.1 * _lipschitz(oracle, n, p))
    w = np.zeros(p)
    path = []
    for alpha in alphas:
        x_prev, z, t = w.copy(), w.copy(), 1.0
        for _ in range(iterations):
            grad = (oracle.gram_times(z) - c) / n
            x_new = z - step * grad
            x_new = np.sign(x_new) * np.maximum(np.abs(x_new) - step * alpha, 0.0)
            t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            z = x_new + ((t - 1.0) / t_new) * (x_new - x_prev)
            x_prev, t = x_new, t_new
        w = x_prev
        path.append(w.copy())
    return np.column_stack(path)


def fit_lasso(
    oracle: AggregateOracle, n_alphas: int = 12, ratio: float = 0.01, iterations: int = 200
) -> PLSFit:
    """Federated lasso along ``n_alphas`` penalties from the smallest that zeroes every weight
    down to ``ratio`` times it; the penalty with the lowest mean validation MSE over clients
    wins. Returned as a one-component fit: the lasso projection scaled to unit variance on the
    pooled train set, and its coefficient."""
    n = oracle.n_train()
    alpha_max = float(np.max(np.abs(oracle.cross()))) / n
    if alpha_max == 0.0:
        raise ValueError("federated lasso found no direction: the training target is constant")
    alphas = alpha_max * np.logspace(0.0, np.log10(ratio), n_alphas)
    coefs = lasso_path(oracle, alphas, iterations)
    per_client = [e / m for e, m in oracle.val_sse(coefs) if m]
    val_mse = [float(x) for x in np.mean(per_client, axis=0)] if per_client else []
    if val_mse:
        best = int(np.argmin(val_mse))
    else:
        best = len(alphas) - 1
        logger.warning("federated lasso: no validation rows, keeping the smallest penalty")
    w = coefs[:, best]
    if not np.any(w):
        logger.warning(
            "federated lasso: the penalty chosen on val keeps no weight (no linear signal); "
            "the warm start is the training mean and training starts from there"
        )
        return PLSFit(np.zeros((len(w), 0)), np.zeros(0), val_mse, 0)
    sd = float(np.sqrt(w @ oracle.gram_times(w) / n))
    logger.info(
        "federated lasso warm start: alpha %.3g (%d of %d nonzero weights; validation MSE, "
        "standardised: %s)",
        alphas[best],
        int(np.count_nonzero(w)),
        len(w),
        ", ".join(f"{x:.4g}" for x in val_mse),
    )
    return PLSFit((w / sd)[:, None], np.array([sd]), val_mse, 1)
