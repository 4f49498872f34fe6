"""The Flower ServerApp: :func:`fdrmfl_pipeline.core.engine.run_rounds` over a Flower Grid.

Client sampling over client ids with the project's seeded generator, FedAvg in client-id order,
retention, history, checkpoints and ``min_clients`` fault handling are the in-process engine's;
only the transport differs (:class:`FlowerRunner`, :class:`FlowerOracle`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fdrmfl_pipeline.core.client import ClientUpdate, LocalTrainConfig
from fdrmfl_pipeline.core.clientdata import (
    Scaler,
    SufficientStats,
    federated_scaler,
    stats_from_arrays,
)
from fdrmfl_pipeline.core.engine import (
    TrainingResult,
    jsonable,
    mean_from_val_sum,
    run_rounds,
    summed_update,
)
from fdrmfl_pipeline.flower.job import FlowerJob
from fdrmfl_pipeline.flower.records import (
    PackedRecordError,
    State,
    anchored,
    arrays_record,
    record_arrays,
    record_state,
    record_stats,
    scaler_record,
    seal,
    state_record,
    unseal,
)
from fdrmfl_pipeline.flower.secure import SecureSums
from fdrmfl_pipeline.flower.trace import mark

logger = logging.getLogger(__name__)


def _audit(kind: str, replies: dict) -> None:
    """Test hook: ``FDRMFL_AUDIT_REPLIES=<file>`` appends, per reply the ServerApp receives,
    its kind, client and the names and sizes of its records (the privacy tests read it)."""
    path = os.environ.get("FDRMFL_AUDIT_REPLIES")
    if not path:
        return
    import json

    with open(path, "a", encoding="utf-8") as fh:
        for c, r in sorted(replies.items()):
            content = r.content
            fh.write(
                json.dumps(
                    {
                        "kind": kind,
                        "client": c,
                        "arrays": {
                            k: sorted(record_arrays(v)) for k, v in content.array_records.items()
                        },
                        "configs": {k: sorted(v.keys()) for k, v in content.config_records.items()},
                        "metrics": {k: dict(v) for k, v in content.metric_records.items()},
                    },
                    default=str,
                )
                + "\n"
            )


def _unseal_reply(reply: Message) -> None:
    """A reply's content as the ClientApp wrote it; an unreadable sealed content becomes an
    empty one (the caller then names what the reply lacks) and is logged with its sender."""
    if reply.has_error():
        return
    try:
        reply.content = unseal(reply.content)
    except PackedRecordError as err:
        logger.error("reply from SuperNode %d: %s", reply.metadata.src_node_id, err)
        reply.content = RecordDict()


def send_and_receive(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """Push ``messages`` and pull their replies until all arrived or ``timeout`` passed, like
    ``Grid.send_and_receive`` but polling every 0.02 s, backing off to 0.2 s while nothing comes
    (Flower 1.42's deployment grid waits 3 s between pulls, most of a short exchange). A reply
    whose objects never finish arriving (its sender died mid-upload) comes back as Flower's
    error reply once the deadline passes, without holding up the others."""
    from fdrmfl_pipeline.flower.fast_supernode import object_pulls_within

    mark("push-start")
    for m in messages:  # one object per message on the wire (records.seal)
        m.content = seal(m.content)
    pending = set(grid.push_messages(messages))
    mark("push", messages=sorted(pending))
    deadline = time.monotonic() + timeout
    out: list[Message] = []
    wait = 0.02
    while pending:
        with object_pulls_within(deadline - time.monotonic()):
            replies = list(grid.pull_messages(pending))
        for r in replies:
            mark("reply", message=r.metadata.reply_to_message_id)
            _unseal_reply(r)
        out.extend(replies)
        pending -= {r.metadata.reply_to_message_id for r in replies}
        if not pending or time.monotonic() >= deadline:
            break
        wait = 0.02 if replies else min(0.2, wait * 1.5)
        time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
    return out


class UnreadableReplyError(ValueError):
    """A client's reply that is not what the ClientApp sends: that client counts as failed."""


def read_update(
    content: RecordDict, sent: State, described_n: int | None = None
) -> tuple[State, int, dict[str, float]]:
    """A training reply's weights, sample count and metrics, checked against the model the
    client was sent (same tensor names, shapes and dtypes, finite values) and the training
    count it described when it connected (so no client can inflate its weight in the mean).
    Anything else raises :class:`UnreadableReplyError` naming what is wrong, so one broken or
    crafted reply fails that client instead of the run."""
    try:
        state = record_state(content.array_records["arrays"])
        m = content.metric_records["metrics"]
        n = int(m["num-examples"])
        metrics = {k: float(v) for k, v in m.items() if k not in ("num-examples", "client-id")}
    except KeyError as err:
        raise UnreadableReplyError(f"no {err.args[0]!r} in the reply") from err
    except (PackedRecordError, TypeError, ValueError) as err:
        raise UnreadableReplyError(str(err)) from err
    if set(state) != set(sent):
        missing, extra = sorted(set(sent) - set(state)), sorted(set(state) - set(sent))
        raise UnreadableReplyError(f"weights missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in sent.items():
        if state[k].shape != v.shape or state[k].dtype != v.dtype:
            raise UnreadableReplyError(
                f"weight '{k}' is {tuple(state[k].shape)} {state[k].dtype}, "
                f"expected {tuple(v.shape)} {v.dtype}"
            )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise UnreadableReplyError(f"weight '{bad[0]}' holds NaN or infinite values")
    if n <= 0:
        raise UnreadableReplyError(f"num-examples is {n}, expected a positive count")
    if described_n is not None and n != described_n:
        raise UnreadableReplyError(
            f"num-examples is {n}, but the client described {described_n} training rows"
        )
    return state, n, metrics


class FlowerRunner:
    """:class:`fdrmfl_pipeline.core.engine.ClientRunner` over a Flower Grid."""

    def __init__(self, grid: Grid, job: FlowerJob):
        self.grid, self.job = grid, job
        self.node_of: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.scalers: dict[int, Scaler] = {}
        self.stats: dict[int, SufficientStats] = {}
        self.silent: set[int] = set()  # clients that did not answer this round's training
        self.secure = job.setup.federation.secure
        self.sums = SecureSums(self._exchange)
        self._queries = 0

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
        for reply in send_and_receive(self.grid, msgs, self.job.connect_timeout):
            if reply.has_error():
                raise RuntimeError(f"a SuperNode failed to describe its data: {reply.error}")
            info = reply.content.metric_records["info"]
            cid = int(info["client-id"])
            if cid in self.node_of:
                raise RuntimeError(f"two SuperNodes hold client {cid}'s data")
            self.node_of[cid] = reply.metadata.src_node_id
            self.sizes[cid] = int(info["n-train"])
            if not self.secure:
                stats[cid] = record_stats(reply.content.array_records["stats"])
        if len(self.node_of) < self.job.expected_clients:
            raise RuntimeError(
                f"only {len(self.node_of)} of {self.job.expected_clients} SuperNodes described their "
                f"data within {self.job.connect_timeout:.0f}s (clients {sorted(self.node_of)})"
            )
        if self.secure:  # one summed statistic: no client's own sums reach the server
            ask = {c: RecordDict({"stats-sum": ConfigRecord({})}) for c in self.client_ids()}
            total, clients, failures = self.sums.release("query", ask, 0, "stats")
            if total is None or failures:
                raise RuntimeError(
                    f"secure aggregation of the scaler statistics: clients did not answer: "
                    f"{failures}"
                )
            stats = {-1: stats_from_arrays(total)}
        self.stats = stats
        shapes = {m.name: m.shape for m in self.job.setup.model.modalities}
        categorical = self.job.setup.model.n_classes > 0  # class codes stay as they are
        if self.job.setup.scaling == "federated":
            shared = federated_scaler(
                stats, shapes, self.job.setup.x_scaling, categorical=categorical
            )
            self.scalers = dict.fromkeys(self.client_ids(), shared)
        else:
            self.scalers = {
                c: stats[c].scaler(shapes, self.job.setup.x_scaling, categorical)
                for c in sorted(stats)
            }
        logger.info(
            "Flower clients connected: %s", {c: self.node_of[c] for c in sorted(self.node_of)}
        )

    def client_ids(self) -> list[int]:
        return sorted(self.node_of)

    def n_train(self, client: int) -> int:
        return self.sizes[client]

    def refresh_nodes(self) -> None:
        """A SuperNode that came back (restarted after a crash: a new node id) takes its
        client's place again; it keeps the scaler and counts it described at the start. A node
        holding a client this job never saw is left out (its data was not in the scaler)."""
        new = sorted(set(self.grid.get_node_ids()) - set(self.node_of.values()))
        if not new:
            return
        msgs = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in new]
        for reply in send_and_receive(self.grid, msgs, min(30.0, self.job.round_timeout)):
            if reply.has_error():
                continue
            cid = int(reply.content.metric_records["info"]["client-id"])
            if cid not in self.node_of:
                logger.warning(
                    "SuperNode %d holds client %d, which this job did not start with: ignored",
                    reply.metadata.src_node_id,
                    cid,
                )
                continue
            logger.info(
                "client %d is back on SuperNode %d (was %d)",
                cid,
                reply.metadata.src_node_id,
                self.node_of[cid],
            )
            self.node_of[cid] = reply.metadata.src_node_id

    def _exchange(self, kind: str, contents: dict[int, RecordDict], round_: int):
        msgs = {
            c: Message(
                content, dst_node_id=self.node_of[c], message_type=kind, group_id=str(round_)
            )
            for c, content in contents.items()
        }
        replies, failures = {}, {}
        answered = send_and_receive(self.grid, list(msgs.values()), self.job.round_timeout)
        # by the message each reply answers (ids are set by the push): Flower's own error
        # replies (e.g. a reply whose upload never finished) come from the server's node
        asked = {m.metadata.message_id: c for c, m in msgs.items()}
        for reply in answered:
            c = asked.get(reply.metadata.reply_to_message_id)
            if c is None:
                continue
            if reply.has_error():
                failures[c] = f"{reply.error.code}: {reply.error.reason}"
            elif reply.metadata.src_node_id != self.node_of[c]:
                failures[c] = (
                    f"reply from SuperNode {reply.metadata.src_node_id}, not the one asked"
                )
            else:
                replies[c] = reply
        for c in contents:
            if c not in replies and c not in failures:
                failures[c] = f"no reply within {self.job.round_timeout:.0f}s"
        _audit(kind, replies)
        return replies, failures

    def _train_contents(self, jobs, round_, cfg, anchor) -> dict[int, RecordDict]:
        config = ConfigRecord(
            {**asdict(cfg), "round": round_, "seed": self.job.setup.federation.seed}
        )
        config = ConfigRecord({k: v for k, v in config.items() if v is not None})
        # the warm start the clients are pulled toward (its anchored parts only)
        extra = {} if anchor is None else {"anchor": state_record(anchored(anchor))}
        return {
            c: RecordDict(
                {
                    "global": state_record(s),
                    "scaler": scaler_record(self.scalers[c]),
                    "config": config,
                    **extra,
                }
            )
            for c, s in jobs.items()
        }

    def train_summed(self, jobs, round_, cfg, anchor=None):
        """Secure aggregation: the sample-weighted mean model of the clients that answered."""
        self.refresh_nodes()
        contents = self._train_contents(jobs, round_, cfg, anchor)
        total, clients, failures = self.sums.release("train", contents, round_, f"train-{round_}")
        self.silent = set(failures)
        if total is None:
            return None, failures
        return summed_update(total, clients, next(iter(jobs.values()))), failures

    def evaluate_summed(
        self, state: State, clients: list[int], round_: int = 0
    ) -> tuple[float, list[int]]:
        """Secure aggregation: the mean validation MSE over ``clients`` that answered."""
        contents = {
            c: self._evaluate_content(state, c, round_) for c in clients if c not in self.silent
        }
        self._queries += 1
        total, judged, failures = self.sums.release(
            "evaluate", contents, 0, f"evaluate-{self._queries}"
        )
        for c, why in failures.items():
            logger.error("evaluation: client %d did not answer: %s", c, why)
        if total is None:
            return float("nan"), []
        return mean_from_val_sum(total["v"]), judged

    def train(
        self,
        jobs: dict[int, State],
        round_: int,
        cfg: LocalTrainConfig,
        anchor: State | None = None,
    ):
        self.refresh_nodes()
        contents = self._train_contents(jobs, round_, cfg, anchor)
        replies, failures = self._exchange("train", contents, round_)
        updates = []
        for c in sorted(replies):
            try:
                state, n, metrics = read_update(replies[c].content, jobs[c], self.sizes.get(c))
            except UnreadableReplyError as err:
                failures[c] = f"unreadable reply: {err}"
                continue
            updates.append(ClientUpdate(c, state, n, metrics))
        self.silent = set(failures)  # not asked to evaluate this round (they would time out again)
        return updates, failures

    def _evaluate_content(self, state: State, client: int, round_: int) -> RecordDict:
        return RecordDict(
            {
                "global": state_record(state),
                "scaler": scaler_record(self.scalers[client]),
                "config": ConfigRecord({"round": round_}),
            }
        )

    def evaluate(self, states: dict[int, State], round_: int = 0) -> dict[int, float]:
        contents = {
            c: self._evaluate_content(s, c, round_)
            for c, s in states.items()
            if c not in self.silent
        }
        replies, failures = self._exchange("evaluate", contents, 0)
        out = {}
        for c, r in sorted(replies.items()):
            try:
                out[c] = float(r.content.metric_records["metrics"]["val_mse"])
            except (KeyError, TypeError, ValueError) as err:
                failures[c] = f"unreadable reply: no numeric val_mse ({err!r})"
        for c, why in failures.items():
            logger.error("evaluation: client %d did not answer: %s", c, why)
        return out

    def pls_query(self, op: str, arrays: dict[str, np.ndarray] | None = None) -> dict[int, dict]:
        """Ask every client for one PLS aggregate; all must answer (a warm start needs them).
        Under secure aggregation the answer is one entry, -1: the sum over clients."""
        contents = {
            c: RecordDict(
                {
                    "pls": ConfigRecord({"op": op}),
                    "scaler": scaler_record(self.scalers[c]),
                    **({"query": arrays_record(arrays)} if arrays else {}),
                }
            )
            for c in self.client_ids()
        }
        if self.secure:
            self._queries += 1
            total, _, failures = self.sums.release("query", contents, 0, f"pls-{self._queries}")
            if total is None or failures:
                raise RuntimeError(f"federated warm start: clients did not answer: {failures}")
            return {-1: total}
        replies, failures = self._exchange("query", contents, 0)
        if failures:
            raise RuntimeError(f"federated PLS warm start: clients did not answer: {failures}")
        return {c: record_arrays(replies[c].content.array_records["pls"]) for c in sorted(replies)}

    def data_digest(self) -> str:
        """A digest of the clients' summed statistics (a checkpoint of other data is never
        resumed); the server sees no rows to hash."""
        import hashlib

        h = hashlib.sha256()
        for c in sorted(self.stats):
            st = self.stats[c]
            h.update(repr((c, st.y_n, st.y_s1, st.y_s2, sorted(st.n.items()))).encode())
            for m in sorted(st.s1):
                h.update(np.asarray(st.s1[m]).tobytes() + np.asarray(st.s2[m]).tobytes())
        return h.hexdigest()[:16]

    def client_side_state(self) -> dict:
        return {}  # kept by each SuperNode in its context.state

    def restore_client_side_state(self, state: dict) -> None:
        return None


class FlowerOracle:
    """:class:`fdrmfl_pipeline.core.warmstart.AggregateOracle` over the SuperNodes (sums in client order)."""

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

    def gram(self) -> np.ndarray:
        return self._sum("gram_full")

    def val_sse(self, coefs: np.ndarray) -> list[tuple[np.ndarray, int]]:
        answers = self.runner.pls_query("val", {"coefs": np.asarray(coefs, np.float64)})
        if self.runner.secure:  # the sum of the clients' MSE and their count: its mean
            v = answers[-1]["v"]
            return [(v[:-1], int(round(float(v[-1]))))]
        return [(answers[c]["v"], int(answers[c]["n"][0])) for c in sorted(answers)]


def run_server(grid: Grid, job: FlowerJob) -> tuple[TrainingResult, dict[int, Scaler]]:
    mark("server-main")
    runner = FlowerRunner(grid, job)
    runner.connect()
    mark("connected")
    ck = Path(job.checkpoint_path) if job.checkpoint_path else None
    init = None
    setup = job.setup
    if setup.warm_start.kind != "none":
        from fdrmfl_pipeline.core.warmstart import warm_start_state

        init = warm_start_state(
            setup.model, FlowerOracle(runner), setup.federation.seed, setup.warm_start
        )
    mark("warm-start-done")
    result = run_rounds(
        setup.model, runner, setup.local, setup.federation, checkpoint_path=ck, init_state=init
    )
    mark("rounds-done")
    return result, runner.scalers


RESULT_TENSORS = "result.pt"  # the global weights only: torch.load(weights_only=True)
RESULT_JSON = "result.json"  # history, scalers, rounds: plain JSON


def save_result(result: TrainingResult, scalers: dict[int, Scaler], job: FlowerJob) -> Path:
    """Write the outcome without pickles: the weights as tensors, the rest as JSON; each file
    renamed into place, the JSON last (its presence means the run finished)."""
    import json

    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{RESULT_TENSORS}.tmp"
    torch.save({k: v.detach().cpu() for k, v in result.global_state.items()}, tmp)
    os.replace(tmp, out / RESULT_TENSORS)
    meta = {
        "history": result.history,
        "scalers": {str(c): s.to_dict() for c, s in scalers.items()},
        "best_round": result.best_round,
        "rounds_run": result.rounds_run,
    }
    tmp = out / f"{RESULT_JSON}.tmp"
    tmp.write_text(json.dumps(meta, default=jsonable))
    os.replace(tmp, out / RESULT_JSON)
    return out / RESULT_JSON


def load_result(out_dir: Path) -> tuple[dict, State]:
    """The JSON part and the weights of a finished run (weights-only load: no code runs)."""
    import json
    import pickle

    from fdrmfl_pipeline.errors import StoredArtifactError, describe_load_failure

    try:
        meta = json.loads((Path(out_dir) / RESULT_JSON).read_text())
        # refuses pickled objects: a crafted file in a shared folder runs no code
        state = torch.load(Path(out_dir) / RESULT_TENSORS, weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise StoredArtifactError(
            f"cannot read the Flower run's result in {out_dir}: {describe_load_failure(exc)}; "
            "it is not a weights-only result written by this project"
        ) from exc
    return meta, state


def _log_progress() -> None:
    """The engine's round lines reach the run's log stream (``flwr run --stream``), which the
    deployment launcher relays to its console; nothing is added where logging is configured."""
    import sys

    project = logging.getLogger("fdrmfl_pipeline")
    if not project.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        project.addHandler(handler)
    if project.level == logging.NOTSET or project.level > logging.INFO:
        project.setLevel(logging.INFO)


def make_server_app(job: FlowerJob | None = None, on_result=None) -> ServerApp:
    """A ServerApp; in simulation ``on_result(result, scalers)`` receives the outcome in-process,
    in deployment the result is written to ``<job.output_dir>`` (:func:`save_result`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        from fdrmfl_pipeline.flower.fast_supernode import shorten_object_pulls

        _log_progress()
        shorten_object_pulls()  # only when FDRMFL_OBJECT_PULL_BACKOFF is set (local deployment)
        j = FlowerJob.from_context(context, job)
        result, scalers = run_server(grid, j)
        save_result(result, scalers, j)
        if on_result is not None:
            on_result(result, scalers)

    return app
