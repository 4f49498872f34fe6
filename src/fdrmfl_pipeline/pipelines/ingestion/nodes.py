"""Ingestion nodes: build the canonical multi-modal table from the selected source."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from fdrmfl_pipeline.core import modalities, sources, synthetic
from fdrmfl_pipeline.params import IngestionParams

logger = logging.getLogger(__name__)


def build_multimodal_dataset(
    params: IngestionParams,
    seed: int,
    tecator_raw: Callable[..., pd.DataFrame],
    corn_raw: Callable[..., pd.DataFrame],
    table_raw: Callable[..., pd.DataFrame],
    task: str = "regression",
) -> pa.Table:
    """Read the source named by ``ingestion.source`` and return the canonical Arrow table.

    The raw inputs are lazy loaders: only the selected source's files are read. ``task``
    classification codes the target's classes (a table's label column; the simulation's
    response cut into quantile classes); anomaly keeps a table's anomaly labels.
    """
    from fdrmfl_pipeline.core.tasks import TASKS
    from fdrmfl_pipeline.errors import ConfigError

    if task not in TASKS:
        raise ConfigError(f"task '{task}' is not one of {TASKS}")
    if task == "classification" and params.source in ("tecator", "corn"):
        raise ConfigError(
            f"task classification needs a class label; source '{params.source}' has lab "
            "values to regress (use source table with a label column, or synthetic)"
        )
    if task != "anomaly" and params.source == "table" and params.table.anomaly_column:
        raise ConfigError(
            "ingestion.table.anomaly_column is set but task is "
            f"'{task}': set task: anomaly, or remove the column setting"
        )
    if params.source == "synthetic":
        p = params.synthetic
        data = synthetic.generate_synthetic(
            p.function, p.n_train, p.n_test, seed if p.seed is None else p.seed, p.noise_std
        ).validate()
        if task == "classification":
            from dataclasses import replace

            from fdrmfl_pipeline.core.tasks import quantile_classes

            codes, classes = quantile_classes(
                data.target, data.target[data.split == "train"], p.n_classes
            )
            data = replace(data, target=codes, classes=classes).validate()
    elif params.source == "tecator":
        p = params.tecator
        data = sources.build_tecator(
            tecator_raw(), p.target, p.modalities, p.standard_split, p.sg_window, p.sg_polyorder
        )
    elif params.source == "corn":
        p = params.corn
        instruments = [m for m in p.modalities if m != "lab"] or ["m5"]
        data = sources.build_corn({m: corn_raw(m) for m in instruments}, p.target, p.modalities)
    else:
        p = params.table
        mods = [
            sources.TableModality(
                name,
                m.kind,
                tuple(m.columns) if m.columns is not None else None,
                m.pattern,
                tuple(m.shape) if m.shape else None,
            )
            for name, m in p.modalities.items()
        ]
        data = sources.build_table(
            table_raw(),
            p.target,
            mods,
            p.id_column,
            p.split_column,
            source=f"table:{getattr(table_raw, 'path', '')}",
            client_column=p.client_column,
            order_column=p.order_column,
            ignore=p.ignore,
            categorical_target=task == "classification",
            anomaly_column=p.anomaly_column,
        )
    if data.classes:
        counts = np.bincount(data.target.astype(np.int64), minlength=len(data.classes))
        logger.info(
            "Classes: %s",
            ", ".join(f"{c} ({k})" for c, k in zip(data.classes, counts, strict=True)),
        )
    logger.info(
        "Ingested %d samples from '%s': %s",
        data.n,
        data.source,
        ", ".join(f"{s.name} ({s.kind} {list(s.shape)})" for s in data.specs),
    )
    return modalities.to_arrow(data)
