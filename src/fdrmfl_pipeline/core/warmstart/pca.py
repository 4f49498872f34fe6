"""Federated PCA (subspace iteration on the aggregated ``X^T X V``), then regression on the
components."""

from __future__ import annotations

import numpy as np

from fdrmfl_pipeline.core.warmstart.protocol import AggregateOracle, PLSFit, choose_components


def fit_pca(
    oracle: AggregateOracle,
    max_components: int,
    n_components: int | None = None,
    iterations: int = 100,
    seed: int = 0,
) -> PLSFit:
    """Federated PCA of the pooled training design, then principal-component regression.

    Subspace iteration: the server keeps an orthonormal (p, b) block ``V`` (b = components + 8
    for convergence, seeded) and each iteration asks for ``sum_c X_c^T (X_c V)`` — one aggregated
    query of b vectors, i.e. one round trip per client on Flower — then a Rayleigh-Ritz step
    orders the directions by variance. Unsupervised: the target enters only through ``X^T y`` for
    the regression coefficients on the unit-variance scores (orthogonal, so each coefficient is
    ``t_j^T y / n``). The component count is chosen as for PLS (``n_components`` or val)."""
    n = oracle.n_train()
    c = oracle.cross()
    p = c.shape[0]
    k_max = int(min(max_components, p, max(n - 1, 1)))
    b = min(p, k_max + 8)
    v = np.linalg.qr(np.random.default_rng(seed).standard_normal((p, b)))[0]
    for _ in range(iterations):
        v = np.linalg.qr(oracle.gram_times(v))[0]
    g = v.T @ oracle.gram_times(v)
    lam, u = np.linalg.eigh((g + g.T) / 2.0)
    order = np.argsort(lam)[::-1]
    lam, v = lam[order], v @ u[:, order]
    if lam[0] <= 0.0:
        raise ValueError("federated PCA: the training design has no variance")
    k = int(min(k_max, np.sum(lam > 1e-10 * lam[0])))
    v = v[:, :k] * np.where(v[np.argmax(np.abs(v[:, :k]), axis=0), np.arange(k)] < 0, -1.0, 1.0)
    weights = v / np.sqrt(lam[:k] / n)  # unit-variance scores over the pooled train set
    coef = weights.T @ c / n
    return choose_components(oracle, weights, coef, n_components, "PCA")
