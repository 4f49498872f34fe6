"""Which strategy each environment should default to, chosen on validation by a stated rule.

    .venv/bin/python experiments/defaults.py        # writes results/defaults.md

Evidence: the equal-budget grid (``results/strategies_tuned.parquet``, ``strategies.py --tuned``):
every strategy and ablation tuned with the same Optuna budget, then run on seeds 100+ that chose
nothing. Only the **validation** MSE of those runs is read here; test rows choose nothing.

The rule, per environment (the data sets run with that environment's settings):

1. For each candidate, the paired change of validation MSE against the current default (FDRMFL
   with every term on): the log-ratio per (data set, regime, seed), its mean and 95 % t interval.
2. A candidate *beats* the default when the whole interval is below 0.
3. No candidate beats it: the default stays. Otherwise the environment takes the simplest
   candidate that beats it (order: FedAvg, FedProx, MOON, then FDRMFL with one term off, then the
   other MI estimator), unless another beater is better than that one outside its own interval.

Candidates train one shared model. Per-client models (``local``) and pooled training
(``central``) are reported beside them but never chosen: one needs no federation, the other
needs the data in one place.

The environment takes the winner's strategy (or switches the term off) and keeps its own step
size, schedule and warm start: the tuned values differ from regime to regime.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from registry import VARIANTS  # noqa: E402

from fdrmfl_pipeline.best_params import flatten  # noqa: E402

RESULTS = HERE / "results"
GRID = RESULTS / "strategies_tuned.parquet"
logger = logging.getLogger("experiments.defaults")

# environment ("base": conf/base) -> the grid's data sets that run its settings
ENVIRONMENTS = {
    "base": ["sim_f1_defaults", "sim_f2_defaults"],
    "paper_sim": ["sim_f1_paper"],
    "paper_tecator": ["tecator_fat"],
    "paper_corn": ["corn_oil"],
    "example_sites": ["sites"],
}
CURRENT = "fdrmfl"
# candidates, simplest first
CANDIDATES = [
    "fedavg",
    "fedprox",
    "moon",
    "fdrmfl-no-mi",
    "fdrmfl-no-kl",
    "fdrmfl-no-con",
    "fdrmfl-mi-kernel",
]
REPORTED = ["local", "central"]


# what a chosen variant sets in the environment's training parameters: the registry's own
# variant overrides (strategy fdrmfl unless the variant names another)
SETTINGS = {
    v: {"strategy": "fdrmfl", **flatten(VARIANTS[v].get("training", {}))}
    for v in [CURRENT, *CANDIDATES]
}


def paired_log_ratio(
    rows: pd.DataFrame, variant: str, reference: str, metric: str = "val_mse"
) -> dict:
    """Mean log(``metric`` of variant / reference) over (data, regime, seed) pairs with its 95 %
    t interval, as relative changes; n: pairs (rows where either failed are left out)."""
    from scipy import stats

    if metric not in rows:
        return {"rel": np.nan, "lo": np.nan, "hi": np.nan, "n": 0}
    wide = rows.pivot_table(
        index=["data", "regime", "seed"], columns="variant", values=metric, aggfunc="first"
    )
    if variant not in wide or reference not in wide:
        return {"rel": np.nan, "lo": np.nan, "hi": np.nan, "n": 0}
    ratio = wide[variant] / wide[reference]
    lr = np.log(ratio[np.isfinite(ratio) & (ratio > 0)])
    n = len(lr)
    if n < 2:
        return {"rel": np.nan, "lo": np.nan, "hi": np.nan, "n": n}
    half = stats.t.ppf(0.975, n - 1) * lr.std(ddof=1) / np.sqrt(n)
    m = lr.mean()
    return {"rel": np.expm1(m), "lo": np.expm1(m - half), "hi": np.expm1(m + half), "n": n}


def choose(rows: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """(the chosen variant, the table behind it) for one environment's rows."""
    table = pd.DataFrame(
        [{"variant": v, **paired_log_ratio(rows, v, CURRENT)} for v in CANDIDATES + REPORTED]
    )
    # the same comparison on test rows, shown beside the choice and never used for it
    test = [paired_log_ratio(rows, v, CURRENT, "test_mse") for v in table["variant"]]
    table[["test_rel", "test_lo", "test_hi"]] = [[r["rel"], r["lo"], r["hi"]] for r in test]
    table["beats"] = table["variant"].isin(CANDIDATES) & (table["hi"] < 0)
    beaters = list(table.loc[table["beats"], "variant"])
    if not beaters:
        return CURRENT, table
    for v in beaters:  # simplest first
        if not any(paired_log_ratio(rows, o, v)["hi"] < 0 for o in beaters if o != v):
            return v, table
    return beaters[0], table  # the beaters beat each other in a cycle: the simplest


def choices(grid: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame, int]]:
    """environment -> (chosen variant, table, regimes) for every environment with rows."""
    out = {}
    for env, data in ENVIRONMENTS.items():
        rows = grid[grid["data"].isin(data) & grid["val_mse"].notna()]
        if rows.empty:
            continue
        chosen, table = choose(rows)
        out[env] = (chosen, table, len(rows[["data", "regime"]].drop_duplicates()))
    return out


def _pct(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:+.1f} %"


def to_markdown(result: dict[str, tuple[str, pd.DataFrame, int]]) -> str:
    lines = [
        "# Defaults by evidence: each environment's strategy, chosen on validation",
        "",
        "Made by `.venv/bin/python experiments/defaults.py` from the equal-budget grid "
        "(`strategies_tuned.parquet`, validation MSE of the seeds that chose nothing). "
        "Change of validation MSE against FDRMFL with every term on, paired by data set, regime "
        "and seed (95 % t interval); a candidate beats FDRMFL when the whole interval is below "
        "0, and the simplest beater is taken unless another beats it in turn. `local` and "
        "`central` are shown, never chosen (no shared model / data in one place). The last "
        "column is the same comparison on test rows, for the record: it chooses nothing.",
        "",
    ]
    for env, (chosen, table, regimes) in result.items():
        sets = ", ".join(ENVIRONMENTS[env])
        lines += [
            f"## {env} ({sets}; {regimes} regimes)",
            "",
            f"**Chosen: `{chosen}`** -> `training`: "
            + ", ".join(f"`{k}: {v}`" for k, v in SETTINGS[chosen].items()),
            "",
            "| variant | pairs | val MSE vs fdrmfl [95 % CI] | beats | test MSE vs fdrmfl (not used) |",
            "|---|---|---|---|---|",
        ]
        for _, r in table.iterrows():
            ci = f"{_pct(r['rel'])} [{_pct(r['lo'])}, {_pct(r['hi'])}]"
            mark = (
                "yes" if r["beats"] else ("(not a candidate)" if r["variant"] in REPORTED else "")
            )
            tci = f"{_pct(r['test_rel'])} [{_pct(r['test_lo'])}, {_pct(r['test_hi'])}]"
            lines.append(f"| {r['variant']} | {r['n']} | {ci} | {mark} | {tci} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=Path, default=GRID)
    ap.add_argument("--out", type=Path, default=RESULTS / "defaults.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not args.grid.exists():
        raise SystemExit(f"{args.grid}: no grid results (run experiments/strategies.py --tuned)")
    result = choices(pd.read_parquet(args.grid))
    args.out.write_text(to_markdown(result))
    for env, (chosen, _, regimes) in result.items():
        logger.info("%-14s %-18s (%d regimes)", env, chosen, regimes)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
