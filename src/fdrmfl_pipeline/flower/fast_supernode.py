"""``flower-supernode`` for the local deployment, with short waits between pulls.

Flower 1.42's SuperNode sleeps a fixed 3 s after every pull that found no message, and 0.5 s
while it waits for a reply to push: in a job of many short message exchanges (a warm start is
one exchange per query) that wait is most of the time. This entry point runs Flower's own
``flower-supernode`` with those sleeps capped at ``FDRMFL_SUPERNODE_POLL`` seconds (default
0.1). It changes only how often the SuperNode asks the SuperLink (on the loopback interface),
not what it does. The cap is applied only to the Flower version it was written against; any
other version runs unchanged, with a warning.

    python -m fdrmfl_pipeline.flower.fast_supernode --insecure --superlink 127.0.0.1:9092 ...
"""

from __future__ import annotations

import logging
import os
import sys
import time
import types

logger = logging.getLogger(__name__)
PATCHED_FOR = "1.42.0"


def cap_sleeps(module: types.ModuleType, cap: float) -> None:
    """Give ``module`` its own ``time`` whose ``sleep`` waits at most ``cap`` seconds."""
    fast = types.ModuleType("time")
    fast.__dict__.update(time.__dict__)
    fast.sleep = lambda seconds: time.sleep(min(float(seconds), cap))
    module.time = fast


def main() -> None:
    import flwr
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    cap = float(os.environ.get("FDRMFL_SUPERNODE_POLL", "0.1"))
    if flwr.__version__ == PATCHED_FOR and hasattr(start_client_internal, "time"):
        cap_sleeps(start_client_internal, cap)
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
