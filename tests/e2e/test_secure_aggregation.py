"""Secure aggregation end to end in one process: the run completes with the default warm
start and federated scaler, the server-side values are the clients' sums (the history holds
one mean per round, never a client's own), and settings it cannot protect are refused."""

from __future__ import annotations

import pandas as pd
import pytest

from fdrmfl_pipeline.errors import ConfigError

from ..conftest import latest, merge, run_session

SMALL = {
    "ingestion": {"synthetic": {"n_train": 300, "n_test": 60}},
    "training": {"federation": {"rounds": 2}, "optimizer": {"local_epochs": 1}},
    "baselines": {"extractors": ["pls"]},
}
SECURE = merge(SMALL, {"training": {"privacy": {"secure_aggregation": True}}})
PIPES = ["ingestion", "partitioning", "training"]
REPORT = [
    "ingestion",
    "partitioning",
    "baselines",
    "training",
    "regression",
    "evaluation",
    "reporting",
]


def _history(project) -> pd.DataFrame:
    return pd.read_parquet(latest(project, "data/07_model_output/training_history.parquet"))


def test_a_secure_run_matches_the_plain_run_up_to_fixed_point_rounding(tmp_project):
    run_session(tmp_project, PIPES, SMALL)
    plain = _history(tmp_project)
    run_session(tmp_project, REPORT, SECURE)
    secure = _history(tmp_project)
    report = latest(tmp_project, "data/08_reporting/report.html").read_text()
    assert "with secure aggregation (pairwise masking) the server received only sums" in report
    # the server sees one validation error per round: the mean over clients
    for _, g in secure.groupby("round"):
        assert g["val_mse"].nunique() == 1
    mean_plain = plain.groupby("round")["val_mse"].mean()
    mean_secure = secure.groupby("round")["val_mse"].mean()
    assert list(mean_plain.index) == list(mean_secure.index)
    # the same warm start and scaler (sums exact to 2**-40) and the same training
    assert mean_secure.iloc[0] == pytest.approx(mean_plain.iloc[0], rel=1e-6)
    assert mean_secure.to_numpy() == pytest.approx(mean_plain.to_numpy(), rel=1e-3)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"data": {"scaling": "local"}}, "scaling 'local'"),
        ({"strategy": "local"}, "strategy 'local'"),
    ],
)
def test_settings_secure_aggregation_cannot_protect_are_refused(tmp_project, change, named):
    with pytest.raises(ConfigError, match=f"secure_aggregation cannot protect.*{named}"):
        run_session(tmp_project, PIPES, merge(SECURE, {"training": change}))
