"""Evidence for the other tasks and for dynamic federations: FDRMFL against FedAvg, per-client
(local) and pooled (central) training, on seeds that chose nothing.

    .venv/bin/python experiments/tasks.py                 # every cell not yet in the results
    .venv/bin/python experiments/tasks.py --from-partial  # tables only

Cells (resumable; rows in ``results/tasks.parquet``, table ``results/tasks.md``):

- ``classification``: the breast-cancer example at three clinics with label-skewed caseloads
  (Dirichlet alpha 0.3, and 0.1: most clinics see mostly one diagnosis), and the simulation's
  response in three quantile classes under Dirichlet alpha 0.1; scored by the classifier the
  validation log-loss picks (logistic on Z or the model's head).
- ``anomaly``: the pump-sensor example (four plants, a different fault at each); scored by the
  combined anomaly score against the labelled faults (the isolation forest beside it).
- ``dynamic``: the simulation under the project defaults but from a random start, 8 rounds,
  every round kept (under the defaults early stopping keeps the PLS warm start, and every
  variant would equal it), with churn (each client online with probability 0.7), a late
  joiner (client 2 from round 4), a client leaving (client 0 after round 2) and a gained
  sensor (client 1's image from round 3), against the same run without. The late joiner's cost
  is its own test MSE (``client2_mse``) against the run where it took part throughout.

Every strategy of a cell trains from the same data and partition with the environment's
settings (not tuned). Seeds from 100: chosen by nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from registry import latest, merge, project_copy  # noqa: E402

RESULTS = HERE / "results"
STORE = RESULTS / "tasks.parquet"
FIRST_SEED = 100
logger = logging.getLogger("experiments.tasks")
NO_BASELINES = {"baselines": {"enabled": False}}

# cell name -> (task, environment, parameters, variants: name -> parameters)
STRATEGIES = {s: {"training": {"strategy": s}} for s in ("fdrmfl", "fedavg", "local", "central")}
CELLS = {
    "classification/breast_cancer_alpha0.3": (
        "classification",
        "example_classification",
        {"regression": {"classifiers": ["logistic"]}},
        STRATEGIES,
    ),
    "classification/breast_cancer_alpha0.1": (
        "classification",
        "example_classification",
        {
            "regression": {"classifiers": ["logistic"]},
            "partitioning": {"dirichlet": {"alpha": 0.1, "min_client_size": 30}},
        },
        STRATEGIES,
    ),
    "classification/sim_f1_3classes_alpha0.1": (
        "classification",
        None,
        {
            "task": "classification",
            "ingestion": {"synthetic": {"n_train": 1500, "n_test": 500}},
            "partitioning": {"scheme": "dirichlet", "dirichlet": {"alpha": 0.1}},
            "training": {"warm_start": {"kind": "pca"}},
            "regression": {"classifiers": ["logistic"]},
        },
        STRATEGIES,
    ),
    "anomaly/pump_sensors": (
        "anomaly",
        "example_anomaly",
        {"regression": {"regressors": ["ridge"]}},
        STRATEGIES,
    ),
    "dynamic/sim_f1_random_start": (
        "regression",
        None,
        {
            "regression": {"regressors": ["ridge"]},
            # training alone decides: no warm start to keep, every round kept
            "training": {
                "warm_start": {"kind": "none"},
                "federation": {"rounds": 8, "early_stopping": {"enabled": False}},
            },
        },
        {
            "static": {},
            "churn_p0.7": {"training": {"federation": {"availability": {"probability": 0.7}}}},
            "late_joiner_c2_r4": {
                "training": {"federation": {"availability": {"schedule": {2: {"join": 4}}}}}
            },
            "leaver_c0_r2": {
                "training": {"federation": {"availability": {"schedule": {0: {"leave": 2}}}}}
            },
            "gained_image_c1_r3": {
                "training": {"federation": {"availability": {"modalities": {1: {"image": 3}}}}}
            },
        },
    ),
}


def _score(task: str, project: Path, method: str) -> dict:
    """The cell's numbers for one run: the chosen downstream model's pooled test scores."""
    m = latest(project, "data/08_reporting/evaluation_metrics.parquet")
    choice = latest(project, "data/08_reporting/regressor_choice.parquet").set_index("method")
    reg = choice.loc[method, "regressor"]
    test = m[(m["method"] == method) & (m["regressor"] == reg) & (m["split"] == "test")]
    pooled = test[test["scope"] == "pooled"].iloc[0]
    out = {"regressor": reg}
    if task == "classification":
        out |= {k: float(pooled[k]) for k in ("accuracy", "macro_f1", "roc_auc", "log_loss")}
    else:
        out |= {"mse": float(pooled["mse"]), "r2": float(pooled["r2"])}
        out |= {
            f"client{int(r.client)}_mse": float(r.mse) for r in test.itertuples() if r.client >= 0
        }
    if task == "anomaly":
        a = latest(project, "data/08_reporting/anomaly_metrics.parquet")
        a = a[(a["split"] == "test") & (a["scope"] == "pooled")].set_index(["method", "score"])
        out |= {
            "anomaly_roc_auc": float(a.loc[("fdrmfl", "combined"), "roc_auc"]),
            "anomaly_pr_auc": float(a.loc[("fdrmfl", "combined"), "pr_auc"]),
            "forest_roc_auc": float(a.loc[("isolation_forest", "score"), "roc_auc"]),
            "forest_pr_auc": float(a.loc[("isolation_forest", "score"), "pr_auc"]),
            "anomaly_share": float(a.loc[("fdrmfl", "combined"), "anomaly_share"]),
        }
    return out


def run_cell(cell: str, seed: int) -> pd.DataFrame:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    for noisy in ("kedro", "fdrmfl_pipeline", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    task, env, base, variants = CELLS[cell]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tasks-") as tmp:
        project = project_copy(Path(tmp))
        bootstrap_project(project)
        for i, (variant, extra) in enumerate(variants.items()):
            params = merge(merge(merge(base, NO_BASELINES), extra), {"seed": seed})
            # the rows carry the variant's name (strategies keep theirs as the method)
            params = merge(params, {"regression": {"method": variant}})
            pipes = ["training", "regression", "evaluation"]
            if i == 0:
                pipes = ["ingestion", "partitioning", "baselines", *pipes]
            t0 = time.perf_counter()
            with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
                s.run(pipeline_names=pipes)
            rows.append(
                {
                    "cell": cell,
                    "task": task,
                    "seed": seed,
                    "variant": variant,
                    "seconds": time.perf_counter() - t0,
                    **_score(task, project, variant),
                }
            )
    return pd.DataFrame(rows)


def _save(frame: pd.DataFrame) -> None:
    tmp = STORE.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(STORE)


def _mean_sd(x: pd.Series) -> str:
    return f"{x.mean():.4g} ± {x.std(ddof=1):.2g}" if len(x) > 1 else f"{x.mean():.4g}"


def to_markdown(rows: pd.DataFrame, missing: list[str]) -> str:
    lines = [
        "# Other tasks and dynamic federations",
        "",
        "Command: `.venv/bin/python experiments/tasks.py` (resumable; rows in `tasks.parquet`). "
        f"Seeds {FIRST_SEED}+ (chosen by nothing); mean ± standard deviation over seeds; pooled "
        "test rows; every strategy with the environment's settings, untuned. See the module "
        "docstring for the cells.",
        "",
    ]
    if missing:
        lines += ["**Missing cells**: " + ", ".join(missing), ""]
    for cell, g in rows.groupby("cell", sort=False):
        task = g["task"].iloc[0]
        if task == "classification":
            cols = ["accuracy", "macro_f1", "roc_auc", "log_loss"]
        elif task == "anomaly":
            cols = ["anomaly_roc_auc", "anomaly_pr_auc", "forest_roc_auc", "mse"]
        else:
            cols = ["mse", "r2", "client2_mse"]
        lines += [
            f"## {cell} ({g['seed'].nunique()} seeds)",
            "",
            "| variant | " + " | ".join(cols) + " | seconds |",
            "|---|" + "---|" * (len(cols) + 1),
        ]
        for variant, v in g.groupby("variant", sort=False):
            vals = " | ".join(_mean_sd(v[c]) for c in cols)
            lines.append(f"| {variant} | {vals} | {v['seconds'].mean():.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--from-partial", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = pd.read_parquet(STORE) if STORE.exists() else pd.DataFrame()
    done = set() if rows.empty else set(map(tuple, rows[["cell", "seed"]].drop_duplicates().values))
    seeds = range(FIRST_SEED, FIRST_SEED + args.seeds)
    todo = [(c, s) for c in args.cells for s in seeds if (c, int(s)) not in done]
    if not args.from_partial:
        for i, (cell, seed) in enumerate(todo, 1):
            try:
                new = run_cell(cell, seed)
            except Exception as exc:  # one broken cell must not lose the others
                logger.error("%s seed %d failed: %r", cell, seed, exc)
                continue
            rows = pd.concat([rows, new], ignore_index=True)
            _save(rows)
            logger.info(
                "[%d/%d] %s seed %d (%.0fs)", i, len(todo), cell, seed, new["seconds"].sum()
            )
    if rows.empty:
        logger.error("no finished cells")
        return
    have = set(map(tuple, rows[["cell", "seed"]].drop_duplicates().values))
    missing = sorted({c for c in CELLS for s in seeds if (c, s) not in have})
    (RESULTS / "tasks.md").write_text(to_markdown(rows, missing))
    logger.info("wrote %s", RESULTS / "tasks.md")


if __name__ == "__main__":
    main()
