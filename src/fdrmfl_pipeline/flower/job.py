"""The job a Flower run executes: everything both apps need, as one JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fdrmfl_pipeline.core.client import LocalTrainConfig
from fdrmfl_pipeline.core.engine import FederationConfig
from fdrmfl_pipeline.core.model import ModelConfig


@dataclass
class FlowerJob:
    model_config: str  # ModelConfig JSON
    local_cfg: dict
    fed: dict
    modalities: list[str]
    scaling: str
    clients_dir: str  # client_<partition-id>.parquet, unless a node config names its own file
    expected_clients: int
    output_dir: str
    num_threads: int = 1
    x_scaling: str = "per_feature"  # core.clientdata.SufficientStats.scaler
    round_timeout: float = 600.0
    connect_timeout: float = 120.0
    checkpoint_path: str | None = None
    extra: dict = field(default_factory=dict)

    def model(self) -> ModelConfig:
        return ModelConfig.from_json(self.model_config)

    def local(self) -> LocalTrainConfig:
        return LocalTrainConfig(**self.local_cfg)

    def federation(self) -> FederationConfig:
        return FederationConfig(**self.fed)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FlowerJob:
        return cls(**json.loads(Path(path).read_text()))

    @classmethod
    def create(
        cls, model_config: ModelConfig, local: LocalTrainConfig, fed: FederationConfig, **kw
    ) -> FlowerJob:
        return cls(
            model_config=model_config.to_json(), local_cfg=asdict(local), fed=asdict(fed), **kw
        )
