"""Data that cannot train a model: a named error before anything is written, never a NaN model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fdrmfl_pipeline.core.client import LocalTrainConfig
from fdrmfl_pipeline.core.engine import FederationConfig, InProcessRunner, run_rounds
from fdrmfl_pipeline.core.sources import TableModality, build_table
from fdrmfl_pipeline.errors import (
    ConfigError,
    InputDataError,
    NonFiniteModelError,
    NonFiniteValueError,
    PartitionError,
)

from ..tiny import tiny_clients, tiny_data

VEC = [TableModality("vec", "vector", ("a", "b", "c"))]


def _table(n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "y": rng.normal(size=n),
            **{c: rng.normal(size=n) for c in "abc"},
        }
    )


def test_a_client_with_one_training_row_is_a_named_error_not_a_nan_model():
    from fdrmfl_pipeline.core import seeding
    from fdrmfl_pipeline.core.clientdata import build_clients
    from fdrmfl_pipeline.core.partition import PartitionOptions, partition

    data = tiny_data()
    assign = partition(
        data.sample_ids,
        data.target,
        data.modality_names,
        data.split,
        PartitionOptions(scheme="iid", n_clients=3, val_fraction=0.2),
        seeding.rng(0, "partition"),
    )
    train2 = assign.index[(assign["client"] == 2) & (assign["split"] == "train")]
    assign = assign.drop(train2[1:])  # client 2 keeps a single training row
    with pytest.raises(ConfigError, match=r"client 2 has 1 training row.*partitioning.n_clients"):
        build_clients(data, assign, data.modality_names, "federated", 0)


def test_a_constant_target_fails_at_ingestion():
    df = _table()
    df["y"] = 3.5
    with pytest.raises(InputDataError, match=r"target is constant \(3.5 in all 8"):
        build_table(df, "y", VEC, id_column="id")


def test_a_nan_names_its_column_and_sample():
    df = _table()
    df.loc[5, "c"] = np.nan
    with pytest.raises(NonFiniteValueError, match=r"first in column 'c' at sample 'r5'"):
        build_table(df, "y", VEC, id_column="id")


def test_a_value_beyond_float32_is_called_an_overflow():
    df = _table()
    df.loc[2, "b"] = 1e300
    with pytest.raises(NonFiniteValueError, match=r"beyond float32's range.*column 'b'.*'r2'"):
        build_table(df, "y", VEC, id_column="id")


def test_too_few_rows_for_one_client_does_not_say_lower_n_clients():
    from fdrmfl_pipeline.core.partition import PartitionOptions, partition

    ids = np.array(["only"])
    with pytest.raises(PartitionError) as err:
        partition(
            ids,
            np.array([1.0]),
            ["vec"],
            None,
            PartitionOptions(n_clients=1),
            np.random.default_rng(0),
        )
    assert "needs more rows" in str(err.value) and "lower partitioning.n_clients" not in str(
        err.value
    )


class _Poisoned(InProcessRunner):
    """Client 1 sends NaN weights from round 2 on (a diverged local update)."""

    def train(self, jobs, round_, cfg, anchor=None):
        updates, failures = super().train(jobs, round_, cfg, anchor)
        if round_ >= 2:
            for u in updates:
                if u.client_id == 1:
                    u.state = {k: torch.full_like(v, float("nan")) for k, v in u.state.items()}
        return updates, failures


def test_a_nan_update_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    from fdrmfl_pipeline.core.engine import checkpoint_round

    _, _, clients, scalers, config = tiny_clients()
    runner = _Poisoned(config, clients, scalers, 0)
    ck = tmp_path / "ck.pt"
    fed = FederationConfig(strategy="fedavg", rounds=3, seed=0)
    with pytest.raises(NonFiniteModelError, match=r"round 2: the aggregated model has NaN"):
        run_rounds(config, runner, LocalTrainConfig(local_epochs=1, batch_size=16), fed, ck)
    assert checkpoint_round(ck) == 1


def test_a_nan_model_is_never_saved(tmp_path):
    from kedro.io.core import DatasetError, Version

    from fdrmfl_pipeline.core.bundle import make_bundle
    from fdrmfl_pipeline.core.model import build_model
    from fdrmfl_pipeline.datasets import TorchModelDataset

    _, _, _, scalers, config = tiny_clients()
    state = build_model(config, seed=0).state_dict()
    state = {k: v.clone() for k, v in state.items()}
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("inf")
    ds = TorchModelDataset(str(tmp_path / "m.pt"), version=Version(None, None))
    with pytest.raises((NonFiniteModelError, DatasetError), match="NaN or infinite"):
        ds.save(make_bundle(config, state, scalers))
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.tmp"))


def test_nan_features_are_never_passed_on():
    from fdrmfl_pipeline.core.bundle import make_bundle
    from fdrmfl_pipeline.core.modalities import to_arrow
    from fdrmfl_pipeline.core.model import build_model
    from fdrmfl_pipeline.params import TrainingParams
    from fdrmfl_pipeline.pipelines.training.nodes import extract_features

    data, assign, _, scalers, config = tiny_clients()
    state = {k: v.clone() for k, v in build_model(config, seed=0).state_dict().items()}
    state["head_linear.weight"] = torch.full_like(state["head_linear.weight"], float("nan"))
    params = TrainingParams(
        warm_start={"kind": "none"}, model={"latent_dim": 4, "hidden_dim": 8, "head_hidden": 8}
    )
    with pytest.raises(NonFiniteModelError, match="NaN or infinite features"):
        extract_features(to_arrow(data), assign, make_bundle(config, state, scalers), params, 0)
