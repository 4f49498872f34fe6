"""FDRMFLModel: per-modality Gaussian encoders -> masked gated fusion -> Z -> regression head.

The model is rebuilt from a JSON-able :class:`ModelConfig`; weights travel as a ``state_dict``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from fdrmfl_pipeline.core.config import ModalityConfig, ModelConfig  # noqa: F401  (re-exported)
from fdrmfl_pipeline.core.encoders import build_encoder


class ModelOutput(NamedTuple):
    mu: torch.Tensor  # (B, M, d) per-modality latent means
    logvar: torch.Tensor  # (B, M, d) per-modality latent log-variances
    z: torch.Tensor  # (B, d) fused feature
    y_hat: torch.Tensor  # (B,) prediction of the standardised target; (B, C) logits (classes)
    mask: torch.Tensor  # (B, M) which modalities were present


class GatedFusion(nn.Module):
    """Attention-weighted combination of modality tokens; absent modalities get weight 0.

    Weights are a softmax over the present modalities of ``v . tanh(W t_m) + b_m``; the fused
    vector is refined by a residual MLP. Each present modality reaches Z through its weight and
    its token; an absent one is excluded from the softmax (not replaced by zeros).
    """

    def __init__(self, n_modalities: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.bias = nn.Parameter(torch.zeros(n_modalities))
        self.refine = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim, dim),
        )
        self.n_modalities = n_modalities

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.score(tokens).squeeze(-1) + self.bias  # (B, M)
        logits = logits.masked_fill(~mask, float("-inf"))
        w = torch.softmax(logits, dim=1)
        w = torch.nan_to_num(w, nan=0.0)  # a sample with no modality at all
        # scale by M so the fused vector behaves like a sum over modalities when all are present
        fused = self.n_modalities * (w.unsqueeze(-1) * tokens).sum(dim=1)
        return fused + self.refine(fused)


class FDRMFLModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.names = [m.name for m in config.modalities]
        self.encoders = nn.ModuleDict(
            {
                m.name: build_encoder(
                    m.encoder,
                    m.shape,
                    config.hidden_dim,
                    config.latent_dim,
                    config.dropout,
                    config.linear_path,
                )
                for m in config.modalities
            }
        )
        d = config.latent_dim
        self.fusion = GatedFusion(len(self.names), d, config.dropout)
        out = max(1, config.n_classes)  # one logit per class, or one number
        self.head_linear = nn.Linear(d, out)
        self.head_mlp = nn.Sequential(
            nn.Linear(d, config.head_hidden), nn.GELU(), nn.Linear(config.head_hidden, out)
        )
        # critic for the mutual-information term (a learned scalar projection of Z)
        self.mi_critic = nn.Sequential(
            nn.Linear(d, config.head_hidden), nn.GELU(), nn.Linear(config.head_hidden, 1)
        )

    def encode(
        self, x: dict[str, torch.Tensor], mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mus, logvars = [], []
        for name in self.names:
            mu, logvar = self.encoders[name](x[name])
            mus.append(mu)
            logvars.append(logvar)
        return torch.stack(mus, dim=1), torch.stack(logvars, dim=1)

    def forward(
        self, x: dict[str, torch.Tensor], mask: torch.Tensor, sample: bool | None = None
    ) -> ModelOutput:
        """``sample`` (default: ``self.training``) draws tokens mu + sigma*eps (reparameterised)."""
        mu, logvar = self.encode(x, mask)
        tokens = mu
        if self.training if sample is None else sample:
            tokens = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        z = self.fusion(tokens, mask)
        y_hat = self.head_linear(z) + self.head_mlp(z)
        if not self.config.n_classes:
            y_hat = y_hat.squeeze(-1)
        return ModelOutput(mu, logvar, z, y_hat, mask)


def build_model(config: ModelConfig, seed: int) -> FDRMFLModel:
    """A freshly initialised model; the weights depend only on ``config`` and ``seed``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return FDRMFLModel(config)
    finally:
        torch.random.set_rng_state(gen_state)


@torch.no_grad()
def warm_start_linear(model: FDRMFLModel, blocks: dict, coef) -> None:
    """Start ``model`` at a linear projection: Z = sum over modalities of ``blocks[m].T x_m`` and
    y_hat = ``coef . Z`` (e.g. a federated PLS fit, :mod:`fdrmfl_pipeline.core.pls`).

    Each encoder's linear path takes its block (latent dims past ``k`` start at zero); every
    nonlinear branch keeps its random hidden layers but its last layer is zeroed (the body's
    latent mean, the fusion's score and residual refinement, the MLP head), so it contributes
    nothing at first and learns from there. The fusion's uniform weights then sum the modalities.
    A classifier's head starts at zero (equal logits): ``coef`` fits a number, not classes.
    """
    if not model.config.linear_path:
        raise ValueError("a linear warm start needs training.model.linear_path: true")
    k = len(coef)
    d = model.config.latent_dim
    if k > d:
        raise ValueError(f"a warm start with {k} components needs latent_dim >= {k} (it is {d})")
    for name in model.names:
        enc = model.encoders[name]
        block = torch.as_tensor(blocks[name], dtype=torch.float32)  # (p_m, k)
        enc.head.mu.weight.zero_()
        enc.head.mu.bias.zero_()
        enc.linear.weight.zero_()
        enc.linear.bias.zero_()
        enc.linear.weight[:k] = block.T
    model.fusion.score[-1].weight.zero_()
    model.fusion.score[-1].bias.zero_()
    model.fusion.bias.zero_()
    model.fusion.refine[-1].weight.zero_()
    model.fusion.refine[-1].bias.zero_()
    model.head_mlp[-1].weight.zero_()
    model.head_mlp[-1].bias.zero_()
    model.head_linear.weight.zero_()
    model.head_linear.bias.zero_()
    if not model.config.n_classes:
        model.head_linear.weight[0, :k] = torch.as_tensor(coef, dtype=torch.float32)
