"""Real loopback peers for protocol tests: a listener harness and two socket clients.

``Harness`` serves ``BaseServer``/``TelnetServer`` instances on 127.0.0.1 with
``loop.create_server`` and records every protocol it made and every shell it
started. ``RawClient`` is a plain TCP client that sends exactly the bytes a test
gives it (and answers nothing by itself). ``EngineClient`` is a telnet client
built on :class:`workers.telnet.engine.TelnetEngine` in the client role that answers
TTYPE, NAWS, NEW-ENVIRON, CHARSET, TSPEED and XDISPLOC as real clients do.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conftest import async_wait_until

from workers.server_base import BaseServer
from workers.telnet import options
from workers.telnet.engine import (
    Command,
    OptionDisabled,
    OptionEnabled,
    ProtocolError,
    Subnegotiation,
    TelnetEngine,
    escape,
)
from workers.telnet.telopt import (
    BINARY,
    CHARSET,
    CHARSET_ACCEPTED,
    CHARSET_REJECTED,
    CHARSET_REQUEST,
    ECHO,
    IAC,
    NAWS,
    NEW_ENVIRON,
    SB,
    SE,
    SEND,
    SGA,
    TSPEED,
    TTYPE,
    XDISPLOC,
)

TIMEOUT = 10.0


@dataclass
class ShellRun:
    """One started shell: when it started and what it was given."""

    started: float
    reader: Any
    writer: Any
    task: asyncio.Task[Any] | None = None
    ended: asyncio.Future[Any] | None = None


@dataclass
class Harness:
    """Loopback listeners making protocol instances; everything closed at teardown."""

    protocols: list[BaseServer] = field(default_factory=list)
    shells: dict[int, ShellRun] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)

    async def listen(self, cls: type[BaseServer] = BaseServer, **kwargs: Any) -> int:
        """Listen on a fresh loopback port; return it."""
        loop = asyncio.get_running_loop()

        def factory() -> BaseServer:
            proto = cls(**kwargs)
            self.protocols.append(proto)
            return proto

        server = await loop.create_server(factory, "127.0.0.1", 0)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def protocol(self, index: int = 0) -> Any:
        """The ``index``-th protocol made, once its connection_made has run."""
        await async_wait_until(
            lambda: len(self.protocols) > index and self.protocols[index]._transport is not None,
            TIMEOUT,
            "connection_made",
        )
        return self.protocols[index]

    async def shell(self, reader: Any, writer: Any) -> None:
        """A shell that records its start and holds the session open until released."""
        run = ShellRun(time.monotonic(), reader, writer, asyncio.current_task())
        run.ended = asyncio.get_running_loop().create_future()
        self.shells[id(writer.protocol)] = run
        try:
            await self.release.wait()
        finally:
            if not run.ended.done():
                run.ended.set_result(None)

    async def shell_of(self, proto: BaseServer, timeout: float = TIMEOUT) -> ShellRun:
        await async_wait_until(lambda: id(proto) in self.shells, timeout, "shell start")
        return self.shells[id(proto)]

    async def raw_client(self, port: int) -> RawClient:
        client = await RawClient.connect(port)
        self._clients.append(client)
        return client

    async def engine_client(self, port: int, **kwargs: Any) -> EngineClient:
        client = await EngineClient.connect(port, **kwargs)
        self._clients.append(client)
        return client

    async def session(
        self, cls: type[BaseServer] = BaseServer, **kwargs: Any
    ) -> tuple[Any, ShellRun, RawClient]:
        """A listener, one raw client connected to it, and its started shell."""
        kwargs.setdefault("shell", self.shell)
        port = await self.listen(cls, **kwargs)
        client = await self.raw_client(port)
        proto = await self.protocol()
        run = await self.shell_of(proto)
        return proto, run, client

    async def aclose(self) -> None:
        self.release.set()
        for proto in self.protocols:
            transport = proto._transport
            if transport is not None and not transport.is_closing():
                transport.close()
        for client in self._clients:
            await client.aclose()
        tasks = [run.task for run in self.shells.values() if run.task is not None]
        tasks += [p._shell_task for p in self.protocols if p._shell_task is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT)
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for proto in self.protocols:
            await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)


class RawClient:
    """A TCP client sending exactly what it is told; collects all it receives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @property
    def sockname(self) -> tuple[str, int]:
        return self.writer.get_extra_info("sockname")

    def data_segments_in(self) -> int:
        """TCP segments with data this client's socket has received (TCP_INFO)."""
        return data_segments_in(self.writer.get_extra_info("socket"))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read_more(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; received so far: {bytes(self.received)!r}")
        try:
            data = await asyncio.wait_for(self.reader.read(65536), remaining)
        except TimeoutError:
            raise AssertionError(f"timed out; received so far: {bytes(self.received)!r}") from None
        except ConnectionError:
            data = b""
        if not data:
            self.eof = True
        self.received += data

    async def expect(self, pattern: bytes, since: int = 0, timeout: float = TIMEOUT) -> int:
        """Read until ``pattern`` appears at or after offset ``since``; its end offset."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.received.find(pattern, since)
            if i >= 0:
                return i + len(pattern)
            if self.eof:
                raise AssertionError(f"EOF before {pattern!r}; received: {bytes(self.received)!r}")
            await self._read_more(deadline)

    async def expect_len(self, n: int, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            if self.eof:
                raise AssertionError(f"EOF after {len(self.received)} of {n} bytes")
            await self._read_more(deadline)

    async def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.eof:
            await self._read_more(deadline)
        return bytes(self.received)

    async def aclose(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)
        except (ConnectionError, OSError):
            pass


def _ttypes_then_repeat(names: list[str]) -> Callable[[int], str]:
    return lambda i: names[min(i, len(names) - 1)]


class EngineClient:
    """A telnet client over a real socket, answering the server's requests.

    ``ttype(i)`` is the answer to the i-th (0-based) TTYPE SEND. ``env`` is sent
    in reply to every NEW-ENVIRON SEND. ``charset`` is accepted when offered
    (None: reject). ``tspeed``/``xdisploc``, when set, are offered with WILL at
    connect and sent when asked for.
    """

    DEFAULT_LOCAL = frozenset({TTYPE, NAWS, NEW_ENVIRON, CHARSET, BINARY, TSPEED, XDISPLOC})
    DEFAULT_REMOTE = frozenset({SGA, ECHO, BINARY})

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        ttypes: list[str] | Callable[[int], str] | None = None,
        env: dict[str, str] | None = None,
        charset: str | None = "UTF-8",
        naws: tuple[int, int] = (80, 24),
        tspeed: str | None = None,
        xdisploc: str | None = None,
        accept_local: frozenset[int] | set[int] | None = None,
        accept_remote: frozenset[int] | set[int] | None = None,
        ignore: frozenset[int] | set[int] = frozenset(),
    ) -> None:
        """``ignore``: options whose subnegotiations it never answers, though it
        agreed to them."""
        self.reader = reader
        self.writer = writer
        if ttypes is None:
            ttypes = ["xterm-256color", "xterm", "xterm"]
        self.ttype = ttypes if callable(ttypes) else _ttypes_then_repeat(list(ttypes))
        self.env = {} if env is None else env
        self.charset = charset
        self.naws = naws
        self.tspeed = tspeed
        self.xdisploc = xdisploc
        self.ignore = frozenset(ignore)
        local = self.DEFAULT_LOCAL if accept_local is None else accept_local
        remote = self.DEFAULT_REMOTE if accept_remote is None else accept_remote
        self.engine = TelnetEngine("client", accept_local=local, accept_remote=remote)
        self.inband = bytearray()
        self.wire = bytearray()  # every byte received, commands included
        self.events: list[Any] = []
        self.subnegotiations: list[Subnegotiation] = []
        #: total wire length (IAC SB opt ... IAC SE) of each subnegotiation received
        self.sb_wire_lengths: list[tuple[int, int]] = []
        self.ttype_requests = 0
        self.eof = False
        if tspeed is not None:
            self.engine.request_local(TSPEED)
        if xdisploc is not None:
            self.engine.request_local(XDISPLOC)
        self._flush()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    async def connect(cls, port: int, **kwargs: Any) -> EngineClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, **kwargs)

    @property
    def sockname(self) -> tuple[str, int]:
        return self.writer.get_extra_info("sockname")

    def _flush(self) -> None:
        if self.engine.has_output and not self.writer.is_closing():
            self.writer.write(self.engine.data_to_send())

    async def _run(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.wire += data
                self.inband += self.engine.receive(data)
                for event in self.engine.take_events():
                    self.events.append(event)
                    self._handle(event)
                self._flush()
        except ConnectionError:
            pass
        finally:
            self.eof = True

    def _handle(self, event: Any) -> None:
        engine = self.engine
        if isinstance(event, OptionEnabled):
            if event.local and event.option == NAWS:
                self.send_naws(*self.naws)
            return
        if isinstance(event, (OptionDisabled, Command, ProtocolError)):
            return
        assert isinstance(event, Subnegotiation)
        self.subnegotiations.append(event)
        self.sb_wire_lengths.append((event.option, 5 + len(escape(event.payload))))
        opt, payload = event.option, event.payload
        if opt in self.ignore:
            return
        if opt == TTYPE and payload[:1] == bytes((SEND,)):
            value = self.ttype(self.ttype_requests)
            self.ttype_requests += 1
            engine.send_subnegotiation(TTYPE, options.build_is(value))
        elif opt == NEW_ENVIRON and payload[:1] == bytes((SEND,)):
            engine.send_subnegotiation(NEW_ENVIRON, options.build_environ_is(self.env))
        elif opt == CHARSET and payload[:1] == bytes((CHARSET_REQUEST,)):
            _verb, offered = options.parse_charset(payload)
            if self.charset is not None and self.charset in offered:
                reply = bytes((CHARSET_ACCEPTED,)) + self.charset.encode("ascii")
            else:
                reply = bytes((CHARSET_REJECTED,))
            engine.send_subnegotiation(CHARSET, reply)
        elif opt == TSPEED and payload[:1] == bytes((SEND,)) and self.tspeed is not None:
            engine.send_subnegotiation(TSPEED, options.build_is(self.tspeed))
        elif opt == XDISPLOC and payload[:1] == bytes((SEND,)) and self.xdisploc is not None:
            engine.send_subnegotiation(XDISPLOC, options.build_is(self.xdisploc))

    def send_naws(self, cols: int, rows: int) -> None:
        self.engine.send_subnegotiation(NAWS, options.build_naws(cols, rows))
        self._flush()

    def send_command(self, cmd: int) -> None:
        self.engine.send_command(cmd)
        self._flush()

    def send(self, data: bytes) -> None:
        """In-band data, IACs doubled."""
        self.writer.write(escape(data))

    def commands_seen(self, command: int) -> int:
        """How many IAC <command> (GA, EOR, ...) have arrived."""
        return sum(1 for e in self.events if isinstance(e, Command) and e.cmd == command)

    def data_segments_in(self) -> int:
        """TCP segments with data this client's socket has received (TCP_INFO)."""
        return data_segments_in(self.writer.get_extra_info("socket"))

    async def aclose(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)
        except (ConnectionError, OSError):
            pass
        await asyncio.wait({self._task}, timeout=TIMEOUT)


# struct tcp_info (linux/tcp.h): tcpi_data_segs_in is the u32 at byte 152 (Linux 4.6+)
_DATA_SEGS_IN = struct.Struct("I")
_DATA_SEGS_IN_OFFSET = 152


def data_segments_in(sock: Any) -> int:
    """Segments with data received on ``sock``: one per write of the peer's, on loopback."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(_DATA_SEGS_IN.unpack_from(info, _DATA_SEGS_IN_OFFSET)[0])


def cmd(*codes: int) -> bytes:
    return bytes((IAC, *codes))


def sb(opt: int, payload: bytes) -> bytes:
    """IAC SB opt payload IAC SE (payload IACs doubled)."""
    return bytes((IAC, SB, opt)) + escape(payload) + bytes((IAC, SE))
