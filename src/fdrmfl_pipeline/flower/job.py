"""The job a Flower run executes: the typed training setup plus where the run's files live, as
one JSON file that both apps read."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from fdrmfl_pipeline.core.setup import TrainingSetup

ROOT_VARIABLE = "FDRMFL_FLOWER_ROOT"


def allowed_root(job_file: Path) -> Path:
    """Where a job's files may live: ``$FDRMFL_FLOWER_ROOT`` if set, else the project's data
    folder that holds the job file (the nearest ancestor named ``data``), else the job's own
    folder."""
    import os

    if os.environ.get(ROOT_VARIABLE):
        return Path(os.environ[ROOT_VARIABLE])
    job_file = Path(job_file).resolve()
    for parent in job_file.parents:
        if parent.name == "data":
            return parent
    return job_file.parent


@dataclass
class FlowerJob:
    setup_json: dict  # TrainingSetup.to_dict()
    clients_dir: str  # client_<partition-id>.parquet, unless a node config names its own file
    expected_clients: int
    output_dir: str
    round_timeout: float = 600.0
    connect_timeout: float = 120.0
    checkpoint_path: str | None = None

    @classmethod
    def create(cls, setup: TrainingSetup, **kw) -> FlowerJob:
        return cls(setup_json=setup.to_dict(), **kw)

    @cached_property
    def setup(self) -> TrainingSetup:
        return TrainingSetup.from_dict(self.setup_json)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = {k: v for k, v in asdict(self).items()}
        path.write_text(json.dumps(fields, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FlowerJob:
        """A submitted job file; its paths must lie inside :func:`allowed_root`."""
        path = Path(path)
        job = cls(**json.loads(path.read_text()))
        job.check_paths(allowed_root(path))
        return job

    def check_paths(self, root: Path) -> None:
        """Whoever submits a run names the folders the apps read and write: refuse any outside
        ``root`` (``..`` and symbolic links resolved)."""
        from fdrmfl_pipeline.errors import UnsafePathError

        root = root.resolve()
        named = {
            "clients_dir": self.clients_dir,
            "output_dir": self.output_dir,
            "checkpoint_path": self.checkpoint_path,
        }
        for name, value in named.items():
            if value is None:
                continue
            target = Path(value).resolve()
            if target != root and root not in target.parents:
                raise UnsafePathError(
                    f"Flower job {name}={value!r} lies outside {root}, the folder this job may "
                    f"use (set {ROOT_VARIABLE} to allow another)"
                )

    @classmethod
    def from_context(cls, context, job: FlowerJob | None = None) -> FlowerJob:
        """The job given in simulation, else the file named by the run config's ``job``."""
        return job if job is not None else cls.load(context.run_config["job"])
