"""A modality that a client gains during training (a sensor added at round k): before k the
client trains, validates and answers the warm start as if it lacked it; from k on it uses it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fdrmfl_pipeline.core.client import LocalTrainConfig
from fdrmfl_pipeline.core.clientdata import ClientData, SplitArrays
from fdrmfl_pipeline.core.config import FederationConfig
from fdrmfl_pipeline.core.engine import run_federated
from fdrmfl_pipeline.core.warmstart import InProcessOracle, WarmStartConfig, warm_start_state

from ..tiny import tiny_clients

CFG = LocalTrainConfig(local_epochs=1, batch_size=16)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def _scramble(cd: ClientData, modality: str) -> ClientData:
    """The client's ``modality`` replaced by other numbers on every row."""
    rng = np.random.default_rng(99)
    splits = {
        s: SplitArrays(
            sp.sample_ids,
            {**sp.x, modality: rng.standard_normal(sp.x[modality].shape).astype(np.float32)},
            sp.mask,
            sp.y,
            sp.y_raw,
        )
        for s, sp in cd.splits.items()
    }
    return ClientData(cd.client_id, splits, cd.available)


def _run(clients, scalers, config, fed):
    return run_federated(config, clients, scalers, CFG, fed)


def test_a_modality_gained_at_round_k_is_unused_before_and_used_from_k():
    _, _, clients, scalers, config = tiny_clients()
    fed = FederationConfig(rounds=3, seed=1, early_stopping=False, modality_joins=((1, "img", 3),))
    assert fed.absent(1, 2) == ("img",) and fed.absent(1, 3) == () and fed.absent(0, 1) == ()
    base = _run(clients, scalers, config, replace(fed, rounds=2))
    other = _run(
        {**clients, 1: _scramble(clients[1], "img")}, scalers, config, replace(fed, rounds=2)
    )
    # rounds 1-2: client 1's image values reach nothing (weights and validation identical)
    for k in base.global_state:
        assert torch.equal(base.global_state[k], other.global_state[k]), k
    assert [r["val_mse"] for r in base.history] == [r["val_mse"] for r in other.history]
    # round 3: client 1 has the sensor, and its values matter
    full = _run(clients, scalers, config, fed)
    full_other = _run({**clients, 1: _scramble(clients[1], "img")}, scalers, config, fed)
    assert any(
        not torch.equal(full.global_state[k], full_other.global_state[k]) for k in full.global_state
    )
    # without the schedule the image counts from round 1: the schedule changed the run
    plain = _run(clients, scalers, config, replace(fed, rounds=2, modality_joins=()))
    assert any(
        not torch.equal(plain.global_state[k], base.global_state[k]) for k in base.global_state
    )


def test_the_warm_start_sees_only_the_modalities_clients_have_at_the_start():
    from fdrmfl_pipeline.core.clientdata import without_modalities

    _, _, clients, _, config = tiny_clients()
    names = [m.name for m in config.modalities]
    ws = WarmStartConfig("pls", components=3)

    def start(cl):
        at0 = {c: without_modalities(d, ("spec",) if c == 2 else (), names) for c, d in cl.items()}
        return warm_start_state(config, InProcessOracle(at0, names), 0, ws)

    a = start(clients)
    b = start({**clients, 2: _scramble(clients[2], "spec")})
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_schedule_naming_an_unknown_modality_or_a_late_round_is_refused():
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.errors import ConfigError
    from fdrmfl_pipeline.params import TrainingParams

    from ..tiny import tiny_data

    data = tiny_data()
    for joins, match in (
        ({1: {"lidar": 2}}, "names modality 'lidar', which is not trained on"),
        ({1: {"img": 9}}, "after the last round"),
    ):
        params = TrainingParams.model_validate(
            {"federation": {"rounds": 3, "availability": {"modalities": joins}}}
        )
        with pytest.raises(ConfigError, match=match):
            TrainingSetup.from_params(params, 0, data)
