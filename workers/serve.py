"""Serving sessions on a listening socket inside one event loop.

Development mode (``shardd serve --workers 0``) runs this directly in the
``shardd`` process; supervised workers run it on their shard's socket.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from workers.server import TelnetServer
from workers.server_base import BaseServer

log = logging.getLogger("workers.serve")

GOODBYE = "\r\nThe server is shutting down. Goodbye.\r\n"


@dataclass
class SessionOptions:
    """What every protocol instance of a listener is built with."""

    shell: Callable[..., Any] | None
    protocol: type[BaseServer] = TelnetServer
    encoding: str | bool = "utf8"
    encoding_errors: str = "strict"
    force_binary: bool = False
    connect_maxwait: float = 4.0
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Sessions:
    """The live sessions of one process, and the factory that creates them.

    Each session gets an id unique within the process; ``on_close`` (if set)
    is called with the id when its connection is gone.
    """

    def __init__(self, opts: SessionOptions) -> None:
        self.opts = opts
        self.live: dict[BaseServer, int] = {}
        self.accepted = 0
        self.on_close: Callable[[int], None] | None = None

    def __call__(self) -> BaseServer:
        opts = self.opts
        protocol = opts.protocol(
            shell=opts.shell,
            encoding=opts.encoding,
            encoding_errors=opts.encoding_errors,
            force_binary=opts.force_binary,
            connect_maxwait=opts.connect_maxwait,
            limit=opts.limit,
        )
        if opts.extra:
            protocol._process_extra = opts.extra
        self.accepted += 1
        self.live[protocol] = self.accepted
        protocol._waiter_closed.add_done_callback(self._closed)
        return protocol

    def _closed(self, waiter: asyncio.Future[BaseServer]) -> None:
        # _waiter_closed's result is the protocol itself (or it was cancelled)
        if waiter.cancelled():
            return
        session_id = self.live.pop(waiter.result(), None)
        if session_id is not None and self.on_close is not None:
            self.on_close(session_id)

    def say_goodbye(self, message: str = GOODBYE) -> None:
        for protocol in list(self.live):
            writer = protocol.writer
            if writer is not None and not writer.is_closing():
                data = message if writer.encoding is not None else message.encode("ascii")
                try:
                    writer.write(data)
                except (UnicodeEncodeError, RuntimeError):
                    pass

    def close_all(self) -> None:
        for protocol in list(self.live):
            if protocol._transport is not None:
                protocol._transport.close()

    async def wait_empty(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.live and loop.time() < deadline:
            waiters = [p._waiter_closed for p in self.live]
            await asyncio.wait(waiters, timeout=max(0.0, deadline - loop.time()))
        return not self.live


async def serve_until_signal(
    sock: socket.socket,
    sessions: Sessions,
    *,
    graceful_timeout: float = 10.0,
    backlog: int = 4096,
) -> None:
    """Serve ``sock`` until SIGTERM or SIGINT; then say goodbye and close."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # create_server listens again on the socket: without backlog= it would
    # shrink the queue to asyncio's default of 100
    server = await loop.create_server(sessions, sock=sock, backlog=backlog)
    try:
        await stop.wait()
    finally:
        server.close()
        sessions.say_goodbye()
        sessions.close_all()  # a closing transport still sends what it holds
        await sessions.wait_empty(graceful_timeout)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def bind(host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096) -> socket.socket:
    """A listening TCP socket; OSError says why not."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, proto, _name, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def run_single_process(
    sock: socket.socket, opts: SessionOptions, graceful_timeout: float, backlog: int = 4096
) -> None:
    """Development mode: serve in this process on a fresh uvloop loop."""
    sessions = Sessions(opts)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_until_signal(sock, sessions, graceful_timeout=graceful_timeout,
                                      backlog=backlog))
