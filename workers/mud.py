"""The MUD protocols a server offers, and one session's GMCP and MSDP state.

:class:`MudOptions` is the operator's choice, the same in every worker: which
of GMCP, MSDP, MSSP, MCCP2 and MCCP3 are offered, and MSSP's variables.
:class:`MudServer` is one server's view (per process): those options, the
live session count MSSP's PLAYERS reports (over every worker, from the
supervisor) and the ports. :class:`MudSession` is what one session holds
once a shell or a client uses GMCP or MSDP: received GMCP messages not read
yet (at most ``MAX_GMCP_QUEUE``), the callbacks, the MSDP variables the
shell set and the client's REPORT state. The bytes themselves are parsed and
built by the codecs in ``workers/telnet/`` (gmcp, msdp, mssp, mccp).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.telnet import gmcp, mssp
from workers.telnet.gmcp import JSONValue
from workers.telnet.msdp import Encodable, MSDPServer, MSDPValue
from workers.telnet.telopt import GMCP, MCCP2, MCCP3, MSDP, MSSP

#: The options ``--offer`` may name, and their codes.
OPTION_NAMES: dict[str, int] = {
    "gmcp": GMCP,
    "msdp": MSDP,
    "mssp": MSSP,
    "mccp2": MCCP2,
    "mccp3": MCCP3,
}
#: What a server offers by default (MCCP2 and MCCP3 too with ``--compression``).
DEFAULT_OFFER = ("gmcp", "msdp", "mssp")
COMPRESSION = ("mccp2", "mccp3")

#: Received GMCP messages a session keeps for a shell that has not read them,
#: and their payloads' bytes in all: past either, new ones are dropped and
#: counted (``gmcp_dropped``). Kept as received and decoded when read: JSON
#: decoded can take twenty times its size ("[[],[],...]").
MAX_GMCP_QUEUE = 64
MAX_GMCP_QUEUE_BYTES = 64 * 1024

GMCPMessage = tuple[str, JSONValue]
GMCPCallback = Callable[[str, JSONValue], Any]
MSDPCallback = Callable[[str, MSDPValue], Any]


def offered_options(offer: tuple[str, ...], compression: bool) -> frozenset[int]:
    """The option codes a server offers for ``offer`` (names) and ``compression``.

    With compression on and no MCCP named, both MCCP2 and MCCP3 are offered.
    """
    names = set(offer)
    if compression and not names & set(COMPRESSION):
        names.update(COMPRESSION)
    if not compression:
        names.difference_update(COMPRESSION)
    return frozenset(OPTION_NAMES[name] for name in names)


@dataclass(frozen=True)
class MudOptions:
    """What every worker offers, the same everywhere (``shardd serve`` settings)."""

    #: names of OPTION_NAMES; MCCP2 and MCCP3 only count with ``compression``
    offer: tuple[str, ...] = DEFAULT_OFFER
    compression: bool = False
    #: the operator's MSSP variables (NAME, CONTACT, ...), checked at start
    mssp: Mapping[str, mssp.MSSPValue] = field(default_factory=dict)
    max_gmcp_queue: int = MAX_GMCP_QUEUE
    #: wall-clock time the server started (MSSP UPTIME): the supervisor's, so
    #: that every worker answers the same; None: when the answering server did
    started: float | None = None

    @property
    def options(self) -> frozenset[int]:
        return offered_options(self.offer, self.compression)


DEFAULT_MUD = MudOptions()


class MudServer:
    """One server's MUD settings and live figures, shared by its sessions."""

    __slots__ = (
        "local_sessions",
        "options",
        "plain_offer",
        "port",
        "started",
        "tls_offer",
        "tls_port",
        "total_sessions",
    )

    def __init__(self, options: MudOptions, local_sessions: Callable[[], int] = lambda: 0) -> None:
        self.options = options
        #: the options a session offers over plain TCP, and over TLS (never
        #: compression: compressing before encrypting leaks (CRIME, BREACH))
        self.plain_offer = options.options
        self.tls_offer = self.plain_offer - {MCCP2, MCCP3}
        #: live sessions of this process (the count without a supervisor)
        self.local_sessions = local_sessions
        #: live sessions of every worker, as the supervisor last said; None: unsupervised
        self.total_sessions: int | None = None
        #: wall-clock time the server started (MSSP UPTIME)
        self.started = options.started or time.time()
        self.port: int | None = None
        self.tls_port: int | None = None

    def players(self) -> int:
        total = self.total_sessions
        return self.local_sessions() if total is None else total

    def mssp_payload(self, tls: bool) -> bytes:
        """The server's MSSP answer, with the live values of now."""
        offered = self.options.options
        now = time.time()
        return mssp.server_answer(
            self.options.mssp,
            players=self.players(),
            uptime=now - self.started,
            ports=[self.port] if self.port else (),
            tls_port=self.tls_port,
            protocols={
                mssp.GMCP: GMCP in offered,
                mssp.MSDP: MSDP in offered,
                mssp.MCCP: MCCP2 in offered and not tls,
            },
            now=now,
        )


class MudSession:
    """One session's GMCP inbox and callbacks, and its MSDP variables and REPORT state.

    Created on first use (a client's message, a shell's call), so sessions
    that use neither protocol pay nothing.
    """

    __slots__ = (
        "_closed",
        "_gmcp_callback",
        "_inbox",
        "_inbox_bytes",
        "_waiter",
        "dropped",
        "max_queue",
        "msdp",
        "msdp_callback",
        "msdp_values",
    )

    def __init__(self, max_queue: int = MAX_GMCP_QUEUE) -> None:
        self.max_queue = max_queue
        self._inbox: deque[bytes] = deque()  # payloads, checked when received
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._gmcp_callback: GMCPCallback | None = None
        self._closed = False
        #: GMCP messages dropped because the inbox was full
        self.dropped = 0
        #: the shell's MSDP variables, and the client's commands' state over them
        self.msdp_values: dict[str, Encodable] = {}
        self.msdp = MSDPServer((), self.msdp_values.get)
        self.msdp_callback: MSDPCallback | None = None

    # ------------------------------------------------------------------ GMCP

    def gmcp_received(self, payload: bytes, package: str, data: JSONValue) -> bool:
        """Deliver a client's message, its payload already decoded to ``package``
        and ``data``; False if it was dropped (the inbox is full)."""
        callback = self._gmcp_callback
        if callback is not None:
            callback(package, data)
            return True
        if (
            len(self._inbox) >= self.max_queue
            or self._inbox_bytes + len(payload) > MAX_GMCP_QUEUE_BYTES
        ):
            self.dropped += 1
            return False
        self._inbox.append(payload)
        self._inbox_bytes += len(payload)
        self._wake()
        return True

    @property
    def waiting(self) -> int:
        """Messages received and not read yet."""
        return len(self._inbox)

    def _next(self) -> GMCPMessage:
        payload = self._inbox.popleft()
        self._inbox_bytes -= len(payload)
        return gmcp.decode(payload)

    def on_gmcp(self, callback: GMCPCallback | None) -> None:
        """Call ``callback(package, data)`` for each message, those queued first."""
        self._gmcp_callback = callback
        if callback is not None:
            while self._inbox:
                callback(*self._next())

    async def messages(self) -> AsyncIterator[GMCPMessage]:
        """Each message as it comes, until the connection is gone."""
        while True:
            if self._inbox:
                yield self._next()
                continue
            if self._closed:
                return
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    def close(self) -> None:
        """The connection is gone: readers see the end once the inbox is empty."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ MSDP

    def msdp_set(self, name: str, value: Encodable) -> bool:
        """Set a variable; True if the client asked for it to be reported."""
        if name not in self.msdp_values:
            # a name the shell sets becomes one a client may REPORT and SEND
            server = self.msdp
            server.reportable = server.reportable | {name}
            server.sendable = server.sendable | {name}
        self.msdp_values[name] = value
        return name in self.msdp.reported
