"""Timestamps of a Flower exchange, for the deployment benchmark's breakdown.

``FDRMFL_TRACE=<file>`` in the environment of the launcher makes every process of a local
deployment (ServerApp, warm servers, shims, ClientApps) append one JSON line per event:
``{"t": <unix seconds>, "pid": ..., "event": ..., **fields}``. Unset (the default), :func:`mark`
does nothing. Standard library only: the shim and the warm server use it before anything else.
"""

from __future__ import annotations

import json
import os
import time


def mark(event: str, **fields) -> None:
    """Append one timestamped event to ``$FDRMFL_TRACE`` (no-op when unset)."""
    path = os.environ.get("FDRMFL_TRACE")
    if not path:
        return
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "event": event, **fields}) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)


PHASES = (
    ("deploy-start", "partitioned", "ingestion and partitioning (SuperLink, zygote start)"),
    ("partitioned", "flwr-run", "SuperLink, SuperNodes and warm servers ready"),
    ("flwr-run", "connected", "ServerApp starts; clients connect and describe their data"),
    ("connected", "warm-start-done", "federated warm start"),
    ("warm-start-done", "rounds-done", "training rounds"),
    ("rounds-done", "saved", "result written, processes stopped, model saved"),
)
KINDS = {"describe": "query"}  # the ClientApp's query handler answers every query
STEPS = (
    ("push", "handler-start", "server push -> ClientApp handler starts"),
    ("handler-start", "handler-end", "handler (the client's own work)"),
    ("handler-end", "reply", "handler ends -> server has the reply"),
)


def summarize(path: str) -> dict:
    """Phases of a traced deployment (seconds) and, per message, the median seconds of each
    step (``STEPS``) and of the whole exchange (push -> last reply), by message kind."""
    import statistics

    with open(path, encoding="utf-8") as fh:
        events = sorted((json.loads(line) for line in fh if line.strip()), key=lambda e: e["t"])
    first = {}
    for e in events:
        first.setdefault(e["event"], e["t"])
    phases = [(label, first[a], first[b]) for a, b, label in PHASES if a in first and b in first]
    pushed, start, end, reply = {}, {}, {}, {}
    exchanges = []
    for e in events:
        if e["event"] == "push":
            exchanges.append((e["t"], e["messages"]))
            pushed.update(dict.fromkeys(e["messages"], e["t"]))
        elif e["event"] == "handler-start":
            start[e["message"]] = (e["t"], KINDS.get(e["kind"], e["kind"]))
        elif e["event"] == "handler-end":
            end[e["message"]] = e["t"]
        elif e["event"] == "reply":
            reply[e["message"]] = e["t"]
    times = {
        "push": pushed,
        "handler-start": {k: v[0] for k, v in start.items()},
        "handler-end": end,
        "reply": reply,
    }
    kinds: dict[str, dict[str, list[float]]] = {}
    for m, (_, kind) in start.items():
        row = kinds.setdefault(kind, {label: [] for *_, label in STEPS})
        for a, b, label in STEPS:
            if m in times[a] and m in times[b]:
                row[label].append(times[b][m] - times[a][m])
    walls = [
        max(reply[m] for m in ms) - t for t, ms in exchanges if ms and all(m in reply for m in ms)
    ]
    return {
        "phases": [(label, b - a) for label, a, b in phases],
        "steps": {
            kind: {label: statistics.median(v) for label, v in row.items() if v}
            | {"messages": len(next(iter(row.values())))}
            for kind, row in sorted(kinds.items())
        },
        "exchanges": len(walls),
        "exchange_median_s": statistics.median(walls) if walls else float("nan"),
        "exchanges_total_s": sum(walls),
    }


def wrap(module, name: str, event: str) -> None:
    """Mark ``event-start`` / ``event-end`` around ``module.name`` (when tracing is on)."""
    if not os.environ.get("FDRMFL_TRACE"):
        return
    fn = getattr(module, name)

    def traced(*args, **kwargs):
        mark(f"{event}-start")
        out = None
        try:
            out = fn(*args, **kwargs)
            return out
        finally:
            mark(f"{event}-end", got=out is not None)

    setattr(module, name, traced)
