"""Training speed, throughput and peak memory of the in-process engine.

Protocol (reference simulation): f1, 2000 training + 500 test samples, ``paper`` partition,
5 rounds x 3 local epochs, batch 32, FDRMFL with all terms, started from the federated PLS warm
start (the project default; ``--warm-start none`` for a random start); also 10 and 50 clients on
the same data. The warm start's time is its own column, the rounds' time the others. The
reference partition has no validation rows, so the warm start keeps every PLS component (up to
``latent_dim``). Each configuration runs in its own process so peak RSS is its own.

    .venv/bin/python benchmarks/bench_training.py            # 3, 10, 50 clients; 1 and 2 threads
    .venv/bin/python benchmarks/bench_training.py --clients 3 --threads 1 --warm-start none

    .venv/bin/python benchmarks/bench_training.py --clients 100 --rounds 50 --threads 1 \
        --scheme quantity_skew --out bench_scale                # 100 unequal clients x 50 rounds

Prints a table and writes ``benchmarks/results/<out>.{md,json}`` (default ``bench_training``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
RESULTS = Path(__file__).resolve().parent / "results"
logger = logging.getLogger("bench_training")


def run_one(
    n_clients: int,
    threads: int,
    rounds: int,
    epochs: int,
    seed: int,
    warm_start: str,
    scheme: str = "paper",
) -> dict:
    import numpy as np

    from fdrmfl_pipeline.core import seeding

    seeding.deterministic_torch(threads)
    from fdrmfl_pipeline.core.client import evaluate_mse, model_from_state
    from fdrmfl_pipeline.core.clientdata import build_clients
    from fdrmfl_pipeline.core.engine import run_federated
    from fdrmfl_pipeline.core.partition import PartitionOptions, partition
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.core.synthetic import generate_synthetic
    from fdrmfl_pipeline.params import TrainingParams

    # the project's default training parameters, on the reference protocol
    params = TrainingParams().with_values(
        {
            "federation.rounds": rounds,
            "optimizer.local_epochs": epochs,
            "optimizer.batch_size": 32,
            "warm_start.kind": warm_start,
        }
    )
    data = generate_synthetic("f1", 2000, 500, seed)
    assign = partition(
        data.sample_ids,
        data.target,
        data.modality_names,
        data.split,
        PartitionOptions(scheme=scheme, n_clients=n_clients, val_fraction=0.0),
        seeding.rng(seed, "partition"),
    )
    clients, scalers = build_clients(data, assign, data.modality_names, "federated", seed)
    setup = TrainingSetup.from_params(params, seed, data)
    config = setup.model
    t0 = time.perf_counter()
    init = setup.initial_state(clients, seed)
    warm_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = run_federated(config, clients, scalers, setup.local, setup.federation, init_state=init)
    wall = time.perf_counter() - t0
    model = model_from_state(config, res.global_state)
    test_mse = [
        evaluate_mse(model, clients[c].splits["test"], scalers[c].y_mean, scalers[c].y_std)
        for c in clients
    ]
    n_train = sum(clients[c].train.n for c in clients)
    return {
        "clients": n_clients,
        "scheme": scheme,
        "threads": threads,
        "warm_start": warm_start,
        "seconds_warm_start": warm_wall,
        "rounds": rounds,
        "local_epochs": epochs,
        "train_samples": n_train,
        "seconds_total": wall,
        "seconds_per_round": wall / rounds,
        "train_samples_per_second": n_train * epochs * rounds / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_mse_head_mean_over_clients": float(np.mean(test_mse)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, nargs="*", default=[3, 10, 50])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm-start", default="pls", choices=["none", "pls", "lasso"])
    ap.add_argument(
        "--scheme", default="paper", help="partition scheme (quantity_skew: unequal clients)"
    )
    ap.add_argument("--out", default="bench_training", help="results file name (no suffix)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.one:
        sys.stdout.write(
            json.dumps(
                run_one(
                    args.clients[0],
                    args.threads[0],
                    args.rounds,
                    args.epochs,
                    args.seed,
                    args.warm_start,
                    args.scheme,
                )
            )
        )
        return
    rows = []
    for k in args.clients:
        for t in args.threads:
            logger.info("running %d clients, %d thread(s) ...", k, t)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    "--clients",
                    str(k),
                    "--threads",
                    str(t),
                    "--rounds",
                    str(args.rounds),
                    "--epochs",
                    str(args.epochs),
                    "--seed",
                    str(args.seed),
                    "--warm-start",
                    args.warm_start,
                    "--scheme",
                    args.scheme,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout))
    header = (
        "| clients | threads | warm start s | s/round | total s (rounds) | train samples/s "
        "| peak RSS MiB | test MSE (head) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['threads']} | {r['seconds_warm_start']:.2f} | "
            f"{r['seconds_per_round']:.2f} | {r['seconds_total']:.1f} | "
            f"{r['train_samples_per_second']:.0f} | {r['peak_rss_mib']:.0f} | {r['test_mse_head_mean_over_clients']:.4f} |"
        )
    table = "\n".join(lines)
    meta = f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(
        f"# {args.out}\n\nf1, 2000 train / 500 test, partition {args.scheme}, {args.rounds} rounds x "
        f"{args.epochs} local epochs, "
        f"warm start {args.warm_start}, seed {args.seed}; {meta}; "
        f"`{' '.join(['.venv/bin/python', 'benchmarks/bench_training.py', *sys.argv[1:]])}`"
        + f"\n\n{table}\n"
    )
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=2))
    sys.stdout.write(table + "\n")


if __name__ == "__main__":
    main()
