"""Flower records <-> the core's values: weights, scalers and sufficient statistics.

Everything that crosses the client/server boundary in a Flower run passes through here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord

from fdrmfl_pipeline.core.clientdata import Scaler, SufficientStats

if TYPE_CHECKING:  # torch is imported by the functions that need it (queries need none)
    import torch

State = dict[str, "torch.Tensor"]


def arrays_record(d: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in d.items()})


def state_record(state: State) -> ArrayRecord:
    return arrays_record({k: v.detach().cpu().numpy() for k, v in state.items()})


def record_state(rec: ArrayRecord) -> State:
    import torch

    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in rec.items()}


def anchored(state: State) -> State:
    from fdrmfl_pipeline.core.losses import ANCHORED

    return {k: v for k, v in state.items() if k.startswith(ANCHORED)}


def scaler_record(sc: Scaler) -> ArrayRecord:
    arrays = {f"mean.{k}": np.asarray(v, np.float64) for k, v in sc.x_mean.items()}
    arrays.update({f"std.{k}": np.asarray(v, np.float64) for k, v in sc.x_std.items()})
    arrays["y"] = np.array([sc.y_mean, sc.y_std], np.float64)
    return arrays_record(arrays)


def record_scaler(rec: ArrayRecord) -> Scaler:
    arr = {k: v.numpy() for k, v in rec.items()}
    mean = {k[5:]: arr[k] for k in arr if k.startswith("mean.")}
    std = {k[4:]: arr[k] for k in arr if k.startswith("std.")}
    return Scaler(mean, std, float(arr["y"][0]), float(arr["y"][1]))


def stats_record(st: SufficientStats) -> ArrayRecord:
    arrays = {f"s1.{k}": np.asarray(v, np.float64) for k, v in st.s1.items()}
    arrays.update({f"s2.{k}": np.asarray(v, np.float64) for k, v in st.s2.items()})
    arrays.update({f"n.{k}": np.array([v], np.int64) for k, v in st.n.items()})
    arrays["y"] = np.array([st.y_n, st.y_s1, st.y_s2], np.float64)
    return arrays_record(arrays)


def record_stats(rec: ArrayRecord) -> SufficientStats:
    arr = {k: v.numpy() for k, v in rec.items()}
    names = [k[3:] for k in arr if k.startswith("s1.")]
    y = arr["y"]
    return SufficientStats(
        {m: int(arr[f"n.{m}"][0]) for m in names},
        {m: arr[f"s1.{m}"] for m in names},
        {m: arr[f"s2.{m}"] for m in names},
        int(y[0]),
        float(y[1]),
        float(y[2]),
    )
