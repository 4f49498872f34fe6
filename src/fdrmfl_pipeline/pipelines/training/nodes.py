"""Training nodes: thin adapters over :mod:`fdrmfl_pipeline.core` (torch imported lazily)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fdrmfl_pipeline.core.modalities import from_arrow
from fdrmfl_pipeline.params import TrainingParams

logger = logging.getLogger(__name__)


def training_setup(multimodal_dataset: pa.Table, params: TrainingParams, seed: int):
    """The run's :class:`~fdrmfl_pipeline.core.setup.TrainingSetup` and its dataset."""
    from fdrmfl_pipeline.core.setup import TrainingSetup

    data = from_arrow(multimodal_dataset)
    return TrainingSetup.from_params(params, seed, data), data


def train_model(
    multimodal_dataset: pa.Table,
    client_assignments: pd.DataFrame,
    params: TrainingParams,
    seed: int,
    checkpoint_dir: Path,
) -> tuple[dict, pd.DataFrame]:
    """Run federated training with the chosen strategy; return the model bundle and history."""
    from fdrmfl_pipeline import engines
    from fdrmfl_pipeline.core.bundle import make_bundle

    setup, _ = training_setup(multimodal_dataset, params, seed)
    setup.setup_torch()
    dp = setup.federation.dp
    if dp.enabled:
        logger.info(
            "Differential privacy (client level, %s): noise multiplier %.4g, clip %g, "
            "client sampling rate %g, %d rounds -> epsilon %.3f at delta %g for the whole job",
            dp.mode,
            dp.noise_multiplier,
            dp.clip,
            dp.sample_rate,
            dp.rounds,
            dp.epsilon,
            dp.delta,
        )
    result, scalers = engines.train(
        setup, multimodal_dataset, client_assignments, seed, Path(checkpoint_dir)
    )
    meta = {
        "engine": params.engine,
        "strategy": params.strategy,
        "seed": seed,
        "best_round": result.best_round,
        "rounds_run": result.rounds_run,
    }
    if dp.enabled:
        from dataclasses import asdict

        meta["privacy"] = asdict(dp)
    if setup.federation.secure:
        meta["secure_aggregation"] = True
    bundle = make_bundle(setup.model, result.global_state, scalers, result.client_states, meta)
    history = pd.DataFrame(result.history).assign(strategy=params.strategy)
    if dp.enabled:  # the report names the mechanism
        history = history.assign(dp_mode=dp.mode)
    if setup.federation.secure:  # the report states it; per-client columns hold the means
        history = history.assign(secure_aggregation=True)
    return bundle, history


def extract_features(
    multimodal_dataset: pa.Table,
    client_assignments: pd.DataFrame,
    global_model: dict,
    params: TrainingParams,
    seed: int,
) -> pd.DataFrame:
    """Z (and the head's prediction, original units; a classifier's class probabilities
    ``head_p<k>`` and its pick) for every sample of every client and split."""
    from fdrmfl_pipeline.core.bundle import load_model
    from fdrmfl_pipeline.core.client import predict

    setup, data = training_setup(multimodal_dataset, params, seed)
    setup.setup_torch()
    clients, _ = setup.clients(data, client_assignments, seed)
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
            if model.config.n_classes:  # the head's class probabilities and its pick
                from fdrmfl_pipeline.core.tasks import softmax

                proba = softmax(y_hat.astype(np.float64))
                df["head_pred"] = proba.argmax(axis=1).astype(np.float64)
                for k in range(proba.shape[1]):
                    df[f"head_p{k}"] = proba[:, k]
            else:
                df["head_pred"] = y_hat.astype(np.float64) * sc.y_std + sc.y_mean
            frames.append(df)
    features = pd.concat(frames, ignore_index=True)
    z = features[[c for c in features.columns if c.startswith("z_")] + ["head_pred"]].to_numpy()
    if not np.isfinite(z).all():
        from fdrmfl_pipeline.core.bundle import DIVERGED_FIX
        from fdrmfl_pipeline.errors import NonFiniteModelError

        raise NonFiniteModelError(
            f"the model gives NaN or infinite features for {int((~np.isfinite(z)).any(1).sum())}"
            f" of {len(z)} samples; nothing was saved. Fix: {DIVERGED_FIX}"
        )
    return features
