"""Does the federated PLS warm start need all its components? Evidence for its stopping rule.

    .venv/bin/python experiments/pls_stopping.py              # every cell, resumable
    .venv/bin/python experiments/pls_stopping.py --from-partial

The PLS warm start picks its component count on validation. Computing every component up to
``model.latent_dim`` costs one message exchange per component; stopping once ``patience`` more
components have not improved the validation MSE costs fewer. This script computes the whole
validation curve (in process, the same sums the federation computes) on every cell of the
strategies grid that starts from PLS (data x heterogeneity regime x seeds 100-104, which chose
nothing) and on the PLS environments outside it, and counts how often each patience picks a
different count than the whole curve does. Writes ``results/pls_stopping.{parquet,md}``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from registry import merge, project_copy  # noqa: E402
from strategies import CORN_DIR, DATA, DATA_REGIMES, regime_params  # noqa: E402

logger = logging.getLogger("pls_stopping")
RESULTS = HERE / "results"
STORE = RESULTS / "pls_stopping.parquet"
SEEDS = range(100, 105)
PATIENCES = (1, 2, 3, 4, 5)
# PLS environments outside the grid: their own partition
EXTRA = {
    "tecator_standard": ("tecator_standard", {}),
    "classification": ("example_classification", {}),
    "anomaly": ("example_anomaly", {}),
}


def cells() -> list[tuple[str, str, int]]:
    out = []
    for data, regimes in DATA_REGIMES.items():
        if data == "sim_f1_paper":  # the simulation protocol starts from the lasso
            continue
        if data == "corn_oil" and not CORN_DIR.is_dir():
            logger.warning("no corn data at %s: its cells are skipped", CORN_DIR)
            continue
        out += [(data, r, s) for r in regimes for s in SEEDS]
    out += [(name, "natural", s) for name in EXTRA for s in SEEDS]
    return out


def stop_at(curve: list[float], patience: int) -> int:
    """The count the stopping rule picks: components are added until ``patience`` in a row
    have not lowered the best validation MSE (or the curve ends)."""
    best = 0
    for j in range(1, len(curve)):
        if curve[j] < curve[best]:
            best = j
        elif j - best >= patience:
            break
    return best + 1


def run_cell(data: str, regime: str, seed: int) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from fdrmfl_pipeline.core.modalities import from_arrow
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.core.warmstart.pls import federated_pls
    from fdrmfl_pipeline.params import TrainingParams

    for noisy in ("kedro", "fdrmfl_pipeline", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    env, base = EXTRA[data] if data in EXTRA else DATA[data]
    over = {} if data in EXTRA else regime_params(data, regime)
    params = merge(merge(base, over), {"seed": seed})
    if data == "corn_oil":
        params = merge(params, {"paths": {"corn_dir": str(CORN_DIR)}})
    with tempfile.TemporaryDirectory(prefix="pls-stopping-") as tmp:
        project = project_copy(Path(tmp))
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
            s.run(pipeline_names=["ingestion", "partitioning"])
        with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
            ctx = s.load_context()
            table = ctx.catalog.load("multimodal_dataset")
            assign = ctx.catalog.load("client_assignments")
            training = ctx.params["training"]
            if isinstance(training, dict):
                training = TrainingParams.model_validate(training)
    data_ = from_arrow(table)
    setup = TrainingSetup.from_params(training, seed, data_)
    if setup.warm_start.kind != "pls" or setup.warm_start.components is not None:
        raise ValueError(f"{data}: the warm start is not PLS with a chosen count")
    clients, _ = setup.clients(data_, assign, seed)
    t0 = time.perf_counter()
    fit = federated_pls(clients, setup.modalities, setup.model.latent_dim, None)
    curve = list(fit.val_mse)
    row = {
        "data": data,
        "regime": regime,
        "seed": seed,
        "k_max": len(curve),
        "k_whole": int(np.argmin(curve)) + 1,
        "curve": [float(v) for v in curve],
        "seconds": time.perf_counter() - t0,
    }
    for p in PATIENCES:
        k = stop_at(curve, p)
        row[f"k_p{p}"] = k
        row[f"computed_p{p}"] = min(len(curve), k + p)
        row[f"val_gap_p{p}"] = curve[k - 1] / min(curve) - 1.0
    return row


def report(frame: pd.DataFrame) -> str:
    lines = [
        "# PLS warm start: how many components it needs",
        "",
        f"{len(frame)} cells (data x regime x seeds 100-104; `experiments/pls_stopping.py`).",
        "`k_whole`: the count the whole validation curve picks (its minimum). For each patience p,",
        "the rule stops after p components in a row without a lower validation MSE; *differs*",
        "counts the cells where it picks another count, *val gap* the largest relative",
        "validation MSE it gives up there, *components* the mean number computed (one message",
        "exchange each) against the whole curve's.",
        "",
        "| patience | differs | largest val gap | components computed (mean) | whole curve |",
        "|---|---|---|---|---|",
    ]
    for p in PATIENCES:
        diff = frame[frame[f"k_p{p}"] != frame["k_whole"]]
        gap = diff[f"val_gap_p{p}"].max() if len(diff) else 0.0
        lines.append(
            f"| {p} | {len(diff)} of {len(frame)} | {gap:.2%} | "
            f"{frame[f'computed_p{p}'].mean():.1f} | {frame['k_max'].mean():.1f} |"
        )
    lines += ["", "Per data set (patience 3):", ""]
    lines += ["| data | cells | k_whole (median, max) | differs | components computed |"]
    lines += ["|---|---|---|---|---|"]
    for data, g in frame.groupby("data", sort=False):
        lines.append(
            f"| {data} | {len(g)} | {int(g['k_whole'].median())}, {g['k_whole'].max()} | "
            f"{int((g['k_p3'] != g['k_whole']).sum())} | {g['computed_p3'].mean():.1f} of "
            f"{g['k_max'].mean():.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--from-partial", action="store_true", help="tables from the stored cells")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    done = pd.read_parquet(STORE) if STORE.exists() else pd.DataFrame()
    if not args.from_partial:
        have = (
            set()
            if done.empty
            else set(zip(done["data"], done["regime"], done["seed"], strict=True))
        )
        todo = [c for c in cells() if c not in have]
        for i, (data, regime, seed) in enumerate(todo, 1):
            row = run_cell(data, regime, seed)
            logger.info(
                "%d/%d %s/%s seed %d: whole curve %d of %d, patience 3: %d",
                i, len(todo), data, regime, seed, row["k_whole"], row["k_max"], row["k_p3"],
            )  # fmt: skip
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            RESULTS.mkdir(exist_ok=True)
            tmp = STORE.with_suffix(".tmp")
            done.to_parquet(tmp)
            tmp.replace(STORE)
    if done.empty:
        sys.exit("no cells yet")
    text = report(done)
    (RESULTS / "pls_stopping.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
