"""Warm ClientApp processes for a Flower deployment: fork instead of start.

A SuperNode (``--isolation subprocess``, Flower's default) runs every message in a fresh
``flwr-clientapp`` process: a new interpreter that imports Flower, torch and this package before
it reads the message -- seconds per message, most of a deployment's time. This module keeps one
**warm server** per SuperNode that has imported all of that once, and puts a tiny
``flwr-clientapp`` **shim** first on the SuperNode's ``PATH``. The shim (standard library only)
hands its arguments to the warm server over a Unix socket; the server forks, and the child runs
Flower's own ``flwr-clientapp`` entry point with those arguments, so Flower's protocol (token,
task pull, FAB install, reply push, exit status) is unchanged. The shim exits with the child's
status. When the server cannot be reached the shim runs the real ``flwr-clientapp``.

    python -m fdrmfl_pipeline.flower.warm serve --socket /tmp/node0.sock
    python -m fdrmfl_pipeline.flower.warm shim --socket /tmp/node0.sock --dir /tmp/node0-bin
    PATH=/tmp/node0-bin:$PATH flower-supernode ...

Fork safety: the server imports modules only (no torch operation, no gRPC channel, no thread
pool) before it forks; each child sets its own torch threads (``TrainingSetup.setup_torch``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path

from fdrmfl_pipeline.flower.trace import mark

logger = logging.getLogger(__name__)

# what a ClientApp message needs, imported once in the server
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "torch",
    "flwr.app",
    "flwr.clientapp",
    "flwr.supernode.cli.flwr_clientapp",
    "flwr.supernode.runtime.run_clientapp",
    "fdrmfl_pipeline.flower.client_app",
    "fdrmfl_pipeline.core.client",
    "fdrmfl_pipeline.core.engine",
    "fdrmfl_pipeline.core.setup",
    "fdrmfl_pipeline.core.warmstart",
    "fdrmfl_pipeline.core.secagg",
    "httpx",  # the ClientApp's Runtime API client imports its transport on first use
    "httpcore",
    "h11",
)

SHIM = """#!{python} -IS
# flwr-clientapp shim (fdrmfl_pipeline.flower.warm): fork a warm ClientApp instead of starting one
import json, os, socket, sys, time
if os.environ.get("FDRMFL_TRACE"):
    with open(os.environ["FDRMFL_TRACE"], "a") as fh:
        fh.write(json.dumps({{"t": time.time(), "pid": os.getpid(), "event": "shim", "socket": {socket_path!r}}}) + "\\n")
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect({socket_path!r})
except OSError:
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
s.sendall(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(64)
    if not chunk:
        break
    data += chunk
sys.exit(int(data or b"1"))
"""


def write_shim(directory: Path, socket_path: Path, real: str) -> Path:
    """An executable ``flwr-clientapp`` in ``directory`` that forwards to the warm server at
    ``socket_path`` (falling back to ``real``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "flwr-clientapp"
    path.write_text(SHIM.format(python=sys.executable, socket_path=str(socket_path), real=real))
    path.chmod(0o755)
    return path


def _child(request: dict) -> int:
    """In the forked child: Flower's own ``flwr-clientapp`` with the shim's arguments."""
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["flwr-clientapp", *request["argv"]]
    mark("fork")
    try:
        flwr_clientapp()
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001  (report, never return into the server's loop)
        logger.exception("warm ClientApp failed")
        return 1
    finally:
        mark("child-exit")
    return 0


def _serve_one(conn: socket.socket) -> None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            conn.close()
            return
        data += chunk
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:  # the child: never returns into the server
        code = 1
        try:
            conn.close()
            code = _child(request)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def reap() -> None:
        _, status = os.waitpid(pid, 0)
        try:
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass
        conn.close()

    threading.Thread(target=reap, daemon=True).start()


def serve(socket_path: Path, job: str | None = None, data_path: str | None = None) -> None:
    """Import what a ClientApp needs (and, given the job and the SuperNode's client file, read
    and prepare its rows), then fork one child per shim request, forever."""
    import importlib

    from fdrmfl_pipeline.flower.fast_supernode import shorten_object_pulls

    for name in PRELOAD:
        importlib.import_module(name)
    shorten_object_pulls()  # when FDRMFL_OBJECT_PULL_BACKOFF is set: forked children inherit it
    if job and data_path:
        from fdrmfl_pipeline.flower.client_app import preload, warm_up

        raw = preload(job, data_path)
        try:
            warm_up(job, raw)
        except Exception:  # noqa: BLE001  (an optimisation: the ClientApps work without it)
            logger.warning("warm-up failed; ClientApps start cold", exc_info=True)
    socket_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    server.listen(64)
    logger.info("warm ClientApp server ready on %s (pid %d)", socket_path, os.getpid())
    while True:
        conn, _ = server.accept()
        _serve_one(conn)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=["serve", "shim"])
    ap.add_argument("--socket", type=Path, required=True)
    ap.add_argument("--dir", type=Path, help="shim: where to write flwr-clientapp")
    ap.add_argument("--job", help="serve: the job file, to read the client's rows up front")
    ap.add_argument("--data-path", help="serve: the SuperNode's client file (its data-path)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    if args.command == "serve":
        serve(args.socket, args.job, args.data_path)
    else:
        real = str(Path(sys.executable).parent / "flwr-clientapp")
        if args.dir is None:
            ap.error("shim needs --dir")
        write_shim(args.dir, args.socket, real)


if __name__ == "__main__":
    main()
