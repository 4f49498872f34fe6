"""Federated PLS (SIMPLS, one response), PCA (subspace iteration) and lasso (FISTA) from
aggregated vectors: warm starts for the encoders' linear paths.

The server never sees a sample. Per component it sends one direction ``r`` and every client
answers with ``X_c^T (X_c r)`` (a vector the size of one input row); before the first component
each client sends ``X_c^T y_c``, and to choose the number of components each client returns its
validation squared errors for every candidate count. The sums (in ascending client order) are
exactly what pooled SIMPLS would compute on the concatenated, already standardised training data,
so the result equals pooled PLS without pooling.

``X`` is the concatenation of every modality's flattened, standardised input (an absent modality
is zero, i.e. imputed by the training mean); ``y`` the standardised target. Both are centred by the
federated scaler, so no intercept is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fdrmfl_pipeline.core.clientdata import ClientData, SplitArrays

logger = logging.getLogger(__name__)


def design(split: SplitArrays, names: Sequence[str]) -> np.ndarray:
    """(n, p) float64 design matrix: flattened modalities side by side, absent ones zero."""
    cols = []
    for j, m in enumerate(names):
        x = split.x[m]
        v = x.reshape(split.n, int(np.prod(x.shape[1:]))).astype(np.float64)  # n may be 0
        cols.append(np.where(split.mask[:, j : j + 1], v, 0.0))
    return np.concatenate(cols, axis=1) if cols else np.zeros((split.n, 0))


# ---- what runs on a client: each returns only an aggregate -------------------------------------


class ClientAggregates:
    """One client's answers to the server's queries, from its own rows (designs built once)."""

    def __init__(self, data: ClientData, names: Sequence[str]):
        self.n_train = data.train.n
        self.x, self.y = design(data.train, names), data.train.y.astype(np.float64)
        self.xv, self.yv = design(data.val, names), data.val.y.astype(np.float64)

    def cross(self) -> np.ndarray:
        """``X^T y`` of the train split."""
        return self.x.T @ self.y

    def gram_times(self, r: np.ndarray) -> np.ndarray:
        """``X^T (X r)`` of the train split."""
        return self.x.T @ (self.x @ r)

    def val_sse(self, coefs: np.ndarray) -> tuple[np.ndarray, int]:
        """Sum of squared validation errors (standardised units) for each coefficient column."""
        if len(self.yv) == 0:
            return np.zeros(coefs.shape[1]), 0
        err = self.xv @ coefs - self.yv[:, None]
        return (err * err).sum(axis=0), len(self.yv)


# ---- server ------------------------------------------------------------------------------------


@dataclass
class PLSFit:
    """Weights mapping the standardised design to unit-variance scores, and the score coefficients."""

    weights: np.ndarray  # (p, k): scores = X @ weights, unit variance over the pooled train set
    coef: np.ndarray  # (k,): y_hat (standardised) = scores @ coef
    val_mse: list[float]  # mean-over-clients validation MSE for 1..k_max components (may be empty)
    n_components: int

    def blocks(self, names: Sequence[str], sizes: Sequence[int]) -> dict[str, np.ndarray]:
        """``weights`` split into one (p_m, k) block per modality."""
        out, start = {}, 0
        for m, size in zip(names, sizes, strict=True):
            out[m] = self.weights[start : start + size]
            start += size
        return out


class PLSOracle(Protocol):
    """What the server can ask of the clients: sums over clients (ascending client order)."""

    def n_train(self) -> int: ...

    def cross(self) -> np.ndarray: ...  # sum of X_c^T y_c

    def gram_times(self, r: np.ndarray) -> np.ndarray: ...  # sum of X_c^T X_c r

    def val_sse(self, coefs: np.ndarray) -> list[tuple[np.ndarray, int]]: ...  # per client


class InProcessPLS:
    """:class:`PLSOracle` over clients held in this process."""

    def __init__(self, clients: dict[int, ClientData], names: Sequence[str]):
        self.clients = {c: ClientAggregates(clients[c], names) for c in sorted(clients)}

    def n_train(self) -> int:
        return sum(a.n_train for a in self.clients.values())

    def cross(self) -> np.ndarray:
        return _ordered_sum(a.cross() for a in self.clients.values())

    def gram_times(self, r: np.ndarray) -> np.ndarray:
        return _ordered_sum(a.gram_times(r) for a in self.clients.values())

    def val_sse(self, coefs: np.ndarray) -> list[tuple[np.ndarray, int]]:
        return [a.val_sse(coefs) for a in self.clients.values()]


def _ordered_sum(parts) -> np.ndarray:
    total = None
    for part in parts:
        total = part.copy() if total is None else total + part
    return total


def federated_pls(
    clients: dict[int, ClientData],
    names: Sequence[str],
    max_components: int,
    n_components: int | None = None,
) -> PLSFit:
    """:func:`fit_pls` over clients held in this process."""
    return fit_pls(InProcessPLS(clients, names), max_components, n_components)


def fit_pls(oracle: PLSOracle, max_components: int, n_components: int | None = None) -> PLSFit:
    """SIMPLS on the sum of the clients' aggregates; the component count is ``n_components`` or,
    when None, the one with the lowest mean validation MSE over clients (train data only)."""
    n_total = oracle.n_train()
    s0 = oracle.cross()
    p = s0.shape[0]
    k_max = int(min(max_components, p, max(n_total - 1, 1)))
    s = s0.copy()
    basis = np.zeros((p, 0))
    rs, qs = [], []
    s0_norm = float(np.linalg.norm(s0))
    for _ in range(k_max):
        r = s.copy()
        if float(np.linalg.norm(r)) <= 1e-10 * s0_norm:
            break  # the cross-covariance is exhausted
        u = oracle.gram_times(r)  # X^T X r
        tt = float(r @ u)  # |X r|^2
        if tt <= 1e-12 * float(r @ r):
            break  # r lies in the null space of the pooled training data
        norm = np.sqrt(tt)
        r, load = r / norm, u / norm  # t = X r has unit norm; load = X^T t
        rs.append(r)
        qs.append(float(s0 @ r))  # y^T t
        v = load - basis @ (basis.T @ load)
        v /= np.linalg.norm(v)
        basis = np.column_stack([basis, v])
        s = s - v * (v @ s)
    if not rs:
        raise ValueError("federated PLS found no direction: the training target is constant")
    scale = np.sqrt(n_total)  # unit-norm scores -> unit-variance scores
    weights = np.column_stack(rs) * scale
    coef = np.asarray(qs) / scale
    return _choose_components(oracle, weights, coef, n_components, "PLS")


def _choose_components(
    oracle: PLSOracle, weights: np.ndarray, coef: np.ndarray, n_components: int | None, what: str
) -> PLSFit:
    """Keep the first ``n_components`` score columns or, when None, the count whose linear model
    (the first k columns and their coefficients) has the lowest mean validation MSE over clients."""
    # validation curve: coefficients of the k-component model for k = 1..K
    cum = np.cumsum(weights * coef[None, :], axis=1)  # (p, K)
    per_client = [e / n for e, n in oracle.val_sse(cum) if n]
    val_mse = [float(v) for v in np.mean(per_client, axis=0)] if per_client else []
    if n_components is not None:
        k = min(n_components, len(coef))
    elif val_mse:
        k = int(np.argmin(val_mse)) + 1
    else:
        k = len(coef)
        logger.warning("federated %s: no validation rows, keeping all %d components", what, k)
    logger.info(
        "federated %s warm start: %d of %d components (validation MSE, standardised: %s)",
        what,
        k,
        len(coef),
        ", ".join(f"{v:.4g}" for v in val_mse),
    )
    return PLSFit(weights[:, :k], coef[:k], val_mse, k)


# ---- federated PCA (subspace iteration on the same aggregates) ---------------------------------


def fit_pca(
    oracle: PLSOracle,
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
    return _choose_components(oracle, weights, coef, n_components, "PCA")


# ---- federated lasso (FISTA on the same aggregates) --------------------------------------------


def _lipschitz(oracle: PLSOracle, n: int, p: int) -> float:
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


def lasso_path(oracle: PLSOracle, alphas, iterations: int = 200) -> np.ndarray:
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
    oracle: PLSOracle, n_alphas: int = 12, ratio: float = 0.01, iterations: int = 200
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


def warm_start_state(
    config,
    oracle: PLSOracle,
    seed: int,
    kind: str,
    n_components=None,
    lasso_penalties: int = 12,
    lasso_iterations: int = 200,
    pca_iterations: int = 100,
) -> dict:
    """Initial weights of a model of ``config`` for ``kind`` 'pls', 'pca' or 'lasso': seeded
    random, then the linear paths and the head set to the federated fit. PLS costs ``k + 2``
    aggregated queries, PCA ``pca_iterations + 3``, the lasso ``lasso_penalties *
    lasso_iterations`` (one per FISTA step)."""
    from math import prod

    from fdrmfl_pipeline.core.model import build_model, warm_start_linear

    if kind == "pls":
        fit = fit_pls(oracle, config.latent_dim, n_components)
    elif kind == "pca":
        fit = fit_pca(oracle, config.latent_dim, n_components, pca_iterations, seed)
    elif kind == "lasso":
        fit = fit_lasso(oracle, n_alphas=lasso_penalties, iterations=lasso_iterations)
    else:
        raise ValueError(f"unknown warm start '{kind}'; expected pls, pca or lasso")
    names = [m.name for m in config.modalities]
    model = build_model(config, seed=seed)
    warm_start_linear(
        model, fit.blocks(names, [prod(m.shape) for m in config.modalities]), fit.coef
    )
    return model.state_dict()
