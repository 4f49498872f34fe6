"""One typed training configuration, built once from the validated parameters.

:class:`TrainingSetup` is what every engine (in process, Flower simulation, Flower deployment),
the tuning objective and the benchmarks run: the model's shape, one local update's settings, the
server's federation settings, the warm start and the data options. It is plain data (JSON in
and out, no Kedro, no Flower), so a Flower job carries it as is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from fdrmfl_pipeline.core.config import DPSettings, FederationConfig, LocalTrainConfig, ModelConfig
from fdrmfl_pipeline.core.warmstart.protocol import WarmStartConfig

if TYPE_CHECKING:  # the pydantic parameter model (fdrmfl_pipeline.params); never imported here
    from fdrmfl_pipeline.core.clientdata import ClientData, Scaler
    from fdrmfl_pipeline.core.modalities import MultimodalData


def _secure(params: Any) -> bool:
    """``training.privacy.secure_aggregation``, after refusing the settings whose releases are
    not sums over clients."""
    from fdrmfl_pipeline.errors import ConfigError

    if not params.privacy.secure_aggregation:
        return False
    problems = []
    if params.strategy in ("local", "central"):
        problems.append(
            f"training.strategy '{params.strategy}' does not aggregate over clients (use "
            "fdrmfl, fedavg, fedprox or moon)"
        )
    if params.data.scaling != "federated":
        problems.append(
            "training.data.scaling 'local' gives each client a scaler from its own statistics, "
            "which the server would see (set it to federated)"
        )
    if params.privacy.mode != "off":
        problems.append(
            f"training.privacy.mode '{params.privacy.mode}' with secure aggregation is not "
            "supported yet (central DP clips each client's update on the server, which secure "
            "aggregation hides)"
        )
    if problems:
        raise ConfigError(
            "training.privacy.secure_aggregation cannot protect this job: " + "; ".join(problems)
        )
    return True


def _privacy(params: Any) -> DPSettings:
    """``training.privacy`` resolved (noise from target_epsilon, epsilon from the noise), after
    refusing every setting that would release client data outside the accountant's view."""
    from fdrmfl_pipeline.core.privacy import resolve
    from fdrmfl_pipeline.errors import ConfigError

    p = params.privacy
    if p.mode == "off":
        return DPSettings()
    problems = []
    if params.strategy in ("local", "central"):
        problems.append(
            f"training.strategy '{params.strategy}' has no federated aggregate to protect "
            "(use fdrmfl, fedavg, fedprox or moon)"
        )
    if params.warm_start.kind != "none":
        problems.append(
            f"training.warm_start.kind '{params.warm_start.kind}' sends each client's "
            "aggregate answers without noise (set it to none)"
        )
    if params.data.scaling != "local":
        problems.append(
            "training.data.scaling 'federated' sends each client's feature sums without noise "
            "(set it to local)"
        )
    av = params.federation.availability
    if p.mode == "central" and (av.probability < 1.0 or av.schedule):
        problems.append(
            "training.federation.availability changes who takes part outside the sampling the "
            "accountant models (leave probability 1 and schedule empty)"
        )
    if params.federation.early_stopping.enabled:
        problems.append(
            "training.federation.early_stopping needs every client's validation error each "
            "round, a release the accountant does not cover (set enabled: false)"
        )
    if problems:
        raise ConfigError(
            f"training.privacy.mode '{p.mode}' protects the whole training job only if nothing "
            "else leaves the clients: " + "; ".join(problems)
        )
    return resolve(
        p.mode,
        p.clip,
        p.noise_multiplier,
        p.target_epsilon,
        p.delta,
        p.max_epsilon,
        params.federation.client_fraction,
        params.federation.rounds,
    )


def _modality_joins(params: Any, names: list[str]) -> tuple[tuple[int, str, int], ...]:
    """``training.federation.availability.modalities`` as (client, modality, round), checked
    against the trained modalities and the strategy."""
    from fdrmfl_pipeline.errors import ConfigError

    joins = params.federation.availability.modalities
    if not joins:
        return ()
    if params.strategy == "central":
        raise ConfigError(
            "training.federation.availability.modalities: strategy 'central' pools every "
            "client's rows, so a client's sensor schedule does not apply"
        )
    out = []
    for c, by_mod in sorted(joins.items()):
        for m, r in sorted(by_mod.items()):
            if m not in names:
                raise ConfigError(
                    f"training.federation.availability.modalities: client {c} names modality "
                    f"'{m}', which is not trained on ({names})"
                )
            if r > params.federation.rounds:
                raise ConfigError(
                    f"training.federation.availability.modalities: client {c} gains '{m}' in "
                    f"round {r}, after the last round ({params.federation.rounds})"
                )
            out.append((int(c), m, int(r)))
    return tuple(out)


@dataclass(frozen=True)
class TrainingSetup:
    model: ModelConfig
    local: LocalTrainConfig
    federation: FederationConfig
    warm_start: WarmStartConfig
    modalities: tuple[str, ...]
    strategy: str = "fdrmfl"
    engine: str = "inprocess"
    scaling: str = "federated"
    x_scaling: str = "per_feature"
    num_threads: int = 1
    resume: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params: Any, seed: int, data: MultimodalData) -> TrainingSetup:
        """From a validated ``TrainingParams`` (the ``training:`` group), the project seed and
        the dataset (its modality kinds and shapes size the encoders)."""
        from fdrmfl_pipeline.errors import ConfigError

        names = list(params.data.modalities or data.modality_names)
        unknown = [m for m in names if m not in data.modality_names]
        if unknown:
            raise ConfigError(
                f"training.data.modalities names {unknown}, which the dataset lacks; "
                f"it has {data.modality_names}"
            )
        bad_enc = [m for m in params.model.encoders if m not in names]
        if bad_enc:
            raise ConfigError(
                f"training.model.encoders names modalities {bad_enc} that are not trained on "
                f"({names})"
            )
        m, o, lo, f = params.model, params.optimizer, params.loss, params.federation
        model = ModelConfig.for_modalities(
            [(n, data.spec(n).kind, data.spec(n).shape) for n in names],
            encoders=dict(m.encoders),
            latent_dim=m.latent_dim,
            hidden_dim=m.hidden_dim,
            head_hidden=m.head_hidden,
            dropout=m.dropout,
            linear_path=m.linear_path,
            n_classes=len(data.classes),
        )
        w = params.warm_start
        if len(data.classes) > 2 and w.kind in ("pls", "lasso"):
            raise ConfigError(
                f"training.warm_start.kind '{w.kind}' fits a number, and this target has "
                f"{len(data.classes)} classes; use pca or none (a two-class target may keep "
                f"{w.kind}: it fits the class code)"
            )
        local = LocalTrainConfig(
            local_epochs=o.local_epochs,
            batch_size=o.batch_size,
            optimizer=o.name,
            lr=o.lr,
            weight_decay=o.weight_decay,
            grad_clip=o.grad_clip,
            lambda_mi=lo.lambda_mi,
            lambda_kl=lo.lambda_kl,
            lambda_con=lo.lambda_con,
            tau=lo.tau,
            prox_mu=lo.prox_mu,
            lambda_l1=lo.lambda_l1,
            anchor_mu=params.experimental.anchor_mu,
            mi_estimator=params.experimental.mi_estimator,
        )
        dp = _privacy(params)
        if dp.mode == "local":  # the clients clip and noise their own changes
            local = replace(local, dp_clip=dp.clip, dp_noise_multiplier=dp.noise_multiplier)
        fed = FederationConfig(
            strategy=params.strategy,
            rounds=f.rounds,
            client_fraction=f.client_fraction,
            retention=f.retention,
            early_stopping=f.early_stopping.enabled,
            patience=f.early_stopping.patience,
            min_delta=f.early_stopping.min_delta,
            seed=seed,
            min_clients=f.min_clients,
            dp=dp,
            availability=f.availability.probability,
            schedule=tuple(
                (int(c), m.join, m.leave or 0) for c, m in sorted(f.availability.schedule.items())
            ),
            secure=_secure(params),
            modality_joins=_modality_joins(params, names),
        )
        ws = WarmStartConfig(
            kind=w.kind,
            components=w.components,
            pca_iterations=w.pca_iterations,
            lasso_penalties=w.lasso_penalties,
            lasso_iterations=w.lasso_iterations,
            gram_limit=w.gram_limit,
        )
        return cls(
            model=model,
            local=local,
            federation=fed,
            warm_start=ws,
            modalities=tuple(names),
            strategy=params.strategy,
            engine=params.engine,
            scaling=params.data.scaling,
            x_scaling=params.experimental.x_scaling,
            num_threads=params.num_threads,
            resume=params.resume,
        )

    # ------------------------------------------------------------------ JSON (Flower jobs)
    def to_dict(self) -> dict:
        return {
            "model": json.loads(self.model.to_json()),
            "local": asdict(self.local),
            "federation": asdict(self.federation),  # dp: a nested dict
            "warm_start": asdict(self.warm_start),
            "modalities": list(self.modalities),
            "strategy": self.strategy,
            "engine": self.engine,
            "scaling": self.scaling,
            "x_scaling": self.x_scaling,
            "num_threads": self.num_threads,
            "resume": self.resume,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainingSetup:
        return cls(
            model=ModelConfig.from_json(json.dumps(d["model"])),
            local=LocalTrainConfig(**d["local"]),
            federation=FederationConfig(
                **{**d["federation"], "dp": DPSettings(**d["federation"]["dp"])}
            ),
            warm_start=WarmStartConfig(**d["warm_start"]),
            modalities=tuple(d["modalities"]),
            strategy=d["strategy"],
            engine=d["engine"],
            scaling=d["scaling"],
            x_scaling=d["x_scaling"],
            num_threads=int(d["num_threads"]),
            resume=bool(d["resume"]),
        )

    # ------------------------------------------------------------------ what engines share
    def setup_torch(self) -> None:
        """Fixed thread count and deterministic kernels: bit-identical results for a seed."""
        from fdrmfl_pipeline.core.seeding import deterministic_torch

        deterministic_torch(self.num_threads)

    def clients(
        self, data: MultimodalData, assignments, seed: int
    ) -> tuple[dict[int, ClientData], dict[int, Scaler]]:
        """Every client's scaled splits and scaler (in process)."""
        from fdrmfl_pipeline.core.clientdata import build_clients

        return build_clients(
            data,
            assignments,
            list(self.modalities),
            self.scaling,
            seed,
            self.x_scaling,
            self.federation.secure,
            self.model.n_classes > 0,
        )

    def initial_state(self, clients: dict[int, ClientData], seed: int):
        """None (seeded random) or the federated warm start over clients in this process."""
        if self.warm_start.kind == "none":
            return None
        from fdrmfl_pipeline.core.clientdata import without_modalities
        from fdrmfl_pipeline.core.warmstart import InProcessOracle, warm_start_state

        names = list(self.modalities)
        # the warm start (round 0) sees only the modalities each client has at the start
        at_start = {
            c: without_modalities(d, self.federation.absent(c, 0), names)
            for c, d in clients.items()
        }
        return warm_start_state(
            self.model,
            InProcessOracle(at_start, names, self.federation.secure),
            seed,
            self.warm_start,
        )
