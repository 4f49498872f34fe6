"""The experiment tables' choices: made on validation rows only."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from ..conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "experiments"))
import registry  # noqa: E402
import tables as pt  # noqa: E402


def _rows(method: str, val: float, test: float, regressor: str = "head") -> pd.DataFrame:
    rows = []
    for seed in range(2):
        for client in range(3):
            for split, mse in (("val", val), ("test", test)):
                rows.append(
                    {
                        "experiment": "paper_tecator_fat",
                        "method": method,
                        "regressor": regressor,
                        "client": client,
                        "split": split,
                        "scope": "client",
                        "seed": seed,
                        "mse": mse,
                        "rmse": mse**0.5,
                        "r2": 0.9,
                    }
                )
    return pd.DataFrame(rows)


def test_headline_takes_the_fdrmfl_settings_with_the_lower_validation_mse():
    rows = pd.concat(
        [
            _rows("fdrmfl", val=0.5, test=0.4),  # better on test, worse on validation
            _rows("fdrmfl-tuned", val=0.3, test=0.9),
            _rows("raw_pooled", val=0.2, test=0.2, regressor="pls_pooled"),
        ]
    )
    head = pt.headline(pt.summarise(rows)).iloc[0]
    assert head["settings (val)"] == "tuned"
    assert head["FDRMFL"].startswith("0.9")
    assert head["met"] == "yes"  # 0.9 <= 1.71
    assert head["FDRMFL met"] == "yes"
    assert head["federated pick (val)"] == "same"
    assert head["pooled anchor, same splits"].startswith("0.2")


def test_headline_can_take_the_pca_warm_started_settings_and_a_warm_start_alone_on_validation():
    rows = pd.concat(
        [
            _rows("fdrmfl", val=0.5, test=0.4),
            _rows("fdrmfl-tuned", val=0.3, test=0.9),
            _rows("fdrmfl-pca", val=0.25, test=2.0),
            _rows("pca-warm-start-only", val=0.1, test=0.1),  # no FDRMFL rounds
            _rows("raw_pooled", val=0.01, test=0.01, regressor="pls_pooled"),  # not federated
        ]
    )
    head = pt.headline(pt.summarise(rows)).iloc[0]
    assert head["settings (val)"] == "hand-set, PCA warm start"
    assert head["FDRMFL"].startswith("2")
    assert head["FDRMFL met"] == "no"  # 2.0 > 1.71
    # the federated pick may take a warm start alone, never the pooled anchor; 'met' judges it
    assert head["federated pick (val)"].startswith("0.1 ± 0: pca-warm-start-only, head")
    assert head["met"] == "yes"


def test_tuned_variant_only_runs_where_a_study_was_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "TUNED", tmp_path)
    assert "fdrmfl-tuned" not in pt.variants_for("paper_corn_oil", pt.DEFAULT_VARIANTS, False)
    study = tmp_path / "paper_corn_oil.yml"
    study.write_text("study: {best_trial: 4}\ntraining: {optimizer: {lr: 0.001}}\n")
    assert "fdrmfl-tuned" in pt.variants_for("paper_corn_oil", pt.DEFAULT_VARIANTS, False)
    assert pt.tuned_overrides("paper_corn_oil") == {"optimizer": {"lr": 0.001}}
    env, params = registry.run_params("paper_corn_oil", "fdrmfl-tuned")
    assert env == "paper_corn" and params["training"] == {"optimizer": {"lr": 0.001}}
    # best trial 0 is the environment's own values: training again would repeat 'fdrmfl'
    study.write_text("study: {best_trial: 0}\ntraining: {optimizer: {lr: 0.001}}\n")
    assert "fdrmfl-tuned" not in pt.variants_for("paper_corn_oil", pt.DEFAULT_VARIANTS, False)


def test_a_failed_variant_is_counted_and_named_not_paired():
    import numpy as np
    import strategies as st

    rows = []
    for seed in range(100, 105):
        for variant, mse in (("fedavg", 1.0 + seed % 3 * 0.1), ("fdrmfl", 0.9 + seed % 3 * 0.1)):
            failed = variant == "fdrmfl" and seed == 104
            rows.append(
                {
                    "data": "tecator_fat",
                    "regime": "iid",
                    "seed": seed,
                    "variant": variant,
                    "regressor": "" if failed else "head",
                    "val_mse": np.nan if failed else mse,
                    "test_mse": np.nan if failed else mse,
                    "test_r2": np.nan if failed else 0.5,
                    "test_client_mse": np.nan if failed else mse,
                    "seconds": 1.0,
                    "error": "NonFiniteModelError: round 3 diverged" if failed else "",
                }
            )
    rows = pd.DataFrame(rows)
    summary = st.summarise(rows)
    fd = summary[summary["variant"] == "fdrmfl"].iloc[0]
    assert fd["seeds"] == 4 and fd["failed"] == 1
    assert fd["vs_fedavg_n"] == 4  # paired on the seeds where both ran
    assert fd["vs_fedavg_diff"] == pytest.approx(-0.1)
    text = st.to_markdown(summary, rows, [])
    assert "| fdrmfl | 4 (+1 failed) |" in text
    assert "- fdrmfl, seed 104: failed (NonFiniteModelError: round 3 diverged)." in text
