"""Hostile and impatient clients against a real ``shardd serve``: nothing they do crashes it.

Every test starts a real server subprocess and attacks it over loopback with
plain sockets, as a probe on the internet or a player closing a terminal
mid-output would. What each one checks: the worker that served the attack is
still the same process, still serving, and other sessions are unharmed.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from typing import Any

from conftest import ServerProcess, connect, read_until, run_shardd, wait_until

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
TTYPE, NAWS, NEW_ENVIRON, CHARSET, BINARY, TM, AYT = 24, 31, 39, 42, 0, 6, 246
IAC_DO_TTYPE = bytes((IAC, DO, TTYPE))
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def status(server: ServerProcess) -> dict[str, Any]:
    result = run_shardd("status", "--json", "--port", str(server.port))
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def workers(server: ServerProcess) -> dict[int, dict[str, Any]]:
    return {w["shard"]: w for w in status(server)["workers"] if w["state"] == "serving"}


def serving_workers(server: ServerProcess, count: int) -> dict[int, dict[str, Any]]:
    found = wait_until(lambda: len(workers(server)) == count and workers(server), 20,
                       f"{count} serving workers")
    assert isinstance(found, dict)
    return found


def start_session(port: int) -> socket.socket:
    """A client past negotiation: it refuses TTYPE, so the shell starts at once."""
    sock = connect(port)
    read_until(sock, IAC_DO_TTYPE, bytearray())
    sock.sendall(bytes((IAC, WONT, TTYPE)))
    return sock


def fill_until_blocked(sock: socket.socket, chunk: bytes, limit: float = 30.0) -> int:
    """Send ``chunk`` without reading until the socket stays unwritable for 1 s: every
    buffer on the way is full, so the server holds output it cannot send."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], 1.0)
        if not writable:
            return sent
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            pass
    raise AssertionError(f"the server kept reading for {limit}s ({sent} bytes)")


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    sock.close()


def assert_unharmed(server: ServerProcess, before: dict[int, dict[str, Any]]) -> None:
    """The same worker processes still serve every shard, and a new client gets in."""
    after = serving_workers(server, len(before))
    assert {s: w["pid"] for s, w in after.items()} == {s: w["pid"] for s, w in before.items()}
    assert all(w["restarts"] == 0 for w in after.values()), after
    with connect(server.port) as sock:
        read_until(sock, IAC_DO_TTYPE, bytearray())
    assert "killed by signal" not in server.log_text()
    assert "Traceback" not in server.log_text()


# ----------------------------------------------------------- hang-ups


def test_hang_up_with_output_queued_does_not_kill_the_worker(serve: Any) -> None:
    """A client that floods the echo shell, never reads, then resets (SIGPIPE, found)."""
    server = serve("--workers", "1", "--shell", "echo", "--encoding", "false")
    before = serving_workers(server, 1)
    for _ in range(5):
        sock = start_session(server.port)
        fill_until_blocked(sock, b"y" * 65536)
        reset(sock)
    assert_unharmed(server, before)
