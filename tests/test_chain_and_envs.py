"""The whole chain, every paper environment in quick size, the report and the notebook."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from .conftest import PROJECT_ROOT, SHARED_CORN, latest, make_project, run_session

ENVS = sorted(
    p.name
    for p in (PROJECT_ROOT / "conf").iterdir()
    if p.name.startswith(("paper_", "tecator_standard_"))
)
QUICK = {
    "ingestion": {"synthetic": {"n_train": 150, "n_test": 45}},
    "training": {"rounds": 1, "local_epochs": 1, "hidden_dim": 8, "latent_dim": 3},
    "baselines": {"vae_epochs": 2},
}


def test_there_is_an_environment_per_paper_protocol():
    expected = {f"paper_sim_{f}" for f in ("f1", "f2", "f3")}
    expected |= {f"paper_tecator_{t}" for t in ("protein", "moisture", "fat")}
    expected |= {f"paper_corn_{t}" for t in ("moisture", "oil", "protein", "starch")}
    expected |= {
        "paper_sim_f1_dirichlet",
        "paper_sim_f1_target_shift",
        "paper_sim_f1_missing_modality",
    }
    assert expected <= set(ENVS)


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS)
def test_paper_environment_runs_end_to_end_quick(tmp_path, env):
    params = dict(QUICK)
    if "corn" in env:
        if not (SHARED_CORN / "corn_m5.csv").exists():
            pytest.skip(f"corn data not found at {SHARED_CORN} (it is never committed)")
        params = {**params, "paths": {"corn_dir": str(SHARED_CORN)}}
    project = make_project(tmp_path / "p")
    run_session(project, None, params, env=env)
    metrics = pd.read_parquet(latest(project, "data/08_reporting/evaluation_metrics.parquet"))
    assert set(metrics["experiment"]) == {env}
    test = metrics[(metrics["split"] == "test") & (metrics["scope"] == "client")]
    assert {"fdrmfl", "pca90", "pls", "mean"} <= set(test["method"])
    assert test["mse"].notna().all()
    assert sorted(test["client"].unique()) == [0, 1, 2]
    assert (project / "data/08_reporting/report.html").exists()


def test_default_chain_report_and_notebook(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    project = make_project(tmp_path / "p")
    run_session(project, None, QUICK, env=None)
    report = (project / "data/08_reporting/report.html").read_text()
    assert report.count("data:image/png;base64,") == 4
    assert "class='best'" in report and "Parameters" in report
    for fig in ("loss_curves", "pred_vs_actual", "metric_bars", "z_projection", "client_targets"):
        assert (project / f"data/08_reporting/{fig}.png").stat().st_size > 5000
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
    with KedroSession.create(project_path=project, env="paper_tecator_fat") as s:
        params = s.load_context().params
    assert params["training"].lambda_mi == 0.123  # from base, not replaced by the environment
    assert params["training"].rounds == 15 and params["ingestion"].source == "tecator"


def test_every_experiment_has_a_named_tuning_job_that_validates(tmp_path):
    """run_configs/tune_<env>.yml for every environment; its study tunes a non-empty subset of
    the shared search space, and the environment's own values are its first trial."""
    import sys

    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    from tune_experiments import job

    from fdrmfl_pipeline.pipelines.tuning.nodes import search_entries, start_point

    project = make_project(tmp_path / "p")
    bootstrap_project(project)
    for env in ENVS:
        name, pipelines, runtime = job(env)
        assert name == env and pipelines == ["ingestion", "partitioning", "tuning"]
        assert runtime["tuning"]["study_name"] == f"tune_{env}"
        with KedroSession.create(project_path=project, env=env, runtime_params=runtime) as s:
            params = s.load_context().params
        tuning, training = params["tuning"], params["training"]
        names = [e.name for e in search_entries(tuning)]
        assert names and "latent_dim" not in names, env
        assert set(start_point(tuning, training)) == set(names), env
        # the downstream regressors and the baselines share one fitting protocol per table
        assert params["regression"].refit_on_val == params["baselines"].refit_on_val, env


def test_benchmark_baseline_overrides_keep_the_environments_refit(tmp_path):
    """paper_tables passes its own baselines lists at run time; the standard-split environments'
    refit on train + val (the anchor's 172 training samples) must survive that merge."""
    import sys

    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    from paper_tables import baselines_for

    project = make_project(tmp_path / "p")
    bootstrap_project(project)
    runtime = {"baselines": baselines_for("tecator_standard_fat", quick=True)}
    with KedroSession.create(
        project_path=project, env="tecator_standard_fat", runtime_params=runtime
    ) as s:
        params = s.load_context().params
    assert params["baselines"].refit_on_val and params["regression"].refit_on_val
    assert params["baselines"].pooled_regressors == ["pls", "ridge"]


@pytest.mark.parametrize(
    ("job", "variant_name"),
    [
        ("tecator_standard_fat_pca_gp.yml", "pca-gp-evidence"),
        ("tecator_standard_fat_anchored.yml", "fdrmfl-pca-anchored"),
    ],
)
def test_the_named_standard_fat_jobs_match_their_benchmark_variants(tmp_path, job, variant_name):
    """run_configs/tecator_standard_fat_{pca_gp,anchored}.yml: valid parameters, and the same
    settings as paper_tables' variant (the table's numbers are these jobs')."""
    import sys

    import yaml

    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    from paper_tables import VARIANTS

    run = yaml.safe_load((PROJECT_ROOT / "run_configs" / job).read_text())
    runtime: dict = {}
    for item in run["run"]["params"].split(","):
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = runtime
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    variant = dict(VARIANTS[variant_name])
    regression = variant.pop("regression")
    assert runtime["training"] == variant
    assert runtime["regression"] == {**regression, "method": variant_name}
    project = make_project(tmp_path / "p")
    bootstrap_project(project)
    env = run["run"]["env"]
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime) as s:
        params = s.load_context().params
    assert params["training"].warm_start == "pca"
    if variant_name == "pca-gp-evidence":
        assert params["training"].rounds == 0
    else:  # trained (the environment's 400 rounds, early stopping), anchored to the start
        assert params["training"].rounds > 0 and params["training"].anchor_mu == 10.0
    assert params["regression"].gp_fed_inputs == "evidence"
    assert "gp_fed" in params["regression"].regressors
