"""Federated PLS (aggregates only) equals pooled PLS; the warm start reproduces it exactly; the
L1 term shrinks the linear paths; round 0 is a candidate for early stopping; the L2-SP anchor
keeps the encoders near the warm start."""

from __future__ import annotations

import dataclasses
from math import prod

import numpy as np
import pytest
import torch

from fdrmfl_pipeline.core import losses
from fdrmfl_pipeline.core.client import LocalTrainConfig, model_from_state, predict
from fdrmfl_pipeline.core.engine import FederationConfig, run_federated
from fdrmfl_pipeline.core.model import build_model, warm_start_linear
from fdrmfl_pipeline.core.warmstart import WarmStartConfig, design
from fdrmfl_pipeline.core.warmstart.pls import federated_pls

from ..tiny import tiny_clients

CFG_ANCHOR = LocalTrainConfig(
    local_epochs=2, batch_size=16, lr=1e-2, lambda_mi=0.1, lambda_kl=0.01, lambda_con=0.1
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def _pooled(clients, names, split="train"):
    x = np.concatenate([design(clients[c].splits[split], names) for c in sorted(clients)])
    y = np.concatenate([clients[c].splits[split].y for c in sorted(clients)]).astype(np.float64)
    return x, y


@pytest.mark.parametrize("k", [1, 3, 6])
def test_federated_pls_equals_pooled_pls(k):
    from sklearn.cross_decomposition import PLSRegression

    data, _, clients, _, _ = tiny_clients()
    names = data.modality_names
    fit = federated_pls(clients, names, max_components=k, n_components=k)
    x, y = _pooled(clients, names)
    ref = PLSRegression(n_components=k, scale=False).fit(x, y)
    xt, _ = _pooled(clients, names, "test")
    # the federated scaler centred x and y over the pooled train set, so no intercept is needed
    ours = xt @ fit.weights @ fit.coef
    np.testing.assert_allclose(ours, ref.predict(xt).ravel(), rtol=1e-6, atol=1e-8)
    # scores have unit variance and are uncorrelated on the pooled training data
    t = x @ fit.weights
    np.testing.assert_allclose(t.T @ t / len(t), np.eye(k), atol=1e-8)


def test_component_count_is_chosen_on_val_only():
    data, _, clients, _, _ = tiny_clients()
    names = data.modality_names
    fit = federated_pls(clients, names, max_components=8)
    assert len(fit.val_mse) == 8
    assert fit.n_components == int(np.argmin(fit.val_mse)) + 1
    # test rows play no part: scrambling them changes nothing
    for c in clients:
        clients[c].splits["test"].y[:] = 1e6
    again = federated_pls(clients, names, max_components=8)
    np.testing.assert_array_equal(again.weights, fit.weights)


def test_constant_target_is_a_clear_error():
    data, _, clients, _, _ = tiny_clients()
    names = data.modality_names
    for c in clients:
        clients[c].train.y[:] = 0.0
    with pytest.raises(ValueError, match="constant"):
        federated_pls(clients, names, max_components=3)


def test_warm_started_model_predicts_the_pls_fit_exactly():
    data, _, clients, _, config = tiny_clients()
    names = data.modality_names
    fit = federated_pls(clients, names, max_components=4, n_components=4)
    model = build_model(config, seed=3)
    sizes = [prod(m.shape) for m in config.modalities]
    warm_start_linear(model, fit.blocks(names, sizes), fit.coef)
    split = clients[0].splits["test"]
    z, y_hat = predict(model, split)
    expected = design(split, names) @ fit.weights @ fit.coef
    np.testing.assert_allclose(y_hat, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z[:, :4], design(split, names) @ fit.weights, rtol=1e-4, atol=1e-4)
    assert np.allclose(z[:, 4:], 0.0)


def test_warm_start_is_round_zero_and_early_stopping_can_keep_it():
    data, _, clients, scalers, config = tiny_clients()
    names = data.modality_names
    fit = federated_pls(clients, names, max_components=4)
    model = build_model(config, seed=0)
    warm_start_linear(
        model, fit.blocks(names, [prod(m.shape) for m in config.modalities]), fit.coef
    )
    init = model.state_dict()
    # a learning rate this large wrecks every round, so the best validated model is round 0
    bad = LocalTrainConfig(local_epochs=2, batch_size=16, lr=5.0, grad_clip=None)
    fed = FederationConfig(strategy="fedavg", rounds=3, seed=0, early_stopping=True, patience=2)
    res = run_federated(config, clients, scalers, bad, fed, init_state=init)
    assert res.best_round == 0
    kept = res.global_state
    assert all(torch.equal(kept[k], init[k]) for k in init)
    # a sensible run starts from the same point and is validated against it
    ok = LocalTrainConfig(local_epochs=1, batch_size=16, lr=1e-4)
    res2 = run_federated(config, clients, scalers, ok, fed, init_state=init)
    assert res2.best_round >= 0 and res2.rounds_run >= 1


def _pls_start(clients, names, config) -> dict:
    fit = federated_pls(clients, names, max_components=4)
    model = build_model(config, seed=0)
    warm_start_linear(
        model, fit.blocks(names, [prod(m.shape) for m in config.modalities]), fit.coef
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _distance(state, init, prefixes) -> float:
    return (
        sum(float(((state[k] - init[k]) ** 2).sum()) for k in init if k.startswith(prefixes)) ** 0.5
    )


def test_anchor_keeps_the_encoders_near_the_warm_start_and_leaves_the_heads_free():
    data, _, clients, scalers, config = tiny_clients()
    init = _pls_start(clients, data.modality_names, config)
    # the trained weights, not the best round on validation (which may be the start itself)
    fed = FederationConfig(strategy="fdrmfl", rounds=3, seed=0, early_stopping=False)

    def run(mu):
        cfg = dataclasses.replace(CFG_ANCHOR, anchor_mu=mu)
        return run_federated(config, clients, scalers, cfg, fed, init_state=init)

    free, held = run(0.0), run(100.0)
    d_free = _distance(free.global_state, init, losses.ANCHORED)
    d_held = _distance(held.global_state, init, losses.ANCHORED)
    assert d_held < 0.2 * d_free
    # the heads are not anchored: they still learn
    assert _distance(held.global_state, init, ("head_",)) > 0.2 * _distance(
        free.global_state, init, ("head_",)
    )
    rows = [r for r in held.history if r["participated"]]
    assert rows and all(r["loss_anchor"] > 0 for r in rows)
    assert all(r["loss_anchor"] == 0 for r in free.history if r["participated"])


def test_anchor_penalty_is_the_squared_distance_of_the_encoders_and_fusion_only():
    _, _, _, _, config = tiny_clients()
    model = build_model(config, seed=0)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert float(losses.anchor_penalty(losses.anchored_pairs(model, start)).detach()) == 0.0
    with torch.no_grad():
        model.head_linear.weight.add_(1.0)  # heads are free
        model.fusion.bias.add_(0.5)
        next(iter(model.encoders.values())).linear.bias.add_(-2.0)
    enc_bias = next(iter(model.encoders.values())).linear.bias
    expected = 0.25 * model.fusion.bias.numel() + 4.0 * enc_bias.numel()
    value = float(losses.anchor_penalty(losses.anchored_pairs(model, start)).detach())
    assert value == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="anchor state lacks"):
        losses.anchored_pairs(model, {k: v for k, v in start.items() if k.startswith("head")})


def test_anchor_without_a_warm_start_is_a_clear_error():
    from pydantic import ValidationError

    from fdrmfl_pipeline.params import TrainingParams

    _, _, clients, scalers, config = tiny_clients()
    cfg = dataclasses.replace(CFG_ANCHOR, anchor_mu=1.0)
    with pytest.raises(ValueError, match="anchor_mu=1.0 pulls .* warm start, but none was given"):
        run_federated(config, clients, scalers, cfg, FederationConfig(rounds=1, seed=0))
    exp = {"anchor_mu": 1.0}
    with pytest.raises(
        ValidationError,
        match=r"training.experimental.anchor_mu=1.0 .* needs training.warm_start.kind",
    ):
        TrainingParams(experimental=exp, warm_start={"kind": "none"})
    with pytest.raises(ValidationError, match="anchor_mu"):
        TrainingParams(experimental={"anchor_mu": -1.0})
    p = TrainingParams(experimental=exp, warm_start={"kind": "pca"})
    assert p.experimental.anchor_mu == 1.0


def test_l1_term_shrinks_the_linear_paths():
    _, _, clients, scalers, config = tiny_clients()
    fed = FederationConfig(strategy="fedavg", rounds=5, seed=0)

    def l1_of(lam):
        cfg = LocalTrainConfig(local_epochs=2, batch_size=16, lr=1e-2, lambda_l1=lam)
        res = run_federated(config, clients, scalers, cfg, fed)
        model = model_from_state(config, res.global_state)
        return float(losses.l1_linear_paths(model).detach())

    assert l1_of(0.1) < 0.5 * l1_of(0.0)


def test_l1_penalty_value():
    _, _, _, _, config = tiny_clients()
    model = build_model(config, seed=0)
    expected = sum(float(e.linear.weight.detach().abs().sum()) for e in model.encoders.values())
    assert float(losses.l1_linear_paths(model).detach()) == pytest.approx(expected, rel=1e-5)


def test_federated_lasso_equals_pooled_lasso():
    from sklearn.linear_model import Lasso

    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart.lasso import lasso_path

    data, _, clients, _, _ = tiny_clients()
    names = data.modality_names
    x, y = _pooled(clients, names)
    alphas = [0.1, 0.02]
    ours = lasso_path(InProcessPLS(clients, names), alphas, iterations=3000)
    for j, a in enumerate(alphas):
        ref = Lasso(alpha=a, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(x, y)
        np.testing.assert_allclose(ours[:, j], ref.coef_, atol=2e-4)
    assert np.count_nonzero(ours[:, 0]) < np.count_nonzero(ours[:, 1]) < x.shape[1]


def test_lasso_warm_start_is_one_unit_variance_component():
    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart.lasso import fit_lasso

    data, _, clients, _, _ = tiny_clients()
    names = data.modality_names
    fit = fit_lasso(InProcessPLS(clients, names))
    assert fit.weights.shape[1] == 1 and len(fit.val_mse) == 12
    x, y = _pooled(clients, names)
    t = x @ fit.weights[:, 0]
    assert np.mean(t * t) == pytest.approx(1.0, rel=1e-6)
    # it explains the training target far better than the mean
    assert np.mean((y - t * fit.coef[0]) ** 2) < 0.5 * np.var(y)


def test_lasso_without_linear_signal_starts_at_the_mean():
    """An even response (like f3) has no linear signal: the warm start predicts the mean."""
    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart.lasso import fit_lasso

    data, _, clients, _, config = tiny_clients()
    names = data.modality_names
    rng = np.random.default_rng(0)
    for c in clients:
        for split in clients[c].splits.values():
            split.y[:] = rng.standard_normal(split.n).astype(np.float32)
    fit = fit_lasso(InProcessPLS(clients, names))
    assert fit.n_components == 0  # the largest penalty (no weight) validates best
    model = build_model(config, seed=0)
    sizes = [prod(m.shape) for m in config.modalities]
    warm_start_linear(model, fit.blocks(names, sizes), fit.coef)
    _, y_hat = predict(model, clients[0].splits["test"])
    assert np.allclose(y_hat, 0.0)


def test_lasso_path_size_sets_the_number_of_aggregated_queries():
    """training.lasso_penalties x lasso_iterations FISTA steps, one X^T X w query each (plus 30
    for the step size and 1 for the chosen weights' variance): the knob that bounds the Flower
    round trips of the lasso warm start."""
    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart import warm_start_state

    data, _, clients, _, config = tiny_clients()

    class Counting(InProcessPLS):
        queries = 0

        def gram_times(self, r):
            Counting.queries += 1
            return super().gram_times(r)

    oracle = Counting(clients, data.modality_names)
    short = warm_start_state(
        config,
        oracle,
        0,
        WarmStartConfig("lasso", lasso_penalties=3, lasso_iterations=5, gram_limit=0),
    )
    assert Counting.queries == 3 * 5 + 30 + 1
    default = warm_start_state(
        config, InProcessPLS(clients, data.modality_names), 0, WarmStartConfig("lasso")
    )
    assert any(not torch.equal(short[k], default[k]) for k in short)


@pytest.mark.parametrize("kind", ["pca", "lasso"])
def test_narrow_inputs_ask_once_for_the_gram_matrix_with_the_same_fit(kind):
    """Up to gram_limit input columns PCA and the lasso ask for the summed X^T X once (their
    iterations would span the input space anyway): no per-iteration query, the same start."""
    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart import warm_start_state

    data, _, clients, _, config = tiny_clients()

    class Counting(InProcessPLS):
        products = grams = 0

        def gram_times(self, r):
            Counting.products += 1
            return super().gram_times(r)

        def gram(self):
            Counting.grams += 1
            return super().gram()

    per_iteration = warm_start_state(
        config,
        InProcessPLS(clients, data.modality_names),
        0,
        WarmStartConfig(kind, gram_limit=0),
    )
    once = warm_start_state(
        config, Counting(clients, data.modality_names), 0, WarmStartConfig(kind)
    )
    assert (Counting.products, Counting.grams) == (0, 1)
    for k in once:
        torch.testing.assert_close(once[k], per_iteration[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["pls", "pca", "lasso"])
def test_warm_start_without_validation_rows(kind, caplog):
    """partitioning.val_fraction: 0 (the reference protocol): the warm start cannot choose on val,
    so it says so and keeps every PLS component / the smallest lasso penalty (it used to crash
    building the clients' empty validation designs)."""
    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart import warm_start_state
    from fdrmfl_pipeline.core.warmstart.lasso import fit_lasso
    from fdrmfl_pipeline.core.warmstart.pca import fit_pca
    from fdrmfl_pipeline.core.warmstart.pls import fit_pls

    data, _, clients, _, config = tiny_clients(val_fraction=0.0)
    assert all(cd.val.n == 0 for cd in clients.values())
    oracle = InProcessPLS(clients, data.modality_names)
    with caplog.at_level("WARNING"):
        if kind == "lasso":
            fit = fit_lasso(oracle, n_alphas=3, iterations=20)
        else:
            fit = (fit_pls if kind == "pls" else fit_pca)(oracle, config.latent_dim)
    assert fit.val_mse == [] and "no validation rows" in caplog.text
    assert fit.weights.shape[1] == (1 if kind == "lasso" else config.latent_dim)
    state = warm_start_state(
        config, oracle, 0, WarmStartConfig(kind, lasso_penalties=3, lasso_iterations=20)
    )
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("k", [2, 4])
def test_federated_pca_equals_pooled_pca_and_regression_on_its_scores(k):
    """Subspace iteration on the summed X^T X V answers gives the pooled PCA's directions (up to
    sign) and the least-squares coefficients of y on the unit-variance scores."""
    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart.pca import fit_pca

    data, _, clients, _, _ = tiny_clients()
    names = data.modality_names
    fit = fit_pca(InProcessPLS(clients, names), max_components=k, n_components=k)
    x, y = _pooled(clients, names)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)  # x is centred by the federated scaler
    w = fit.weights / np.linalg.norm(fit.weights, axis=0)
    np.testing.assert_allclose(np.abs(np.sum(w * vt[:k].T, axis=0)), 1.0, atol=1e-6)
    scores = x @ fit.weights
    np.testing.assert_allclose(scores.T @ scores / len(x), np.eye(k), atol=1e-6)
    coef, *_ = np.linalg.lstsq(scores, y, rcond=None)
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-6, atol=1e-9)
    assert sv[0] > sv[k - 1]  # ordered by variance


def test_pca_component_count_is_chosen_on_val_and_the_model_predicts_the_fit():
    from fdrmfl_pipeline.core.warmstart import InProcessOracle as InProcessPLS
    from fdrmfl_pipeline.core.warmstart import warm_start_state
    from fdrmfl_pipeline.core.warmstart.pca import fit_pca

    data, _, clients, _, config = tiny_clients()
    names = data.modality_names
    oracle = InProcessPLS(clients, names)
    fit = fit_pca(oracle, max_components=config.latent_dim)
    assert len(fit.val_mse) == config.latent_dim
    assert fit.n_components == int(np.argmin(fit.val_mse)) + 1
    state = warm_start_state(config, oracle, 0, WarmStartConfig("pca"))
    model = model_from_state(config, state)
    xv, _ = _pooled(clients, names, "val")
    y_hat = np.concatenate([predict(model, clients[c].val)[1] for c in sorted(clients)])
    np.testing.assert_allclose(y_hat, xv @ (fit.weights @ fit.coef), rtol=1e-4, atol=1e-4)
