"""Secure aggregation over Flower messages (:mod:`fdrmfl_pipeline.core.secagg`).

A release is three exchanges with the clients it asks:

* ``query`` with ``secagg.stage = keys``: each client makes its release keys (kept in its own
  ``context.state``) and answers with its public key;
* the real message (``query`` for statistics and warm-start answers, ``train``, ``evaluate``)
  with ``secagg.stage = answer`` and every client's public key: the client computes its answer
  as usual and returns it masked, with the answer's layout (names and shapes, no values);
* ``query`` with ``secagg.stage = unmask``: each survivor reveals what :meth:`MaskingClient.reveal`
  allows; the ServerApp removes the masks and gets the sum.

The ServerApp never holds one client's answer: only masked vectors and the final sum. A client
that drops before answering is left out of the sum; one that drops while unmasking fails the
release, which is retried with fresh keys without it (a client answers a retried release from
its cache, so training is not repeated).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict

from fdrmfl_pipeline.core.secagg import (
    MIN_SURVIVORS,
    MOD,
    MaskingClient,
    ReleaseFailed,
    SecAggError,
    flatten,
    unflatten,
    unmask,
)
from fdrmfl_pipeline.flower.records import arrays_record, record_arrays

logger = logging.getLogger(__name__)
KEY = "secagg"
RETRIES = 3


def _to_array(masked: np.ndarray) -> np.ndarray:
    """Ints modulo 2**128 -> an (n, 2) uint64 array (low, high words)."""
    low = np.array([int(v) & 0xFFFFFFFFFFFFFFFF for v in masked], dtype=np.uint64)
    high = np.array([int(v) >> 64 for v in masked], dtype=np.uint64)
    return np.stack([low, high], axis=1) if len(masked) else np.zeros((0, 2), np.uint64)


def _from_array(arr: np.ndarray) -> np.ndarray:
    low = arr[:, 0].astype(object)
    high = arr[:, 1].astype(object)
    return (high * (1 << 64) + low) % MOD


# ---- client side -------------------------------------------------------------------------------


def stage(content: RecordDict) -> str | None:
    """``keys``, ``answer`` or ``unmask`` for a secure-aggregation message; None otherwise."""
    rec = content.config_records.get(KEY)
    return None if rec is None else str(rec["stage"])


def client_step(content: RecordDict, context: Context, client_id: int) -> RecordDict:
    """The keys and unmask stages on the client (its secrets stay in ``context.state``)."""
    rec = content.config_records[KEY]
    release = str(rec["release"])
    if rec["stage"] == "keys":
        mc = MaskingClient(client_id, release)
        _keep(context, mc)
        return RecordDict(
            {
                KEY: ConfigRecord({"public-key": mc.public_key()}),
                "info": MetricRecord({"client-id": client_id}),
            }
        )
    if rec["stage"] == "unmask":
        mc = _held(context, release)
        shown = mc.reveal(list(rec["survivors"]), list(rec["dropped"]))
        _keep(context, mc)  # revealed: a second unmask of this release is refused
        pairs = sorted(shown["pairs"])
        return RecordDict(
            {
                KEY: ConfigRecord(
                    {
                        "self": shown["self"],
                        "pair-ids": pairs,
                        "pair-keys": [shown["pairs"][j] for j in pairs],
                    }
                ),
                "info": MetricRecord({"client-id": client_id}),
            }
        )
    raise SecAggError(f"secure aggregation: unknown stage '{rec['stage']}'")


def masked_answer(
    content: RecordDict,
    context: Context,
    client_id: int,
    compute: Callable[[], dict[str, np.ndarray]],
) -> RecordDict:
    """The answer stage: ``compute()`` (or the cached answer of a retried release with the
    same tag) flattened, masked with the release's keys, and its layout."""
    rec = content.config_records[KEY]
    mc = _held(context, str(rec["release"]))
    tag = str(rec["tag"])
    cache = context.state.config_records.get("secagg-cache")
    if cache is not None and str(cache["tag"]) == tag:
        vec = record_arrays(context.state.array_records["secagg-cache-values"])["v"]
        layout = json.loads(str(cache["layout"]))
    else:
        vec, layout = flatten(compute())
        context.state.array_records["secagg-cache-values"] = arrays_record({"v": vec})
        context.state.config_records["secagg-cache"] = ConfigRecord(
            {"tag": tag, "layout": json.dumps(layout)}
        )
    peers = dict(zip((int(c) for c in rec["clients"]), rec["keys"], strict=True))
    masked = mc.masked(vec, peers)
    _keep(context, mc)
    return RecordDict(
        {
            "masked": arrays_record({"m": _to_array(masked)}),
            KEY: ConfigRecord({"layout": json.dumps(layout)}),
            "info": MetricRecord({"client-id": client_id}),
        }
    )


def _keep(context: Context, mc: MaskingClient) -> None:
    context.state.config_records[KEY] = ConfigRecord({"client": mc.to_bytes()})


def _held(context: Context, release: str) -> MaskingClient:
    rec = context.state.config_records.get(KEY)
    mc = None if rec is None else MaskingClient.from_bytes(bytes(rec["client"]))
    if mc is None or mc.release != release:
        raise SecAggError(
            f"secure aggregation: no keys for release {release} on this client (keys stage missed)"
        )
    return mc


# ---- server side -------------------------------------------------------------------------------


class SecureSums:
    """The ServerApp's side: ``exchange(kind, contents, round)`` is the runner's message
    exchange (replies and failures by client id)."""

    def __init__(self, exchange):
        self.exchange = exchange
        self.count = 0

    def release(
        self, kind: str, contents: dict[int, RecordDict], round_: int, tag: str
    ) -> tuple[dict[str, np.ndarray] | None, list[int], dict[int, str]]:
        """The sum over the answering clients of their answers to ``contents``; returns (sum
        or None when fewer than two answered, the clients in the sum, failures)."""
        clients = sorted(contents)
        failures: dict[int, str] = {}
        for _ in range(RETRIES):
            self.count += 1
            rid = f"{tag}#{self.count}"
            ask = {
                c: RecordDict({KEY: ConfigRecord({"stage": "keys", "release": rid})})
                for c in clients
            }
            replies, fail = self.exchange("query", ask, round_)
            failures.update(fail)
            keys = _unique_keys(_read_each(replies, _read_key, failures), failures)
            ids = sorted(keys)
            if len(ids) < MIN_SURVIVORS:
                return None, [], failures
            rec = ConfigRecord(
                {
                    "stage": "answer",
                    "release": rid,
                    "tag": tag,
                    "clients": ids,
                    "keys": [keys[c] for c in ids],
                }
            )
            msgs = {}
            for c in ids:
                content = RecordDict(dict(contents[c].items()))
                content[KEY] = rec
                msgs[c] = content
            replies, fail = self.exchange(kind, msgs, round_)
            failures.update(fail)
            answers = _read_each(replies, _read_masked, failures)
            layout = _agreed_layout(answers, failures)
            masked = {c: m for c, (m, lay) in answers.items() if lay == layout}
            survivors = sorted(masked)
            if len(survivors) < MIN_SURVIVORS:
                return None, survivors, failures
            dropped = [c for c in ids if c not in masked]
            ask = {
                c: RecordDict(
                    {
                        KEY: ConfigRecord(
                            {
                                "stage": "unmask",
                                "release": rid,
                                "survivors": survivors,
                                "dropped": dropped,
                            }
                        )
                    }
                )
                for c in survivors
            }
            replies, fail = self.exchange("query", ask, round_)
            fail = dict(fail)
            reveals = _read_each(replies, _read_reveal, fail)
            try:
                total = unmask(masked, reveals, ids)
            except ReleaseFailed as exc:
                failures.update(fail)
                logger.warning("%s; repeating the release without them", exc)
                clients = [c for c in survivors if c in reveals]
                continue
            return unflatten(total, layout), survivors, failures
        raise SecAggError(
            f"secure aggregation: release {tag} failed {RETRIES} times (clients kept dropping "
            "while unmasking)"
        )


# A reply is untrusted input: one a stage cannot read fails that client (named in the
# failures), exactly like a client that did not answer; it never stops the release.
_READ_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, SecAggError)


def _read_each(replies: dict, read: Callable, failures: dict[int, str]) -> dict:
    out = {}
    for c, r in sorted(replies.items()):
        try:
            out[c] = read(r.content)
        except _READ_ERRORS as exc:
            failures[c] = f"unreadable reply: {exc}"
            logger.warning("secure aggregation: client %s sent an unreadable reply: %s", c, exc)
    return out


def _read_key(content: RecordDict) -> bytes:
    key = content.config_records[KEY]["public-key"]
    if not isinstance(key, bytes) or len(key) != 32:
        raise ValueError("the public key is not 32 bytes (a raw X25519 key)")
    return bytes(key)


def _unique_keys(keys: dict[int, bytes], failures: dict[int, str]) -> dict[int, bytes]:
    """Clients announcing the same public key all fail: the others would refuse to mask."""
    seen = list(keys.values())
    out = {}
    for c, k in keys.items():
        if seen.count(k) > 1:
            failures[c] = "unreadable reply: its public key is another client's"
            logger.warning("secure aggregation: client %s announced a duplicated public key", c)
        else:
            out[c] = k
    return out


def _read_masked(content: RecordDict) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    arr = record_arrays(content.array_records["masked"])["m"]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype != np.uint64:
        raise ValueError(f"the masked answer is {arr.shape} {arr.dtype}, expected (n, 2) uint64")
    layout = [
        (str(k), tuple(int(d) for d in s))
        for k, s in json.loads(str(content.config_records[KEY]["layout"]))
    ]
    size = sum(int(np.prod(s)) if s else 1 for _, s in layout)
    if size != len(arr):
        raise ValueError(f"the masked answer has {len(arr)} values, its layout says {size}")
    return _from_array(arr), layout


def _agreed_layout(answers: dict, failures: dict[int, str]):
    """The layout most answers share (the first client's on a tie); the others fail."""
    if not answers:
        return None
    keys = [json.dumps(lay) for _, lay in answers.values()]
    best = max(keys, key=lambda k: (keys.count(k), -keys.index(k)))
    for c, (_, lay) in list(answers.items()):
        if json.dumps(lay) != best:
            failures[c] = f"unreadable reply: its layout {lay} differs from the others'"
            logger.warning("secure aggregation: client %s answered with another layout", c)
    return [(k, tuple(s)) for k, s in json.loads(best)]


def _read_reveal(content: RecordDict) -> dict:
    rec = content.config_records[KEY]
    keys = [rec["self"], *rec["pair-keys"]]
    if not all(isinstance(k, bytes) for k in keys):
        raise ValueError("a revealed key is not a byte string")
    return {
        "self": bytes(rec["self"]),
        "pairs": dict(
            zip(
                (int(j) for j in rec["pair-ids"]), (bytes(k) for k in rec["pair-keys"]), strict=True
            )
        ),
    }
