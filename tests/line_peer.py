"""A plain-socket peer that reads a session as lines, as nc would.

It answers no telnet negotiation (start the server with a short
``--connect-maxwait``) and drops the telnet commands it gets: the peers of
the bus test shell and of the talker build on it.
"""

from __future__ import annotations

import socket
import time

IAC, SB, SE = 255, 250, 240
_OPTION_VERBS = range(251, 255)  # WILL WONT DO DONT


class LinePeer:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self._data = bytearray()  # in-band bytes of the line not yet ended
        self._state = 0  # 0 data, 1 after IAC, 2 option byte, 3 in SB, 4 IAC in SB

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def close(self) -> None:
        self.sock.close()

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._receive(deadline - time.monotonic()):
                return True
        return False

    def _receive(self, timeout: float) -> bool:
        """Read what comes within ``timeout``; False once the connection ended."""
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
        self._data = bytearray(rest)
        self.on_lines([line.decode("utf-8", "replace") for line in whole], rest)

    def on_lines(self, lines: list[str], partial: bytes) -> None:
        """The lines a read completed, and what follows the last of them."""
        raise NotImplementedError
