"""A worker's end of its channel to the supervisor: hello, heartbeats, reports.

It plugs into :class:`~workers.serving.Server` as its ``Channel``. Heartbeats
and reports are sent from inside the worker's event loop, so a stalled loop
is visible to the supervisor (docs/ARCHITECTURE.md, "Invariants"). Every
message is defined in :mod:`workers.ipc`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, cast

from workers import ipc
from workers.plural import count
from workers.server_base import BaseServer
from workers.serving import Server, StopMode

if TYPE_CHECKING:
    from workers.bus.local import LocalBackend

log = logging.getLogger("shardd.worker")

# Test knob: a send buffer this small (bytes) makes the channel pause on
# nearly every report, the path a worker with 100 000 sessions takes when the
# supervisor falls behind (tests/test_report_scale.py).
SNDBUF_ENV = "SHARDD_IPC_SNDBUF"

_STOP_MESSAGES: dict[str, StopMode] = {ipc.STOP: "stop", ipc.DRAIN: "drain"}
_WINDING_DOWN = {"stop": "stopping", "drain": "draining", "quit": "quitting"}


class _IpcProtocol(asyncio.Protocol):
    def __init__(self, channel: SupervisorChannel) -> None:
        self.channel = channel
        self.decoder = ipc.Decoder()
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.pauses = 0
        self._resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered subclasses: isinstance would fail
        self.transport = cast(asyncio.Transport, transport)
        small = os.environ.get(SNDBUF_ENV)
        if small and small.isdigit():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(small))
            self.transport.set_write_buffer_limits(high=int(small))

    def data_received(self, data: bytes) -> None:
        try:
            for message in self.decoder.feed(data):
                self.channel.on_message(message)
        except ipc.FrameError as exc:
            log.error("shard %d: bad frame from the supervisor: %s", self.channel.shard, exc)
            self.channel.server_stop("quit")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.resume_writing()  # nothing waits on a channel that is gone
        self.channel.server_stop("quit")

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def writable(self) -> None:
        """Return once the supervisor has read enough for us to write more."""
        while self.paused and self.open:
            if self._resumed is None:
                self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed

    def send(self, kind: str, **fields: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ipc.pack(kind, **fields))


class SupervisorChannel:
    """Reports one worker's sessions to the supervisor and takes its orders."""

    def __init__(
        self,
        sock: socket.socket,
        shard: int,
        *,
        stats_interval: float = 1.0,
        heartbeat_interval: float = 1.0,
    ) -> None:
        self.sock = sock
        self.shard = shard
        self.stats_interval = stats_interval
        self.heartbeat_interval = heartbeat_interval
        self.server: Server | None = None
        self.ipc: _IpcProtocol | None = None
        self._reported: dict[int, list[Any]] = {}  # id -> last entry sent
        self._report_task: asyncio.Task[None] | None = None
        self._report_wanted = False
        self._reply_wanted = False
        self._sending = False
        #: the bus's local backend, which takes the bus frames (workers/bus/local.py)
        self.bus: LocalBackend | None = None

    # ------------------------------------------------------ the Channel side

    async def open(self, server: Server) -> None:
        self.server = server
        server.sessions.on_close = self._session_closed
        loop = asyncio.get_running_loop()
        _t, self.ipc = await loop.create_unix_connection(lambda: _IpcProtocol(self), sock=self.sock)

    def serving(self) -> None:
        assert self.ipc is not None
        self.ipc.send(ipc.HELLO, pid=os.getpid(), shard=self.shard)
        log.info("shard %d: worker %d serving", self.shard, os.getpid())
        self._heartbeat()
        if self.stats_interval:
            self._schedule_report()

    def stopping(self, mode: StopMode, sessions: int) -> None:
        log.info(
            "shard %d: worker %d %s, %s",
            self.shard,
            os.getpid(),
            _WINDING_DOWN[mode],
            count(sessions, "session"),
        )
        if self.ipc is not None:
            self.ipc.send(ipc.STOPPING, sessions=sessions)

    def close(self) -> None:
        if self.ipc is not None and self.ipc.transport is not None:
            self.ipc.transport.close()

    # ------------------------------------------------------------ messages

    def server_stop(self, mode: StopMode) -> None:
        if self.server is not None:
            self.server.stop(mode)

    def on_message(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == ipc.DRAIN and self.server is not None:
            self.server.drain_timeout = message["timeout"]
        if kind in _STOP_MESSAGES:
            self.server_stop(_STOP_MESSAGES[kind])
        elif kind == ipc.STATUS:
            self._reply_wanted = True
            self._schedule_report(now=True)
        elif kind == ipc.PLAYERS:
            if self.server is not None:
                self.server.sessions.mud.total_sessions = message["sessions"]
        elif kind in ipc.BUS_KINDS:
            if self.bus is not None:
                self.bus.on_message(message)
        else:
            log.warning("shard %d: unexpected %r from the supervisor", self.shard, kind)

    def _stopping(self) -> bool:
        """Done reporting: a draining worker still beats and reports (its
        sessions may go on for a day), one that stops or quits no longer."""
        server = self.server
        return server is None or (server.stopping and not server.draining)

    def _heartbeat(self) -> None:
        if self.ipc is None or self._stopping():
            return
        self.ipc.send(ipc.HEARTBEAT, time=time.monotonic())
        asyncio.get_running_loop().call_later(self.heartbeat_interval, self._heartbeat)

    def _session_closed(self, session_id: int) -> None:
        if self._reported.pop(session_id, None) is not None and self.ipc is not None:
            self.ipc.send(ipc.CLOSE, id=session_id)

    # -------------------------------------------------------------- reports

    def _schedule_report(self, now: bool = False) -> None:
        task = self._report_task
        if task is not None and not task.done():
            if self._sending:
                self._report_wanted = True  # one more right after the running one
                return
            if not now:
                return
            task.cancel()  # it is only waiting for its time: report now instead
        delay = 0.0 if now else self.stats_interval
        self._report_task = asyncio.get_running_loop().create_task(self._report_after(delay))

    async def _report_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self._sending = True
        try:
            while True:
                reply, self._reply_wanted = self._reply_wanted, False
                self._report_wanted = False
                await self._send_report(reply)
                if not self._report_wanted:
                    break
        finally:
            self._sending = False
        if self.stats_interval and not self._stopping():
            self._schedule_report()

    async def _send_report(self, reply: bool) -> None:
        """Send what changed since the last report, REPORT_BATCH sessions a step.

        Between steps the loop runs sessions, so 10 000 sessions never hold it
        for more than one step's work. While the supervisor is behind (the
        channel paused), a step waits rather than skips: an entry counts as
        reported only once it is written, so what a session last did always
        reaches the supervisor, later rather than never.
        """
        ipc_channel = self.ipc
        if ipc_channel is None or self.server is None:
            return
        reported = self._reported
        live = list(self.server.sessions.live.items())
        step = ipc.REPORT_BATCH
        for start in range(0, max(len(live), 1), step):
            if start:
                await asyncio.sleep(0)
            await ipc_channel.writable()
            if not ipc_channel.open:
                return
            opened: list[list[Any]] = []
            changed: list[list[Any]] = []
            for protocol, session_id in live[start : start + step]:
                entry = session_entry(protocol, session_id)
                if entry is None:
                    continue
                previous = reported.get(session_id)
                if previous is None:
                    opened.append([session_id, protocol.peer, protocol._when_connected])
                elif previous == entry:
                    continue
                reported[session_id] = entry
                changed.append(entry)
            if opened:
                ipc_channel.send(ipc.OPEN, sessions=opened)
            last = start + step >= len(live)
            if changed or last:
                self._send_batch(changed, last=last, reply=reply and last)

    def _send_batch(self, batch: list[list[Any]], *, last: bool, reply: bool) -> None:
        if self.ipc is None or self.server is None:
            return
        self.ipc.send(
            ipc.REPORT,
            time=time.monotonic(),
            accepted=self.server.sessions.accepted,
            counters={**self.server.counters(), "ipc_pauses": self.ipc.pauses},
            sessions=batch,
            last=last,
            reply=reply,
        )


def session_entry(protocol: BaseServer, session_id: int) -> list[Any] | None:
    """A session's values in the order of ``ipc.SESSION_FIELDS``; None once it is gone."""
    if protocol._when_connected is None or protocol.closed:
        return None
    info = protocol.get_extra_info
    writer = protocol.writer
    tls = info("ssl_object")  # on TLS sessions only, from their transport
    mtts = info("mtts")
    return [
        session_id,
        protocol.rx_bytes,
        protocol.tx_bytes,
        protocol._last_received or 0.0,
        "shell" if protocol._waiter_connected.done() else "negotiating",
        str(info("TERM") or ""),
        str(info("client_name") or ""),
        None if mtts is None else _as_int(mtts),
        _as_int(info("cols", 0)),
        _as_int(info("rows", 0)),
        (writer.encoding or "binary") if writer is not None else "",
        protocol.protocol_errors,
        (tls.version() or "TLS") if tls is not None else "",
    ]


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
