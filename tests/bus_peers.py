"""A client of ``tests.shells_for_tests:bus``: sends its commands, reads its lines.

A plain socket that answers no telnet negotiation (the server is started
with a short ``--connect-maxwait``) and drops the telnet commands it gets.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

IAC, SB, SE = 255, 250, 240
_OPTION_VERBS = range(251, 255)  # WILL WONT DO DONT


class BusPeer:
    def __init__(self, port: int, host: str = "127.0.0.1", *, identify: bool = True) -> None:
        """``identify``: ask the session's id now (else call :meth:`identify`)."""
        self.sock = socket.create_connection((host, port), timeout=10)
        self.lines: list[str] = []
        self._partial = bytearray()
        self._state = 0  # 0 data, 1 after IAC, 2 option byte, 3 in SB, 4 IAC in SB
        self.id, self.shard, self.pid = "", -1, 0
        if identify:
            self.send("id")
            self.identify()

    def identify(self) -> None:
        """Read the answer to ``id`` (sent already)."""
        _head, session, shard, pid = self.expect("ID ").split()
        self.id, self.shard, self.pid = session, int(shard), int(pid)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def command(self, line: str, answer: str | None = None, timeout: float = 10.0) -> str:
        """Send ``line``; the answer line starting ``answer`` (default ``OK <command>``)."""
        self.send(line)
        return self.expect(answer or f"OK {line.split()[0]}", timeout)

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        return self.take(lambda line: line.startswith(prefix), timeout, prefix)

    def take(self, match: Callable[[str], bool], timeout: float = 10.0, what: str = "") -> str:
        """The first line (received or to come) that ``match``es; the others stay."""
        deadline = time.monotonic() + timeout
        while True:
            for n, line in enumerate(self.lines):
                if match(line):
                    del self.lines[n]
                    if line.startswith("ERR "):
                        raise AssertionError(line)
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line {what!r} in {self.lines[-10:]!r}")
            self._receive(remaining)

    def messages(self, channel: str, count: int, timeout: float = 20.0) -> list[tuple[str, Any]]:
        """The next ``count`` messages of ``channel``: (sender, data)."""
        prefix = f"MSG {channel} "
        found = []
        for _ in range(count):
            line = self.expect(prefix, timeout)
            sender, _, data = line[len(prefix) :].partition(" ")
            found.append((sender, json.loads(data)))
        return found

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._receive(deadline - time.monotonic()):
                return True
        return False

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.01))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        except ConnectionError:
            return False
        if not chunk:
            return False
        self._feed(chunk)
        return True

    def _feed(self, chunk: bytes) -> None:
        data = self._partial
        for byte in chunk:
            state = self._state
            if state == 0:
                if byte == IAC:
                    self._state = 1
                else:
                    data.append(byte)
            elif state == 1:
                self._state = 2 if byte in _OPTION_VERBS else 3 if byte == SB else 0
                if byte == IAC:
                    data.append(IAC)
                    self._state = 0
            elif state == 2:
                self._state = 0
            elif state == 3:
                self._state = 4 if byte == IAC else 3
            else:
                self._state = 0 if byte == SE else 3
        *whole, rest = bytes(data).split(b"\r\n")
        self.lines.extend(line.decode("utf-8", "replace") for line in whole)
        self._partial = bytearray(rest)

    def close(self) -> None:
        self.sock.close()
