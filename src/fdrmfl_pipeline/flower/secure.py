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
        vec = record_arrays(context.state.array_records["secagg-cache"])["v"]
        layout = json.loads(str(cache["layout"]))
    else:
        vec, layout = flatten(compute())
        context.state.array_records["secagg-cache"] = arrays_record({"v": vec})
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
            keys = {
                c: bytes(r.content.config_records[KEY]["public-key"]) for c, r in replies.items()
            }
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
            masked = {
                c: _from_array(record_arrays(r.content.array_records["masked"])["m"])
                for c, r in replies.items()
            }
            layouts = {str(r.content.config_records[KEY]["layout"]) for r in replies.values()}
            survivors = sorted(masked)
            if len(survivors) < MIN_SURVIVORS:
                return None, survivors, failures
            if len(layouts) != 1:
                raise SecAggError(
                    f"secure aggregation: clients answered with different layouts {layouts}"
                )
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
            reveals = {
                c: {
                    "self": bytes(r.content.config_records[KEY]["self"]),
                    "pairs": dict(
                        zip(
                            (int(j) for j in r.content.config_records[KEY]["pair-ids"]),
                            (bytes(k) for k in r.content.config_records[KEY]["pair-keys"]),
                            strict=True,
                        )
                    ),
                }
                for c, r in replies.items()
            }
            try:
                total = unmask(masked, reveals, ids)
            except ReleaseFailed as exc:
                failures.update(fail)
                logger.warning("%s; repeating the release without them", exc)
                clients = [c for c in survivors if c in reveals]
                continue
            layout = [(k, tuple(s)) for k, s in json.loads(layouts.pop())]
            return unflatten(total, layout), survivors, failures
        raise SecAggError(
            f"secure aggregation: release {tag} failed {RETRIES} times (clients kept dropping "
            "while unmasking)"
        )
