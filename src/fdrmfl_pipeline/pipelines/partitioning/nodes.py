"""Partitioning nodes: assign samples to clients and splits, summarise, plot."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fdrmfl_pipeline.core import partition, seeding
from fdrmfl_pipeline.core.modalities import from_arrow, specs_from_schema, table_classes
from fdrmfl_pipeline.params import PartitioningParams

logger = logging.getLogger(__name__)


def _targets(table: pa.Table) -> pd.Series:
    ids = table.column("sample_id").to_numpy(zero_copy_only=False).astype(str)
    return pd.Series(table.column("target").to_numpy(), index=ids, name="target")


def duplicate_groups(table: pa.Table) -> np.ndarray:
    """A label per row shared by rows with identical modality values and target."""
    import hashlib

    data = from_arrow(table)
    digests = []
    for i in range(data.n):
        h = hashlib.blake2b(np.float64(data.target[i]).tobytes(), digest_size=16)
        for name in data.modality_names:
            h.update(data.arrays[name][i].tobytes())
        digests.append(h.hexdigest())
    return np.asarray(digests)


def assign_clients(
    multimodal_dataset: pa.Table, params: PartitioningParams, seed: int
) -> pd.DataFrame:
    """Assign every sample to a client and to ``train``/``val``/``test`` with the chosen scheme."""
    specs = specs_from_schema(multimodal_dataset.schema)
    split = None
    if "split" in multimodal_dataset.column_names:
        split = multimodal_dataset.column("split").to_numpy(zero_copy_only=False).astype(str)
    targets = _targets(multimodal_dataset)
    groups = duplicate_groups(multimodal_dataset) if params.group_duplicates else None
    names = multimodal_dataset.column_names
    keys = (
        multimodal_dataset.column("client_key").to_numpy(zero_copy_only=False).astype(str)
        if "client_key" in names
        else None
    )
    order = (
        multimodal_dataset.column("order").to_numpy().astype(np.float64)
        if "order" in names
        else None
    )
    out = partition.partition(
        sample_ids=targets.index.to_numpy(),
        targets=targets.to_numpy(),
        modalities=[s.name for s in specs],
        predefined_split=split,
        opts=params.options(),
        rng=seeding.rng(seed, "partition"),
        groups=groups,
        client_keys=keys,
        order=order,
        n_classes=len(table_classes(multimodal_dataset)),
    )
    counts = out.groupby(["client", "split"]).size().unstack(fill_value=0)
    logger.info("Partition '%s' over %d clients:\n%s", params.scheme, len(counts), counts)
    return out


def summarise_partition(
    client_assignments: pd.DataFrame, multimodal_dataset: pa.Table
) -> pd.DataFrame:
    """Per client and split: counts, target statistics and available modalities."""
    names = [s.name for s in specs_from_schema(multimodal_dataset.schema)]
    return partition.summarise(client_assignments, _targets(multimodal_dataset), names)


def plot_client_targets(client_assignments: pd.DataFrame, multimodal_dataset: pa.Table) -> Any:
    """Histogram of each client's target values per split (one panel per client)."""
    from matplotlib.figure import Figure

    targets = _targets(multimodal_dataset)
    df = client_assignments.assign(target=client_assignments["sample_id"].map(targets).to_numpy())
    clients = sorted(df["client"].unique())
    ncols = min(len(clients), 5)
    nrows = int(np.ceil(len(clients) / ncols))
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    bins = np.histogram_bin_edges(df["target"], bins=20)
    for ax, c in zip(axes, clients, strict=False):
        for split, color in (("train", "C0"), ("val", "C1"), ("test", "C2")):
            vals = df.loc[(df["client"] == c) & (df["split"] == split), "target"]
            if len(vals):
                ax.hist(vals, bins=bins, alpha=0.55, color=color, label=f"{split} ({len(vals)})")
        ax.set_title(f"client {c}")
        ax.legend(fontsize=7)
    for ax in axes[len(clients) :]:
        ax.set_visible(False)
    fig.supxlabel("target")
    fig.suptitle("Target distribution per client and split")
    return fig


def export_client_files(
    multimodal_dataset: pa.Table, client_assignments: pd.DataFrame, params: PartitioningParams
) -> dict[str, pa.Table]:
    """One canonical Parquet table per client (its rows and assignment columns only), so each
    client's data can be shipped to its own machine (``partitioning.export_clients``)."""
    from fdrmfl_pipeline.core.clientdata import client_table

    if not params.export_clients:
        return {}
    clients = sorted(int(c) for c in client_assignments["client"].unique())
    return {f"client_{c}": client_table(multimodal_dataset, client_assignments, c) for c in clients}
