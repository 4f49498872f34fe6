"""The warm ClientApp shim: it hands its arguments to the warm server and exits with the
child's status, and runs the real command when no server listens."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

from fdrmfl_pipeline.flower.warm import write_shim


def test_without_a_server_the_shim_runs_the_real_command(tmp_path):
    shim = write_shim(tmp_path / "bin", tmp_path / "absent.sock", "/bin/echo")
    out = subprocess.run([str(shim), "--token", "abc"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "--token abc"


def test_the_shim_forwards_arguments_and_returns_the_servers_status(tmp_path):
    sock_path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    got = {}

    def answer():
        conn, _ = server.accept()
        data = b""
        while not data.endswith(b"\n"):
            data += conn.recv(65536)
        got.update(json.loads(data))
        conn.sendall(b"7\n")
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    shim = write_shim(tmp_path / "bin", sock_path, "/bin/false")
    proc = subprocess.run(
        [str(shim), "--runtime-api-address", "127.0.0.1:1", "--token", "t0"],
        env={"FLWR_HOME": "/x", "PATH": "/usr/bin:/bin", "FDRMFL_TRACE": str(tmp_path / "t")},
        cwd=tmp_path,
        check=False,
    )
    t.join(timeout=10)
    server.close()
    assert proc.returncode == 7
    assert got["argv"] == ["--runtime-api-address", "127.0.0.1:1", "--token", "t0"]
    assert got["env"]["FLWR_HOME"] == "/x" and got["cwd"] == str(tmp_path)
    (event,) = [json.loads(line) for line in (tmp_path / "t").read_text().splitlines()]
    assert event["event"] == "shim" and event["socket"] == str(sock_path)  # traced when asked


def test_the_fast_supernode_caps_only_its_modules_sleeps():
    import time
    import types

    from fdrmfl_pipeline.flower.fast_supernode import cap_sleeps

    mod = types.ModuleType("m")
    mod.time = time
    cap_sleeps(mod, 0.01)
    t0 = time.perf_counter()
    mod.time.sleep(3)
    assert time.perf_counter() - t0 < 1.0
    assert time.sleep is not mod.time.sleep and mod.time.time is time.time
