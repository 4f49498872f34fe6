"""The Flower engine: same code, same numbers (simulation), and faults."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")

from kedro.framework.session import KedroSession  # noqa: E402
from kedro.framework.startup import bootstrap_project  # noqa: E402

from .conftest import PROJECT_ROOT  # noqa: E402

pytestmark = pytest.mark.flower

SMALL = {
    "ingestion": {"synthetic": {"n_train": 150, "n_test": 45}},
    "training": {
        "rounds": 2,
        "local_epochs": 1,
        "latent_dim": 4,
        "hidden_dim": 16,
        "client_fraction": 0.7,
    },
}


def _project(root: Path) -> Path:
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf/local").mkdir()
    (root / "src").mkdir()
    return root


def _run(project: Path, params: dict, pipelines):
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as s:
        s.run(pipeline_names=list(pipelines))


def _bundle(project: Path) -> dict:
    return torch.load(
        sorted((project / "data/06_models/global_model.pt").glob("*/*"))[-1], weights_only=True
    )


def test_flower_simulation_is_bit_identical_to_inprocess(tmp_path):
    import pandas as pd

    project = _project(tmp_path / "p")
    _run(project, SMALL, ["ingestion", "partitioning", "training"])
    inproc = _bundle(project)
    h_in = pd.read_parquet(
        sorted((project / "data/07_model_output/training_history.parquet").glob("*/*"))[-1]
    )
    flower = {**SMALL, "training": {**SMALL["training"], "engine": "flower-simulation"}}
    _run(project, flower, ["training"])
    sim = _bundle(project)
    h_sim = pd.read_parquet(
        sorted((project / "data/07_model_output/training_history.parquet").glob("*/*"))[-1]
    )
    assert sim["meta"] != inproc["meta"]  # really another engine
    assert inproc["state_dict"].keys() == sim["state_dict"].keys()
    for k in inproc["state_dict"]:
        assert torch.equal(inproc["state_dict"][k], sim["state_dict"][k]), k
    cols = ["round", "client", "participated", "train_loss", "loss_mse", "loss_con", "val_mse"]
    pd.testing.assert_frame_equal(h_in[cols], h_sim[cols])
    assert inproc["scalers"] == sim["scalers"]


def test_simulated_client_failure_is_logged_and_the_round_completes(tmp_path, monkeypatch, caplog):
    """A client that dies in round 2: the round completes with the others (min_clients=2)."""
    from fdrmfl_pipeline.core.client import LocalTrainConfig
    from fdrmfl_pipeline.core.engine import FederationConfig
    from fdrmfl_pipeline.core.modalities import to_arrow
    from fdrmfl_pipeline.flower.simulation import simulate_training

    from .tiny import tiny_clients

    data, assign, _, _, config = tiny_clients()
    monkeypatch.setenv("FDRMFL_FAIL_CLIENT", "1:2")
    cfg = LocalTrainConfig(local_epochs=1, batch_size=16)
    fed = FederationConfig(rounds=3, seed=0, min_clients=2)
    with caplog.at_level(logging.ERROR):
        result, _ = simulate_training(
            to_arrow(data),
            assign,
            config,
            cfg,
            fed,
            data.modality_names,
            "federated",
            tmp_path / "s",
        )
    assert result.rounds_run == 3
    part = {(r["round"], r["client"]): r["participated"] for r in result.history}
    assert part[(1, 1)] and not part[(2, 1)] and not part[(3, 1)] and part[(3, 0)]
    assert "client 1 did not answer" in caplog.text
