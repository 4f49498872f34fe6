"""Flower ClientApp and ServerApp (thin adapters over :mod:`fdrmfl_pipeline.core`).

Protocol, all messages addressed by Flower node id but *identified by client id* (the
partition's id stored in its data file; Flower node ids are random per run and never used as keys):

* ``query`` -> the client's id, train/val sizes and the sufficient statistics of its train split
  (counts, sums, sums of squares: what a federated scaler needs; no sample leaves the client).
* ``train`` (global weights + scaler + the round's config record) -> local weights, sample count
  and scalar metrics. The client's own previous model (contrastive negative) stays in
  ``context.state`` on the client.
* ``evaluate`` (weights + scaler) -> validation MSE (original units) and the val size.

The server side is :func:`fdrmfl_pipeline.core.engine.run_rounds` with :class:`FlowerRunner`:
client sampling over client ids with the project's seeded generator, FedAvg in client-id order,
retention, history, checkpoints and ``min_clients`` fault handling are the in-process engine's.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fdrmfl_pipeline.core.client import (
    ClientUpdate,
    LocalTrainConfig,
    evaluate_mse,
    local_update,
    model_from_state,
)
from fdrmfl_pipeline.core.clientdata import (
    RawClient,
    Scaler,
    SufficientStats,
    assignments_from_client_table,
    federated_scaler,
    raw_client,
    scale_client,
)
from fdrmfl_pipeline.core.engine import TrainingResult, run_rounds
from fdrmfl_pipeline.core.losses import ANCHORED
from fdrmfl_pipeline.core.modalities import from_arrow
from fdrmfl_pipeline.flower.job import FlowerJob

logger = logging.getLogger(__name__)
State = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------ records
def _arrays(d: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in d.items()})


def _state_record(state: State) -> ArrayRecord:
    return _arrays({k: v.detach().cpu().numpy() for k, v in state.items()})


def _record_state(rec: ArrayRecord) -> State:
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in rec.items()}


def _anchored(state: State) -> State:
    return {k: v for k, v in state.items() if k.startswith(ANCHORED)}


def _scaler_record(sc: Scaler) -> ArrayRecord:
    arrays = {f"mean.{k}": np.asarray(v, np.float64) for k, v in sc.x_mean.items()}
    arrays.update({f"std.{k}": np.asarray(v, np.float64) for k, v in sc.x_std.items()})
    arrays["y"] = np.array([sc.y_mean, sc.y_std], np.float64)
    return _arrays(arrays)


def _record_scaler(rec: ArrayRecord) -> Scaler:
    arr = {k: v.numpy() for k, v in rec.items()}
    mean = {k[5:]: arr[k] for k in arr if k.startswith("mean.")}
    std = {k[4:]: arr[k] for k in arr if k.startswith("std.")}
    return Scaler(mean, std, float(arr["y"][0]), float(arr["y"][1]))


def _stats_record(st: SufficientStats) -> ArrayRecord:
    arrays = {f"s1.{k}": np.asarray(v, np.float64) for k, v in st.s1.items()}
    arrays.update({f"s2.{k}": np.asarray(v, np.float64) for k, v in st.s2.items()})
    arrays.update({f"n.{k}": np.array([v], np.int64) for k, v in st.n.items()})
    arrays["y"] = np.array([st.y_n, st.y_s1, st.y_s2], np.float64)
    return _arrays(arrays)


def _record_stats(rec: ArrayRecord) -> SufficientStats:
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


# ------------------------------------------------------------------------------------ client
def _job_from(context: Context, job: FlowerJob | None) -> FlowerJob:
    if job is not None:
        return job
    return FlowerJob.load(context.run_config["job"])


def _client_raw(context: Context, job: FlowerJob) -> RawClient:
    """The client's own rows: its file from the node config, or ``clients_dir`` by partition id."""
    import pyarrow.parquet as pq

    torch.set_num_threads(job.num_threads)
    torch.use_deterministic_algorithms(True)
    path = context.node_config.get("data-path")
    if not path:
        path = str(
            Path(job.clients_dir) / f"client_{int(context.node_config['partition-id'])}.parquet"
        )
    table = pq.read_table(path)
    assign = assignments_from_client_table(table)
    client_id = int(assign["client"].iloc[0])
    return raw_client(from_arrow(table), assign, job.modalities, job.federation().seed, client_id)


def _maybe_fail(client_id: int, round_: int) -> None:
    """Test hook for simulation: ``FDRMFL_FAIL_CLIENT=<client>:<round>`` makes that client fail
    from that round on (deployment tests kill the SuperNode process instead)."""
    spec = os.environ.get("FDRMFL_FAIL_CLIENT", "")
    if spec:
        c, r = (int(v) for v in spec.split(":"))
        if c == client_id and round_ >= r:
            raise RuntimeError(f"injected failure of client {client_id} in round {round_}")


def _pls_answer(raw: RawClient, job: FlowerJob, content: RecordDict) -> RecordDict:
    """One aggregate for the server's federated PLS (``core.pls``): X^T y, X^T X r, or the
    validation squared errors of candidate coefficient vectors. Never a row of data."""
    from fdrmfl_pipeline.core import pls

    op = str(content.config_records["pls"]["op"])
    data = scale_client(raw, _record_scaler(content.array_records["scaler"]), job.modalities)
    agg = pls.ClientAggregates(data, job.modalities)
    if op == "cross":
        out = {"v": agg.cross()}
    elif op == "gram":
        out = {"v": agg.gram_times(content.array_records["query"]["r"].numpy())}
    elif op == "val":
        sse, n = agg.val_sse(content.array_records["query"]["coefs"].numpy())
        out = {"v": sse, "n": np.array([n], np.int64)}
    else:
        raise ValueError(f"unknown PLS query '{op}'")
    return RecordDict({"pls": _arrays(out), "info": MetricRecord({"client-id": raw.client_id})})


def make_client_app(job: FlowerJob | None = None) -> ClientApp:
    """A ClientApp; ``job`` given in simulation, else read from ``run_config['job']``."""
    app = ClientApp()

    @app.query()
    def describe(msg: Message, context: Context) -> Message:
        j = _job_from(context, job)
        raw = _client_raw(context, j)
        if "pls" in msg.content.config_records:
            return Message(_pls_answer(raw, j, msg.content), reply_to=msg)
        metrics = MetricRecord(
            {
                "client-id": raw.client_id,
                "n-train": len(raw.splits["train"][0]),
                "n-val": len(raw.splits["val"][0]),
            }
        )
        return Message(
            RecordDict({"stats": _stats_record(raw.stats), "info": metrics}), reply_to=msg
        )

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        j = _job_from(context, job)
        raw = _client_raw(context, j)
        cfg_rec = msg.content.config_records["config"]
        round_ = int(cfg_rec["round"])
        _maybe_fail(raw.client_id, round_)
        data = scale_client(raw, _record_scaler(msg.content.array_records["scaler"]), j.modalities)
        local_cfg = LocalTrainConfig(
            **{k: cfg_rec[k] for k in asdict(LocalTrainConfig()) if k in cfg_rec}
        )
        prev = (
            _record_state(context.state.array_records["prev"])
            if "prev" in context.state.array_records
            else None
        )
        upd, local_state = local_update(
            j.model(),
            _record_state(msg.content.array_records["global"]),
            prev,
            data,
            local_cfg,
            int(cfg_rec["seed"]),
            round_,
            _record_state(msg.content.array_records["anchor"])
            if "anchor" in msg.content.array_records
            else None,
        )
        context.state.array_records["prev"] = _state_record(local_state)  # stays on the client
        metrics = MetricRecord(
            {"num-examples": upd.n_samples, "client-id": raw.client_id, **upd.metrics}
        )
        return Message(
            RecordDict({"arrays": _state_record(upd.state), "metrics": metrics}), reply_to=msg
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        j = _job_from(context, job)
        raw = _client_raw(context, j)
        sc = _record_scaler(msg.content.array_records["scaler"])
        data = scale_client(raw, sc, j.modalities)
        model = model_from_state(j.model(), _record_state(msg.content.array_records["global"]))
        val = evaluate_mse(model, data.val, sc.y_mean, sc.y_std)
        metrics = MetricRecord(
            {"val_mse": val, "num-examples": data.val.n, "client-id": raw.client_id}
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


# ------------------------------------------------------------------------------------ server
class FlowerRunner:
    """:class:`fdrmfl_pipeline.core.engine.ClientRunner` over a Flower Grid."""

    def __init__(self, grid: Grid, job: FlowerJob):
        self.grid, self.job = grid, job
        self.node_of: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.scalers: dict[int, Scaler] = {}
        self.silent: set[int] = set()  # clients that did not answer this round's training

    def connect(self) -> None:
        """Wait for the expected SuperNodes, learn each one's client id and its statistics."""
        deadline = time.monotonic() + self.job.connect_timeout
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.job.expected_clients or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if len(nodes) < self.job.expected_clients:
            raise RuntimeError(
                f"only {len(nodes)} of {self.job.expected_clients} SuperNodes connected within "
                f"{self.job.connect_timeout:.0f}s"
            )
        msgs = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
        stats: dict[int, SufficientStats] = {}
        for reply in self.grid.send_and_receive(msgs, timeout=self.job.connect_timeout):
            if reply.has_error():
                raise RuntimeError(f"a SuperNode failed to describe its data: {reply.error}")
            info = reply.content.metric_records["info"]
            cid = int(info["client-id"])
            if cid in self.node_of:
                raise RuntimeError(f"two SuperNodes hold client {cid}'s data")
            self.node_of[cid] = reply.metadata.src_node_id
            self.sizes[cid] = int(info["n-train"])
            stats[cid] = _record_stats(reply.content.array_records["stats"])
        if len(stats) < self.job.expected_clients:
            raise RuntimeError(
                f"only {len(stats)} of {self.job.expected_clients} SuperNodes described their data within "
                f"{self.job.connect_timeout:.0f}s (clients {sorted(stats)})"
            )
        shapes = {m.name: m.shape for m in self.job.model().modalities}
        if self.job.scaling == "federated":
            shared = federated_scaler(stats, shapes, self.job.x_scaling)
            self.scalers = dict.fromkeys(sorted(stats), shared)
        else:
            self.scalers = {c: stats[c].scaler(shapes, self.job.x_scaling) for c in sorted(stats)}
        logger.info(
            "Flower clients connected: %s", {c: self.node_of[c] for c in sorted(self.node_of)}
        )

    def client_ids(self) -> list[int]:
        return sorted(self.node_of)

    def n_train(self, client: int) -> int:
        return self.sizes[client]

    def _exchange(self, kind: str, contents: dict[int, RecordDict], round_: int):
        msgs = {
            c: Message(
                content, dst_node_id=self.node_of[c], message_type=kind, group_id=str(round_)
            )
            for c, content in contents.items()
        }
        by_node = {m.metadata.dst_node_id: c for c, m in msgs.items()}
        replies, failures = {}, {}
        for reply in self.grid.send_and_receive(
            list(msgs.values()), timeout=self.job.round_timeout
        ):
            c = by_node.get(reply.metadata.src_node_id)
            if c is None:
                continue
            if reply.has_error():
                failures[c] = f"{reply.error.code}: {reply.error.reason}"
            else:
                replies[c] = reply
        for c in contents:
            if c not in replies and c not in failures:
                failures[c] = f"no reply within {self.job.round_timeout:.0f}s"
        return replies, failures

    def train(
        self,
        jobs: dict[int, State],
        round_: int,
        cfg: LocalTrainConfig,
        anchor: State | None = None,
    ):
        config = ConfigRecord({**asdict(cfg), "round": round_, "seed": self.job.federation().seed})
        config = ConfigRecord({k: v for k, v in config.items() if v is not None})
        # the warm start the clients are pulled toward (its anchored parts only)
        extra = {} if anchor is None else {"anchor": _state_record(_anchored(anchor))}
        contents = {
            c: RecordDict(
                {
                    "global": _state_record(s),
                    "scaler": _scaler_record(self.scalers[c]),
                    "config": config,
                    **extra,
                }
            )
            for c, s in jobs.items()
        }
        replies, failures = self._exchange("train", contents, round_)
        self.silent = set(failures)  # not asked to evaluate this round (they would time out again)
        updates = []
        for c in sorted(replies):
            m = replies[c].content.metric_records["metrics"]
            metrics = {k: float(v) for k, v in m.items() if k not in ("num-examples", "client-id")}
            updates.append(
                ClientUpdate(
                    c,
                    _record_state(replies[c].content.array_records["arrays"]),
                    int(m["num-examples"]),
                    metrics,
                )
            )
        return updates, failures

    def evaluate(self, states: dict[int, State]) -> dict[int, float]:
        contents = {
            c: RecordDict({"global": _state_record(s), "scaler": _scaler_record(self.scalers[c])})
            for c, s in states.items()
            if c not in self.silent
        }
        replies, failures = self._exchange("evaluate", contents, 0)
        for c, why in failures.items():
            logger.error("evaluation: client %d did not answer: %s", c, why)
        return {
            c: float(r.content.metric_records["metrics"]["val_mse"]) for c, r in replies.items()
        }

    def pls_query(self, op: str, arrays: dict[str, np.ndarray] | None = None) -> dict[int, dict]:
        """Ask every client for one PLS aggregate; all must answer (a warm start needs them)."""
        contents = {
            c: RecordDict(
                {
                    "pls": ConfigRecord({"op": op}),
                    "scaler": _scaler_record(self.scalers[c]),
                    **({"query": _arrays(arrays)} if arrays else {}),
                }
            )
            for c in self.client_ids()
        }
        replies, failures = self._exchange("query", contents, 0)
        if failures:
            raise RuntimeError(f"federated PLS warm start: clients did not answer: {failures}")
        return {
            c: {k: v.numpy() for k, v in replies[c].content.array_records["pls"].items()}
            for c in sorted(replies)
        }

    def client_side_state(self) -> dict:
        return {}  # kept by each SuperNode in its context.state

    def restore_client_side_state(self, state: dict) -> None:
        return None


class FlowerPLS:
    """:class:`fdrmfl_pipeline.core.pls.PLSOracle` over the SuperNodes (sums in client order)."""

    def __init__(self, runner: FlowerRunner):
        self.runner = runner

    def n_train(self) -> int:
        return sum(self.runner.n_train(c) for c in self.runner.client_ids())

    def _sum(self, op: str, arrays=None) -> np.ndarray:
        answers = self.runner.pls_query(op, arrays)
        total = None
        for c in sorted(answers):
            v = answers[c]["v"]
            total = v.copy() if total is None else total + v
        return total

    def cross(self) -> np.ndarray:
        return self._sum("cross")

    def gram_times(self, r: np.ndarray) -> np.ndarray:
        return self._sum("gram", {"r": np.asarray(r, np.float64)})

    def val_sse(self, coefs: np.ndarray) -> list[tuple[np.ndarray, int]]:
        answers = self.runner.pls_query("val", {"coefs": np.asarray(coefs, np.float64)})
        return [(answers[c]["v"], int(answers[c]["n"][0])) for c in sorted(answers)]


def run_server(grid: Grid, job: FlowerJob) -> tuple[TrainingResult, dict[int, Scaler]]:
    runner = FlowerRunner(grid, job)
    runner.connect()
    ck = Path(job.checkpoint_path) if job.checkpoint_path else None
    init = None
    if job.extra.get("kind", "none") != "none":  # pipelines.training.nodes.warm_start_settings
        from fdrmfl_pipeline.core.pls import warm_start_state

        init = warm_start_state(job.model(), FlowerPLS(runner), job.federation().seed, **job.extra)
    result = run_rounds(
        job.model(), runner, job.local(), job.federation(), checkpoint_path=ck, init_state=init
    )
    return result, runner.scalers


def save_result(result: TrainingResult, scalers: dict[int, Scaler], job: FlowerJob) -> Path:
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "result.pt"
    tmp = out / "result.pt.tmp"
    torch.save(
        {
            "global_state": result.global_state,
            "history": result.history,
            "scalers": {c: s.to_dict() for c, s in scalers.items()},
            "best_round": result.best_round,
            "rounds_run": result.rounds_run,
        },
        tmp,
    )
    os.replace(tmp, path)
    return path


def make_server_app(job: FlowerJob | None = None, on_result=None) -> ServerApp:
    """A ServerApp; in simulation ``on_result(result, scalers)`` receives the outcome in-process,
    in deployment the result is written to ``<job.output_dir>/result.pt``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        j = _job_from(context, job)
        result, scalers = run_server(grid, j)
        save_result(result, scalers, j)
        if on_result is not None:
            on_result(result, scalers)

    return app


# module-level apps for `flwr run` (the job path arrives in the run config)
client_app = make_client_app()
server_app = make_server_app()
