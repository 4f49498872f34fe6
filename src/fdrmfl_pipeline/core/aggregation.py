"""Server-side arithmetic: client sampling, FedAvg and retention mixing."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fdrmfl_pipeline.core import seeding

State = dict[str, torch.Tensor]


def sample_clients(client_ids: Sequence[int], fraction: float, seed: int, round_: int) -> list[int]:
    """``ceil(fraction * K)`` client ids drawn without replacement by a generator seeded with
    (seed, round); returned sorted. Never keyed on anything but the client ids."""
    ids = sorted(int(c) for c in client_ids)
    if not 0 < fraction <= 1:
        raise ValueError(f"client fraction must be in (0, 1], got {fraction}")
    k = max(1, math.ceil(fraction * len(ids)))
    if k >= len(ids):
        return ids
    gen = seeding.rng(seed, "client-sampling", round_)
    return sorted(int(ids[i]) for i in gen.choice(len(ids), size=k, replace=False))


def fedavg(updates: Sequence[tuple[int, State, int]]) -> State:
    """Sample-count-weighted average of client states, summed in ascending client-id order.

    ``updates``: (client_id, state_dict, n_samples). Float tensors are averaged; any other
    tensor must agree across clients and is taken from the first.
    """
    if not updates:
        raise ValueError("fedavg needs at least one client update")
    ordered = sorted(updates, key=lambda u: u[0])
    total = float(sum(n for _, _, n in ordered))
    if total <= 0:
        raise ValueError("fedavg: client sample counts sum to zero")
    out: State = {}
    for key, first in ordered[0][1].items():
        if not torch.is_floating_point(first):
            out[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for _, state, n in ordered:
            acc += state[key].to(torch.float64) * (n / total)
        out[key] = acc.to(first.dtype)
    return out


def retain(average: State, previous: State, retention: float) -> State:
    """Server retention: ``theta <- (1 - r) * average + r * theta_old``."""
    if not 0 <= retention < 1:
        raise ValueError(f"retention must be in [0, 1), got {retention}")
    if retention == 0:
        return average
    return {
        k: ((1 - retention) * v.to(torch.float64) + retention * previous[k].to(torch.float64)).to(
            v.dtype
        )
        if torch.is_floating_point(v)
        else v
        for k, v in average.items()
    }
