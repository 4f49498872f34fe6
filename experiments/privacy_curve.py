"""The privacy-accuracy curve: client-level differential privacy at several epsilons, beside the
same training without privacy and the best per-client (no federation) baseline.

    .venv/bin/python experiments/privacy_curve.py                    # every cell, resumable
    .venv/bin/python experiments/privacy_curve.py --data sim_f1 --seeds 3
    .venv/bin/python experiments/privacy_curve.py --from-partial     # tables + figure only

Cells: (data, epsilon, seed). Every cell trains FDRMFL from a random start with local scalers
and no early stopping (what DP requires: nothing but the noised model updates leaves a client),
``ROUNDS`` rounds, all clients each round; epsilon = inf is the same job without noise or
clipping. Score: pooled test MSE of the regressor chosen on validation (ridge on Z or the head).
The per-client baselines (PLS and ridge on each client's own raw inputs) never leave the client,
so they are private by construction: federation under DP pays off only while it beats them.
Finished cells are kept in ``results/privacy_curve.parquet``; a rerun skips them. Writes
``results/privacy_curve.md`` and ``results/privacy_curve.png``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from registry import latest, merge, project_copy, published  # noqa: E402

RESULTS = HERE / "results"
STORE = RESULTS / "privacy_curve.parquet"
logger = logging.getLogger("experiments.privacy_curve")
FIRST_SEED = 200  # chosen by nothing
ROUNDS = 10
EPSILONS = (math.inf, 8.0, 4.0, 2.0, 1.0)
DATA = {
    "sim_f1": (None, {"ingestion": {"source": "synthetic"}}),
    "tecator_fat": ("paper_tecator", published("paper_tecator")),
    # the same simulation over 30 IID clients: the noise on the average shrinks with the number
    # of clients, the per-client baselines weaken with fewer rows each
    "sim_f1_30_clients": (
        None,
        {"ingestion": {"source": "synthetic"}, "partitioning": {"scheme": "iid", "n_clients": 30}},
    ),
}
PRIVATE_BASE = {
    "training": {
        "warm_start": {"kind": "none"},
        "data": {"scaling": "local"},
        "federation": {"rounds": ROUNDS, "early_stopping": {"enabled": False}},
    },
    "regression": {"regressors": ["ridge"]},
    "baselines": {"extractors": ["pls", "raw"], "regressors": ["ridge"]},
}


def run_cell(data: str, eps: float, seed: int) -> pd.DataFrame:
    """One private (or non-private) run: the chosen regressor's pooled test MSE for FDRMFL and
    for every baseline, and the epsilon the accountant reports."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    env, base = DATA[data]
    params = merge(merge(base, PRIVATE_BASE), {"seed": seed})
    if math.isfinite(eps):
        params = merge(
            params, {"training": {"privacy": {"mode": "central", "target_epsilon": eps}}}
        )
    with tempfile.TemporaryDirectory(prefix="privacy-") as tmp:
        project = project_copy(Path(tmp))
        bootstrap_project(project)
        t0 = time.perf_counter()
        with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
            s.run()
        seconds = time.perf_counter() - t0
        choice = latest(project, "data/08_reporting/regressor_choice.parquet")
        metrics = latest(project, "data/08_reporting/evaluation_metrics.parquet")
        history = latest(project, "data/07_model_output/training_history.parquet")
    spent = float(history["epsilon"].max()) if "epsilon" in history else math.inf
    rows = []
    test = metrics[(metrics["split"] == "test") & (metrics["scope"] == "pooled")]
    for r in choice.itertuples():
        t = test[(test["method"] == r.method) & (test["regressor"] == r.regressor)]
        rows.append(
            {
                "data": data,
                "epsilon_target": eps,
                "seed": seed,
                "method": r.method,
                "regressor": r.regressor,
                "test_mse": float(t["mse"].iloc[0]),
                "test_r2": float(t["r2"].iloc[0]),
                "epsilon_spent": spent,
                "seconds": seconds,
            }
        )
    return pd.DataFrame(rows)


def _ms(x: pd.Series) -> str:
    return f"{x.mean():.4g} ± {x.std(ddof=1):.2g}" if len(x) > 1 else f"{x.mean():.4g}"


def to_markdown(rows: pd.DataFrame) -> str:
    lines = [
        "# Privacy-accuracy curve",
        "",
        "Command: `.venv/bin/python experiments/privacy_curve.py` (resumable; rows in "
        "`privacy_curve.parquet`; figure `privacy_curve.png`).",
        "",
        f"FDRMFL trained from a random start, local scalers, {ROUNDS} rounds, every client "
        "each round, no early stopping, clip 1.0, delta 1e-5; the noise solved for each target "
        "epsilon by the RDP accountant. ε = inf: the same job without clipping or noise. "
        "Pooled test MSE of the regressor chosen on validation. Baselines are fitted on each "
        "client's own rows (pls, raw: ridge) and send nothing, so they are private at any ε. "
        f"Seeds from {FIRST_SEED}.",
        "",
    ]
    for data, g in rows.groupby("data", sort=False):
        ours = g[g["method"] == "fdrmfl"]
        base = g[(g["method"] != "fdrmfl") & (g["method"] != "client_mean")]
        best_base = (
            base[np.isinf(base["epsilon_target"])].groupby("method")["test_mse"].mean().idxmin()
            if len(base)
            else None
        )
        lines += [
            f"## {data}",
            "",
            "| target ε | ε spent | seeds | FDRMFL test MSE | "
            + (f"best per-client baseline ({best_base}) |" if best_base else "|"),
            "|---|---|---|---|---|",
        ]
        for eps, e in ours.groupby("epsilon_target", sort=False):
            b = base[(base["method"] == best_base) & (base["epsilon_target"] == eps)]
            lines.append(
                f"| {eps:g} | {e['epsilon_spent'].max():.3g} | {e['seed'].nunique()} | "
                f"{_ms(e['test_mse'])} | {_ms(b['test_mse']) if len(b) else ''} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def figure(rows: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    datas = list(dict.fromkeys(rows["data"]))
    fig = Figure(figsize=(4.6 * len(datas), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datas), squeeze=False)).ravel()
    for ax, data in zip(axes, datas, strict=True):
        g = rows[rows["data"] == data]
        ours = g[g["method"] == "fdrmfl"].groupby("epsilon_target")["test_mse"]
        finite = [e for e in ours.mean().index if np.isfinite(e)]
        x = finite + [16.0]  # inf drawn at the right edge
        means = [ours.mean()[e] for e in finite] + [ours.mean().get(math.inf, np.nan)]
        sds = [ours.std()[e] for e in finite] + [ours.std().get(math.inf, np.nan)]
        ax.errorbar(x, means, yerr=sds, marker="o", capsize=3, label="FDRMFL (DP)")
        base = g[(g["method"] != "fdrmfl") & (g["method"] != "client_mean")]
        if len(base):
            best = base.groupby("method")["test_mse"].mean()
            ax.axhline(best.min(), color="C2", ls="--", label=f"per-client {best.idxmin()}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{e:g}" for e in finite] + ["∞"])
        ax.set_xlabel("ε (client level, δ = 1e-5)")
        ax.set_ylabel("pooled test MSE")
        ax.set_title(data)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", nargs="*", default=list(DATA), choices=list(DATA))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--from-partial", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = pd.read_parquet(STORE) if STORE.exists() else pd.DataFrame()
    done = (
        set()
        if rows.empty
        else set(map(tuple, rows[["data", "epsilon_target", "seed"]].drop_duplicates().values))
    )
    todo = [
        (d, e, s)
        for d in args.data
        for s in range(FIRST_SEED, FIRST_SEED + args.seeds)
        for e in EPSILONS
        if (d, e, s) not in done
    ]
    if not args.from_partial:
        for i, cell in enumerate(todo, 1):
            try:
                new = run_cell(*cell)
            except Exception as exc:  # one broken cell must not lose the others
                logger.error("%s failed: %r", cell, exc)
                continue
            rows = pd.concat([rows, new], ignore_index=True)
            tmp = STORE.with_suffix(".tmp")
            rows.to_parquet(tmp, index=False)
            tmp.replace(STORE)
            logger.info("[%d/%d] %s done (%.0fs)", i, len(todo), cell, new["seconds"].iloc[0])
    if rows.empty:
        logger.error("no finished cells in %s", STORE)
        return
    (RESULTS / "privacy_curve.md").write_text(to_markdown(rows))
    figure(rows, RESULTS / "privacy_curve.png")
    logger.info("wrote %s", RESULTS / "privacy_curve.md")


if __name__ == "__main__":
    main()
