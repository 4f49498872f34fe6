"""Pydantic models of every parameter group (Kedro validates them before a run).

Nodes annotate their ``params:<group>`` argument with these models; Kedro instantiates and
validates them, so a bad value fails before any node runs, with the parameter's path in the error.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fdrmfl_pipeline.core.partition import SCHEMES, PartitionOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- ingestion
class SyntheticParams(_Strict):
    function: Literal["f1", "f2", "f3"] = "f1"
    n_train: int = Field(2000, ge=1)
    n_test: int = Field(500, ge=1)
    seed: int | None = Field(None, description="overrides the project seed for the generator")
    noise_std: float = Field(0.0, ge=0.0)
    n_classes: int = Field(
        3,
        ge=2,
        le=20,
        description="task classification: the response's quantile bins on the "
        "training rows become this many classes",
    )


class TecatorParams(_Strict):
    target: Literal["moisture", "fat", "protein"] = "fat"
    modalities: list[Literal["spectrum", "spectrum_d1", "spectrum_d2", "lab"]] = Field(
        default_factory=lambda: ["spectrum", "lab"], min_length=1
    )
    standard_split: bool = True
    sg_window: int = Field(11, ge=3)
    sg_polyorder: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _window(self) -> TecatorParams:
        if self.sg_window % 2 == 0 or self.sg_window <= self.sg_polyorder:
            raise ValueError(
                f"sg_window={self.sg_window} must be odd and larger than sg_polyorder="
                f"{self.sg_polyorder}"
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities {self.modalities} contain a duplicate")
        return self


class CornParams(_Strict):
    target: Literal["moisture", "oil", "protein", "starch"] = "moisture"
    modalities: list[Literal["m5", "mp5", "mp6", "lab"]] = Field(
        default_factory=lambda: ["m5", "lab"], min_length=1
    )

    @field_validator("modalities")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"modalities {v} contain a duplicate")
        return v


class TableModalityParams(_Strict):
    columns: list[str] | None = None
    pattern: str | None = None
    kind: Literal["image", "sequence", "spectrum", "vector"] = "vector"
    shape: list[int] | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> TableModalityParams:
        if (self.columns is None) == (self.pattern is None):
            raise ValueError("give exactly one of 'columns' or 'pattern'")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern '{self.pattern}' is not a valid regex: {exc}") from exc
        if self.shape is not None and any(s < 1 for s in self.shape):
            raise ValueError(f"shape {self.shape} must hold positive integers")
        return self


class TableParams(_Strict):
    target: str = "target"
    id_column: str | None = None
    split_column: str | None = Field(None, description="a column holding train / val / test")
    client_column: str | None = Field(
        None, description="each row's natural client (site, hospital, plant): scheme 'column'"
    )
    order_column: str | None = Field(
        None,
        description="a sortable number (a date as a number, a run index): time-ordered "
        "splits and scheme 'time_blocks'",
    )
    ignore: list[str] = Field(
        default_factory=list, description="columns that belong to no modality, on purpose"
    )
    anomaly_column: str | None = Field(
        None,
        description="task anomaly: a 0/1 column of labelled anomalies, used only to judge the "
        "scores (never a model input)",
    )
    modalities: dict[str, TableModalityParams] = Field(default_factory=dict)


class IngestionParams(_Strict):
    source: Literal["synthetic", "tecator", "corn", "table"] = "synthetic"
    synthetic: SyntheticParams = SyntheticParams()
    tecator: TecatorParams = TecatorParams()
    corn: CornParams = CornParams()
    table: TableParams = TableParams()

    @model_validator(mode="after")
    def _table_declared(self) -> IngestionParams:
        if self.source == "table" and not self.table.modalities:
            raise ValueError("source 'table' needs ingestion.table.modalities")
        return self


# --------------------------------------------------------------------------- partitioning
class DirichletParams(_Strict):
    alpha: float = Field(0.5, gt=0)
    n_bins: int = Field(5, ge=2)
    min_client_size: int = Field(5, ge=1)
    max_tries: int = Field(100, ge=1)


class TargetShiftParams(_Strict):
    strictness: float = Field(0.8, ge=0.0, le=1.0)


class QuantitySkewParams(_Strict):
    power: float = Field(1.0, ge=0.0)


class CovariateShiftParams(_Strict):
    gain_std: float = Field(0.2, ge=0.0)
    offset_std: float = Field(0.2, ge=0.0)
    noise_std: float = Field(0.1, ge=0.0)


class MissingModalityParams(_Strict):
    probability: float = Field(0.3, ge=0.0, lt=1.0)
    map: dict[int, list[str]] | None = Field(
        None, description="explicit missing modalities per client id, e.g. {0: [text]}"
    )


class PartitioningParams(_Strict):
    scheme: Literal[SCHEMES] = "paper"  # type: ignore[valid-type]
    n_clients: int = Field(3, ge=1)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    use_predefined_split: bool = True
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_strategy: Literal["random", "last"] = Field(
        "random",
        description="without a predefined split: a random test_fraction, or the last one by "
        "ingestion.table.order_column (per client for the natural schemes)",
    )
    val_strategy: Literal["random", "last"] = Field(
        "random",
        description="each client's val rows: a random val_fraction of its training rows, or the "
        "last one by the order column (validation that mimics a chronological test)",
    )
    export_clients: bool = Field(
        False, description="write data/03_primary/clients/client_<id>.parquet"
    )
    group_duplicates: bool = Field(
        True,
        description="a random test split keeps samples with identical inputs and target together",
    )
    dirichlet: DirichletParams = DirichletParams()
    target_shift: TargetShiftParams = TargetShiftParams()
    quantity_skew: QuantitySkewParams = QuantitySkewParams()
    covariate_shift: CovariateShiftParams = CovariateShiftParams()
    missing_modality: MissingModalityParams = MissingModalityParams()

    def options(self) -> PartitionOptions:
        """The core's flat view of these parameters."""
        return PartitionOptions(
            scheme=self.scheme,
            n_clients=self.n_clients,
            test_fraction=self.test_fraction,
            use_predefined_split=self.use_predefined_split,
            val_fraction=self.val_fraction,
            dirichlet_alpha=self.dirichlet.alpha,
            dirichlet_bins=self.dirichlet.n_bins,
            min_client_size=self.dirichlet.min_client_size,
            max_tries=self.dirichlet.max_tries,
            shift_strictness=self.target_shift.strictness,
            skew_power=self.quantity_skew.power,
            gain_std=self.covariate_shift.gain_std,
            offset_std=self.covariate_shift.offset_std,
            noise_std=self.covariate_shift.noise_std,
            missing_probability=self.missing_modality.probability,
            missing_map=self.missing_modality.map,
            test_strategy=self.test_strategy,
            val_strategy=self.val_strategy,
        )


# --------------------------------------------------------------------------- training
class EarlyStoppingParams(_Strict):
    enabled: bool = Field(
        True,
        description="keep the round (round 0: the warm start) with the lowest mean validation "
        "MSE, and stop after `patience` rounds without improvement",
    )
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0.0)


class MembershipParams(_Strict):
    join: int = Field(1, ge=1, description="first round the client takes part in")
    leave: int | None = Field(None, ge=1, description="last round; null: to the end")

    @model_validator(mode="after")
    def _order(self) -> MembershipParams:
        if self.leave is not None and self.leave < self.join:
            raise ValueError(f"leave={self.leave} is before join={self.join}")
        return self


class AvailabilityParams(_Strict):
    """A dynamic federation: who can take part in which round."""

    probability: float = Field(
        1.0, gt=0.0, le=1.0, description="each member is online in a round with this probability"
    )
    schedule: dict[int, MembershipParams] = Field(
        default_factory=dict,
        description="client id -> {join, leave} rounds; clients not listed take part throughout",
    )
    modalities: dict[int, dict[str, int]] = Field(
        default_factory=dict,
        description="client id -> {modality: first round the client has it}: a sensor added "
        "during training (before that round, and in the warm start, the client lacks it)",
    )

    @field_validator("modalities")
    @classmethod
    def _rounds_positive(cls, v: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
        for c, joins in v.items():
            for m, r in joins.items():
                if r < 1:
                    raise ValueError(f"client {c}, modality '{m}': the join round {r} must be >= 1")
        return v


class DataParams(_Strict):
    """What the model is trained on and how inputs are scaled."""

    modalities: list[str] | None = Field(None, description="subset of the dataset's modalities")
    scaling: Literal["federated", "local"] = Field(
        "federated",
        description="federated: one scaler from every client's summed statistics; local: per client",
    )


class ModelParams(_Strict):
    """The network: per-modality encoders, the fused feature Z and the regression head."""

    encoders: dict[str, Literal["mlp", "cnn2d", "conv1d_attn", "gru_attn", "cnn1d"]] = Field(
        default_factory=dict, description="encoder type per modality name (default: by kind)"
    )
    latent_dim: int = Field(16, ge=1)
    hidden_dim: int = Field(64, ge=4)
    head_hidden: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    linear_path: bool = True


class WarmStartParams(_Strict):
    """The federated start of the linear paths and the head (aggregated queries only)."""

    kind: Literal["none", "pls", "pca", "lasso"] = Field(
        "pls",
        description="none: seeded random; pls / pca (+ regression on the components) / lasso: "
        "a federated fit from aggregated vectors",
    )
    components: int | None = Field(
        None, ge=1, description="PLS / PCA components; null: chosen on val (<= latent_dim)"
    )
    pca_iterations: int = Field(
        100,
        ge=1,
        description="PCA: subspace iterations, each one aggregated X^T X V query (one message "
        "round trip per client on Flower)",
    )
    lasso_penalties: int = Field(
        12, ge=1, description="lasso: penalties on its path (the best one on val wins)"
    )
    lasso_iterations: int = Field(
        200,
        ge=1,
        description="lasso: FISTA steps per penalty; each step is one aggregated X^T X w query, "
        "i.e. one message round trip per client on Flower",
    )
    gram_limit: int = Field(
        512,
        ge=0,
        description="PCA and lasso: up to this many input columns the server asks once for the "
        "summed X^T X and iterates on it (2 messages instead of one per iteration; their "
        "iterations would reveal it anyway); 0: always one query per iteration",
    )


class OptimizerParams(_Strict):
    """Each client's local training (a fresh optimiser every round)."""

    name: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    grad_clip: float | None = Field(5.0, gt=0.0, description="global gradient-norm clip")
    local_epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=2)


class LossParams(_Strict):
    """MSE plus the method's constraint terms (each strategy keeps its own subset)."""

    lambda_mi: float = Field(0.1, ge=0.0, description="mutual-information retention knob")
    lambda_kl: float = Field(0.01, ge=0.0, description="symmetric KL between modality latents")
    lambda_con: float = Field(0.1, ge=0.0, description="MOON inter-model contrastive term")
    tau: float = Field(0.5, gt=0.0, description="contrastive temperature")
    prox_mu: float = Field(0.01, ge=0.0, description="FedProx proximal weight (fedprox only)")
    lambda_l1: float = Field(0.0, ge=0.0, description="L1 on the encoders' linear paths")


class FederationParams(_Strict):
    """The server: rounds, client sampling, aggregation and model selection."""

    rounds: int = Field(5, ge=0, description="0: only the warm start (needs a warm start)")
    client_fraction: float = Field(1.0, gt=0.0, le=1.0)
    min_clients: int = Field(
        1, ge=1, description="a round needs at least this many answering clients"
    )
    retention: float = Field(0.0, ge=0.0, lt=1.0, description="theta <- (1-r)*FedAvg + r*theta_old")
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    availability: AvailabilityParams = AvailabilityParams()


class ExperimentalParams(_Strict):
    """Research knobs that serve one experiment (its registry entry sets them); off by default
    and not part of the documented configuration."""

    anchor_mu: float = Field(
        0.0,
        ge=0.0,
        description="L2-SP: (anchor_mu/2)*||w - w_start||^2 pulls the encoders and fusion toward "
        "the federated warm start every round; needs a warm start",
    )
    x_scaling: Literal["per_feature", "per_modality"] = Field(
        "per_feature",
        description="per_feature: every input column to unit variance; per_modality: columns "
        "centred, each modality divided by one pooled standard deviation",
    )
    mi_estimator: Literal["gaussian", "kernel"] = Field(
        "gaussian",
        description="the MI term for a numeric target: gaussian (correlation bound through a "
        "learned critic) or kernel (contrastive, positives weighted by a response kernel)",
    )


class PrivacyParams(_Strict):
    """Client-level differential privacy of the training job (docs/privacy.md)."""

    mode: Literal["off", "central", "local"] = Field(
        "off",
        description="central: the server clips each client's model change and adds Gaussian "
        "noise to their sum (DP-FedAvg, a trusted server); local: each client clips and noises "
        "its own change before sending it (no trusted server, far more noise); off: no "
        "differential privacy",
    )
    clip: float = Field(1.0, gt=0.0, description="L2 bound on one client's model change per round")
    noise_multiplier: float | None = Field(
        None, ge=0.0, description="noise std / clip; or give target_epsilon"
    )
    target_epsilon: float | None = Field(
        None, gt=0.0, description="solve for the noise that spends exactly this epsilon"
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    max_epsilon: float | None = Field(
        None, gt=0.0, description="refuse to train when the job would spend more"
    )
    secure_aggregation: bool = Field(
        False,
        description="the server receives only sums over clients (pairwise masking): the "
        "scaler statistics, every warm-start answer, the round's model and the validation "
        "error; never one client's (docs/privacy.md)",
    )

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacyParams:
        if self.mode != "off" and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                f"mode {self.mode} needs exactly one of noise_multiplier, target_epsilon"
            )
        return self


class TrainingParams(_Strict):
    strategy: Literal["fdrmfl", "fedavg", "fedprox", "moon", "local", "central"] = "fdrmfl"
    engine: Literal["inprocess", "flower-simulation"] = "inprocess"
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    warm_start: WarmStartParams = WarmStartParams()
    optimizer: OptimizerParams = OptimizerParams()
    loss: LossParams = LossParams()
    federation: FederationParams = FederationParams()
    privacy: PrivacyParams = PrivacyParams()
    experimental: ExperimentalParams = ExperimentalParams()
    resume: bool = False
    num_threads: int = Field(1, ge=1, description="torch threads (fixed for bit-identical results)")

    @model_validator(mode="after")
    def _engine_strategy(self) -> TrainingParams:
        ws = self.warm_start.kind
        if self.engine != "inprocess" and self.strategy in ("local", "central"):
            raise ValueError(
                f"strategy '{self.strategy}' runs on the inprocess engine only (engine='{self.engine}')"
            )
        if self.federation.rounds == 0 and ws == "none":
            raise ValueError(
                "training.federation.rounds=0 trains nothing: it needs "
                "training.warm_start.kind: pls, pca or lasso"
            )
        if self.experimental.anchor_mu > 0 and ws == "none":
            raise ValueError(
                f"training.experimental.anchor_mu={self.experimental.anchor_mu} pulls the model "
                "toward the warm start: it needs training.warm_start.kind: pls, pca or lasso"
            )
        if ws != "none":
            if not self.model.linear_path:
                raise ValueError(
                    f"training.warm_start.kind='{ws}' needs training.model.linear_path: true"
                )
            k = self.warm_start.components
            if k is not None and k > self.model.latent_dim:
                raise ValueError(
                    f"training.warm_start.components={k} exceeds "
                    f"training.model.latent_dim={self.model.latent_dim}"
                )
        return self

    def with_values(self, values: dict[str, Any]) -> TrainingParams:
        """A validated copy with dotted paths (``"loss.lambda_mi"``) set to new values."""
        data = self.model_dump()
        for path, value in values.items():
            node = data
            *parents, leaf = path.split(".")
            for p in parents:
                if not isinstance(node.get(p), dict):
                    raise ValueError(f"'{path}' is not a training parameter path")
                node = node[p]
            if leaf not in node:
                raise ValueError(f"'{path}' is not a training parameter path")
            node[leaf] = value
        return TrainingParams.model_validate(data)

    def value(self, path: str) -> Any:
        """The value at a dotted path, e.g. ``"federation.retention"``."""
        node: Any = self
        for part in path.split("."):
            node = getattr(node, part)
        return node


# --------------------------------------------------------------------------- downstream
RegressorName = Literal["rf", "ridge", "pls", "gp", "gp_fed", "mean"]


_REFIT_ON_VAL = (
    "test predictions from each regressor on the features (not the model's own head) refitted "
    "on train + val; val predictions stay train-only fits, so val still chooses between "
    "regressors; test rows never enter a fit"
)


class RegressionExperimentalParams(_Strict):
    """A research knob that serves one experiment (its registry entry sets it)."""

    gp_fed_inputs: Literal["all", "evidence"] = Field(
        "all",
        description="gp_fed on every Z column, or on the leading k columns (k = 1..latent_dim) "
        "whose GP has the highest marginal likelihood of the train rows (federated sums; "
        "the warm starts order Z's columns by variance / PLS component)",
    )


ClassifierName = Literal["logistic", "rf"]


class RegressionParams(_Strict):
    regressors: list[RegressorName] = Field(default_factory=lambda: ["rf", "ridge"], min_length=1)
    classifiers: list[ClassifierName] = Field(
        default_factory=lambda: ["logistic", "rf"],
        min_length=1,
        description="task classification: fitted on Z instead of the regressors",
    )
    include_head: bool = True
    pooled: bool = Field(False, description="also fit one regressor on all clients' train features")
    method: str | None = Field(None, description="method label; default: training.strategy")
    refit_on_val: bool = Field(False, description=_REFIT_ON_VAL)
    experimental: RegressionExperimentalParams = RegressionExperimentalParams()


class BaselinesParams(_Strict):
    enabled: bool = True
    extractors: list[Literal["pca90", "pca_d", "tsvd", "rp", "pls", "vae", "raw"]] = Field(
        default_factory=lambda: ["pca90", "pca_d", "tsvd", "rp", "pls", "raw"],
        description="vae is opt-in: it trains a network per client (minutes on larger tables)",
    )
    regressors: list[RegressorName] = Field(default_factory=lambda: ["rf", "ridge"], min_length=1)
    raw_regressors: list[RegressorName] = Field(
        default_factory=lambda: ["ridge"],
        description="for raw inputs (RF on thousands of columns is slow)",
    )
    classifiers: list[ClassifierName] = Field(
        default_factory=lambda: ["logistic", "rf"],
        min_length=1,
        description="task classification: on every extractor but raw (which takes logistic)",
    )
    include_mean: bool = True
    pooled_regressors: list[RegressorName] = Field(
        default_factory=list,
        description="anchors fitted on the raw inputs of all clients pooled (method 'raw_pooled'): "
        "they need the data in one place, so they are bars to compare with, not federated methods",
    )
    vae_epochs: int = Field(80, ge=1)
    refit_on_val: bool = Field(False, description=_REFIT_ON_VAL)

    @field_validator("pooled_regressors")
    @classmethod
    def _not_federated(cls, v: list[str]) -> list[str]:
        if "gp_fed" in v:
            raise ValueError(
                "baselines.pooled_regressors cannot hold 'gp_fed' (a federated regressor, fitted "
                "from client sums: list it under baselines.regressors instead)"
            )
        return v


class SelectionParams(_Strict):
    rule: Literal["auto", "val"] = Field(
        "auto",
        description="val: lowest pooled validation MSE; auto: the same, but only regressors with "
        "linear tails (ridge, pls, head) when validation targets leave the training range",
    )
    max_outside_share: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="auto: share of validation targets outside their client's training range "
        "above which bounded regressors (rf, gp, gp_fed, mean) are set aside",
    )


class EvaluationParams(_Strict):
    experiment: str = "default"
    selection: SelectionParams = SelectionParams()
    anomaly_score: Literal["combined", "density", "residual"] = Field(
        "combined",
        description="task anomaly: Mahalanobis distance of Z under the federated Gaussian of the "
        "training Z (density), the standardised error of the head on the monitored target "
        "(residual), or their sum (combined)",
    )


class ReportingParams(_Strict):
    title: str = "FDRMFL run report"
    split: Literal["val", "test"] = "test"


# --------------------------------------------------------------------------- tuning
class SearchEntryParams(_Strict):
    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchEntryParams:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical entry needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low={self.low} is greater than high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs a positive lower bound, got low={self.low}")
        return self


def _space(type_: str, low: float, high: float, log: bool = False) -> SearchEntryParams:
    return SearchEntryParams(type=type_, low=low, high=high, log=log)


# the shared search space (every tunable scalar by its path under training:) and the default
# study's subset; a protocol environment narrows it with tuning.tune
DEFAULT_SEARCH_SPACE = {
    "loss.lambda_mi": _space("float", 1e-4, 10.0, True),
    "loss.lambda_kl": _space("float", 1e-5, 1.0, True),
    "loss.lambda_con": _space("float", 1e-4, 10.0, True),
    "loss.tau": _space("float", 0.05, 1.0),
    "loss.lambda_l1": _space("float", 1e-5, 5e-2, True),
    "federation.retention": _space("float", 0.0, 0.9),
    "model.latent_dim": _space("int", 4, 32, True),
    "model.dropout": _space("float", 0.0, 0.5),
    "optimizer.lr": _space("float", 1e-4, 1e-2, True),
    "optimizer.weight_decay": _space("float", 1e-5, 1e-1, True),
}
DEFAULT_TUNE = [
    "loss.lambda_mi",
    "loss.lambda_kl",
    "loss.lambda_con",
    "loss.tau",
    "federation.retention",
    "model.latent_dim",
    "optimizer.lr",
]


class TuningParams(_Strict):
    study_name: str = Field("fdrmfl", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    n_trials: int = Field(
        20, ge=1, description="finished (complete or pruned) trials the study should hold"
    )
    timeout: float | None = Field(None, gt=0, description="seconds for this worker")
    storage: str = Field(
        "sqlite", description="sqlite | journal | env:<VARIABLE> holding a URL | a SQLAlchemy URL"
    )
    max_failures_in_a_row: int = Field(
        10, ge=1, description="failed trials in a row (non-finite or diverged) that stop the study"
    )
    worker_id: int = Field(0, ge=0)
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = Field(3, ge=0)
    pruner_warmup_rounds: int = Field(1, ge=0)
    search_space: dict[str, SearchEntryParams] = Field(
        default_factory=lambda: dict(DEFAULT_SEARCH_SPACE)
    )
    tune: list[str] | None = Field(
        default_factory=lambda: list(DEFAULT_TUNE),
        description="the search_space entries this study tunes (an environment narrows the "
        "shared search space with it); null: all of them",
    )

    @model_validator(mode="after")
    def _tune_subset(self) -> TuningParams:
        if self.tune is not None:
            missing = [k for k in self.tune if k not in self.search_space]
            if missing or not self.tune:
                raise ValueError(
                    f"tuning.tune must name search_space entries; {missing or 'empty list'} "
                    f"not among {sorted(self.search_space)}"
                )
        return self

    @field_validator("search_space")
    @classmethod
    def _known_names(cls, v: dict[str, SearchEntryParams]) -> dict[str, SearchEntryParams]:
        unknown = [k for k in v if k not in TUNABLE]
        if unknown:
            raise ValueError(
                f"search_space entries {unknown} are not tunable training parameters; tunable: {sorted(TUNABLE)}"
            )
        if not v:
            raise ValueError("search_space is empty")
        return v


def _scalar_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _scalar_paths(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


# every scalar training parameter a study may search, as a dotted path under training
NOT_TUNABLE = {
    "strategy",
    "engine",
    "data.modalities",
    "model.encoders",
    "resume",
    "num_threads",
}
TUNABLE = {
    p
    for p in _scalar_paths(TrainingParams)
    if p not in NOT_TUNABLE and not p.startswith("federation.early_stopping.")
}


# --------------------------------------------------------------------------- the whole tree
class PathsParams(_Strict):
    """Raw-input paths given with ``--params paths.<name>=...`` (defaults: conf/base/globals.yml)."""

    tecator: str | None = None
    corn_dir: str | None = None
    table: str | None = None


class ProjectParams(_Strict):
    """Every parameter group of the project: the one typed configuration tree."""

    seed: int = 42
    task: Literal["regression", "classification", "anomaly"] = "regression"
    paths: PathsParams = PathsParams()
    ingestion: IngestionParams = IngestionParams()
    partitioning: PartitioningParams = PartitioningParams()
    training: TrainingParams = TrainingParams()
    regression: RegressionParams = RegressionParams()
    baselines: BaselinesParams = BaselinesParams()
    evaluation: EvaluationParams = EvaluationParams()
    reporting: ReportingParams = ReportingParams()
    tuning: TuningParams = TuningParams()


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def unknown_keys(tree: dict, model: type[BaseModel] = ProjectParams, prefix: str = "") -> list[str]:
    """Every key of ``tree`` that ``model`` does not declare, as 'path (did you mean ...?)'."""
    import difflib

    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key not in model.model_fields:
            close = difflib.get_close_matches(str(key), list(model.model_fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            out.append(f"'{path}'{hint}")
            continue
        sub = _model_of(model.model_fields[key].annotation)
        if sub is not None and isinstance(value, dict):
            out += unknown_keys(value, sub, f"{path}.")
    return out


def check_parameters(tree: dict) -> None:
    """Reject parameter keys the project does not know (a typo would otherwise be ignored and
    the default used), naming each with the closest known name."""
    from fdrmfl_pipeline.errors import ConfigError

    bad = unknown_keys(tree)
    task = tree.get("task", "regression")
    if task not in ("regression", "classification", "anomaly"):
        raise ConfigError(
            f"task '{task}' is not one of regression, classification, anomaly (conf/base/"
            "parameters.yml)"
        )
    if bad:
        raise ConfigError(
            "unknown parameter " + ", ".join(bad) + ": check the spelling in conf/ or --params "
            "(every known parameter is listed with its default in conf/base/parameters_*.yml)"
        )
