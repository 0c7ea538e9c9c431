"""A client of ``tests.shells_for_tests:bus``: sends its commands, reads its lines.

A plain socket that answers no telnet negotiation (the server is started
with a short ``--connect-maxwait``) and drops the telnet commands it gets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from line_peer import LinePeer


class BusPeer(LinePeer):
    def __init__(self, port: int, host: str = "127.0.0.1", *, identify: bool = True) -> None:
        """``identify``: ask the session's id now (else call :meth:`identify`)."""
        super().__init__(port, host)
        self.lines: list[str] = []
        self.id, self.shard, self.pid = "", -1, 0
        if identify:
            self.send("id")
            self.identify()

    def identify(self) -> None:
        """Read the answer to ``id`` (sent already)."""
        _head, session, shard, pid = self.expect("ID ").split()
        self.id, self.shard, self.pid = session, int(shard), int(pid)

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

    def on_lines(self, lines: list[str], partial: bytes) -> None:
        self.lines.extend(lines)
