"""A user's own federation: the shipped sites example under several client and validation rules,
and what each regressor-choice rule picks there.

    .venv/bin/python experiments/own_federation.py                 # every cell, resumable
    .venv/bin/python experiments/own_federation.py --seeds 2       # fewer seeds
    .venv/bin/python experiments/own_federation.py --from-partial  # tables from finished cells

Cells: (setting, seed). Settings run the ``example_sites`` environment (three sites as clients,
each site's last 20 % of days as its test period) with validation as the last 15 % of each
client's training days or a random 15 %, and with contiguous time blocks as clients. Both choice
rules (``val`` and ``auto``) are applied to the same run's metrics afterwards: the rule changes
nothing upstream. Finished cells are kept in ``results/own_federation.parquet``; a rerun skips
them. Writes ``results/own_federation.md``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from registry import ROOT, merge  # noqa: E402

RESULTS = HERE / "results"
OUT = RESULTS / "own_federation"
logger = logging.getLogger("experiments.own_federation")

SETTINGS = {
    "sites, val last": {},
    "sites, val random": {"partitioning": {"val_strategy": "random"}},
    "time blocks, val last": {"partitioning": {"scheme": "time_blocks", "n_clients": 3}},
}
# where the trained model's gain comes from, on the first setting
ATTRIBUTION = {
    "sites, val last: warm start only": {"training": {"federation": {"rounds": 0}}},
    "sites, val last: fedavg": {"training": {"strategy": "fedavg"}},
}
ALL = {**SETTINGS, **ATTRIBUTION}
RULES = ("val", "auto")


def _project(tmp: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp)
    shutil.copytree(ROOT / "conf", tmp / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp / "conf/local").mkdir()
    (tmp / "src").mkdir()
    shutil.copytree(ROOT / "data/01_raw/example_sites", tmp / "data/01_raw/example_sites")
    return tmp


def _latest(project: Path, rel: str) -> pd.DataFrame:
    return pd.read_parquet(sorted((project / rel).glob("*/*"))[-1])


def run_cell(setting: str, seed: int) -> pd.DataFrame:
    """One run of the example in a temporary project copy: every metric row, with the share of
    validation targets outside the training range."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    params = merge({"seed": seed}, ALL[setting])
    with tempfile.TemporaryDirectory(prefix="own-federation-") as tmp:
        project = _project(Path(tmp))
        bootstrap_project(project)
        t0 = time.perf_counter()
        with KedroSession.create(
            project_path=project, env="example_sites", runtime_params=params
        ) as s:
            s.run()
        seconds = time.perf_counter() - t0
        metrics = _latest(project, "data/08_reporting/evaluation_metrics.parquet")
        choice = _latest(project, "data/08_reporting/regressor_choice.parquet")
    share = float(choice["val_outside_share"].iloc[0])
    return metrics.assign(setting=setting, seed=seed, val_outside_share=share, seconds=seconds)


def _chosen(cell: pd.DataFrame, rule: str) -> pd.DataFrame:
    from fdrmfl_pipeline.core.selection import SelectionRule, choose_regressors

    share = float(cell["val_outside_share"].iloc[0])
    return choose_regressors(cell, share, SelectionRule(rule=rule))


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, rule, method): the chosen regressor(s) and test R2 (pooled and the mean
    over clients), mean and sd over seeds."""
    out = []
    for (setting, seed), cell in rows.groupby(["setting", "seed"], sort=False):
        test = cell[cell["split"] == "test"]
        for rule in RULES:
            for r in _chosen(cell, rule).itertuples():
                t = test[(test["method"] == r.method) & (test["regressor"] == r.regressor)]
                out.append(
                    {
                        "setting": setting,
                        "rule": rule,
                        "seed": seed,
                        "method": r.method,
                        "regressor": r.regressor,
                        "pooled_r2": float(t.loc[t["scope"] == "pooled", "r2"].iloc[0]),
                        "client_r2": float(t.loc[t["scope"] == "client", "r2"].mean()),
                        "val_outside_share": r.val_outside_share,
                    }
                )
    return pd.DataFrame(out)


def _ms(x: pd.Series) -> str:
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def to_markdown(per_seed: pd.DataFrame, rows: pd.DataFrame, command: str) -> str:
    lines = [
        "# A user's own federation: the sites example",
        "",
        f"Command: `{command}` (resumable; cells in `own_federation.parquet`).",
        "",
        "Data: `data/01_raw/example_sites/sites.csv`, generated by `python -m "
        "fdrmfl_pipeline.examples` (three sites, 730 days each; weather vector, 24-channel "
        "spectrum, 12x2 load sequence; a maturity trend lifts the last months above the "
        "training targets). Environment `example_sites`: each client's last 20 % of days are "
        "its test period. R² on the test period: *pooled* over every client's test rows, "
        "*per client* averaged over clients. `raw_pooled + ridge_pooled` is ridge on every "
        "client's raw inputs in one place (the bar, not a federated method); `client_mean` "
        "predicts each client's training mean. Each method is represented by the regressor the "
        "rule picks on validation rows; test rows choose nothing.",
        "",
    ]
    seeds = sorted(rows["seed"].unique())
    lines.append(
        f"Seeds: {', '.join(map(str, seeds))} (the project seed: initialisation, the random "
        "validation split and client order; the data are fixed). Mean run time per cell: "
        f"{rows.groupby(['setting', 'seed'])['seconds'].first().mean():.0f} s on this machine."
    )
    lines.append("")
    t = rows[(rows["split"] == "test") & (rows["scope"] == "pooled")]
    t = t[t["method"].isin(["fdrmfl", "fedavg"])]
    every = t.groupby(["setting", "method", "regressor"], sort=False)["r2"].apply(_ms).unstack()
    lines += [
        "## Every regressor on the trained model's Z (test R² pooled, whatever the rule picks)",
        "",
        "| setting | method | " + " | ".join(every.columns) + " |",
        "|---|---|" + "---|" * len(every.columns),
    ]
    for (setting, method), r in every.iterrows():
        lines.append(f"| {setting} | {method} | " + " | ".join(str(v) for v in r) + " |")
    lines.append("")
    main = per_seed[per_seed["setting"] == "sites, val last"]
    extra = per_seed[per_seed["setting"].isin(list(ATTRIBUTION))]
    if len(main) and len(extra):
        trained = {"fdrmfl", "fedavg"}
        both = pd.concat([main, extra])
        both = both[(both["rule"] == "auto") & both["method"].isin(trained)]
        lines += [
            "## Where the gain comes from (sites, val last, rule auto)",
            "",
            "Same data, seeds and warm start; only the training differs.",
            "",
            "| run | method | chosen regressor(s) | test R² pooled | test R² per client |",
            "|---|---|---|---|---|",
        ]
        for (setting, method), m in both.groupby(["setting", "method"], sort=False):
            regs = ", ".join(f"{k}×{v}" for k, v in m["regressor"].value_counts().items())
            label = setting.split(": ")[1] if ": " in setting else "FDRMFL (full)"
            lines.append(
                f"| {label} | {method} | {regs} | {_ms(m['pooled_r2'])} | {_ms(m['client_r2'])} |"
            )
        lines.append("")
    for setting, g in per_seed[per_seed["setting"].isin(list(SETTINGS))].groupby(
        "setting", sort=False
    ):
        share = g["val_outside_share"].mean()
        lines += [
            f"## {setting}",
            "",
            f"Validation targets outside their client's training range: {100 * share:.1f} % "
            "(rule `auto` restricts the choice to ridge, PLS and the model's head above 10 %).",
            "",
            "| rule | method | chosen regressor(s) | test R² pooled | test R² per client |",
            "|---|---|---|---|---|",
        ]
        for (rule, method), m in g.groupby(["rule", "method"], sort=True):
            regs = ", ".join(f"{k}×{v}" for k, v in m["regressor"].value_counts().items())
            lines.append(
                f"| {rule} | {method} | {regs} | {_ms(m['pooled_r2'])} | {_ms(m['client_r2'])} |"
            )
        lines.append("")
        for rule in RULES:
            r = g[g["rule"] == rule].pivot_table(index="seed", columns="method", values="pooled_r2")
            if {"fdrmfl", "raw_pooled"} <= set(r.columns):
                wins = int((r["fdrmfl"] >= r["raw_pooled"]).sum())
                lines.append(
                    f"- rule `{rule}`: FDRMFL's chosen pooled test R² ≥ pooled ridge's in "
                    f"{wins} of {len(r)} seeds (mean difference "
                    f"{(r['fdrmfl'] - r['raw_pooled']).mean():+.3f})."
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--settings", nargs="*", default=list(ALL), choices=list(ALL))
    ap.add_argument("--from-partial", action="store_true", help="only rebuild the tables")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("kedro", "fdrmfl_pipeline", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    store = OUT.with_suffix(".parquet")
    rows = pd.read_parquet(store) if store.exists() else pd.DataFrame()
    done = (
        set() if rows.empty else set(map(tuple, rows[["setting", "seed"]].drop_duplicates().values))
    )
    if not args.from_partial:
        todo = [(s, k) for s in args.settings for k in range(args.seeds) if (s, k) not in done]
        for i, (setting, seed) in enumerate(todo, 1):
            cell = run_cell(setting, seed)
            rows = pd.concat([rows, cell], ignore_index=True)
            tmp = store.with_suffix(".tmp")
            rows.to_parquet(tmp, index=False)
            tmp.replace(store)  # one finished cell at a time: an interrupted grid keeps its cells
            logger.info(
                "[%d/%d] %s seed %d: %.0fs", i, len(todo), setting, seed, cell["seconds"].iloc[0]
            )
    if rows.empty:
        logger.error("no finished cells in %s", store)
        return
    per_seed = summarise(rows)
    command = ".venv/bin/python experiments/own_federation.py" + (
        f" --seeds {args.seeds}" if args.seeds != 5 else ""
    )
    OUT.with_suffix(".md").write_text(to_markdown(per_seed, rows, command) + "\n")
    logger.info("wrote %s", OUT.with_suffix(".md"))


if __name__ == "__main__":
    main()
