"""Training nodes: thin adapters over :mod:`fdrmfl_pipeline.core` (torch imported lazily)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fdrmfl_pipeline.core.modalities import from_arrow
from fdrmfl_pipeline.errors import ConfigError
from fdrmfl_pipeline.params import TrainingParams

logger = logging.getLogger(__name__)


def _setup_torch(params: TrainingParams) -> None:
    import torch

    torch.set_num_threads(params.num_threads)
    torch.use_deterministic_algorithms(True)


def client_data(
    multimodal_dataset: pa.Table,
    client_assignments: pd.DataFrame,
    params: TrainingParams,
    seed: int,
):
    from fdrmfl_pipeline.core.clientdata import build_clients

    data = from_arrow(multimodal_dataset)
    names = params.modalities or data.modality_names
    unknown = [m for m in names if m not in data.modality_names]
    if unknown:
        raise ConfigError(
            f"training.modalities names {unknown}, which the dataset lacks; it has {data.modality_names}"
        )
    bad_enc = [m for m in params.encoders if m not in names]
    if bad_enc:
        raise ConfigError(
            f"training.encoders names modalities {bad_enc} that are not trained on ({names})"
        )
    clients, scalers = build_clients(
        data, client_assignments, names, params.scaling, seed, params.x_scaling
    )
    return data, names, clients, scalers


def model_config(data, names, params: TrainingParams):
    from fdrmfl_pipeline.core.model import ModelConfig

    return ModelConfig.for_modalities(
        [(n, data.spec(n).kind, data.spec(n).shape) for n in names],
        encoders=dict(params.encoders),
        latent_dim=params.latent_dim,
        hidden_dim=params.hidden_dim,
        head_hidden=params.head_hidden,
        dropout=params.dropout,
        linear_path=params.linear_path,
    )


def local_train_config(params: TrainingParams):
    from fdrmfl_pipeline.core.client import LocalTrainConfig

    return LocalTrainConfig(
        local_epochs=params.local_epochs,
        batch_size=params.batch_size,
        optimizer=params.optimizer,
        lr=params.lr,
        weight_decay=params.weight_decay,
        grad_clip=params.grad_clip,
        lambda_mi=params.lambda_mi,
        lambda_kl=params.lambda_kl,
        lambda_con=params.lambda_con,
        tau=params.tau,
        prox_mu=params.prox_mu,
        lambda_l1=params.lambda_l1,
        anchor_mu=params.anchor_mu,
    )


def federation_config(params: TrainingParams, seed: int):
    from fdrmfl_pipeline.core.engine import FederationConfig

    return FederationConfig(
        strategy=params.strategy,
        rounds=params.rounds,
        client_fraction=params.client_fraction,
        retention=params.retention,
        early_stopping=params.early_stopping.enabled,
        patience=params.early_stopping.patience,
        min_delta=params.early_stopping.min_delta,
        seed=seed,
        min_clients=params.min_clients,
    )


def warm_start_settings(params: TrainingParams) -> dict:
    """The warm start's settings as ``core.pls.warm_start_state`` keywords (``kind`` 'none': no
    warm start); also what a Flower server needs beyond the model and the loss."""
    return {
        "kind": params.warm_start,
        "n_components": params.pls_components,
        "lasso_penalties": params.lasso_penalties,
        "lasso_iterations": params.lasso_iterations,
        "pca_iterations": params.pca_iterations,
    }


def initial_state(cfg, clients, names, params: TrainingParams, seed: int):
    """The initial weights: None (seeded random) or a federated PLS / PCA / lasso warm start."""
    if params.warm_start == "none":
        return None
    from fdrmfl_pipeline.core.pls import InProcessPLS, warm_start_state

    return warm_start_state(cfg, InProcessPLS(clients, names), seed, **warm_start_settings(params))


def train_model(
    multimodal_dataset: pa.Table,
    client_assignments: pd.DataFrame,
    params: TrainingParams,
    seed: int,
    checkpoint_dir: Path,
) -> tuple[dict, pd.DataFrame]:
    """Run federated training with the chosen strategy; return the model bundle and history."""
    from fdrmfl_pipeline.core.bundle import make_bundle
    from fdrmfl_pipeline.core.engine import run_federated

    _setup_torch(params)
    data, names, clients, scalers = client_data(
        multimodal_dataset, client_assignments, params, seed
    )
    cfg = model_config(data, names, params)
    fed = federation_config(params, seed)
    checkpoint = Path(checkpoint_dir) / f"{params.strategy}.pt"
    if params.engine == "flower-simulation":
        from fdrmfl_pipeline.flower.simulation import simulate_training

        result, scalers = simulate_training(
            multimodal_dataset,
            client_assignments,
            cfg,
            local_train_config(params),
            fed,
            names,
            params.scaling,
            Path(checkpoint_dir) / "flower_staging",
            params.num_threads,
            checkpoint,
            extra=warm_start_settings(params),
            x_scaling=params.x_scaling,
        )
    else:
        result = run_federated(
            cfg,
            clients,
            scalers,
            local_train_config(params),
            fed,
            checkpoint_path=checkpoint,
            resume=params.resume,
            init_state=initial_state(cfg, clients, names, params, seed),
        )
    meta = {
        "engine": params.engine,
        "strategy": params.strategy,
        "seed": seed,
        "best_round": result.best_round,
        "rounds_run": result.rounds_run,
    }
    bundle = make_bundle(cfg, result.global_state, scalers, result.client_states, meta)
    history = pd.DataFrame(result.history).assign(strategy=params.strategy)
    return bundle, history


def extract_features(
    multimodal_dataset: pa.Table,
    client_assignments: pd.DataFrame,
    global_model: dict,
    params: TrainingParams,
    seed: int,
) -> pd.DataFrame:
    """Z (and the head's prediction, original units) for every sample of every client and split."""
    from fdrmfl_pipeline.core.bundle import load_model
    from fdrmfl_pipeline.core.client import predict

    _setup_torch(params)
    _, _, clients, _ = client_data(multimodal_dataset, client_assignments, params, seed)
    frames = []
    for c, cd in clients.items():
        model, scalers = load_model(global_model, client=c)
        sc = scalers[c]
        for split_name, split in cd.splits.items():
            z, y_hat = predict(model, split)
            df = pd.DataFrame(z, columns=[f"z_{i}" for i in range(z.shape[1])])
            df.insert(0, "sample_id", split.sample_ids)
            df.insert(1, "client", c)
            df.insert(2, "split", split_name)
            df.insert(3, "target", split.y_raw)
            df["head_pred"] = y_hat.astype(np.float64) * sc.y_std + sc.y_mean
            frames.append(df)
    return pd.concat(frames, ignore_index=True)
