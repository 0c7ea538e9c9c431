"""Protocols for the end-to-end tests (``--protocol tests.protocols_for_tests:Name``).

A real ``shardd serve`` subprocess runs them; they are TelnetServer with one
policy of their own, as an operator's ``--protocol`` would be.
"""

from __future__ import annotations

import time

from workers.server import TelnetServer
from workers.telnet.telopt import AYT


class DropsFlooders(TelnetServer):
    """Closes a session at its first IAC AYT: a server's right against a flooding client."""

    def on_command(self, cmd: int) -> None:
        if cmd == AYT:
            if self.writer is not None:
                self.writer.close()
        else:
            super().on_command(cmd)


class FirstByteTimed(TelnetServer):
    """Notes when the client's first byte arrived, for the ``timed`` shell
    (``tests/time_to_shell.py``): time to shell counted from the client's
    first word, not from a connect it may sit on."""

    def data_received(self, data: bytes) -> None:
        if "first_byte_at" not in self._extra:
            self._extra["first_byte_at"] = time.monotonic()
        super().data_received(data)
