"""Each loss term against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import torch

from fdrmfl_pipeline.core import losses


def test_mse():
    assert losses.mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == 2.5


def test_gaussian_mi_loss_is_half_log_one_minus_rho_squared():
    score = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([1.0, 3.0, 2.0, 4.0])
    # Pearson rho by hand: deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5): cov 4, var 5 each
    rho = 4.0 / 5.0
    expected = 0.5 * math.log(1 - rho**2)  # = -I(f(Z); y) = 0.5*log(0.36)
    assert abs(losses.gaussian_mi_loss(score, y).item() - expected) < 1e-6
    # perfectly (anti-)correlated: clipped, finite
    assert math.isfinite(losses.gaussian_mi_loss(score, -score).item())
    assert abs(losses.gaussian_mi_loss(score, -score).item() - 0.5 * math.log(1e-4)) < 1e-4


def test_gaussian_skl_closed_form():
    # a = N(0, 1), b = N(1, 4): KL(a||b) + KL(b||a) = (1+1)/8 + (4+1)/2 - 1 = 1.75; symmetric = 0.875
    mu_a, lv_a = torch.tensor([[0.0]]), torch.tensor([[0.0]])
    mu_b, lv_b = torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]])
    assert abs(losses.gaussian_skl(mu_a, lv_a, mu_b, lv_b).item() - 0.875) < 1e-6
    # cross-check with torch.distributions
    pa = torch.distributions.Normal(torch.tensor(0.0), torch.tensor(1.0))
    pb = torch.distributions.Normal(torch.tensor(1.0), torch.tensor(2.0))
    ref = 0.5 * (
        torch.distributions.kl_divergence(pa, pb) + torch.distributions.kl_divergence(pb, pa)
    )
    assert abs(ref.item() - 0.875) < 1e-6
    # identical distributions: zero
    assert losses.gaussian_skl(mu_a, lv_a, mu_a, lv_a).item() == 0.0


def test_symmetric_kl_averages_over_present_pairs_only():
    # 3 modalities, 1-d latents, unit variances: pair SKL = 0.5 * (d^2/2 + d^2/2) = d^2/2
    mu = torch.tensor([[[0.0], [1.0], [3.0]], [[0.0], [2.0], [100.0]], [[5.0], [0.0], [0.0]]])
    logvar = torch.zeros_like(mu)
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    # sample 0: pairs (0,1)=0.5, (0,2)=4.5, (1,2)=2.0 -> mean 7/3
    # sample 1: only pair (0,1) = 2.0 (modality 2 is absent: its value 100 must not count)
    # sample 2: one modality: no pair, excluded from the average
    expected = (7.0 / 3.0 + 2.0) / 2
    assert abs(losses.symmetric_kl(mu, logvar, mask).item() - expected) < 1e-6


def test_moon_contrastive_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_glob = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # cos 1 for both
    z_prev = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # cos 0 and cos 1/sqrt(2)
    tau = 0.5
    l0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))
    c = 1 / math.sqrt(2)
    l1 = -math.log(math.exp(2) / (math.exp(2) + math.exp(c / tau)))
    got = losses.moon_contrastive(z, z_glob, z_prev, tau).item()
    assert abs(got - (l0 + l1) / 2) < 1e-6


def test_proximal_is_squared_norm():
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    g = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    assert losses.proximal(p, g).item() == 1 + 4 + 4


def test_kernel_contrastive_mi_rewards_z_ordered_like_the_response():
    y = torch.tensor([0.0, 0.1, 5.0, 5.1])
    # Z puts the two low responses together and the two high ones together
    z_good = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    z_bad = z_good[[0, 2, 1, 3]]  # the same points, paired against the response
    good = losses.kernel_contrastive_mi(z_good, y, 0.5)
    bad = losses.kernel_contrastive_mi(z_bad, y, 0.5)
    assert good.item() < bad.item()
    # by hand (loops, numpy): Silverman bandwidth, kernel weights over the other samples,
    # minus the weighted mean log-softmax of cosine similarities
    import numpy as np

    yy, zz = y.numpy().astype(float), z_good.numpy().astype(float)
    n = len(yy)
    h = yy.std(ddof=1) * 1.06 * n ** (-0.2)
    zn = zz / np.linalg.norm(zz, axis=1, keepdims=True)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        sims = np.array([zn[i] @ zn[j] / 0.5 for j in others])
        logp = sims - np.log(np.exp(sims).sum())
        w = np.array([np.exp(-0.5 * ((yy[i] - yy[j]) / h) ** 2) for j in others])
        total += -(w / w.sum() * logp).sum()
    assert abs(good.item() - total / n) < 1e-5
    z = z_good.clone().requires_grad_(True)
    losses.kernel_contrastive_mi(z, y, 0.5).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert losses.kernel_contrastive_mi(z_good[:2], y[:2], 0.5).item() == 0.0
