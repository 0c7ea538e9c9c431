"""systemd's notify protocol: state changes as datagrams to ``$NOTIFY_SOCKET``.

The standard library is enough (sd_notify(3)): one ``AF_UNIX``
``SOCK_DGRAM`` send of ``KEY=VALUE`` lines per change; a name starting with
``@`` is in the abstract namespace. Only the supervisor notifies: reading
the environment also removes the variables, so that workers and whatever an
operator's shell starts do not see them (``NotifyAccess=main`` would ignore
them anyway).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("shardd.sd_notify")

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends to systemd, or does nothing where no ``$NOTIFY_SOCKET`` is set."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: how often to send WATCHDOG=1 (half of WatchdogSec), or None
        self.watchdog_interval = None if not watchdog_usec else watchdog_usec / 2e6
        self._sock: socket.socket | None = None
        self._last_status: str | None = None

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd asked for, taking its variables out of ``environ``."""
        values = {name: environ.pop(name, None) for name in _VARIABLES}
        address = values["NOTIFY_SOCKET"] or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET %r is neither a path nor @abstract: not notifying", address)
            address = None
        usec = values["WATCHDOG_USEC"]
        pid = values["WATCHDOG_PID"]
        watchdog = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """One datagram of ``KEY=VALUE`` fields; a failure is logged, never raised."""
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror or exc)

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *self._status_field(status))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """``STATUS=text``, only if it changed since the last one sent."""
        fields = self._status_field(text)
        if fields:
            self.send(*fields)

    def _status_field(self, text: str | None) -> list[str]:
        if text is None or text == self._last_status:
            return []
        self._last_status = text
        return [f"STATUS={text}"]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
