"""The Flower ClientApp: each SuperNode answers from its own rows only.

* ``query`` -> the client's id, train/val sizes and the sufficient statistics of its train split
  (counts, sums, sums of squares: what a federated scaler needs; no sample leaves the client),
  or one warm-start aggregate (``X^T y``, ``X^T X r``, validation squared errors).
* ``train`` (global weights + scaler + the round's config record) -> local weights, sample count
  and scalar metrics. The client's own previous model (contrastive negative) stays in
  ``context.state`` on the client.
* ``evaluate`` (weights + scaler) -> validation MSE (original units) and the val size.

Only ``train`` and ``evaluate`` import torch: a query (statistics, a warm-start answer, a
secure-aggregation step) runs on numpy alone, so each of those messages (a fresh process on a
SuperNode) starts fast.

Messages are addressed by Flower node id but *identified by client id* (the partition's id stored
in its data file; Flower node ids are random per run and never used as keys).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fdrmfl_pipeline.core.clientdata import (
    ClientData,
    RawClient,
    assignments_from_client_table,
    raw_client,
    scale_client,
    stats_arrays,
    without_modalities,
)
from fdrmfl_pipeline.core.modalities import from_arrow
from fdrmfl_pipeline.flower import secure
from fdrmfl_pipeline.flower.job import FlowerJob
from fdrmfl_pipeline.flower.records import (
    PACKED,
    arrays_record,
    is_sealed,
    pack_arrays,
    record_arrays,
    record_scaler,
    record_state,
    seal,
    state_record,
    stats_record,
    unseal,
)
from fdrmfl_pipeline.flower.trace import mark


def _file_key(context: Context, job: FlowerJob) -> tuple:
    """The client's file (from the node config, or ``clients_dir`` by partition id) as it is
    now, and what its rows are prepared with: the key of everything kept in memory."""
    path = context.node_config.get("data-path")
    if not path:
        path = str(
            Path(job.clients_dir) / f"client_{int(context.node_config['partition-id'])}.parquet"
        )
    st = os.stat(path)
    return (
        str(path),
        st.st_mtime_ns,
        st.st_size,
        tuple(job.setup.modalities),
        job.setup.federation.seed,
    )


def _client_raw(context: Context, job: FlowerJob) -> RawClient:
    """The client's own rows, kept in memory while its file is unchanged: a process that
    answers many messages (a simulation worker) reads and prepares them once."""
    return _load_raw(*_file_key(context, job))


def _node_context(data_path: str) -> Context:
    """The context a SuperNode given ``data_path`` hands its ClientApps, as far as reading
    its rows goes (a warm server prepares them before any message)."""
    return Context(
        run_id=0, node_id=0, node_config={"data-path": data_path}, state=RecordDict(), run_config={}
    )


def preload(job_path: str, data_path: str) -> RawClient:
    """Read and prepare a SuperNode's client file for ``job_path`` before any message comes:
    a warm server (``flower/warm.py``) calls it once, and every ClientApp it forks finds the
    rows in memory."""
    return _client_raw(_node_context(data_path), FlowerJob.load(job_path))


def warm_up(job_path: str, raw: RawClient | None) -> None:
    """Train and evaluate a throwaway model once on a few of the client's own rows, with a
    scaler from its own statistics (nothing leaves the process), or on synthetic rows of the
    job's shapes when ``raw`` is None (a zygote that holds no client's data). A warm server
    (``flower/warm.py``) calls it before it forks: torch's first training step in a process
    costs about a second of one-time kernel set-up, which every forked ClientApp would
    otherwise pay again. Torch threads are fixed first (``setup_torch``: one thread, so no
    thread pool exists when the server forks)."""
    import dataclasses

    from fdrmfl_pipeline.core.client import evaluate_mse, local_update, model_from_state
    from fdrmfl_pipeline.core.clientdata import ClientData, SplitArrays, federated_scaler
    from fdrmfl_pipeline.core.model import build_model

    setup = FlowerJob.load(job_path).setup
    setup.setup_torch()
    k = 2 * setup.local.batch_size + 1  # full batches and a short one
    if raw is None:
        rng = np.random.default_rng(0)
        y = (
            rng.integers(0, setup.model.n_classes, k)
            if setup.model.n_classes > 0
            else rng.standard_normal(k)
        )
        rows = SplitArrays(
            np.arange(k),
            {
                m.name: rng.standard_normal((k, *m.shape)).astype(np.float32)
                for m in setup.model.modalities
            },
            np.ones((k, len(setup.model.modalities)), bool),
            y.astype(np.float32),
            y.astype(np.float64),
        )
        available = np.ones(len(setup.model.modalities), bool)
        data = ClientData(-1, dict.fromkeys(("train", "val", "test"), rows), available)
        y_mean, y_std = 0.0, 1.0
    else:
        shapes = {m.name: tuple(m.shape) for m in setup.model.modalities}
        categorical = setup.model.n_classes > 0
        scaler = federated_scaler(
            {raw.client_id: raw.stats}, shapes, setup.x_scaling, categorical=categorical
        )
        data = scale_client(raw, scaler, setup.modalities)
        k = min(data.train.n, k)
        tr = data.train
        few = SplitArrays(
            tr.sample_ids[:k],
            {m: v[:k] for m, v in tr.x.items()},
            tr.mask[:k],
            tr.y[:k],
            tr.y_raw[:k],
        )
        data = dataclasses.replace(data, splits={**data.splits, "train": few})
        y_mean, y_std = scaler.y_mean, scaler.y_std
    state = build_model(setup.model, setup.federation.seed).state_dict()
    _, local_state = local_update(
        setup.model,
        state,
        state,
        data,
        dataclasses.replace(setup.local, local_epochs=1),
        0,
        1,
        state if setup.local.anchor_mu > 0 else None,
    )
    evaluate_mse(model_from_state(setup.model, local_state), data.val, y_mean, y_std)


@functools.lru_cache(maxsize=256)
def _load_raw(path: str, mtime_ns: int, size: int, modalities: tuple, seed: int) -> RawClient:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assign = assignments_from_client_table(table)
    client_id = int(assign["client"].iloc[0])
    return raw_client(from_arrow(table), assign, list(modalities), seed, client_id)


_SCALED: OrderedDict = OrderedDict()  # (client data, scaler) -> scaled splits, newest last
_AGGREGATES: OrderedDict = OrderedDict()  # (client data, scaler, absent) -> query aggregates
# set in a ClientApp forked by a warm server (flower/warm.py): called with the packed arrays of
# every scaler this process prepares the rows for, so the server prepares them once for the next
_ON_NEW_SCALER = None


def _newest(cache: OrderedDict, key, make):
    if key not in cache:
        cache[key] = make()
        while len(cache) > 64:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def _scaled_key(file_key: tuple, rec) -> tuple:
    import hashlib

    h = hashlib.sha256()
    for name, value in sorted(record_arrays(rec).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return (file_key, h.hexdigest())


def _scaled(context: Context, job: FlowerJob, raw: RawClient, rec) -> ClientData:
    """``scale_client`` of the scaler in record ``rec``, reused while the file and the scaler
    are unchanged."""
    key = _scaled_key(_file_key(context, job), rec)
    if key not in _SCALED and _ON_NEW_SCALER is not None:
        _ON_NEW_SCALER(pack_arrays(record_arrays(rec)).tobytes())
    return _newest(
        _SCALED, key, lambda: scale_client(raw, record_scaler(rec), job.setup.modalities)
    )


def _query_aggregates(context: Context, job: FlowerJob, raw: RawClient, rec):
    """The warm-start aggregates of the client's round-0 rows (the modalities it has at the
    start) under the scaler in ``rec``, built once per scaler."""
    from fdrmfl_pipeline.core.warmstart import ClientAggregates

    key = (*_scaled_key(_file_key(context, job), rec), "queries")
    absent = job.setup.federation.absent(raw.client_id, 0)
    return _newest(
        _AGGREGATES,
        key,
        lambda: ClientAggregates(
            without_modalities(_scaled(context, job, raw, rec), absent, job.setup.modalities),
            job.setup.modalities,
        ),
    )


def remember_scaler(job_path: str, data_path: str, packed: bytes) -> None:
    """In a warm server: prepare this SuperNode's rows (and its warm-start aggregates) for a
    scaler one of its ClientApps met, so every later ClientApp it forks finds them ready. The
    scaler is the job's; the rows are this SuperNode's own, already in this process."""
    job, context = FlowerJob.load(job_path), _node_context(data_path)
    rec = ArrayRecord({PACKED: Array(np.frombuffer(packed, np.uint8).copy())})
    raw = _client_raw(context, job)
    _scaled(context, job, raw, rec)
    _query_aggregates(context, job, raw, rec)


def _maybe_fail(client_id: int, round_: int) -> None:
    """Test hook for simulation: ``FDRMFL_FAIL_CLIENT=<client>:<round>`` makes that client fail
    from that round on (deployment tests kill the SuperNode process instead)."""
    spec = os.environ.get("FDRMFL_FAIL_CLIENT", "")
    if spec:
        c, r = (int(v) for v in spec.split(":"))
        if c == client_id and round_ >= r:
            raise RuntimeError(f"injected failure of client {client_id} in round {round_}")


def _pls_arrays(
    context: Context, raw: RawClient, job: FlowerJob, content: RecordDict, secure: bool
) -> dict:
    """One aggregate for the server's warm start (``core.warmstart``): X^T y, X^T X r, or the
    validation squared errors of candidate coefficient vectors (under secure aggregation: the
    validation MSE and a 1, summable). Never a row of data."""
    from fdrmfl_pipeline.core.warmstart.protocol import val_mse_answer

    op = str(content.config_records["pls"]["op"])
    # the warm start (round 0) sees only the modalities the client has at the start
    agg = _query_aggregates(context, job, raw, content.array_records["scaler"])
    if op == "cross":
        return {"v": agg.cross()}
    if op == "gram":
        return {"v": agg.gram_times(record_arrays(content.array_records["query"])["r"])}
    if op == "gram_full":
        return {"v": agg.gram()}
    if op == "val":
        sse, n = agg.val_sse(record_arrays(content.array_records["query"])["coefs"])
        if secure:
            return {"v": val_mse_answer(sse, n)}
        return {"v": sse, "n": np.array([n], np.int64)}
    raise ValueError(f"unknown PLS query '{op}'")


def _client_id(context: Context, job: FlowerJob) -> int:
    """This SuperNode's client id (read once from its data, then kept in its state)."""
    rec = context.state.config_records.get("me")
    if rec is None:
        rec = ConfigRecord({"client-id": _client_raw(context, job).client_id})
        context.state.config_records["me"] = rec
    return int(rec["client-id"])


def _traced(handler):
    """``handler`` with its start and end in the deployment trace (:mod:`.trace`), reading a
    sealed message (:func:`.records.seal`) and sealing its reply the same way."""

    @functools.wraps(handler)
    def run(msg: Message, context: Context) -> Message:
        mark("handler-start", kind=handler.__name__, message=msg.metadata.message_id)
        try:
            sealed = msg.has_content() and is_sealed(msg.content)
            if sealed:  # the server sends one record per message (records.seal)
                msg.content = unseal(msg.content)
            reply = handler(msg, context)
            if sealed and reply.has_content():
                reply.content = seal(reply.content)
            return reply
        finally:
            mark("handler-end", kind=handler.__name__, message=msg.metadata.message_id)

    return run


def make_client_app(job: FlowerJob | None = None) -> ClientApp:
    """A ClientApp; ``job`` given in simulation, else read from ``run_config['job']``."""
    app = ClientApp()

    @app.query()
    @_traced
    def describe(msg: Message, context: Context) -> Message:
        j = FlowerJob.from_context(context, job)
        step = secure.stage(msg.content)
        if step in ("keys", "unmask"):
            reply = secure.client_step(msg.content, context, _client_id(context, j))
            return Message(reply, reply_to=msg)
        raw = _client_raw(context, j)
        if step == "answer":  # a summed statistic or warm-start answer
            if "pls" in msg.content.config_records:
                compute = lambda: _pls_arrays(context, raw, j, msg.content, True)  # noqa: E731
            else:
                compute = lambda: stats_arrays(raw.stats)  # noqa: E731
            return Message(
                secure.masked_answer(msg.content, context, raw.client_id, compute), reply_to=msg
            )
        if "pls" in msg.content.config_records:
            out = _pls_arrays(context, raw, j, msg.content, False)
            return Message(
                RecordDict(
                    {"pls": arrays_record(out), "info": MetricRecord({"client-id": raw.client_id})}
                ),
                reply_to=msg,
            )
        metrics = MetricRecord(
            {
                "client-id": raw.client_id,
                "n-train": len(raw.splits["train"][0]),
                "n-val": len(raw.splits["val"][0]),
            }
        )
        records = {"info": metrics}
        if not j.setup.federation.secure:  # under secure aggregation they come summed
            records["stats"] = stats_record(raw.stats)
        return Message(RecordDict(records), reply_to=msg)

    @app.train()
    @_traced
    def train(msg: Message, context: Context) -> Message:
        from fdrmfl_pipeline.core.client import LocalTrainConfig, local_update
        from fdrmfl_pipeline.core.engine import client_answer

        j = FlowerJob.from_context(context, job)
        j.setup.setup_torch()
        raw = _client_raw(context, j)
        cfg_rec = msg.content.config_records["config"]
        round_ = int(cfg_rec["round"])
        _maybe_fail(raw.client_id, round_)
        data = _scaled(context, j, raw, msg.content.array_records["scaler"])
        # the round's loss settings come from the server (strategy-specific weights)
        local_cfg = LocalTrainConfig(
            **{k: cfg_rec[k] for k in asdict(j.setup.local) if k in cfg_rec}
        )

        def step():
            prev = (
                record_state(context.state.array_records["prev"])
                if "prev" in context.state.array_records
                else None
            )
            upd, local_state = local_update(
                j.setup.model,
                record_state(msg.content.array_records["global"]),
                prev,
                data,
                local_cfg,
                int(cfg_rec["seed"]),
                round_,
                record_state(msg.content.array_records["anchor"])
                if "anchor" in msg.content.array_records
                else None,
                # local DP: the noise is seeded with this SuperNode's own secret (deployment)
                noise_secret=str(context.node_config.get("dp-secret", "")),
                absent=j.setup.federation.absent(raw.client_id, round_),
            )
            context.state.array_records["prev"] = state_record(local_state)  # stays here
            return upd

        if secure.stage(msg.content) == "answer":  # the server gets the sum over clients only
            reply = secure.masked_answer(
                msg.content, context, raw.client_id, lambda: client_answer(step())
            )
            return Message(reply, reply_to=msg)
        upd = step()
        metrics = MetricRecord(
            {"num-examples": upd.n_samples, "client-id": raw.client_id, **upd.metrics}
        )
        return Message(
            RecordDict({"arrays": state_record(upd.state), "metrics": metrics}), reply_to=msg
        )

    @app.evaluate()
    @_traced
    def evaluate(msg: Message, context: Context) -> Message:
        from fdrmfl_pipeline.core.client import evaluate_mse, model_from_state
        from fdrmfl_pipeline.core.engine import val_answer

        j = FlowerJob.from_context(context, job)
        j.setup.setup_torch()
        raw = _client_raw(context, j)
        sc = record_scaler(msg.content.array_records["scaler"])
        data = _scaled(context, j, raw, msg.content.array_records["scaler"])
        model = model_from_state(j.setup.model, record_state(msg.content.array_records["global"]))
        cfg = msg.content.config_records.get("config")
        round_ = int(cfg["round"]) if cfg is not None else 0
        absent = j.setup.federation.absent(raw.client_id, round_)
        val = evaluate_mse(model, data.val, sc.y_mean, sc.y_std, absent)
        if secure.stage(msg.content) == "answer":
            reply = secure.masked_answer(
                msg.content, context, raw.client_id, lambda: {"v": val_answer(val)}
            )
            return Message(reply, reply_to=msg)
        metrics = MetricRecord(
            {"val_mse": val, "num-examples": data.val.n, "client-id": raw.client_id}
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app
