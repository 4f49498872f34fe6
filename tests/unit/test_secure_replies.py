"""Secure aggregation reads each client's reply as untrusted input: a reply a stage cannot use
(missing key, wrong key size, a duplicated key, a malformed masked vector, a layout that differs
from the others', a broken reveal) fails that client, the release goes on without it, and the
sum is exactly the honest clients' sum."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")
pytest.importorskip("cryptography")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict  # noqa: E402

from fdrmfl_pipeline.flower import secure  # noqa: E402
from fdrmfl_pipeline.flower.records import arrays_record  # noqa: E402

ANSWERS = {
    c: {"w": np.arange(6, dtype=float).reshape(2, 3) * (c + 1), "n": np.array([10.0 * (c + 1)])}
    for c in range(4)
}


def _federation(tamper=None):
    """An exchange over four in-memory clients running the real client-side steps;
    ``tamper(stage, client, reply)`` may replace a reply."""
    ctx = {c: Context(1, c, {}, RecordDict(), {}) for c in ANSWERS}
    computed = []

    def compute(c):
        computed.append(c)
        return ANSWERS[c]

    def exchange(kind, contents, round_):
        replies = {}
        for c, content in sorted(contents.items()):
            step = secure.stage(content)
            if step == "answer":
                reply = secure.masked_answer(content, ctx[c], c, lambda c=c: compute(c))
            else:
                reply = secure.client_step(content, ctx[c], c)
            if tamper is not None:
                reply = tamper(step, c, reply)
            replies[c] = SimpleNamespace(content=reply)
        return replies, {}

    sums = secure.SecureSums(exchange)
    sums.computed = computed
    return sums


def _expected(clients):
    return {k: sum(ANSWERS[c][k] for c in clients) for k in ("w", "n")}


def _check(result, clients):
    total, survivors, _ = result
    assert survivors == clients
    for k, v in _expected(clients).items():
        np.testing.assert_allclose(total[k], v, atol=1e-9)


def test_honest_clients_sum_exactly():
    _check(_federation().release("query", {c: RecordDict() for c in ANSWERS}, 1, "t"), [0, 1, 2, 3])


def _set_key(reply, value):
    reply[secure.KEY] = ConfigRecord({"public-key": value})
    return reply


def _set_layout(reply, layout):
    reply[secure.KEY] = ConfigRecord({"layout": json.dumps(layout)})
    return reply


@pytest.mark.parametrize(
    ("stage", "craft", "says"),
    [
        ("keys", lambda r: RecordDict(), "unreadable reply"),
        ("keys", lambda r: _set_key(r, b"short"), "not 32 bytes"),
        ("keys", lambda r: _set_key(r, "text"), "not 32 bytes"),
        ("answer", lambda r: RecordDict(), "unreadable reply"),
        (
            "answer",
            lambda r: RecordDict(
                {"masked": arrays_record({"m": np.zeros(7)}), secure.KEY: r[secure.KEY]}
            ),
            "expected (n, 2) uint64",
        ),
        (
            "answer",
            lambda r: RecordDict(
                {"masked": ArrayRecord({"x": Array(np.zeros(3))}), secure.KEY: r[secure.KEY]}
            ),
            "unreadable reply",
        ),
        ("answer", lambda r: _set_layout(r, [["n", [1]], ["w", [2, 4]]]), "values, its layout"),
        ("answer", lambda r: _set_layout(r, [["n", [1]], ["v", [2, 3]]]), "differs from the"),
    ],
)
def test_a_crafted_reply_fails_that_client_and_the_rest_sum_exactly(stage, craft, says):
    def tamper(step, c, reply):
        return craft(reply) if (step == stage and c == 2) else reply

    total, survivors, failures = _federation(tamper).release(
        "query", {c: RecordDict() for c in ANSWERS}, 1, "t"
    )
    _check((total, survivors, failures), [0, 1, 3])
    assert says in failures[2]


def test_a_duplicated_public_key_fails_both_clients():
    first = {}

    def tamper(step, c, reply):
        if step == "keys" and c in (1, 3):
            first.setdefault("key", reply[secure.KEY]["public-key"])
            return _set_key(reply, first["key"])
        return reply

    total, survivors, failures = _federation(tamper).release(
        "query", {c: RecordDict() for c in ANSWERS}, 1, "t"
    )
    _check((total, survivors, failures), [0, 2])
    assert "another client's" in failures[1] and "another client's" in failures[3]


def test_a_broken_reveal_repeats_the_release_without_that_client():
    def tamper(step, c, reply):
        if step == "unmask" and c == 0:
            return RecordDict(
                {secure.KEY: ConfigRecord({"self": 5, "pair-ids": [], "pair-keys": []})}
            )
        return reply

    sums = _federation(tamper)
    total, survivors, failures = sums.release("query", {c: RecordDict() for c in ANSWERS}, 1, "t")
    # client 0 broke its reveal: the release is repeated without it, and the others answer
    # the repeat from their cache (their answer is computed once, not again)
    _check((total, survivors, failures), [1, 2, 3])
    assert "not a byte string" in failures[0]
    assert sorted(sums.computed) == [0, 1, 2, 3]
