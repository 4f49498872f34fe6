"""Client-level differential privacy: the accountant against independent bounds, clipping and
noise at the right scale, the budget as a named error, and the settings that would leak."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from fdrmfl_pipeline.core.privacy import (
    DPSettings,
    calibrate,
    clip_update,
    epsilon,
    poisson_sample,
    private_average,
    resolve,
)
from fdrmfl_pipeline.errors import ConfigError, PrivacyBudgetError


def _exact_gaussian_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """The exact (epsilon, delta) curve of the Gaussian mechanism (Balle and Wang 2018): T
    compositions of sensitivity-1, std-sigma Gaussians are one Gaussian with mu = sqrt(T)/sigma;
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    mu = math.sqrt(rounds) / sigma

    def gap(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(gap, 1e-9, 500.0)


def _classic_rdp_bound(sigma: float, rounds: int, delta: float) -> float:
    """The textbook RDP conversion, min over orders of T*a/(2 sigma^2) + log(1/delta)/(a-1):
    a valid but looser bound than the library's conversion."""
    orders = np.linspace(1.01, 512, 200000)
    return float(np.min(rounds * orders / (2 * sigma**2) + np.log(1 / delta) / (orders - 1)))


@pytest.mark.parametrize(("sigma", "rounds"), [(1.0, 1), (2.0, 5), (0.8, 30), (5.0, 200)])
def test_accountant_lies_between_the_exact_curve_and_the_classic_rdp_bound(sigma, rounds):
    delta = 1e-5
    ours = epsilon(sigma, 1.0, rounds, delta)
    assert (
        _exact_gaussian_epsilon(sigma, rounds, delta)
        <= ours
        <= _classic_rdp_bound(sigma, rounds, delta)
    )
    # RDP is close to exact for the Gaussian: within 25 % here
    assert ours <= 1.25 * _exact_gaussian_epsilon(sigma, rounds, delta)


def test_sampling_amplifies_and_more_rounds_cost_more():
    full = epsilon(1.5, 1.0, 20, 1e-5)
    assert epsilon(1.5, 0.3, 20, 1e-5) < full
    assert epsilon(1.5, 1.0, 40, 1e-5) > full
    assert epsilon(1.5, 1.0, 0, 1e-5) == 0.0 and math.isinf(epsilon(0.0, 1.0, 3, 1e-5))


@pytest.mark.parametrize(("q", "sigma", "rounds"), [(0.01, 1.1, 1000), (0.3, 2.0, 50)])
def test_sampled_case_against_the_privacy_loss_distribution_accountant(q, sigma, rounds):
    """The library's PLD accountant is a second, tighter method on the same mechanism: RDP
    must never claim less than it, and stays within 20 % of it here."""
    from dp_accounting.pld import PLDAccountant

    from fdrmfl_pipeline.core.privacy import _event

    pld = PLDAccountant(value_discretization_interval=1e-3)
    pld.compose(_event(sigma, q, rounds))
    tight = pld.get_epsilon(1e-5)
    ours = epsilon(sigma, q, rounds, 1e-5)
    assert tight <= ours <= 1.2 * tight


def test_target_epsilon_solves_for_the_noise():
    sigma = calibrate(4.0, 1.0, 5, 1e-5)
    assert epsilon(sigma, 1.0, 5, 1e-5) == pytest.approx(4.0, rel=1e-3)
    dp = resolve("central", 1.0, None, 4.0, 1e-5, None, 1.0, 5)
    assert dp.enabled and dp.epsilon <= 4.0 + 1e-6 and dp.noise_multiplier == pytest.approx(sigma)


def test_a_budget_overrun_is_a_named_error_before_training():
    with pytest.raises(PrivacyBudgetError, match=r"epsilon = .* over the budget max_epsilon = 1"):
        resolve("central", 1.0, 0.5, None, 1e-5, 1.0, 1.0, 10)
    assert resolve("off", 1.0, None, None, 1e-5, None, 1.0, 5) == DPSettings()
    with pytest.raises(ConfigError, match="exactly one of"):
        resolve("central", 1.0, 1.0, 4.0, 1e-5, None, 1.0, 5)


def test_clipping_bounds_the_change_and_keeps_small_ones():
    start = {"w": torch.zeros(4), "n": torch.tensor(3)}
    big, n_big = clip_update(
        {"w": torch.tensor([3.0, 4.0, 0, 0]), "n": torch.tensor(3)}, start, 1.0
    )
    assert n_big == pytest.approx(5.0)
    assert float(big["w"].norm()) == pytest.approx(1.0)
    small, _ = clip_update({"w": torch.tensor([0.3, 0.4, 0, 0]), "n": torch.tensor(3)}, start, 1.0)
    assert torch.allclose(small["w"], torch.tensor([0.3, 0.4, 0, 0], dtype=torch.float64))
    assert "n" not in big  # integer buffers are not model changes


def test_noise_has_the_right_scale_and_is_seeded():
    start = {"w": torch.zeros(200_000)}
    dp = DPSettings("central", clip=0.5, noise_multiplier=2.0, sample_rate=1.0, rounds=1)
    # no client answered: the new model is start + noise / (q K) with std sigma*clip/(q K)
    out, info = private_average(start, [], dp, n_clients=4, seed=1, round_=1)
    assert float(out["w"].std()) == pytest.approx(2.0 * 0.5 / 4, rel=0.01)
    again, _ = private_average(start, [], dp, n_clients=4, seed=1, round_=1)
    other, _ = private_average(start, [], dp, n_clients=4, seed=1, round_=2)
    assert torch.equal(out["w"], again["w"]) and not torch.equal(out["w"], other["w"])
    # without noise: the mean of the clipped changes over the expected number of clients
    quiet = DPSettings("central", clip=1.0, noise_multiplier=0.0, sample_rate=0.5)
    ups = [(0, {"w": torch.full((2,), 10.0)}), (1, {"w": torch.full((2,), 0.1)})]
    avg, info = private_average({"w": torch.zeros(2)}, ups, quiet, n_clients=4, seed=0, round_=1)
    expected = (torch.full((2,), 1 / math.sqrt(2)) + torch.full((2,), 0.1)) / 2.0
    assert torch.allclose(avg["w"], expected.float())
    assert info["dp_clients"] == 2 and info["dp_clipped_share"] == 0.5


def test_poisson_sampling_is_seeded_and_may_be_empty():
    ids = list(range(10))
    a = poisson_sample(ids, 0.3, 5, 1)
    assert a == poisson_sample(ids, 0.3, 5, 1) and a == sorted(a)
    sizes = {len(poisson_sample(ids, 0.3, 5, r)) for r in range(1, 200)}
    assert 0 in sizes or min(sizes) <= 1  # the size varies, as the accountant assumes
    assert len(sizes) > 3
    assert poisson_sample(ids, 1.0, 5, 1) == ids


def test_settings_that_would_release_client_data_are_refused():
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.params import TrainingParams
    from tests.tiny import tiny_data

    data = tiny_data()
    p = TrainingParams.model_validate({"privacy": {"mode": "central", "target_epsilon": 4}})
    with pytest.raises(ConfigError) as err:
        TrainingSetup.from_params(p, 0, data)
    msg = str(err.value)
    for name in ("warm_start.kind", "data.scaling", "early_stopping"):
        assert name in msg
    ok = TrainingParams.model_validate(
        {
            "privacy": {"mode": "central", "target_epsilon": 4},
            "warm_start": {"kind": "none"},
            "data": {"scaling": "local"},
            "federation": {"early_stopping": {"enabled": False}},
        }
    )
    setup = TrainingSetup.from_params(ok, 0, data)
    assert setup.federation.dp.epsilon <= 4.0 + 1e-6
    assert TrainingSetup.from_dict(setup.to_dict()) == setup  # travels to Flower as JSON
    with pytest.raises(ValueError, match="exactly one of"):
        TrainingParams.model_validate({"privacy": {"mode": "central"}})


def test_local_dp_accounts_each_client_at_sensitivity_twice_the_clip():
    """Local DP: every client's released change moves by at most 2 clip when its data changes,
    so T rounds at noise multiplier sigma cost what T Gaussians at sigma / 2 cost (exact curve
    below the accountant's value, the classic bound above it); no sampling amplification."""
    dp = resolve("local", 1.0, 8.0, None, 1e-5, None, sample_rate=0.3, rounds=20)
    assert dp.mode == "local" and dp.sample_rate == 1.0
    exact = _exact_gaussian_epsilon(4.0, 20, 1e-5)
    assert exact <= dp.epsilon <= _classic_rdp_bound(4.0, 20, 1e-5)
    assert dp.spent(20) == pytest.approx(dp.epsilon) and dp.spent(5) < dp.epsilon
    solved = resolve("local", 1.0, None, 4.0, 1e-5, None, sample_rate=1.0, rounds=20)
    assert solved.epsilon == pytest.approx(4.0, rel=1e-3)
    assert solved.noise_multiplier == pytest.approx(2 * calibrate(4.0, 1.0, 20, 1e-5))


def test_local_noise_has_the_right_scale_and_depends_on_the_clients_secret():
    from fdrmfl_pipeline.core.privacy import local_privatize

    start = {"w": torch.zeros(200_000), "n": torch.tensor(7)}
    update = {"w": torch.full((200_000,), 1.0), "n": torch.tensor(9)}
    sent, norm_before = local_privatize(update, start, 0.5, 2.0, seed=1, round_=3, client=2)
    assert norm_before == pytest.approx(math.sqrt(200_000))
    change = sent["w"].double() - start["w"].double()
    # clipped change (norm 0.5, spread evenly) + noise of std 2.0 * 0.5
    assert float(change.mean()) == pytest.approx(0.5 / math.sqrt(200_000), abs=0.01)
    assert float(change.std()) == pytest.approx(1.0, rel=0.01)
    assert int(sent["n"]) == 9  # counters are the client's own
    again, _ = local_privatize(update, start, 0.5, 2.0, seed=1, round_=3, client=2)
    assert torch.equal(sent["w"], again["w"])  # seeded: reproducible without a secret
    other, _ = local_privatize(update, start, 0.5, 2.0, 1, 3, 2, secret="a" * 64)
    assert not torch.equal(sent["w"], other["w"])  # a secret the server lacks changes the noise


def test_local_dp_sends_the_noised_change_without_loss_metrics():
    from fdrmfl_pipeline.core.client import LocalTrainConfig, local_update
    from tests.tiny import tiny_clients

    _, _, clients, _, config = tiny_clients()
    from fdrmfl_pipeline.core.model import build_model

    start = build_model(config, seed=0).state_dict()
    cfg = LocalTrainConfig(local_epochs=1, batch_size=16, dp_clip=0.1, dp_noise_multiplier=0.0)
    upd, own = local_update(config, start, None, clients[0], cfg, 0, 1)
    change = math.sqrt(
        sum(
            float(((upd.state[k] - start[k]).double() ** 2).sum())
            for k in start
            if torch.is_floating_point(start[k])
        )
    )
    assert change == pytest.approx(0.1, rel=1e-3)  # clipped (the model moved further)
    assert not all(torch.equal(own[k], upd.state[k]) for k in own)  # the client keeps its own
    assert all(math.isnan(v) for k, v in upd.metrics.items() if k.startswith("train_"))
