"""Federated random-feature GP (core.fedgp): exact federation, gradients, accuracy, wiring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fdrmfl_pipeline.core.downstream import fit_predict_per_client
from fdrmfl_pipeline.core.fedgp import (
    GPClient,
    GPSettings,
    _neg_mll,
    choose_inputs_by_evidence,
    fit_federated_gp,
    random_features,
)

FAST = GPSettings(n_features=128, steps=60, starts=(1.0,))


def _toy(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2
    return x, y + 0.05 * rng.normal(size=n), y


def test_three_clients_fit_exactly_as_the_pooled_rows():
    x, y, _ = _toy(90)
    split = [GPClient(x[i::3], y[i::3]) for i in range(3)]
    pooled = [GPClient(x, y)]
    a, b = fit_federated_gp(split, 7, FAST), fit_federated_gp(pooled, 7, FAST)
    xt, _, _ = _toy(30, seed=1)
    np.testing.assert_allclose(a.predict(xt), b.predict(xt), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.log_ell.numpy(), b.log_ell.numpy(), rtol=1e-6)


def test_summed_client_gradients_equal_autograd_on_pooled_rows():
    x, y, _ = _toy(60)
    clients = [GPClient(x[:25], y[:25]), GPClient(x[25:], y[25:])]
    gen = torch.Generator().manual_seed(0)
    basis = (
        torch.randn(64, 4, generator=gen, dtype=torch.float64),
        torch.rand(64, generator=gen, dtype=torch.float64) * 6.28,
    )
    scaler = (
        torch.as_tensor(x.mean(0)),
        torch.as_tensor(x.std(0)),
        float(y.mean()),
        float(y.std()),
    )
    log_ell = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    log_s, log_noise = (
        torch.tensor(0.2, dtype=torch.float64),
        torch.tensor(-2.0, dtype=torch.float64),
    )

    # direct: autograd through the features of every row at once
    ell = log_ell.clone().requires_grad_(True)
    phi = random_features(x, basis, scaler, ell)
    yz = torch.as_tensor((y - scaler[2]) / scaler[3])
    loss = _neg_mll(phi.T @ phi, phi.T @ yz, float(yz @ yz), len(y), log_s, log_noise, 1e-4)
    (direct,) = torch.autograd.grad(loss, ell)

    # federated: server differentiates w.r.t. the sums, clients return vector-Jacobian products
    parts = [c.stats(basis, scaler, log_ell) for c in clients]
    g = sum(p[0] for p in parts).requires_grad_(True)
    c = sum(p[1] for p in parts).requires_grad_(True)
    yy = sum(p[2] for p in parts)
    gg, gc = torch.autograd.grad(_neg_mll(g, c, yy, len(y), log_s, log_noise, 1e-4), [g, c])
    federated = sum(cl.vjp(basis, scaler, log_ell, gg, gc) for cl in clients)
    np.testing.assert_allclose(federated.numpy(), direct.numpy(), rtol=1e-8, atol=1e-12)


def test_what_a_client_sends_does_not_grow_with_its_rows():
    x, y, _ = _toy(40)
    client = GPClient(x, y)
    basis = (torch.randn(32, 4, dtype=torch.float64), torch.rand(32, dtype=torch.float64))
    scaler = (torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), 0.0, 1.0)
    g, c, yy = client.stats(basis, scaler, torch.zeros(4, dtype=torch.float64))
    assert g.shape == (32, 32) and c.shape == (32,) and isinstance(yy, float)
    grad = client.vjp(basis, scaler, torch.zeros(4, dtype=torch.float64), g, c)
    assert grad.shape == (4,)


def test_learns_a_nonlinear_response_far_better_than_a_linear_fit():
    x, y, _ = _toy(150)
    xt, _, ft = _toy(200, seed=3)
    gp = fit_federated_gp([GPClient(x[i::3], y[i::3]) for i in range(3)], 0, FAST)
    gp_mse = float(np.mean((gp.predict(xt) - ft) ** 2))
    beta, *_ = np.linalg.lstsq(np.c_[np.ones(len(x)), x], y, rcond=None)
    lin_mse = float(np.mean((np.c_[np.ones(len(xt)), xt] @ beta - ft) ** 2))
    assert gp_mse < 0.25 * lin_mse
    # irrelevant inputs (columns 2, 3) end with longer length-scales than the used ones
    ell = np.exp(gp.log_ell.numpy())
    assert min(ell[2], ell[3]) > max(ell[0], ell[1])


def test_errors_name_the_problem():
    from pydantic import ValidationError

    from fdrmfl_pipeline.params import BaselinesParams

    with pytest.raises(ValidationError, match=r"pooled_regressors cannot hold 'gp_fed'"):
        BaselinesParams(pooled_regressors=["ridge", "gp_fed"])
    with pytest.raises(ValueError, match="3 feature rows but 2 targets"):
        GPClient(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="at least 2 training rows"):
        fit_federated_gp([GPClient(np.zeros((1, 2)), np.zeros(1))], 0, FAST)


def test_downstream_gp_fed_predicts_every_client_and_ignores_test_rows():
    x, y, _ = _toy(120)
    split = np.array((["train"] * 30 + ["val"] * 5 + ["test"] * 5) * 3)
    client = np.repeat([0, 1, 2], 40)
    feats = pd.DataFrame(x, columns=[f"z_{i}" for i in range(4)]).assign(
        sample_id=[f"s{i}" for i in range(120)], client=client, split=split, target=y
    )
    cols = [f"z_{i}" for i in range(4)]
    out = fit_predict_per_client(feats, cols, "m", ["gp_fed"], 0, gp_settings=FAST)
    assert set(out["regressor"]) == {"gp_fed"}
    assert out.groupby(["client", "split"]).size().to_dict() == {
        (c, s): 5 for c in (0, 1, 2) for s in ("test", "val")
    }
    poked = feats.copy()
    test = poked["split"] == "test"
    poked.loc[test, cols] += 5.0
    poked.loc[test, "target"] = 1e6
    again = fit_predict_per_client(poked, cols, "m", ["gp_fed"], 0, gp_settings=FAST)
    val = out["split"] == "val"
    np.testing.assert_array_equal(out.loc[val, "y_pred"], again.loc[val, "y_pred"])
    assert fit_predict_per_client(feats, cols, "m", ["gp_fed"], 0, pooled=True).empty


def _with_noise_columns(n: int, signal_first: bool, seed: int = 0):
    """y from two signal columns, plus three pure-noise columns before or after them."""
    x, y, _ = _toy(n, seed)
    noise = np.random.default_rng(seed + 100).normal(size=(n, 3))
    signal = x[:, :2]
    return (np.c_[signal, noise] if signal_first else np.c_[noise, signal]), y


def test_evidence_keeps_the_leading_columns_that_carry_the_signal():
    x, y = _with_noise_columns(150, signal_first=True)
    k, curve = choose_inputs_by_evidence([GPClient(x[i::3], y[i::3]) for i in range(3)], 0, FAST)
    assert len(curve) == 5
    assert k >= 2  # dropping the second signal column costs evidence
    assert curve[1] < curve[0] - 0.1
    # signal at the end: every column up to the last is needed
    x, y = _with_noise_columns(150, signal_first=False)
    k, curve = choose_inputs_by_evidence([GPClient(x[i::3], y[i::3]) for i in range(3)], 0, FAST)
    assert k == 5
    assert curve[4] < min(curve[:4]) - 0.1


def test_evidence_curve_is_the_same_federated_and_pooled():
    x, y = _with_noise_columns(90, signal_first=True)
    _, fed = choose_inputs_by_evidence([GPClient(x[i::3], y[i::3]) for i in range(3)], 3, FAST)
    _, pooled = choose_inputs_by_evidence([GPClient(x, y)], 3, FAST)
    np.testing.assert_allclose(fed, pooled, rtol=1e-6)


def test_downstream_evidence_inputs_choose_on_train_rows_only():
    x, y = _with_noise_columns(120, signal_first=True)
    split = np.array((["train"] * 30 + ["val"] * 5 + ["test"] * 5) * 3)
    cols = [f"z_{i}" for i in range(5)]
    feats = pd.DataFrame(x, columns=cols).assign(
        sample_id=[f"s{i}" for i in range(120)],
        client=np.repeat([0, 1, 2], 40),
        split=split,
        target=y,
    )
    out = fit_predict_per_client(
        feats, cols, "m", ["gp_fed"], 0, gp_settings=FAST, refit_on_val=True, gp_inputs="evidence"
    )
    poked = feats.copy()
    held_out = poked["split"] != "train"
    poked.loc[held_out, "target"] = 1e6  # val and test targets must not move the choice
    again = fit_predict_per_client(
        poked, cols, "m", ["gp_fed"], 0, gp_settings=FAST, refit_on_val=False, gp_inputs="evidence"
    )
    val = out["split"] == "val"
    np.testing.assert_array_equal(out.loc[val, "y_pred"], again.loc[val, "y_pred"])
    every = fit_predict_per_client(feats, cols, "m", ["gp_fed"], 0, gp_settings=FAST)
    assert not np.allclose(out.loc[val, "y_pred"], every.loc[val, "y_pred"])  # columns dropped
    with pytest.raises(ValueError, match="regression.experimental.gp_fed_inputs"):
        fit_predict_per_client(feats, cols, "m", ["gp_fed"], 0, gp_settings=FAST, gp_inputs="x")


def test_regression_params_reject_an_unknown_gp_input_rule():
    from pydantic import ValidationError

    from fdrmfl_pipeline.params import RegressionParams

    p = RegressionParams(experimental={"gp_fed_inputs": "evidence"})
    assert p.experimental.gp_fed_inputs == "evidence"
    with pytest.raises(ValidationError, match="gp_fed_inputs"):
        RegressionParams(experimental={"gp_fed_inputs": "best"})
