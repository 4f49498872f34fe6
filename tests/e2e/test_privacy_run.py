"""A differentially private run end to end on the default data: the report states (epsilon,
delta), the model stores it, and a run over its budget stops before training."""

from __future__ import annotations

import json

import pytest
import torch

from fdrmfl_pipeline.errors import ConfigError, PrivacyBudgetError

from ..conftest import latest, merge, run_session

DP = {
    "ingestion": {"synthetic": {"n_train": 300, "n_test": 60}},
    "training": {
        "privacy": {"mode": "central", "target_epsilon": 4.0},
        "warm_start": {"kind": "none"},
        "data": {"scaling": "local"},
        "federation": {"rounds": 3, "early_stopping": {"enabled": False}},
        "optimizer": {"local_epochs": 1},
    },
    "baselines": {"extractors": ["pls"]},
}


def test_private_default_run_states_its_epsilon_in_model_and_report(tmp_project):
    run_session(tmp_project, None, DP)
    bundle = torch.load(latest(tmp_project, "data/06_models/global_model.pt"), weights_only=True)
    privacy = json.loads(bundle["meta"])["privacy"]
    assert privacy["epsilon"] <= 4.0 + 1e-6 and privacy["delta"] == 1e-5
    report = latest(tmp_project, "data/08_reporting/report.html").read_text()
    assert "client-level differential privacy, (ε = 4" in report


def test_a_run_over_its_privacy_budget_stops_before_training(tmp_project):
    over = merge(
        DP,
        {
            "training": {
                "privacy": {"target_epsilon": None, "noise_multiplier": 0.3, "max_epsilon": 1.0}
            }
        },
    )
    with pytest.raises(PrivacyBudgetError, match="over the budget max_epsilon = 1"):
        run_session(tmp_project, ["ingestion", "partitioning", "training"], over)
    assert not (tmp_project / "data/06_models/global_model.pt").exists()


def test_a_warm_start_under_privacy_is_refused_with_the_fix(tmp_project):
    leaky = merge(DP, {"training": {"warm_start": {"kind": "pls"}}})
    with pytest.raises(ConfigError, match="warm_start.kind 'pls' sends each client"):
        run_session(tmp_project, ["ingestion", "partitioning", "training"], leaky)


def test_local_dp_run_states_its_per_client_epsilon(tmp_project):
    """Local DP: the clients noise their own changes; the model and the report state the
    per-client epsilon and the mechanism."""
    local = merge(DP, {"training": {"privacy": {"mode": "local", "target_epsilon": 8.0}}})
    run_session(tmp_project, None, local)
    bundle = torch.load(latest(tmp_project, "data/06_models/global_model.pt"), weights_only=True)
    privacy = json.loads(bundle["meta"])["privacy"]
    assert privacy["mode"] == "local" and privacy["epsilon"] <= 8.0 + 1e-6
    report = latest(tmp_project, "data/08_reporting/report.html").read_text()
    assert "local differential privacy on the client level, (ε = 8" in report
