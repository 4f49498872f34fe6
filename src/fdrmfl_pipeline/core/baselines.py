"""Classical feature extractors, each fitted on one client's training rows only.

Inputs are already standardised per modality with that client's training statistics (see
:func:`fdrmfl_pipeline.core.clientdata.build_clients` with ``local`` scaling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EXTRACTORS = ("pca90", "pca_d", "tsvd", "rp", "pls", "vae", "raw")


def _k_for_variance(x: np.ndarray, share: float) -> int:
    """Smallest k whose leading squared singular values reach ``share`` of the total."""
    s = np.linalg.svd(x, compute_uv=False)
    energy = np.cumsum(s**2) / max(float((s**2).sum()), 1e-300)
    k = int(np.searchsorted(energy, share) + 1)
    return max(1, min(k, min(x.shape) - 1 if min(x.shape) > 1 else 1))


class Extractor:
    """Fit on train (dict of (n, p) arrays per modality and y), transform any split."""

    def __init__(self, name: str, seed: int, dim: int, share: float = 0.9, vae_epochs: int = 80):
        if name not in EXTRACTORS:
            raise ValueError(f"unknown baseline '{name}'; expected one of {EXTRACTORS}")
        self.name, self.seed, self.dim, self.share, self.vae_epochs = (
            name,
            seed,
            dim,
            share,
            vae_epochs,
        )
        self.models: list = []
        self.names: list[str] = []

    def fit(self, x: dict[str, np.ndarray], y: np.ndarray) -> Extractor:
        from sklearn.cross_decomposition import PLSRegression
        from sklearn.decomposition import PCA, TruncatedSVD
        from sklearn.random_projection import GaussianRandomProjection

        self.names = sorted(x)
        flat = {k: v.reshape(len(v), -1).astype(np.float64) for k, v in x.items()}
        concat = np.hstack([flat[k] for k in self.names])
        n = len(concat)
        if self.name == "pca90":
            self.models = [
                PCA(n_components=self.share, svd_solver="full").fit(flat[k]) for k in self.names
            ]
        elif self.name == "pca_d":
            self.models = [
                PCA(
                    n_components=max(1, min(self.dim, n - 1, concat.shape[1])), svd_solver="full"
                ).fit(concat)
            ]
        elif self.name == "tsvd":
            self.models = [
                TruncatedSVD(_k_for_variance(flat[k], self.share), random_state=self.seed).fit(
                    flat[k]
                )
                for k in self.names
            ]
        elif self.name == "rp":
            self.models = [
                GaussianRandomProjection(
                    PCA(n_components=self.share, svd_solver="full").fit(flat[k]).n_components_,
                    random_state=self.seed,
                ).fit(flat[k])
                for k in self.names
            ]
        elif self.name == "pls":
            k = max(1, min(self.dim, n - 1, concat.shape[1]))
            self.models = [PLSRegression(n_components=k, scale=False).fit(concat, y)]
        elif self.name == "vae":
            self.models = [_fit_vae(concat, self.dim, self.seed, self.vae_epochs)]
        return self

    def transform(self, x: dict[str, np.ndarray]) -> np.ndarray:
        flat = {k: v.reshape(len(v), -1).astype(np.float64) for k, v in x.items()}
        concat = np.hstack([flat[k] for k in self.names])
        if self.name == "raw":
            return concat
        if self.name in ("pca90", "tsvd", "rp"):
            return np.hstack(
                [m.transform(flat[k]) for m, k in zip(self.models, self.names, strict=True)]
            )
        if self.name == "vae":
            return _vae_encode(self.models[0], concat)
        return self.models[0].transform(concat)


def _vae(p: int, d: int):
    import torch
    from torch import nn

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(p, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
            self.mu, self.logvar = nn.Linear(64, d), nn.Linear(64, d)
            self.dec = nn.Sequential(
                nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, p)
            )

        def forward(self, x):
            h = self.enc(x)
            mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return self.dec(z), mu, logvar

    return VAE()


def _fit_vae(x: np.ndarray, d: int, seed: int, epochs: int):
    """The reference's VAE baseline: MSE reconstruction + KL (beta 1), Adam 1e-3, batch 256."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = _vae(x.shape[1], d)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt = torch.from_numpy(x.astype(np.float32))
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), 256):
            xb = xt[perm[start : start + 256]]
            rec, mu, logvar = model(xb)
            kl = -0.5 * torch.mean(1 + logvar - mu**2 - logvar.exp())
            loss = torch.nn.functional.mse_loss(rec, xb) + kl
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _vae_encode(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return (
            model.mu(model.enc(torch.from_numpy(x.astype(np.float32)))).numpy().astype(np.float64)
        )


def extract(
    name: str,
    splits: dict[str, tuple[dict[str, np.ndarray], np.ndarray]],
    modalities: Sequence[str],
    seed: int,
    dim: int,
    vae_epochs: int = 80,
) -> dict[str, np.ndarray]:
    """Fit ``name`` on ``splits['train']`` and transform every split (``{split: (x, y)}``)."""
    x_train, y_train = splits["train"]
    ext = Extractor(name, seed, dim, vae_epochs=vae_epochs).fit(
        {m: x_train[m] for m in modalities}, y_train
    )
    return {
        s: ext.transform({m: x[m] for m in modalities})
        for s, (x, _) in splits.items()
        if len(_) > 0
    }
