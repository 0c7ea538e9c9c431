"""Access log lines, close reasons, JSON log fields, sessions lost with a worker, log levels.

Every test runs a real ``shardd serve`` and real client sockets on loopback,
and reads what the server logged (stderr, or ``--log-file``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    NO_ADDRESS_LIMITS,
    ROOT,
    ServerProcess,
    connect,
    read_to_eof,
    read_until,
    run_shardd,
    start_session,
    wait_until,
)

from shardd.logs import JsonFormatter, TextFormatter
from workers import access_log
from workers.server_base import BaseServer
from workers.telnet.telopt import DO, IAC, TTYPE, WONT

IAC_DO_TTYPE = bytes((IAC, DO, TTYPE))
WORKER = re.compile(r"shard (\d+): worker (\d+) serving")
OPEN = r"INFO +{pid} shardd\.access: session ({pid}\.\d+) open peer={peer} shard={shard}$"
CLOSE = (
    r"INFO +{pid} shardd\.access: session {session} close peer={peer} shard={shard} "
    r"duration=(\d+\.\d{{3}})s in=(\d+) out=(\d+) reason=\"([^\"]+)\"$"
)


def worker_pid(server: ServerProcess, shard: int = 0) -> int:
    match = server.wait_for_log(rf"shard {shard}: worker (\d+) serving", timeout=20)
    return int(match.group(1))


def start_session_and_peer(port: int) -> tuple[socket.socket, bytearray, str]:
    """A session with the shell started (``start_session``) and how the log names its peer."""
    sock, got = start_session(port)
    host, port_ = sock.getsockname()[:2]
    return sock, got, f"{host}:{port_}"


def opened(server: ServerProcess, pid: int, peer: str, shard: int = 0) -> str:
    pattern = OPEN.format(pid=pid, peer=re.escape(peer), shard=shard)
    return server.wait_for_log(pattern).group(1)


def closed(
    server: ServerProcess, pid: int, session: str, peer: str, shard: int = 0
) -> tuple[float, int, int, str]:
    pattern = CLOSE.format(pid=pid, session=re.escape(session), peer=re.escape(peer), shard=shard)
    match = server.wait_for_log(pattern, timeout=15)
    return float(match[1]), int(match[2]), int(match[3]), match[4]


# ------------------------------------------------------------ open and close


def test_a_session_has_an_open_and_a_close_line(serve: Any) -> None:
    server = serve("--workers", "1")
    pid = worker_pid(server)
    sock, got, peer = start_session_and_peer(server.port)
    with sock:
        session = opened(server, pid, peer)
        sent = 3  # IAC WONT TTYPE
        sock.sendall(b"quit\r\n")
        sent += 6
        read_to_eof(sock, got)
    duration, bytes_in, bytes_out, reason = closed(server, pid, session, peer)
    assert reason == "shell ended"
    assert bytes_in == sent
    assert bytes_out == len(got)  # everything the shell wrote reached the client
    assert 0.0 <= duration < 10.0
    # session names count up in a worker, and name it
    sock2, _got2, peer2 = start_session_and_peer(server.port)
    with sock2:
        second = opened(server, pid, peer2)
    assert second == f"{pid}.{int(session.split('.')[1]) + 1}"
    assert closed(server, pid, second, peer2)[3] == "client closed"


def test_a_client_that_hangs_up_or_resets(serve: Any) -> None:
    server = serve("--workers", "1")
    pid = worker_pid(server)
    # FIN in the middle of the shell
    sock, _got, peer = start_session_and_peer(server.port)
    session = opened(server, pid, peer)
    sock.close()
    assert closed(server, pid, session, peer)[3] == "client closed"
    # RST: SO_LINGER with a zero timeout makes close() reset the connection
    sock, _got, peer = start_session_and_peer(server.port)
    session = opened(server, pid, peer)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert closed(server, pid, session, peer)[3] == "connection error: ECONNRESET"


def test_idle_timeout_and_server_stop_reasons(serve: Any) -> None:
    server = serve("--workers", "1", "--idle-timeout", "1")
    pid = worker_pid(server)
    idle, _got, idle_peer = start_session_and_peer(server.port)
    with idle:
        session = opened(server, pid, idle_peer)
        _duration, _in, _out, reason = closed(server, pid, session, idle_peer)
        assert reason == "idle timeout"
    busy, _got, busy_peer = start_session_and_peer(server.port)
    with busy:
        session = opened(server, pid, busy_peer)
        assert server.stop() == 0
    assert closed(server, pid, session, busy_peer)[3] == "server stopping"


def test_drain_timeout_and_fast_stop_reasons(serve: Any) -> None:
    server = serve("--workers", "1", "--reload-timeout", "1")
    old = worker_pid(server)
    sock, _got, peer = start_session_and_peer(server.port)
    with sock:
        session = opened(server, old, peer)
        # a rolling restart: the old worker drains, and its session outlives the timeout
        assert run_shardd("reload", "--port", str(server.port)).returncode == 0
        assert closed(server, old, session, peer)[3] == "drain timeout"
    new = worker_pid_after(server, old)
    socks = [start_session_and_peer(server.port) for _ in range(2)]
    names = [opened(server, new, peer) for _sock, _got, peer in socks]
    try:
        assert server.stop(signal.SIGQUIT) == 0
    finally:
        for sock, _got, _peer in socks:
            sock.close()
    for name, (_sock, _got, peer) in zip(names, socks, strict=True):
        assert closed(server, new, name, peer)[3] == "server quitting"


def test_output_overflow_and_shell_failure_reasons(serve: Any) -> None:
    server = serve(
        "--workers", "1", "--shell", "tests.shells_for_tests:spew", "--max-output-buffer", "65536"
    )
    pid = worker_pid(server)
    with connect(server.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        read_until(sock, IAC_DO_TTYPE, bytearray())
        sock.sendall(bytes((IAC, WONT, TTYPE)))
        host, port = sock.getsockname()[:2]
        peer = f"{host}:{port}"
        session = opened(server, pid, peer)
        assert closed(server, pid, session, peer)[3] == "output overflow"
    server.stop()
    server = serve("--workers", "1", "--shell", "tests.shells_for_tests:raises_after_banner")
    pid = worker_pid(server)
    with connect(server.port) as sock:
        got = read_until(sock, IAC_DO_TTYPE, bytearray())
        sock.sendall(bytes((IAC, WONT, TTYPE)))
        read_until(sock, b"hello\r\n", got)
        host, port = sock.getsockname()[:2]
        peer = f"{host}:{port}"
        session = opened(server, pid, peer)
        sock.sendall(b"look\r\n")
        read_to_eof(sock, got)
    assert closed(server, pid, session, peer)[3] == "shell failed"
    assert re.search(r" ERROR +\d+ shardd\.session: .*shell failed: KeyError", server.log_text())


def test_access_log_off_writes_no_session_lines(serve: Any, tmp_path: Path) -> None:
    server = serve("--workers", "1", "--access-log", "off")
    pid = worker_pid(server)
    sock, got, _peer = start_session_and_peer(server.port)
    with sock:
        sock.sendall(b"quit\r\n")
        read_to_eof(sock, got)
    assert server.stop() == 0
    text = server.log_text()
    assert "shardd.access" not in text and "session " not in text, text
    assert f"shard 0: worker {pid} stopping" in text
    # the same from the config file; and a bad value is one line naming the key
    config = tmp_path / "shardd.toml"
    config.write_text('access-log = "off"\n')
    server = serve("--workers", "1", "--config", str(config))
    worker_pid(server)
    sock, got, _peer = start_session_and_peer(server.port)
    with sock:
        sock.sendall(b"quit\r\n")
        read_to_eof(sock, got)
    assert server.stop() == 0
    assert "shardd.access" not in server.log_text()
    result = subprocess.run(
        [sys.executable, "-m", "shardd", "serve", "--access-log", "maybe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "shardd: error: access-log: must be on or off, not 'maybe'"
    ], result.stderr


# ------------------------------------------------------------------- JSON


def test_json_lines_carry_the_session_fields(serve: Any) -> None:
    server = serve("--workers", "1", "--log-format", "json")

    def entries() -> list[dict[str, Any]]:
        # every line is one JSON object
        return [json.loads(line) for line in server.log_text().splitlines()]

    def event(name: str) -> list[dict[str, Any]]:
        return [e for e in entries() if e.get("event") == name]

    started = wait_until(lambda: event("worker_started"), 20, "a worker started")
    assert isinstance(started, list)
    pid = started[0]["worker"]
    assert started[0]["shard"] == 0 and started[0]["pid"] == server.proc.pid
    server.wait_for_log(rf"shard 0: worker {pid} serving")
    sock, got, peer = start_session_and_peer(server.port)
    with sock:
        sock.sendall(b"quit\r\n")
        read_to_eof(sock, got)
    host, port = peer.rsplit(":", 1)
    wait_until(lambda: event("session_close"), 10, "a close line")
    (open_entry,) = event("session_open")
    (close_entry,) = event("session_close")
    for entry in (open_entry, close_entry):
        assert entry["logger"] == "shardd.access" and entry["level"] == "info", entry
        assert entry["pid"] == pid
        assert entry["session"] == f"{pid}.1"
        assert entry["peer"] == host and entry["peer_port"] == int(port)
        assert entry["shard"] == 0
    assert close_entry["reason"] == "shell ended"
    assert close_entry["bytes_in"] == 9 and close_entry["bytes_out"] == len(got)
    assert isinstance(close_entry["duration"], float) and close_entry["duration"] >= 0
    assert close_entry["message"].startswith(f"session {pid}.1 close peer={peer} shard=0 ")
    # a worker's death: the sessions it took, as a field
    sock, got, peer = start_session_and_peer(server.port)
    with sock:
        wait_until(lambda: len(event("session_open")) == 2, 10, "the second session")
        os.kill(pid, signal.SIGKILL)
        died = wait_until(lambda: event("worker_died"), 10, "the worker's death")
    assert isinstance(died, list)
    (entry,) = died
    assert entry["level"] == "error" and entry["worker"] == pid and entry["shard"] == 0, entry
    assert entry["sessions_lost"] == 1 and entry["exit"] == "killed by signal 9 (SIGKILL)"
    assert server.stop() == 0
    entries()  # still every line JSON


def test_json_formatter_puts_extra_fields_at_the_top_level() -> None:
    record = logging.LogRecord("shardd.test", logging.WARNING, __file__, 1, "x %s", ("y",), None)
    record.__dict__.update({"peer": "192.0.2.1", "shard": 3, "pid": 1, "when": object()})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "x y" and entry["peer"] == "192.0.2.1" and entry["shard"] == 3
    assert entry["pid"] == os.getpid()  # an extra field does not replace the line's own
    assert entry["when"].startswith("<object")  # what JSON cannot hold is shown as text


def test_close_reasons_keep_the_first_and_name_errnos() -> None:
    assert access_log.connection_error(ConnectionResetError(104, "reset")) == (
        "connection error: ECONNRESET"
    )
    assert access_log.connection_error(RuntimeError("x")) == "connection error: RuntimeError"
    assert access_log.show_peer("::1", 5) == "[::1]:5"

    async def make() -> BaseServer:
        return BaseServer()

    protocol = asyncio.run(make())
    assert protocol.close_reason == ""
    protocol.record_close_reason(access_log.IDLE_TIMEOUT)
    protocol.record_close_reason(access_log.SERVER_STOPPING)
    assert protocol.close_reason == "idle timeout"
    with pytest.raises(AttributeError):
        protocol.close_reason = "x"  # type: ignore[misc]


# ------------------------------------------------------- a worker's death


def test_a_killed_worker_names_the_sessions_it_took(serve: Any) -> None:
    # reports only when status asks: the supervisor has heard of none of these
    # sessions, and still counts them
    server = serve("--workers", "1", "--stats-interval", "0")
    pid = worker_pid(server)
    socks = []
    try:
        for _ in range(3):
            sock, _got, peer = start_session_and_peer(server.port)
            socks.append(sock)
            opened(server, pid, peer)
        os.kill(pid, signal.SIGKILL)
        line = server.wait_for_log(rf"shard 0: worker {pid} killed by signal 9 .*$").string
        assert line.endswith("killed by signal 9 (SIGKILL); 3 sessions lost"), line
        assert re.search(rf" ERROR +{server.proc.pid} shardd\.supervisor: ", line)
    finally:
        for sock in socks:
            sock.close()
    # the replacement serves, and its sessions are named by its own pid
    new_pid = worker_pid_after(server, pid)
    sock, _got, peer = start_session_and_peer(server.port)
    with sock:
        assert opened(server, new_pid, peer) == f"{new_pid}.1"


def worker_pid_after(server: ServerProcess, old: int) -> int:
    def new() -> int | None:
        pids = [int(m[1]) for m in re.finditer(r"shard 0: worker (\d+) serving", server.log_text())]
        return next((p for p in pids if p != old), None)

    found = wait_until(new, 20, "a replacement worker")
    assert isinstance(found, int)
    return found


# ----------------------------------------------------------- what stands out


def test_errors_are_red_on_a_terminal() -> None:
    """On a tty, an ERROR line is red and INFO lines are plain; the level is in one column."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardd", "serve", "--workers", "1", "--port", "0",
         *NO_ADDRESS_LIMITS],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
    )  # fmt: skip
    os.close(slave)
    text = ""

    def read_until_match(pattern: str, timeout: float = 20.0) -> re.Match[str]:
        nonlocal text
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, text)):
            assert time.monotonic() < deadline, f"no {pattern!r} in {text!r}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                text += os.read(master, 65536).decode("utf-8", "replace")
        return match

    try:
        pid = int(read_until_match(r"shard 0: worker (\d+) serving")[1])
        os.kill(pid, signal.SIGKILL)
        read_until_match(rf"worker {pid} killed by signal 9[^\n]*\n")
    finally:
        proc.terminate()
        proc.wait(15)
        os.close(master)
    lines = text.replace("\r\n", "\n").splitlines()
    (died,) = [line for line in lines if f"worker {pid} killed" in line]
    assert died.startswith("\x1b[1;31m") and died.endswith("\x1b[0m"), repr(died)
    assert " ERROR    " in died
    serving = next(line for line in lines if f"worker {pid} serving" in line)
    assert "\x1b[" not in serving and " INFO     " in serving, repr(serving)
    # the level starts at the same column on every line
    assert died.index("ERROR") - len("\x1b[1;31m") == serving.index("INFO")


def test_text_formatter_without_a_terminal_has_no_colour() -> None:
    record = logging.LogRecord("shardd.x", logging.ERROR, __file__, 1, "boom", (), None)
    line = TextFormatter(colour=False).format(record)
    assert "\x1b" not in line and re.search(r" ERROR    \d+ shardd\.x: boom$", line)
