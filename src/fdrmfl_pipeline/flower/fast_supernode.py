"""``flower-supernode`` for the local deployment, with short waits between pulls.

Flower 1.42's SuperNode sleeps a fixed 3 s after every pull that found no message, and 0.5 s
while it waits for a reply to push: in a job of many short message exchanges (a warm start is
one exchange per query) that wait is most of the time. This entry point runs Flower's own
``flower-supernode`` with those sleeps capped at ``FDRMFL_SUPERNODE_POLL`` seconds (default
0.1). It changes only how often the SuperNode asks the SuperLink (on the loopback interface),
not what it does. The cap is applied only to the Flower version it was written against; any
other version runs unchanged, with a warning.

:func:`shorten_object_pulls` does the same for Flower's object pulls: a message's content
travels as separate objects, and a process that asks for one before it has arrived (a
ClientApp whose SuperNode is still fetching the message, a SuperNode or ServerApp pulling a
reply still being pushed) waits 1 s, doubling to 10 s, before it asks again. On the loopback
interface the object is there milliseconds later. ``FDRMFL_OBJECT_PULL_BACKOFF=<seconds>`` in a
process's environment starts that wait at the given value, capped at ten times it; the local
deployment sets 0.02 for every process it starts (SuperNodes, warm ClientApps, the ServerApp).

    python -m fdrmfl_pipeline.flower.fast_supernode --insecure --superlink 127.0.0.1:9092 ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import types
from collections.abc import Iterator

logger = logging.getLogger(__name__)
PATCHED_FOR = "1.42.0"


def cap_sleeps(module: types.ModuleType, cap: float) -> None:
    """Give ``module`` its own ``time`` whose ``sleep`` waits at most ``cap`` seconds."""
    fast = types.ModuleType("time")
    fast.__dict__.update(time.__dict__)
    fast.sleep = lambda seconds: time.sleep(min(float(seconds), cap))
    module.time = fast


def shorten_object_pulls(initial: float | None = None) -> bool:
    """Start Flower's object-pull retry wait at ``initial`` seconds (default: the
    ``FDRMFL_OBJECT_PULL_BACKOFF`` environment variable; nothing to do when neither is set),
    capped at ``10 * initial``. Returns whether it was applied (pinned Flower version only)."""
    if initial is None:
        value = os.environ.get("FDRMFL_OBJECT_PULL_BACKOFF")
        if not value:
            return False
        initial = float(value)
    import flwr
    from flwr.supercore.inflatable import inflatable_utils

    if flwr.__version__ != PATCHED_FOR:
        logger.warning(
            "flwr %s is not %s: object pulls keep Flower's own retry wait",
            flwr.__version__,
            PATCHED_FOR,
        )
        return False
    for fn in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        fn.__kwdefaults__.update(initial_backoff=initial, backoff_cap=10 * initial)
    return True


@contextlib.contextmanager
def object_pulls_within(seconds: float) -> Iterator[None]:
    """Inside the block, give up pulling one message's objects after ``seconds`` (Flower
    retries up to 500 times or 2 hours). A SuperNode killed halfway through uploading its reply
    then yields Flower's MESSAGE_UNAVAILABLE error for that reply by the caller's deadline,
    instead of holding the other clients' replies, pulled in the same call, behind it."""
    from flwr.supercore.inflatable import inflatable_utils

    defaults = inflatable_utils.pull_objects.__kwdefaults__
    if not defaults or "max_time" not in defaults:
        yield
        return
    before = defaults["max_time"]
    defaults["max_time"] = max(0.5, float(seconds))
    try:
        yield
    finally:
        defaults["max_time"] = before


def main() -> None:
    import flwr
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    cap = float(os.environ.get("FDRMFL_SUPERNODE_POLL", "0.1"))
    if flwr.__version__ == PATCHED_FOR and hasattr(start_client_internal, "time"):
        cap_sleeps(start_client_internal, cap)
        shorten_object_pulls()
        from fdrmfl_pipeline.flower.trace import wrap

        wrap(start_client_internal, "_pull_and_store_message", "sn-pull")
        wrap(start_client_internal, "_push_messages", "sn-push")
    else:
        logging.basicConfig()
        logger.warning(
            "flwr %s is not %s: the SuperNode keeps Flower's own pull interval",
            flwr.__version__,
            PATCHED_FOR,
        )
    sys.argv[0] = "flower-supernode"
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
