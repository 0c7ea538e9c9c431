"""Client sessions that count as set up at the server's first in-band byte.

The connect, idle and storm scenarios open these; a :class:`Tally` holds
what one run's sessions count together. As a shell may never speak first
(the echo shell does not), each session sends one probe byte, a NUL, as
soon as it connects: telnet's no-operation, which line shells ignore and the
echo shell returns.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar, cast

from shardd.loadtest.target import (
    CLOSE_GRACE,
    NEGOTIATION_TIMEOUT,
    Target,
    connect_failure,
    lost_failure,
    open_session,
)
from shardd.loadtest.verify import CountedSession
from workers import admission
from workers.telnet.client import TelnetClientSession

#: what a server's refusal line starts with, and the failure it counts as: a
#: refused client gets in-band text too, but it is not a session set up
REFUSALS = (
    (admission.SERVER_FULL.encode(), "refused: server full"),
    (admission.TOO_MANY_SESSIONS.encode(), "refused: too many sessions from the address"),
    (admission.TOO_FAST.encode(), "refused: too many connections from the address"),
)

PROBE = b"\x00"

_perf = time.perf_counter

_S = TypeVar("_S", bound="SetupSession")


class Tally:
    """Counters one scenario run shares among its sessions."""

    def __init__(self, negotiation_timeout: float = 10.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.negotiation_timeout = negotiation_timeout
        self.failures: Counter[str] = Counter()
        self.failures_by_phase: dict[str, Counter[str]] = {}
        self.sources: Counter[str] = Counter()
        self.on_lost: Callable[[SetupSession], None] | None = None

    def fail(self, phase: str, kind: str) -> None:
        self.failures[kind] += 1
        phases = self.failures_by_phase
        if phase not in phases:
            phases[phase] = Counter()
        phases[phase][kind] += 1

    def connected(self, transport: asyncio.BaseTransport) -> None:
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.sources[sockname[0]] += 1


class SetupSession(CountedSession, asyncio.Protocol):
    """A connect, idle or storm session: set up at the first in-band byte.

    ``ready`` gets the perf_counter time of that byte, or the failure kind
    (a str) when the server closed first or was silent too long.
    """

    __slots__ = (
        "_timer",
        "closed",
        "closing",
        "lost",
        "ready",
        "tally",
        "telnet",
        "transport",
    )

    transport: asyncio.Transport  # set on connection, before anyone else has the session

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.telnet = TelnetClientSession()
        loop = tally.loop
        self.ready: asyncio.Future[float | str] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.lost: str | None = None
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None
        # bytes on the wire (telnet commands included), as the server counts them
        self.rx = self.tx = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.tally.connected(transport)
        self._timer = self.tally.loop.call_later(
            self.tally.negotiation_timeout, self._negotiation_expired
        )
        self.write(PROBE)

    def _negotiation_expired(self) -> None:
        self._timer = None
        if not self.ready.done():
            self.ready.set_result(NEGOTIATION_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        telnet = self.telnet
        inband = telnet.receive(data)
        if telnet.has_output:
            self.write(telnet.data_to_send())
        if inband and not self.ready.done():
            self.ready.set_result(_refusal(inband) or _perf())
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closing:
            self.closing = True
            self.lost = lost_failure(exc)
            if not self.ready.done():
                self.ready.set_result(self.lost)
            elif self.tally.on_lost is not None:
                self.tally.on_lost(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        transport.close()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.tally.loop.call_later(CLOSE_GRACE, transport.abort)


async def set_up(
    tally: Tally, target: Target, source: str | None, connect_timeout: float
) -> tuple[SetupSession | None, float]:
    """One session to the point of the server's first in-band byte.

    The session and its setup time in seconds, or None (the failure counted).
    """
    return await set_up_as(SetupSession, tally, target, source, connect_timeout)


async def set_up_as(
    factory: Callable[[Tally], _S],
    tally: Tally,
    target: Target,
    source: str | None,
    connect_timeout: float,
) -> tuple[_S | None, float]:
    """:func:`set_up` of a session ``factory`` makes: a subclass that goes on from there."""
    started = _perf()
    try:
        _transport, proto = await open_session(
            lambda: factory(tally), target, source, connect_timeout
        )
    except OSError as exc:
        tally.fail("connect", connect_failure(exc))
        return None, 0.0
    outcome = await proto.ready
    if isinstance(outcome, str):
        tally.fail("admission" if outcome.startswith("refused") else "negotiation", outcome)
        proto.close()
        await proto.closed
        return None, 0.0
    return proto, outcome - started


def _refusal(first: bytes) -> str | None:
    """The failure a server's first in-band bytes stand for, if they are a refusal."""
    for line, failure in REFUSALS:
        if first.startswith(line[:16]):
            return failure
    return None


def check_positive(**values: float) -> None:
    """ValueError naming the first of ``values`` that is not a finite positive number."""
    for name, value in values.items():
        if not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be positive, not {value!r}")
