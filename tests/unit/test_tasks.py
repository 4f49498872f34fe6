"""Classification and anomaly tasks: labels, loss terms, metrics, label-skewed partitions,
classifiers on Z, and the federated Gaussian behind anomaly scores."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from fdrmfl_pipeline.core import losses, seeding, tasks
from fdrmfl_pipeline.core.clientdata import build_clients
from fdrmfl_pipeline.core.config import FederationConfig, LocalTrainConfig
from fdrmfl_pipeline.core.downstream import classify_per_client
from fdrmfl_pipeline.core.engine import run_federated
from fdrmfl_pipeline.core.modalities import from_arrow, to_arrow
from fdrmfl_pipeline.core.model import ModelConfig, build_model
from fdrmfl_pipeline.core.partition import PartitionOptions, partition
from fdrmfl_pipeline.errors import InputDataError

from ..tiny import SPECS, tiny_data


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def tiny_classes(n_classes: int = 3, seed: int = 0):
    data = tiny_data(seed=seed)
    codes, classes = tasks.quantile_classes(
        data.target, data.target[data.split == "train"], n_classes
    )
    return replace(data, target=codes, classes=classes).validate()


# --------------------------------------------------------------------------- labels
def test_labels_are_coded_in_sorted_order_and_named():
    codes, classes = tasks.encode_labels(["b", "a", "b", "c", 1.0], "t")
    assert classes == ("1", "a", "b", "c")  # numbers first, then names
    assert codes.tolist() == [2, 1, 2, 3, 0]
    with pytest.raises(InputDataError, match="at least two classes"):
        tasks.encode_labels(["x", "x"], "t")
    with pytest.raises(InputDataError, match="no class label"):
        tasks.encode_labels(["x", None], "t")
    with pytest.raises(InputDataError, match="does not look like a class label"):
        tasks.encode_labels(np.linspace(0, 1, 400), "t")


def test_classes_survive_the_arrow_table_and_bad_codes_are_refused():
    data = tiny_classes()
    back = from_arrow(to_arrow(data))
    assert back.classes == ("q1", "q2", "q3")
    np.testing.assert_array_equal(back.target, data.target)
    with pytest.raises(InputDataError, match="not class codes"):
        replace(data, target=data.target + 0.5).validate()


# --------------------------------------------------------------------------- losses
def test_supervised_contrastive_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0.0, 0.0, 1.0])
    tau = 1.0
    # sample 0: its only positive is sample 1 (cos 1), the other is sample 2 (cos 0)
    l0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(0)))
    # sample 2 has no positive and is left out; sample 1 mirrors sample 0
    assert losses.supervised_contrastive_mi(z, y, tau).item() == pytest.approx(l0, abs=1e-6)
    # no class appears twice: zero
    assert losses.supervised_contrastive_mi(z[1:], y[1:], tau).item() == 0.0


def test_classifier_head_gives_one_logit_per_class_and_learns_the_classes():
    data = tiny_classes()
    assign = partition(
        data.sample_ids,
        data.target,
        data.modality_names,
        data.split,
        PartitionOptions(scheme="iid", n_clients=2, val_fraction=0.2),
        seeding.rng(0, "partition"),
    )
    clients, scalers = build_clients(
        data, assign, data.modality_names, "federated", 0, categorical=True
    )
    # class codes are not standardised
    assert scalers[0].y_mean == 0.0 and scalers[0].y_std == 1.0
    np.testing.assert_array_equal(clients[0].train.y, clients[0].train.y_raw)
    config = ModelConfig.for_modalities(
        [(s.name, s.kind, s.shape) for s in SPECS],
        latent_dim=4,
        hidden_dim=8,
        head_hidden=8,
        n_classes=3,
    )
    model = build_model(config, 0)
    x = {k: torch.from_numpy(v[:5]) for k, v in clients[0].train.x.items()}
    out = model(x, torch.from_numpy(clients[0].train.mask[:5]))
    assert out.y_hat.shape == (5, 3)
    cfg = LocalTrainConfig(local_epochs=5, lr=3e-3, lambda_mi=0.1)
    res = run_federated(
        config, clients, scalers, cfg, FederationConfig(rounds=4, seed=1, early_stopping=False)
    )
    rows = [r for r in res.history if r["round"] >= 1]
    assert all(r["loss_mse"] == 0 and r["loss_ce"] > 0 for r in rows)
    # the cross-entropy falls round by round; the validation loss is a log-loss (finite, > 0)
    ce = [np.mean([r["loss_ce"] for r in rows if r["round"] == k]) for k in (1, 2, 3, 4)]
    assert ce[3] < ce[0]
    assert all(0 < r["val_mse"] < 10 for r in res.history)


# --------------------------------------------------------------------------- metrics
def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.95, 0.05], [0.25, 0.75], [0.15, 0.85], [0.35, 0.65]])
    m = tasks.classification_metrics(y, p)
    assert m["accuracy"] == 0.75  # row 1 is wrong
    assert m["roc_auc"] == pytest.approx(0.75)  # the pair (0.65 vs 0.75) is misordered
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.95, 0.25, 0.85, 0.65])), rel=1e-9)
    # confidences 0.95, 0.75, 0.85, 0.65 fall in four bins of one row each
    assert m["ece"] == pytest.approx(np.mean([0.05, 0.75, 0.15, 0.35]))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # a split holding one class: no ROC-AUC, the rest still defined
    one = tasks.classification_metrics(np.array([1, 1]), p[2:])
    assert math.isnan(one["roc_auc"]) and one["accuracy"] == 1.0


def test_anomaly_metrics_and_the_federated_gaussian():
    labels = np.array([0, 0, 0, 1])
    assert tasks.anomaly_metrics(labels, np.array([0.1, 0.2, 0.3, 0.9]))["roc_auc"] == 1.0
    assert tasks.anomaly_metrics(labels, np.array([0.9, 0.2, 0.3, 0.1]))["roc_auc"] == 0.0
    assert math.isnan(tasks.anomaly_metrics(np.zeros(3), np.ones(3))["roc_auc"])
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3)) @ np.array([[2.0, 0, 0], [0.5, 1.0, 0], [0, 0, 0.3]])
    # three clients' moments give the pooled mean and covariance
    parts = [tasks.z_moments(z[i::3]) for i in range(3)]
    mean, precision = tasks.gaussian_from_moments(parts, ridge=0.0)
    np.testing.assert_allclose(mean, z.mean(0), atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(precision), np.cov(z.T, bias=True), atol=1e-10)
    d2 = tasks.mahalanobis2(z, mean, precision)
    assert d2.mean() == pytest.approx(3.0, rel=1e-9)  # the trace identity on the fit rows


# --------------------------------------------------------------------------- partition
def _label_skew(scheme: str, **opts) -> float:
    """Mean over clients of the total-variation distance between the client's class shares
    and everyone's."""
    data = tiny_classes(n_classes=3)
    assign = partition(
        data.sample_ids,
        data.target,
        data.modality_names,
        data.split,
        PartitionOptions(scheme=scheme, n_clients=3, val_fraction=0.0, **opts),
        seeding.rng(0, "partition"),
        n_classes=3,
    )
    y = assign["sample_id"].map(pd.Series(data.target, index=data.sample_ids))
    share = y.groupby(assign["client"]).value_counts(normalize=True).unstack(fill_value=0)
    overall = y.value_counts(normalize=True)
    return float((0.5 * (share - overall).abs().sum(axis=1)).mean())


def test_dirichlet_over_labels_skews_each_clients_classes():
    skewed = _label_skew("dirichlet", dirichlet_alpha=0.1)
    assert skewed > 0.3
    assert _label_skew("iid") < 0.1


# --------------------------------------------------------------------------- classifiers
def test_classifiers_fit_train_rows_only_and_cover_classes_a_client_never_saw():
    rng = np.random.default_rng(0)
    rows = []
    for c, classes in ((0, [0, 1]), (1, [1, 2])):
        for split, n in (("train", 60), ("val", 20), ("test", 20)):
            y = rng.choice(classes, n) if split == "train" else rng.choice([0, 1, 2], n)
            z = rng.normal(size=(n, 2)) + y[:, None] * 2.0
            rows.append(
                pd.DataFrame(z, columns=["z_0", "z_1"]).assign(
                    sample_id=[f"{c}{split}{i}" for i in range(n)], client=c, split=split, target=y
                )
            )
    feats = pd.concat(rows, ignore_index=True)
    out = classify_per_client(feats, ["z_0", "z_1"], "m", ["logistic", "rf"], 3, seed=0)
    assert set(out["split"]) == {"val", "test"}
    p = out[["p0", "p1", "p2"]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # client 0 never saw class 2: its probability is the smoothing floor, not zero
    c0 = out[out["client"] == 0]
    assert (c0["p2"] > 0).all() and (c0["p2"] < 1e-3).all()
    # test targets never reach a fit: changing them changes no prediction
    feats2 = feats.copy()
    feats2.loc[feats2["split"] == "test", "target"] = 0
    out2 = classify_per_client(feats2, ["z_0", "z_1"], "m", ["logistic"], 3, seed=0)
    a = out[out["regressor"] == "logistic"].reset_index(drop=True)
    np.testing.assert_allclose(a["p1"], out2["p1"])
