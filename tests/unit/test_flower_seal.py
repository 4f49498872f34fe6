"""One record per message on the wire: a sealed content is two objects (four when it is large
enough to travel in chunks) whatever it holds, reads back exactly, and a crafted sealed record
is refused by name (the reply then fails its client)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict  # noqa: E402
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects  # noqa: E402

from fdrmfl_pipeline.flower.records import (  # noqa: E402
    PACKED,
    SEALED,
    PackedRecordError,
    arrays_record,
    is_sealed,
    record_arrays,
    seal,
    unseal,
)


def _content() -> RecordDict:
    return RecordDict(
        {
            "pls": ConfigRecord({"op": "gram", "round": 3}),
            "scaler": arrays_record({"mean.x": np.arange(5.0), "y": np.array([1.0, 2.0])}),
            "query": arrays_record({"r": np.linspace(0, 1, 7)}),
            "metrics": MetricRecord({"val_mse": 0.25, "num-examples": 12}),
        }
    )


@pytest.mark.parametrize("inline", [True, False])
def test_a_sealed_content_is_two_objects_and_reads_back_exactly(inline, monkeypatch):
    from fdrmfl_pipeline.flower import records

    if not inline:  # a large content travels as an array, in chunks
        monkeypatch.setattr(records, "SEAL_INLINE_BYTES", 10)
    content = _content()
    sealed = seal(content)
    assert len(get_all_nested_objects(content)) > 4
    # the record dict and its one record (inline); or the record dict, the record, the array
    # and its one chunk here
    assert len(get_all_nested_objects(sealed)) == (2 if inline else 4)
    assert is_sealed(sealed) and not is_sealed(content)
    back = unseal(sealed)
    assert back.config_records["pls"]["op"] == "gram" and back.config_records["pls"]["round"] == 3
    assert back.metric_records["metrics"]["val_mse"] == 0.25
    for name in ("scaler", "query"):
        want, got = record_arrays(content.array_records[name]), record_arrays(back[name])
        assert want.keys() == got.keys()
        assert all(np.array_equal(want[k], got[k]) for k in want)


def test_unsealed_content_passes_through():
    content = _content()
    assert unseal(content) is content
    assert unseal(RecordDict()).keys() == RecordDict().keys()


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (ArrayRecord({PACKED: Array(np.zeros(4, np.float32))}), "expected 1-d uint8"),
        (
            ArrayRecord({PACKED: Array(np.frombuffer(b"\xff\xff\xff\xff", np.uint8))}),
            "not a message content",
        ),
        (ArrayRecord({"other": Array(np.zeros(3, np.uint8))}), "expected ['packed']"),
        (ConfigRecord({PACKED: "text"}), "holds str, expected bytes"),
        (ConfigRecord({PACKED: b"\xff\xff\xff\xff"}), "not a message content"),
        (MetricRecord({PACKED: 1.0}), "is a MetricRecord"),
    ],
)
def test_a_crafted_sealed_record_is_refused_by_name(record, says):
    with pytest.raises(PackedRecordError, match=says.replace("[", r"\[").replace("]", r"\]")):
        unseal(RecordDict({SEALED: record}))


def test_an_unreadable_sealed_reply_becomes_empty_and_is_logged(caplog):
    from fdrmfl_pipeline.flower.server_app import _unseal_reply

    garbage = RecordDict(
        {SEALED: ArrayRecord({PACKED: Array(np.frombuffer(b"\xff\xff\xff\xff", np.uint8))})}
    )
    reply = SimpleNamespace(
        content=garbage, has_error=lambda: False, metadata=SimpleNamespace(src_node_id=7)
    )
    with caplog.at_level(logging.ERROR):
        _unseal_reply(reply)
    assert list(reply.content.keys()) == []  # the caller then names what the reply lacks
    assert "reply from SuperNode 7" in caplog.text and "not a message content" in caplog.text
    good = SimpleNamespace(
        content=seal(_content()), has_error=lambda: False, metadata=SimpleNamespace(src_node_id=1)
    )
    _unseal_reply(good)
    assert good.content.config_records["pls"]["op"] == "gram"


def test_the_server_seals_what_it_sends_and_unseals_what_it_gets(monkeypatch):
    """Through the ServerApp's exchange: every pushed message is sealed, and the handlers
    (here the evaluation) read the reply as the ClientApp wrote it."""
    from flwr.app import Message
    from flwr.supercore.task_identity import TaskIdentity

    from fdrmfl_pipeline.flower.server_app import FlowerRunner

    for field in ("_run_id", "_node_id", "_task_id"):  # messages are made inside a run
        monkeypatch.setattr(TaskIdentity, field, 1)
    pushed = []

    class Grid:
        def push_messages(self, messages):
            for i, m in enumerate(messages):
                m.metadata.__dict__["_message_id"] = f"m{i}"
                pushed.append(m)
            return [m.metadata.message_id for m in messages]

        def pull_messages(self, ids):
            out = []
            for m in pushed:
                if m.metadata.message_id in ids:
                    assert is_sealed(m.content)  # what travelled
                    asked = unseal(m.content)
                    assert asked.config_records["config"]["round"] == 2
                    out.append(
                        SimpleNamespace(
                            metadata=SimpleNamespace(
                                reply_to_message_id=m.metadata.message_id,
                                src_node_id=m.metadata.dst_node_id,
                            ),
                            content=seal(RecordDict({"metrics": MetricRecord({"val_mse": 0.5})})),
                            has_error=lambda: False,
                        )
                    )
            return out

    job = SimpleNamespace(
        setup=SimpleNamespace(federation=SimpleNamespace(secure=False, seed=0)), round_timeout=5
    )
    runner = FlowerRunner(grid=Grid(), job=job)
    runner.node_of = {0: 100, 1: 101}
    contents = {c: RecordDict({"config": ConfigRecord({"round": 2})}) for c in (0, 1)}
    replies, failures = runner._exchange("evaluate", contents, 2)
    assert not failures and sorted(replies) == [0, 1]
    assert all(r.content.metric_records["metrics"]["val_mse"] == 0.5 for r in replies.values())
    assert len(pushed) == 2 and all(isinstance(m, Message) for m in pushed)
