"""The Flower engine: same code, same numbers (simulation), and faults."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")


from ..conftest import make_project, run_session
from ..conftest import merge as _merge  # noqa: E402

pytestmark = pytest.mark.flower

SMALL = {
    "ingestion": {"synthetic": {"n_train": 150, "n_test": 45}},
    "training": {
        "federation": {"rounds": 2, "client_fraction": 0.7},
        "optimizer": {"local_epochs": 1},
        "model": {"latent_dim": 4, "hidden_dim": 16},
    },
}


def _setup(config, cfg, fed, names):
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.core.warmstart import WarmStartConfig

    return TrainingSetup(config, cfg, fed, WarmStartConfig("none"), tuple(names))


def _bundle(project: Path) -> dict:
    return torch.load(
        sorted((project / "data/06_models/global_model.pt").glob("*/*"))[-1], weights_only=True
    )


@pytest.mark.parametrize("warm_start", ["pls", "pca", "lasso"])
def test_flower_simulation_is_bit_identical_to_inprocess(tmp_path, warm_start):
    """Same weights and history; the PLS, PCA and lasso warm starts' aggregates travel as Flower
    queries and give the same initial model (round 0 in the history); the rounds after it are the
    same code as from a random start, which the failure tests below run on Flower. With an anchor
    (PLS case) the warm start travels with every round's training message."""
    import pandas as pd

    project = make_project(tmp_path / "p")
    # short lasso and PCA iterations: on Flower every FISTA / subspace step is one message round
    # trip per client (the default lasso path, 12 x 200 steps, takes ~6 min here)
    extra = {
        # the PLS case also pulls the encoders toward the warm start, which then travels too
        "pls": {"experimental": {"anchor_mu": 1.0}},
        # the PCA case also checks that the per-modality input scaling reaches the Flower server
        "pca": {
            "warm_start": {"pca_iterations": 10},
            "experimental": {"x_scaling": "per_modality"},
        },
        "lasso": {"warm_start": {"lasso_penalties": 4, "lasso_iterations": 15}},
    }[warm_start]
    small = _merge(SMALL, {"training": {"warm_start": {"kind": warm_start}}})
    small = _merge(small, {"training": extra})
    run_session(project, ["ingestion", "partitioning", "training"], small)
    inproc = _bundle(project)
    h_in = pd.read_parquet(
        sorted((project / "data/07_model_output/training_history.parquet").glob("*/*"))[-1]
    )
    flower = _merge(small, {"training": {"engine": "flower-simulation"}})
    run_session(project, ["training"], flower)
    sim = _bundle(project)
    h_sim = pd.read_parquet(
        sorted((project / "data/07_model_output/training_history.parquet").glob("*/*"))[-1]
    )
    assert sim["meta"] != inproc["meta"]  # really another engine
    assert inproc["state_dict"].keys() == sim["state_dict"].keys()
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], sim["state_dict"][k]), k
    cols = ["round", "client", "participated", "train_loss", "loss_mse", "loss_con", "val_mse"]
    pd.testing.assert_frame_equal(h_in[cols + ["loss_anchor"]], h_sim[cols + ["loss_anchor"]])
    assert (h_sim["loss_anchor"] > 0).any() == (warm_start == "pls")
    assert inproc["scalers"] == sim["scalers"]
    stds = [set(np.ravel(s)) for s in json.loads(sim["scalers"])["0"]["x_std"].values()]
    assert all(len(u) == 1 for u in stds) == (warm_start == "pca")  # one std per modality
    assert (h_sim["round"] == 0).any()


def test_simulated_client_failure_is_logged_and_the_round_completes(tmp_path, monkeypatch, caplog):
    """A client that dies in round 2: the round completes with the others (min_clients=2)."""
    from fdrmfl_pipeline.core.client import LocalTrainConfig
    from fdrmfl_pipeline.core.engine import FederationConfig
    from fdrmfl_pipeline.core.modalities import to_arrow
    from fdrmfl_pipeline.flower.simulation import simulate_training

    from ..tiny import tiny_clients

    data, assign, _, _, config = tiny_clients()
    monkeypatch.setenv("FDRMFL_FAIL_CLIENT", "1:2")
    cfg = LocalTrainConfig(local_epochs=1, batch_size=16)
    fed = FederationConfig(rounds=3, seed=0, min_clients=2)
    with caplog.at_level(logging.ERROR):
        result, _ = simulate_training(
            to_arrow(data), assign, _setup(config, cfg, fed, data.modality_names), tmp_path / "s"
        )
    assert result.rounds_run == 3
    part = {(r["round"], r["client"]): r["participated"] for r in result.history}
    assert part[(1, 1)] and not part[(2, 1)] and not part[(3, 1)] and part[(3, 0)]
    assert "client 1 did not answer" in caplog.text


DEPLOY_PARAMS = "training.warm_start.kind=pls,training.federation.rounds=2,training.optimizer.local_epochs=1,training.model.latent_dim=4,training.model.hidden_dim=16,ingestion.synthetic.n_train=150,ingestion.synthetic.n_test=45"


def _deploy(
    project: Path, clients: int, extra: list[str], params: str = DEPLOY_PARAMS, timeout: int = 600
):
    import subprocess
    import sys

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fdrmfl_pipeline.flower.deploy",
            "--project",
            str(project),
            "--clients",
            str(clients),
            "--params",
            params,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _no_flower_processes_left(run_dir_marker: str) -> None:
    import subprocess

    ps = subprocess.run(
        ["ps", "-eo", "stat,args"], capture_output=True, text=True, check=True
    ).stdout
    alive = [
        line for line in ps.splitlines() if run_dir_marker in line and not line.startswith("Z")
    ]
    assert not alive, alive


# client 1 gains the image sensor in round 2 (the warm start and round 1 go without it), and
# client 0 leaves after round 1
GAINED_MODALITY = (
    ",training.federation.availability.modalities={1: {image: 2}}"
    ",training.federation.availability.schedule={0: {leave: 1}}"
)


@pytest.mark.slow
def test_local_deployment_with_two_supernodes_matches_inprocess(tmp_path):
    import yaml

    project = make_project(tmp_path / "p", flower_app=True)
    proc = _deploy(project, 2, ["--round-timeout", "120"], params=DEPLOY_PARAMS + GAINED_MODALITY)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the server's progress reaches the launcher's console (not only the SuperNode logs)
    assert "server: fdrmfl_pipeline.core.engine: round 1/2" in proc.stderr, proc.stderr[-3000:]
    assert "[ETA " in proc.stderr
    deployed = _bundle(project)
    assert '"engine": "flower-deployment"' in deployed["meta"]
    run_dir = Path(json_meta(deployed)["run_dir"])
    _no_flower_processes_left(str(run_dir))
    # each SuperNode was given only its own client's file
    for c in (0, 1):
        log = (run_dir / f"supernode-{c}.log").exists()
        assert log
    # the same job in process, same seed and data
    params = {
        k: v for k, v in (item.split("=") for item in (DEPLOY_PARAMS + GAINED_MODALITY).split(","))
    }
    nested: dict = {}
    for key, value in params.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    nested["partitioning"] = {"n_clients": 2}
    run_session(project, ["training"], nested)
    inproc = _bundle(project)
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], deployed["state_dict"][k]), k
    # the catalog continues from the deployment's result
    nested["baselines"] = {"extractors": ["pca_d"], "regressors": ["ridge"]}
    run_session(project, ["regression", "baselines", "evaluation"], nested)
    assert sorted((project / "data/08_reporting/evaluation_metrics.parquet").glob("*/*"))


def json_meta(bundle: dict) -> dict:
    import json

    return json.loads(bundle["meta"])


@pytest.mark.slow
def test_a_restarted_supernode_rejoins_its_client_on_a_real_deployment(tmp_path):
    """Faults and churn on a real deployment: SuperNode 2 is killed after round 1, so round 2
    completes with the others (min_clients 2) and logs the missing client; it is started again
    after round 2 (a new node id, the same data), the server finds it and client 2 trains
    again."""
    project = make_project(tmp_path / "p", flower_app=True)
    params = (
        DEPLOY_PARAMS.replace("federation.rounds=2", "federation.rounds=5").replace(
            "warm_start.kind=pls", "warm_start.kind=none"
        )
        + ",training.federation.min_clients=2,training.federation.early_stopping.enabled=false"
    )
    proc = _deploy(
        project,
        3,
        ["--round-timeout", "30", "--kill-client", "2:1", "--restart-client", "2:2"],
        params=params,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    import pandas as pd

    history = pd.read_parquet(
        sorted((project / "data/07_model_output/training_history.parquet").glob("*/*"))[-1]
    )
    part = {(r.round, r.client): r.participated for r in history.itertuples()}
    assert part[(1, 2)] and not part[(2, 2)]
    assert any(part[(r, 2)] for r in (3, 4, 5))  # back once its node is up
    assert all(part[(r, c)] for r in range(1, 6) for c in (0, 1))
    run_dir = Path(json_meta(_bundle(project))["run_dir"])
    log = (run_dir / "flwr-run.log").read_text()
    assert "client 2 did not answer" in log and "client 2 is back on SuperNode" in log
    _no_flower_processes_left(str(run_dir))


def test_simulated_failure_below_min_clients_stops_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    from fdrmfl_pipeline.core.client import LocalTrainConfig
    from fdrmfl_pipeline.core.engine import FederationConfig
    from fdrmfl_pipeline.core.modalities import to_arrow
    from fdrmfl_pipeline.flower.simulation import simulate_training

    from ..tiny import tiny_clients

    data, assign, _, _, config = tiny_clients()
    monkeypatch.setenv("FDRMFL_FAIL_CLIENT", "0:2")
    ck = tmp_path / "ck.pt"
    with pytest.raises(Exception, match=r"round 2: only 2 of 3 .*min_clients=3"):
        setup = _setup(
            config,
            LocalTrainConfig(local_epochs=1, batch_size=16),
            FederationConfig(rounds=3, seed=0, min_clients=3),
            data.modality_names,
        )
        simulate_training(to_arrow(data), assign, setup, tmp_path / "s", checkpoint_path=ck)
    from fdrmfl_pipeline.core.engine import checkpoint_round

    assert checkpoint_round(ck) == 1
    assert int(torch.load(ck, weights_only=True)["round"]) == 1


DP = {
    "training": {
        "privacy": {"mode": "central", "target_epsilon": 4.0, "clip": 0.5},
        "warm_start": {"kind": "none"},
        "data": {"scaling": "local"},
        "federation": {"early_stopping": {"enabled": False}},
    }
}


def test_differential_privacy_is_bit_identical_on_flower_and_states_its_epsilon(tmp_path):
    """Client-level DP (clipping, seeded noise, Poisson client sampling) lives in the server
    loop every engine shares: same weights on Flower; epsilon <= 4 stored with the model."""
    import pandas as pd

    project = make_project(tmp_path / "p")
    params = _merge(SMALL, DP)
    run_session(project, ["ingestion", "partitioning", "training"], params)
    inproc = _bundle(project)
    run_session(
        project, ["training"], _merge(params, {"training": {"engine": "flower-simulation"}})
    )
    sim = _bundle(project)
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], sim["state_dict"][k]), k
    for bundle in (inproc, sim):
        privacy = json.loads(bundle["meta"])["privacy"]
        assert privacy["mode"] == "central" and 3.9 < privacy["epsilon"] <= 4.0 + 1e-6
        assert privacy["sample_rate"] == 0.7 and privacy["rounds"] == 2
    h = pd.read_parquet(
        sorted((project / "data/07_model_output/training_history.parquet").glob("*/*"))[-1]
    )
    assert h["val_mse"].isna().all()  # no per-round validation release under DP
    assert h.groupby("round")["epsilon"].first().is_monotonic_increasing


def test_local_differential_privacy_is_bit_identical_on_flower_simulation(tmp_path):
    """Local DP: each client clips and noises its own change inside the ClientApp (seeded,
    no secret in simulation): the same weights as in process."""
    project = make_project(tmp_path / "p")
    params = _merge(
        _merge(SMALL, DP), {"training": {"privacy": {"mode": "local", "target_epsilon": 8.0}}}
    )
    run_session(project, ["ingestion", "partitioning", "training"], params)
    inproc = _bundle(project)
    run_session(
        project, ["training"], _merge(params, {"training": {"engine": "flower-simulation"}})
    )
    sim = _bundle(project)
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], sim["state_dict"][k]), k
    assert json.loads(sim["meta"])["privacy"]["mode"] == "local"


def _inprocess_then_simulation(project: Path, params: dict):
    """The same training job in process, then on Flower simulation: both bundles and
    histories, after checking the weights are bit-identical."""
    import pandas as pd

    def history():
        rel = "data/07_model_output/training_history.parquet"
        return pd.read_parquet(sorted((project / rel).glob("*/*"))[-1])

    run_session(project, ["ingestion", "partitioning", "training"], params)
    inproc, h_in = _bundle(project), history()
    run_session(
        project, ["training"], _merge(params, {"training": {"engine": "flower-simulation"}})
    )
    sim, h_sim = _bundle(project), history()
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], sim["state_dict"][k]), k
    return inproc, h_in, sim, h_sim


def test_a_dynamic_federation_is_bit_identical_on_flower(tmp_path):
    """Clients joining late, leaving early and dropping out at random, and a client gaining a
    modality (an image sensor) in round 2, run the same rounds on Flower simulation as in
    process: same weights, same participation, same validation errors."""
    import pandas as pd

    project = make_project(tmp_path / "p")
    churn = {
        "training": {
            "federation": {
                "rounds": 3,
                "client_fraction": 1.0,
                "availability": {
                    "probability": 0.8,
                    "schedule": {2: {"join": 2}, 0: {"join": 1, "leave": 2}},
                    "modalities": {1: {"image": 2}},
                },
            }
        }
    }
    params = _merge(SMALL, churn)
    inproc, h_in, sim, h_sim = _inprocess_then_simulation(project, params)
    cols = ["round", "client", "participated", "val_mse"]
    pd.testing.assert_frame_equal(h_in[cols], h_sim[cols])
    trained = h_in[h_in["participated"]]
    assert 2 not in set(trained.loc[trained["round"] == 1, "client"])
    assert 0 not in set(trained.loc[trained["round"] == 3, "client"])


def test_classification_is_bit_identical_on_flower(tmp_path):
    """A three-class job (the simulation's response in quantile classes, Dirichlet label skew,
    PCA warm start): the class codes stay unscaled on the Flower server, the cross-entropy and
    the supervised-contrastive term train the same weights as in process."""
    import pandas as pd

    project = make_project(tmp_path / "p")
    params = _merge(
        SMALL,
        {
            "task": "classification",
            "partitioning": {"scheme": "dirichlet", "dirichlet": {"alpha": 0.5}},
            "training": {"warm_start": {"kind": "pca", "pca_iterations": 5}},
        },
    )
    inproc, h_in, sim, h_sim = _inprocess_then_simulation(project, params)
    assert inproc["state_dict"]["head_linear.weight"].shape[0] == 3
    cols = ["round", "client", "val_mse", "loss_ce"]
    pd.testing.assert_frame_equal(h_in[cols], h_sim[cols])
    assert (h_in.loc[h_in["round"] > 0, "loss_ce"] > 0).all()


ALLOWED_SECURE_REPLY = {"masked", "secagg", "info"}


def _audited(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_only_sums_reached_the_server(audit: list[dict]) -> None:
    """Every reply the ServerApp received is a key, a masked answer or an unmask reveal; the
    only plain values are the client id and the row counts."""
    assert audit
    for rec in audit:
        names = set(rec["arrays"]) | set(rec["configs"]) | set(rec["metrics"])
        assert names <= ALLOWED_SECURE_REPLY, rec
        assert set(rec["metrics"].get("info", {})) <= {"client-id", "n-train", "n-val"}, rec
    kinds = {(r["kind"], "masked" in r["arrays"]) for r in audit}
    assert {("train", True), ("evaluate", True), ("query", True)} <= kinds


@pytest.mark.slow
def test_secure_aggregation_on_flower_matches_inprocess_and_sends_only_masked_answers(
    tmp_path, monkeypatch
):
    """Pairwise-masked sums for the scaler statistics, the PLS warm start's answers, each
    round's model and the validation error: the ServerApp sees masked vectors only, and the
    unmasked sums are the in-process engine's fixed-point sums exactly (same weights)."""
    project = make_project(tmp_path / "p")
    params = _merge(
        SMALL,
        {
            "training": {
                "privacy": {"secure_aggregation": True},
                "federation": {"client_fraction": 1.0},
            }
        },
    )
    run_session(project, ["ingestion", "partitioning", "training"], params)
    inproc = _bundle(project)
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("FDRMFL_AUDIT_REPLIES", str(audit))
    run_session(
        project, ["training"], _merge(params, {"training": {"engine": "flower-simulation"}})
    )
    sim = _bundle(project)
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], sim["state_dict"][k]), k
    assert json.loads(sim["meta"])["secure_aggregation"] is True
    _assert_only_sums_reached_the_server(_audited(audit))


@pytest.mark.slow
def test_secure_aggregation_on_a_real_deployment_tolerates_a_killed_supernode(
    tmp_path, monkeypatch
):
    """SuperLink + 3 SuperNodes with secure aggregation; SuperNode 2 is killed after round 1.
    Round 2 sums the two survivors' masked answers exactly (the same weights as the
    in-process engine with client 2 leaving after round 1), and the ServerApp never received
    a plain per-client value."""
    project = make_project(tmp_path / "p", flower_app=True)
    params = (
        DEPLOY_PARAMS.replace("warm_start.kind=pls", "warm_start.kind=none")
        + ",training.federation.min_clients=2,training.privacy.secure_aggregation=true"
    )
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("FDRMFL_AUDIT_REPLIES", str(audit))
    proc = _deploy(project, 3, ["--round-timeout", "30", "--kill-client", "2:1"], params=params)
    assert proc.returncode == 0, proc.stderr[-4000:]
    deployed = _bundle(project)
    _assert_only_sums_reached_the_server(_audited(audit))
    import pandas as pd

    history = pd.read_parquet(
        sorted((project / "data/07_model_output/training_history.parquet").glob("*/*"))[-1]
    )
    part = {(r.round, r.client): r.participated for r in history.itertuples()}
    assert part[(1, 2)] and not part[(2, 2)] and part[(2, 0)] and part[(2, 1)]
    # the same job in process: client 2 leaves after round 1
    import yaml

    nested: dict = {}
    for item in params.split(","):
        key, value = item.split("=")
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    nested["partitioning"] = {"n_clients": 3}
    nested["training"]["federation"]["availability"] = {"schedule": {2: {"join": 1, "leave": 1}}}
    monkeypatch.delenv("FDRMFL_AUDIT_REPLIES")
    run_session(project, ["training"], nested)
    inproc = _bundle(project)
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], deployed["state_dict"][k]), k
    _no_flower_processes_left(str(Path(json_meta(deployed)["run_dir"])))
