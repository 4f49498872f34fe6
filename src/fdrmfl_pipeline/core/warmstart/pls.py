"""Federated PLS (SIMPLS, one response) from aggregated vectors.

Per component the server sends one direction ``r`` and every client answers with
``X_c^T (X_c r)`` (a vector the size of one input row); before the first component each client
sends ``X_c^T y_c``. The sums are exactly what pooled SIMPLS would compute on the concatenated,
already standardised training data, so the result equals pooled PLS without pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fdrmfl_pipeline.core.clientdata import ClientData
from fdrmfl_pipeline.core.warmstart.protocol import (
    AggregateOracle,
    InProcessOracle,
    PLSFit,
    choose_components,
)


def federated_pls(
    clients: dict[int, ClientData],
    names: Sequence[str],
    max_components: int,
    n_components: int | None = None,
) -> PLSFit:
    """:func:`fit_pls` over clients held in this process."""
    return fit_pls(InProcessOracle(clients, names), max_components, n_components)


def fit_pls(
    oracle: AggregateOracle, max_components: int, n_components: int | None = None
) -> PLSFit:
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
    return choose_components(oracle, weights, coef, n_components, "PLS")
