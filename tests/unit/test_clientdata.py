"""Federated input scaling (core.clientdata): per column or one pooled std per modality."""

from __future__ import annotations

import numpy as np
import pytest

from fdrmfl_pipeline.core.clientdata import build_clients, federated_scaler, train_stats
from fdrmfl_pipeline.errors import ConfigError

from ..tiny import tiny_clients


def _pooled_train(data, assign):
    ids = set(assign.loc[assign["split"] == "train", "sample_id"])
    rows = np.array([s in ids for s in data.sample_ids])
    return {m: data.arrays[m][rows].astype(np.float64) for m in data.modality_names}


@pytest.mark.parametrize("x_scaling", ["per_feature", "per_modality"])
def test_federated_scaler_equals_the_scaler_of_the_pooled_training_rows(x_scaling):
    data, assign, *_ = tiny_clients()
    _, scalers = build_clients(data, assign, data.modality_names, "federated", 0, x_scaling)
    sc = scalers[0]
    for m, x in _pooled_train(data, assign).items():
        np.testing.assert_allclose(sc.x_mean[m], x.mean(axis=0), rtol=1e-9, atol=1e-12)
        sd = x.std(axis=0)
        want = sd if x_scaling == "per_feature" else np.full(sd.shape, np.sqrt((sd**2).mean()))
        np.testing.assert_allclose(sc.x_std[m], want, rtol=1e-7)


def test_per_modality_scaling_keeps_the_relative_column_variances():
    """A spectrum's weak bands stay weak: scaled column variances are proportional to the raw
    ones (per_feature makes them all 1), and the modality's mean variance is 1."""
    data, assign, clients, *_ = tiny_clients()
    per_mod, _ = build_clients(data, assign, data.modality_names, "federated", 0, "per_modality")
    raw = _pooled_train(data, assign)
    for m in data.modality_names:
        x = np.concatenate([per_mod[c].splits["train"].x[m] for c in sorted(per_mod)])
        x = x.reshape(len(x), -1).astype(np.float64)
        var_raw = raw[m].reshape(len(raw[m]), -1).var(axis=0)
        np.testing.assert_allclose(x.var(axis=0), var_raw / var_raw.mean(), rtol=1e-4, atol=1e-6)
        x_pf = np.concatenate([clients[c].splits["train"].x[m] for c in sorted(clients)])
        x_pf = x_pf.reshape(len(x_pf), -1).astype(np.float64)
        assert not np.allclose(x.var(axis=0), x_pf.var(axis=0), rtol=1e-2)


def test_unknown_x_scaling_is_named():
    data, assign, *_ = tiny_clients()
    x, mask, y = (
        {m: data.arrays[m][:10] for m in data.modality_names},
        np.ones((10, len(data.modality_names)), bool),
        data.target[:10],
    )
    stats = {0: train_stats(x, mask, y, data.modality_names)}
    shapes = {m: data.spec(m).shape for m in data.modality_names}
    with pytest.raises(ConfigError, match=r"training\.experimental\.x_scaling 'per_band'"):
        federated_scaler(stats, shapes, "per_band")


def test_training_params_reject_an_unknown_x_scaling():
    from pydantic import ValidationError

    from fdrmfl_pipeline.params import TrainingParams

    p = TrainingParams(experimental={"x_scaling": "per_modality"})
    assert p.experimental.x_scaling == "per_modality"
    with pytest.raises(ValidationError, match="x_scaling"):
        TrainingParams(experimental={"x_scaling": "per_band"})
