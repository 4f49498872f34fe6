"""Do FDRMFL's constraint terms earn their place? Strategies and ablations from the same warm
start, same budget, across heterogeneity regimes, with intervals paired by seed.

    .venv/bin/python experiments/strategies.py                         # the whole grid, resumable
    .venv/bin/python experiments/strategies.py --regimes iid dirichlet_0.1 --seeds 5 --jobs 2
    .venv/bin/python experiments/strategies.py --from-partial          # tables + figures only
    .venv/bin/python experiments/strategies.py --tuned --data sim_f1_defaults sites \
        --regimes iid dirichlet_0.1 target_shift natural               # equal tuning budget

``--tuned``: every variant first gets its own Optuna study with the same number of trials
(``--trials``, default 12) on one tuning seed (``TUNE_SEED``, not an evaluation seed), over the
shared optimiser settings plus the variant's own weights (``TUNED``), validation rows only; trial
0 is the untuned setting, so a study never ends worse on validation than no tuning. Then every
variant runs on the evaluation seeds with its tuned values. Studies are kept in
``results/strategies_tuning.parquet`` and cells in ``results/strategies_tuned.parquet``; both
resume. Writes ``results/strategies_tuned.md`` and ``results/strategies_tuned_<data>.png``.

Cell = (data, regime, seed): the data and partition are made once, then every variant trains
from the same warm start with the same rounds, local epochs, optimiser and early stopping (the
same settings per data set; only the strategy or one loss weight differs), and is scored by the regressor
the project's rule picks on validation (ridge on Z or the model's head). Test rows choose
nothing. Finished cells are kept in ``results/strategies.parquet``; a rerun skips them. Writes
``results/strategies.md`` and ``results/strategies_<data>.png``.

Seeds 100+ are used: no choice anywhere in the project was made on them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from registry import VARIANTS, latest, merge, project_copy, published  # noqa: E402

RESULTS = HERE / "results"
STORE = RESULTS / "strategies.parquet"
logger = logging.getLogger("experiments.strategies")
FIRST_SEED = 100

# the corn spectra are never committed: read from beside the repository or FDRMFL_CORN_DIR
CORN_DIR = Path(os.environ.get("FDRMFL_CORN_DIR", HERE.parent.parent / "shared/datasets/corn"))

# data: (environment or None for conf/base, parameters)
DATA = {
    # the project defaults (PLS warm start, 5 rounds x 3 epochs at lr 1e-3)
    "sim_f1_defaults": (None, {"ingestion": {"source": "synthetic"}}),
    # the simulation protocol's settings (lasso warm start, up to 30 rounds at lr 2e-4), where
    # training rounds improve on the warm start
    "sim_f1_paper": ("paper_sim", published("paper_sim")),
    "sites": ("example_sites", {}),
    # the second simulation function under the project defaults
    "sim_f2_defaults": (
        None,
        {"ingestion": {"source": "synthetic", "synthetic": {"function": "f2"}}},
    ),
    # Tecator fat, the paper protocol's settings (spectrum, its derivatives and the lab values)
    "tecator_fat": ("paper_tecator", published("paper_tecator")),
    # corn oil, the paper protocol's settings (the m5 spectrum and the other properties)
    "corn_oil": (
        "paper_corn",
        {"ingestion": {"corn": {"target": "oil"}}, "paths": {"corn_dir": str(CORN_DIR)}},
    ),
}
# heterogeneity regimes: partitioning (and, for few samples, ingestion) overrides
REGIMES = {
    "iid": {"partitioning": {"scheme": "iid"}},
    "dirichlet_1": {"partitioning": {"scheme": "dirichlet", "dirichlet": {"alpha": 1.0}}},
    "dirichlet_0.3": {"partitioning": {"scheme": "dirichlet", "dirichlet": {"alpha": 0.3}}},
    "dirichlet_0.1": {"partitioning": {"scheme": "dirichlet", "dirichlet": {"alpha": 0.1}}},
    "target_shift": {"partitioning": {"scheme": "target_shift"}},
    "quantity_skew": {"partitioning": {"scheme": "quantity_skew"}},
    "covariate_shift": {"partitioning": {"scheme": "covariate_shift"}},
    "missing_one": {
        "partitioning": {
            "scheme": "missing_modality",
            "missing_modality": {"map": {0: ["image"], 1: ["text"]}},
        }
    },
    "missing_two": {
        "partitioning": {
            "scheme": "missing_modality",
            "missing_modality": {"map": {0: ["image", "text"], 2: ["text", "vector"]}},
        }
    },
    "few_samples": {
        "ingestion": {"synthetic": {"n_train": 150}},
        "partitioning": {"scheme": "iid"},
    },
    "many_clients": {"partitioning": {"scheme": "iid", "n_clients": 20}},
    "natural": {},  # the data's own clients (sites)
}
DATA_REGIMES = {
    "sim_f1_defaults": [r for r in REGIMES if r != "natural"],
    "sim_f1_paper": [r for r in REGIMES if r != "natural"],
    "sites": ["natural"],
    "sim_f2_defaults": [r for r in REGIMES if r != "natural"],
    # 215 spectra: no synthetic sample count to cut, and 20 clients would hold ~8 rows each
    "tecator_fat": [
        "iid",
        "dirichlet_0.1",
        "target_shift",
        "quantity_skew",
        "covariate_shift",
        "missing_one",
    ],
}
DATA_REGIMES["corn_oil"] = DATA_REGIMES["tecator_fat"]  # 80 samples: the same six
# regimes whose overrides depend on the data's modalities (replace the generic ones): the paper
# Tecator and corn protocols have two, the spectrum and the lab values
DATA_REGIME_OVERRIDES = {
    (d, "missing_one"): {
        "partitioning": {"scheme": "missing_modality", "missing_modality": {"map": {0: ["lab"]}}}
    }
    for d in ("tecator_fat", "corn_oil")
}


def regime_params(data: str, regime: str) -> dict:
    """The partitioning (and ingestion) overrides of ``regime`` on ``data``."""
    return DATA_REGIME_OVERRIDES.get((data, regime), REGIMES[regime])


VARIANT_NAMES = [
    "fdrmfl",
    "fedavg",
    "fedprox",
    "moon",
    "local",
    "central",
    "fdrmfl-no-mi",
    "fdrmfl-no-kl",
    "fdrmfl-no-con",
    "warm-start-only",
    "fdrmfl-mi-kernel",
]
# --tuned: the seed the studies run on (its data and partition are not an evaluation seed's), and
# each variant's search: the shared optimiser settings plus the weights the variant itself uses
TUNE_SEED = 90
SHARED_TUNED = ["optimizer.lr", "optimizer.weight_decay"]
_FDRMFL_OWN = [
    "loss.lambda_mi",
    "loss.lambda_kl",
    "loss.lambda_con",
    "loss.tau",
    "federation.retention",
]
TUNED = {
    "fdrmfl": SHARED_TUNED + _FDRMFL_OWN,
    "fedavg": SHARED_TUNED,
    "fedprox": SHARED_TUNED + ["loss.prox_mu"],
    "moon": SHARED_TUNED + ["loss.lambda_con", "loss.tau"],
    "local": SHARED_TUNED,
    "central": SHARED_TUNED,
    "fdrmfl-no-mi": SHARED_TUNED + [k for k in _FDRMFL_OWN if k != "loss.lambda_mi"],
    "fdrmfl-no-kl": SHARED_TUNED + [k for k in _FDRMFL_OWN if k != "loss.lambda_kl"],
    "fdrmfl-no-con": SHARED_TUNED
    + [k for k in _FDRMFL_OWN if k not in ("loss.lambda_con", "loss.tau")],
    "warm-start-only": [],  # nothing trains: no study
    "fdrmfl-mi-kernel": SHARED_TUNED + _FDRMFL_OWN,  # FDRMFL with the other MI estimator
}
# search entries the project's shared search space does not hold
EXTRA_SPACE = {"loss.prox_mu": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True}}
TUNING_STORE = RESULTS / "strategies_tuning.parquet"
TUNED_STORE = RESULTS / "strategies_tuned.parquet"
REFERENCE = "fedavg"  # the question: do the terms beat FedAvg from the same start?
# scored the same way everywhere: ridge on Z or the model's head, whichever validation prefers
COMMON = {"baselines": {"enabled": False}, "regression": {"regressors": ["ridge"]}}
# a cell makes its data once (PREPARE), then trains and scores every variant on it (TRAIN)
PREPARE_PIPES = ["ingestion", "partitioning", "baselines"]
TRAIN_PIPES = ["training", "regression", "evaluation"]


def _label(variant: str) -> dict:
    """The method label a variant's rows carry (so ablations do not collide with fdrmfl)."""
    return {"regression": {"method": variant}}


def run_cell(
    data: str, regime: str, seed: int, variants: list[str], tuned: dict | None = None
) -> pd.DataFrame:
    """Every variant on one (data, regime, seed): one row per variant with the chosen
    regressor's validation and test scores and the run time. ``tuned``: variant -> the
    ``training:`` values its study chose (``--tuned``)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from fdrmfl_pipeline.core.selection import SelectionRule, choose_regressors, outside_share

    for noisy in ("kedro", "fdrmfl_pipeline", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    env, base = DATA[data]
    rows = []
    prepared = False  # the data, partition and baselines of this cell exist
    with tempfile.TemporaryDirectory(prefix="strategies-") as tmp:
        project = project_copy(Path(tmp))
        bootstrap_project(project)
        for variant in variants:
            params = merge(merge(merge(base, regime_params(data, regime)), COMMON), {"seed": seed})
            params = merge(merge(params, VARIANTS[variant]), _label(variant))
            if tuned and tuned.get(variant):
                params = merge(params, {"training": tuned[variant]})
            pipes = TRAIN_PIPES if prepared else PREPARE_PIPES + TRAIN_PIPES
            t0 = time.perf_counter()
            try:
                with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
                    s.run(pipeline_names=pipes)
            except Exception as exc:  # a diverged variant is a result of this cell, not its end
                logger.error("%s/%s seed %s: %s failed: %s", data, regime, seed, variant, exc)
                rows.append(_failed_row(data, regime, seed, variant, exc, t0))
                continue
            prepared = True
            seconds = time.perf_counter() - t0
            m = latest(project, "data/08_reporting/evaluation_metrics.parquet")
            m = m[m["method"] == variant]
            feats = latest(project, "data/04_feature/extracted_features.parquet")
            share = outside_share(feats[["client", "split", "target"]])
            pick = choose_regressors(m, share, SelectionRule()).iloc[0]
            t = m[(m["split"] == "test") & (m["regressor"] == pick["regressor"])]
            pooled = t[t["scope"] == "pooled"].iloc[0]
            rows.append(
                {
                    "data": data,
                    "regime": regime,
                    "seed": seed,
                    "variant": variant,
                    "regressor": pick["regressor"],
                    "val_mse": float(pick["val_mse"]),
                    "test_mse": float(pooled["mse"]),
                    "test_r2": float(pooled["r2"]),
                    "test_client_mse": float(t.loc[t["scope"] == "client", "mse"].mean()),
                    "seconds": seconds,
                    "error": "",
                }
            )
    return pd.DataFrame(rows)


def _failed_row(data: str, regime: str, seed: int, variant: str, exc: Exception, t0: float) -> dict:
    """A variant whose run stopped (e.g. diverged with its tuned learning rate): kept in the
    store with no scores and the error's last line, so the table counts it."""
    last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return {
        "data": data,
        "regime": regime,
        "seed": seed,
        "variant": variant,
        "regressor": "",
        "val_mse": np.nan,
        "test_mse": np.nan,
        "test_r2": np.nan,
        "test_client_mse": np.nan,
        "seconds": time.perf_counter() - t0,
        "error": f"{type(exc).__name__}: {last}"[:300],
    }


def tune_study(data: str, regime: str, variant: str, trials: int) -> dict:
    """One variant's Optuna study on the tuning seed (training and validation rows only): its
    best ``training:`` values and the study's start (trial 0, untuned) and best values."""
    import json

    import yaml
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    for noisy in ("kedro", "fdrmfl_pipeline", "py.warnings", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    env, base = DATA[data]
    study = f"{data}-{regime}-{variant}".replace("_", "-")
    params = merge(merge(merge(base, regime_params(data, regime)), COMMON), {"seed": TUNE_SEED})
    params = merge(merge(params, VARIANTS[variant]), _label(variant))
    params = merge(
        params,
        {
            "tuning": {
                "study_name": study,
                "n_trials": trials,
                "storage": "sqlite",
                "tune": TUNED[variant],
                "search_space": {k: v for k, v in EXTRA_SPACE.items() if k in TUNED[variant]},
            }
        },
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="strategies-tune-") as tmp:
        project = project_copy(Path(tmp))
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
            s.run(pipeline_names=["ingestion", "partitioning", "tuning"])
        best = yaml.safe_load(
            sorted((project / "data/06_models/best_params.yml").glob("*/*"))[-1].read_text()
        )
        trials_frame = latest(project, "data/07_model_output/tuning_trials.parquet")
    done = trials_frame[trials_frame["state"] == "COMPLETE"]
    start = done.loc[done["number"] == 0, "value"]
    return {
        "data": data,
        "regime": regime,
        "variant": variant,
        "trials": int(len(trials_frame)),
        "start_value": float(start.iloc[0]) if len(start) else np.nan,
        "best_value": float(best["study"].get("best_value") or np.nan),
        "best_trial": int(best["study"].get("best_trial", -1)),
        "training": json.dumps(best["training"], sort_keys=True),
        "minutes": (time.perf_counter() - t0) / 60,
    }


def _save(frame: pd.DataFrame, path: Path) -> None:
    """Write through a temporary file: an interrupted write never loses finished rows."""
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def run_studies(
    cells: list[tuple[str, str]], variants: list[str], trials: int, jobs: int
) -> pd.DataFrame:
    """Every (data, regime, variant) study not yet in the tuning store; returns the store."""
    store = pd.read_parquet(TUNING_STORE) if TUNING_STORE.exists() else pd.DataFrame()
    have = set() if store.empty else set(map(tuple, store[["data", "regime", "variant"]].values))
    todo = [(d, r, v) for d, r in cells for v in variants if TUNED[v] and (d, r, v) not in have]
    if not todo:
        return store
    logger.info("%d studies of %d trials to run", len(todo), trials)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(tune_study, *c, trials): c for c in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            try:
                row = fut.result()
            except Exception as exc:  # one failed study must not lose the others
                logger.error("study %s failed: %r", futures[fut], exc)
                continue
            store = pd.concat([store, pd.DataFrame([row])], ignore_index=True)
            _save(store, TUNING_STORE)
            logger.info(
                "[%d/%d] study %s: start %.4g, best %.4g (trial %d, %.1f min)",
                i,
                len(todo),
                futures[fut],
                row["start_value"],
                row["best_value"],
                row["best_trial"],
                row["minutes"],
            )
    return store


def tuned_values(store: pd.DataFrame, data: str, regime: str) -> dict:
    """variant -> the training values its study chose for (data, regime)."""
    import json

    if store.empty:
        return {}
    g = store[(store["data"] == data) & (store["regime"] == regime)]
    return {r["variant"]: json.loads(r["training"]) for _, r in g.iterrows()}


def paired(per_seed: pd.DataFrame, variant: str, reference: str = REFERENCE) -> dict:
    """Mean test-MSE difference variant - reference over seeds, its 95 % t interval, and the
    relative change; NaN where fewer than two paired seeds."""
    from scipy import stats

    wide = per_seed.pivot_table(index="seed", columns="variant", values="test_mse")
    if variant not in wide or reference not in wide:
        return {"diff": np.nan, "lo": np.nan, "hi": np.nan, "rel": np.nan, "n": 0}
    d = (wide[variant] - wide[reference]).dropna()
    n = len(d)
    if n < 2:
        return {
            "diff": d.mean() if n else np.nan,
            "lo": np.nan,
            "hi": np.nan,
            "rel": np.nan,
            "n": n,
        }
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
    ref = wide.loc[d.index, reference].mean()
    return {
        "diff": d.mean(),
        "lo": d.mean() - half,
        "hi": d.mean() + half,
        "rel": 100 * d.mean() / ref,
        "n": n,
    }


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (data, regime), g in rows.groupby(["data", "regime"], sort=False):
        for variant, v_all in g.groupby("variant", sort=False):
            failed = v_all["test_mse"].isna()
            v = v_all[~failed]
            p = paired(g, variant)
            out.append(
                {
                    "data": data,
                    "regime": regime,
                    "variant": variant,
                    "seeds": len(v),
                    "failed": int(failed.sum()),
                    "test_mse": v["test_mse"].mean(),
                    "test_mse_sd": v["test_mse"].std(ddof=1),
                    "test_r2": v["test_r2"].mean(),
                    "regressors": ", ".join(
                        f"{k}×{c}" for k, c in v["regressor"].value_counts().items()
                    ),
                    **{f"vs_{REFERENCE}_{k}": val for k, val in p.items()},
                }
            )
    return pd.DataFrame(out)


def verdict(row: pd.Series) -> str:
    lo, hi = row[f"vs_{REFERENCE}_lo"], row[f"vs_{REFERENCE}_hi"]
    if row["variant"] == REFERENCE or not np.isfinite(lo):
        return ""
    if hi < 0:
        return "better"
    if lo > 0:
        return "worse"
    return "tie"


def figure(summary: pd.DataFrame, rows: pd.DataFrame, data: str, path: Path) -> None:
    """One panel per regime: test MSE per variant, mean and 95 % t interval over seeds."""
    from matplotlib.figure import Figure
    from scipy import stats

    regimes = list(dict.fromkeys(summary.loc[summary["data"] == data, "regime"]))
    ncols = min(4, len(regimes))
    nrows = int(np.ceil(len(regimes) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[len(regimes) :]:
        ax.set_visible(False)
    for ax, regime in zip(axes, regimes, strict=False):
        g = rows[(rows["data"] == data) & (rows["regime"] == regime)]
        order = [v for v in VARIANT_NAMES if v in set(g["variant"])]
        means, halves = [], []
        for v in order:
            x = g.loc[g["variant"] == v, "test_mse"].dropna()
            means.append(x.mean())
            n = len(x)
            halves.append(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n) if n > 1 else 0)
        colors = ["C3" if v == "fdrmfl" else "C0" if v == REFERENCE else "0.6" for v in order]
        ax.bar(range(len(order)), means, yerr=halves, color=colors, capsize=2)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{regime} ({g['seed'].nunique()} seeds)", fontsize=9)
        ax.set_ylabel("test MSE", fontsize=8)
    fig.suptitle(f"{data}: test MSE by strategy (mean, 95 % interval over seeds)")
    fig.savefig(path, dpi=90)


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.4g}"


def _intro(tuned: bool, studies: pd.DataFrame | None) -> list[str]:
    if not tuned:
        return [
            "# Strategies and ablations from the same start, same settings",
            "",
            "Command: `.venv/bin/python experiments/strategies.py` (resumable; rows in "
            "`strategies.parquet`; figures `strategies_<data>.png`).",
            "",
            "Every variant of a data set trains with the same settings: `sim_f1_defaults` the "
            "project defaults (PLS warm start, 5 rounds x 3 local epochs, lr 1e-3), `sim_f1_paper` "
            "the simulation protocol's (`paper_sim`: federated lasso warm start, up to 30 rounds x 3 "
            "epochs, lr 2e-4), `sites` the sites example's; AdamW and early stopping on validation "
            "keeping the best round (round 0, the warm start, included). Only the strategy or one "
            "loss weight differs. Score: pooled test MSE of the regressor "
            "(ridge on Z or the model's head) the project's rule picks on validation. `Δ vs fedavg`: "
            "mean over seeds of the paired difference in test MSE with its 95 % t interval; "
            "*better* / *worse* where the interval excludes 0. Seeds from "
            f"{FIRST_SEED}: chosen by nothing. The strategies are not tuned here (the same "
            "settings for all); `strategies_tuned.md` gives each one the same tuning budget.",
            "",
        ]
    n = "" if studies is None or studies.empty else f" ({int(studies['trials'].max())} trials each)"
    lines = [
        "# Strategies and ablations, each tuned with the same budget",
        "",
        "Command: `.venv/bin/python experiments/strategies.py --tuned` (resumable; studies in "
        "`strategies_tuning.parquet`, cells in `strategies_tuned.parquet`; figures "
        "`strategies_tuned_<data>.png`).",
        "",
        f"Each variant gets its own Optuna study with the same number of trials{n}, on seed "
        f"{TUNE_SEED} (its data and partition are used by no evaluation), on validation rows "
        "only, with the same warm start, rounds and early stopping. Searched: "
        + ", ".join(f"`{k}`" for k in SHARED_TUNED)
        + " for every variant, plus the variant's own weights: "
        + "; ".join(
            f"{v}: " + ", ".join(f"`{k}`" for k in TUNED[v] if k not in SHARED_TUNED)
            for v in ("fdrmfl", "fedprox", "moon")
        )
        + " (the ablations: FDRMFL's without the switched-off term; `fdrmfl-mi-kernel`: FDRMFL's "
        "with the kernel-contrastive MI estimator). Trial 0 is the untuned "
        "setting, so no study ends worse on validation than no tuning. Then each variant runs "
        f"with its tuned values on seeds {FIRST_SEED}+, chosen by nothing; scored and compared "
        "as in `strategies.md` (pooled test MSE of the regressor picked on validation; paired "
        "95 % t interval against FedAvg).",
        "",
    ]
    return lines


def studies_table(studies: pd.DataFrame) -> list[str]:
    """The tuning studies: untuned and best validation value and the chosen values."""
    import json

    from fdrmfl_pipeline.best_params import flatten

    lines = [
        "## The studies (validation MSE on the tuning seed)",
        "",
        "| data | regime | variant | trials | untuned | tuned | best trial | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in studies.sort_values(["data", "regime"], kind="stable").iterrows():
        vals = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in flatten(json.loads(r["training"])).items()
        )
        lines.append(
            f"| {r['data']} | {r['regime']} | {r['variant']} | {r['trials']} | "
            f"{_fmt(r['start_value'])} | {_fmt(r['best_value'])} | {r['best_trial']} | "
            f"{vals or '(untuned)'} |"
        )
    return lines + [""]


def to_markdown(
    summary: pd.DataFrame,
    rows: pd.DataFrame,
    missing: list[str],
    tuned: bool = False,
    studies: pd.DataFrame | None = None,
) -> str:
    lines = _intro(tuned, studies)
    if missing:
        lines += ["**Missing cells** (not run yet): " + ", ".join(missing), ""]
    for (data, regime), g in summary.groupby(["data", "regime"], sort=False):
        lines += [
            f"## {data}, {regime}",
            "",
            "| variant | seeds | test MSE | R² | regressor | Δ vs fedavg [95 % CI] | Δ % | |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for _, r in g.iterrows():
            ci = (
                f"{_fmt(r['vs_fedavg_diff'])} [{_fmt(r['vs_fedavg_lo'])}, "
                f"{_fmt(r['vs_fedavg_hi'])}]"
                if r["variant"] != REFERENCE
                else "reference"
            )
            seeds = f"{r['seeds']} (+{r['failed']} failed)" if r.get("failed", 0) else r["seeds"]
            lines.append(
                f"| {r['variant']} | {seeds} | {_fmt(r['test_mse'])} ± "
                f"{_fmt(r['test_mse_sd'])} | {r['test_r2']:.3f} | {r['regressors']} | {ci} | "
                f"{_fmt(r['vs_fedavg_rel'])} | {verdict(r)} |"
            )
        lines.append("")
        if "error" in rows:
            bad = rows[
                (rows["data"] == data) & (rows["regime"] == regime) & rows["test_mse"].isna()
            ]
            for _, b in bad.iterrows():
                why = str(b["error"]).split("; ")[0]
                lines.append(f"- {b['variant']}, seed {b['seed']}: failed ({why}).")
            if len(bad):
                lines.append("")
    wins = summary[summary["variant"].str.startswith("fdrmfl")].copy()
    if len(wins):
        wins["verdict"] = wins.apply(verdict, axis=1)
        lines += ["## In one table: FDRMFL and its ablations against FedAvg", ""]
        pivot = wins.pivot_table(
            index=["data", "regime"], columns="variant", values="verdict", aggfunc="first"
        )
        lines.append("| data | regime | " + " | ".join(pivot.columns) + " |")
        lines.append("|---|---|" + "---|" * len(pivot.columns))
        for (d, reg), r in pivot.iterrows():
            lines.append(f"| {d} | {reg} | " + " | ".join(str(v) for v in r) + " |")
        lines.append("")
    if tuned and studies is not None and not studies.empty:
        lines += studies_table(studies)
    lines += [
        "## Not in this table yet",
        "",
        "- The second MI estimator (`fdrmfl-mi-kernel`) runs where its cells are listed above; "
        "other estimators (a learned MINE / NWJ critic) are not implemented.",
    ]
    have = set(map(tuple, rows[["data", "regime"]].drop_duplicates().values))
    for d in DATA:
        absent = [r for r in DATA_REGIMES[d] if (d, r) not in have]
        if absent:
            lines.append(f"- `{d}`: not run yet in {', '.join(absent)}.")
    lines.append("")
    sec = rows.groupby("variant")["seconds"].mean()
    lines.append(
        "Mean seconds per training + scoring run: "
        + ", ".join(f"{v} {sec[v]:.0f}" for v in VARIANT_NAMES if v in sec)
        + "."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", nargs="*", default=list(DATA), choices=list(DATA))
    ap.add_argument("--regimes", nargs="*", default=None, choices=list(REGIMES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--variants", nargs="*", default=VARIANT_NAMES, choices=VARIANT_NAMES)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tuned", action="store_true", help="tune every variant first (same budget)")
    ap.add_argument("--trials", type=int, default=12, help="--tuned: trials per study")
    ap.add_argument("--from-partial", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if "corn_oil" in args.data and not CORN_DIR.is_dir() and not args.from_partial:
        logger.warning("corn_oil skipped: no corn data at %s (set FDRMFL_CORN_DIR)", CORN_DIR)
        args.data = [d for d in args.data if d != "corn_oil"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    store_path = TUNED_STORE if args.tuned else STORE
    name = "strategies_tuned" if args.tuned else "strategies"
    rows = pd.read_parquet(store_path) if store_path.exists() else pd.DataFrame()
    # (data, regime, seed) -> the variants already run there: a cell reruns only what it lacks
    have_variants: dict[tuple, set] = {}
    if not rows.empty:
        for key, g in rows.groupby(["data", "regime", "seed"]):
            have_variants[tuple(key)] = set(g["variant"])
    seeds = range(FIRST_SEED, FIRST_SEED + args.seeds)
    pairs = [
        (d, r)
        for d in args.data
        for r in DATA_REGIMES[d]
        if args.regimes is None or r in args.regimes
    ]
    todo = [
        (d, r, s)
        for d, r in pairs
        for s in seeds
        if set(args.variants) - have_variants.get((d, r, s), set())
    ]
    studies = pd.read_parquet(TUNING_STORE) if TUNING_STORE.exists() else pd.DataFrame()
    if args.tuned and not args.from_partial:
        studies = run_studies(pairs, args.variants, args.trials, args.jobs)
    if not args.from_partial and todo:
        logger.info(
            "%d cells to run (%d already finished)", len(todo), len(pairs) * len(seeds) - len(todo)
        )
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {}
            for c in todo:
                tuned = tuned_values(studies, c[0], c[1]) if args.tuned else None
                if args.tuned and any(TUNED[v] and v not in tuned for v in args.variants):
                    logger.error("%s: a study is missing (failed?); cell skipped", c)
                    continue
                # the variants this cell lacks (a run is deterministic for its seed, so a later
                # variant pairs with the reference rows already there)
                lacking = [v for v in args.variants if v not in have_variants.get(c, set())]
                futures[pool.submit(run_cell, *c, lacking, tuned)] = c
            for i, fut in enumerate(as_completed(futures), 1):
                cell = futures[fut]
                try:
                    new = fut.result()
                except Exception as exc:  # one broken cell must not lose the others
                    logger.error("%s failed: %r", cell, exc)
                    continue
                rows = pd.concat([rows, new], ignore_index=True)
                _save(rows, store_path)
                logger.info("[%d/%d] %s done (%.0fs)", i, len(futures), cell, new["seconds"].sum())
    if rows.empty:
        logger.error("no finished cells in %s", store_path)
        return
    # the full grid of this mode: every data set's regimes (the tuned grid: what was asked so far)
    grid = (
        sorted(set(map(tuple, rows[["data", "regime"]].drop_duplicates().values)) | set(pairs))
        if args.tuned
        else [(d, r) for d in DATA for r in DATA_REGIMES[d]]
    )
    have = set(map(tuple, rows[["data", "regime", "seed"]].drop_duplicates().values))
    missing = sorted({f"{d}/{r}" for d, r in grid for s in seeds if (d, r, s) not in have})
    summary = summarise(rows)
    text = to_markdown(summary, rows, missing, tuned=args.tuned, studies=studies)
    (RESULTS / f"{name}.md").write_text(text)
    for d in summary["data"].unique():
        figure(summary, rows, d, RESULTS / f"{name}_{d}.png")
    logger.info("wrote %s", RESULTS / f"{name}.md")


if __name__ == "__main__":
    main()
