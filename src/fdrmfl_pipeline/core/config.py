"""The configuration objects every engine shares (model architecture, local training,
federation, differential privacy), without torch: a Flower message that needs no model (a
query, a secure-aggregation step) imports none of it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

# modality kind -> default encoder type
DEFAULT_ENCODER = {
    "vector": "mlp",
    "image": "cnn2d",
    "sequence": "conv1d_attn",
    "spectrum": "cnn1d",
}


@dataclass(frozen=True)
class ModalityConfig:
    name: str
    kind: str
    shape: tuple[int, ...]
    encoder: str


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the architecture (no weights)."""

    modalities: tuple[ModalityConfig, ...]
    latent_dim: int = 16
    hidden_dim: int = 64
    dropout: float = 0.1
    linear_path: bool = True
    head_hidden: int = 32
    extra: dict = field(default_factory=dict)
    # classification: the number of classes (the head gives one logit per class); 0: regression
    n_classes: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        d = json.loads(text)
        mods = tuple(
            ModalityConfig(m["name"], m["kind"], tuple(m["shape"]), m["encoder"])
            for m in d.pop("modalities")
        )
        return cls(modalities=mods, **d)

    @classmethod
    def for_modalities(
        cls,
        specs: list[tuple[str, str, tuple[int, ...]]],
        encoders: dict[str, str] | None = None,
        **kw,
    ) -> ModelConfig:
        """Pick each modality's encoder from its kind, unless ``encoders`` overrides it by name."""
        encoders = encoders or {}
        mods = tuple(
            ModalityConfig(name, kind, tuple(shape), encoders.get(name, DEFAULT_ENCODER[kind]))
            for name, kind, shape in specs
        )
        return cls(modalities=mods, **kw)


@dataclass(frozen=True)
class LocalTrainConfig:
    """Loss weights and optimiser settings of one local update (the round's config). The
    defaults are the project's (``training.optimizer`` / ``training.loss``; a test keeps them
    equal)."""

    local_epochs: int = 3
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float | None = 5.0
    lambda_mi: float = 0.1
    lambda_kl: float = 0.01
    lambda_con: float = 0.1
    tau: float = 0.5
    prox_mu: float = 0.01
    lambda_l1: float = 0.0  # L1 on the encoders' linear paths (sparse projections)
    anchor_mu: float = 0.0  # L2-SP: pull the encoders and fusion toward the warm start
    # the mutual-information estimator for a numeric target: "gaussian" (a learned critic's
    # correlation bound) or "kernel" (contrastive with response-kernel positives)
    mi_estimator: str = "gaussian"
    # local differential privacy (training.privacy.mode local): the client clips its change to
    # dp_clip and adds Gaussian noise of std dp_noise_multiplier * dp_clip before sending it
    dp_clip: float = 0.0
    dp_noise_multiplier: float = 0.0


@dataclass(frozen=True)
class DPSettings:
    """The resolved mechanism: what the server does, and what it costs."""

    mode: str = "off"
    clip: float = 1.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    sample_rate: float = 1.0
    rounds: int = 0
    epsilon: float = math.inf

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def spent(self, rounds: int) -> float:
        """Epsilon after ``rounds`` rounds (at delta): the accountant's sampled Gaussian for
        ``central``; for ``local`` each client's worst case (it took part in every round)."""
        from fdrmfl_pipeline.core.privacy import epsilon

        if self.mode == "local":
            return epsilon(self.noise_multiplier / 2, 1.0, rounds, self.delta)
        return epsilon(self.noise_multiplier, self.sample_rate, rounds, self.delta)


@dataclass(frozen=True)
class FederationConfig:
    strategy: str = "fdrmfl"
    rounds: int = 5
    client_fraction: float = 1.0
    retention: float = 0.0
    early_stopping: bool = True
    patience: int = 3
    min_delta: float = 0.0
    seed: int = 42
    min_clients: int = 1  # a round needs at least this many answering clients
    dp: DPSettings = DPSettings()  # client-level differential privacy (core.privacy)
    # a dynamic federation: each member is online in a round with this probability (seeded by
    # seed and round) ...
    availability: float = 1.0
    # ... and only between its join and leave rounds: (client, join, leave or 0 for never)
    schedule: tuple[tuple[int, int, int], ...] = ()
    # the server receives only sums over clients (core.secagg): one mean model per round and
    # the mean validation error, never a client's own
    secure: bool = False
    # modalities a client gains during training: (client, modality, first round it has it);
    # before that round the client trains and validates as if the modality were absent
    modality_joins: tuple[tuple[int, str, int], ...] = ()

    def __post_init__(self) -> None:  # JSON gives lists back: keep it hashable and comparable
        object.__setattr__(self, "schedule", tuple(tuple(int(x) for x in s) for s in self.schedule))
        object.__setattr__(
            self,
            "modality_joins",
            tuple((int(c), str(m), int(r)) for c, m, r in self.modality_joins),
        )

    def absent(self, client: int, round_: int) -> tuple[str, ...]:
        """The modalities ``client`` does not have yet in ``round_`` (0: the warm start)."""
        return tuple(m for c, m, r in self.modality_joins if c == client and round_ < r)

    def online(self, ids: list[int], round_: int) -> list[int]:
        """The clients that can take part in ``round_``: members by the schedule, then each
        online with probability ``availability`` (one seeded draw per client and round)."""
        spans = {c: (j, leave) for c, j, leave in self.schedule}
        members = [
            c
            for c in ids
            if c not in spans
            or (spans[c][0] <= round_ and (spans[c][1] == 0 or round_ <= spans[c][1]))
        ]
        if self.availability >= 1.0:
            return members
        from fdrmfl_pipeline.core import seeding

        draw = seeding.rng(self.seed, "availability", round_).random(len(ids))
        up = {c for c, u in zip(ids, draw, strict=True) if u < self.availability}
        return [c for c in members if c in up]
