"""Baseline nodes: classical extractors per client (train only) + the same regressors."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from fdrmfl_pipeline.core.modalities import from_arrow
from fdrmfl_pipeline.params import BaselinesParams, TrainingParams

logger = logging.getLogger(__name__)


def _raw_frame(clients, names) -> pd.DataFrame:
    """Every client's flattened inputs (absent modalities zero) as f_* columns, all splits."""
    from fdrmfl_pipeline.core.warmstart import design

    frames = []
    for c, cd in clients.items():
        for s in ("train", "val", "test"):
            sp = cd.splits[s]
            x = design(sp, names)
            f = pd.DataFrame(x, columns=[f"f_{i}" for i in range(x.shape[1])])
            frames.append(f.assign(sample_id=sp.sample_ids, client=c, split=s, target=sp.y_raw))
    return pd.concat(frames, ignore_index=True)


def _pooled_anchor(
    clients, names, params: BaselinesParams, seed: int, n_classes: int = 0
) -> pd.DataFrame:
    """The pooled regressors on every client's raw inputs (a class target: logistic)."""
    from fdrmfl_pipeline.core.downstream import classify_per_client, fit_predict_per_client

    t0 = time.perf_counter()
    frame = _raw_frame(clients, names)
    cols = [col for col in frame.columns if col.startswith("f_")]
    if n_classes:
        out = classify_per_client(
            frame, cols, "raw_pooled", ["logistic"], n_classes, seed, True, params.refit_on_val
        )
    else:
        out = fit_predict_per_client(
            frame,
            cols,
            "raw_pooled",
            params.pooled_regressors,
            seed,
            pooled=True,
            refit_on_val=params.refit_on_val,
        )
    logger.info(
        "pooled anchor %s on %d train rows: %.1fs",
        ["logistic"] if n_classes else params.pooled_regressors,
        int((frame["split"] == "train").sum()),
        time.perf_counter() - t0,
    )
    return out


def baseline_predictions(
    multimodal_dataset: pa.Table,
    client_assignments: pd.DataFrame,
    params: BaselinesParams,
    training: TrainingParams,
    seed: int,
) -> pd.DataFrame:
    """Every extractor fitted on each client's train split, then the regressors, on val and test."""
    from fdrmfl_pipeline.core.baselines import extract
    from fdrmfl_pipeline.core.clientdata import build_clients
    from fdrmfl_pipeline.core.downstream import (
        classify_per_client,
        empty_predictions,
        fit_predict_per_client,
    )

    if not params.enabled:
        return empty_predictions()
    data = from_arrow(multimodal_dataset)
    k = len(data.classes)

    def fit(frame, cols, method, regressors, classifiers, pooled=False):
        """The regressors, or for a class target the classifiers."""
        if k:
            return classify_per_client(
                frame, cols, method, classifiers, k, seed, pooled, params.refit_on_val
            )
        return fit_predict_per_client(
            frame, cols, method, regressors, seed, pooled=pooled, refit_on_val=params.refit_on_val
        )

    names = training.data.modalities or data.modality_names
    # per-client standardisation fitted on that client's train split only
    clients, _ = build_clients(data, client_assignments, names, "local", seed)
    out = []
    total, done, t_start = len(clients) * len(params.extractors), 0, time.perf_counter()
    for c, cd in clients.items():
        mods = [m for m, ok in zip(names, cd.available, strict=True) if ok]
        splits = {s: (cd.splits[s].x, cd.splits[s].y_raw) for s in ("train", "val", "test")}
        for name in params.extractors:
            t0 = time.perf_counter()
            feats = extract(name, splits, mods, seed, training.model.latent_dim, params.vae_epochs)
            frame = pd.concat(
                [
                    pd.DataFrame(f, columns=[f"f_{i}" for i in range(f.shape[1])]).assign(
                        sample_id=cd.splits[s].sample_ids,
                        client=c,
                        split=s,
                        target=cd.splits[s].y_raw,
                    )
                    for s, f in feats.items()
                ],
                ignore_index=True,
            )
            cols = [col for col in frame.columns if col.startswith("f_")]
            regs = params.raw_regressors if name == "raw" else params.regressors
            classifiers = ["logistic"] if name == "raw" else params.classifiers
            out.append(fit(frame, cols, name, regs, classifiers))
            done += 1
            elapsed = time.perf_counter() - t_start
            logger.info(
                "baseline %d/%d: %s on client %d, %d features, %.1fs (ETA %.0fs)",
                done,
                total,
                name,
                c,
                len(cols),
                time.perf_counter() - t0,
                elapsed / done * (total - done),
            )
        if params.include_mean:
            frame = pd.concat(
                [
                    pd.DataFrame(
                        {
                            "sample_id": cd.splits[s].sample_ids,
                            "client": c,
                            "split": s,
                            "target": cd.splits[s].y_raw,
                        }
                    )
                    for s in ("train", "val", "test")
                ],
                ignore_index=True,
            )
            out.append(fit(frame, [], "client_prior" if k else "client_mean", ["mean"], ["prior"]))
    if params.pooled_regressors:
        # one affine scaling for every row, so the pooled fit sees the inputs as if concatenated
        pooled, _ = build_clients(data, client_assignments, names, "federated", seed)
        out.append(_pooled_anchor(pooled, names, params, seed, k))
    result = pd.concat(out, ignore_index=True)
    result["client"] = result["client"].astype(np.int64)
    return result
