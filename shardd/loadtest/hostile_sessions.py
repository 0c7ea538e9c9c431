"""The connections of the hostile scenario: hostile sessions and bystanders.

Both parse what the server sends with the client role's engine
(:class:`~workers.telnet.client.TelnetClientSession`) and probe it with
``IAC DO TIMING-MARK``, which the server's engine answers whatever the
session's state. See :mod:`~shardd.loadtest.hostile` for how each kind of
session ends and what counts as a failure.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import struct
import termios
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from shardd.loadtest.hooks import Hooks
from shardd.loadtest.hostile_inputs import CLOSE, PROBE, RESET, RESYNC, Attack
from shardd.loadtest.latencies import Latencies
from shardd.loadtest.sessions import PROBE as SETUP_PROBE
from shardd.loadtest.sessions import Tally
from shardd.loadtest.target import CLOSE_GRACE, NEGOTIATION_TIMEOUT, TIMEOUT, lost_failure
from workers.telnet.client import TelnetClientSession
from workers.telnet.engine import NO
from workers.telnet.telopt import TM

_perf = time.perf_counter

#: the failure phase of bystanders (a hostile session's is its kind)
BYSTANDER = "bystander"
#: a close by EOF: the server closes once it has read everything
EOF = "eof"
NO_ANSWER = "no probe answer"
NOT_READ = "inputs not read"
BYSTANDER_EVERY = 0.1
#: probes a hostile session sends, each once the one before is answered
PROBES = 2
# a reset waits this long at most for the server's output to reach it unread
RESET_WAIT = 1.0
_RESET_POLL = 0.01
_LINGER_0 = struct.pack("ii", 1, 0)


class Run:
    """What the sessions of one process's share of a run count together."""

    def __init__(self, hooks: Hooks, deadline: float, timeout: float) -> None:
        self.hooks = hooks
        self.deadline = deadline
        self.timeout = timeout
        self.tally = Tally(timeout)
        self.loop = self.tally.loop
        self.sessions: Counter[str] = Counter()
        self.inputs: Counter[str] = Counter()
        self.planned: Counter[str] = Counter()
        self.survived: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.unresponsive: Counter[str] = Counter()
        self.bytes_sent = 0
        self.rtt = Latencies()

    def stopping(self) -> bool:
        return self.hooks.interrupted.is_set() or time.monotonic() >= self.deadline

    def end(self, kind: str, how: str) -> None:
        """The server ended a session it should have kept."""
        self.ended[kind] += 1
        self.tally.fail(kind, how)

    def unanswered(self, kind: str, how: str) -> None:
        """The server kept a session, and did not answer it in time."""
        self.unresponsive[kind] += 1
        self.tally.fail(kind, how)


class Client(asyncio.Protocol):
    """A client connection that parses what the server sends with the client role's engine.

    ``answering``: the engine's replies (to the server's negotiation) are
    sent, as a terminal would; otherwise they are dropped. Waits are on
    :meth:`until`, woken by anything that happens to the connection.
    """

    transport: asyncio.Transport  # set on connection, before anyone else has the session

    def __init__(self, tally: Tally, answering: bool) -> None:
        self.tally = tally
        self.telnet = TelnetClientSession()
        self.answering = answering
        self.spoke = False  # the server's first in-band byte arrived
        self.received = 0
        self.probe_sent: float | None = None  # a DO TIMING-MARK awaits its answer
        self.lost: str | None = None  # how the server ended the connection, if it did
        self.closing = False
        self.writing_paused = False
        self._changed = asyncio.Event()
        self._abort: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = tally.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.tally.connected(transport)
        if self.answering:
            # a shell may never speak first (the echo shell does not): the NUL
            # the other scenarios send, which line shells ignore and echo returns
            self.transport.write(SETUP_PROBE)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self._changed.set()
        telnet = self.telnet
        inband = telnet.receive(data)
        if telnet.has_output:
            replies = telnet.data_to_send()
            if self.answering:
                self.transport.write(replies)
        if inband:
            self.spoke = True
        if self.probe_sent is not None and telnet.engine.remote_state(TM) == NO:
            self.answered(_perf() - self.probe_sent)
            self.probe_sent = None

    def answered(self, seconds: float) -> None:
        """The probe was answered after ``seconds``."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.lost = lost_failure(exc)
        if self._abort is not None:
            self._abort.cancel()
        self._changed.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._changed.set()

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Whether ``done()`` came true (or the connection was lost) within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while not (done() or self.lost is not None):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def probe(self) -> None:
        """Send IAC DO TIMING-MARK, after RESYNC, and expect its answer."""
        engine = self.telnet.engine
        engine.data_to_send()  # replies withheld stay withheld
        engine.request_remote(TM)
        self.probe_sent = _perf()
        self.transport.write(RESYNC + engine.data_to_send())

    def close(self, how: str = EOF) -> None:
        """End the connection by EOF (the server then closes), a close, or a reset."""
        if self.closing:
            if how == RESET:
                self.transport.abort()
            return
        self.closing = True
        if how == RESET:
            sock = self.transport.get_extra_info("socket")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            except OSError:
                pass
            self.transport.abort()
            return
        if how == EOF and self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        self._abort = self.tally.loop.call_later(CLOSE_GRACE, self.transport.abort)


class HostileSession(Client):
    """One hostile session: set up (maybe), its inputs, then a probe, a reset or a hold."""

    def __init__(self, run: Run, attack: Attack) -> None:
        super().__init__(run.tally, attack.negotiate)
        self.run = run
        self.attack = attack

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.attack.negotiate and not self.attack.kind.reads:
            self.transport.pause_reading()

    async def play(self) -> None:
        run, kind = self.run, self.attack.kind
        name = kind.name
        if self.attack.negotiate:
            if not await self.until(lambda: self.spoke, run.timeout):
                run.unanswered(name, NEGOTIATION_TIMEOUT)
                return
            if self.lost is not None:
                run.end(name, self.lost)
                return
            self.answering = False  # from here on it only attacks
            if not kind.reads:
                self.transport.pause_reading()
        sent = self.received
        for chunk in self.attack.chunks:
            if self.lost is not None or run.stopping():
                break
            if self.writing_paused and not await self.until(
                lambda: not self.writing_paused, run.timeout
            ):
                if kind.probes:
                    run.unanswered(name, NOT_READ)
                return
            if self.lost is not None:
                break
            self.transport.write(chunk)
            sent = self.received
            run.inputs[name] += 1
            run.bytes_sent += len(chunk)
            await asyncio.sleep(0)  # one session's flood must not hold the others back
        ending = kind.ending
        if ending == PROBE:
            await self._check(name)
            self.close(EOF)
        elif ending == CLOSE:
            # as soon as the server answers: it goes on writing to a closed socket
            await self.until(lambda: self.received > sent, run.timeout)
            self.close(CLOSE)
        elif ending == RESET:
            await self._reset()
        else:
            await run.hooks.pause(min(self.attack.hold, max(0.0, run.deadline - time.monotonic())))
            self.close(EOF if kind.reads else RESET)

    async def _check(self, name: str) -> None:
        run = self.run
        # twice, the second once the first is answered: what the inputs set off
        # just after the server read them (a shell failing on its last line,
        # closing the session a loop turn later) has happened by then
        for _ in range(PROBES):
            if self.lost is not None:
                break
            self.probe()
            if not await self.until(lambda: self.probe_sent is None, run.timeout):
                break
        if self.lost is not None:
            run.end(name, self.lost)
        elif self.probe_sent is not None:
            run.unanswered(name, NO_ANSWER)
        else:
            run.survived[name] += 1

    async def _reset(self) -> None:
        # some output waiting unread here means the server wrote, and may hold more
        sock = self.transport.get_extra_info("socket")
        for _ in range(int(RESET_WAIT / _RESET_POLL)):
            if self.lost is not None or _unread(sock) != 0:
                break
            await asyncio.sleep(_RESET_POLL)  # the kernel's queue has no wake-up to wait on
        self.close(RESET)


def _unread(sock: Any) -> int:
    """Bytes received and not yet read on ``sock``; -1 if it is gone."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    except (OSError, ValueError):
        return -1
    return count[0]


class Bystander(Client):
    """A well-behaved session, probed every BYSTANDER_EVERY seconds."""

    def __init__(self, run: Run) -> None:
        super().__init__(run.tally, answering=True)
        self.run = run

    def answered(self, seconds: float) -> None:
        self.run.rtt.add(seconds)

    async def watch(self, ready: asyncio.Future[None], done: asyncio.Event) -> None:
        run = self.run
        try:
            if not await self.until(lambda: self.spoke, run.timeout):
                run.tally.fail(BYSTANDER, NEGOTIATION_TIMEOUT)
                return
            if self.lost is not None:
                run.tally.fail(BYSTANDER, self.lost)
                return
        finally:
            if not ready.done():
                ready.set_result(None)
        while not done.is_set():
            if self.lost is None:
                self.probe()
                if not await self.until(lambda: self.probe_sent is None, run.timeout):
                    run.tally.fail(BYSTANDER, TIMEOUT)
                    return
            if self.lost is not None:
                run.tally.fail(BYSTANDER, self.lost)
                return
            try:
                async with asyncio.timeout(BYSTANDER_EVERY):  # the probes' pace
                    await done.wait()
            except TimeoutError:
                pass
