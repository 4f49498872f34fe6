"""Tiny multi-modal datasets for fast training tests (every modality kind)."""

from __future__ import annotations

import numpy as np

from fdrmfl_pipeline.core import seeding
from fdrmfl_pipeline.core.clientdata import build_clients
from fdrmfl_pipeline.core.modalities import ModalitySpec, MultimodalData
from fdrmfl_pipeline.core.model import ModelConfig
from fdrmfl_pipeline.core.partition import PartitionOptions, partition

SPECS = (
    ModalitySpec("img", "image", (1, 6, 6)),
    ModalitySpec("seq", "sequence", (4, 3)),
    ModalitySpec("vec", "vector", (5,)),
    ModalitySpec("spec", "spectrum", (20,)),
)


def tiny_data(n: int = 120, seed: int = 0) -> MultimodalData:
    rng = np.random.default_rng(seed)
    arrays = {s.name: rng.standard_normal((n, *s.shape)).astype(np.float32) for s in SPECS}
    y = (
        arrays["img"].reshape(n, -1)[:, :3].sum(1)
        + arrays["seq"][:, 0, 0]
        + np.tanh(arrays["vec"][:, 0])
        + arrays["spec"][:, 5:8].mean(1)
    ).astype(np.float64)
    split = np.array(["train"] * int(n * 0.8) + ["test"] * (n - int(n * 0.8)))
    return MultimodalData(
        np.array([f"t{i:03d}" for i in range(n)]), y, arrays, SPECS, split, "tiny"
    )


def tiny_clients(
    scheme: str = "iid", n_clients: int = 3, seed: int = 0, val_fraction: float = 0.2, **opts
):
    data = tiny_data(seed=seed)
    assign = partition(
        data.sample_ids,
        data.target,
        data.modality_names,
        data.split,
        PartitionOptions(scheme=scheme, n_clients=n_clients, val_fraction=val_fraction, **opts),
        seeding.rng(seed, "partition"),
    )
    clients, scalers = build_clients(data, assign, data.modality_names, "federated", seed)
    config = ModelConfig.for_modalities(
        [(s.name, s.kind, s.shape) for s in SPECS], latent_dim=4, hidden_dim=8, head_hidden=8
    )
    return data, assign, clients, scalers, config
