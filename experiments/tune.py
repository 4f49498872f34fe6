"""Run each experiment's tuning job and keep its result.

    .venv/bin/python experiments/tune.py --experiments paper_tecator_fat paper_corn_oil
    .venv/bin/python experiments/tune.py --trials 10      # fewer trials than the registry says

Each job is the experiment's registry configuration with the ingestion, partitioning and tuning
pipelines, in a temporary copy of the project, with the project seed. The study sees the
training and validation rows only (the tuning pipeline removes the test rows before building the
objective); its first trial is the environment's own setting, so the tuned values are never
worse on validation than the hand-set ones. Writes ``experiments/results/tuned/<experiment>.yml``
(the ``training:`` block ``tables.py`` trains the ``fdrmfl-tuned`` variant with, and the study's
summary) and ``experiments/results/tuning_summary.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import yaml

from fdrmfl_pipeline.best_params import flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables as pt  # noqa: E402
from registry import DEFAULT_EXPERIMENTS, EXPERIMENTS, TUNED, project_copy, tuning_params  # noqa: E402

logger = logging.getLogger("tune")


def tune_one(exp: str, trials: int | None, corn_dir: str) -> dict:
    """Run one named job in a temporary project copy; return its best parameters and trials."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    pt._quiet_logging()
    env, pipelines, params = tuning_params(exp, trials)
    params.setdefault("paths", {})["corn_dir"] = corn_dir
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"tune-{exp}-") as tmp:
        project = project_copy(Path(tmp))
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
            s.run(pipeline_names=pipelines)
        best_file = sorted((project / "data/06_models/best_params.yml").glob("*/*"))[-1]
        best = yaml.safe_load(best_file.read_text())
        trials_file = sorted((project / "data/07_model_output/tuning_trials.parquet").glob("*/*"))
        frame = pd.read_parquet(trials_file[-1])
    complete = frame[frame["state"] == "COMPLETE"].sort_values("number")
    start = complete[complete["number"] == 0]["value"]
    best["study"]["start_value"] = float(start.iloc[0]) if len(start) else None
    best["study"]["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    best["study"]["job"] = f"experiments/tune.py --experiments {exp}"
    logger.info("%s: %s", exp, best["study"])
    return {"experiment": exp, "best": best}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--experiments", nargs="*", default=DEFAULT_EXPERIMENTS)
    ap.add_argument("--trials", type=int, default=None, help="override each job's n_trials")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--corn-dir", type=Path, default=pt.SHARED_CORN)
    args = ap.parse_args()
    pt._quiet_logging()
    corn_dir = args.corn_dir.resolve()
    exps = [
        e
        for e in args.experiments
        if not EXPERIMENTS[e].needs_corn or (corn_dir / "corn_m5.csv").exists()
    ]
    TUNED.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(tune_one, e, args.trials, str(corn_dir)): e for e in exps}
        for fut in as_completed(futures):
            exp = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # one failed study must not lose the others
                logger.error("%s failed: %r", exp, exc)
                continue
            header = (
                f"# Tuned on validation only by experiments/tune.py "
                f"({time.strftime('%Y-%m-%d')}); experiments/tables.py trains 'fdrmfl-tuned' with it\n"
            )
            (TUNED / f"{exp}.yml").write_text(header + yaml.safe_dump(res["best"], sort_keys=False))
    summary_table(sorted(f.stem for f in TUNED.glob("*.yml")))


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_table(exps: list[str]) -> None:
    """``benchmarks/results/tuning_summary.md`` from every stored study."""
    lines = [
        "# Tuning studies (validation only)",
        "",
        "Written by `experiments/tune.py` from `experiments/results/tuned/*.yml`. Objective: mean "
        "over clients of the head's validation MSE at the early-stopping round (seed 0's split; "
        "test rows removed). `start`: trial 0, the environment's hand-set values.",
        "",
        "| experiment | finished trials | start (hand-set) | best | tuned values | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for exp in exps:
        b = yaml.safe_load((TUNED / f"{exp}.yml").read_text())
        st = b["study"]
        vals = ", ".join(f"{k}={_short(v)}" for k, v in flatten(b["training"]).items())
        start = st.get("start_value")
        lines.append(
            f"| {exp} | {st.get('finished_trials')} | "
            f"{'-' if start is None else f'{start:.4g}'} | {st.get('best_value', 0):.4g} | "
            f"{vals} | {st.get('minutes')} |"
        )
    out = pt.RESULTS / "tuning_summary.md"
    out.write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
