"""The FDRMFL loss terms (each a plain function of tensors)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def mse(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the standardised target."""
    return F.mse_loss(y_hat, y)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Classification loss: cross-entropy of the head's logits against class codes."""
    return F.cross_entropy(logits, y.long())


def supervised_contrastive_mi(z: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Mutual-information term for class labels, to be *minimised*: the supervised contrastive
    loss (Khosla et al. 2020) on the normalised fused features. For each sample with another
    sample of its class in the batch, minus the mean log-probability of picking those
    same-class samples among all others at temperature ``tau``; an InfoNCE-type bound, so
    lowering it raises a lower bound on I(Z; class). 0 when no class appears twice."""
    labels = y.long()
    f = F.normalize(z, dim=-1)
    sim = f @ f.T / tau
    eye = torch.eye(len(f), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    if not has.any():
        return z.new_zeros(())
    mean_pos = log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has] / n_pos[has]
    return -mean_pos.mean()


def kernel_contrastive_mi(z: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """A second mutual-information estimator for a continuous response, to be *minimised*: the
    supervised contrastive loss with soft positives. Each sample's other batch samples are
    weighted by a Gaussian kernel of their response distance (bandwidth: the batch's response
    standard deviation times Silverman's factor ``1.06 n^(-1/5)``, weights normalised per
    anchor), and the loss is minus the weighted mean log-probability of picking them among all
    others by cosine similarity of Z at temperature ``tau``. An InfoNCE-type objective: samples
    with close responses are pulled together in Z. No learned critic (unlike
    :func:`gaussian_mi_loss`)."""
    n = len(z)
    if n < 3:
        return z.new_zeros(())
    f = F.normalize(z, dim=-1)
    sim = f @ f.T / tau
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    log_prob = sim.masked_fill(eye, float("-inf"))
    log_prob = log_prob - torch.logsumexp(log_prob, dim=1, keepdim=True)
    yc = y.detach()
    h = (yc.std() * 1.06 * n ** (-0.2)).clamp_min(1e-6)
    w = torch.exp(-0.5 * ((yc[:, None] - yc[None, :]) / h) ** 2).masked_fill(eye, 0.0)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return -(w * log_prob.masked_fill(eye, 0.0)).sum(dim=1).mean()


def gaussian_mi_loss(
    score: torch.Tensor, y: torch.Tensor, max_rho2: float = 0.9999
) -> torch.Tensor:
    """Mutual-information preservation term, to be *minimised*.

    Estimator: the Gaussian mutual information ``I = -1/2 log(1 - rho^2)`` between a learned
    scalar projection ``score = f(Z)`` (the model's ``mi_critic``, an MLP, so it can capture
    nonlinear dependence such as an even response) and the response ``y``, with ``rho`` the
    Pearson correlation over the mini-batch. For jointly Gaussian (f(Z), y) this is exact, and
    ``I(f(Z); y) <= I(Z; y)``, so lowering the returned value ``1/2 log(1 - rho^2) = -I`` raises a
    lower bound on the information Z keeps about y. ``rho^2`` is clipped at ``max_rho2``.
    """
    s = score - score.mean()
    t = y - y.mean()
    denom = torch.sqrt((s * s).sum() * (t * t).sum()).clamp_min(1e-12)
    rho = (s * t).sum() / denom
    return 0.5 * torch.log1p(-(rho * rho).clamp(max=max_rho2))


def gaussian_skl(mu_a, logvar_a, mu_b, logvar_b) -> torch.Tensor:
    """Closed-form symmetric KL ``(KL(a||b) + KL(b||a)) / 2`` of diagonal Gaussians, summed over
    the latent dimensions: ``1/2 sum_d [(va + D^2)/(2 vb) + (vb + D^2)/(2 va) - 1]``."""
    va, vb = logvar_a.exp(), logvar_b.exp()
    d2 = (mu_a - mu_b) ** 2
    return 0.5 * ((va + d2) / (2 * vb) + (vb + d2) / (2 * va) - 1.0).sum(dim=-1)


def symmetric_kl(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Alignment term: per sample, the mean symmetric KL over the pairs of *present* modalities;
    averaged over the samples that have at least two modalities (0 if none has)."""
    m = mu.shape[1]
    if m < 2:
        return mu.new_zeros(())
    total = mu.new_zeros(mu.shape[0])
    pairs = mu.new_zeros(mu.shape[0])
    for a, b in itertools.combinations(range(m), 2):
        both = (mask[:, a] & mask[:, b]).to(mu.dtype)
        total = total + both * gaussian_skl(mu[:, a], logvar[:, a], mu[:, b], logvar[:, b])
        pairs = pairs + both
    has = pairs > 0
    if not has.any():
        return mu.new_zeros(())
    return (total[has] / pairs[has]).mean()


def moon_contrastive(
    z: torch.Tensor, z_global: torch.Tensor, z_prev: torch.Tensor, tau: float
) -> torch.Tensor:
    """MOON inter-model contrastive term on the same mini-batch:
    ``-log(exp(cos(z, z_glob)/tau) / (exp(cos(z, z_glob)/tau) + exp(cos(z, z_prev)/tau)))``,
    averaged over the batch. ``z_global``/``z_prev`` come from frozen models."""
    pos = F.cosine_similarity(z, z_global, dim=-1) / tau
    neg = F.cosine_similarity(z, z_prev, dim=-1) / tau
    logits = torch.stack([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


def proximal(model_params, global_params) -> torch.Tensor:
    """FedProx's ``||w - w_global||^2`` (multiply by mu/2)."""
    return sum(((p - g) ** 2).sum() for p, g in zip(model_params, global_params, strict=True))


def l1_linear_paths(model) -> torch.Tensor:
    """Sum of absolute weights of every encoder's linear path (0 when there is none): a lasso
    penalty that favours sparse linear projections of the inputs."""
    terms = [
        enc.linear.weight.abs().sum() for enc in model.encoders.values() if enc.linear is not None
    ]
    return torch.stack(terms).sum() if terms else torch.zeros(())


# the parts of the model an anchor (L2-SP) pulls toward the warm start; the heads stay free
ANCHORED = ("encoders.", "fusion.")


def anchored_pairs(model, anchor_state: dict) -> list:
    """``(parameter, its value in anchor_state)`` for every parameter under :data:`ANCHORED`."""
    missing = [
        n for n, _ in model.named_parameters() if n.startswith(ANCHORED) and n not in anchor_state
    ]
    if missing:
        raise ValueError(f"the anchor state lacks {len(missing)} tensors, e.g. '{missing[0]}'")
    return [
        (p, anchor_state[n].detach().to(p.dtype))
        for n, p in model.named_parameters()
        if n.startswith(ANCHORED)
    ]


def anchor_penalty(pairs: list) -> torch.Tensor:
    """L2-SP's ``||w - w_anchor||^2`` over the anchored parameters (multiply by mu/2)."""
    return sum(((p - a) ** 2).sum() for p, a in pairs)
