"""Serving telnet sessions on one listening socket, in one event loop.

:class:`Server` is the one serving path: a supervised worker runs it on its
shard's socket, with a channel to the supervisor; development mode
(``shardd serve --workers 0``) runs it in the ``shardd`` process itself,
with no channel. Either way it listens, admits, serves sessions until told
to stop, then says goodbye and closes them.

Where new kinds of work plug in (see ``docs/ARCHITECTURE.md``):

- ``Server.preludes``: work on a connection before admission, because it
  says who the client is (the PROXY header, :mod:`workers.proxy_stage`);
- ``Server.admit``: whether a new connection is served at all;
- ``Server.stages``: work on a connection before its telnet engine sees it,
  see :mod:`workers.arrival`;
- ``Server(tls=...)``: a second listening socket whose connections first go
  through a TLS handshake stage (:mod:`workers.tls`), then the same stages
  and sessions as the first;
- ``SessionOptions``: how each session's protocol instance is built.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import uvloop

from workers import access_log
from workers.access_log import AccessLog
from workers.admission import Admission, AdmissionLimits
from workers.arrival import AdmissionCheck, Arrival, Stage
from workers.bus import hub as bus_hub
from workers.bus.hub import BusHub
from workers.gc_watch import GcPolicy
from workers.limits import DEFAULT_LIMITS, SessionLimits
from workers.mud import DEFAULT_MUD, MudOptions, MudServer
from workers.peer_table import PeerCounts, PeerTable
from workers.plural import count
from workers.proxy_stage import ProxyHeaderStage, ProxySettings
from workers.server import TelnetServer
from workers.server_base import BaseServer
from workers.session_totals import count_closed
from workers.tls import Handshake, TlsListener

log = logging.getLogger("shardd.serving")

GOODBYE = "\r\nThe server is shutting down. Goodbye.\r\n"
IDLE_GOODBYE = "\r\nYou have been idle too long. Goodbye.\r\n"
IDLE_SWEEP_BATCH = 1000

#: How a server stops: ``stop`` says goodbye and closes every session,
#: ``drain`` lets sessions end on their own (until ``Server.drain_timeout``),
#: ``quit`` drops them at once.
StopMode = Literal["stop", "drain", "quit"]


@dataclass
class SessionOptions:
    """What every protocol instance of a server is built with."""

    shell: Callable[..., Any] | None
    protocol: type[BaseServer] = TelnetServer
    encoding: str | bool = "utf8"
    encoding_errors: str = "strict"
    force_binary: bool = False
    connect_maxwait: float = 4.0
    limit: int | None = None
    limits: SessionLimits = DEFAULT_LIMITS
    #: the MUD protocols offered (GMCP, MSDP, MSSP, MCCP) and MSSP's variables
    mud: MudOptions = DEFAULT_MUD
    #: a line on ``shardd.access`` when each session opens and closes
    access_log: bool = True


@dataclass(frozen=True)
class ServerSettings:
    """How a server listens, admits, times out and stops (the same in every worker)."""

    backlog: int = 4096
    graceful_timeout: float = 10.0
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    #: a session whose client sends nothing for this long is closed; 0: never
    idle_timeout: float = 0.0
    #: decide when full garbage collections run (workers/gc_watch.py); off, Python does
    manage_gc: bool = True
    #: every connection (both ports) opens with a PROXY header; None: none does
    proxy: ProxySettings | None = None
    #: the message bus's backend: "local" or a redis:// URL (workers/bus/backends.py)
    bus: str = "local"


class Sessions:
    """The live sessions of one server, and the factory that creates them.

    Each session gets an id unique within the process; ``on_close`` (if set)
    is called with the id when its connection is gone.
    """

    def __init__(
        self,
        opts: SessionOptions,
        shared_extra: dict[str, Any] | None = None,
        ended: Callable[[BaseServer], None] | None = None,
    ) -> None:
        self.opts = opts
        self._ended = ended
        self.shared_extra = shared_extra or {}
        #: the same for sessions that came in over TLS, marked so (``tls``: True)
        self.tls_extra = {**self.shared_extra, "tls": True}
        self.live: dict[BaseServer, int] = {}
        self.accepted = 0
        #: what happened to sessions, by kind (protocol_errors, ...), for reports
        self.counters: Counter[str] = Counter()
        self.on_close: Callable[[int], None] | None = None
        #: the MUD settings and live figures every session of this server reads
        self.mud = MudServer(opts.mud, lambda: len(self.live))
        #: made here, in the process that serves: its lines name this pid
        self.access = AccessLog() if opts.access_log else None
        #: the message bus of this process (workers/bus): one handle per session
        self.bus = BusHub(shard=int(self.shared_extra.get("shard", 0)), counters=self.counters)

    def new(self, *, tls: bool = False) -> BaseServer:
        """A protocol instance for a connection being served, registered as live.

        ``tls``: the connection came in over TLS; its ``get_extra_info("tls")``
        is True (and its transport's gives ``ssl_object``, ``cipher``, ``peercert``).
        """
        opts = self.opts
        protocol = opts.protocol(
            shell=opts.shell,
            encoding=opts.encoding,
            encoding_errors=opts.encoding_errors,
            force_binary=opts.force_binary,
            connect_maxwait=opts.connect_maxwait,
            limit=opts.limit,
        )
        if tls:
            protocol.shared_extra = self.tls_extra
        elif self.shared_extra:
            protocol.shared_extra = self.shared_extra
        protocol.limits = opts.limits
        protocol.counters = self.counters
        protocol.mud = self.mud
        self.accepted += 1
        self.live[protocol] = protocol.session_id = self.accepted
        protocol.access = self.access
        protocol.bus = self.bus.open(protocol)
        protocol._waiter_closed.add_done_callback(self._closed)
        return protocol

    def _closed(self, waiter: asyncio.Future[Any]) -> None:
        # _waiter_closed's result is the protocol itself (or it was cancelled)
        if waiter.cancelled():
            return
        protocol = waiter.result()
        session_id = self.live.pop(protocol, None)
        if protocol.bus is not None:
            self.bus.closed(protocol.bus)
        self.counters["sessions_ended"] += 1
        count_closed(self.counters, protocol)  # before on_close: see shardd/metrics.py
        if self._ended is not None:
            self._ended(protocol)
        if session_id is not None and self.on_close is not None:
            self.on_close(session_id)

    def say_goodbye(self, message: str = GOODBYE, sessions: Iterable[BaseServer] = ()) -> None:
        """Write ``message`` to ``sessions`` (default: every live one), in its encoding."""
        for protocol in list(sessions or self.live):
            writer = protocol.writer
            if writer is not None and not writer.is_closing():
                data = message if writer.encoding is not None else message.encode("ascii")
                try:
                    writer.write(data)
                except (UnicodeEncodeError, RuntimeError):
                    pass

    def close_all(self, sessions: Iterable[BaseServer] = (), *, reason: str) -> None:
        """Close every session's connection (or those of ``sessions``), saying why
        (``workers.access_log``); a closing transport still sends what it holds."""
        for protocol in list(sessions or self.live):
            protocol.record_close_reason(reason)
            if protocol._transport is not None:
                protocol.flush_output()  # the goodbye written in this loop turn
                protocol._transport.close()

    def abort_all(self, *, reason: str) -> None:
        for protocol in list(self.live):
            protocol.record_close_reason(reason)
            if protocol._transport is not None:
                protocol._transport.abort()

    async def wait_empty(self, timeout: float | None) -> bool:
        """True once no session is left; False if ``timeout`` (None: none) passes first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.live and (deadline is None or loop.time() < deadline):
            waiters = [p._waiter_closed for p in self.live]
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait(waiters, timeout=left)
        return not self.live


class Channel(Protocol):
    """What a server tells whoever supervises it (a worker's supervisor channel)."""

    async def open(self, server: Server) -> None:
        """Connect; called before the server listens."""

    def serving(self) -> None:
        """The server accepts connections now."""

    def stopping(self, mode: StopMode, sessions: int) -> None:
        """The server stopped accepting and winds its sessions down."""

    def close(self) -> None:
        """The server is done."""


class _Unsupervised:
    """The channel of a server nobody supervises (development mode): tells no one."""

    async def open(self, server: Server) -> None:
        pass

    def serving(self) -> None:
        pass

    def stopping(self, mode: StopMode, sessions: int) -> None:
        pass

    def close(self) -> None:
        pass


class Server:
    """Listens on ``sock`` (and ``tls.sock``) and serves telnet sessions until told to stop."""

    def __init__(
        self,
        sock: socket.socket,
        opts: SessionOptions,
        settings: ServerSettings | None = None,
        *,
        shared_extra: dict[str, Any] | None = None,
        counts: PeerCounts | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        """``counts``: this server's row of the table its supervisor shares between
        workers; without one (development mode), a table of its own. ``tls``: a
        second socket, whose clients speak TLS; its sessions are this server's too."""
        self.sock = sock
        self.tls = tls
        self._handshake = Handshake(tls.context, tls.handshake_timeout) if tls else None
        self.sessions = Sessions(opts, shared_extra, ended=self._session_ended)
        # what MSSP tells crawlers (PORT, SSL)
        self.sessions.mud.port = sock.getsockname()[1]
        if tls is not None:
            self.sessions.mud.tls_port = tls.sock.getsockname()[1]
        self.settings = settings = settings or ServerSettings()
        self.backlog = settings.backlog
        self.graceful_timeout = settings.graceful_timeout
        #: the admission check and the stages every new connection goes through
        self.admit: AdmissionCheck | None = Admission(
            self, counts or PeerTable(1).writer(0), settings.admission
        )
        self.stages: list[Stage] = []
        #: stages before admission: they say who the client is
        self.preludes: list[Stage] = []
        if settings.proxy is not None:
            self.preludes.append(ProxyHeaderStage(settings.proxy))
        #: connections not served, by reason
        self.refused: Counter[str] = Counter()
        #: connections admitted and still in their stages (no session yet)
        self.arriving = 0
        self._listeners: list[asyncio.AbstractServer] = []
        self._stop_mode: asyncio.Future[StopMode] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: how long a drain lets sessions go on (the supervisor sends its
        #: reload timeout with ``drain``); 0: until they end
        self.drain_timeout = settings.graceful_timeout
        # a stop or quit asked for while draining: it ends the drain
        self._escalated: asyncio.Future[StopMode] | None = None

    def _session_ended(self, protocol: BaseServer) -> None:
        if protocol.peer_host:  # admitted: counted under that address
            self.release(protocol.peer_host)

    def _new_connection(self) -> asyncio.Protocol:
        if self.admit is None and not self.stages and not self.preludes:
            return self.sessions.new()
        return Arrival(self)

    def _new_tls_connection(self) -> asyncio.Protocol:
        assert self._handshake is not None
        return Arrival(self, [self._handshake, *self.stages], encrypted=True)

    async def serve(
        self, signals: Mapping[int, StopMode], channel: Channel | None = None
    ) -> StopMode:
        """Serve until a signal in ``signals`` or :meth:`stop`; wind down; return how."""
        loop = asyncio.get_running_loop()
        self._stop_mode = loop.create_future()
        for signum, mode in signals.items():
            loop.add_signal_handler(signum, self.stop, mode)
        channel = channel or _Unsupervised()
        gc_policy = GcPolicy(self.sessions.counters, lambda: len(self.sessions.live))
        gc_policy.install(manage=self.settings.manage_gc)
        try:
            await channel.open(self)
            await self._start_bus(channel)
            # create_server listens again on the socket: without backlog= it
            # would shrink the accept queue to asyncio's default of 100
            self._listeners.append(
                await loop.create_server(self._new_connection, sock=self.sock, backlog=self.backlog)
            )
            if self.tls is not None:
                # TLS is a stage (workers/tls.py), not create_server(ssl=): admission
                # runs before the handshake, on the bare connection
                self._listeners.append(
                    await loop.create_server(
                        self._new_tls_connection, sock=self.tls.sock, backlog=self.backlog
                    )
                )
            channel.serving()
            self._start_sweeper()
            mode = await self._stop_mode
            if self._sweeper is not None:
                self._sweeper.cancel()
            # closes only this process's copy of the sockets: a supervisor keeps its own
            for listener in self._listeners:
                listener.close()
            channel.stopping(mode, len(self.sessions.live))
            await self._wind_down(mode)
            await self.bus.close()
            channel.close()
            return mode
        finally:
            gc_policy.remove()
            for signum in signals:
                loop.remove_signal_handler(signum)

    def _start_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper = None
        if self.settings.idle_timeout:
            self._sweeper = asyncio.get_running_loop().create_task(self._close_idle())

    def reconfigure(
        self,
        opts: SessionOptions,
        settings: ServerSettings,
        tls: TlsListener | None = None,
    ) -> None:
        """Serve with new settings from now on, without a restart (a single
        process's reload): sessions opened from now on are built with ``opts``
        (existing ones keep what they were built with); the admission limits,
        the idle and graceful timeouts of ``settings`` apply at once; ``tls``:
        the certificate and handshake timeout for handshakes from now on (its
        socket must be the one served). Backlog and the garbage collector's
        management stay as they were."""
        self.sessions.opts = opts
        self.settings = settings
        self.graceful_timeout = settings.graceful_timeout
        if isinstance(self.admit, Admission):
            self.admit.limits = settings.admission
        if tls is not None and self.tls is not None:
            self.tls = tls
            self._handshake = Handshake(tls.context, tls.handshake_timeout)
        if self.listening:
            self._start_sweeper()

    @property
    def bus(self) -> BusHub:
        """This process's message bus (workers/bus)."""
        return self.sessions.bus

    async def _start_bus(self, channel: Channel) -> None:
        from workers.bus.backends import make_backend
        from workers.channel import SupervisorChannel

        supervised = channel if isinstance(channel, SupervisorChannel) else None
        backend = make_backend(self.settings.bus, self.bus, supervised)
        if backend is not None:
            await backend.start()
            self.bus.backend = backend

    async def _close_idle(self) -> None:
        """Every so often, close the sessions whose clients have sent nothing for
        ``idle_timeout`` seconds; a thousand sessions looked at per loop turn."""
        timeout = self.settings.idle_timeout
        period = min(max(timeout / 10, 1.0), 60.0)
        while True:
            await asyncio.sleep(period)  # the sweep's own period, not a wait for an event
            for n, protocol in enumerate(list(self.sessions.live)):
                if n and not n % IDLE_SWEEP_BATCH:
                    await asyncio.sleep(0)
                if protocol.idle >= timeout and not protocol.closed:
                    self.sessions.counters["idle_timeout"] += 1
                    log.debug("%s: idle for %.0fs, closing", protocol.peer, protocol.idle)
                    self.sessions.say_goodbye(IDLE_GOODBYE, [protocol])
                    self.sessions.close_all([protocol], reason=access_log.IDLE_TIMEOUT)

    def release(self, host: str) -> None:
        """An admitted connection from ``host`` has ended: the admission check may uncount it."""
        release = getattr(self.admit, "release", None)
        if release is not None:
            release(host)

    def counters(self) -> dict[str, int]:
        """What happened in this server so far: refusals by reason, then session events."""
        counts = {f"refused:{reason}": n for reason, n in self.refused.items()}
        counts.update(self.sessions.counters)
        # a gauge among counters: status and metrics take it from live workers only
        counts[bus_hub.SUBSCRIPTIONS] = self.bus.subscription_count
        return counts

    def stop(self, mode: StopMode = "stop") -> None:
        """Ask the server to stop; the first request wins, except that a stop or a
        quit during a drain ends the drain that way."""
        if self._stop_mode is None:
            return
        if not self._stop_mode.done():
            self._stop_mode.set_result(mode)
        elif self._escalated is not None and not self._escalated.done() and mode != "drain":
            self._escalated.set_result(mode)

    @property
    def listening(self) -> bool:
        return bool(self._listeners) and not self.stopping

    @property
    def stopping(self) -> bool:
        return self._stop_mode is not None and self._stop_mode.done()

    @property
    def draining(self) -> bool:
        """Stopped accepting, its sessions going on (neither stopped nor quit since)."""
        return (
            self.stopping
            and self._stop_mode is not None
            and self._stop_mode.result() == "drain"
            and not (self._escalated is not None and self._escalated.done())
        )

    async def _drain(self) -> tuple[StopMode, bool]:
        """Wait for the sessions to end; "drain" if they did, else how to end the
        rest, and whether it is the drain timeout that ended them."""
        loop = asyncio.get_running_loop()
        escalated: asyncio.Future[StopMode] = loop.create_future()
        self._escalated = escalated
        timeout = self.drain_timeout or None
        emptied = loop.create_task(self.sessions.wait_empty(timeout))
        waiting: list[asyncio.Future[Any]] = [emptied, escalated]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if escalated.done():
            emptied.cancel()
            return escalated.result(), False
        if emptied.result():
            return "drain", False
        log.info(
            "drain timeout (%gs) passed: closing %s",
            timeout,
            count(len(self.sessions.live), "session"),
        )
        return "stop", True

    async def _wind_down(self, mode: StopMode) -> None:
        sessions = self.sessions
        timed_out = False
        if mode == "drain":
            # an old worker after a reload: sessions end on their own time,
            # unless the drain timeout passes or a stop comes first
            mode, timed_out = await self._drain()
            if mode == "drain":
                return
        if mode == "stop":
            sessions.say_goodbye()
            sessions.close_all(
                reason=access_log.DRAIN_TIMEOUT if timed_out else access_log.SERVER_STOPPING
            )
            await sessions.wait_empty(self.graceful_timeout)
        else:
            sessions.abort_all(reason=access_log.SERVER_QUITTING)
            # the transports report their loss in the next turn: let them, so
            # that every session's close line is written before the process ends
            await asyncio.sleep(0)


def run_single_process(
    sock: socket.socket,
    opts: SessionOptions,
    settings: ServerSettings,
    tls: TlsListener | None = None,
) -> None:
    """Development mode: a server in this process, on a fresh uvloop loop, no supervisor."""
    server = Server(sock, opts, settings, tls=tls)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve({signal.SIGTERM: "stop", signal.SIGINT: "stop"}))
