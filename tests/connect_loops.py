"""Connection attempts against a running server, one at a time or looping in threads.

An attempt connects and reads the first bytes of a session; tests that roll or
kill workers run loops of them and check that none failed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from conftest import IAC_DO_TTYPE

HOST = "127.0.0.1"
#: what a failed attempt raises (refused, reset, timed out, EOF; wrong first bytes)
ATTEMPT_ERRORS = (OSError, ValueError)


def open_attempt(port: int, timeout: float = 5.0) -> socket.socket:
    """Connect and receive the first bytes the server sends; the caller closes.

    Raises OSError (refused, reset, timed out, EOF) or ValueError (wrong bytes).
    """
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        deadline = time.monotonic() + timeout
        data = b""
        while len(data) < len(IAC_DO_TTYPE):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(len(IAC_DO_TTYPE) - len(data))
            if not chunk:
                raise ConnectionError("connection closed before the first bytes")
            data += chunk
        if data != IAC_DO_TTYPE:
            raise ValueError(f"first bytes {data!r}, expected {IAC_DO_TTYPE!r}")
    except BaseException:
        sock.close()
        raise
    return sock


def attempt(port: int) -> None:
    open_attempt(port).close()


class AttemptLoop(threading.Thread):
    """Sequential attempts (connect, first bytes, close) until stopped or bounded."""

    def __init__(self, port: int, limit: int = 20_000) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.limit = limit
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set() and self.ok + len(self.failures) < self.limit:
            try:
                attempt(self.port)
            except ATTEMPT_ERRORS as exc:
                self.failures.append(repr(exc))
            else:
                self.ok += 1

    def finish(self) -> None:
        self.stopping.set()
        self.join(10)
        assert not self.is_alive(), "attempt loop did not stop"


@contextlib.contextmanager
def attempt_loops(port: int, count: int) -> Iterator[list[AttemptLoop]]:
    """``count`` loops running for the ``with`` block, stopped and joined when it ends."""
    loops = [AttemptLoop(port) for _ in range(count)]
    for loop in loops:
        loop.start()
    try:
        yield loops
    finally:
        for loop in loops:
            loop.finish()
