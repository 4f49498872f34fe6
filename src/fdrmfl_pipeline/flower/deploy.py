"""Run the federation on a real Flower deployment on this machine (127.0.0.1 only).

    python -m fdrmfl_pipeline.flower.deploy --clients 3 [--env paper_sim] [--params k=v,...]

1. runs ``ingestion`` and ``partitioning`` with ``partitioning.export_clients=true`` so each
   client's rows land in ``data/03_primary/clients/client_<id>.parquet``;
2. writes the job (model, loss and federation settings) to ``data/06_models/flower/<run>/job.json``;
3. starts one ``flower-superlink`` and one ``flower-supernode`` per client, each SuperNode given
   only its own file (``--node-config data-path=...``), then ``flwr run flower_app``;
4. saves the final global model and the training history through the Kedro catalog
   (``global_model``, ``training_history``), so ``kedro run --pipelines regression,evaluation,reporting``
   (after ``--pipeline training`` is skipped) continues from the result;
5. stops every process it started (by process group), also when something fails.

``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` is always set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger("fdrmfl_pipeline.flower.deploy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Processes:
    """Every process this launcher started, stopped by process group."""

    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
        fh = log.open("wb")
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.procs[name] = proc
        logger.info("started %s (pid %d): %s", name, proc.pid, " ".join(cmd))
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers and their children
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited early; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s; see {log}")


def _session(project: Path, env: str | None, params: dict):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    return KedroSession.create(project_path=project, env=env, runtime_params=params)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def federate_local(
    project: Path,
    clients: int,
    env: str | None = None,
    params: dict | None = None,
    round_timeout: float = 120.0,
    kill_client: tuple[int, int] | None = None,
    timeout: float = 1800.0,
    restart_client: tuple[int, int] | None = None,
    warm: bool = True,
) -> Path:
    """Run the whole deployment; returns the run directory (job, logs, result).
    ``warm``: each SuperNode forks its ClientApps from a process that imported torch and this
    package once (:mod:`fdrmfl_pipeline.flower.warm`) instead of starting one per message, and
    pulls its messages every 0.1 s instead of every 3 s
    (:mod:`fdrmfl_pipeline.flower.fast_supernode`).
    ``kill_client`` / ``restart_client`` (client, round): fault tests that kill that client's
    SuperNode after the round, and start it again (same data and secret, a new node id)."""
    import pyarrow.parquet as pq

    from fdrmfl_pipeline.core.bundle import make_bundle
    from fdrmfl_pipeline.core.clientdata import Scaler
    from fdrmfl_pipeline.core.modalities import from_arrow
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.engines import require_flower
    from fdrmfl_pipeline.flower.job import FlowerJob
    from fdrmfl_pipeline.flower.server_app import RESULT_JSON, load_result
    from fdrmfl_pipeline.params import TrainingParams

    require_flower("the Flower deployment")
    from fdrmfl_pipeline.flower.trace import mark

    mark("deploy-start")
    project = project.resolve()
    runtime = _merge(params or {}, {"partitioning": {"n_clients": clients, "export_clients": True}})
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
    run_dir = project / "data/06_models/flower" / stamp
    run_dir.mkdir(parents=True)
    bindir = str(Path(sys.executable).parent)
    env_vars = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_HOME": str(run_dir / "flwr_home"),
        # the SuperExec asks its SuperNode for new ClientApp tasks every 0.1 s instead of 1 s
        # (Flower's documented setting; the SuperNode's own 3 s pull interval is fixed)
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
        # no usage reports from the federation's processes unless the user asked for them
        "FLWR_TELEMETRY_ENABLED": os.environ.get("FLWR_TELEMETRY_ENABLED", "0"),
    }
    if warm:  # every process retries an object that has not arrived yet after 20 ms, not 1 s
        env_vars["FDRMFL_OBJECT_PULL_BACKOFF"] = "0.02"
    link_port = free_port()
    (run_dir / "flwr_home").mkdir()
    (run_dir / "flwr_home/config.toml").write_text(
        f'[superlink]\ndefault = "fdrmfl-local"\n\n[superlink.fdrmfl-local]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    warm_dir = Path(tempfile.mkdtemp(prefix="fdrmfl-warm-"))  # short: a socket path
    zygote_sock = warm_dir / "zygote.sock"
    link_env = env_vars
    if warm:  # the SuperLink's ServerApp is forked from the zygote (warm.py), like ClientApps
        from fdrmfl_pipeline.flower.warm import write_shim

        write_shim(
            warm_dir / "serverapp-bin", zygote_sock, f"{bindir}/flwr-serverapp", "flwr-serverapp"
        )
        link_env = {
            **env_vars,
            "PATH": f"{warm_dir / 'serverapp-bin'}{os.pathsep}{env_vars['PATH']}",
        }
    procs = Processes()
    try:
        # the SuperLink starts while this process runs ingestion and partitioning
        link = procs.start(
            "superlink",
            [
                f"{bindir}/flower-superlink",
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(link_port),
                "--disable-runtime-dependency-installation",
            ],
            run_dir / "superlink.log",
            link_env,
        )
        if warm:  # imports torch, Flower and this package once for every app process
            zygote = procs.start(
                "warm-zygote",
                [sys.executable, "-m", "fdrmfl_pipeline.flower.warm", "zygote"]
                + ["--socket", str(zygote_sock)],
                run_dir / "warm-zygote.log",
                env_vars,
            )
        with _session(project, env, runtime) as session:
            session.run(pipeline_names=["ingestion", "partitioning"])
        mark("partitioned")
        with _session(project, env, runtime) as session:
            context = session.load_context()
            all_params = context.params
        training, seed = (
            TrainingParams.model_validate(dict(all_params["training"]))
            if isinstance(all_params["training"], dict)
            else all_params["training"],
            all_params["seed"],
        )
        if training.strategy in ("local", "central"):
            raise ValueError(f"strategy '{training.strategy}' needs the inprocess engine")
        clients_dir = project / "data/03_primary/clients"
        data = from_arrow(pq.read_table(clients_dir / "client_0.parquet"))  # shapes and kinds
        setup = TrainingSetup.from_params(training, seed, data)
        job = FlowerJob.create(
            setup,
            clients_dir=str(clients_dir),
            expected_clients=clients,
            output_dir=str(run_dir),
            round_timeout=round_timeout,
            checkpoint_path=str(run_dir / "checkpoint.pt"),
        )
        job_path = job.save(run_dir / "job.json")
        _wait_port(link_port, 60, link, run_dir / "superlink.log")
        secret = {c: secrets.token_hex(32) for c in range(clients)}

        def warm_shim(log_name: str) -> tuple[Path, Path]:
            """The socket of the SuperNode's warm ClientApp server, and its shim directory."""
            from fdrmfl_pipeline.flower.warm import write_shim

            sock, shim_dir = warm_dir / f"{log_name}.sock", warm_dir / f"{log_name}-bin"
            write_shim(shim_dir, sock, f"{bindir}/flwr-clientapp")
            return sock, shim_dir

        def wait_socket(sock: Path, alive, what: str, log: Path) -> None:
            deadline = time.monotonic() + 120
            while not sock.exists():
                if not alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not start; see {log}")
                time.sleep(0.05)

        def wait_zygote() -> None:
            log = run_dir / "warm-zygote.log"
            wait_socket(zygote_sock, lambda: zygote.poll() is None, "the warm zygote", log)

        def spawn_warm(c: int, log_name: str, sock: Path) -> None:
            """Fork the SuperNode's warm server from the zygote; wait until it accepts."""
            from fdrmfl_pipeline.flower.warm import spawn_server

            wait_zygote()
            pid = spawn_server(
                zygote_sock, sock, str(job_path), str(clients_dir / f"client_{c}.parquet")
            )
            wait_socket(
                sock,
                lambda: zygote.poll() is None and Path(f"/proc/{pid}").exists(),
                f"the warm ClientApp server of {log_name}",
                run_dir / "warm-zygote.log",
            )

        def start_supernode(c: int, log_name: str, shim_dir: Path | None) -> int:
            """Start the SuperNode (its ClientApps forked by the server behind ``shim_dir``);
            returns its port."""
            node_env = env_vars
            if shim_dir is not None:
                node_env = {**env_vars, "PATH": f"{shim_dir}{os.pathsep}{env_vars['PATH']}"}
            port = free_port()
            procs.start(
                log_name,
                [
                    # warm: Flower's SuperNode with short pull waits (flower/fast_supernode.py)
                    *(
                        [sys.executable, "-m", "fdrmfl_pipeline.flower.fast_supernode"]
                        if warm
                        else [f"{bindir}/flower-supernode"]
                    ),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link_port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--node-config",
                    # dp-secret: seeds this node's local-DP noise; the server never learns it
                    f"data-path='{clients_dir / f'client_{c}.parquet'}' dp-secret='{secret[c]}'",
                ],
                run_dir / f"{log_name}.log",
                node_env,
            )
            return port

        def wait_supernode(log_name: str, port: int) -> None:
            _wait_port(port, 60, procs.procs[log_name], run_dir / f"{log_name}.log")

        def start_node(c: int, log_name: str) -> None:
            shim_dir = None
            if warm:
                sock, shim_dir = warm_shim(log_name)
                spawn_warm(c, log_name, sock)
            wait_supernode(log_name, start_supernode(c, log_name, shim_dir))

        mark("superlink-up")
        # the SuperNodes start while the zygote imports; a SuperNode gets no message before
        # ``flwr run``, which waits for every warm server
        names = [f"supernode-{c}" for c in range(clients)]
        shims = [warm_shim(n) if warm else (None, None) for n in names]
        ports = [start_supernode(c, names[c], shims[c][1]) for c in range(clients)]
        if warm:
            from fdrmfl_pipeline.flower.warm import warm_zygote

            wait_zygote()
            warm_zygote(zygote_sock, str(job_path))
            for c in range(clients):
                spawn_warm(c, names[c], shims[c][0])
        mark("flwr-run")
        run = procs.start(
            "flwr-run",
            [
                f"{bindir}/flwr",
                "run",
                str(project / "flower_app"),
                "fdrmfl-local",
                "--stream",
                "--run-config",
                f'job="{job_path}"',
            ],
            run_dir / "flwr-run.log",
            env_vars,
        )
        for name, port in zip(names, ports, strict=True):
            wait_supernode(name, port)
        mark("supernodes-up")
        result_path = run_dir / RESULT_JSON
        deadline = time.monotonic() + timeout
        killed = restarted = False
        progress = _Progress(run_dir / "flwr-run.log", training.federation.rounds)
        while not result_path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result after {timeout:.0f}s; logs in {run_dir}")
            progress.relay()
            done = _rounds_done(run_dir)
            if kill_client and not killed and done is not None:
                if done >= kill_client[1]:
                    logger.warning(
                        "killing supernode-%d after round %d (fault test)",
                        kill_client[0],
                        done,
                    )
                    procs.kill(f"supernode-{kill_client[0]}")
                    killed = True
            if restart_client and killed and not restarted and done is not None:
                if done >= restart_client[1]:
                    logger.warning(
                        "restarting supernode-%d after round %d (fault test)",
                        restart_client[0],
                        done,
                    )
                    start_node(restart_client[0], f"supernode-{restart_client[0]}-restarted")
                    restarted = True
            if run.poll() is not None and not result_path.exists():
                time.sleep(2)  # the result may land just after flwr returns
                if not result_path.exists():
                    raise RuntimeError(
                        "the Flower run ended without a result; "
                        f"see {run_dir}/flwr-run.log and superlink.log: {_tail(run_dir / 'flwr-run.log')}"
                    )
            # a pending fault lands right after its round's checkpoint, before the next
            # round's replies (a round of a small job takes about a second)
            pending = (kill_client and not killed) or (restart_client and not restarted)
            time.sleep(0.05 if pending else 0.5)
    finally:
        procs.stop_all()
        shutil.rmtree(warm_dir, ignore_errors=True)
        left = procs.alive()
        if left:
            logger.error("processes still alive after cleanup: %s", left)
    mark("stopped")
    progress.relay()
    res, global_state = load_result(run_dir)
    scalers = {int(c): Scaler.from_dict(d) for c, d in res["scalers"].items()}
    meta = {
        "engine": "flower-deployment",
        "strategy": training.strategy,
        "seed": seed,
        "best_round": res["best_round"],
        "rounds_run": res["rounds_run"],
        "run_dir": str(run_dir),
    }
    import pandas as pd

    with _session(project, env, runtime) as session:
        catalog = session.load_context().catalog
        catalog.save("global_model", make_bundle(setup.model, global_state, scalers, {}, meta))
        catalog.save(
            "training_history", pd.DataFrame(res["history"]).assign(strategy=training.strategy)
        )
    (run_dir / "summary.json").write_text(json.dumps(meta, indent=2))
    mark("saved")
    logger.info("Flower deployment finished: %s", run_dir)
    return run_dir


class _Progress:
    """Relays the ServerApp's progress (warm start, rounds, clients that did not answer) from
    the streamed ``flwr run`` log to this console, with an ETA from the rounds so far."""

    KEYS = ("warm start", "round ", "did not answer", "Early stopping")

    def __init__(self, log: Path, rounds: int):
        self.log, self.rounds, self.offset, self.t0 = log, rounds, 0, time.monotonic()

    def relay(self) -> None:
        try:
            with self.log.open("r", errors="replace") as f:
                f.seek(self.offset)
                text = f.read()
                self.offset = f.tell()
        except OSError:
            return
        for line in text.splitlines():
            if not any(k in line for k in self.KEYS):
                continue
            msg = line.strip()
            m = re.search(r"round (\d+)/(\d+)", msg)
            if m and int(m.group(1)) > 0:
                done, total = int(m.group(1)), int(m.group(2))
                eta = (time.monotonic() - self.t0) / done * (total - done)
                msg += f" [ETA {eta:.0f}s]"
            logger.info("server: %s", msg[-300:])


def _rounds_done(run_dir: Path) -> int | None:
    """The last round the server checkpointed (its JSON sidecar; no pickle is read)."""
    from fdrmfl_pipeline.core.engine import checkpoint_round

    return checkpoint_round(run_dir / "checkpoint.pt")


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> None:
    from fdrmfl_pipeline.best_params import parse_params_string

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--env", default=None)
    ap.add_argument(
        "--params", default=None, help="Kedro runtime params, e.g. training.federation.rounds=3"
    )
    ap.add_argument("--project", type=Path, default=Path.cwd())
    ap.add_argument("--round-timeout", type=float, default=120.0)
    ap.add_argument(
        "--kill-client", default=None, help=argparse.SUPPRESS
    )  # "<client>:<after round>"
    ap.add_argument(
        "--restart-client", default=None, help=argparse.SUPPRESS
    )  # "<client>:<after round>", after --kill-client
    ap.add_argument(
        "--cold",
        action="store_true",
        help="start a fresh ClientApp process per message (Flower's default) instead of forking "
        "warm ones",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    kill = tuple(int(v) for v in args.kill_client.split(":")) if args.kill_client else None
    restart = tuple(int(v) for v in args.restart_client.split(":")) if args.restart_client else None
    federate_local(
        args.project,
        args.clients,
        args.env,
        parse_params_string(args.params),
        args.round_timeout,
        kill,
        restart_client=restart,
        warm=not args.cold,
    )


if __name__ == "__main__":
    main()
