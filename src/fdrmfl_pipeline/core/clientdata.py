"""Per-client arrays (train/val/test) and scalers fitted on training data only.

Scalers come from sufficient statistics (count, sum, sum of squares) of each client's ``train``
split: ``federated`` sums them over clients (what a server may learn: no sample leaves a
client), ``local`` keeps each client's own. Validation and test rows never enter a scaler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from fdrmfl_pipeline.core import seeding
from fdrmfl_pipeline.core.modalities import MultimodalData
from fdrmfl_pipeline.core.partition import apply_covariate_shift
from fdrmfl_pipeline.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass
class SplitArrays:
    sample_ids: np.ndarray
    x: dict[str, np.ndarray]  # scaled float32, (n, *shape); zeros where a modality is absent
    mask: np.ndarray  # (n, M) bool: modality present
    y: np.ndarray  # scaled float32 target
    y_raw: np.ndarray  # target in original units

    @property
    def n(self) -> int:
        return len(self.sample_ids)


@dataclass
class ClientData:
    client_id: int
    splits: dict[str, SplitArrays]
    available: np.ndarray  # (M,) bool

    @property
    def train(self) -> SplitArrays:
        return self.splits["train"]

    @property
    def val(self) -> SplitArrays:
        return self.splits["val"]


@dataclass
class Scaler:
    """Per-feature standardisation of every modality and of the target."""

    x_mean: dict[str, np.ndarray]
    x_std: dict[str, np.ndarray]
    y_mean: float
    y_std: float

    def to_dict(self) -> dict:
        return {
            "x_mean": {k: v.tolist() for k, v in self.x_mean.items()},
            "x_std": {k: v.tolist() for k, v in self.x_std.items()},
            "y_mean": self.y_mean,
            "y_std": self.y_std,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(
            {k: np.asarray(v, np.float64) for k, v in d["x_mean"].items()},
            {k: np.asarray(v, np.float64) for k, v in d["x_std"].items()},
            float(d["y_mean"]),
            float(d["y_std"]),
        )


X_SCALINGS = ("per_feature", "per_modality")


@dataclass
class SufficientStats:
    """What a client shares to build a federated scaler: counts, sums, sums of squares."""

    n: dict[str, int]
    s1: dict[str, np.ndarray]
    s2: dict[str, np.ndarray]
    y_n: int
    y_s1: float
    y_s2: float

    def __add__(self, other: SufficientStats) -> SufficientStats:
        keys = set(self.n) | set(other.n)
        z = np.zeros(1)
        return SufficientStats(
            {k: self.n.get(k, 0) + other.n.get(k, 0) for k in keys},
            {k: self.s1.get(k, z) + other.s1.get(k, z) for k in keys},
            {k: self.s2.get(k, z) + other.s2.get(k, z) for k in keys},
            self.y_n + other.y_n,
            self.y_s1 + other.y_s1,
            self.y_s2 + other.y_s2,
        )

    def scaler(
        self,
        shapes: dict[str, tuple[int, ...]],
        x_scaling: str = "per_feature",
        categorical: bool = False,
    ) -> Scaler:
        """Centre every input column; divide it by its own standard deviation (``per_feature``)
        or by one pooled standard deviation per modality (``per_modality``: the root mean
        variance over its columns, which keeps a spectrum's relative band intensities).
        ``categorical``: the target holds class codes and is left as it is."""
        if x_scaling not in X_SCALINGS:
            raise ConfigError(
                f"training.experimental.x_scaling '{x_scaling}' is not one of {X_SCALINGS}"
            )
        mean, std = {}, {}
        for k, shape in shapes.items():
            n = self.n.get(k, 0)
            if n == 0:  # a modality no client has: identity
                mean[k], std[k] = np.zeros(shape), np.ones(shape)
                continue
            m = self.s1[k] / n
            var = np.maximum(self.s2[k] / n - m * m, 0.0)
            sd = np.sqrt(var) if x_scaling == "per_feature" else np.full(shape, np.sqrt(var.mean()))
            mean[k], std[k] = m, np.where(sd > 1e-8, sd, 1.0)
        if categorical:
            return Scaler(mean, std, 0.0, 1.0)
        ym = self.y_s1 / self.y_n
        ysd = float(np.sqrt(max(self.y_s2 / self.y_n - ym * ym, 0.0)))
        return Scaler(mean, std, float(ym), ysd if ysd > 1e-12 else 1.0)


def train_stats(
    x: dict[str, np.ndarray], mask: np.ndarray, y: np.ndarray, names: Sequence[str]
) -> SufficientStats:
    """Sufficient statistics of one client's training split (present modalities only)."""
    n, s1, s2 = {}, {}, {}
    for j, name in enumerate(names):
        v = x[name][mask[:, j]].astype(np.float64)
        n[name], s1[name], s2[name] = len(v), v.sum(axis=0), (v * v).sum(axis=0)
    y = y.astype(np.float64)
    return SufficientStats(n, s1, s2, len(y), float(y.sum()), float((y * y).sum()))


def _scale(
    raw: dict[str, np.ndarray], mask: np.ndarray, y_raw: np.ndarray, scaler: Scaler, names
) -> tuple:
    x = {}
    for j, name in enumerate(names):
        v = ((raw[name] - scaler.x_mean[name]) / scaler.x_std[name]).astype(np.float32)
        v[~mask[:, j]] = 0.0  # never read: the model masks absent modalities out
        x[name] = v
    y = ((y_raw - scaler.y_mean) / scaler.y_std).astype(np.float32)
    return x, y


@dataclass
class RawClient:
    """One client's unscaled splits and the sufficient statistics of its train split."""

    client_id: int
    splits: dict[str, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]]
    stats: SufficientStats
    available: np.ndarray


MIN_TRAIN_ROWS = 2  # per client: a correlation or a variance needs two rows


def raw_client(
    data: MultimodalData, a_c: pd.DataFrame, modalities: Sequence[str], seed: int, client: int
) -> RawClient:
    """Rows of ``a_c`` (one client's assignments, in their order), covariate shift applied."""
    pos = pd.Series(np.arange(data.n), index=data.sample_ids)
    idx_all = pos[a_c["sample_id"]].to_numpy()
    avail = np.array(
        [bool(a_c[f"available_{m}"].all()) if f"available_{m}" in a_c else True for m in modalities]
    )
    gain = float(a_c["covariate_gain"].iloc[0]) if "covariate_gain" in a_c else 1.0
    offset = float(a_c["covariate_offset"].iloc[0]) if "covariate_offset" in a_c else 0.0
    noise = float(a_c["covariate_noise"].iloc[0]) if "covariate_noise" in a_c else 0.0
    shifted = {
        m: apply_covariate_shift(
            data.arrays[m][idx_all], gain, offset, noise, seeding.rng(seed, "covariate", client, m)
        )
        for m in modalities
    }
    split_of = a_c["split"].to_numpy()
    splits = {}
    for s in SPLITS:
        sel = split_of == s
        splits[s] = (
            a_c["sample_id"].to_numpy()[sel].astype(str),
            {m: shifted[m][sel] for m in modalities},
            np.tile(avail, (int(sel.sum()), 1)),
            data.target[idx_all[sel]],
        )
    _, x, mask, y = splits["train"]
    if len(y) < MIN_TRAIN_ROWS:
        raise ConfigError(
            f"client {client} has {len(y)} training row(s); training needs at least "
            f"{MIN_TRAIN_ROWS} per client (one row gives a zero-variance batch and NaN weights). "
            "Fix: fewer clients (partitioning.n_clients), a smaller partitioning.val_fraction or "
            "test split, or a scheme that keeps every client larger (e.g. "
            "partitioning.dirichlet.min_client_size)"
        )
    return RawClient(client, splits, train_stats(x, mask, y, modalities), avail)


def stats_arrays(st: SufficientStats) -> dict[str, np.ndarray]:
    """The statistics as named float arrays (a secure sum adds them key by key)."""
    out = {f"s1.{k}": np.asarray(v, np.float64) for k, v in st.s1.items()}
    out.update({f"s2.{k}": np.asarray(v, np.float64) for k, v in st.s2.items()})
    out.update({f"n.{k}": np.array([float(v)]) for k, v in st.n.items()})
    out["y"] = np.array([st.y_n, st.y_s1, st.y_s2], np.float64)
    return out


def stats_from_arrays(arr: dict[str, np.ndarray]) -> SufficientStats:
    names = [k[3:] for k in arr if k.startswith("s1.")]
    y = np.asarray(arr["y"])
    return SufficientStats(
        {m: int(round(float(arr[f"n.{m}"][0]))) for m in names},
        {m: np.asarray(arr[f"s1.{m}"]) for m in names},
        {m: np.asarray(arr[f"s2.{m}"]) for m in names},
        int(round(float(y[0]))),
        float(y[1]),
        float(y[2]),
    )


def secure_total(stats: dict[int, SufficientStats]) -> SufficientStats:
    """The clients' summed statistics as a secure aggregate computes them (fixed point,
    :mod:`fdrmfl_pipeline.core.secagg`): in-process runs give a masked run's numbers."""
    from fdrmfl_pipeline.core.secagg import plain_sum_arrays

    return stats_from_arrays(plain_sum_arrays({c: stats_arrays(st) for c, st in stats.items()}))


def federated_scaler(
    stats: dict[int, SufficientStats],
    shapes: dict[str, tuple[int, ...]],
    x_scaling: str = "per_feature",
    secure: bool = False,
    categorical: bool = False,
) -> Scaler:
    """One scaler from the clients' summed statistics (summed in ascending client order; or,
    ``secure``, the fixed-point sum a secure aggregate gives)."""
    if secure:
        return secure_total(stats).scaler(shapes, x_scaling, categorical)
    ids = sorted(stats)
    total = stats[ids[0]]
    for c in ids[1:]:
        total = total + stats[c]
    return total.scaler(shapes, x_scaling, categorical)


def scale_client(raw: RawClient, scaler: Scaler, modalities: Sequence[str]) -> ClientData:
    splits = {}
    for s in SPLITS:
        ids, x_raw, mask, y_raw = raw.splits[s]
        x, y = _scale(x_raw, mask, y_raw, scaler, modalities)
        splits[s] = SplitArrays(ids, x, mask, y, y_raw.astype(np.float64))
    return ClientData(raw.client_id, splits, raw.available)


def build_clients(
    data: MultimodalData,
    assignments: pd.DataFrame,
    modalities: Sequence[str],
    scaling: str,
    seed: int,
    x_scaling: str = "per_feature",
    secure: bool = False,
    categorical: bool = False,
) -> tuple[dict[int, ClientData], dict[int, Scaler]]:
    """Split ``data`` by ``client_assignments`` and scale it (``scaling``: one federated scaler
    or one per client; ``x_scaling``: see :meth:`SufficientStats.scaler`); returns clients and
    their scalers."""
    missing = [m for m in modalities if m not in data.modality_names]
    if missing:
        raise ConfigError(
            f"training.data.modalities names {missing}, which the dataset lacks; it has {data.modality_names}"
        )
    unknown = ~assignments["sample_id"].isin(set(data.sample_ids))
    if unknown.any():
        raise ConfigError(
            f"client_assignments holds {int(unknown.sum())} sample id(s) not in multimodal_dataset "
            f"(e.g. {assignments.loc[unknown, 'sample_id'].iloc[0]}); rerun partitioning"
        )
    if scaling not in ("federated", "local"):
        raise ConfigError(f"training.data.scaling '{scaling}' is not 'federated' or 'local'")
    clients = sorted(int(c) for c in assignments["client"].unique())
    raws = {
        c: raw_client(data, assignments[assignments["client"] == c], modalities, seed, c)
        for c in clients
    }
    shapes = {m: data.spec(m).shape for m in modalities}
    if scaling == "federated":
        shared = federated_scaler(
            {c: r.stats for c, r in raws.items()}, shapes, x_scaling, secure, categorical
        )
        scalers = dict.fromkeys(clients, shared)
    else:
        scalers = {c: raws[c].stats.scaler(shapes, x_scaling, categorical) for c in clients}
    return {c: scale_client(raws[c], scalers[c], modalities) for c in clients}, scalers


ASSIGNMENT_COLUMNS = ("client", "split")


def client_table(table: pa.Table, assignments: pd.DataFrame, client: int) -> pa.Table:
    """One client's rows of the canonical table (same metadata, in assignment order) plus its
    assignment columns: what is shipped to that client's machine."""
    a_c = assignments[assignments["client"] == client].reset_index(drop=True)
    ids = table.column("sample_id").to_numpy(zero_copy_only=False).astype(str)
    pos = pd.Series(np.arange(len(ids)), index=ids)
    out = table.take(pa.array(pos[a_c["sample_id"]].to_numpy()))
    for col in a_c.columns:
        if col != "sample_id":
            out = out.append_column(f"assign_{col}", pa.array(a_c[col].to_numpy()))
    return out.replace_schema_metadata(table.schema.metadata)


def assignments_from_client_table(table: pa.Table) -> pd.DataFrame:
    """The assignment rows stored in a :func:`client_table`."""
    cols = {"sample_id": table.column("sample_id").to_numpy(zero_copy_only=False).astype(str)}
    for name in table.column_names:
        if name.startswith("assign_"):
            cols[name[len("assign_") :]] = table.column(name).to_numpy(zero_copy_only=False)
    return pd.DataFrame(cols)


def without_modalities(data: ClientData, absent: Sequence[str], names: Sequence[str]) -> ClientData:
    """``data`` as if the modalities ``absent`` were missing on every row (a sensor the client
    does not have yet): their mask columns off. The same object when nothing is absent."""
    if not absent:
        return data
    off = np.array([m in absent for m in names])
    splits = {}
    for s, sp in data.splits.items():
        mask = sp.mask.copy()
        mask[:, off] = False
        splits[s] = SplitArrays(sp.sample_ids, sp.x, mask, sp.y, sp.y_raw)
    return ClientData(data.client_id, splits, data.available & ~off)


def pool_clients(clients: dict[int, ClientData], names: Sequence[str]) -> ClientData:
    """All clients' splits concatenated into one (the ``central`` upper bound)."""
    splits = {}
    for s in SPLITS:
        parts = [clients[c].splits[s] for c in sorted(clients)]
        splits[s] = SplitArrays(
            np.concatenate([p.sample_ids for p in parts]),
            {m: np.concatenate([p.x[m] for p in parts]) for m in names},
            np.concatenate([p.mask for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.y_raw for p in parts]),
        )
    return ClientData(-1, splits, np.ones(len(names), bool))
