"""The whole chain, every registered experiment in quick size, the report and the notebook."""

from __future__ import annotations

import os
import sys

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from ..conftest import PROJECT_ROOT, SHARED_CORN, latest, make_project, run_session

sys.path.insert(0, str(PROJECT_ROOT / "experiments"))
import registry  # noqa: E402

PROTOCOL_ENVS = ["paper_corn", "paper_sim", "paper_tecator", "tecator_standard"]
EXAMPLE_ENVS = ["example_sites", "example_classification", "example_anomaly"]  # templates
QUICK = {
    "ingestion": {"synthetic": {"n_train": 150, "n_test": 45}},
    "training": {
        "federation": {"rounds": 1},
        "optimizer": {"local_epochs": 1},
        "model": {"hidden_dim": 8, "latent_dim": 3},
    },
    "baselines": {"vae_epochs": 2},
}


def test_four_protocol_environments_and_every_experiment_uses_one():
    envs = sorted(p.name for p in (PROJECT_ROOT / "conf").iterdir() if p.is_dir())
    assert [e for e in envs if e not in ("base", "local", *EXAMPLE_ENVS)] == PROTOCOL_ENVS
    expected = {f"paper_sim_{f}" for f in ("f1", "f2", "f3")}
    expected |= {f"paper_tecator_{t}" for t in ("protein", "moisture", "fat")}
    expected |= {f"paper_corn_{t}" for t in ("moisture", "oil", "protein", "starch")}
    expected |= {f"tecator_standard_{t}" for t in ("protein", "moisture", "fat")}
    assert expected <= set(registry.EXPERIMENTS)
    assert {e.env for e in registry.EXPERIMENTS.values()} == set(PROTOCOL_ENVS)


@pytest.mark.slow
@pytest.mark.parametrize("exp", sorted(registry.EXPERIMENTS))
def test_experiment_runs_end_to_end_quick(tmp_path, exp):
    env, params = registry.run_params(exp, extra=QUICK)
    if registry.EXPERIMENTS[exp].needs_corn:
        if not (SHARED_CORN / "corn_m5.csv").exists():
            pytest.skip(f"corn data not found at {SHARED_CORN} (it is never committed)")
        params = registry.merge(params, {"paths": {"corn_dir": str(SHARED_CORN)}})
    project = make_project(tmp_path / "p")
    run_session(project, None, params, env=env)
    metrics = pd.read_parquet(latest(project, "data/08_reporting/evaluation_metrics.parquet"))
    assert set(metrics["experiment"]) == {exp}
    test = metrics[(metrics["split"] == "test") & (metrics["scope"] == "client")]
    assert {"fdrmfl", "pca90", "pls", "client_mean"} <= set(test["method"])
    assert test["mse"].notna().all()
    assert sorted(test["client"].unique()) == [0, 1, 2]
    assert latest(project, "data/08_reporting/report.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "strategy"), [("paper_sim", "fedavg"), ("paper_tecator", "fdrmfl")]
)
def test_protocol_environment_runs_its_own_default_strategy(tmp_path, env, strategy):
    """`kedro run --env <protocol>` trains the strategy its environment defaults to (chosen on
    validation, experiments/defaults.py), labelled as such, through the whole chain."""
    project = make_project(tmp_path / "p")
    run_session(project, None, QUICK, env=env)
    metrics = pd.read_parquet(latest(project, "data/08_reporting/evaluation_metrics.parquet"))
    test = metrics[(metrics["split"] == "test") & (metrics["scope"] == "client")]
    assert strategy in set(test["method"]) and test["mse"].notna().all()
    assert ({"fdrmfl", "fedavg"} - {strategy}).isdisjoint(test["method"])


def test_default_chain_report_and_notebook(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    project = make_project(tmp_path / "p")
    run_session(project, None, QUICK, env=None)
    report = latest(project, "data/08_reporting/report.html").read_text()
    assert report.count("data:image/png;base64,") == 5  # the client-targets figure included
    assert "class='best'" in report and "Parameters" in report
    # the verdict: the model against the best baseline and the mean predictor, R² beside MSE
    assert "<p class='verdict'><b>fdrmfl + " in report and "client_mean" in report
    assert (
        "R² " in report and "simulation f1" in report and "not a model trained on pooled" in report
    )
    for fig in ("loss_curves", "pred_vs_actual", "metric_bars", "z_projection", "client_targets"):
        assert (project / f"data/08_reporting/{fig}.png").stat().st_size > 5000
    # the default keeps the best round on validation, the warm start (round 0) included: the
    # model a user gets is never worse on validation than its own start
    import json

    import torch

    history = pd.read_parquet(latest(project, "data/07_model_output/training_history.parquet"))
    per_round = history.groupby("round")["val_mse"].mean()
    bundle = torch.load(latest(project, "data/06_models/global_model.pt"), weights_only=True)
    best_round = json.loads(bundle["meta"])["best_round"]
    assert per_round[best_round] == per_round.min() and per_round[best_round] <= per_round[0]
    preds = pd.read_parquet(latest(project, "data/07_model_output/predictions.parquet"))
    assert list(preds.columns) == [
        "sample_id",
        "client",
        "split",
        "method",
        "regressor",
        "y_true",
        "y_pred",
    ]
    assert set(preds["split"]) == {"val", "test"} and set(preds["regressor"]) == {
        "rf",
        "ridge",
        "head",
    }

    nb = nbformat.read(PROJECT_ROOT / "notebooks/explore_results.ipynb", as_version=4)
    os.environ["FDRMFL_PROJECT_PATH"] = str(project)
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(project)}}
        ).execute()
    finally:
        os.environ.pop("FDRMFL_PROJECT_PATH")
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 4


def test_environments_override_single_parameters_and_keep_the_rest(tmp_path):
    project = make_project(tmp_path / "p")
    base = project / "conf/base/parameters_training.yml"
    base.write_text(base.read_text().replace("lambda_mi: 0.1 ", "lambda_mi: 0.123 "))
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="paper_tecator") as s:
        params = s.load_context().params
    training = params["training"]
    assert training.loss.lambda_mi == 0.123  # from base, not replaced by the environment
    assert training.loss.lambda_kl == 0.0  # from the environment (base: 0.01)
    assert training.federation.rounds == 15 and params["ingestion"].source == "tecator"


def _params(env: str, runtime: dict):
    """The validated parameter tree of an environment with runtime parameters (no Kedro run)."""
    from kedro.config import OmegaConfigLoader

    from fdrmfl_pipeline.params import ProjectParams, check_parameters

    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env="local",
        env=env,
        merge_strategy={"parameters": "soft", "globals": "soft"},
        runtime_params=runtime,
    )
    tree = dict(loader["parameters"])
    check_parameters(tree)
    return ProjectParams.model_validate(tree)


@pytest.mark.parametrize("exp", sorted(registry.EXPERIMENTS))
def test_every_experiment_and_variant_is_a_valid_configuration(exp):
    """Every registry entry and every variant on it validates against the one schema (unknown
    keys included); the label and method reach evaluation and regression."""
    for variant in registry.VARIANTS:
        env, runtime = registry.run_params(exp, variant, seed=3)
        p = _params(env, runtime)
        assert p.evaluation.experiment == exp and p.regression.method == variant
        assert p.seed == 3
        # the downstream regressors and the baselines share one fitting protocol per table
        assert p.regression.refit_on_val == p.baselines.refit_on_val, exp


def test_registry_variants_set_what_they_say():
    env, runtime = registry.run_params("tecator_standard_fat", "fdrmfl-pca-anchored")
    p = _params(env, runtime)
    assert env == "tecator_standard"
    assert p.ingestion.tecator.modalities == ["spectrum_d2"]
    assert p.training.warm_start.kind == "pca" and p.training.warm_start.components == 20
    assert p.training.experimental.anchor_mu == 10.0
    assert p.training.federation.rounds == 400  # the environment's schedule, trained
    assert p.regression.experimental.gp_fed_inputs == "evidence"
    p = _params(*registry.run_params("tecator_standard_fat", "pca-gp-evidence"))
    assert p.training.federation.rounds == 0 and p.training.experimental.anchor_mu == 0.0
    p = _params(*registry.run_params("paper_corn_starch"))
    assert p.ingestion.corn.target == "starch" and p.training.federation.rounds == 15


def test_every_experiment_has_a_tuning_job_that_validates():
    """Each experiment's tuning job: study tune_<experiment>, a non-empty subset of the shared
    search space, and the environment's own values as its first trial."""
    from fdrmfl_pipeline.pipelines.tuning.nodes import search_entries, start_point

    for exp in registry.EXPERIMENTS:
        env, pipelines, runtime = registry.tuning_params(exp)
        assert pipelines == ["ingestion", "partitioning", "tuning"]
        p = _params(env, runtime)
        assert p.tuning.study_name == f"tune_{exp}" and p.tuning.n_trials > 0
        names = [e.name for e in search_entries(p.tuning)]
        assert names and "model.latent_dim" not in names, exp
        assert set(start_point(p.tuning, p.training)) == set(names), exp


def test_table_baseline_overrides_keep_the_environments_refit():
    """The table runner passes its own baselines lists at run time; the standard-split
    environment's refit on train + val must survive that merge."""
    sys.path.insert(0, str(PROJECT_ROOT / "experiments"))
    from tables import baselines_for

    env, runtime = registry.run_params(
        "tecator_standard_fat",
        extra={"baselines": baselines_for("tecator_standard_fat", quick=True)},
    )
    p = _params(env, runtime)
    assert p.baselines.refit_on_val and p.regression.refit_on_val
    assert p.baselines.pooled_regressors == ["pls", "ridge"]
