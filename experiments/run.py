"""Run one experiment of the registry (a named, reproducible job) in this project.

    .venv/bin/python experiments/run.py tecator_standard_fat --variant fdrmfl-pca-anchored
    .venv/bin/python experiments/run.py paper_sim_f2 --seed 11          # same job, another seed
    .venv/bin/python experiments/run.py paper_corn_oil --corn-dir /data/corn
    .venv/bin/python experiments/run.py paper_sim_f1 --tune              # its tuning job
    .venv/bin/python experiments/run.py paper_sim_f1 --print             # the kedro command

The job is the experiment's protocol environment plus its registry parameters and the variant's
overrides; ``--seed`` and ``--params`` are merged into them (a plain ``kedro run --params``
would replace the whole parameter string). Results land in this project's data/ folders, as
after ``kedro run``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import ROOT, VARIANTS, merge, run_params, tuning_params  # noqa: E402

from fdrmfl_pipeline.best_params import flatten, parse_params_string  # noqa: E402

logger = logging.getLogger("experiments.run")


def _params_string(params: dict) -> str:
    from fdrmfl_pipeline.best_params import _fmt

    return ",".join(f"{k}={_fmt(v)}" for k, v in flatten(params).items())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("experiment")
    ap.add_argument("--variant", default="fdrmfl", choices=sorted(VARIANTS))
    ap.add_argument("--seed", type=int, default=None, help="default: the project seed")
    ap.add_argument("--corn-dir", type=Path, default=None)
    ap.add_argument("--pipelines", default=None, help="comma-separated; default: all")
    ap.add_argument("--params", default=None, help="extra a.b=v,... merged into the job's")
    ap.add_argument("--tune", action="store_true", help="run the experiment's tuning job")
    ap.add_argument("--print", action="store_true", help="print the equivalent kedro command")
    args = ap.parse_args(argv)
    if args.tune:
        env, pipelines, params = tuning_params(args.experiment)
        if args.seed is not None:
            params["seed"] = args.seed
    else:
        env, params = run_params(args.experiment, args.variant, args.seed, args.corn_dir)
        pipelines = args.pipelines.split(",") if args.pipelines else None
    params = merge(params, parse_params_string(args.params))
    if args.print:
        pipes = f" --pipelines {','.join(pipelines)}" if pipelines else ""
        sys.stdout.write(f'kedro run --env {env}{pipes} --params "{_params_string(params)}"\n')
        return
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    logger.info(
        "experiment %s, variant %s: --env %s, params %s", args.experiment, args.variant, env, params
    )
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=env, runtime_params=params) as session:
        session.run(pipeline_names=pipelines)


if __name__ == "__main__":
    main()
