"""Builders that turn raw tables (already loaded by the catalog) into :class:`MultimodalData`.

No file I/O here: the Kedro catalog loads the files, these functions validate and reshape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fdrmfl_pipeline.core.modalities import (
    RESERVED_COLUMNS,
    ModalitySpec,
    MultimodalData,
)
from fdrmfl_pipeline.errors import (
    EmptyDataError,
    InputDataError,
    MissingColumnError,
    NonFiniteValueError,
    NonNumericColumnError,
    OverlappingModalityError,
    ShapeMismatchError,
)

TECATOR_TARGETS = ("moisture", "fat", "protein")
TECATOR_MODALITIES = ("spectrum", "spectrum_d1", "spectrum_d2", "lab")
TECATOR_N_CHANNELS = 100
TECATOR_STANDARD_TRAIN = 172  # StatLib: samples 1-172 train, 173-215 test
CORN_TARGETS = ("moisture", "oil", "protein", "starch")
CORN_INSTRUMENTS = ("m5", "mp5", "mp6")
CORN_N_CHANNELS = 700

logger = logging.getLogger(__name__)


def _numeric_block(df: pd.DataFrame, columns: Sequence[str], what: str, source: str) -> np.ndarray:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingColumnError(
            f"{source}: {what} needs column(s) {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} which are not in the input "
            f"(it has {len(df.columns)} columns)"
        )
    non_numeric = [c for c in columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise NonNumericColumnError(
            f"{source}: {what} column(s) {non_numeric[:10]} are not numeric "
            f"(dtypes: {[str(df[c].dtype) for c in non_numeric[:10]]})"
        )
    return df[list(columns)].to_numpy(dtype=np.float64)


def savgol_derivative(x: np.ndarray, deriv: int, window: int, polyorder: int) -> np.ndarray:
    """Savitzky-Golay derivative of each row of ``x`` (channels on the last axis)."""
    from scipy.signal import savgol_filter

    return savgol_filter(x, window_length=window, polyorder=polyorder, deriv=deriv, axis=-1)


def build_tecator(
    df: pd.DataFrame,
    target: str,
    modalities: Sequence[str],
    standard_split: bool,
    sg_window: int = 11,
    sg_polyorder: int = 2,
) -> MultimodalData:
    """Tecator (215 samples): spectrum, its SG derivatives and the other two endpoints (``lab``)."""
    source = "tecator"
    if target not in TECATOR_TARGETS:
        raise InputDataError(f"tecator: target '{target}' is not one of {TECATOR_TARGETS}")
    if len(df) == 0:
        raise EmptyDataError("tecator: the input table has no rows")
    channels = [f"a_{i}" for i in range(TECATOR_N_CHANNELS)]
    spectrum = _numeric_block(df, channels, "spectrum", source)
    y = _numeric_block(df, [target], "target", source)[:, 0]
    arrays: dict[str, np.ndarray] = {}
    specs: list[ModalitySpec] = []
    for name in modalities:
        if name == "spectrum":
            values = spectrum
        elif name in ("spectrum_d1", "spectrum_d2"):
            values = savgol_derivative(spectrum, int(name[-1]), sg_window, sg_polyorder)
        elif name == "lab":
            others = [t for t in TECATOR_TARGETS if t != target]
            values = _numeric_block(df, others, "lab", source)
        else:
            raise InputDataError(f"tecator: modality '{name}' is not one of {TECATOR_MODALITIES}")
        kind = "vector" if name == "lab" else "spectrum"
        specs.append(ModalitySpec(name, kind, (values.shape[1],)))
        arrays[name] = values.astype(np.float32)
    ids = np.array([f"tecator_{i + 1:03d}" for i in range(len(df))])
    split = None
    if standard_split:
        if len(df) <= TECATOR_STANDARD_TRAIN:
            raise InputDataError(
                f"tecator: the standard split needs more than {TECATOR_STANDARD_TRAIN} rows, "
                f"got {len(df)}; set ingestion.tecator.standard_split=false"
            )
        split = np.where(np.arange(len(df)) < TECATOR_STANDARD_TRAIN, "train", "test")
    return MultimodalData(ids, y, arrays, tuple(specs), split, source).validate()


def build_corn(
    instruments: Mapping[str, pd.DataFrame],
    target: str,
    modalities: Sequence[str],
) -> MultimodalData:
    """Corn (80 samples on three instruments): any of ``m5``/``mp5``/``mp6`` and ``lab``."""
    source = "corn"
    if target not in CORN_TARGETS:
        raise InputDataError(f"corn: target '{target}' is not one of {CORN_TARGETS}")
    unknown = [m for m in modalities if m not in (*CORN_INSTRUMENTS, "lab")]
    if unknown:
        raise InputDataError(
            f"corn: modalities {unknown} are not among {[*CORN_INSTRUMENTS, 'lab']}"
        )
    used = [m for m in modalities if m in CORN_INSTRUMENTS] or [CORN_INSTRUMENTS[0]]
    for name in used:
        if name not in instruments:
            raise MissingColumnError(f"corn: no data loaded for instrument '{name}'")
    ref = instruments[used[0]]
    if len(ref) == 0:
        raise EmptyDataError(f"corn: the '{used[0]}' table has no rows")
    y = _numeric_block(ref, [target], "target", source)[:, 0]
    for name in used[1:]:
        other = _numeric_block(instruments[name], list(CORN_TARGETS), "properties", source)
        mine = _numeric_block(ref, list(CORN_TARGETS), "properties", source)
        if other.shape != mine.shape or not np.allclose(other, mine):
            raise InputDataError(
                f"corn: instruments '{used[0]}' and '{name}' do not hold the same samples in "
                "the same order (their property columns differ)"
            )
    channels = [f"a_{i}" for i in range(CORN_N_CHANNELS)]
    arrays: dict[str, np.ndarray] = {}
    specs: list[ModalitySpec] = []
    for name in modalities:
        if name == "lab":
            others = [t for t in CORN_TARGETS if t != target]
            values = _numeric_block(ref, others, "lab", source)
            specs.append(ModalitySpec("lab", "vector", (len(others),)))
        else:
            values = _numeric_block(instruments[name], channels, f"instrument {name}", source)
            specs.append(ModalitySpec(name, "spectrum", (CORN_N_CHANNELS,)))
        arrays[name] = values.astype(np.float32)
    if "sample" in ref.columns:
        ids = np.array([f"corn_{int(s):02d}" for s in ref["sample"]])
    else:
        ids = np.array([f"corn_{i + 1:02d}" for i in range(len(ref))])
    return MultimodalData(ids, y, arrays, tuple(specs), None, source).validate()


@dataclass(frozen=True)
class TableModality:
    """How one modality is read from a user table: explicit columns or a regex pattern."""

    name: str
    kind: str
    columns: tuple[str, ...] | None = None
    pattern: str | None = None
    shape: tuple[int, ...] | None = None


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_columns(values: np.ndarray, cols: list, ids: np.ndarray, what: str, source: str) -> None:
    """NaN / inf, or a finite value that overflows float32 (the modalities' storage type):
    the error names the column, the count and the first sample id."""
    bad = ~np.isfinite(values)
    kind = "NaN/inf value(s)"
    if not bad.any():
        bad = np.abs(values) > FLOAT32_MAX
        kind = f"value(s) beyond float32's range (|x| > {FLOAT32_MAX:.3g}; they would become inf)"
    if bad.any():
        rows = bad.any(axis=1)
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        i = int(np.flatnonzero(bad[:, j])[0])
        raise NonFiniteValueError(
            f"{source}: {what} holds {int(bad.sum())} {kind} in {int(rows.sum())} sample(s) "
            f"(first sample ids: {', '.join(map(str, ids[rows][:5]))}); first in column "
            f"'{cols[j]}' at sample '{ids[i]}' (value {values[i, j]!r}); clean or drop them"
        )


def build_table(
    df: pd.DataFrame,
    target: str,
    modalities: Sequence[TableModality],
    id_column: str | None = None,
    split_column: str | None = None,
    source: str = "table",
    client_column: str | None = None,
    order_column: str | None = None,
    ignore: Sequence[str] = (),
    categorical_target: bool = False,
    anomaly_column: str | None = None,
) -> MultimodalData:
    """A user's own table: one row per sample, modalities declared by columns or pattern.
    ``categorical_target``: the target column holds class labels (any values; coded 0..C-1 in
    sorted order). ``anomaly_column``: 0/1 labels kept to judge anomaly scores."""
    if len(df) == 0:
        raise EmptyDataError(f"{source}: the input table has no rows")
    if not modalities:
        raise EmptyDataError(f"{source}: no modalities declared (ingestion.table.modalities)")
    extra = (id_column, split_column, client_column, order_column, anomaly_column)
    wanted = [target] + [c for c in extra if c]
    wanted += list(ignore)
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise MissingColumnError(f"{source}: column(s) {missing} not found in the input table")
    classes: tuple[str, ...] = ()
    if categorical_target:
        from fdrmfl_pipeline.core.tasks import encode_labels

        y, classes = encode_labels(df[target].tolist(), f"{source}: target '{target}'")
    else:
        y = _numeric_block(df, [target], f"target '{target}'", source)[:, 0]
    claimed: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {}
    specs: list[ModalitySpec] = []
    excluded = {target, *extra, *ignore}
    if id_column:
        ids = df[id_column].astype(str).to_numpy()
    else:
        ids = np.array([f"row_{i}" for i in range(len(df))])
    check_columns(y[:, None], [target], ids, "target", source)
    for mod in modalities:
        if mod.columns is not None:
            cols = list(mod.columns)
        elif mod.pattern is not None:
            regex = re.compile(mod.pattern)
            cols = [c for c in df.columns if c not in excluded and regex.fullmatch(str(c))]
            if not cols:
                raise MissingColumnError(
                    f"{source}: modality '{mod.name}': pattern '{mod.pattern}' matches no column"
                )
        else:
            raise InputDataError(f"{source}: modality '{mod.name}' needs 'columns' or 'pattern'")
        for c in cols:
            if c in claimed:
                raise OverlappingModalityError(
                    f"{source}: column '{c}' is claimed by modalities '{claimed[c]}' and "
                    f"'{mod.name}'"
                )
            if c in excluded:
                raise OverlappingModalityError(
                    f"{source}: column '{c}' of modality '{mod.name}' is the target/id/split column"
                )
            claimed[c] = mod.name
        values = _numeric_block(df, cols, f"modality '{mod.name}'", source)
        check_columns(values, cols, ids, f"modality '{mod.name}'", source)
        shape = tuple(mod.shape) if mod.shape else (len(cols),)
        spec = ModalitySpec(mod.name, mod.kind, shape)
        if spec.size != len(cols):
            raise ShapeMismatchError(
                f"{source}: modality '{mod.name}' has {len(cols)} column(s) but its declared "
                f"shape {list(shape)} needs {spec.size}"
            )
        specs.append(spec)
        arrays[mod.name] = values.astype(np.float32).reshape(len(df), *shape)
    split = None
    if split_column:
        split = df[split_column].astype(str).str.strip().str.lower().to_numpy()
    order = None
    if order_column:
        order = _numeric_block(df, [order_column], f"order column '{order_column}'", source)[:, 0]
    unused = [c for c in df.columns if c not in excluded and c not in claimed]
    if unused:
        logger.warning(
            "%s: %d column(s) belong to no modality and are ignored: %s%s (declare them in a "
            "modality, or list them in ingestion.table.ignore to silence this)",
            source,
            len(unused),
            ", ".join(map(str, unused[:10])),
            " ..." if len(unused) > 10 else "",
        )
    for name in arrays:
        if name in RESERVED_COLUMNS:
            raise InputDataError(f"{source}: modality name '{name}' is reserved")
    keys = df[client_column].astype(str).to_numpy() if client_column else None
    anomaly = None
    if anomaly_column:
        raw = pd.to_numeric(df[anomaly_column], errors="coerce").to_numpy()
        bad = ~np.isin(raw, (0, 1))
        if bad.any():
            raise InputDataError(
                f"{source}: anomaly column '{anomaly_column}' must hold 0 or 1; row "
                f"{ids[bad][0]} has {df[anomaly_column].to_numpy()[bad][0]!r}"
            )
        anomaly = raw.astype(np.int8)
    return MultimodalData(
        ids,
        y,
        arrays,
        tuple(specs),
        split,
        source,
        client_key=keys,
        order=order,
        classes=classes,
        anomaly=anomaly,
    ).validate()
