"""The warm starts' protocol: what the server may ask of the clients, and the start itself.

The server never sees a sample. Every warm start (:mod:`.pls`, :mod:`.pca`, :mod:`.lasso`) is
written against :class:`AggregateOracle`: sums over clients, in ascending client order, of
``X_c^T y_c``, ``X_c^T X_c r`` and per-client validation squared errors. :class:`InProcessOracle`
answers from clients held in this process; the Flower engine answers through messages.

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

KINDS = ("none", "pls", "pca", "lasso")


@dataclass(frozen=True)
class WarmStartConfig:
    """Which federated start to compute and its settings (``kind`` 'none': seeded random)."""

    kind: str = "pls"
    components: int | None = None
    pca_iterations: int = 100
    lasso_penalties: int = 12
    lasso_iterations: int = 200
    gram_limit: int = 512  # PCA / lasso: ask once for the summed X^T X up to this many columns

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown warm start '{self.kind}'; expected one of {KINDS}")


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

    def gram(self) -> np.ndarray:
        """``X^T X`` of the train split."""
        return self.x.T @ self.x

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


class AggregateOracle(Protocol):
    """What the server can ask of the clients: sums over clients (ascending client order)."""

    def n_train(self) -> int: ...

    def cross(self) -> np.ndarray: ...  # sum of X_c^T y_c

    def gram_times(self, r: np.ndarray) -> np.ndarray: ...  # sum of X_c^T X_c r

    def gram(self) -> np.ndarray: ...  # sum of X_c^T X_c

    def val_sse(self, coefs: np.ndarray) -> list[tuple[np.ndarray, int]]: ...  # per client


class InProcessOracle:
    """:class:`AggregateOracle` over clients held in this process."""

    def __init__(self, clients: dict[int, ClientData], names: Sequence[str], secure: bool = False):
        self.clients = {c: ClientAggregates(clients[c], names) for c in sorted(clients)}
        self.secure = secure  # sums as a secure aggregate computes them (core.secagg)

    def _sum(self, parts: dict[int, np.ndarray]) -> np.ndarray:
        if not self.secure:
            return ordered_sum(parts[c] for c in sorted(parts))
        from fdrmfl_pipeline.core.secagg import plain_sum

        shape = np.shape(next(iter(parts.values())))
        return plain_sum(parts).reshape(shape)

    def n_train(self) -> int:
        return sum(a.n_train for a in self.clients.values())

    def cross(self) -> np.ndarray:
        return self._sum({c: a.cross() for c, a in self.clients.items()})

    def gram_times(self, r: np.ndarray) -> np.ndarray:
        return self._sum({c: a.gram_times(r) for c, a in self.clients.items()})

    def gram(self) -> np.ndarray:
        return self._sum({c: a.gram() for c, a in self.clients.items()})

    def val_sse(self, coefs: np.ndarray) -> list[tuple[np.ndarray, int]]:
        answers = [a.val_sse(coefs) for a in self.clients.values()]
        if not self.secure:
            return answers
        # one entry: the sum over clients of their validation MSE, and how many have rows
        # (its ratio is the mean over clients, what the callers compute)
        total = self._sum(
            {c: val_mse_answer(*a) for c, a in zip(self.clients, answers, strict=True)}
        )
        return [(total[:-1], int(round(total[-1])))]


def _ordered_sum(parts) -> np.ndarray:
    total = None
    for part in parts:
        total = part.copy() if total is None else total + part
    return total


def val_mse_answer(sse: np.ndarray, n: int) -> np.ndarray:
    """A client's secure answer to a validation query: its MSE per column and a 1, or zeros
    when it has no validation rows."""
    sse = np.asarray(sse, np.float64)
    return np.append(sse / n, 1.0) if n else np.zeros(sse.size + 1)


def ordered_sum(parts) -> np.ndarray:
    """Sum in the given (ascending client) order: the same float result on every engine."""
    total = None
    for part in parts:
        total = part.copy() if total is None else total + part
    return total


def choose_components(
    oracle: AggregateOracle,
    weights: np.ndarray,
    coef: np.ndarray,
    n_components: int | None,
    what: str,
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


class DenseGram:
    """An oracle that asks once for the summed ``X^T X`` and answers every ``X^T X r`` from it
    (PCA's subspace iterations and the lasso's FISTA steps then cost no messages)."""

    def __init__(self, oracle: AggregateOracle):
        self.oracle = oracle
        self._gram: np.ndarray | None = None

    def n_train(self) -> int:
        return self.oracle.n_train()

    def cross(self) -> np.ndarray:
        return self.oracle.cross()

    def gram(self) -> np.ndarray:
        if self._gram is None:
            self._gram = np.asarray(self.oracle.gram(), dtype=np.float64)
        return self._gram

    def gram_times(self, r: np.ndarray) -> np.ndarray:
        return self.gram() @ r

    def val_sse(self, coefs: np.ndarray) -> list[tuple[np.ndarray, int]]:
        return self.oracle.val_sse(coefs)


def warm_start_state(config, oracle: AggregateOracle, seed: int, ws: WarmStartConfig) -> dict:
    """Initial weights of a model of ``config``: seeded random, then the linear paths and the
    head set to the federated fit of ``ws.kind`` ('pls', 'pca' or 'lasso'). PLS costs ``k + 2``
    aggregated queries, PCA ``pca_iterations + 3``, the lasso ``lasso_penalties *
    lasso_iterations`` (one per FISTA step); up to ``ws.gram_limit`` input columns PCA and the
    lasso ask for the summed ``X^T X`` once instead (:class:`DenseGram`)."""
    from math import prod

    from fdrmfl_pipeline.core.model import build_model, warm_start_linear
    from fdrmfl_pipeline.core.warmstart.lasso import fit_lasso
    from fdrmfl_pipeline.core.warmstart.pca import fit_pca
    from fdrmfl_pipeline.core.warmstart.pls import fit_pls

    p = sum(prod(m.shape) for m in config.modalities)
    if ws.kind in ("pca", "lasso") and p <= ws.gram_limit:
        # their iterations span the input space, so the per-iteration answers would reveal the
        # summed Gram matrix anyway; PLS asks for k directions only and keeps its queries
        oracle = DenseGram(oracle)
    if ws.kind == "pls":
        fit = fit_pls(oracle, config.latent_dim, ws.components)
    elif ws.kind == "pca":
        fit = fit_pca(oracle, config.latent_dim, ws.components, ws.pca_iterations, seed)
    elif ws.kind == "lasso":
        fit = fit_lasso(oracle, n_alphas=ws.lasso_penalties, iterations=ws.lasso_iterations)
    else:
        raise ValueError(f"warm start '{ws.kind}' has no federated fit; expected pls, pca or lasso")
    names = [m.name for m in config.modalities]
    model = build_model(config, seed=seed)
    warm_start_linear(
        model, fit.blocks(names, [prod(m.shape) for m in config.modalities]), fit.coef
    )
    return model.state_dict()
