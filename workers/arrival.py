"""A new connection on its way to a telnet session: admission, then stages.

Every accepted connection takes the same path, in this order:

0. **Preludes** (``Server.preludes``): stages that decide who the client
   is, and so must run before admission: the PROXY header
   (:mod:`workers.proxy_stage`), whose source address becomes the
   connection's peer (:meth:`Arrival.relayed`). Nothing is sent to the
   client while they run.
1. **Admission** (``Server.admit``): one synchronous check that decides
   whether the connection is served at all. It returns ``None`` to let the
   connection in, or a :class:`Refusal` whose message is written to the
   client before it is closed; refusals are counted by reason.
2. **Stages** (``Server.stages``): work that must happen on the connection
   before the telnet engine sees a byte of it, such as a TLS handshake or a
   PROXY protocol header. A stage is ``async def stage(arrival)``; it may read
   what the client sent (:meth:`Arrival.read`), put back what is not its own
   (:meth:`Arrival.unread`), replace the transport with a TLS one
   (:meth:`Arrival.start_tls`), or end the connection (:meth:`Arrival.drop`).
   Stages run one after the other. A server's TLS listener runs its
   handshake (:class:`workers.tls.Handshake`) before ``Server.stages``.
3. The telnet session: a protocol instance from the server's ``Sessions``
   takes the transport over, and gets whatever the stages left unread.

A server with no preludes, admission or stages skips all this: its protocol
factory builds the session directly, so the plain path costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from workers.log_limits import PROTOCOL_WARNINGS

if TYPE_CHECKING:
    from workers.serving import Server

log = logging.getLogger("shardd.arrival")

# What a client may send before its session starts is held here, at most
# this much; past it, reading pauses until a stage takes some.
MAX_ARRIVAL_BUFFER = 64 * 1024


class Refusal(NamedTuple):
    """Why a connection is not served: a reason to count, a line for the client."""

    reason: str
    message: str


#: Returns None to serve the connection, which it may then count until the
#: server calls its ``release(host)`` (if it has one) when the connection ends.
AdmissionCheck = Callable[["Arrival"], Refusal | None]
Stage = Callable[["Arrival"], Awaitable[None]]


class Arrival(asyncio.Protocol):
    """The protocol of a connection until its telnet session takes over.

    ``stages``: those this connection goes through (default: the server's).
    ``encrypted``: the client speaks TLS first, so a refusal closes the
    connection without a line it could not read, and its session is marked
    as a TLS one. The server's preludes run first, then admission.
    """

    def __init__(
        self, server: Server, stages: Sequence[Stage] | None = None, *, encrypted: bool = False
    ) -> None:
        self.server = server
        self.stages = server.stages if stages is None else stages
        self.preludes = server.preludes
        self.encrypted = encrypted
        self.transport: asyncio.Transport | None = None
        self.peername: object = None
        #: what the session's get_extra_info gives before its transport's
        #: (a PROXY header's addresses and TLVs)
        self.extra: dict[str, Any] = {}
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._admitted = False  # counted by the admission check until released
        self._handshaking = False  # in start_tls: its TLS protocol reports a lost connection
        self._counted = False  # in Server.arriving

    # ------------------------------------------------------------ asyncio side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered subclasses: isinstance would fail
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peername = transport.get_extra_info("peername")
        server = self.server
        if not self.preludes:
            if not self._admit():
                return
            if not self.stages:
                self._hand_over()
                return
        server.arriving += 1
        self._counted = True
        self._task = asyncio.get_running_loop().create_task(self._run_stages())

    def _admit(self) -> bool:
        """The server's admission check; a refused connection is closed, after
        its line (unless it speaks TLS)."""
        server = self.server
        if server.admit is None:
            return True
        refusal = server.admit(self)
        if refusal is not None:
            server.refused[refusal.reason] += 1
            transport = self.transport
            assert transport is not None
            if not self.encrypted:
                transport.write(refusal.message.encode("utf-8", "replace"))
            transport.close()
            return False
        self._admitted = True
        return True

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_ARRIVAL_BUFFER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # the session, or the end of the stages, decides when to close

    def connection_lost(self, exc: Exception | None) -> None:
        # a TLS handshake under way fails by itself, and its stage says why
        if self._task is not None and not self._task.done() and not self._handshaking:
            self._task.cancel()
        self._forget()

    def _forget(self) -> None:
        """The connection is gone before its session started: stop counting it (once)."""
        self._lost = True
        self._wake()
        self._leave()
        if self._admitted:
            self._admitted = False
            self.server.release(self.host)

    def _leave(self) -> None:
        if self._counted:
            self._counted = False
            self.server.arriving -= 1

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------- for stages

    @property
    def host(self) -> str:
        """The client's address alone, for limits per address."""
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)

    @property
    def peer(self) -> str:
        """The client's address as ``host:port``, for log lines."""
        peer = self.peername
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer)

    async def read(self) -> bytes:
        """What the client has sent and no stage took yet; ``b""`` at EOF."""
        while not self._buffer and not (self._eof or self._lost):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self.transport is not None and not self._lost:
            self._paused = False
            self.transport.resume_reading()
        return data

    def relayed(
        self, peername: object | None, sockname: object | None, extra: dict[str, Any]
    ) -> None:
        """The connection is relayed by a proxy for ``peername`` (its client), which
        reached ``sockname``: from now on these are the connection's addresses,
        for admission, logs and the session (None: keep the connection's own).
        ``extra``: more for the session's ``get_extra_info``."""
        self.extra.update(extra)
        if peername is not None:
            self.peername = self.extra["peername"] = peername
        if sockname is not None:
            self.extra["sockname"] = sockname

    def unread(self, data: bytes) -> None:
        """Give back bytes a stage read but does not own: the next reader gets them first."""
        self._buffer[:0] = data

    def drop(self) -> None:
        """End the connection now, before its session: no more stages, no session."""
        if self.transport is not None:
            self.transport.abort()
        self._forget()

    async def start_tls(self, context: ssl.SSLContext, handshake_timeout: float) -> None:
        """Upgrade the connection to TLS, server side; the transport is then the TLS one.

        Whatever the client sent before (its ClientHello, usually: it arrives
        with the connection, before any stage runs) goes to TLS first, and
        stages after this one read decrypted bytes. OSError (ssl.SSLError, or
        ConnectionAbortedError after ``handshake_timeout``) if the handshake
        fails; the connection is then gone, and :meth:`drop` uncounts it.
        """
        raw = self.transport
        if raw is None or self._lost or self._eof:
            raise ConnectionResetError("the client left before the TLS handshake")
        loop = asyncio.get_running_loop()
        handshake = asyncio.ensure_future(
            loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=handshake_timeout
            )
        )
        # start_tls's first step pauses reading, makes its TLS protocol the raw
        # transport's, and schedules that protocol's connection_made and the
        # resumption of reading, both as callbacks. This task's next step runs
        # right after that first one, so the callback it schedules here runs
        # after those two and before the loop reads anything more from the
        # socket (callbacks run in the order they are scheduled): the bytes
        # already read reach TLS first, and in order.
        await asyncio.sleep(0)
        tls = raw.get_protocol()
        if tls is self and not handshake.done():
            handshake.cancel()  # an event loop whose start_tls takes over later than that
            raise RuntimeError("start_tls did not take the transport over in its first step")
        loop.call_soon(self._feed_tls, tls, handshake)
        self._handshaking = True
        try:
            self.transport = cast(asyncio.Transport, await handshake)
        finally:
            self._handshaking = False
        self._paused = False  # what paused was the raw transport, now TLS's to drive

    def _feed_tls(self, tls: asyncio.BaseProtocol, handshake: asyncio.Future[Any]) -> None:
        """Give the TLS protocol the bytes that arrived before it took the transport."""
        if not self._buffer or handshake.done():
            return
        data = memoryview(bytes(self._buffer))
        self._buffer.clear()
        if hasattr(tls, "buffer_updated"):  # uvloop's and asyncio's are buffered protocols
            buffered = cast(asyncio.BufferedProtocol, tls)
            while data:
                room = memoryview(buffered.get_buffer(len(data)))
                count = min(len(room), len(data))
                room[:count] = data[:count]
                buffered.buffer_updated(count)
                data = data[count:]
        else:
            cast(asyncio.Protocol, tls).data_received(bytes(data))

    # --------------------------------------------------------------- handover

    async def _run_stages(self) -> None:
        try:
            for stage in self.preludes:
                if not await self._run(stage):
                    return
            if self.preludes and not self._admit():
                self._forget()
                return
            for stage in self.stages:
                if not await self._run(stage):
                    return
        except asyncio.CancelledError:
            return
        except Exception as exc:
            # a client can make a stage fail at will: rate-limited, as every warning about one
            PROTOCOL_WARNINGS.warning(
                log,
                self.host,
                "%s: connection dropped before its session: %s: %s",
                self.peer,
                type(exc).__name__,
                exc,
            )
            self.drop()
            return
        self._hand_over()

    async def _run(self, stage: Stage) -> bool:
        """Run one stage; False if the connection has no session to come."""
        await stage(self)
        if self._lost or self.transport is None or self.transport.is_closing():
            self._forget()  # no session for it (its connection_lost may not come)
            return False
        return True

    def _hand_over(self) -> None:
        transport = self.transport
        assert transport is not None
        self._leave()
        session = self.server.sessions.new(tls=self.encrypted)
        if self.extra:
            session.set_extra(self.extra)
        if self._admitted:
            # the session releases what the admission counted, when it ends
            self._admitted = False
            session.peer_host = self.host
        transport.set_protocol(session)
        session.connection_made(transport)
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            session.data_received(data)
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._eof and not transport.is_closing():
            session.eof_received()
