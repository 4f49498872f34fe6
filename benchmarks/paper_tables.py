"""Paper-protocol tables: FDRMFL, its ablations, federated strategies and classical baselines
over several seeds, next to the reference notebooks' numbers (FDRMFL_REFERENCE.md §8) and the
simple anchors (ANCHORS.md).

    .venv/bin/python benchmarks/paper_tables.py                 # 5 seeds, every experiment
    .venv/bin/python benchmarks/paper_tables.py --quick         # 2 seeds, fewer rounds and variants
    .venv/bin/python benchmarks/paper_tables.py --experiments paper_sim_f1 --seeds 3

Each (experiment, seed) runs the whole Kedro chain in a temporary copy of the project
(``kedro run --env <experiment>``), then the training -> regression -> evaluation chain again for
each variant. Every method uses the same splits (same seed). A method is represented by its
regressor with the lowest pooled *validation* MSE; RF-100 (the reference protocol) is also shown.
Writes ``benchmarks/results/paper_tables.md`` and ``.parquet`` (all metric rows).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
RESULTS = ROOT / "benchmarks" / "results"
SHARED_CORN = ROOT.parent / "shared" / "datasets" / "corn"
logger = logging.getLogger("paper_tables")

EXPERIMENTS = [
    "paper_sim_f1",
    "paper_sim_f2",
    "paper_sim_f3",
    "paper_sim_f1_dirichlet",
    "paper_sim_f1_target_shift",
    "paper_sim_f1_missing_modality",
    "paper_tecator_protein",
    "paper_tecator_moisture",
    "paper_tecator_fat",
    "paper_corn_moisture",
    "paper_corn_oil",
    "paper_corn_protein",
    "paper_corn_starch",
]
# name -> training overrides; "fdrmfl" runs with the full chain (baselines included)
VARIANTS = {
    "fdrmfl": {},
    "fdrmfl-no-mi": {"strategy": "fdrmfl", "lambda_mi": 0.0},
    "fdrmfl-no-kl": {"strategy": "fdrmfl", "lambda_kl": 0.0},
    "fdrmfl-no-con": {"strategy": "fdrmfl", "lambda_con": 0.0},
    "fedavg": {"strategy": "fedavg"},
    "fedprox": {"strategy": "fedprox"},
    "moon": {"strategy": "moon"},
    "local": {"strategy": "local"},
    "central": {"strategy": "central"},
}
QUICK_VARIANTS = ["fdrmfl", "fdrmfl-no-mi", "fedavg", "local", "central"]

# Reference notebooks' FDRMFL mean test MSE (single unseeded runs), in their units:
# simulations in y units; Tecator in z-scored units; corn in min-max units (§8).
REFERENCE = {
    "paper_sim_f1": ("0.2892-0.3872", None),
    "paper_sim_f2": ("1.1394-1.2115", None),
    "paper_sim_f3": ("0.3921-0.4360", None),
    "paper_tecator_protein": ("0.9073 z", 9.12),
    "paper_tecator_moisture": ("0.1143 z", 98.0),
    "paper_tecator_fat": ("0.3335 z", 162.3),
    "paper_corn_moisture": ("0.0661 mm", 2.61),
    "paper_corn_oil": ("0.0713 mm", 0.553),
    "paper_corn_protein": ("0.0611 mm", 4.23),
    "paper_corn_starch": ("0.0387 mm", 13.29),
}
# strongest simple anchor per experiment (ANCHORS.md), original units
ANCHOR = {
    "paper_sim_f1": ("pooled ridge", 0.201),
    "paper_sim_f2": ("pooled ridge", 0.682),
    "paper_sim_f3": ("chance (linear)", 0.375),
    "paper_tecator_protein": ("pooled PLS", 0.47),
    "paper_tecator_moisture": ("pooled PLS", 1.60),
    "paper_tecator_fat": ("pooled PLS", 1.71),
    "paper_corn_moisture": ("per-client PLS", 0.0012),
    "paper_corn_oil": ("per-client PLS", 0.0109),
    "paper_corn_protein": ("per-client PLS", 0.0434),
    "paper_corn_starch": ("per-client PLS", 0.214),
}


def _project(tmp: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp)
    shutil.copytree(ROOT / "conf", tmp / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp / "conf/local").mkdir()
    (tmp / "src").mkdir()
    (tmp / "data/01_raw/tecator").mkdir(parents=True)
    shutil.copy(ROOT / "data/01_raw/tecator/tecator.csv", tmp / "data/01_raw/tecator/")
    return tmp


def _latest_metrics(project: Path) -> pd.DataFrame:
    return pd.read_parquet(
        sorted((project / "data/08_reporting/evaluation_metrics.parquet").glob("*/*"))[-1]
    )


def run_experiment(
    exp: str, seed: int, variants: list[str], quick: bool, corn_dir: Path
) -> pd.DataFrame:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    frames = []
    with tempfile.TemporaryDirectory(prefix=f"{exp}-") as tmp:
        project = _project(Path(tmp))
        bootstrap_project(project)
        base: dict = {"seed": seed, "paths": {"corn_dir": str(corn_dir)}}
        if quick:
            base["baselines"] = {"extractors": ["pca90", "pca_d", "pls", "raw"], "vae_epochs": 10}
        for i, name in enumerate(variants):
            overrides = dict(VARIANTS[name])
            params = {**base, "training": overrides, "regression": {"method": name}}
            pipes = None if i == 0 else ["training", "regression", "evaluation"]
            t0 = time.perf_counter()
            with KedroSession.create(project_path=project, env=exp, runtime_params=params) as s:
                s.run(pipeline_names=pipes)
            m = _latest_metrics(project)
            if i > 0:
                m = m[m["method"] == name]
            frames.append(m.assign(variant=name, seconds=time.perf_counter() - t0))
            logger.info("%s seed %d %-14s %.0fs", exp, seed, name, time.perf_counter() - t0)
    return pd.concat(frames, ignore_index=True)


def summarise(all_rows: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and method: mean +- sd over seeds of the mean-over-clients test MSE and R2,
    for the regressor chosen on validation, and for RF-100."""
    rows = []
    client = all_rows[all_rows["scope"] == "client"]
    for (exp, method), g in client.groupby(["experiment", "method"]):
        val = g[g["split"] == "val"].groupby("regressor")["mse"].mean()
        choices = {"best (val)": val.idxmin()} if len(val) else {}
        if "rf" in set(g["regressor"]):
            choices["rf"] = "rf"
        for label, reg in choices.items():
            t = g[(g["split"] == "test") & (g["regressor"] == reg)]
            per_seed = t.groupby("seed").agg(mse=("mse", "mean"), r2=("r2", "mean"))
            rows.append(
                {
                    "experiment": exp,
                    "method": method,
                    "pick": label,
                    "regressor": reg,
                    "seeds": len(per_seed),
                    "test_mse_mean": per_seed["mse"].mean(),
                    "test_mse_sd": per_seed["mse"].std(ddof=1),
                    "test_r2_mean": per_seed["r2"].mean(),
                }
            )
    return pd.DataFrame(rows)


def to_markdown(summary: pd.DataFrame) -> str:
    out = [
        "# Paper-protocol tables",
        "",
        "Test MSE in the target's original units (mean over clients; mean ± sd over seeds), R² "
        "likewise. `best (val)`: the method's regressor with the lowest validation MSE. "
        "`ref units`: our MSE converted to the reference notebooks' units (Tecator: ÷ full-data "
        "variance, i.e. z units; corn: ÷ squared full-data range, i.e. min-max units).",
        "",
    ]
    for exp, g in summary.groupby("experiment", sort=False):
        ref, div = REFERENCE.get(exp, ("-", None))
        anchor = ANCHOR.get(exp)
        out.append(f"## {exp}")
        out.append("")
        out.append(
            f"Reference notebooks' FDRMFL: {ref}. Strongest simple anchor: "
            f"{anchor[0] + ' ' + str(anchor[1]) if anchor else '-'}."
        )
        out.append("")
        out.append("| method | pick | regressor | seeds | test MSE | ref units | R² |")
        out.append("|---|---|---|---|---|---|---|")
        for r in g.sort_values(["pick", "test_mse_mean"]).itertuples():
            conv = f"{r.test_mse_mean / div:.4f}" if div else "-"
            sd = "" if np.isnan(r.test_mse_sd) else f" ± {r.test_mse_sd:.4f}"
            out.append(
                f"| {r.method} | {r.pick} | {r.regressor} | {r.seeds} | {r.test_mse_mean:.4f}{sd} | "
                f"{conv} | {r.test_r2_mean:.3f} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--experiments", nargs="*", default=EXPERIMENTS)
    ap.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default 5; --quick: 2)"
    )
    ap.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="2 seeds, fewer variants and baselines")
    ap.add_argument("--corn-dir", type=Path, default=SHARED_CORN)
    ap.add_argument("--out", default="paper_tables")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("kedro", "fdrmfl_pipeline", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    seeds = args.seeds or (2 if args.quick else 5)
    variants = args.variants or (QUICK_VARIANTS if args.quick else list(VARIANTS))
    if variants[0] != "fdrmfl":
        variants = ["fdrmfl", *[v for v in variants if v != "fdrmfl"]]
    frames = []
    for exp in args.experiments:
        if "corn" in exp and not (args.corn_dir / "corn_m5.csv").exists():
            logger.warning("skipping %s: corn data not found at %s", exp, args.corn_dir)
            continue
        for seed in range(seeds):
            frames.append(run_experiment(exp, seed, variants, args.quick, args.corn_dir))
    all_rows = pd.concat(frames, ignore_index=True)
    summary = summarise(all_rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_rows.to_parquet(RESULTS / f"{args.out}.parquet")
    md = to_markdown(summary)
    (RESULTS / f"{args.out}.md").write_text(md + "\n")
    sys.stdout.write(md + "\n")


if __name__ == "__main__":
    main()
