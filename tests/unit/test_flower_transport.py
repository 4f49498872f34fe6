"""What a deployment's messages cost: records packed into one array each (checked as untrusted
input), Flower's object-pull retry wait, the warm server's warm-up and the exchange trace."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")

from fdrmfl_pipeline.flower.records import (  # noqa: E402
    PackedRecordError,
    arrays_record,
    pack_arrays,
    record_arrays,
    record_state,
    state_record,
    unpack_arrays,
)


def test_packed_arrays_round_trip_exactly():
    arrays = {
        "w": np.arange(6.0).reshape(2, 3),
        "t": np.arange(6.0, dtype=np.float32).reshape(2, 3).T,  # not C-contiguous
        "n": np.array([3, -1], np.int64),
        "m": np.zeros((0, 2), np.uint64),  # empty
        "s": np.float32(2.5),  # 0-d
        "b": np.array([True, False]),
        "big": np.array([1.5, 2.5], ">f8"),  # big-endian in, little-endian out
    }
    out = unpack_arrays(pack_arrays(arrays))
    assert list(out) == list(arrays)
    for k, value in arrays.items():
        v = np.asarray(value)
        assert out[k].shape == v.shape and out[k].dtype == v.dtype.newbyteorder("<")
        assert np.array_equal(out[k], v)
        assert out[k].flags.writeable  # a copy, not a view of the message


def test_a_model_state_travels_as_one_array():
    from flwr.app import RecordDict
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    torch = pytest.importorskip("torch")
    state = {f"layer{i}.weight": torch.randn(4, 3) for i in range(40)}
    rec = state_record(state)
    assert list(rec.keys()) == ["packed"]
    back = record_state(rec)
    assert all(torch.equal(back[k], state[k]) for k in state)
    # the record, its one array and the array's chunk; each of 40 arrays used to be two
    assert len(get_all_nested_objects(RecordDict({"global": rec}))) <= 4


def test_a_plain_record_is_still_read():
    from flwr.app import Array, ArrayRecord

    rec = ArrayRecord({"a": Array(np.arange(3.0)), "b": Array(np.ones(2))})
    out = record_arrays(rec)
    assert sorted(out) == ["a", "b"] and np.array_equal(out["a"], np.arange(3.0))
    assert sorted(record_arrays(arrays_record({"a": np.ones(1)}))) == ["a"]


def _with_header(header: list, payload: bytes = b"") -> np.ndarray:
    text = json.dumps(header).encode()
    return np.frombuffer(len(text).to_bytes(8, "little") + text + payload, np.uint8)


@pytest.mark.parametrize(
    ("buf", "says"),
    [
        (np.zeros(3, np.uint8), "no header"),
        (np.frombuffer((10**6).to_bytes(8, "little") + b"[]", np.uint8), "header of 1000000"),
        (_with_header({"not": "a list"}), "header is not"),
        (_with_header([["x", "|O", [1]]], b"\0" * 8), "dtype '|O'"),  # no pickled objects
        (_with_header([["x", "<f8", [-1]]]), "shape [-1]"),
        (_with_header([["x", "<f8", [4]]], b"\0" * 8), "runs past the end"),
        (_with_header([["x", "<f8", [1]]], b"\0" * 9), "1 bytes after"),
    ],
)
def test_a_malformed_packed_record_is_refused_by_name(buf, says):
    with pytest.raises(PackedRecordError) as err:
        unpack_arrays(buf)
    assert says in str(err.value)


def test_only_numeric_arrays_are_packed():
    with pytest.raises(TypeError, match="array 'o' has dtype object"):
        pack_arrays({"o": np.array([object()])})


def test_object_pull_retry_wait_is_shortened_only_when_asked(monkeypatch):
    from flwr.supercore.inflatable import inflatable_utils as iu

    from fdrmfl_pipeline.flower.fast_supernode import shorten_object_pulls

    before = dict(iu.pull_objects.__kwdefaults__)
    monkeypatch.delenv("FDRMFL_OBJECT_PULL_BACKOFF", raising=False)
    try:
        assert shorten_object_pulls() is False
        assert iu.pull_objects.__kwdefaults__ == before
        monkeypatch.setenv("FDRMFL_OBJECT_PULL_BACKOFF", "0.02")
        assert shorten_object_pulls() is True
        for fn in (iu.pull_objects, iu.pull_and_inflate_object_from_tree):
            assert fn.__kwdefaults__["initial_backoff"] == 0.02
            assert fn.__kwdefaults__["backoff_cap"] == pytest.approx(0.2)
    finally:
        iu.pull_objects.__kwdefaults__.update(before)
        iu.pull_and_inflate_object_from_tree.__kwdefaults__.update(
            initial_backoff=before["initial_backoff"], backoff_cap=before["backoff_cap"]
        )


def test_the_trace_is_off_by_default_and_summarised_when_on(tmp_path, monkeypatch):
    from fdrmfl_pipeline.flower import trace

    monkeypatch.delenv("FDRMFL_TRACE", raising=False)
    trace.mark("push", messages=["a"])  # no file anywhere
    path = tmp_path / "t.jsonl"
    rows = [
        (0.0, "deploy-start", {}),
        (0.5, "partitioned", {}),
        (1.0, "flwr-run", {}),
        (3.0, "connected", {}),
        (3.0, "push", {"messages": ["a", "b"]}),
        (3.5, "handler-start", {"kind": "describe", "message": "a"}),
        (3.6, "handler-start", {"kind": "describe", "message": "b"}),
        (3.7, "handler-end", {"kind": "describe", "message": "a"}),
        (3.8, "handler-end", {"kind": "describe", "message": "b"}),
        (4.0, "reply", {"message": "a"}),
        (4.4, "reply", {"message": "b"}),
        (5.0, "warm-start-done", {}),
    ]
    path.write_text(
        "".join(json.dumps({"t": t, "pid": 1, "event": e, **f}) + "\n" for t, e, f in rows)
    )
    out = trace.summarize(str(path))
    assert dict(out["phases"]) == pytest.approx(
        {
            "ingestion and partitioning (SuperLink, zygote start)": 0.5,
            "SuperLink, SuperNodes and warm servers ready": 0.5,
            "ServerApp starts; clients connect and describe their data": 2.0,
            "federated warm start": 2.0,
        }
    )
    q = out["steps"]["query"]
    assert q["messages"] == 2
    assert q["server push -> ClientApp handler starts"] == pytest.approx(0.55)
    assert q["handler (the client's own work)"] == pytest.approx(0.2)
    assert q["handler ends -> server has the reply"] == pytest.approx(0.45)
    assert out["exchanges"] == 1 and out["exchange_median_s"] == pytest.approx(1.4)


def _client_file_and_job(tmp_path):
    import pyarrow.parquet as pq

    from fdrmfl_pipeline.core.clientdata import client_table
    from fdrmfl_pipeline.core.modalities import to_arrow
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.flower.job import FlowerJob
    from fdrmfl_pipeline.params import TrainingParams

    from ..tiny import tiny_clients

    data, assign, _, _, _ = tiny_clients()
    pq.write_table(client_table(to_arrow(data), assign, 1), tmp_path / "client_1.parquet")
    setup = TrainingSetup.from_params(TrainingParams(), 0, data)
    job = FlowerJob.create(
        setup, clients_dir=str(tmp_path), expected_clients=1, output_dir=str(tmp_path / "o")
    )
    return str(job.save(tmp_path / "job.json")), str(tmp_path / "client_1.parquet")


def test_the_warm_up_trains_once_on_the_clients_own_rows(tmp_path):
    from fdrmfl_pipeline.flower.client_app import preload, warm_up

    path, data_path = _client_file_and_job(tmp_path)
    raw = preload(path, data_path)
    assert raw.client_id == 1
    warm_up(path, raw)  # trains and evaluates a throwaway model; raises if it cannot


def test_the_zygote_warms_up_on_rows_of_the_jobs_shapes_not_a_clients(tmp_path):
    from fdrmfl_pipeline.flower import client_app

    job, _ = _client_file_and_job(tmp_path)
    read = client_app._load_raw.cache_info().misses
    client_app.warm_up(job, None)  # trains and evaluates on synthetic rows; raises if it cannot
    assert client_app._load_raw.cache_info().misses == read  # no client file was read


def test_a_warm_server_prepares_the_rows_for_the_scaler_its_clientapps_report(
    tmp_path, monkeypatch
):
    """A forked ClientApp reports each new scaler through a pipe; its server prepares the
    SuperNode's rows (and the warm-start aggregates) for it, so the next ClientApps it forks
    neither scale nor build the design again, and find exactly what they would have built."""
    import os

    from fdrmfl_pipeline.core import warmstart
    from fdrmfl_pipeline.core.clientdata import federated_scaler, scale_client
    from fdrmfl_pipeline.flower import client_app, warm
    from fdrmfl_pipeline.flower.job import FlowerJob
    from fdrmfl_pipeline.flower.records import scaler_record

    job_path, data_path = _client_file_and_job(tmp_path)
    job = FlowerJob.load(job_path)
    raw = client_app.preload(job_path, data_path)
    shapes = {m.name: tuple(m.shape) for m in job.setup.model.modalities}
    rec = scaler_record(federated_scaler({1: raw.stats}, shapes, job.setup.x_scaling))
    fresh = scale_client(raw, client_app.record_scaler(rec), job.setup.modalities)
    monkeypatch.setattr(client_app, "_SCALED", type(client_app._SCALED)())
    monkeypatch.setattr(client_app, "_AGGREGATES", type(client_app._AGGREGATES)())

    # the child: reports the scaler the first time it prepares rows for it, not again
    r, w = os.pipe()
    monkeypatch.setattr(client_app, "_ON_NEW_SCALER", warm._report_to(w))
    ctx = client_app._node_context(data_path)
    client_app._scaled(ctx, job, raw, rec)
    client_app._scaled(ctx, job, raw, rec)
    os.close(w)
    # the server: reads the report when the child exits, prepares the rows before its next fork
    monkeypatch.setattr(client_app, "_SCALED", type(client_app._SCALED)())
    monkeypatch.setattr(client_app, "_ON_NEW_SCALER", None)  # the server reports to nobody
    warm._read_reports(r)
    assert warm._LEARNED.qsize() == 1
    warm._learn((job_path, data_path))
    assert warm._LEARNED.empty() and len(client_app._SCALED) == 1

    def rebuilt(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(client_app, "scale_client", rebuilt)
    monkeypatch.setattr(warmstart, "ClientAggregates", rebuilt)
    got = client_app._scaled(ctx, job, raw, rec)
    client_app._query_aggregates(ctx, job, raw, rec)
    for split in ("train", "val", "test"):
        for m in job.setup.modalities:
            assert np.array_equal(got.splits[split].x[m], fresh.splits[split].x[m])
        assert np.array_equal(got.splits[split].y, fresh.splits[split].y)
