"""``shardd serve --workers 0``: its control socket, its reload in place (HUP and
``shardd reload``), its signals and its process title."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import psutil
from conftest import (
    CONNECTION_FIELDS,
    WORKER_FIELDS,
    ServerProcess,
    connect,
    read_until,
    run_shardd,
    wait_until,
)

from shardd.control import default_path

SHELL_V1 = """
VERSION = "v1"


async def shell(reader, writer):
    writer.write(f"{VERSION} ready\\r\\n")
    async for line in reader:
        writer.write(f"{VERSION} got {line.strip()}\\r\\n")
"""


def write_shell(directory: Path, version: str) -> None:
    (directory / "mygame.py").write_text(SHELL_V1.replace('"v1"', f'"{version}"'))
    # a new mtime and no stale byte code: the re-import reads the new source
    for cached in (directory / "__pycache__").glob("mygame*"):
        cached.unlink()


def session(port: int) -> tuple[socket.socket, bytearray]:
    sock = connect(port)
    got = read_until(sock, b"ready\r\n", bytearray())
    return sock, got


def status(server: ServerProcess, *extra: str) -> dict[str, Any]:
    result = run_shardd("status", "--port", str(server.port), "--json", *extra)
    assert result.returncode == 0, (result, server.log_text())
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def test_status_stop_and_workers_on_the_control_socket(serve: Any) -> None:
    server = serve("--shell", "echo", "--connect-maxwait", "0.2")
    server.wait_for_log(rf"control {default_path(server.port)}")
    sock = connect(server.port)
    try:
        reply = wait_until(lambda: (s := status(server))["connections"] and s, 10, "a session")
        assert isinstance(reply, dict)
        (worker,) = reply["workers"]
        assert worker.keys() >= WORKER_FIELDS, worker.keys()
        assert worker["pid"] == server.proc.pid and worker["shard"] == 0
        assert worker["state"] == "serving" and worker["connections"] == 1
        (conn,) = reply["connections"]
        assert conn.keys() >= CONNECTION_FIELDS, conn.keys()
        assert conn["worker_pid"] == server.proc.pid
        assert conn["peer"].startswith("127.0.0.1:")
        sup = reply["supervisor"]
        assert sup["single_process"] is True and sup["workers"] == 1
        assert sup["listen"] == [f"127.0.0.1:{server.port}"]
        assert sup["control"] == default_path(server.port)

        text = run_shardd("status", "--port", str(server.port))
        assert text.returncode == 0, text
        first = text.stdout.splitlines()[0]
        assert first.startswith(f"shardd single process {server.proc.pid}, "), first
        assert first.endswith(", 1 shard"), first
        assert "\n1 session\n" in text.stdout, text.stdout

        for delta in ("+1", "-1"):
            refused = run_shardd("workers", delta, "--port", str(server.port))
            assert refused.returncode == 1, refused
            assert refused.stdout == ""
            assert refused.stderr.startswith("shardd: a single process (--workers 0) has no shards")

        stopped = run_shardd("stop", "--port", str(server.port))
        assert stopped.returncode == 0, stopped
        assert stopped.stdout == "shardd: graceful stop begun\n"
        assert server.proc.wait(15) == 0
    finally:
        sock.close()
    assert not os.path.exists(default_path(server.port))
    assert "Traceback" not in server.log_text()


def test_hup_reloads_the_shell_and_settings_in_place(serve: Any, tmp_path: Path) -> None:
    write_shell(tmp_path, "v1")
    config = tmp_path / "shardd.toml"
    config.write_text("idle-timeout = 600\n")
    server = serve("--shell", "mygame:shell", "--config", str(config), cwd=tmp_path)
    old, got = session(server.port)
    assert b"v1 ready" in got
    try:
        write_shell(tmp_path, "v2")
        config.write_text("idle-timeout = 300\nbacklog = 100\n")
        server.proc.send_signal(signal.SIGHUP)
        line = server.wait_for_log(r"reload: settings re-read.*").group(0)
        assert "shell module mygame imported afresh" in line, line
        assert "changed: idle-timeout;" in line, line
        assert "1 kept until a restart" in line, line
        server.wait_for_log(
            r"WARNING .*reload: backlog changed 4096 -> 100 in .*shardd\.toml; "
            r"it needs a restart, keeping 4096"
        )

        new, got = session(server.port)
        assert b"v2 ready" in got
        new.sendall(b"hello\r\n")
        assert b"v2 got hello" in read_until(new, b"v2 got hello", got)
        new.close()
        old.sendall(b"again\r\n")  # the session opened before keeps its shell
        assert b"v1 got again" in read_until(old, b"v1 got again", bytearray())

        # the same through the control socket, from the file as it is now
        result = run_shardd("reload", "--port", str(server.port))
        assert result.returncode == 0, result
        assert result.stdout == "shardd: reloaded in place (see the log for what changed)\n"
    finally:
        old.close()
    assert server.proc.poll() is None
    assert "Traceback" not in server.log_text()


def test_a_failed_reload_is_an_error_line_and_the_old_settings_stay(
    serve: Any, tmp_path: Path
) -> None:
    write_shell(tmp_path, "v1")
    config = tmp_path / "shardd.toml"
    config.write_text("idle-timeout = 600\n")
    server = serve("--shell", "mygame:shell", "--config", str(config), cwd=tmp_path)

    config.write_text("idle-timeout = -5\n")  # a bad value
    server.proc.send_signal(signal.SIGHUP)
    line = server.wait_for_log(r"ERROR .*reload failed.*").group(0)
    assert "idle-timeout" in line and "the old settings stay" in line, line

    config.write_text("idle-timeout = 600\n")
    (tmp_path / "mygame.py").write_text("def shell(:\n")  # cannot be imported
    result = run_shardd("reload", "--port", str(server.port))
    assert result.returncode == 1, result
    (error,) = result.stderr.splitlines()
    assert error.startswith("shardd: reload failed, the old settings stay: shell: "), error
    assert "SyntaxError" in error, error
    failures = [x for x in server.log_text().splitlines() if "reload failed" in x]
    assert len(failures) == 2, "\n".join(failures)

    sock, got = session(server.port)  # still v1, from before the failures
    sock.close()
    assert b"v1 ready" in got
    assert server.proc.poll() is None
    assert "Traceback" not in server.log_text()


def test_unhandled_signals_are_logged_once_and_ignored(serve: Any) -> None:
    server = serve("--shell", "echo")
    for signum in (signal.SIGUSR2, signal.SIGUSR2, signal.SIGALRM, signal.SIGTTIN):
        server.proc.send_signal(signum)
    server.wait_for_log(r"SIGALRM ignored: shardd has no action for it")
    server.wait_for_log(r"SIGTTIN ignored: a single process \(--workers 0\) has no shards")
    # a request answered after every signal was delivered: the process lives on
    assert status(server)["workers"][0]["state"] == "serving"
    text = server.log_text()
    assert text.count("SIGUSR2 ignored: shardd has no action for it") == 1, text
    sock = connect(server.port)
    sock.close()
    assert server.stop() == 0


def test_process_title_names_the_role_and_address(serve: Any) -> None:
    server = serve("--shell", "echo")
    cmdline = psutil.Process(server.proc.pid).cmdline()
    assert cmdline[0] == f"shardd: single process 127.0.0.1:{server.port}", cmdline
