"""A player of ``--shell talker`` on a plain socket: types lines, reads what it is shown.

It answers no telnet negotiation (the server is started with a short
``--connect-maxwait``) and drops the telnet commands it gets, so it sees the
session as nc would: line mode, prompts marked with GA.
"""

from __future__ import annotations

import re
import socket
import time

IAC, SB, SE = 255, 250, 240
_OPTION_VERBS = range(251, 255)  # WILL WONT DO DONT
# a raw client echoes nothing, so a prompt starts the line printed after it
_PROMPTS = re.compile(r"^(?:> |What is your name\? )+")


class Player:
    def __init__(self, port: int, name: str | None = None, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.lines: list[str] = []  # received, prompts taken off, not yet expected
        self.skipped: list[str] = []  # the lines the last ``expect`` passed over
        self.partial = ""
        self._data = bytearray()
        self._state = 0  # 0 data, 1 after IAC, 2 option byte, 3 in SB, 4 IAC in SB
        self.name = name
        if name is not None:
            self.wait_prompt("What is your name? ")
            self.send(name)
            self.expect(f"Welcome, {name}! You are in room lobby. Type help for commands.")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

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

    def closed(self, timeout: float = 10.0) -> bool:
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
        data = self._data
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
        for line in whole:
            text = _PROMPTS.sub("", line.decode("utf-8", "replace"))
            if text:
                self.lines.append(text)
        self._data = bytearray(rest)
        self.partial = rest.decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()
