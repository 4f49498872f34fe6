"""The job a Flower run executes: the typed training setup plus where the run's files live, as
one JSON file that both apps read."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from fdrmfl_pipeline.core.setup import TrainingSetup


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
        return cls(**json.loads(Path(path).read_text()))

    @classmethod
    def from_context(cls, context, job: FlowerJob | None = None) -> FlowerJob:
        """The job given in simulation, else the file named by the run config's ``job``."""
        return job if job is not None else cls.load(context.run_config["job"])
