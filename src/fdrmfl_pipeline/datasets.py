"""Project Kedro datasets.

* :class:`ArrowParquetDataset` - a versioned Parquet file holding a ``pyarrow.Table`` as is, so
  fixed-size list columns and schema metadata (the modality specs) survive the round trip. Writes
  go to a temporary file first and are renamed into place: a failed save never leaves a partial
  file, and earlier versions are never touched.
* :class:`LazyTableDataset` - a raw input file (CSV or Parquet) or a directory of such files,
  loaded on demand. Its ``load()`` returns a callable, so a pipeline can declare every raw source
  and read only the one its parameters select (the idiom of Kedro's ``PartitionedDataset``).
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from kedro.io.core import (
    AbstractDataset,
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)
from kedro_datasets._typing import TablePreview
from kedro_datasets.pandas import ParquetDataset as _PandasParquetDataset

from fdrmfl_pipeline.errors import (
    InputDataError,
    MissingFileError,
    StoredArtifactError,
    describe_load_failure,
)


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, write) -> None:
    """``write(file)`` into a hidden temporary file beside ``path``, then rename it into place:
    a failed or interrupted save leaves no partial file and no temporary file, and never
    touches an earlier version. An empty version folder left by a failure is removed."""
    parent = str(PurePosixPath(path).parent)
    existed = fs.exists(parent)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{PurePosixPath(path).name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        if not existed and fs.exists(parent) and not fs.ls(parent):
            fs.rmdir(parent)
        raise


def unreadable(path: str, exc: BaseException) -> StoredArtifactError:
    """The named error for a stored version that cannot be read, with the ways out."""
    version_dir = str(PurePosixPath(path).parent)
    dataset_dir = str(PurePosixPath(version_dir).parent)
    return StoredArtifactError(
        f"cannot read {path}: {describe_load_failure(exc)}. This version may be "
        f"truncated or was not written by this project. Load another version with "
        f"`kedro run --load-versions <dataset>:<version>` (versions: the folders in "
        f"{dataset_dir}), or delete {version_dir} and rerun the pipeline that writes it."
    )


class ArrowParquetDataset(AbstractVersionedDataset[pa.Table, pa.Table]):
    """Versioned Parquet file <-> ``pyarrow.Table`` with schema metadata preserved."""

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        save_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}))
        self._save_args = {"compression": "zstd", **(save_args or {})}
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> pa.Table:
        path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            with self._fs.open(path, "rb") as f:
                return pq.read_table(f)
        except (OSError, pa.ArrowException) as exc:
            raise unreadable(path, exc) from exc

    def save(self, data: pa.Table) -> None:
        if not isinstance(data, pa.Table):
            raise DatasetError(f"ArrowParquetDataset saves a pyarrow.Table, got {type(data)!r}")
        path = get_filepath_str(self._get_save_path(), self._protocol)
        atomic_write(self._fs, path, lambda f: pq.write_table(data, f, **self._save_args))

    def _exists(self) -> bool:
        try:
            path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def preview(self, nrows: int = 5) -> TablePreview:
        """The scalar columns and the modality shapes of the first rows (for kedro-viz)."""
        table = self.load()
        scalar = [
            n
            for n, t in zip(table.column_names, table.schema.types, strict=True)
            if not pa.types.is_fixed_size_list(t)
        ]
        df = table.select(scalar).slice(0, nrows).to_pandas()
        for name, t in zip(table.column_names, table.schema.types, strict=True):
            if pa.types.is_fixed_size_list(t):
                df[name] = f"float32[{t.list_size}]"
        return TablePreview(df.to_dict(orient="split"))


def _read_table_file(fs: fsspec.AbstractFileSystem, path: str, load_args: dict) -> pd.DataFrame:
    if not fs.exists(path):
        raise MissingFileError(f"input file not found: {path}")
    suffix = PurePosixPath(path).suffix.lower()
    try:
        with fs.open(path, "rb") as f:
            if suffix in (".parquet", ".pq"):
                return pd.read_parquet(f, **load_args)
            if suffix in (".csv", ".txt", ".tsv"):
                sep = "\t" if suffix == ".tsv" else ","
                return pd.read_csv(f, **{"sep": sep, **load_args})
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise InputDataError(f"cannot read {path}: {exc}") from exc
    raise InputDataError(f"input file {path}: unsupported suffix '{suffix}' (use .csv or .parquet)")


class LazyTable:
    """Reads its file (or ``directory/<template>`` for a name) only when called."""

    def __init__(
        self, fs: fsspec.AbstractFileSystem, path: str, template: str | None, load_args: dict
    ):
        self._fs, self.path, self._template, self._load_args = fs, path, template, load_args

    def __call__(self, name: str | None = None) -> pd.DataFrame:
        if self._template is None:
            return _read_table_file(self._fs, self.path, self._load_args)
        if name is None:
            raise InputDataError(f"{self.path} is a directory source: name the file to read")
        if not self._fs.isdir(self.path):
            raise MissingFileError(f"input directory not found: {self.path}")
        return _read_table_file(
            self._fs, f"{self.path}/{self._template.format(name=name)}", self._load_args
        )

    def __repr__(self) -> str:
        return f"LazyTable({self.path!r})"


class LazyTableDataset(AbstractDataset[None, LazyTable]):
    """A raw CSV/Parquet file, or a directory of them, read only when the node calls it."""

    def __init__(
        self,
        path: str,
        filename_template: str | None = None,
        load_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, p = get_protocol_and_path(path)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}))
        self._path = p if protocol == "file" else f"{protocol}://{p}"
        self._template = filename_template
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> LazyTable:
        return LazyTable(self._fs, self._path, self._template, self._load_args)

    def save(self, data: None) -> None:
        raise DatasetError("LazyTableDataset is read-only (raw input)")

    def _exists(self) -> bool:
        return self._fs.exists(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "filename_template": self._template}


class TorchModelDataset(AbstractVersionedDataset[dict, dict]):
    """Versioned model bundle: tensors (state dicts) and JSON strings only, saved with
    ``torch.save`` and loaded with ``weights_only=True`` (no pickled classes, safe to load).
    Rebuild the model with :func:`fdrmfl_pipeline.core.bundle.load_model`."""

    def __init__(
        self, filepath: str, version: Version | None = None, metadata: dict | None = None
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        self.metadata = metadata
        super().__init__(
            PurePosixPath(path),
            version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> dict:
        import pickle

        import torch

        path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            with self._fs.open(path, "rb") as f:
                return torch.load(f, weights_only=True)  # refuses pickled objects: no code runs
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise unreadable(path, exc) from exc

    def save(self, data: dict) -> None:
        import io

        import torch

        from fdrmfl_pipeline.core.bundle import check_finite_bundle

        check_finite_bundle(data)
        path = get_filepath_str(self._get_save_path(), self._protocol)
        buf = io.BytesIO()
        torch.save(data, buf)
        atomic_write(self._fs, path, lambda f: f.write(buf.getvalue()))

    def _exists(self) -> bool:
        try:
            return self._fs.exists(get_filepath_str(self._get_load_path(), self._protocol))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}


class ParquetDataset(_PandasParquetDataset):
    """Kedro's ``pandas.ParquetDataset`` with atomic saves (:func:`atomic_write`: a failed save
    leaves no partial "latest" version) and load errors that name the version and the fix."""

    def load(self) -> pd.DataFrame:
        try:
            return super().load()  # Kedro wraps the parent's errors in a DatasetError
        except DatasetError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError | ValueError | pa.ArrowException):
                raise unreadable(str(self._get_load_path()), cause) from cause
            raise

    def save(self, data: pd.DataFrame) -> None:
        path = get_filepath_str(self._get_save_path(), self._protocol)
        atomic_write(self._fs, path, lambda f: data.to_parquet(f, **self._save_args))
        self._invalidate_cache()


class DirectoryDataset(AbstractDataset[None, "Path"]):
    """A working directory owned by a node (e.g. training checkpoints); ``load()`` returns its
    absolute path (Kedro resolves relative paths against the project root)."""

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = path
        self.metadata = metadata

    def load(self):
        from pathlib import Path

        return Path(self._path)

    def save(self, data: None) -> None:
        raise DatasetError("DirectoryDataset is not saved to; nodes write inside the directory")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
