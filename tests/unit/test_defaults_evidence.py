"""Defaults by evidence: the rule that picks each environment's strategy on validation, and the
configuration agreeing with what the committed grid says."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from ..conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "experiments"))
import defaults  # noqa: E402
import registry  # noqa: E402


def _grid(levels: dict[str, float], seeds: int = 8, noise: float = 0.02) -> pd.DataFrame:
    """Validation MSE per variant: its level times seeded seed-to-seed noise shared by every
    variant of a seed (what pairing removes) plus a little of its own."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        shared = np.exp(rng.normal(0, 0.3))
        for v, level in levels.items():
            val = level * shared * np.exp(rng.normal(0, noise))
            rows.append({"data": "d", "regime": "iid", "seed": seed, "variant": v, "val_mse": val})
    return pd.DataFrame(rows)


def test_nothing_clearly_better_keeps_fdrmfl():
    rows = _grid({"fdrmfl": 1.0, "fedavg": 1.0, "moon": 0.99}, noise=0.05)
    chosen, table = defaults.choose(rows)
    assert chosen == "fdrmfl" and not table["beats"].any()


def test_the_simplest_clear_winner_is_taken():
    # FedAvg and MOON both beat FDRMFL by about 10 %; MOON is not better than FedAvg
    rows = _grid({"fdrmfl": 1.0, "fedavg": 0.9, "moon": 0.9})
    chosen, table = defaults.choose(rows)
    assert set(table.loc[table["beats"], "variant"]) == {"fedavg", "moon"}
    assert chosen == "fedavg"


def test_a_winner_beaten_in_turn_gives_way():
    # both beat FDRMFL, and MOON beats FedAvg outside its own interval
    rows = _grid({"fdrmfl": 1.0, "fedavg": 0.9, "moon": 0.7})
    assert defaults.choose(rows)[0] == "moon"


def test_per_client_and_pooled_models_are_reported_never_chosen():
    rows = _grid({"fdrmfl": 1.0, "fedavg": 1.0, "local": 0.5, "central": 0.5})
    chosen, table = defaults.choose(rows)
    assert chosen == "fdrmfl"
    assert table.set_index("variant").loc["local", "hi"] < 0  # clearly lower, still not chosen


def test_test_rows_are_shown_and_choose_nothing():
    rows = _grid({"fdrmfl": 1.0, "fedavg": 1.0})
    rows["test_mse"] = np.where(rows["variant"] == "fedavg", 0.5, 1.0) * rows["val_mse"]
    chosen, table = defaults.choose(rows)
    assert chosen == "fdrmfl"  # FedAvg's far lower test MSE does not count
    assert table.set_index("variant").loc["fedavg", "test_hi"] < -0.4


def test_failed_runs_leave_their_pairs_out():
    rows = _grid({"fdrmfl": 1.0, "fedavg": 0.9})
    rows.loc[(rows["variant"] == "fdrmfl") & (rows["seed"] == 0), "val_mse"] = np.nan
    assert defaults.paired_log_ratio(rows, "fedavg", "fdrmfl")["n"] == 7


def _env_params(env: str, runtime: dict | None = None):
    """An environment's validated parameters (conf/base, the environment, runtime)."""
    from kedro.config import OmegaConfigLoader

    from fdrmfl_pipeline.params import ProjectParams

    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env="local" if env == "base" else env,
        merge_strategy={"parameters": "soft", "globals": "soft"},
        runtime_params=runtime or {},
    )
    return ProjectParams.model_validate(dict(loader["parameters"]))


def _env_training(env: str, runtime: dict | None = None):
    return _env_params(env, runtime).training


def _get(training, dotted: str):
    obj = training
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_each_environment_defaults_to_what_validation_chose():
    """The committed grid's choice per environment is what the configuration says; when the grid
    changes the choice, this fails until conf/ follows (and results/defaults.md is rewritten)."""
    grid = pd.read_parquet(defaults.GRID)
    result = defaults.choices(grid)
    assert set(result) == set(defaults.ENVIRONMENTS)
    for env, (chosen, _, _) in result.items():
        training = _env_training(env)
        for key, value in defaults.SETTINGS[chosen].items():
            assert _get(training, key) == value, (env, chosen, key)
        if defaults.SETTINGS[chosen]["strategy"] == "fdrmfl":  # no term off that was not chosen
            for term in ("lambda_mi", "lambda_kl", "lambda_con"):
                if f"loss.{term}" not in defaults.SETTINGS[chosen]:
                    assert getattr(training.loss, term) > 0, (env, term)
    report = (PROJECT_ROOT / "experiments/results/defaults.md").read_text()
    for env, (chosen, _, _) in result.items():
        assert f"## {env} " in report and f"**Chosen: `{chosen}`**" in report


@pytest.mark.parametrize("env", ["paper_sim", "paper_tecator"])
def test_the_registry_still_runs_the_published_method_there(env):
    """Where an environment left FDRMFL's published settings, its experiments put them back."""
    exps = [n for n, e in registry.EXPERIMENTS.items() if e.env == env]
    assert exps
    for exp in exps:
        training = _env_training(*registry.run_params(exp))
        assert training.strategy == "fdrmfl", exp
        assert training.loss.lambda_kl == 0.001, exp  # both protocols' published weight
    published = _env_training(env, registry.published(env))
    assert published.strategy == "fdrmfl" and published.loss.lambda_kl == 0.001


@pytest.mark.parametrize(
    "env", ["base", "paper_sim", "paper_tecator", "paper_corn", "example_sites"]
)
def test_each_environment_tunes_only_what_its_strategy_uses(env):
    """An environment that defaults to FedAvg must not spend its study on FDRMFL's weights."""
    from fdrmfl_pipeline.pipelines.tuning.nodes import ineffective_entries

    p = _env_params(env)
    assert ineffective_entries(p.tuning, p.training) == [], env
