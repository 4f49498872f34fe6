"""A client's reply is untrusted input: a broken or crafted training or evaluation reply fails
that client for the round (named in the log), never the run, and never reaches the average."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")
torch = pytest.importorskip("torch")

from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict  # noqa: E402

from fdrmfl_pipeline.core.client import LocalTrainConfig  # noqa: E402
from fdrmfl_pipeline.flower.records import state_record  # noqa: E402
from fdrmfl_pipeline.flower.server_app import (  # noqa: E402
    FlowerRunner,
    UnreadableReplyError,
    read_update,
)

SENT = {"enc.weight": torch.zeros(2, 3), "head.bias": torch.zeros(1)}


def _reply(state=None, n=10, arrays=None, **metrics) -> RecordDict:
    state = {k: v + 1.0 for k, v in SENT.items()} if state is None else state
    rec = state_record(state) if arrays is None else arrays
    return RecordDict(
        {
            "arrays": rec,
            "metrics": MetricRecord({"num-examples": n, "client-id": 0, "loss": 0.5, **metrics}),
        }
    )


def test_a_well_formed_reply_is_read():
    state, n, metrics = read_update(_reply(), SENT, described_n=10)
    assert n == 10 and metrics == {"loss": 0.5}
    assert torch.equal(state["enc.weight"], torch.ones(2, 3))


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (RecordDict({"metrics": MetricRecord({"num-examples": 3})}), "no 'arrays'"),
        (RecordDict({"arrays": state_record(SENT)}), "no 'metrics'"),
        (_reply(arrays=ArrayRecord({"packed": Array(np.zeros(3, np.uint8))})), "no header"),
        (_reply(state={"enc.weight": torch.zeros(2, 3)}), "weights missing ['head.bias']"),
        (_reply(state={**SENT, "extra": torch.zeros(1)}), "unexpected ['extra']"),
        (_reply(state={**SENT, "enc.weight": torch.zeros(3, 2)}), "'enc.weight' is (3, 2)"),
        (
            _reply(state={**SENT, "head.bias": torch.zeros(1, dtype=torch.float64)}),
            "torch.float64, expected (1,) torch.float32",
        ),
        (_reply(state={**SENT, "head.bias": torch.tensor([float("nan")])}), "NaN or infinite"),
        (_reply(state={**SENT, "enc.weight": torch.full((2, 3), np.inf)}), "NaN or infinite"),
        (_reply(n=0), "num-examples is 0"),
        (_reply(n=10_000), "described 10 training rows"),  # may not inflate its weight
    ],
)
def test_a_broken_or_crafted_reply_is_refused_by_name(reply, says):
    with pytest.raises(UnreadableReplyError) as err:
        read_update(reply, SENT, described_n=10)
    assert says in str(err.value)


def _runner(replies: dict[int, RecordDict], failures: dict[int, str]) -> FlowerRunner:
    job = SimpleNamespace(
        setup=SimpleNamespace(federation=SimpleNamespace(secure=False, seed=0)), round_timeout=5.0
    )
    runner = FlowerRunner(grid=None, job=job)
    runner.sizes = dict.fromkeys([0, 1, 2, 3], 10)
    runner.refresh_nodes = lambda: None
    runner._train_contents = lambda jobs, *a: dict.fromkeys(jobs)
    runner._evaluate_content = lambda state, c, r: None
    runner._exchange = lambda kind, contents, r: (
        {c: SimpleNamespace(content=replies[c]) for c in contents if c in replies},
        {c: why for c, why in failures.items() if c in contents},
    )
    return runner


def test_an_unreadable_training_reply_fails_that_client_not_the_round():
    replies = {0: _reply(), 1: _reply(n=99), 2: _reply(arrays=ArrayRecord({}))}
    runner = _runner(replies, {3: "no reply within 5s"})
    jobs = dict.fromkeys(range(4), SENT)
    updates, failures = runner.train(jobs, 1, LocalTrainConfig())
    assert [u.client_id for u in updates] == [0]
    assert sorted(failures) == [1, 2, 3]
    assert failures[1].startswith("unreadable reply: num-examples is 99")
    assert runner.silent == {1, 2, 3}  # not asked to evaluate this round


def test_an_evaluation_reply_without_a_number_is_a_failure(caplog):
    bad = RecordDict({"metrics": MetricRecord({"loss": 1.0})})
    good = RecordDict({"metrics": MetricRecord({"val_mse": 0.25})})
    runner = _runner({0: good, 1: bad}, {})
    assert runner.evaluate({0: SENT, 1: SENT}) == {0: 0.25}
    assert "client 1 did not answer: unreadable reply" in caplog.text


class _Grid:
    """A Flower grid stand-in: push gives each message an id (as Flower's grids do); pull
    answers with ``answer(message) -> reply or None`` and records the object-pull time bound
    in force while it runs."""

    def __init__(self, answer):
        self.answer, self.sent, self.max_time = answer, {}, []

    def push_messages(self, messages):
        for i, m in enumerate(messages):
            m.metadata.__dict__["_message_id"] = f"m{i}"
            self.sent[f"m{i}"] = m
        return list(self.sent)

    def pull_messages(self, ids):
        from flwr.supercore.inflatable import inflatable_utils

        self.max_time.append(inflatable_utils.pull_objects.__kwdefaults__["max_time"])
        out = [self.answer(self.sent[i]) for i in ids]
        return [r for r in out if r is not None]


def _answer(msg, src=None, error=None):
    meta = SimpleNamespace(
        reply_to_message_id=msg.metadata.message_id,
        src_node_id=msg.metadata.dst_node_id if src is None else src,
    )
    return SimpleNamespace(
        metadata=meta,
        content=RecordDict({"metrics": MetricRecord({"val_mse": 0.5})}),
        error=error,
        has_error=lambda: error is not None,
    )


def test_replies_are_matched_to_the_message_they_answer_flowers_error_replies_included(
    monkeypatch,
):
    """Flower reports a reply whose upload never finished (its SuperNode died mid-push) as an
    error message from the server's own node: that client fails with Flower's reason instead of
    a bare timeout, a reply from another node than the one asked is refused, and the others
    count."""
    from flwr.supercore.task_identity import TaskIdentity

    for field in ("_run_id", "_node_id", "_task_id"):  # messages are made inside a run
        monkeypatch.setattr(TaskIdentity, field, 1)
    nodes = {0: 100, 1: 101, 2: 102, 3: 103}
    unavailable = SimpleNamespace(code=3, reason="Reply message objects are unavailable")

    def answer(msg):
        node = msg.metadata.dst_node_id
        if node == 101:
            return _answer(msg, src=1, error=unavailable)  # made by Flower on the server side
        if node == 102:
            return _answer(msg, src=999)
        if node == 103:
            return None
        return _answer(msg)

    job = SimpleNamespace(
        setup=SimpleNamespace(federation=SimpleNamespace(secure=False, seed=0)), round_timeout=0.2
    )
    runner = FlowerRunner(grid=_Grid(answer), job=job)
    runner.node_of = nodes
    replies, failures = runner._exchange("evaluate", dict.fromkeys(nodes, RecordDict()), 1)
    assert list(replies) == [0]
    assert failures[1] == "3: Reply message objects are unavailable"
    assert failures[2] == "reply from SuperNode 999, not the one asked"
    assert failures[3] == "no reply within 0s"
    bounds = runner.grid.max_time
    assert bounds and all(b <= 0.5 for b in bounds)  # pulls gave up by the round's deadline


def test_object_pulls_give_up_inside_the_bound_and_the_default_comes_back():
    """A reply object that never arrives ends the pull with ObjectPullError inside the block
    (Flower's default keeps retrying for up to two hours); outside it nothing changed."""
    from flwr.supercore.inflatable import inflatable_utils

    from fdrmfl_pipeline.flower.fast_supernode import object_pulls_within

    def never(object_id):
        raise inflatable_utils.ObjectUnavailableError(object_id)

    before = dict(inflatable_utils.pull_objects.__kwdefaults__)
    with object_pulls_within(0.5), pytest.raises(inflatable_utils.ObjectPullError):
        inflatable_utils.pull_objects(["x"], never, initial_backoff=0.05)
    assert inflatable_utils.pull_objects.__kwdefaults__ == before
