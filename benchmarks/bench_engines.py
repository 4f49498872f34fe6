"""Wall time of the same training job on the three engines: in-process, Flower simulation (Ray)
and a real local Flower deployment (SuperLink + one SuperNode per client on 127.0.0.1).

    .venv/bin/python benchmarks/bench_engines.py                  # 3 and 10 clients
    .venv/bin/python benchmarks/bench_engines.py --clients 3 --rounds 2
    .venv/bin/python benchmarks/bench_engines.py --clients 10 --rounds 30 \
        --engines inprocess flower-simulation --out bench_engines_30rounds
    .venv/bin/python benchmarks/bench_engines.py --clients 100 --rounds 50 --epochs 3 \
        --scheme quantity_skew --engines inprocess flower-simulation --out bench_engines_scale

Job: reference simulation f1 (2000 train + 500 test), ``paper`` partition, FDRMFL with every
term from the project's default warm start (its aggregates are Flower queries on both Flower
engines), ``--rounds`` rounds x ``--epochs`` local epochs. Needs the flower extra. Prints a table with
the ratio to in-process and writes ``benchmarks/results/bench_engines.{md,json}``. The deployment
time includes ingestion and partitioning, starting and stopping the SuperLink, SuperNodes and
ServerApp. Each deployment is traced (``fdrmfl_pipeline.flower.trace``): a second table splits
its time into phases, and the median exchange into its steps, per message kind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
logger = logging.getLogger("bench_engines")


def _project(tmp: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp)
    shutil.copytree(ROOT / "conf", tmp / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp / "conf/local").mkdir()
    (tmp / "src").mkdir()
    shutil.copytree(ROOT / "flower_app", tmp / "flower_app")
    return tmp


def machine() -> str:
    """The machine and the versions a table was measured with."""
    import platform
    from importlib.metadata import version

    cores = os.cpu_count()
    libs = ", ".join(f"{p} {version(p)}" for p in ("torch", "flwr", "ray"))
    return f"{platform.machine()}, {cores} cores, python {platform.python_version()}, {libs}"


def _typed(training):
    """Kedro hands a validated TrainingParams, or the raw dict when the context skipped validation."""
    from fdrmfl_pipeline.params import TrainingParams

    return (
        training
        if isinstance(training, TrainingParams)
        else TrainingParams.model_validate(dict(training))
    )


# flower-deployment forks warm ClientApps (the default); -cold starts one process per message
ENGINES = ("inprocess", "flower-simulation", "flower-deployment", "flower-deployment-cold")


def _messages(run_dir: Path) -> int:
    """Messages the SuperNodes received (their logs), i.e. ClientApp runs."""
    return sum(
        log.read_text(errors="replace").count("Receiving: ")
        for log in run_dir.glob("supernode-*.log")
    )


def _peak_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its finished children (Ray workers), MiB."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids


def bench(
    clients: int, rounds: int, epochs: int, engines=ENGINES, scheme: str = "paper"
) -> list[dict]:
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from fdrmfl_pipeline.core.engine import run_federated
    from fdrmfl_pipeline.core.modalities import from_arrow
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.flower.deploy import federate_local
    from fdrmfl_pipeline.flower.server_app import load_result
    from fdrmfl_pipeline.flower.simulation import simulate_training
    from fdrmfl_pipeline.flower.trace import summarize

    params = {  # every round runs (no early stopping), so the job has the length asked for
        "training": {
            "federation": {"rounds": rounds, "early_stopping": {"enabled": False}},
            "optimizer": {"local_epochs": epochs},
        },
        "partitioning": {"n_clients": clients, "scheme": scheme},
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = _project(Path(tmp))
        bootstrap_project(project)
        with KedroSession.create(project_path=project, runtime_params=params) as s:
            s.run(pipeline_names=["ingestion", "partitioning"])
        with KedroSession.create(project_path=project, runtime_params=params) as s:
            ctx = s.load_context()
            table, assign = (
                ctx.catalog.load("multimodal_dataset"),
                ctx.catalog.load("client_assignments"),
            )
            training, seed = _typed(ctx.params["training"]), ctx.params["seed"]
        data = from_arrow(table)
        setup = TrainingSetup.from_params(training, seed, data)
        setup.setup_torch()
        cl, scalers = setup.clients(data, assign, seed)

        # every engine runs the same job, the project's warm start included
        t0 = time.perf_counter()
        init = setup.initial_state(cl, seed)
        ref = run_federated(
            setup.model, cl, scalers, setup.local, setup.federation, init_state=init
        )
        rows.append(
            {
                "engine": "inprocess",
                "seconds": time.perf_counter() - t0,
                "peak_rss_mib": _peak_mib()[0],
            }
        )

        if "flower-simulation" in engines:
            t0 = time.perf_counter()
            sim, _ = simulate_training(table, assign, setup, Path(tmp) / "sim")
            rows.append(
                {
                    "engine": "flower-simulation",
                    "seconds": time.perf_counter() - t0,
                    "identical_to_inprocess": all(
                        torch.equal(ref.global_state[k], sim.global_state[k])
                        for k in ref.global_state
                    ),
                    # the server process and the largest finished Ray worker
                    "peak_rss_mib": max(_peak_mib()),
                }
            )
        for engine in ("flower-deployment", "flower-deployment-cold"):
            if engine not in engines:
                continue
            trace = Path(tmp) / f"{engine}.trace.jsonl"
            os.environ["FDRMFL_TRACE"] = str(trace)  # every process it starts inherits it
            t0 = time.perf_counter()
            try:
                run_dir = federate_local(
                    project, clients, params=params, warm=engine == "flower-deployment"
                )
            finally:
                os.environ.pop("FDRMFL_TRACE", None)
            seconds = time.perf_counter() - t0
            _, dep_state = load_result(run_dir)
            rows.append(
                {
                    "engine": engine,
                    "seconds": seconds,
                    "identical_to_inprocess": all(
                        torch.equal(ref.global_state[k], dep_state[k]) for k in ref.global_state
                    ),
                    "messages": _messages(run_dir),
                    "trace": summarize(str(trace)),
                }
            )
    base = rows[0]["seconds"]
    rows[0]["identical_to_inprocess"] = True
    for r in rows:
        r.update(
            clients=clients,
            rounds=rounds,
            local_epochs=epochs,
            ratio_vs_inprocess=r["seconds"] / base,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, nargs="*", default=[3, 10])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--scheme", default="paper", help="partitioning.scheme (e.g. quantity_skew)")
    ap.add_argument("--out", default="bench_engines", help="results file name (no suffix)")
    ap.add_argument(
        "--max-ratio",
        nargs="*",
        default=[],
        metavar="ENGINE=X",
        help="regression check: exit 1 when ENGINE takes more than X times in-process, e.g. "
        "flower-deployment=12 flower-simulation=6 (ratios, not absolute times)",
    )
    args = ap.parse_args()
    bounds = {}
    for item in args.max_ratio:
        engine, _, bound = item.partition("=")
        if engine not in ENGINES or not bound:
            ap.error(f"--max-ratio {item!r}: expected ENGINE=X with ENGINE one of {ENGINES}")
        bounds[engine] = float(bound)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    rows = []
    for k in args.clients:
        rows.extend(bench(k, args.rounds, args.epochs, args.engines, args.scheme))
    lines = [
        "| clients | engine | seconds | s/round | x in-process | identical weights | peak RSS MiB | messages |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else ""
        lines.append(
            f"| {r['clients']} | {r['engine']} | {r['seconds']:.1f} | "
            f"{r['seconds'] / r['rounds']:.2f} | {r['ratio_vs_inprocess']:.1f} | "
            f"{'yes' if r['identical_to_inprocess'] else 'NO'} | {rss} | {r.get('messages', '')} |"
        )
    table = "\n".join(lines)
    from fdrmfl_pipeline.flower.trace import STEPS

    traced = [r for r in rows if r.get("trace")]
    if traced:
        lines = ["", "Where a deployment's time goes (seconds, from its trace):", ""]
        lines += ["| clients | engine | phase | seconds |", "|---|---|---|---|"]
        for r in traced:
            for label, sec in r["trace"]["phases"]:
                lines.append(f"| {r['clients']} | {r['engine']} | {label} | {sec:.1f} |")
            lines.append(
                f"| {r['clients']} | {r['engine']} | {r['trace']['exchanges']} exchanges "
                f"(median {r['trace']['exchange_median_s']:.2f} s) | "
                f"{r['trace']['exchanges_total_s']:.1f} |"
            )
        lines += ["", "Median seconds per message, by step:", ""]
        lines += [
            "| clients | engine | message | n | push -> handler | handler | handler -> reply |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in traced:
            for kind, st in r["trace"]["steps"].items():
                vals = " | ".join(f"{st[s]:.2f}" if s in st else "" for *_, s in STEPS)
                lines.append(
                    f"| {r['clients']} | {r['engine']} | {kind} | {st['messages']} | {vals} |"
                )
        table += "\n" + "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(
        f"# {args.out}\n\nf1 2000/500, partition {args.scheme}, {args.rounds} rounds x {args.epochs} "
        f"local epochs (no early stopping), from the default warm start; {machine()}; "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/bench_engines.py', *sys.argv[1:]])}`"
        + f"\n\n{table}\n"
    )
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=2))
    sys.stdout.write(table + "\n")
    over = [
        f"{r['engine']} at {r['clients']} clients: {r['ratio_vs_inprocess']:.1f}x in-process "
        f"> {bounds[r['engine']]:g}x"
        for r in rows
        if r["engine"] in bounds and r["ratio_vs_inprocess"] > bounds[r["engine"]]
    ]
    if over:
        sys.stderr.write("ratio check failed: " + "; ".join(over) + "\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
