"""Run a job in Flower's simulation runtime (Ray) from Python, in this process's ServerApp."""

from __future__ import annotations

import logging
import os

from fdrmfl_pipeline.core.clientdata import Scaler
from fdrmfl_pipeline.core.engine import TrainingResult
from fdrmfl_pipeline.core.setup import TrainingSetup
from fdrmfl_pipeline.flower.job import FlowerJob

logger = logging.getLogger(__name__)


def run_simulation_job(
    job: FlowerJob, num_cpus: int = 2
) -> tuple[TrainingResult, dict[int, Scaler]]:
    """Simulate ``job.expected_clients`` SuperNodes (partition ``i`` reads
    ``<clients_dir>/client_<i>.parquet``) and return the server's result."""
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    from fdrmfl_pipeline.flower.client_app import make_client_app
    from fdrmfl_pipeline.flower.server_app import make_server_app

    captured: dict = {}

    def on_result(result, scalers):
        captured["result"], captured["scalers"] = result, scalers

    run_simulation(
        server_app=make_server_app(job, on_result=on_result),
        client_app=make_client_app(job),
        num_supernodes=job.expected_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": num_cpus, "include_dashboard": False},
        },
    )
    if "result" not in captured:
        raise RuntimeError("the Flower simulation ended without a result (see its log above)")
    return captured["result"], captured["scalers"]


def simulate_training(
    table, assignments, setup: TrainingSetup, staging_dir, checkpoint_path=None
) -> tuple[TrainingResult, dict[int, Scaler]]:
    """Stage one Parquet file per client (what each SuperNode would hold) and simulate the job."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from fdrmfl_pipeline.core.clientdata import client_table

    staging = Path(staging_dir)
    staging.mkdir(parents=True, exist_ok=True)
    ids = sorted(int(c) for c in assignments["client"].unique())
    if ids != list(range(len(ids))):
        raise ValueError(f"Flower partition ids must be 0..K-1; client ids are {ids}")
    for c in ids:
        pq.write_table(client_table(table, assignments, c), staging / f"client_{c}.parquet")
    job = FlowerJob.create(
        setup,
        clients_dir=str(staging),
        expected_clients=len(ids),
        output_dir=str(staging / "out"),
        checkpoint_path=str(checkpoint_path) if checkpoint_path else None,
    )
    return run_simulation_job(job)
