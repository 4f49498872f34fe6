"""Where a training setup runs: in this process or on Flower's simulation runtime.

The training pipeline calls :func:`train` with a :class:`~fdrmfl_pipeline.core.setup.TrainingSetup`;
only this module knows the engines, so pipelines never import the Flower adapters (and the
Flower adapters never import pipelines).
"""

from __future__ import annotations

from pathlib import Path


def require_flower(what: str) -> None:
    """A named error instead of a bare ModuleNotFoundError when the flower extra is missing.
    Also turns Flower's usage telemetry off (``FLWR_TELEMETRY_ENABLED=0``) unless the user set
    it: Flower otherwise reports every process start and exit to its servers, and each
    ClientApp waits for that report before it exits."""
    import importlib.util
    import os

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from fdrmfl_pipeline.errors import MissingExtraError

    for module in ("flwr", "ray"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(
                f"{what} needs the flower extra ('{module}' is not installed): "
                "pip install -e '.[flower]' (make test installs it)"
            )


def train(setup, table, assignments, seed: int, checkpoint_dir: Path):
    """Run ``setup`` on its engine; returns the training result and the clients' scalers."""
    from fdrmfl_pipeline.core.engine import run_federated
    from fdrmfl_pipeline.core.modalities import from_arrow

    checkpoint = Path(checkpoint_dir) / f"{setup.strategy}.pt"
    if setup.engine == "flower-simulation":
        require_flower("training.engine=flower-simulation")
        from fdrmfl_pipeline.flower.simulation import simulate_training

        return simulate_training(
            table, assignments, setup, Path(checkpoint_dir) / "flower_staging", checkpoint
        )
    if setup.engine != "inprocess":
        raise ValueError(
            f"unknown engine '{setup.engine}'; expected inprocess or flower-simulation"
        )
    data = from_arrow(table)
    clients, scalers = setup.clients(data, assignments, seed)
    result = run_federated(
        setup.model,
        clients,
        scalers,
        setup.local,
        setup.federation,
        checkpoint_path=checkpoint,
        resume=setup.resume,
        init_state=setup.initial_state(clients, seed),
    )
    return result, scalers
