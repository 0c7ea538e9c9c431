"""Who gets served: limits per server and per address, idle sessions, file descriptors.

Real ``shardd serve`` subprocesses, real sockets from several loopback
addresses. The limits per address are counted over every worker (two here),
so a test opens more connections from one address than the limit twice over:
if each worker counted alone, more would get in.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from conftest import ServerProcess, read_until, run_shardd, wait_until

IAC_DO_TTYPE = bytes((255, 253, 24))
WONT_TTYPE = bytes((255, 252, 24))


def status(server: ServerProcess) -> dict[str, Any]:
    result = run_shardd("status", "--json", "--port", str(server.port))
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def attempt(port: int, source: str) -> tuple[socket.socket | None, bytes]:
    """Connect from ``source``: (the socket, b"") if served, (None, the line) if refused."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    first = bytearray()
    while len(first) < 3 or (first[0] != 0xFF and not first.endswith(b"\n")):
        chunk = sock.recv(4096)
        if not chunk:
            break
        first += chunk
    if first.startswith(IAC_DO_TTYPE):
        return sock, b""
    rest = bytearray(first)
    while chunk := sock.recv(4096):  # the refusal line, then the server closes
        rest += chunk
    sock.close()
    return None, bytes(rest)


def refused(server: ServerProcess) -> dict[str, int]:
    return dict(status(server)["supervisor"]["refused"])


def test_sessions_per_address_are_counted_over_every_worker(serve: Any) -> None:
    server = serve("--workers", "2", "--max-sessions-per-ip", "4",
                   "--max-connect-rate-per-ip", "0", address_limits=True)  # fmt: skip
    served, lines = [], []
    for _ in range(8):
        sock, line = attempt(server.port, "127.0.0.5")
        (served.append(sock) if sock else lines.append(line))
    assert len(served) == 4, f"{len(served)} served of 8, the limit is 4"
    assert set(lines) == {b"Too many sessions from your address; close one and try again.\r\n"}
    other, _ = attempt(server.port, "127.0.0.6")  # another address is not affected
    assert other is not None
    wait_until(lambda: refused(server).get("per_ip") == 4, 10, "4 refusals in status")
    # a session that ends makes room
    served.pop().close()
    again = wait_until(lambda: attempt(server.port, "127.0.0.5")[0], 10, "room after a close")
    for sock in [*served, other, again]:
        sock.close()  # type: ignore[union-attr]


def test_connections_per_second_from_an_address_are_limited(serve: Any) -> None:
    server = serve("--workers", "2", "--max-connect-rate-per-ip", "5",
                   "--max-sessions-per-ip", "0", address_limits=True)  # fmt: skip
    opened: list[socket.socket] = []
    line = b""
    for _ in range(200):  # bounded: far more than 5 a second
        sock, line = attempt(server.port, "127.0.0.7")
        if sock is None:
            break
        opened.append(sock)
    assert line == b"Too many connections from your address; wait a moment and try again.\r\n"
    assert refused(server).get("rate", 0) >= 1
    assert attempt(server.port, "127.0.0.8")[0] is not None  # another address gets in
    for sock in opened:
        sock.close()


def test_max_sessions_refuses_with_a_line_and_logs_it(serve: Any) -> None:
    server = serve("--workers", "2", "--max-sessions", "3")
    held = [attempt(server.port, "127.0.0.1")[0] for _ in range(3)]
    assert all(held)
    sock, line = attempt(server.port, "127.0.0.9")
    assert sock is None and line == b"The server is full; please try again later.\r\n"
    server.wait_for_log(r"at the limit: 3 sessions, the --max-sessions limit; refusing newcomers")
    assert refused(server) == {"full": 1}
    for each in held:
        each.close()  # type: ignore[union-attr]


def test_at_the_file_descriptor_limit_a_newcomer_still_gets_a_line(serve: Any) -> None:
    """Without a reserve the accept itself fails (EMFILE) and the client gets nothing."""
    server = serve("--workers", "1", nofile=128)
    held, line = [], b""
    for _ in range(200):
        sock, line = attempt(server.port, "127.0.0.1")
        if sock is None:
            break
        held.append(sock)
    assert line == b"The server is full; please try again later.\r\n", (len(held), line)
    assert 40 < len(held) < 128
    server.wait_for_log(r"at the limit: \d+ of 128 file descriptors in use; refusing newcomers")
    assert refused(server).get("fds", 0) >= 1
    held.pop().close()  # room again, after the server sees the close
    wait_until(lambda: attempt(server.port, "127.0.0.1")[0], 10, "a session after a close")
    for sock in held:
        sock.close()


def test_idle_session_gets_a_goodbye_and_is_closed(serve: Any) -> None:
    server = serve("--workers", "1", "--idle-timeout", "1")
    sock, _ = attempt(server.port, "127.0.0.1")
    assert sock is not None
    with sock:
        sock.sendall(WONT_TTYPE)
        got = read_until(sock, b"> ", bytearray())
        while chunk := sock.recv(4096):  # to EOF: the server closes it
            got += chunk
    assert got.endswith(b"\r\nYou have been idle too long. Goodbye.\r\n"), got
    worker = wait_until(lambda: status(server)["workers"][0]["closed_by_server"], 10)
    assert worker == {"idle_timeout": 1}


def test_default_limits_keep_a_flood_of_idle_connections_from_others(serve: Any) -> None:
    """Hundreds of connections that never negotiate, from three addresses, with the
    default limits: a well-behaved client from a fourth still gets its shell."""
    server = serve("--workers", "2", address_limits=True)
    flood, refusals = [], 0
    for n in range(300):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                        source_address=(f"127.0.1.{n % 3 + 1}", 0))  # fmt: skip
        flood.append(sock)
    player, _ = attempt(server.port, "127.0.2.1")
    assert player is not None
    with player:
        player.sendall(WONT_TTYPE)
        read_until(player, b"Welcome to shardd.", bytearray())
    st = status(server)
    held = sum(w["connections"] for w in st["workers"])
    assert held <= 3 * 20 + 1, held  # 20 a source address by default, and the player
    for sock in flood:
        try:
            refusals += b"Too many" in sock.recv(4096)
        except OSError:
            pass
        sock.close()
    assert refusals >= 300 - 3 * 20


def test_full_garbage_collections_follow_ended_sessions_not_new_ones(serve: Any) -> None:
    """Python ran a full collection every 25 % more long-lived objects: while
    sessions pile up, pauses that grow with them (135 ms at 18 000)."""
    server = serve("--workers", "1", "--shell", "echo")

    def full_collections() -> int:
        return int(status(server)["workers"][0]["gc"]["collections"][2])

    held = []
    for _ in range(1500):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        held.append(sock)
    for sock in held:
        read_until(sock, IAC_DO_TTYPE, bytearray())
    wait_until(lambda: sum(w["connections"] for w in status(server)["workers"]) == 1500, 20)
    assert full_collections() == 0
    for sock in held:
        sock.close()
    wait_until(lambda: full_collections() >= 1, 20, "a full collection after 1500 ended")
    assert status(server)["workers"][0]["gc"]["max_pause_ms"] > 0
