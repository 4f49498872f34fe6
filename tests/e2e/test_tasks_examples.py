"""The classification and anomaly examples end to end (``kedro run --env example_classification``
and ``--env example_anomaly``), the committed tables, and the refusals of a task the data
cannot serve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fdrmfl_pipeline.examples import make_breast_cancer_table, make_sensors_table

from ..conftest import PROJECT_ROOT, latest, run_session

RAW = PROJECT_ROOT / "data" / "01_raw"


def _read(project, rel):
    return pd.read_parquet(latest(project, rel))


def test_the_committed_example_tables_are_what_the_generators_write():
    committed = pd.read_csv(RAW / "example_classification" / "breast_cancer.csv")
    fresh = make_breast_cancer_table()
    assert list(committed.columns) == list(fresh.columns) and committed.shape == (569, 32)
    num = fresh.select_dtypes("number").columns
    np.testing.assert_allclose(committed[num].to_numpy(), fresh[num].to_numpy(), rtol=1e-12)
    assert (committed["diagnosis"] == fresh["diagnosis"]).all()
    sensors = pd.read_csv(RAW / "example_anomaly" / "sensors.csv")
    fresh = make_sensors_table()
    assert list(sensors.columns) == list(fresh.columns)
    num = fresh.select_dtypes("number").columns
    np.testing.assert_allclose(sensors[num].to_numpy(), fresh[num].to_numpy(), atol=1e-9)
    # each plant has its own kind of fault, in a few percent of its hours
    kinds = sensors[sensors["fault"] == 1].groupby("plant")["fault_kind"].unique()
    assert all(len(k) == 1 for k in kinds) and len({k[0] for k in kinds}) == 4
    assert 0.03 < sensors["fault"].mean() < 0.1


def test_classification_example_end_to_end(tmp_project):
    run_session(
        tmp_project,
        env="example_classification",
        params={"training": {"federation": {"rounds": 3}}},
    )
    data = _read(tmp_project, "data/02_intermediate/multimodal_dataset.parquet")
    assert sorted(data["target"].unique()) == [0.0, 1.0]
    preds = _read(tmp_project, "data/07_model_output/predictions.parquet")
    np.testing.assert_allclose(preds[["p0", "p1"]].sum(axis=1), 1.0, atol=1e-9)
    assert set(preds["regressor"]) == {"logistic", "rf", "head"}
    choice = _read(tmp_project, "data/08_reporting/regressor_choice.parquet").set_index("method")
    assert choice.loc["fdrmfl", "reason"] == "lowest validation log-loss"
    m = _read(tmp_project, "data/08_reporting/evaluation_metrics.parquet")
    assert {"accuracy", "macro_f1", "roc_auc", "log_loss", "ece"} <= set(m.columns)
    test = m[(m["split"] == "test") & (m["scope"] == "pooled")].set_index(["method", "regressor"])
    ours = test.loc[("fdrmfl", choice.loc["fdrmfl", "regressor"])]
    prior = test.loc[("client_prior", "prior")]
    # the diagnosis is learnable from the nuclei: far above each clinic's own class shares
    assert ours["accuracy"] > prior["accuracy"] + 0.2 and ours["roc_auc"] > 0.9
    assert ("raw_pooled", "logistic_pooled") in test.index  # the pooled anchor
    report = sorted((tmp_project / "data/08_reporting/report.html").glob("*/*"))[-1].read_text()
    assert "Confusion matrix and ROC" in report and "macro-F1" in report


def test_anomaly_example_end_to_end(tmp_project):
    run_session(
        tmp_project, env="example_anomaly", params={"training": {"federation": {"rounds": 2}}}
    )
    scores = _read(tmp_project, "data/08_reporting/anomaly_scores.parquet")
    assert {"fdrmfl", "isolation_forest"} == set(scores["method"])
    ours = scores[scores["method"] == "fdrmfl"]
    np.testing.assert_allclose(ours["combined"], ours["density"] + ours["residual"])
    np.testing.assert_allclose(ours["score"], ours["combined"])  # evaluation.anomaly_score
    m = _read(tmp_project, "data/08_reporting/anomaly_metrics.parquet")
    pooled = m[(m["scope"] == "pooled") & (m["split"] == "test")].set_index(["method", "score"])
    # labelled faults stand out, and far better than a random score (PR-AUC = their share)
    assert pooled.loc[("fdrmfl", "combined"), "roc_auc"] > 0.8
    assert (
        pooled.loc[("fdrmfl", "combined"), "pr_auc"]
        > 3 * pooled.loc[("fdrmfl", "combined"), "anomaly_share"]
    )
    report = sorted((tmp_project / "data/08_reporting/report.html").glob("*/*"))[-1].read_text()
    assert "Anomaly scores on the test split" in report
    # the labels never became an input
    data = _read(tmp_project, "data/02_intermediate/multimodal_dataset.parquet")
    assert "fault" not in data.columns and "anomaly" in data.columns


@pytest.mark.parametrize(
    ("env", "params", "match"),
    [
        (
            "paper_tecator",
            {"task": "classification"},
            "task classification needs a class label; source 'tecator'",
        ),
        (
            "example_sites",
            {"task": "regression", "ingestion": {"table": {"anomaly_column": "day"}}},
            "anomaly_column is set but task is 'regression'",
        ),
        (
            "example_anomaly",
            {"ingestion": {"table": {"anomaly_column": "hour"}}},
            "anomaly column 'hour' must hold 0 or 1",
        ),
        (None, {"task": "clasification"}, "task 'clasification' is not one of"),
    ],
)
def test_a_task_the_data_cannot_serve_is_refused_by_name(tmp_project, env, params, match):
    with pytest.raises(Exception, match=match):
        run_session(tmp_project, pipelines=("ingestion",), env=env, params=params)
    assert not (tmp_project / "data/02_intermediate/multimodal_dataset.parquet").exists()
