"""The training pipeline in Kedro sessions: outputs, safe model bundle, determinism, bad params."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fdrmfl_pipeline.core.bundle import load_model
from fdrmfl_pipeline.datasets import TorchModelDataset
from fdrmfl_pipeline.errors import ConfigError

from ..conftest import latest, make_project, run_session
from ..conftest import merge as _merge

TRAIN_CHAIN = ("ingestion", "partitioning", "training")
SMALL = {
    "ingestion": {"synthetic": {"n_train": 150, "n_test": 45}},
    "training": {
        "federation": {"rounds": 2},
        "optimizer": {"local_epochs": 1},
        "model": {"latent_dim": 4, "hidden_dim": 16},
    },
}


def test_training_pipeline_outputs_and_determinism(tmp_path):
    p1, p2 = make_project(tmp_path / "a"), make_project(tmp_path / "b")
    run_session(p1, TRAIN_CHAIN, SMALL)
    run_session(p2, TRAIN_CHAIN, SMALL)
    history = pd.read_parquet(latest(p1, "data/07_model_output/training_history.parquet"))
    # (round, client); round 0 is the validated warm start (the default federated PLS)
    assert len(history) == 3 * 3
    assert list(history["round"].unique()) == [0, 1, 2]
    r0 = history[history["round"] == 0]
    assert not r0["participated"].any() and r0["val_mse"].notna().all()
    for col in (
        "round",
        "client",
        "train_loss",
        "loss_mse",
        "loss_mi",
        "loss_skl",
        "loss_con",
        "val_mse",
        "n_samples",
        "seconds",
    ):
        assert col in history.columns
    feats = pd.read_parquet(latest(p1, "data/04_feature/extracted_features.parquet"))
    assert len(feats) == 195 and feats["sample_id"].is_unique
    assert [c for c in feats.columns if c.startswith("z_")] == ["z_0", "z_1", "z_2", "z_3"]
    assert set(feats["split"]) == {"train", "val", "test"}
    # the bundle is weights + JSON only: it loads with weights_only=True and rebuilds the model
    bundle = torch.load(latest(p1, "data/06_models/global_model.pt"), weights_only=True)
    model, scalers = load_model(bundle)
    assert model.config.latent_dim == 4 and sorted(scalers) == [0, 1, 2]
    assert (p1 / "data/06_models/checkpoints/fdrmfl.pt").exists()
    # same seed -> bit-identical model and identical metrics
    b2 = TorchModelDataset(str(latest(p2, "data/06_models/global_model.pt"))).load()
    assert all(
        torch.equal(bundle["state_dict"][k], b2["state_dict"][k]) for k in bundle["state_dict"]
    )
    h2 = pd.read_parquet(latest(p2, "data/07_model_output/training_history.parquet"))
    pd.testing.assert_frame_equal(history.drop(columns="seconds"), h2.drop(columns="seconds"))


def test_resume_after_a_completed_run_changes_nothing(tmp_path):
    p = make_project(tmp_path / "a")
    run_session(p, TRAIN_CHAIN, SMALL)
    first = torch.load(latest(p, "data/06_models/global_model.pt"), weights_only=True)
    run_session(p, ["training"], _merge(SMALL, {"training": {"resume": True}}))
    versions = sorted((p / "data/06_models/global_model.pt").glob("*/*"))
    again = torch.load(versions[-1], weights_only=True)
    assert len(versions) == 2
    assert all(
        torch.equal(first["state_dict"][k], again["state_dict"][k]) for k in first["state_dict"]
    )


@pytest.mark.parametrize(
    ("training", "needle"),
    [
        ({"strategy": "fedsgd"}, "strategy"),
        ({"model": {"latent_dim": 0}}, "latent_dim"),
        ({"federation": {"client_fraction": 1.5}}, "client_fraction"),
        ({"federation": {"client_fraction": 0.0}}, "client_fraction"),
    ],
)
def test_bad_training_parameters_fail_before_any_node(tmp_path, training, needle):
    from kedro.validation import ParameterValidationError

    p = make_project(tmp_path / "a")
    with pytest.raises(ParameterValidationError, match=needle):
        run_session(p, TRAIN_CHAIN, _merge(SMALL, {"training": training}))
    assert not (p / "data/02_intermediate/multimodal_dataset.parquet").exists()


def test_unknown_modality_fails_before_training(tmp_path):
    p = make_project(tmp_path / "a")
    bad = {"training": {"data": {"modalities": ["image", "audio"]}}}
    with pytest.raises(ConfigError, match=r"training\.data\.modalities.*'audio'"):
        run_session(p, TRAIN_CHAIN, _merge(SMALL, bad))
    assert not (p / "data/06_models/checkpoints/fdrmfl.pt").exists()


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"trainng": {"rounds": 3}}, r"'trainng' \(did you mean 'training'\?\)"),
        ({"seeed": 7}, r"'seeed' \(did you mean 'seed'\?\)"),
        ({"training": {"federation": {"round": 3}}}, r"'training.federation.round' \(did you"),
        ({"training": {"lr": 0.1}}, r"'training.lr'"),  # the old flat layout is rejected
    ],
)
def test_unknown_parameter_keys_fail_before_any_node(tmp_path, params, needle):
    p = make_project(tmp_path / "a")
    with pytest.raises(ConfigError, match=needle):
        run_session(p, TRAIN_CHAIN, _merge(SMALL, params))
    assert not (p / "data/02_intermediate/multimodal_dataset.parquet").exists()
