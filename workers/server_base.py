"""BaseServer: the per-connection telnet protocol, with telnetlib3 1.x's API.

The constructor, methods and properties are those of telnetlib3's 1.x
``BaseServer`` (including ``log``, ``loop`` and ``_waiter_closed``), so shells
and protocol subclasses written for it run here. The protocol work itself is
done by the sans-I/O :class:`~workers.telnet.engine.TelnetEngine`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from workers import access_log
from workers.access_log import AccessLog
from workers.limits import DEFAULT_LIMITS, SessionLimits
from workers.log_limits import PROTOCOL_WARNINGS
from workers.mud import DEFAULT_MUD, MudServer, MudSession
from workers.stream_reader import DEFAULT_LIMIT, TelnetReader
from workers.stream_writer import TelnetWriter
from workers.telnet import mccp
from workers.telnet.engine import (
    DATA,
    HELD,
    Command,
    OptionDisabled,
    OptionEnabled,
    Subnegotiation,
    TelnetEngine,
)
from workers.telnet.telopt import name_command, name_option

if TYPE_CHECKING:
    from workers.bus.session import SessionHandle

_monotonic = time.monotonic
# Linux's; elsewhere delayed ACKs are left as they are
TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

# Why reading from a client is paused, as bits of BaseServer._read_holds.
_READER_FULL = 1  # the shell has not taken what was read (twice the reader's limit)
_OUTPUT_FULL = 2  # the client has not taken what was written (the high-water mark)
_PARSING = 4  # the engine holds received bytes it has not parsed yet (its budget)
_INFLATING = 8  # compressed input (MCCP3) is waiting to be inflated, a chunk a turn
_WORK = _PARSING | _INFLATING  # holds that go on by themselves, a turn at a time

# A session whose client leaves too much output unread gets this, then
# OVERFLOW_GRACE_SECONDS to take it before its connection is aborted.
OVERFLOW_GOODBYE = b"\r\nToo much output is waiting for you; closing the session.\r\n"
OVERFLOW_GRACE_SECONDS = 5.0

# How long a shell may go on after its connection is lost before it is cancelled:
# enough to see EOF and clean up, not enough to leak a task per lost connection.
SHELL_GRACE_SECONDS = 1.0

# Output queued in one loop turn past this is written at once rather than at the
# turn's end: a shell that writes without yielding still meets backpressure
# (uvloop's high-water mark is 64 KiB).
QUEUE_FLUSH_AT = 2**16


_NO_EXTRA: dict[str, Any] = {}
# the MUD settings of a protocol made outside a Server: nothing offered
_NO_MUD = MudServer(DEFAULT_MUD)
# the counts of a protocol no server counts for (made outside a Server)
_UNCOUNTED: Counter[str] = Counter()


def _named(encoding: str | bool | None) -> str:
    """The encoding given to the initializer, or US-ASCII when it names none."""
    return encoding if isinstance(encoding, str) and encoding else "US-ASCII"


def _current_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.get_event_loop_policy().get_event_loop()


class BaseServer(asyncio.Protocol):
    """Base Telnet Server Protocol."""

    #: options we perform when asked (DO) and let the peer perform (WILL)
    accept_local: frozenset[int] = frozenset()
    accept_remote: frozenset[int] = frozenset()

    # A worker holds thousands of these: slots instead of an instance dict.
    # (A subclass without __slots__ still gets a dict for its own attributes.)
    __slots__ = (
        "_acknowledged",
        "_advanced",
        "_check_later",
        "_close_reason",
        "_deflate",
        "_drain_waiters",
        "_encoding_errors",
        "_engine",
        "_extra",
        "_handover",
        "_held_soon",
        "_inflate",
        "_last_received",
        "_limit",
        "_loop",
        "_lost",
        "_mud",
        "_queued",
        "_read_holds",
        "_shell_task",
        "_transport",
        "_waiter_closed",
        "_waiter_connected",
        "_when_connected",
        "access",
        "bus",
        "closed",
        "connect_maxwait",
        "counters",
        "default_encoding",
        "force_binary",
        "limits",
        "log",
        "mud",
        "peer_host",
        "protocol_errors",
        "reader",
        "rx_bytes",
        "session_id",
        "shared_extra",
        "shell",
        "tx_bytes",
        "writer",
        "writing_paused",
    )

    def __init__(
        self,
        shell: Callable[..., Any] | None = None,
        log: logging.Logger | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        _waiter_connected: asyncio.Future[Any] | None = None,
        _waiter_closed: asyncio.Future[Any] | None = None,
        encoding: str | bool | None = "utf8",
        encoding_errors: str = "strict",
        force_binary: bool = False,
        connect_maxwait: float = 4.0,
        limit: int | None = None,
    ) -> None:
        """Class initializer."""
        self._when_connected: float | None = None
        self._last_received: float | None = None
        self._transport: asyncio.Transport | None = None
        self.reader: TelnetReader | None = None
        self.writer: TelnetWriter | None = None
        self.log = log or logging.getLogger("shardd.session")
        self._loop = loop or _current_loop()
        self._waiter_connected = _waiter_connected or self._loop.create_future()
        self._waiter_closed = _waiter_closed or self._loop.create_future()
        self.shell = shell
        self.default_encoding = encoding
        self._encoding_errors = encoding_errors
        self.force_binary = force_binary
        #: maximum duration for check_negotiation().
        self.connect_maxwait = connect_maxwait
        self._limit = limit or DEFAULT_LIMIT
        self._extra: dict[str, Any] = {}
        #: values common to every session of the process (shard, ...), set by the
        #: server that creates the protocol: one dict shared by all its sessions
        self.shared_extra: dict[str, Any] = _NO_EXTRA
        self._engine = TelnetEngine(
            "server", accept_local=self.accept_local, accept_remote=self.accept_remote
        )
        self._advanced = False
        self._acknowledged = False
        #: the connection is gone or being closed by us: output is dropped
        self.closed = False
        self._lost = False  # connection_lost was called
        self._read_holds = 0  # why reading is paused: _READER_FULL, _OUTPUT_FULL, _WORK
        self._held_soon = False  # _parse_held is scheduled
        self._check_later: asyncio.TimerHandle | None = None
        self._shell_task: asyncio.Task[Any] | None = None
        #: the transport's write buffer is over its high-water mark
        self.writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        # what was written in this loop turn, sent at its end in one write
        self._queued: bytes | bytearray | None = None
        self.rx_bytes = 0
        self.tx_bytes = 0
        #: malformed or refused input from this client, as warned about
        self.protocol_errors = 0
        #: the client's address as the server's admission counted it ("" if not)
        self.peer_host = ""
        #: the server's bounds (set by the server that creates the protocol)
        self.limits: SessionLimits = DEFAULT_LIMITS
        #: the server's event counts, shared by its sessions (set likewise)
        self.counters: Counter[str] = _UNCOUNTED
        #: the MUD protocols offered, and the server's live figures (set likewise)
        self.mud: MudServer = _NO_MUD
        # MCCP2: our output's compressor; MCCP3: the client's input's decompressor
        self._deflate: mccp.Compressor | None = None
        self._inflate: mccp.Decompressor | None = None
        # received bytes the engine stopped before (IAC SB MCCP3 IAC SE), to
        # be inflated, or parsed again, once what came before is handled
        self._handover: bytes | None = None
        self._mud: MudSession | None = None  # GMCP and MSDP state, once used
        #: the number the server gave this session (unique within its process); 0: none
        self.session_id = 0
        #: where the session's open and close lines go (set by the server); None: nowhere
        self.access: AccessLog | None = None
        #: this session's handle on the message bus (set by the server); None: no bus
        self.bus: SessionHandle | None = None
        self._close_reason = ""

    # -------------------------------------------------------------- asyncio side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called when a connection is made.

        Sets attributes _transport, _when_connected, _last_received, reader and
        writer, then begins negotiation. Ensure super().connection_made(transport)
        is called when derived.
        """
        # uvloop's transports are not registered subclasses of asyncio's
        self._transport = cast(asyncio.Transport, transport)
        self._when_connected = self._last_received = _monotonic()
        self._engine.budget = self.limits.parse_budget
        if self.access is not None:
            self.access.opened(self)
        try:
            self._start_session(self._transport)
        except Exception as exc:
            # a half-made session would hang its client forever: drop it
            self.log.error(
                "%s: cannot start session: %s: %s", self.peer, type(exc).__name__, exc, exc_info=exc
            )
            self.record_close_reason(access_log.START_FAILED)
            self._transport.abort()

    def _start_session(self, transport: asyncio.Transport) -> None:
        binary = self.default_encoding is False
        self.reader = TelnetReader(
            limit=self._limit,
            encoding=None if binary else self.encoding(incoming=True),
            encoding_errors=self._encoding_errors,
            pause=self._reader_full,
            resume=self._reader_has_room,
            loop=self._loop,
        )
        self.writer = TelnetWriter(
            transport,
            self,
            encoding=None if binary else self.encoding(outgoing=True),
            encoding_errors=self._encoding_errors,
        )
        self._waiter_connected.add_done_callback(self.begin_shell)
        self.begin_negotiation()
        self.flush()
        self._check_later = self._loop.call_later(self.connect_maxwait, self._negotiation_deadline)
        self._loop.call_soon(self._negotiation_progress)

    def data_received(self, data: bytes) -> None:
        """Process bytes received by transport."""
        self._last_received = _monotonic()
        self.rx_bytes += len(data)
        if self._inflate is not None:
            sent = self.tx_bytes
            self._inflate_input(data)
            if self.tx_bytes == sent and not self._waiter_connected.done():
                self._ack_now()  # the negotiation goes on inside the stream
            return
        engine = self._engine
        # the engine's own fast path, checked here to save a call per chunk:
        # between sequences, a chunk without IAC is all in-band data, and
        # parses to no event and no reply
        if engine.parser_state == DATA and b"\xff" not in data:
            self.reader.feed_data(data)  # type: ignore[union-attr]
            return
        sent = self.tx_bytes
        self._parse(data)
        if self.tx_bytes == sent and not self._waiter_connected.done():
            self._ack_now()  # (an answer would have carried the ACK)

    def _ack_now(self) -> None:
        """Acknowledge what was received at once, not after the delayed-ACK timer.

        Clients that leave Nagle's algorithm on (TinTin++, TinyFugue) send
        their first reply and hold the rest until it is acknowledged; a reply
        that needs no answer from us would otherwise wait 40 ms for its ACK,
        once per round trip of negotiation. Only while negotiating.
        """
        if TCP_QUICKACK is None or self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            except OSError:
                pass

    def _parse(self, data: bytes) -> None:
        engine = self._engine
        inband = engine.receive(data)
        if engine.events:
            self._process_events()
        elif engine.has_output:  # refusals and timing marks come with no event
            self.flush()
        if inband:
            self.reader.feed_data(inband)  # type: ignore[union-attr]
        handover = self._handover
        if handover is not None:
            # what followed IAC SB MCCP3 IAC SE: compressed, if MCCP3 started
            self._handover = None
            if self._read_holds & _PARSING:
                self._release_reading(_PARSING)
            self._inflate_input(handover)
            return
        if engine.parser_state == HELD:
            # the engine stopped at its budget: the rest waits for a later turn
            # of the loop, so that a flood of commands cannot starve other sessions
            self._hold_reading(_PARSING)
            self._schedule_held()
        elif self._read_holds & _PARSING:
            self._release_reading(_PARSING)

    def _schedule_held(self) -> None:
        # another hold (a full reader, unread output) defers the rest until released
        if not self._held_soon and not self._read_holds & ~_WORK:
            self._held_soon = True
            self._loop.call_soon(self._parse_held)

    def _parse_held(self) -> None:
        """The next turn's share of held work: parsing first, then inflating."""
        self._held_soon = False
        if self._lost or self._read_holds & ~_WORK:
            return
        if self._read_holds & _PARSING:
            self._parse(b"")
        elif self._read_holds & _INFLATING:
            self._inflate_input(b"")

    # ------------------------------------------------------- compressed input

    def take_compressed_input(self) -> None:
        """Called on the client's ``IAC SB MCCP3 IAC SE`` (MCCP3 agreed): what
        follows it is a zlib stream, inflated before it is parsed.

        Not called (a refused or repeated start), the engine parses what
        follows as telnet, from the next loop turn."""
        if self._inflate is None:
            self._handover = self._engine.take_held()
            self._inflate = mccp.Decompressor()

    def _inflate_input(self, data: bytes) -> None:
        inflate = self._inflate
        if inflate is None:  # the stream ended while this waited
            if data:
                self._parse(data)
            return
        try:
            plain, rest = inflate.decompress(data)
        except mccp.MCCPError as exc:
            self._broken_stream(exc)
            return
        if inflate.finished:
            # the client ended its stream: what follows is plain telnet again
            self._inflate = None
        if plain or rest:
            self._parse(plain + rest if rest else plain)
        if self._lost or self.closed:
            return
        if inflate.pending and self._inflate is inflate:
            self._hold_reading(_INFLATING)
            self._schedule_held()
        elif self._read_holds & _INFLATING:
            self._release_reading(_INFLATING)

    def _broken_stream(self, exc: Exception) -> None:
        """A client's compressed stream that cannot be inflated: one line, and the
        session is closed (nothing after it can be parsed)."""
        self._inflate = None
        self.protocol_errors += 1
        self.counters["protocol_errors"] += 1
        self.counters["mccp3_broken"] += 1
        PROTOCOL_WARNINGS.warning(
            self.log, self._peer_host(), "%s: MCCP3: %s; closing", self.peer, exc
        )
        self.record_close_reason(access_log.PROTOCOL_ERROR)
        self._close_transport()

    def eof_received(self) -> bool:
        """Called when the other end calls write_eof() or equivalent.

        This callback may be exercised by the nc(1) client argument -z.
        """
        if self.log.isEnabledFor(logging.DEBUG):  # self.peer is not free
            self.log.debug("%s: EOF received, closing", self.peer)
        self.record_close_reason(access_log.CLIENT_CLOSED)
        self.reader.feed_eof()  # type: ignore[union-attr]
        self.flush_output()
        self._transport.close()  # type: ignore[union-attr]
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Called when the connection is lost or closed.

        ``exc`` is None when closed by EOF or by us.
        """
        if self._lost:
            return
        self._lost = self.closed = True
        self._queued = None
        if not self._close_reason:
            self._close_reason = (
                access_log.CLIENT_CLOSED if exc is None else access_log.connection_error(exc)
            )
        if self.log.isEnabledFor(logging.DEBUG):  # self.peer is not free
            self.log.debug("%s: connection closed: %s", self.peer, exc or "EOF")
        if self._check_later is not None:
            self._check_later.cancel()
            self._check_later = None
        if self.reader is not None:
            if exc is None:
                self.reader.feed_eof()
            else:
                self.reader.set_exception(exc)
        if not self._waiter_connected.done():
            self._waiter_connected.cancel()
        task = self._shell_task
        if task is not None and not task.done():
            self._loop.call_later(SHELL_GRACE_SECONDS, task.cancel)
        self._wake_drainers(exc or ConnectionResetError("connection lost"))
        self._deflate = self._inflate = None
        if self._mud is not None:
            self._mud.close()
        if self.access is not None:
            self.access.closed(self)
        if not self._waiter_closed.done():
            self._waiter_closed.set_result(self)

    def pause_writing(self) -> None:
        # Replies to what the client sends are output too (a DO TIMING-MARK
        # flood): a client that does not read gets nothing more read from it.
        self.writing_paused = True
        self._hold_reading(_OUTPUT_FULL)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._release_reading(_OUTPUT_FULL)
        self._wake_drainers(None)

    def _hold_reading(self, why: int) -> None:
        if not self._read_holds and self._transport is not None and not self._lost:
            self._transport.pause_reading()
        self._read_holds |= why

    def _release_reading(self, why: int) -> None:
        self._read_holds &= ~why
        if self._lost or self._transport is None:
            return
        if not self._read_holds:
            self._transport.resume_reading()
        elif not self._read_holds & ~_WORK:
            # only held work is left: go on with it (parse, or inflate)
            self._schedule_held()

    def _reader_full(self) -> None:
        self._hold_reading(_READER_FULL)

    def _reader_has_room(self) -> None:
        self._release_reading(_READER_FULL)

    def check_output(self) -> None:
        """Close the session if its client leaves more than ``limits.max_output_buffer``
        bytes unread: called after a write while writing is paused."""
        transport = self._transport
        if transport is None or self.closed:
            return
        size = transport.get_write_buffer_size()
        limit = self.limits.max_output_buffer
        if size <= limit:
            return
        self.counters["output_overflow"] += 1
        self.record_close_reason(access_log.OUTPUT_OVERFLOW)
        PROTOCOL_WARNINGS.warning(
            self.log,
            self._peer_host(),
            "%s: %d bytes of output waiting, more than %d: the client is not reading; closing",
            self.peer,
            size,
            limit,
        )
        self._queued = None
        self._write(OVERFLOW_GOODBYE)
        self.closed = True  # later writes are dropped, and drain() raises
        transport.close()
        # close() waits for the buffer to drain, which a client that never
        # reads never lets happen: abort after a grace
        self._loop.call_later(OVERFLOW_GRACE_SECONDS, transport.abort)

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    async def wait_writable(self) -> None:
        """Wait until the transport takes writes again; ConnectionResetError once closed."""
        if self.closed:
            raise ConnectionResetError("connection lost")
        if not self.writing_paused:
            return
        waiter = self._loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        await waiter

    # ----------------------------------------------------------------- output

    def _send(self, data: bytes) -> None:
        """Write bytes already escaped for the wire: now, or after what is queued."""
        if self.closed:
            return
        self.tx_bytes += len(data)
        if self._queued is not None:
            self.queue(data)
            return
        self._write(data)
        if self.writing_paused:
            self.check_output()

    def flush(self) -> None:
        """Send what the engine has queued (replies, requests), after the shell's output."""
        if self._engine.has_output:
            self._send(self._engine.data_to_send())

    def queue(self, data: bytes) -> None:
        """Bytes already escaped for the wire, sent at the end of this loop turn.

        Everything queued in one turn goes out in one write, so a shell's
        prompt and its IAC EOR, or a line's echo, share one TCP segment. The
        caller counts ``tx_bytes``.
        """
        queued = self._queued
        if queued is None:
            if len(data) >= QUEUE_FLUSH_AT:
                self._queued = data
                self.flush_output()
                return
            self._queued = data
            self._loop.call_soon(self.flush_output)
            return
        if type(queued) is not bytearray:
            queued = self._queued = bytearray(queued)
        queued += data
        if len(queued) >= QUEUE_FLUSH_AT:
            self.flush_output()

    def flush_output(self) -> None:
        """Write what was queued in this loop turn now, rather than at its end."""
        queued = self._queued
        if queued is None:
            return
        self._queued = None
        if self.closed:
            return
        self._write(queued)
        if self.writing_paused:
            self.check_output()

    def _write(self, data: bytes | bytearray) -> None:
        """Every byte to the client goes out here: through the compressor while
        MCCP2 is on (a sync flush per write, so the client inflates it at once)."""
        deflate = self._deflate
        if deflate is not None:
            data = deflate.compress(data)
        self._transport.write(data)  # type: ignore[union-attr]

    def start_compressing(self) -> None:
        """MCCP2: send ``IAC SB MCCP2 IAC SE`` after everything so far, then
        compress all further output (the client agreed: DO MCCP2)."""
        if self._deflate is not None or self.closed:
            return
        self.flush()
        self._send(mccp.START_MCCP2)
        self.flush_output()
        if self.closed:
            return
        self._deflate = mccp.Compressor()

    def stop_compressing(self) -> None:
        """MCCP2 off (DONT MCCP2): end the stream after what is queued; plain from then."""
        deflate = self._deflate
        if deflate is None:
            return
        self.flush_output()
        self._deflate = None
        if not self.closed and self._transport is not None:
            self._transport.write(deflate.end())

    def mud_session(self) -> MudSession:
        """This session's GMCP inbox and MSDP variables, made on first use."""
        mud = self._mud
        if mud is None:
            mud = self._mud = MudSession(self.mud.options.max_gmcp_queue)
            if self._lost:  # asked for after the end: its iterators end at once
                mud.close()
        return mud

    @property
    def compressing(self) -> bool:
        """Whether output is compressed now (MCCP2)."""
        return self._deflate is not None

    @property
    def inflating(self) -> bool:
        """Whether the client's input is compressed now (MCCP3)."""
        return self._inflate is not None

    # ------------------------------------------------------------ properties

    @property
    def engine(self) -> TelnetEngine:
        """The session's sans-I/O telnet engine (option state, commands to send)."""
        return self._engine

    @property
    def duration(self) -> float:
        """Time elapsed since client connected, in seconds as float."""
        if self._when_connected is None:
            return 0.0
        return _monotonic() - self._when_connected

    @property
    def idle(self) -> float:
        """Time elapsed since data last received, in seconds as float."""
        if self._last_received is None:
            return 0.0
        return _monotonic() - self._last_received

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Get optional server protocol or transport information."""
        if name in self._extra:
            return self._extra[name]
        if self._transport is not None:
            missing = _NO_EXTRA
            value = self._transport.get_extra_info(name, missing)
            if value is not missing:
                return value
        return self.shared_extra.get(name, default)

    def set_extra(self, values: Mapping[str, Any]) -> None:
        """Values ``get_extra_info`` gives before the transport's: a PROXY header's
        ``peername`` and ``sockname`` (the client behind the proxy), its TLVs."""
        self._extra.update(values)

    @property
    def peer(self) -> str:
        """The client's address as ``host:port``, for log lines."""
        peer = self.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer)

    @property
    def close_reason(self) -> str:
        """Why the session closed, or is closing (``workers.access_log``'s vocabulary:
        ``client closed``, ``shell ended``, ``idle timeout``, ...); "" while it is open."""
        return self._close_reason

    def record_close_reason(self, reason: str) -> None:
        """Say why the session is being closed, before closing it; the first reason stays."""
        if not self._close_reason:
            self._close_reason = reason

    def protocol_warning(self, msg: str, *args: Any) -> None:
        """Warn that the client sent something malformed or refused; the session goes on.

        Counted for the session and the server, and logged naming the peer, at
        most so many lines per peer host and per process (workers/log_limits.py).
        """
        self.protocol_errors += 1
        self.counters["protocol_errors"] += 1
        PROTOCOL_WARNINGS.warning(
            self.log,
            self._peer_host(),
            "%s: " + msg,
            self.peer,
            *args,
            extra=self.log_fields("protocol_warning"),
        )

    def log_fields(self, event: str) -> dict[str, object]:
        """Fields naming this session for a structured (JSON) log line about it."""
        host, port = access_log.split_peer(self.get_extra_info("peername"))
        return {
            "event": event,
            "peer": host,
            "peer_port": port,
            "shard": self.shared_extra.get("shard"),
            "session": f"{os.getpid()}.{self.session_id}" if self.session_id else None,
        }

    def _peer_host(self) -> str:
        if self.peer_host:
            return self.peer_host
        peer = self.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)

    # ------------------------------------------------------------ negotiation

    def begin_negotiation(self) -> None:
        """Begin on-connect negotiation.

        A Telnet server is expected to demand preferred session options
        immediately after connection. Deriving implementations should always
        call super().begin_negotiation().
        """

    def begin_advanced_negotiation(self) -> None:
        """Begin advanced negotiation.

        Called once on receipt of the first DO or WILL acknowledgement, when
        negotiation_should_advance() agrees.
        """

    def encoding(self, outgoing: bool = False, incoming: bool = False) -> str:
        """Encoding that should be used for the direction indicated.

        The base implementation always returns the encoding given to class
        initializer, or, when unset (None), US-ASCII.
        """
        return _named(self.default_encoding)

    def negotiation_should_advance(self) -> bool:
        """Whether advanced negotiation should commence.

        The base implementation returns True if any negotiation options were
        affirmatively acknowledged by client.
        """
        return self._acknowledged

    def check_negotiation(self, final: bool = False) -> bool:
        """Callback, return whether negotiation is complete.

        The base rule: complete when none of our option requests is still
        unanswered. Called on each new command received until negotiation is
        final, or after connect_maxwait has elapsed (with final=True).
        Ensure super().check_negotiation() is called and conditionally combined
        when derived.
        """
        return not self._engine.has_pending()

    def _negotiation_progress(self) -> None:
        if self._waiter_connected.done() or self.closed:
            return
        if self.check_negotiation(final=False):
            self._negotiation_done()
        self.flush()

    def _negotiation_deadline(self) -> None:
        self._check_later = None
        if self._waiter_connected.done() or self.closed:
            return
        if not self.check_negotiation(final=True):
            pending = ", ".join(
                f"{'WILL' if local else 'DO'} {name_option(opt)}"
                for local, opt in self._engine.pending()
            )
            self.log.debug(
                "%s: negotiation incomplete after %.1fs%s",
                self.peer,
                self.connect_maxwait,
                f" (unanswered: {pending})" if pending else "",
            )
        self._negotiation_done()

    def _negotiation_done(self) -> None:
        if self._check_later is not None:
            self._check_later.cancel()
            self._check_later = None
        self._waiter_connected.set_result(self)

    # ----------------------------------------------------------------- events

    def _process_events(self) -> None:
        for event in self._engine.take_events():
            if isinstance(event, OptionEnabled):
                self._acknowledged = True
                self.on_option_enabled(event.option, event.local)
                if not self._advanced and self.negotiation_should_advance():
                    self._advanced = True
                    self.begin_advanced_negotiation()
            elif isinstance(event, OptionDisabled):
                self.on_option_disabled(event.option, event.local, event.refused)
            elif isinstance(event, Subnegotiation):
                self.on_subnegotiation(event.option, event.payload)
            elif isinstance(event, Command):
                self.on_command(event.cmd)
            else:  # ProtocolError
                self.protocol_warning("%s", event.reason)
        if not self._waiter_connected.done() and not self.closed:
            self._negotiation_progress()
        # after the check: a check may ask for more (TelnetServer's timing marks)
        self.flush()

    def on_option_enabled(self, option: int, local: bool) -> None:
        """An option is now on (``local``: we perform it). For subclasses."""

    def on_option_disabled(self, option: int, local: bool, refused: bool) -> None:
        """An option is now off, or our request for it was ``refused``. For subclasses."""

    def on_subnegotiation(self, option: int, payload: bytes) -> None:
        """A complete subnegotiation arrived. For subclasses."""
        if self.log.isEnabledFor(logging.DEBUG):  # self.peer is not free
            self.log.debug("%s: ignored subnegotiation of %s", self.peer, name_option(option))

    def on_command(self, cmd: int) -> None:
        """A two-byte command (AYT, IP, GA, ...) arrived. For subclasses."""
        if self.log.isEnabledFor(logging.DEBUG):  # self.peer is not free
            self.log.debug("%s: received IAC %s", self.peer, name_command(cmd))

    # ------------------------------------------------------------------ shell

    def begin_shell(self, future: asyncio.Future[Any]) -> None:
        """Start the shell once negotiation is over (a done callback)."""
        if future.cancelled() or self.closed or self.shell is None:
            return
        mode = getattr(self.shell, "telnet_mode", None)  # workers.stream_writer.starts_in
        if mode is not None and self.writer is not None and self.writer.mode != mode:
            self.writer.set_mode(mode)
        try:
            result = self.shell(self.reader, self.writer)
        except Exception as exc:  # a plain function: it failed before it began
            self._shell_failed(exc)
            return
        if asyncio.iscoroutine(result):
            self._shell_task = self._loop.create_task(result)
            self._shell_task.add_done_callback(self._shell_done)

    def _shell_done(self, task: asyncio.Task[Any]) -> None:
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, ConnectionError) and self.closed:
            # the peer went away mid-read or mid-drain: routine, not a shell bug
            self.log.debug("%s: shell ended by lost connection: %s", self.peer, exc)
        elif exc is not None:
            self._shell_failed(exc)
            return
        self.record_close_reason(access_log.SHELL_ENDED)
        self._close_transport()

    def _shell_failed(self, exc: BaseException) -> None:
        """One line naming the peer and where the shell failed; the traceback at debug."""
        self.counters["shell_errors"] += 1
        self.record_close_reason(access_log.SHELL_FAILED)
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" (at {frame[0].filename}:{frame[0].lineno} in {frame[0].name})" if frame else ""
        message = "%s: shell failed: %s: %s%s"
        args = (self.peer, type(exc).__name__, exc, where)
        PROTOCOL_WARNINGS.warning(
            self.log,
            self._peer_host(),
            message,
            *args,
            level=logging.ERROR,
            extra=self.log_fields("shell_failed"),
        )
        self.log.debug("%s: shell traceback", self.peer, exc_info=exc)
        self._close_transport()

    def _close_transport(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self.flush_output()
            self._transport.close()
