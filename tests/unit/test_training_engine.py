"""The in-process engine: strategies, determinism, resume, missing modalities, privacy boundary."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fdrmfl_pipeline.core.client import ClientUpdate, LocalTrainConfig, model_from_state, predict
from fdrmfl_pipeline.core.engine import STRATEGIES, FederationConfig, run_federated
from fdrmfl_pipeline.core.model import build_model

from ..tiny import tiny_clients

CFG = LocalTrainConfig(
    local_epochs=1, batch_size=16, lambda_mi=0.1, lambda_kl=0.01, lambda_con=0.1, prox_mu=0.01
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def _states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_runs_end_to_end(strategy):
    _, _, clients, scalers, config = tiny_clients()
    res = run_federated(
        config, clients, scalers, CFG, FederationConfig(strategy=strategy, rounds=2, seed=1)
    )
    assert res.rounds_run == 2
    expected_clients = [-1] if strategy == "central" else [0, 1, 2]
    assert sorted({r["client"] for r in res.history}) == expected_clients
    assert all(np.isfinite(r["val_mse"]) for r in res.history)
    if strategy == "local":
        assert sorted(res.client_states) == [0, 1, 2]
        assert not _states_equal(res.client_states[0], res.client_states[1])
    rows = [r for r in res.history if r["round"] == 2]
    if strategy == "fdrmfl":
        assert all(r["loss_con"] > 0 and r["loss_skl"] > 0 and r["loss_mi"] < 0 for r in rows)
    if strategy == "fedavg":
        assert all(r["loss_mi"] == 0 and r["loss_con"] == 0 and r["loss_prox"] == 0 for r in rows)
    if strategy == "fedprox":
        assert all(r["loss_prox"] > 0 for r in rows)
    if strategy == "moon":
        assert all(r["loss_con"] > 0 and r["loss_mi"] == 0 for r in rows)


def test_contrastive_term_is_off_at_first_participation():
    _, _, clients, scalers, config = tiny_clients()
    res = run_federated(
        config, clients, scalers, CFG, FederationConfig(strategy="moon", rounds=2, seed=1)
    )
    assert all(r["loss_con"] == 0 for r in res.history if r["round"] == 1)
    assert all(r["loss_con"] > 0 for r in res.history if r["round"] == 2)


def test_same_seed_gives_bit_identical_weights_and_metrics():
    runs = []
    for _ in range(2):
        _, _, clients, scalers, config = tiny_clients()
        runs.append(
            run_federated(config, clients, scalers, CFG, FederationConfig(rounds=2, seed=3))
        )
    assert _states_equal(runs[0].global_state, runs[1].global_state)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in runs[0].history]
    strip2 = [{k: v for k, v in r.items() if k != "seconds"} for r in runs[1].history]
    assert strip == strip2
    _, _, clients, scalers, config = tiny_clients()
    other = run_federated(config, clients, scalers, CFG, FederationConfig(rounds=2, seed=4))
    assert not _states_equal(runs[0].global_state, other.global_state)


def test_killed_run_resumes_from_checkpoint_to_the_same_weights(tmp_path):
    _, _, clients, scalers, config = tiny_clients()
    fed = FederationConfig(rounds=4, seed=2, client_fraction=0.7)
    full = run_federated(config, clients, scalers, CFG, fed, checkpoint_path=tmp_path / "a.pt")

    class Killed(Exception):
        pass

    def kill_after_round_2(rnd, _val):
        if rnd == 2:
            raise Killed

    ck = tmp_path / "b.pt"
    with pytest.raises(Killed):
        run_federated(
            config, clients, scalers, CFG, fed, checkpoint_path=ck, on_round_end=kill_after_round_2
        )
    assert ck.exists()
    resumed = run_federated(config, clients, scalers, CFG, fed, checkpoint_path=ck, resume=True)
    assert _states_equal(full.global_state, resumed.global_state)
    assert [r["val_mse"] for r in full.history] == [r["val_mse"] for r in resumed.history]


def test_client_without_a_modality_trains_and_predicts():
    _, _, clients, scalers, config = tiny_clients(
        scheme="missing_modality", missing_map={1: ["img", "seq"]}
    )
    assert clients[1].train.mask[:, :2].sum() == 0 and clients[1].train.mask[:, 2:].all()
    res = run_federated(config, clients, scalers, CFG, FederationConfig(rounds=2, seed=0))
    model = model_from_state(config, res.global_state)
    z, y_hat = predict(model, clients[1].splits["test"])
    assert np.isfinite(z).all() and np.isfinite(y_hat).all()
    # the absent modalities are masked out, not read: any values there give the same output
    split = clients[1].splits["test"]
    split.x["img"] = np.full_like(split.x["img"], 1e3)
    z2, y2 = predict(model, split)
    np.testing.assert_array_equal(z, z2)
    np.testing.assert_array_equal(y_hat, y2)


def test_client_sampling_uses_the_fraction():
    _, _, clients, scalers, config = tiny_clients(n_clients=4)
    res = run_federated(
        config, clients, scalers, CFG, FederationConfig(rounds=3, seed=0, client_fraction=0.5)
    )
    for rnd in (1, 2, 3):
        assert sum(r["participated"] for r in res.history if r["round"] == rnd) == 2


def test_early_stopping_keeps_the_best_round():
    _, _, clients, scalers, config = tiny_clients()
    cfg = dataclasses.replace(CFG, lr=0.05)  # noisy on purpose
    res = run_federated(
        config,
        clients,
        scalers,
        cfg,
        FederationConfig(rounds=8, seed=0, early_stopping=True, patience=2),
    )
    by_round = {}
    for r in res.history:
        by_round.setdefault(r["round"], []).append((r["val_mse"], clients[r["client"]].val.n))
    means = {
        k: np.average([v for v, _ in rows], weights=[n for _, n in rows])
        for k, rows in by_round.items()
    }
    assert res.best_round == min(means, key=means.get)
    assert res.rounds_run <= 8


def test_early_stopping_without_validation_rows_runs_every_round():
    """No client has validation rows (the reference protocol): there is nothing to judge, so
    early stopping must not count the rounds as stale and cut the run short."""
    _, _, clients, scalers, config = tiny_clients(val_fraction=0.0)
    assert all(c.val.n == 0 for c in clients.values())
    res = run_federated(
        config,
        clients,
        scalers,
        CFG,
        FederationConfig(rounds=5, seed=0, early_stopping=True, patience=2),
    )
    assert res.rounds_run == 5 and res.best_round == 5


def test_only_weights_counts_and_scalar_metrics_cross_to_the_server():
    """Audit every ClientUpdate the server receives: nothing shaped like a client's data."""
    _, _, clients, scalers, config = tiny_clients()
    seen: list[ClientUpdate] = []
    run_federated(
        config, clients, scalers, CFG, FederationConfig(rounds=2, seed=0), on_update=seen.append
    )
    assert len(seen) == 6
    assert [f.name for f in dataclasses.fields(ClientUpdate)] == [
        "client_id",
        "state",
        "n_samples",
        "metrics",
    ]
    reference = build_model(config, seed=0).state_dict()
    for upd in seen:
        assert isinstance(upd.n_samples, int) and isinstance(upd.client_id, int)
        assert upd.state.keys() == reference.keys()
        for k, v in upd.state.items():
            assert v.shape == reference[k].shape, k  # parameter shapes only
        assert all(isinstance(v, float) for v in upd.metrics.values())
        data = clients[upd.client_id]
        raw = [a.reshape(data.train.n, -1) for a in data.train.x.values()] + [
            data.train.y.reshape(-1, 1)
        ]
        for v in upd.state.values():
            flat = v.reshape(-1)
            for arr in raw:  # no row (or column) of the client's data appears verbatim
                if arr.shape[1] == flat.numel():
                    assert not any(np.allclose(flat.numpy(), row) for row in arr)
                if arr.shape[0] == flat.numel():
                    assert not any(np.allclose(flat.numpy(), col) for col in arr.T)


def test_lambda_mi_raises_held_out_mutual_information():
    """The retention knob: with the alignment term compressing the latent space, a positive
    lambda_mi keeps more information about y in Z (kNN-regression MI estimate on test data)."""
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    from fdrmfl_pipeline.core import seeding
    from fdrmfl_pipeline.core.clientdata import build_clients
    from fdrmfl_pipeline.core.modalities import ModalitySpec, MultimodalData
    from fdrmfl_pipeline.core.model import ModelConfig
    from fdrmfl_pipeline.core.partition import PartitionOptions, partition

    def held_out_mi(z, y):
        pred = cross_val_predict(
            KNeighborsRegressor(15), StandardScaler().fit_transform(z), y, cv=5
        )
        r = np.corrcoef(pred, y)[0, 1]
        return -0.5 * np.log(1 - min(r * r, 0.9999))

    gains = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((400, 8)).astype(np.float32)
        b = rng.standard_normal((400, 8)).astype(np.float32)  # carries no information about y
        y = a @ np.linspace(1, -1, 8) + 0.3 * rng.standard_normal(400)
        specs = (ModalitySpec("a", "vector", (8,)), ModalitySpec("b", "vector", (8,)))
        split = np.array(["train"] * 300 + ["test"] * 100)
        data = MultimodalData(
            np.array([f"s{i}" for i in range(400)]), y, {"a": a, "b": b}, specs, split, "t"
        )
        assign = partition(
            data.sample_ids,
            y,
            ["a", "b"],
            split,
            PartitionOptions(scheme="iid", n_clients=2),
            seeding.rng(seed, "p"),
        )
        clients, scalers = build_clients(data, assign, ["a", "b"], "federated", seed)
        config = ModelConfig.for_modalities(
            [("a", "vector", (8,)), ("b", "vector", (8,))],
            latent_dim=2,
            hidden_dim=16,
            head_hidden=8,
        )
        mi = {}
        for lam in (0.0, 1.0):
            cfg = LocalTrainConfig(local_epochs=5, lambda_mi=lam, lambda_kl=1.0, lr=3e-3)
            res = run_federated(
                config,
                clients,
                scalers,
                cfg,
                FederationConfig(strategy="fdrmfl", rounds=8, seed=seed),
            )
            model = model_from_state(config, res.global_state)
            z = np.concatenate([predict(model, clients[c].splits["test"])[0] for c in clients])
            yt = np.concatenate([clients[c].splits["test"].y_raw for c in clients])
            mi[lam] = held_out_mi(z, yt)
        gains.append(mi[1.0] - mi[0.0])
    assert all(g > 0 for g in gains), gains
    assert np.mean(gains) > 0.1, gains


class _Flaky:
    """Wraps the in-process runner; the listed clients stop answering from a given round."""

    def __init__(self, inner, dead: set[int], from_round: int):
        self.inner, self.dead, self.from_round = inner, dead, from_round

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train(self, jobs, round_, cfg, anchor=None):
        alive = {
            c: s for c, s in jobs.items() if not (round_ >= self.from_round and c in self.dead)
        }
        updates, failures = self.inner.train(alive, round_, cfg, anchor)
        failures.update({c: "connection lost" for c in jobs if c not in alive})
        return updates, failures


def test_a_round_completes_without_a_failed_client_when_enough_answer(caplog, tmp_path):
    from fdrmfl_pipeline.core.engine import InProcessRunner, run_rounds

    _, _, clients, scalers, config = tiny_clients()
    runner = _Flaky(InProcessRunner(config, clients, scalers, 0), dead={1}, from_round=2)
    fed = FederationConfig(rounds=3, seed=0, min_clients=2)
    with caplog.at_level("ERROR"):
        res = run_rounds(config, runner, CFG, fed, checkpoint_path=tmp_path / "ck.pt")
    assert res.rounds_run == 3
    assert [r["participated"] for r in res.history if r["round"] == 3] == [True, False, True]
    assert "client 1 did not answer" in caplog.text


def test_too_few_clients_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    from fdrmfl_pipeline.core.engine import FederationError, InProcessRunner, run_rounds

    _, _, clients, scalers, config = tiny_clients()
    runner = _Flaky(InProcessRunner(config, clients, scalers, 0), dead={0, 1}, from_round=3)
    ck = tmp_path / "ck.pt"
    with pytest.raises(FederationError, match=r"round 3: only 1 of 3 .*min_clients=2.*round 2"):
        run_rounds(
            config,
            runner,
            CFG,
            FederationConfig(rounds=4, seed=0, min_clients=2),
            checkpoint_path=ck,
        )
    assert int(torch.load(ck, weights_only=True)["round"]) == 2


def test_resume_ignores_a_checkpoint_of_other_data(tmp_path, caplog):
    """Same sizes and settings, other rows: the checkpoint is keyed on a digest of the clients'
    data, so it is not resumed (it used to be: 0 rounds run, the old model returned)."""
    _, _, clients, scalers, config = tiny_clients(seed=0)
    fed = FederationConfig(strategy="fedavg", rounds=2, seed=0)
    ck = tmp_path / "ck.pt"
    first = run_federated(config, clients, scalers, CFG, fed, checkpoint_path=ck)
    _, _, other, other_scalers, _ = tiny_clients(seed=1)
    assert [c.train.n for c in other.values()] == [c.train.n for c in clients.values()]
    with caplog.at_level("WARNING"):
        res = run_federated(config, other, other_scalers, CFG, fed, checkpoint_path=ck, resume=True)
    assert "other data" in caplog.text
    assert sorted({r["round"] for r in res.history}) == [1, 2]  # trained afresh
    assert any(
        not torch.equal(first.global_state[k], res.global_state[k]) for k in res.global_state
    )


def test_a_torn_checkpoint_is_not_resumed(tmp_path, caplog):
    """The weights and the JSON sidecar carry the round; a pair that disagrees is ignored."""
    import json

    _, _, clients, scalers, config = tiny_clients()
    fed = FederationConfig(strategy="fedavg", rounds=2, seed=0)
    ck = tmp_path / "ck.pt"
    run_federated(config, clients, scalers, CFG, fed, checkpoint_path=ck)
    side = ck.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["round"] = 1
    side.write_text(json.dumps(meta))
    with caplog.at_level("WARNING"):
        res = run_federated(config, clients, scalers, CFG, fed, checkpoint_path=ck, resume=True)
    assert "disagree on the round" in caplog.text
    assert sorted({r["round"] for r in res.history}) == [1, 2]


def test_a_hundred_unequal_clients_train_in_process():
    """Scale in small: 100 quantity-skewed clients (the largest over 5x the smallest), two rounds, every
    client in each round, in client order; the full-size figure is benchmarks/bench_scale."""
    from fdrmfl_pipeline.core import seeding
    from fdrmfl_pipeline.core.clientdata import build_clients
    from fdrmfl_pipeline.core.partition import PartitionOptions, partition

    from ..tiny import SPECS, tiny_data

    data = tiny_data(n=1500)
    assign = partition(
        data.sample_ids,
        data.target,
        data.modality_names,
        data.split,
        PartitionOptions(scheme="quantity_skew", n_clients=100, val_fraction=0.0, skew_power=0.5),
        seeding.rng(0, "partition"),
    )
    sizes = assign[assign["split"] == "train"].groupby("client").size()
    assert len(sizes) == 100 and sizes.max() > 5 * sizes.min()
    clients, scalers = build_clients(data, assign, data.modality_names, "federated", 0)
    from fdrmfl_pipeline.core.model import ModelConfig

    config = ModelConfig.for_modalities(
        [(s.name, s.kind, s.shape) for s in SPECS], latent_dim=4, hidden_dim=8, head_hidden=8
    )
    seen = []
    res = run_federated(
        config,
        clients,
        scalers,
        LocalTrainConfig(local_epochs=1),
        FederationConfig(rounds=2, early_stopping=False, seed=0),
        on_update=lambda u: seen.append(u.client_id),
    )
    assert seen == list(range(100)) * 2
    assert all(torch.isfinite(v).all() for v in res.global_state.values() if v.is_floating_point())


def test_a_dynamic_federation_follows_its_schedule_and_availability():
    """Client 2 joins at round 3, client 0 leaves after round 2; a late joiner starts from the
    current global model; availability draws are seeded; a round nobody attends changes
    nothing."""
    _, _, clients, scalers, config = tiny_clients()
    fed = FederationConfig(rounds=4, early_stopping=False, seed=3, schedule=((2, 3, 0), (0, 1, 2)))
    res = run_federated(config, clients, scalers, CFG, fed)
    seen = [(r["round"], r["client"]) for r in res.history if r["participated"]]
    by_round = {r: sorted(c for rr, c in seen if rr == r) for r in range(1, 5)}
    assert by_round == {1: [0, 1], 2: [0, 1], 3: [1, 2], 4: [1, 2]}
    h = {(r["round"], r["client"]): r for r in res.history}
    assert not h[(1, 2)]["participated"] and np.isnan(h[(1, 2)]["val_mse"])  # not yet a member
    assert np.isfinite(h[(3, 2)]["val_mse"]) and np.isnan(h[(3, 0)]["val_mse"])

    flaky = dataclasses.replace(fed, schedule=(), availability=0.5)
    assert flaky.online([0, 1, 2], 7) == flaky.online([0, 1, 2], 7)
    draws = {tuple(flaky.online([0, 1, 2], r)) for r in range(1, 40)}
    assert len(draws) > 3 and () in draws  # rounds differ, and some have nobody online
    empty = next(r for r in range(1, 40) if not flaky.online([0, 1, 2], r))
    a = run_federated(config, clients, scalers, CFG, dataclasses.replace(flaky, rounds=empty))
    b = run_federated(config, clients, scalers, CFG, dataclasses.replace(flaky, rounds=empty - 1))
    assert _states_equal(a.global_state, b.global_state)


def test_a_schedule_naming_an_unknown_client_is_refused():
    from fdrmfl_pipeline.errors import ConfigError

    _, _, clients, scalers, config = tiny_clients()
    fed = FederationConfig(rounds=1, schedule=((7, 2, 0),))
    with pytest.raises(ConfigError, match=r"names client\(s\) \[7\]"):
        run_federated(config, clients, scalers, CFG, fed)


def test_the_kernel_mi_estimator_replaces_the_gaussian_one():
    from dataclasses import replace

    _, _, clients, scalers, config = tiny_clients()
    fed = FederationConfig(rounds=1, seed=1, early_stopping=False)
    gauss = run_federated(config, clients, scalers, CFG, fed)
    kernel = run_federated(config, clients, scalers, replace(CFG, mi_estimator="kernel"), fed)
    # the Gaussian term is -I <= 0; the contrastive one is a positive log-loss
    assert all(r["loss_mi"] < 0 for r in gauss.history if r["round"] == 1)
    assert all(r["loss_mi"] > 0 for r in kernel.history if r["round"] == 1)
