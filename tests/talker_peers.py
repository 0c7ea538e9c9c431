"""A player of ``--shell talker`` on a plain socket: types lines, reads what it is shown.

It answers no telnet negotiation (the server is started with a short
``--connect-maxwait``) and drops the telnet commands it gets, so it sees the
session as nc would: line mode, prompts marked with GA.
"""

from __future__ import annotations

import re
import time

from line_peer import LinePeer

# a raw client echoes nothing, so a prompt starts the line printed after it
_PROMPTS = re.compile(r"^(?:> |What is your name\? )+")


class Player(LinePeer):
    def __init__(self, port: int, name: str | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(port, host)
        self.lines: list[str] = []  # received, prompts taken off, not yet expected
        self.skipped: list[str] = []  # the lines the last ``expect`` passed over
        self.partial = ""
        self.name = name
        if name is not None:
            self.wait_prompt("What is your name? ")
            self.send(name)
            self.expect(f"Welcome, {name}! You are in room lobby. Type help for commands.")

    def expect(self, line: str, timeout: float = 10.0) -> str:
        """The first line received (or to come) that is ``line`` or starts with it."""
        deadline = time.monotonic() + timeout
        while True:
            for n, got in enumerate(self.lines):
                if got.startswith(line):
                    self.skipped = self.lines[:n]
                    del self.lines[: n + 1]
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line {line!r} in {self.lines[-20:]!r}")
            if not self._receive(remaining):
                raise AssertionError(f"EOF waiting for {line!r}; got {self.lines[-20:]!r}")

    def wait_prompt(self, prompt: str = "> ", timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.partial.endswith(prompt):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no prompt {prompt!r}; partial {self.partial!r}"
            assert self._receive(remaining), f"EOF waiting for {prompt!r}"

    def command(self, line: str, answer: str) -> str:
        self.send(line)
        return self.expect(answer)

    def on_lines(self, lines: list[str], partial: bytes) -> None:
        for line in lines:
            text = _PROMPTS.sub("", line)
            if text:
                self.lines.append(text)
        self.partial = partial.decode("utf-8", "replace")
