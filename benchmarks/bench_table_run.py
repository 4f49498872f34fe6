"""Wall and CPU time of the default job (``kedro run``, every pipeline) on a user's table.

    .venv/bin/python benchmarks/bench_table_run.py                     # 5000 rows x 50 columns
    .venv/bin/python benchmarks/bench_table_run.py --rows 20000 --columns 200

The table is generated (a 40-channel spectrum and a 10-value vector in plain columns, a target
that depends on both, with noise); the job is the project's defaults with only
``ingestion.source: table`` and the two modalities declared, run in a temporary copy of the
project. Prints a table and writes ``benchmarks/results/bench_table_run.{md,json}``. The bar for
the default run on 5 000 x 50 is 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
logger = logging.getLogger("bench_table_run")


def make_table(rows: int, columns: int, seed: int = 0) -> pd.DataFrame:
    """``columns`` inputs: 80 % a smooth spectrum, 20 % a vector; a target from both."""
    rng = np.random.default_rng(seed)
    n_spec = max(1, int(round(0.8 * columns)))
    n_vec = max(1, columns - n_spec)
    latent = rng.normal(size=(rows, 3))
    ch = np.arange(n_spec)
    bands = np.stack(
        [np.exp(-0.5 * ((ch - c) / 3.0) ** 2) for c in (0.2, 0.5, 0.8) * np.array(n_spec)]
    )
    spec = latent @ bands + rng.normal(0, 0.05, (rows, n_spec))
    vec = rng.normal(size=(rows, n_vec))
    y = latent[:, 0] + 0.5 * np.tanh(latent[:, 1]) + 0.3 * vec[:, 0] + rng.normal(0, 0.2, rows)
    df = pd.DataFrame(spec, columns=[f"s_{j:03d}" for j in range(n_spec)])
    for j in range(n_vec):
        df[f"v_{j:02d}"] = vec[:, j]
    df["target"] = y
    return df


def run(rows: int, columns: int) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "pyproject.toml", project)
        shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
        (project / "conf/local").mkdir()
        (project / "src").mkdir()
        table = project / "data/01_raw/table.csv"
        table.parent.mkdir(parents=True)
        make_table(rows, columns).to_csv(table, index=False)
        params = {
            "ingestion": {
                "source": "table",
                "table": {
                    "target": "target",
                    "modalities": {
                        "spec": {"pattern": r"s_\d+", "kind": "spectrum"},
                        "vec": {"pattern": r"v_\d+", "kind": "vector"},
                    },
                },
            }
        }
        bootstrap_project(project)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        with KedroSession.create(project_path=project, runtime_params=params) as s:
            s.run()
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        metrics = pd.read_parquet(
            sorted((project / "data/08_reporting/evaluation_metrics.parquet").glob("*/*"))[-1]
        )
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    pooled = metrics[(metrics["split"] == "test") & (metrics["scope"] == "pooled")]
    head = pooled[(pooled["method"] == "fdrmfl") & (pooled["regressor"] == "head")]
    return {
        "rows": rows,
        "columns": columns,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "fdrmfl_head_test_r2": round(float(head["r2"].iloc[0]), 3) if len(head) else None,
        "cpus": os.cpu_count(),
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--columns", type=int, default=50)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    result = run(args.rows, args.columns)
    table = pd.DataFrame([result])
    lines = [
        "# Default run on a generated table",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_table_run.py --rows {args.rows} "
        f"--columns {args.columns}`",
        "",
        "| " + " | ".join(table.columns) + " |",
        "|" + "---|" * len(table.columns),
        "| " + " | ".join(str(v) for v in table.iloc[0]) + " |",
        "",
        "Bar: the default run on 5 000 rows x 50 columns stays under 300 s on 2 cores.",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_table_run.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "bench_table_run.json").write_text(json.dumps(result, indent=2) + "\n")
    logger.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
