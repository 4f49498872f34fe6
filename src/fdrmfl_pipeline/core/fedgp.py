"""Federated Gaussian-process regression by random Fourier features (no raw rows leave a client).

An exact GP needs the kernel between samples of different clients; this one approximates the ARD
RBF kernel ``s² exp(-½ Σ_j (x_j - x'_j)² / ℓ_j²)`` by ``D`` random Fourier features
``φ(x) = s √(2/D) cos(Ω (x / ℓ) + b)`` (Ω ~ N(0, I), b ~ U(0, 2π), fixed by the seed), so the GP
becomes Bayesian linear regression on φ with noise variance σ². Everything the server needs is a
sum over clients:

* the feature/target scalers from summed moments (``n``, Σx, Σx², Σy, Σy²);
* for given length-scales, ``G = Σ_k Φ_kᵀΦ_k`` (D×D) and ``c = Σ_k Φ_kᵀ y_k`` (D);
* the gradient of the log marginal likelihood with respect to the length-scales, by the chain
  rule: the server sends ``∂L/∂G`` and ``∂L/∂c``; each client returns the vector–Jacobian product
  of its own ``(G_k, c_k)`` with them (a d-vector), and the server adds them up.

The amplitude ``s`` and the noise ``σ`` live on the server only. Hyper-parameters maximise the
(federated, exact for this feature map) log marginal likelihood with Adam from a few starts; the
posterior mean weights ``A⁻¹ c`` (``A = s²G + σ²I``) go back to the clients, which predict their
own rows. With every client's ``(G_k, c_k)`` summed, the fit equals the same model fitted on the
pooled rows (tested), without pooling them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPSettings:
    """Random-feature count, optimisation steps and starts (initial length-scale multipliers)."""

    n_features: int = 256
    steps: int = 150
    lr: float = 0.05
    starts: tuple[float, ...] = (1.0, 3.0)
    min_noise: float = 1e-4


class GPClient:
    """One client's side of the federated GP: its own training rows, answers with sums only."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        import torch

        self.x = torch.tensor(np.asarray(x, np.float64))
        self.y = torch.tensor(np.asarray(y, np.float64).ravel())
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} feature rows but {len(self.y)} targets")

    def moments(self) -> tuple[int, np.ndarray, np.ndarray, float, float]:
        """Row count, Σx, Σx², Σy, Σy² (for the federated scalers)."""
        x, y = self.x.numpy(), self.y.numpy()
        return len(x), x.sum(0), (x**2).sum(0), float(y.sum()), float((y**2).sum())

    def _phi(self, basis, scaler, log_ell):
        return random_features(self.x, basis, scaler, log_ell)

    def _y(self, scaler):
        return (self.y - scaler[2]) / scaler[3]

    def stats(self, basis, scaler, log_ell) -> tuple:
        """``(Φ_kᵀΦ_k, Φ_kᵀy_k, y_kᵀy_k)`` at the given log length-scales (unit amplitude)."""
        import torch

        with torch.no_grad():
            phi = self._phi(basis, scaler, log_ell)
            y = self._y(scaler)
            return phi.T @ phi, phi.T @ y, float(y @ y)

    def vjp(self, basis, scaler, log_ell, grad_g, grad_c):
        """``∂/∂ log ℓ`` of ``<grad_g, Φ_kᵀΦ_k> + <grad_c, Φ_kᵀy_k>``: this client's share of the
        marginal-likelihood gradient (a tensor with one entry per input dimension)."""
        import torch

        ell = log_ell.detach().clone().requires_grad_(True)
        phi = self._phi(basis, scaler, ell)
        total = (grad_g * (phi.T @ phi)).sum() + (grad_c * (phi.T @ self._y(scaler))).sum()
        (g,) = torch.autograd.grad(total, ell)
        return g.detach()


def random_features(x, basis, scaler, log_ell):
    """``√(2/D) cos(Ω ((x − μ)/σ_x/ℓ) + b)`` for rows ``x`` (a float64 tensor or array)."""
    import torch

    omega, offset = basis
    x = x if torch.is_tensor(x) else torch.tensor(np.asarray(x, np.float64))
    u = (x - scaler[0]) / scaler[1] / torch.exp(log_ell)
    return math.sqrt(2.0 / omega.shape[0]) * torch.cos(u @ omega.T + offset)


def _neg_mll(g, c, yy, n, log_s, log_noise, min_noise):
    """Negative log marginal likelihood of Bayesian linear regression on s·φ, per sample."""
    import torch

    s2 = torch.exp(2 * log_s)
    noise = min_noise + torch.exp(log_noise)
    d = g.shape[0]
    a = s2 * g + noise * torch.eye(d, dtype=g.dtype)
    chol = torch.linalg.cholesky(a)
    cs = torch.sqrt(s2) * c
    alpha = torch.cholesky_solve(cs[:, None], chol)[:, 0]
    fit = (yy - cs @ alpha) / noise
    logdet = 2 * torch.log(torch.diagonal(chol)).sum() + (n - d) * torch.log(noise)
    return 0.5 * (fit + logdet + n * math.log(2 * math.pi)) / n


@dataclass
class FederatedGP:
    """The fitted model: shared basis, scalers, hyper-parameters and posterior-mean weights."""

    basis: tuple
    scaler: tuple
    log_ell: object
    amplitude: float
    noise: float
    weights: object
    neg_mll: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Posterior-mean prediction in the target's original units (computed where ``x`` is)."""
        phi = random_features(x, self.basis, self.scaler, self.log_ell)
        z = self.amplitude * (phi @ self.weights)
        return (z * self.scaler[3] + self.scaler[2]).numpy()


def fit_federated_gp(
    clients: Sequence[GPClient], seed: int, settings: GPSettings | None = None
) -> FederatedGP:
    """Fit the random-feature GP from the clients' sums only (see the module docstring)."""
    import torch

    settings = settings or GPSettings()
    moments = [c.moments() for c in clients]
    n = sum(m[0] for m in moments)
    if n < 2:
        raise ValueError(f"the federated GP needs at least 2 training rows, got {n}")
    sx = sum(m[1] for m in moments)
    sxx = sum(m[2] for m in moments)
    mu = sx / n
    sd = np.sqrt(np.maximum(sxx / n - mu**2, 0.0))
    sd = np.where(sd > 1e-12, sd, 1.0)
    ymu = sum(m[3] for m in moments) / n
    ysd = math.sqrt(max(sum(m[4] for m in moments) / n - ymu**2, 0.0)) or 1.0
    scaler = (torch.as_tensor(mu), torch.as_tensor(sd), ymu, ysd)

    d = len(mu)
    gen = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(settings.n_features, d, generator=gen, dtype=torch.float64)
    offset = 2 * math.pi * torch.rand(settings.n_features, generator=gen, dtype=torch.float64)
    basis = (omega, offset)

    def sums(log_ell):
        parts = [c.stats(basis, scaler, log_ell) for c in clients]  # fixed client order
        return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)

    best: FederatedGP | None = None
    for start in settings.starts:
        log_ell = torch.full((d,), math.log(start * math.sqrt(d)), dtype=torch.float64)
        log_s = torch.zeros((), dtype=torch.float64, requires_grad=True)
        log_noise = torch.tensor(math.log(0.1), dtype=torch.float64, requires_grad=True)
        log_ell.requires_grad_(True)
        opt = torch.optim.Adam([log_ell, log_s, log_noise], lr=settings.lr)
        for _ in range(settings.steps):
            g, c, yy = sums(log_ell.detach())
            g = g.clone().requires_grad_(True)
            c = c.clone().requires_grad_(True)
            loss = _neg_mll(g, c, yy, n, log_s, log_noise, settings.min_noise)
            opt.zero_grad()
            grad_g, grad_c, gs, gn = torch.autograd.grad(loss, [g, c, log_s, log_noise])
            log_ell.grad = sum(
                cl.vjp(basis, scaler, log_ell.detach(), grad_g, grad_c) for cl in clients
            )
            log_s.grad, log_noise.grad = gs, gn
            opt.step()
        with torch.no_grad():
            g, c, yy = sums(log_ell)
            loss = float(_neg_mll(g, c, yy, n, log_s, log_noise, settings.min_noise))
            s2 = float(torch.exp(2 * log_s))
            noise = settings.min_noise + float(torch.exp(log_noise))
            a = s2 * g + noise * torch.eye(settings.n_features, dtype=torch.float64)
            weights = torch.linalg.solve(a, math.sqrt(s2) * c)
        logger.debug("federated GP start %.1f: -log ML/n %.4f, noise %.4g", start, loss, noise)
        if best is None or loss < best.neg_mll:
            best = FederatedGP(basis, scaler, log_ell.detach(), math.sqrt(s2), noise, weights, loss)
    assert best is not None
    return best


def choose_inputs_by_evidence(
    clients: Sequence[GPClient], seed: int, settings: GPSettings | None = None
) -> tuple[int, list[float]]:
    """How many leading input columns the federated GP should use: the ``k`` whose GP on the
    first ``k`` columns has the highest (federated) marginal likelihood of the training rows.

    Columns are taken in their given order (the warm starts order Z's columns: PCA by variance,
    PLS by component), so ``k`` = 1..d are nested models. Each client restricts its own rows to
    the first ``k`` columns; only the usual sums cross. Validation and test rows take no part.
    Returns ``k`` and the per-sample negative log marginal likelihood for every ``k``."""
    d = int(clients[0].x.shape[1])
    curve = []
    for k in range(1, d + 1):
        sub = [GPClient(c.x[:, :k].numpy(), c.y.numpy()) for c in clients]
        curve.append(fit_federated_gp(sub, seed, settings).neg_mll)
    k = int(np.argmin(curve)) + 1
    logger.info(
        "federated GP: %d of %d leading inputs by marginal likelihood (-log ML/n: %s)",
        k,
        d,
        ", ".join(f"{v:.3f}" for v in curve),
    )
    return k, curve
