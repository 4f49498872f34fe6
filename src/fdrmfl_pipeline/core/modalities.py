"""Modality specs and the canonical multi-modal table (Arrow <-> numpy).

The canonical table has one row per sample: ``sample_id`` (string), ``target`` (float64), an
optional ``split`` (string: ``train``/``test``) and one fixed-size ``float32`` list column per
modality. Each modality's name, kind and shape live in the Arrow schema metadata under
``fdrmfl.modalities`` so any stage rebuilds correctly shaped arrays from the file alone.

A classification data set stores its class names under ``fdrmfl.classes`` (the target then
holds class codes 0..C-1); an anomaly data set may carry an ``anomaly`` column (0/1), the
labels its scores are judged against -- never a model input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import prod

import numpy as np
import pyarrow as pa

from fdrmfl_pipeline.errors import (
    DuplicateSampleIdError,
    EmptyDataError,
    InputDataError,
    NonFiniteValueError,
    ShapeMismatchError,
)

MODALITY_KINDS = ("image", "sequence", "spectrum", "vector")
METADATA_KEY = b"fdrmfl.modalities"
RESERVED_COLUMNS = ("sample_id", "target", "split", "client_key", "order", "anomaly")
CLASSES_KEY = b"fdrmfl.classes"


@dataclass(frozen=True)
class ModalitySpec:
    """Name, kind and per-sample shape of one modality."""

    name: str
    kind: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in MODALITY_KINDS:
            raise InputDataError(
                f"modality '{self.name}': kind '{self.kind}' is not one of {MODALITY_KINDS}"
            )
        if not self.shape or any(int(s) < 1 for s in self.shape):
            raise ShapeMismatchError(
                f"modality '{self.name}': shape {list(self.shape)} must be non-empty positive ints"
            )
        if self.name in RESERVED_COLUMNS:
            raise InputDataError(f"modality name '{self.name}' is reserved; choose another name")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def size(self) -> int:
        """Number of values per sample."""
        return prod(self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape)}


@dataclass
class MultimodalData:
    """In-memory form of the canonical table; arrays are ``float32`` of shape ``(n, *spec.shape)``."""

    sample_ids: np.ndarray
    target: np.ndarray
    arrays: dict[str, np.ndarray]
    specs: tuple[ModalitySpec, ...]
    split: np.ndarray | None = None
    source: str = field(default="")
    # optional, from the user's table: each row's natural client (site, hospital, plant) and
    # its position in time (any sortable number); partition schemes and splits may use them
    client_key: np.ndarray | None = None
    order: np.ndarray | None = None
    # classification: the class names (the target holds their codes 0..C-1); empty: regression
    classes: tuple[str, ...] = ()
    # anomaly labels (1: anomalous) to judge scores against; never a model input
    anomaly: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.sample_ids)

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def spec(self, name: str) -> ModalitySpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)

    def subset(self, index: np.ndarray) -> MultimodalData:
        """Rows ``index`` (an integer or boolean array) of every column."""
        return MultimodalData(
            sample_ids=self.sample_ids[index],
            target=self.target[index],
            arrays={k: v[index] for k, v in self.arrays.items()},
            specs=self.specs,
            split=None if self.split is None else self.split[index],
            source=self.source,
            client_key=None if self.client_key is None else self.client_key[index],
            order=None if self.order is None else self.order[index],
            classes=self.classes,
            anomaly=None if self.anomaly is None else self.anomaly[index],
        )

    def validate(self) -> MultimodalData:
        """Check emptiness, shapes, duplicate ids and finiteness; raise a specific error."""
        n = self.n
        if n == 0:
            raise EmptyDataError(f"source '{self.source}': the dataset has no samples")
        if not self.specs:
            raise EmptyDataError(f"source '{self.source}': the dataset has no modalities")
        ids = np.asarray(self.sample_ids).astype(str)
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dups = uniq[counts > 1]
            raise DuplicateSampleIdError(
                f"source '{self.source}': {len(dups)} duplicate sample id(s), e.g. "
                f"{', '.join(map(str, dups[:5]))}; sample ids must be unique"
            )
        if self.target.shape != (n,):
            raise ShapeMismatchError(f"target has shape {self.target.shape}, expected ({n},)")
        _check_finite(self.target.reshape(n, 1), ids, "target", self.source)
        if self.classes:
            codes = np.arange(len(self.classes))
            bad = ~np.isin(self.target, codes)
            if bad.any():
                raise InputDataError(
                    f"source '{self.source}': {int(bad.sum())} target value(s) are not class codes "
                    f"0..{len(self.classes) - 1}, e.g. sample {ids[bad][0]}"
                )
        if self.anomaly is not None:
            bad = ~np.isin(self.anomaly, (0, 1))
            if bad.any():
                raise InputDataError(
                    f"source '{self.source}': the anomaly labels must be 0 or 1; sample "
                    f"{ids[bad][0]} has {self.anomaly[bad][0]!r}"
                )
        if n > 1 and float(np.ptp(self.target)) == 0.0:
            raise InputDataError(
                f"source '{self.source}': the target is constant ({float(self.target[0])!r} in all {n} "
                "samples); there is nothing to regress"
            )
        for spec in self.specs:
            arr = self.arrays.get(spec.name)
            if arr is None:
                raise InputDataError(f"modality '{spec.name}' has no array")
            if arr.shape != (n, *spec.shape):
                raise ShapeMismatchError(
                    f"modality '{spec.name}': array shape {arr.shape[1:]} does not match the "
                    f"declared shape {list(spec.shape)}"
                )
            _check_finite(arr.reshape(n, -1), ids, f"modality '{spec.name}'", self.source)
        if self.split is not None:
            bad = sorted(set(map(str, self.split)) - {"train", "val", "test"})
            if bad:
                raise InputDataError(
                    f"source '{self.source}': split values {bad} are not 'train', 'val' or 'test'"
                )
        if self.order is not None:
            _check_finite(
                np.asarray(self.order, np.float64).reshape(n, 1), ids, "order", self.source
            )
        return self


def _check_finite(values: np.ndarray, ids: np.ndarray, what: str, source: str) -> None:
    bad_rows = ~np.isfinite(values).all(axis=1)
    if bad_rows.any():
        count = int((~np.isfinite(values)).sum())
        first = ", ".join(ids[bad_rows][:5])
        raise NonFiniteValueError(
            f"source '{source}': {what} holds {count} NaN/inf value(s) in "
            f"{int(bad_rows.sum())} sample(s); first sample ids: {first}"
        )


def to_arrow(data: MultimodalData) -> pa.Table:
    """Build the canonical Arrow table (with modality metadata) from ``data``."""
    columns: dict[str, pa.Array] = {
        "sample_id": pa.array(np.asarray(data.sample_ids).astype(str), pa.string()),
        "target": pa.array(np.asarray(data.target, dtype=np.float64), pa.float64()),
    }
    if data.split is not None:
        columns["split"] = pa.array(np.asarray(data.split).astype(str), pa.string())
    if data.client_key is not None:
        columns["client_key"] = pa.array(np.asarray(data.client_key).astype(str), pa.string())
    if data.order is not None:
        columns["order"] = pa.array(np.asarray(data.order, dtype=np.float64), pa.float64())
    if data.anomaly is not None:
        columns["anomaly"] = pa.array(np.asarray(data.anomaly, dtype=np.int8), pa.int8())
    for spec in data.specs:
        flat = np.ascontiguousarray(data.arrays[spec.name], dtype=np.float32).reshape(-1)
        columns[spec.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), spec.size)
    table = pa.table(columns)
    meta = {
        METADATA_KEY: json.dumps([s.to_dict() for s in data.specs]).encode(),
        b"fdrmfl.source": data.source.encode(),
    }
    if data.classes:
        meta[CLASSES_KEY] = json.dumps(list(data.classes)).encode()
    return table.replace_schema_metadata(meta)


def specs_from_schema(schema: pa.Schema) -> tuple[ModalitySpec, ...]:
    """Read the modality specs stored in a canonical table's schema metadata."""
    meta = schema.metadata or {}
    if METADATA_KEY not in meta:
        raise InputDataError(
            "the table has no 'fdrmfl.modalities' schema metadata; it was not written by the "
            "ingestion pipeline"
        )
    return tuple(
        ModalitySpec(d["name"], d["kind"], tuple(d["shape"]))
        for d in json.loads(meta[METADATA_KEY])
    )


def modality_array(table: pa.Table, spec: ModalitySpec) -> np.ndarray:
    """One modality as ``float32`` ``(n, *shape)`` straight from the Arrow buffers (no row loop)."""
    col = table.column(spec.name).combine_chunks()  # one contiguous Arrow array
    if col.null_count:
        raise NonFiniteValueError(f"modality '{spec.name}' has {col.null_count} null row(s)")
    if not pa.types.is_fixed_size_list(col.type) or col.type.list_size != spec.size:
        raise ShapeMismatchError(
            f"column '{spec.name}' has type {col.type}, expected fixed_size_list<float>[{spec.size}]"
        )
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(table), *spec.shape)


def from_arrow(table: pa.Table) -> MultimodalData:
    """Rebuild :class:`MultimodalData` from a canonical table, shapes from its metadata."""
    specs = specs_from_schema(table.schema)
    meta = table.schema.metadata or {}
    split = None
    if "split" in table.column_names:
        split = np.asarray(table.column("split").to_numpy(zero_copy_only=False)).astype(str)
    names = table.column_names
    return MultimodalData(
        sample_ids=np.asarray(table.column("sample_id").to_numpy(zero_copy_only=False)).astype(str),
        target=table.column("target").to_numpy().astype(np.float64),
        arrays={s.name: modality_array(table, s) for s in specs},
        specs=specs,
        split=split,
        source=meta.get(b"fdrmfl.source", b"").decode(),
        client_key=np.asarray(table.column("client_key").to_numpy(zero_copy_only=False)).astype(str)
        if "client_key" in names
        else None,
        order=table.column("order").to_numpy().astype(np.float64) if "order" in names else None,
        classes=table_classes(table),
        anomaly=table.column("anomaly").to_numpy().astype(np.int8) if "anomaly" in names else None,
    )


def table_classes(table: pa.Table) -> tuple[str, ...]:
    """The class names a canonical table stores (empty: a regression target)."""
    raw = (table.schema.metadata or {}).get(CLASSES_KEY)
    return tuple(json.loads(raw)) if raw else ()
