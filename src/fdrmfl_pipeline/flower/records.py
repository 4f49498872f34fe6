"""Flower records <-> the core's values: weights, scalers and sufficient statistics.

Everything that crosses the client/server boundary in a Flower run passes through here.

**One array per record.** Flower sends every array of a record as separate objects (the array
and its chunks), each one request between processes: a model of 63 tensors was about 130
requests per message, most of a deployment's time. :func:`arrays_record` therefore packs a
record's named arrays into a single ``uint8`` array: an 8-byte little-endian header length, a
JSON header (name, dtype, shape of each array, in order) and the arrays' bytes back to back.
:func:`record_arrays` unpacks it and checks it as untrusted input: only numeric dtypes, sizes
that add up exactly, no pickles, no compression.

**One record per message.** Each record of a message (and each array and chunk in it) is a
separate object, pulled or pushed with its own request at every hop (ServerApp, SuperLink,
SuperNode, ClientApp). :func:`seal` therefore turns a message's whole content into one record
holding Flower's own protobuf encoding of it, as one bytes value (up to 4 MB: two objects, the
record dict and the record) or one ``uint8`` array (larger: Flower cuts it into 5 MB chunks),
just before it is sent, and :func:`unseal` turns it back on arrival.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fdrmfl_pipeline.core.clientdata import Scaler, SufficientStats

if TYPE_CHECKING:  # torch is imported by the functions that need it (queries need none)
    import torch

State = dict[str, "torch.Tensor"]


PACKED = "packed"  # the one array of a packed record
SEALED = "sealed"  # the one record of a sealed message content
_DTYPES = {"<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1"}


class PackedRecordError(ValueError):
    """A packed record that is not what :func:`arrays_record` writes."""


def pack_arrays(d: dict[str, np.ndarray]) -> np.ndarray:
    """Named arrays as one ``uint8`` buffer (see the module docstring)."""
    arrays = {k: np.asarray(v) for k, v in d.items()}
    for k, v in arrays.items():
        if v.dtype.newbyteorder("<").str not in _DTYPES:
            raise TypeError(f"array '{k}' has dtype {v.dtype}; only numeric arrays are sent")
    arrays = {k: v.astype(v.dtype.newbyteorder("<"), copy=False) for k, v in arrays.items()}
    header = json.dumps(
        [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()], separators=(",", ":")
    ).encode()
    parts = [np.frombuffer(len(header).to_bytes(8, "little") + header, np.uint8)]
    parts += [np.ascontiguousarray(v).reshape(-1).view(np.uint8) for v in arrays.values()]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def unpack_arrays(buf: np.ndarray) -> dict[str, np.ndarray]:
    """The named arrays of :func:`pack_arrays`; a malformed buffer raises
    :class:`PackedRecordError` saying what is wrong."""
    raw = np.ascontiguousarray(buf).view(np.uint8).tobytes()
    if len(raw) < 8:
        raise PackedRecordError(f"packed record of {len(raw)} bytes: no header")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise PackedRecordError(f"packed record header of {n} bytes in {len(raw)} bytes")
    try:
        header = json.loads(raw[8 : 8 + n])
        entries = [(str(k), str(dt), [int(d) for d in shape]) for k, dt, shape in header]
    except (ValueError, TypeError) as err:
        raise PackedRecordError(
            f"packed record header is not [[name, dtype, shape], ...]: {err}"
        ) from err
    out, pos = {}, 8 + n
    for name, dt, shape in entries:
        if dt not in _DTYPES or any(d < 0 for d in shape):
            raise PackedRecordError(f"array '{name}': dtype {dt!r}, shape {shape} not allowed")
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
        if pos + size > len(raw):
            raise PackedRecordError(f"array '{name}' runs past the end of the packed record")
        out[name] = np.frombuffer(raw, dt, count=size // np.dtype(dt).itemsize, offset=pos)
        out[name] = out[name].reshape(shape).copy()
        pos += size
    if pos != len(raw):
        raise PackedRecordError(f"packed record has {len(raw) - pos} bytes after its arrays")
    return out


def arrays_record(d: dict[str, np.ndarray]) -> ArrayRecord:
    """Named arrays as a record of one packed array (one object on the wire)."""
    return ArrayRecord({PACKED: Array(pack_arrays(d))})


def record_arrays(rec: ArrayRecord) -> dict[str, np.ndarray]:
    """The named arrays of a record, packed (:func:`arrays_record`) or plain."""
    if set(rec.keys()) == {PACKED}:
        return unpack_arrays(rec[PACKED].numpy())
    return {k: v.numpy() for k, v in rec.items()}


def state_record(state: State) -> ArrayRecord:
    return arrays_record({k: v.detach().cpu().numpy() for k, v in state.items()})


def record_state(rec: ArrayRecord) -> State:
    import torch

    return {k: torch.from_numpy(v) for k, v in record_arrays(rec).items()}


def anchored(state: State) -> State:
    from fdrmfl_pipeline.core.losses import ANCHORED

    return {k: v for k, v in state.items() if k.startswith(ANCHORED)}


def scaler_record(sc: Scaler) -> ArrayRecord:
    arrays = {f"mean.{k}": np.asarray(v, np.float64) for k, v in sc.x_mean.items()}
    arrays.update({f"std.{k}": np.asarray(v, np.float64) for k, v in sc.x_std.items()})
    arrays["y"] = np.array([sc.y_mean, sc.y_std], np.float64)
    return arrays_record(arrays)


def record_scaler(rec: ArrayRecord) -> Scaler:
    arr = record_arrays(rec)
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
    arr = record_arrays(rec)
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


# up to this size a sealed content travels as one bytes value (two objects: the record dict and
# the record); a larger one as an array, which Flower cuts into chunks of at most 5 MB
SEAL_INLINE_BYTES = 4 * 1024 * 1024


def seal(content: RecordDict) -> RecordDict:
    """``content`` as one record (see the module docstring)."""
    from flwr.common.serde import recorddict_to_proto

    raw = recorddict_to_proto(content).SerializeToString()
    if len(raw) <= SEAL_INLINE_BYTES:
        return RecordDict({SEALED: ConfigRecord({PACKED: raw})})
    return RecordDict({SEALED: ArrayRecord({PACKED: Array(np.frombuffer(raw, np.uint8))})})


def is_sealed(content: RecordDict) -> bool:
    return list(content.keys()) == [SEALED]


def unseal(content: RecordDict) -> RecordDict:
    """The content :func:`seal` wrapped (any other content is returned as it is); a sealed
    record that does not hold a message content raises :class:`PackedRecordError`."""
    if not is_sealed(content):
        return content
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
    from google.protobuf.message import DecodeError

    rec = content[SEALED]
    if list(rec.keys()) != [PACKED]:
        raise PackedRecordError(f"sealed record holds {sorted(rec.keys())}, expected ['{PACKED}']")
    if isinstance(rec, ConfigRecord):
        raw = rec[PACKED]
        if not isinstance(raw, bytes):
            raise PackedRecordError(f"sealed record holds {type(raw).__name__}, expected bytes")
    elif isinstance(rec, ArrayRecord):
        buf = rec[PACKED].numpy()
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise PackedRecordError(f"sealed record is {buf.dtype} {buf.shape}, expected 1-d uint8")
        raw = buf.tobytes()
    else:
        raise PackedRecordError(f"sealed record is a {type(rec).__name__}")
    proto = RecordDictProto()
    try:
        proto.ParseFromString(raw)
        return recorddict_from_proto(proto)
    except (DecodeError, ValueError, TypeError, KeyError) as err:
        raise PackedRecordError(f"sealed record is not a message content: {err}") from err
