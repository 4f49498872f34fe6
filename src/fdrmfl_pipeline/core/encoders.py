"""Per-modality encoders. Each maps one modality to a Gaussian (mean, log-variance) in the
shared latent space; a registry keyed by encoder type picks one per modality kind.

Every encoder has a nonlinear path suited to its kind and (by default) a linear path on the
flattened input: small-n regression problems are often close to linear in the inputs, and a
pure convolutional path with pooling cannot represent an arbitrary linear functional.
Only LayerNorm/GroupNorm are used, so FedAvg of the weights is well defined (no BatchNorm stats).
"""

from __future__ import annotations

from math import prod

import torch
from torch import nn

from fdrmfl_pipeline.core.config import DEFAULT_ENCODER  # noqa: E402,F401  (re-exported)


class _GaussianHead(nn.Module):
    def __init__(self, in_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(in_dim, latent_dim)
        self.logvar = nn.Linear(in_dim, latent_dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, -4.0)  # start nearly deterministic

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), self.logvar(h).clamp(-10.0, 6.0)


class Encoder(nn.Module):
    """Base: ``body`` (kind-specific, nonlinear) -> Gaussian head, plus an optional linear path
    from the flattened input straight to the latent mean (``mu = head(body(x)) + W x + b``).

    The linear path maps to the latent space directly so it can hold any linear projection, for
    instance a federated PLS warm start (:func:`fdrmfl_pipeline.core.model.warm_start_linear`).
    """

    def __init__(self, shape: tuple[int, ...], hidden: int, latent_dim: int, linear_path: bool):
        super().__init__()
        self.shape = tuple(shape)
        self.linear = nn.Linear(prod(shape), latent_dim) if linear_path else None
        self.head = _GaussianHead(hidden, latent_dim)

    def body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x))
        if self.linear is not None:
            mu = mu + self.linear(x.flatten(1))
        return mu, logvar


class MLPEncoder(Encoder):
    """vector -> two-layer MLP (GELU, LayerNorm, dropout)."""

    def __init__(self, shape, hidden, latent_dim, dropout=0.1, linear_path=True):
        super().__init__(shape, hidden, latent_dim, linear_path)
        self.net = nn.Sequential(
            nn.Linear(prod(shape), hidden),
            nn.GELU(),
            nn.LayerNorm(hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )

    def body(self, x):
        return self.net(x.flatten(1))


class CNN2dEncoder(Encoder):
    """image (C, H, W) -> two strided conv blocks with GroupNorm, adaptive pooling, linear."""

    def __init__(self, shape, hidden, latent_dim, dropout=0.1, linear_path=True):
        super().__init__(shape, hidden, latent_dim, linear_path)
        c = shape[0] if len(shape) == 3 else 1
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, 3, stride=2, padding=1),
            nn.GroupNorm(4, 16),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GroupNorm(8, 32),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.out = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * 16, hidden), nn.GELU()
        )

    def body(self, x):
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.out(self.conv(x))


class _StepAttentionEncoder(Encoder):
    """sequence (T, F): per-step features (``steps``), LayerNorm, attention pooling over steps."""

    def __init__(self, shape, hidden, latent_dim, dropout=0.1, linear_path=True):
        super().__init__(shape, hidden, latent_dim, linear_path)
        self.features = shape[-1] if len(shape) == 2 else 1
        self.norm = nn.LayerNorm(hidden)
        self.score = nn.Linear(hidden, 1)
        self.drop = nn.Dropout(dropout)

    def steps(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def body(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        h = self.norm(self.steps(x))  # (B, T, hidden)
        w = torch.softmax(self.score(torch.tanh(h)), dim=1)  # attention over steps
        return self.drop((w * h).sum(dim=1))


class Conv1dAttnEncoder(_StepAttentionEncoder):
    """sequence (T, F) -> 1-D conv over steps, attention pooling over steps."""

    def __init__(self, shape, hidden, latent_dim, dropout=0.1, linear_path=True):
        super().__init__(shape, hidden, latent_dim, dropout, linear_path)
        self.conv = nn.Sequential(
            nn.Conv1d(self.features, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 3, padding=1),
        )

    def steps(self, x):
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class GRUAttnEncoder(_StepAttentionEncoder):
    """sequence (T, F) -> bidirectional GRU, attention pooling over steps."""

    def __init__(self, shape, hidden, latent_dim, dropout=0.1, linear_path=True):
        super().__init__(shape, hidden, latent_dim, dropout, linear_path)
        self.gru = nn.GRU(self.features, hidden, batch_first=True, bidirectional=True)
        self.merge = nn.Linear(2 * hidden, hidden)

    def steps(self, x):
        return self.merge(self.gru(x)[0])


class CNN1dEncoder(Encoder):
    """spectrum (L,) -> 1-D CNN (strided convs, GroupNorm, adaptive pooling)."""

    def __init__(self, shape, hidden, latent_dim, dropout=0.1, linear_path=True):
        super().__init__(shape, hidden, latent_dim, linear_path)
        self.conv = nn.Sequential(
            nn.Conv1d(1, 8, 7, stride=2, padding=3),
            nn.GroupNorm(2, 8),
            nn.GELU(),
            nn.Conv1d(8, 16, 5, stride=2, padding=2),
            nn.GroupNorm(4, 16),
            nn.GELU(),
            nn.AdaptiveAvgPool1d(8),
        )
        self.out = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(16 * 8, hidden), nn.GELU()
        )

    def body(self, x):
        return self.out(self.conv(x.flatten(1).unsqueeze(1)))


ENCODERS: dict[str, type[Encoder]] = {
    "mlp": MLPEncoder,
    "cnn2d": CNN2dEncoder,
    "conv1d_attn": Conv1dAttnEncoder,
    "gru_attn": GRUAttnEncoder,
    "cnn1d": CNN1dEncoder,
}


def build_encoder(
    encoder_type: str,
    shape: tuple[int, ...],
    hidden: int,
    latent_dim: int,
    dropout: float,
    linear_path: bool,
) -> Encoder:
    """Instantiate a registered encoder type."""
    if encoder_type not in ENCODERS:
        raise ValueError(f"unknown encoder type '{encoder_type}'; registered: {sorted(ENCODERS)}")
    return ENCODERS[encoder_type](tuple(shape), hidden, latent_dim, dropout, linear_path)
