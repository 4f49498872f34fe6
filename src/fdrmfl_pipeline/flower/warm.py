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

With several SuperNodes (and the SuperLink) on one machine, a **zygote** (``warm zygote``)
imports once and forks each SuperNode's warm server (``spawn_server``: it reads only its own
client file) and the ServerApp (a ``flwr-serverapp`` shim); ``deploy.py`` does this. A warm
server also learns the job's scaler from its first ClientApp (a pipe) and prepares its rows for
it once, so later ClientApps find them ready.

Fork safety: the server imports modules only (no torch operation, no gRPC channel, no thread
pool) before it forks; each child sets its own torch threads (``TrainingSetup.setup_torch``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
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
    "fdrmfl_pipeline.flower.app",  # the module Flower loads the ClientApp from (and the ServerApp)
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
# {entry} shim (fdrmfl_pipeline.flower.warm): fork a warm app process instead of starting one
import json, os, socket, sys, time
if os.environ.get("FDRMFL_TRACE"):
    with open(os.environ["FDRMFL_TRACE"], "a") as fh:
        fh.write(json.dumps({{"t": time.time(), "pid": os.getpid(), "event": "shim", "socket": {socket_path!r}}}) + "\\n")
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect({socket_path!r})
except OSError:
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
s.sendall(json.dumps({{"entry": {entry!r}, "argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(64)
    if not chunk:
        break
    data += chunk
sys.exit(int(data or b"1"))
"""


ENTRIES = ("flwr-clientapp", "flwr-serverapp")


def write_shim(
    directory: Path, socket_path: Path, real: str, entry: str = "flwr-clientapp"
) -> Path:
    """An executable ``entry`` (``flwr-clientapp`` or ``flwr-serverapp``) in ``directory`` that
    forwards to the warm server at ``socket_path`` (falling back to ``real``)."""
    if entry not in ENTRIES:
        raise ValueError(f"no warm shim for {entry!r}; expected one of {ENTRIES}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / entry
    path.write_text(
        SHIM.format(python=sys.executable, socket_path=str(socket_path), real=real, entry=entry)
    )
    path.chmod(0o755)
    return path


def _entry(name: str):
    """Flower's own entry point behind a shim's command."""
    if name == "flwr-serverapp":
        from flwr.superlink.cli import flwr_serverapp

        return flwr_serverapp
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    return flwr_clientapp


def _child(request: dict) -> int:
    """In the forked child: Flower's own ``flwr-clientapp`` (or ``flwr-serverapp``) with the
    shim's arguments."""
    name = request.get("entry", "flwr-clientapp")
    run = _entry(name)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [name, *request["argv"]]
    root = logging.getLogger()  # logging as a fresh process has it (the app sets its own up)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    mark("fork", entry=name)
    try:
        run()
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001  (report, never return into the server's loop)
        logger.exception("warm %s failed", name)
        return 1
    finally:
        mark("child-exit")
    return 0


# scalers the ClientApps of this (per-SuperNode) server met, packed, to prepare before the next fork
_LEARNED: queue.SimpleQueue = queue.SimpleQueue()


def _learn(node: tuple[str, str] | None) -> None:
    """Prepare the SuperNode's rows for every scaler a finished ClientApp reported (in this
    process, before the next fork, so every later ClientApp inherits them)."""
    if node is None:
        return
    from fdrmfl_pipeline.flower.client_app import remember_scaler

    while not _LEARNED.empty():
        try:
            remember_scaler(*node, _LEARNED.get())
        except Exception:  # noqa: BLE001  (an optimisation: the ClientApps prepare it anyway)
            logger.warning("could not prepare the rows for a reported scaler", exc_info=True)


def _report_to(fd: int):
    """In a forked ClientApp: send each scaler it prepares rows for to its server."""

    def report(packed: bytes) -> None:
        os.write(fd, len(packed).to_bytes(8, "little"))
        view = memoryview(packed)
        while view:
            view = view[os.write(fd, view) :]

    return report


def _read_reports(fd: int) -> None:
    """In the server: the scalers a ClientApp reported, until it exits."""
    with os.fdopen(fd, "rb") as pipe:
        while len(head := pipe.read(8)) == 8:
            packed = pipe.read(int.from_bytes(head, "little"))
            _LEARNED.put(packed)


def _serve_one(
    conn: socket.socket, listener: socket.socket, node: tuple[str, str] | None = None
) -> None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            conn.close()
            return
        data += chunk
    request = json.loads(data)
    if node is not None and ("spawn" in request or "warm" in request):
        conn.close()  # a SuperNode's warm server forks its ClientApps only
        return
    if "spawn" in request:
        _spawn(conn, request["spawn"], listener)
        return
    if "warm" in request:  # a zygote learns the job: warm torch up on rows of its shapes
        _warm_up(request["warm"])
        conn.sendall(b"0\n")
        conn.close()
        return
    _learn(node)
    learn = node is not None and request.get("entry", "flwr-clientapp") == "flwr-clientapp"
    r, w = os.pipe() if learn else (-1, -1)
    pid = os.fork()
    if pid == 0:  # the child: never returns into the server
        code = 1
        try:
            conn.close()
            listener.close()
            if learn:
                os.close(r)
                from fdrmfl_pipeline.flower import client_app

                client_app._ON_NEW_SCALER = _report_to(w)
            code = _child(request)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    if learn:
        os.close(w)

    def reap() -> None:
        if learn:
            _read_reports(r)
        _, status = os.waitpid(pid, 0)
        try:
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass
        conn.close()

    threading.Thread(target=reap, daemon=True).start()


def _spawn(conn: socket.socket, spec: dict, listener: socket.socket) -> None:
    """A zygote's answer to ``{"spawn": {"socket": ..., "job": ..., "data_path": ...}}``: fork
    a warm server for one SuperNode (it reads that SuperNode's client file only, in its own
    process) and answer with its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            conn.close()
            listener.close()
            _listen(Path(spec["socket"]), spec.get("job"), spec.get("data_path"), warmed=True)
        except BaseException:  # noqa: BLE001
            logger.exception("warm server %s failed", spec.get("socket"))
        finally:
            os._exit(code)
    try:
        conn.sendall(f"{pid}\n".encode())
    except OSError:
        pass
    conn.close()
    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()


def _ask(zygote: Path, request: dict) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(zygote))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk:
                raise RuntimeError(f"the warm zygote at {zygote} did not answer {request}")
            data += chunk
    return int(data)


def spawn_server(zygote: Path, socket_path: Path, job: str, data_path: str) -> int:
    """Ask the zygote at ``zygote`` to fork the warm server of one SuperNode; its pid."""
    spec = {"socket": str(socket_path), "job": job, "data_path": data_path}
    return _ask(zygote, {"spawn": spec})


def warm_zygote(zygote: Path, job: str) -> None:
    """Have the zygote at ``zygote`` warm torch up for ``job`` before it forks anything."""
    _ask(zygote, {"warm": job})


def _warm_up(job: str, raw=None) -> None:
    """``client_app.warm_up`` (on the client's rows, or synthetic ones); a failure only logs."""
    from fdrmfl_pipeline.flower.client_app import warm_up

    try:
        warm_up(job, raw)
    except Exception:  # noqa: BLE001  (an optimisation: the apps work without it)
        logger.warning("warm-up failed; apps start cold", exc_info=True)


# and what a ServerApp needs besides (a zygote forks those too)
SERVER_PRELOAD = ("flwr.superlink.cli", "flwr.superlink.runtime.run_serverapp", "flwr.serverapp")


def _import_all(extra: tuple[str, ...] = ()) -> None:
    import importlib

    from fdrmfl_pipeline.flower.fast_supernode import shorten_object_pulls

    for name in (*PRELOAD, *extra):
        importlib.import_module(name)
    shorten_object_pulls()  # when FDRMFL_OBJECT_PULL_BACKOFF is set: forked children inherit it
    from flwr.supernode.runtime import run_clientapp as rc

    from fdrmfl_pipeline.flower.trace import wrap

    for fn, event in (  # inside Flower's ClientApp runtime, when FDRMFL_TRACE is set
        ("pull_task_input", "ca-pull"),
        ("install_from_fab", "ca-fab"),
        ("get_load_client_app_fn", "ca-loadfn"),
        ("push_task_output", "ca-push"),
        ("flwr_exit", "ca-exit"),
    ):
        wrap(rc, fn, event)


def zygote(socket_path: Path, job: str | None = None) -> None:
    """Import what the apps need once and, given the job (now or by ``warm_zygote``), warm
    torch up on synthetic rows of its shapes (no client's data); then fork on request the warm
    server of a SuperNode (``spawn_server``) or a ServerApp (a ``flwr-serverapp`` shim). On one
    machine this pays the imports and torch's set-up once, not once per SuperNode and run."""
    _import_all(SERVER_PRELOAD)
    if job:
        _warm_up(job)
    _listen(socket_path, warmed=True)


def serve(socket_path: Path, job: str | None = None, data_path: str | None = None) -> None:
    """Import what a ClientApp needs (and, given the job and the SuperNode's client file, read
    and prepare its rows), then fork one child per shim request, forever."""
    _import_all()
    _listen(socket_path, job, data_path)


def _listen(
    socket_path: Path, job: str | None = None, data_path: str | None = None, warmed: bool = False
) -> None:
    """Read the SuperNode's rows (given its file), warm torch up on them unless ``warmed``,
    then fork one child per request on ``socket_path``, forever."""
    if job and data_path:
        from fdrmfl_pipeline.flower.client_app import preload

        raw = preload(job, data_path)
        if not warmed:
            _warm_up(job, raw)
    tmp = socket_path.with_name(socket_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp))
    server.listen(64)
    os.replace(tmp, socket_path)  # the path appears only once it accepts
    logger.info("warm server ready on %s (pid %d)", socket_path, os.getpid())
    node = (job, data_path) if job and data_path else None
    while True:
        conn, _ = server.accept()
        _serve_one(conn, server, node)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=["serve", "zygote", "shim"])
    ap.add_argument("--socket", type=Path, required=True)
    ap.add_argument("--dir", type=Path, help="shim: where to write flwr-clientapp")
    ap.add_argument("--job", help="serve: the job file, to read the client's rows up front")
    ap.add_argument("--data-path", help="serve: the SuperNode's client file (its data-path)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    if args.command == "serve":
        serve(args.socket, args.job, args.data_path)
    elif args.command == "zygote":
        zygote(args.socket, args.job)
    else:
        real = str(Path(sys.executable).parent / "flwr-clientapp")
        if args.dir is None:
            ap.error("shim needs --dir")
        write_shim(args.dir, args.socket, real)


if __name__ == "__main__":
    main()
