"""Experiment tables: FDRMFL against the accuracy targets, next to the reference notebooks'
numbers, the simple anchors and the same anchors refitted on the same splits. Experiments,
variants, targets and anchors come from ``experiments/registry.yml``.

    .venv/bin/python experiments/tables.py                 # 5 seeds, the default experiments
    .venv/bin/python experiments/tables.py --quick         # 2 seeds, fewer baselines
    .venv/bin/python experiments/tables.py --experiments paper_sim_f1 --seeds 3 \
        --variants fdrmfl warm-start-only fedavg fdrmfl-no-mi
    .venv/bin/python experiments/tables.py ... --resume    # skip cells already finished

Each (experiment, seed) cell runs the whole Kedro chain in a temporary copy of the project (the
experiment's protocol environment and registry parameters), then the training -> regression ->
evaluation chain again for each further variant; ``--jobs`` cells run in parallel. Every method
uses the same splits (same seed). A method is represented by its regressor with the lowest
*validation* MSE (mean over clients); RF-100 (the reference protocol) is also shown. Every
finished cell is appended to ``<out>.partial.parquet`` at once (``--resume`` skips those);
writes ``experiments/results/<out>.md``, ``_summary.csv`` and ``.parquet`` (all metric rows).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import (  # noqa: E402
    DEFAULT_EXPERIMENTS,
    DEFAULT_VARIANTS,
    EXPERIMENTS,
    FDRMFL_CONFIGS,
    FEDERATED_CONFIGS,
    QUICK_VARIANTS,
    RESULTS,
    SHARED_CORN,
    VARIANTS,
    latest,
    project_copy,
    run_params,
    tuned_overrides,
    tuning_study,
)

logger = logging.getLogger("tables")


def variants_for(exp: str, variants: list[str], explicit: bool) -> list[str]:
    """The simulations' runs are the long ones: by default they skip the warm-start-only
    ablation (``--variants`` asks for it explicitly)."""
    if tuned_overrides(exp) is None:
        variants = [v for v in variants if v != "fdrmfl-tuned"]
    if explicit or "sim" not in exp:
        return variants
    return [v for v in variants if v != "warm-start-only"]


def baselines_for(exp: str, quick: bool) -> dict:
    """The registry's baselines for the experiment's protocol (per-client PLS and ridge, the
    train mean, the pooled anchors); a quick run keeps PLS and raw inputs only."""
    b = dict(EXPERIMENTS[exp].baselines)
    if quick:
        b["extractors"] = ["pls", "raw"]
    return b


def run_experiment(
    exp: str, seed: int, variants: list[str], quick: bool, corn_dir: str
) -> pd.DataFrame:
    """One (experiment, seed): the whole chain, then training -> regression -> evaluation per
    further variant, in a temporary copy of the project. Returns every metric row."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    _quiet_logging()
    frames = []
    with tempfile.TemporaryDirectory(prefix=f"{exp}-") as tmp:
        project = project_copy(Path(tmp))
        bootstrap_project(project)
        extra = {"baselines": baselines_for(exp, quick)}
        for i, name in enumerate(variants):
            env, params = run_params(exp, name, seed, corn_dir, extra)
            pipes = None if i == 0 else ["training", "regression", "evaluation"]
            t0 = time.perf_counter()
            with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
                s.run(pipeline_names=pipes)
            m = latest(project, "data/08_reporting/evaluation_metrics.parquet")
            if i > 0:
                m = m[m["method"] == name]
            frames.append(m.assign(variant=name, seconds=time.perf_counter() - t0))
            logger.info("%s seed %d %-18s %.0fs", exp, seed, name, time.perf_counter() - t0)
    return pd.concat(frames, ignore_index=True)


def _quiet_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("kedro", "fdrmfl_pipeline", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _per_seed(g: pd.DataFrame, exp: str, reg: str) -> pd.DataFrame:
    """Per seed: the target metric on test (mean of client MSEs, or RMSE over all test rows)."""
    metric = EXPERIMENTS[exp].metric
    t = g[(g["split"] == "test") & (g["regressor"] == reg)]
    if metric == "rmse_pooled":
        t = t[t["scope"] == "pooled"]
        return t.groupby("seed").agg(value=("rmse", "mean"), r2=("r2", "mean"))
    t = t[t["scope"] == "client"]
    return t.groupby("seed").agg(value=("mse", "mean"), r2=("r2", "mean"))


def summarise(all_rows: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and method: mean +- sd over seeds of the experiment's metric and R2, for
    the regressor with the lowest validation MSE (mean over clients) and for RF-100."""
    rows = []
    for (exp, method), g in all_rows.groupby(["experiment", "method"], sort=False):
        cl = g[g["scope"] == "client"]
        val = cl[cl["split"] == "val"].groupby("regressor")["mse"].mean()
        choices = {"best (val)": val.idxmin()} if len(val) else {}
        if "rf" in set(g["regressor"]):
            choices["rf"] = "rf"
        for label, reg in choices.items():
            per_seed = _per_seed(g, exp, reg)
            v = cl[(cl["split"] == "val") & (cl["regressor"] == reg)]
            rows.append(
                {
                    "experiment": exp,
                    "method": method,
                    "pick": label,
                    "regressor": reg,
                    "seeds": len(per_seed),
                    "metric": EXPERIMENTS[exp].metric,
                    "test_mean": per_seed["value"].mean(),
                    "test_sd": per_seed["value"].std(ddof=1),
                    "test_r2_mean": per_seed["r2"].mean(),
                    "val_mse": v.groupby("seed")["mse"].mean().mean(),
                }
            )
    return pd.DataFrame(rows)


def _settings_label(exp: str, config: str) -> str:
    if config == "fdrmfl-tuned":
        return "tuned"
    if config == "fdrmfl-pca":
        return "hand-set, PCA warm start"
    if config == "fdrmfl-pca-anchored":
        return "PCA warm start, anchor_mu (val)"
    study = tuning_study(exp)
    if study is not None and study.get("study", {}).get("best_trial") == 0:
        return "hand-set (= study's best)"
    return "hand-set"


def _fmt(mean: float, sd: float) -> str:
    return f"{mean:.4g}" + ("" if np.isnan(sd) else f" ± {sd:.2g}")


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment: trained FDRMFL and the federated pick (each the configuration and
    regressor with the lowest validation MSE) against the target and the anchors."""
    out = []
    for exp, g in summary.groupby("experiment", sort=False):
        best = g[g["pick"] == "best (val)"].set_index("method")
        configs = [m for m in FDRMFL_CONFIGS if m in best.index]
        if not configs:
            continue
        # hand-set, tuned or PCA-started settings: whichever has the lower validation MSE
        config = min(configs, key=lambda m: best.loc[m, "val_mse"])
        # the same choice among every federated configuration, warm starts alone included
        fed_config = min(
            (m for m in FEDERATED_CONFIGS if m in best.index),
            key=lambda m: best.loc[m, "val_mse"],
        )
        ours, fed = best.loc[config], best.loc[fed_config]
        metric, bound = EXPERIMENTS[exp].metric, EXPERIMENTS[exp].bound
        pooled = best.loc["raw_pooled"] if "raw_pooled" in best.index else None
        fpls = best.loc["warm-start-only"] if "warm-start-only" in best.index else None
        anchor = EXPERIMENTS[exp].anchor
        out.append(
            {
                "experiment": exp,
                "metric": "test RMSE, all rows" if metric == "rmse_pooled" else "test MSE",
                "FDRMFL": _fmt(ours["test_mean"], ours["test_sd"]),
                "regressor": ours["regressor"],
                "settings (val)": _settings_label(exp, config),
                "FDRMFL met": _met(ours, bound),
                "federated pick (val)": "same"
                if fed_config == config
                else f"{_fmt(fed['test_mean'], fed['test_sd'])}: {fed_config}, {fed['regressor']}",
                "warm start alone": "-" if fpls is None else f"{fpls['test_mean']:.4g}",
                "pooled anchor, same splits": "-"
                if pooled is None
                else f"{pooled['test_mean']:.4g} ({pooled['regressor']})",
                "simple anchor": f"{anchor[0]} {anchor[1]}" if anchor else "-",
                "target": "-" if bound is None else f"≤ {bound}",
                "met": _met(fed, bound),
                "seeds": int(ours["seeds"]),
            }
        )
    return pd.DataFrame(out)


def _met(row: pd.Series, bound: float | None) -> str:
    return "-" if bound is None else ("yes" if row["test_mean"] <= bound else "no")


def _md_table(df: pd.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return lines


def to_markdown(summary: pd.DataFrame, command: str, minutes: float) -> str:
    out = [
        "# Paper-protocol tables",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} (2-core machine, "
        f"{minutes:.0f} min). Mean ± sd over seeds; every method in a row uses the same splits "
        "and seeds. Simulations, Tecator and corn paper protocols: test MSE in the target's "
        "original units, mean over clients. `tecator_standard_*`: RMSE (%) over all 43 test "
        "rows of the StatLib split. `best (val)`: the method's regressor with the lowest "
        "validation MSE (test data never chooses anything). `raw_pooled`: PLS / ridge fitted "
        "on all clients' raw inputs pooled — an anchor that needs the data in one place, not a "
        "federated method. `warm-start-only`: the federated PLS or lasso warm start alone (rounds 0). "
        "`fdrmfl-pca` / `pca-warm-start-only`: FDRMFL from (or only) the federated PCA warm start "
        "on the centred input (`training.x_scaling: per_modality`). `fdrmfl-tuned`: "
        "trained with the values of the experiment's Optuna study (`experiments/results/tuned/`, validation "
        "only); the targets table's `FDRMFL` takes `fdrmfl`, `fdrmfl-tuned` or `fdrmfl-pca` "
        "(where run), whichever has the lower validation MSE (`settings (val)`); its "
        "`federated pick` makes the same choice among every federated configuration, the warm "
        "starts alone (0 FDRMFL rounds) included, and `met` judges that pick. "
        "`pca-gp-evidence`: the PCA warm start alone with 20 components, `gp_fed` on the leading "
        "ones its marginal likelihood on the train rows prefers. `fdrmfl-pca-anchored`: FDRMFL "
        "trained from that start with its encoders and fusion pulled toward it each round "
        "(`training.anchor_mu`, L2-SP), the same `gp_fed`. `ref units`: our "
        "MSE in the reference notebooks' units (Tecator ÷ full-data variance = z units; corn ÷ "
        "squared full-data range = min-max units).",
        "",
        "## Targets",
        "",
        *_md_table(headline(summary)),
        "",
    ]
    for exp, g in summary.groupby("experiment", sort=False):
        ref, div = EXPERIMENTS[exp].ref
        anchor = EXPERIMENTS[exp].anchor
        out.append(f"## {exp}")
        out.append("")
        out.append(
            f"Reference notebooks' FDRMFL: {ref}. Strongest simple anchor: "
            f"{anchor[0] + ' ' + str(anchor[1]) if anchor else '-'}."
        )
        out.append("")
        metric = "test RMSE (all rows)" if EXPERIMENTS[exp].metric == "rmse_pooled" else "test MSE"
        out.append(
            f"| method | pick | regressor | seeds | val MSE (what chooses) | {metric} | ref units "
            "| R² |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for r in g.sort_values(["pick", "test_mean"]).itertuples():
            conv = f"{r.test_mean / div:.4f}" if div and r.metric == "mse" else "-"
            out.append(
                f"| {r.method} | {r.pick} | {r.regressor} | {r.seeds} | {r.val_mse:.4g} | "
                f"{_fmt(r.test_mean, r.test_sd)} | {conv} | {r.test_r2_mean:.3f} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--experiments", nargs="*", default=DEFAULT_EXPERIMENTS)
    ap.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default 5; --quick: 2)"
    )
    ap.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS))
    ap.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + N - 1"
    )
    ap.add_argument("--quick", action="store_true", help="2 seeds, fewer variants and baselines")
    ap.add_argument("--jobs", type=int, default=2, help="(experiment, seed) runs in parallel")
    ap.add_argument("--corn-dir", type=Path, default=SHARED_CORN)
    ap.add_argument("--out", default="paper_tables")
    ap.add_argument(
        "--resume", action="store_true", help="skip (experiment, seed) cells already finished"
    )
    ap.add_argument(
        "--from-partial",
        action="store_true",
        help="only rebuild the tables from <out>.partial.parquet (runs finished so far)",
    )
    args = ap.parse_args()
    _quiet_logging()
    seeds = args.seeds or (2 if args.quick else 5)
    variants = args.variants or (QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)
    if variants[0] != "fdrmfl":
        variants = ["fdrmfl", *[v for v in variants if v != "fdrmfl"]]
    corn_dir = args.corn_dir.resolve()  # the runs happen in temporary project copies
    RESULTS.mkdir(parents=True, exist_ok=True)
    partial = RESULTS / f"{args.out}.partial.parquet"
    done: set[tuple[str, int]] = set()
    if args.resume and partial.exists():
        prev = pd.read_parquet(partial)
        done = {(e, int(s)) for e, s in prev[["experiment", "seed"]].drop_duplicates().values}
        logger.info("resuming: %d finished cells in %s", len(done), partial)
    tasks = []
    for exp in args.experiments:
        if EXPERIMENTS[exp].needs_corn and not (corn_dir / "corn_m5.csv").exists():
            logger.warning("skipping %s: corn data not found at %s", exp, corn_dir)
            continue
        vs = variants_for(exp, variants, args.variants is not None)
        tasks += [
            (exp, seed, vs)
            for seed in range(args.first_seed, args.first_seed + seeds)
            if (exp, seed) not in done
        ]
    t0 = time.perf_counter()
    frames, failed = [], []
    if done:
        frames = [pd.read_parquet(partial)]
    if args.from_partial:
        frames = [pd.read_parquet(partial)]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {
                pool.submit(run_experiment, e, s, vs, args.quick, str(corn_dir)): (e, s)
                for e, s, vs in tasks
            }
            for i, fut in enumerate(as_completed(futures), 1):
                e, s = futures[fut]
                try:
                    frames.append(fut.result())
                except Exception as exc:  # one broken run must not lose the others
                    failed.append((e, s, repr(exc)[:300]))
                    logger.error("%s seed %d failed: %r", e, s, exc)
                    continue
                # every finished run is on disk at once (--from-partial rebuilds the tables)
                pd.concat(frames, ignore_index=True).to_parquet(partial)
                logger.info("done %d/%d: %s seed %d", i, len(tasks), e, s)
    if not frames:
        raise SystemExit(f"every run failed: {failed}")
    all_rows = pd.concat(frames, ignore_index=True)
    order = {e: i for i, e in enumerate(args.experiments)}
    all_rows = all_rows.sort_values(
        ["experiment", "seed"], key=lambda c: c.map(order) if c.name == "experiment" else c
    )
    summary = summarise(all_rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_rows.reset_index(drop=True).to_parquet(RESULTS / f"{args.out}.parquet")
    summary.to_csv(RESULTS / f"{args.out}_summary.csv", index=False)
    command = ".venv/bin/python experiments/tables.py " + " ".join(sys.argv[1:])
    md = to_markdown(summary, command.strip(), (time.perf_counter() - t0) / 60)
    if failed:
        md += "\n\n## Failed runs\n\n" + "\n".join(f"- {e} seed {s}: {why}" for e, s, why in failed)
    (RESULTS / f"{args.out}.md").write_text(md + "\n")
    sys.stdout.write(md + "\n")


if __name__ == "__main__":
    main()
