"""A worker process: one shard's listening socket, its sessions, and its reports.

``run_worker`` is called in the child right after fork and never returns. The
order matters (ARCHITECTURE.md, decision 4): reset what was inherited from the
supervisor, ask the kernel to kill us with it, and only then create a fresh
uvloop loop. Heartbeats and reports are sent from inside that loop so a
stalled loop is visible to the supervisor.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import uvloop

from workers import ipc
from workers.serve import Sessions
from workers.server_base import BaseServer

try:  # optional; imported here, before the fork and any privilege drop
    import setproctitle
except ImportError:
    setproctitle = None

log = logging.getLogger("workers.worker")

PR_SET_PDEATHSIG = 1
# Signals the supervisor handles; a worker starts from their defaults.
INHERITED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
    signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGPIPE,
)


@dataclass
class WorkerSettings:
    shard: int
    stats_interval: float = 1.0
    heartbeat_interval: float = 1.0
    graceful_timeout: float = 10.0
    backlog: int = 4096
    reopen_logs: Callable[[], None] | None = None


def run_worker(
    settings: WorkerSettings,
    listen_sock: socket.socket,
    ipc_sock: socket.socket,
    sessions: Sessions,
) -> NoReturn:
    """The whole life of a worker process, after fork."""
    code = 0
    try:
        _reset_inherited_state(settings.shard)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Worker(settings, listen_sock, ipc_sock, sessions).run())
    except BaseException as exc:  # the process ends here either way
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            log.exception("shard %d: worker failed: %s", settings.shard, exc)
            code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _reset_inherited_state(shard: int) -> None:
    for signum in INHERITED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    # Ctrl-C, a hangup or job control in a terminal reach the whole process
    # group: the supervisor decides what they mean, so a worker ignores them.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    # Python keeps the parent's wakeup fd across fork: the parent's handlers
    # would otherwise be woken by this child's signals.
    signal.set_wakeup_fd(-1)
    parent = os.getppid()
    _set_parent_death_signal()
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)
    if setproctitle is not None:
        setproctitle.setproctitle(f"shardd: worker shard {shard}")


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


class _IpcProtocol(asyncio.Protocol):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.decoder = ipc.Decoder()
        self.transport: asyncio.Transport | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            for message in self.decoder.feed(data):
                self.worker.on_message(message)
        except ipc.FrameError as exc:
            log.error("shard %d: bad frame from the supervisor: %s", self.worker.shard, exc)
            self.worker.stop("quit")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.worker.stop("quit")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def send(self, kind: str, **fields: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ipc.pack(kind, **fields))


class Worker:
    """The event-loop side of a worker."""

    def __init__(
        self,
        settings: WorkerSettings,
        listen_sock: socket.socket,
        ipc_sock: socket.socket,
        sessions: Sessions,
    ) -> None:
        self.settings = settings
        self.shard = settings.shard
        self.listen_sock = listen_sock
        self.ipc_sock = ipc_sock
        self.sessions = sessions
        sessions.opts.extra.setdefault("shard", settings.shard)
        sessions.on_close = self._session_closed
        self.ipc: _IpcProtocol | None = None
        self.server: asyncio.AbstractServer | None = None
        self._stop_mode: asyncio.Future[str] | None = None
        self._reported: dict[int, list[Any]] = {}  # id -> last entry sent
        self._report_task: asyncio.Task[None] | None = None
        self._report_wanted = False
        self._reply_wanted = False
        self._sending = False

    # ------------------------------------------------------------------ life

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop_mode = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "stop")
        loop.add_signal_handler(signal.SIGQUIT, self.stop, "quit")
        if self.settings.reopen_logs is not None:
            loop.add_signal_handler(signal.SIGUSR1, self.settings.reopen_logs)
        _t, self.ipc = await loop.create_unix_connection(
            lambda: _IpcProtocol(self), sock=self.ipc_sock
        )
        # create_server listens again: without backlog= the queue shrinks to 100
        self.server = await loop.create_server(self.sessions, sock=self.listen_sock,
                                               backlog=self.settings.backlog)
        self.ipc.send(ipc.HELLO, pid=os.getpid(), shard=self.shard)
        log.info("shard %d: worker %d serving", self.shard, os.getpid())
        self._heartbeat()
        if self.settings.stats_interval:
            self._schedule_report()
        mode = await self._stop_mode
        await self._shut_down(mode)

    def stop(self, mode: str) -> None:
        """Ask the worker to end: 'stop' (graceful), 'drain' (after sessions) or 'quit'."""
        if self._stop_mode is not None and not self._stop_mode.done():
            self._stop_mode.set_result(mode)

    async def _shut_down(self, mode: str) -> None:
        if self.server is not None:
            self.server.close()  # closes only this process's copy of the socket
        sessions = self.sessions
        timeout = self.settings.graceful_timeout
        log.info("shard %d: worker %d %s, %d sessions", self.shard, os.getpid(),
                 {"stop": "stopping", "drain": "draining", "quit": "quitting"}[mode],
                 len(sessions.live))
        if self.ipc is not None:
            self.ipc.send(ipc.STOPPING, sessions=len(sessions.live))
        if mode == "drain":
            # old worker of a rolling restart: sessions end on their own time
            if not await sessions.wait_empty(timeout):
                sessions.say_goodbye()
                sessions.close_all()
                await sessions.wait_empty(1.0)
        elif mode == "stop":
            sessions.say_goodbye()
            sessions.close_all()
            await sessions.wait_empty(timeout)
        else:
            for protocol in list(sessions.live):
                if protocol._transport is not None:
                    protocol._transport.abort()
        if self.ipc is not None and self.ipc.transport is not None:
            self.ipc.transport.close()

    # ------------------------------------------------------------ messages

    def on_message(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == ipc.STOP:
            self.stop("stop")
        elif kind == ipc.DRAIN:
            self.stop("drain")
        elif kind == ipc.STATUS:
            self._reply_wanted = True
            self._schedule_report(now=True)
        else:
            log.warning("shard %d: unexpected %r from the supervisor", self.shard, kind)

    def _heartbeat(self) -> None:
        if self.ipc is None or (self._stop_mode is not None and self._stop_mode.done()):
            return
        self.ipc.send(ipc.HEARTBEAT, time=time.monotonic())
        asyncio.get_running_loop().call_later(self.settings.heartbeat_interval, self._heartbeat)

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
        delay = 0.0 if now else self.settings.stats_interval
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
        if self.settings.stats_interval and not (self._stop_mode and self._stop_mode.done()):
            self._schedule_report()

    async def _send_report(self, reply: bool) -> None:
        """Send what changed since the last report, REPORT_BATCH sessions a step.

        Between steps the loop runs sessions, so 10 000 sessions never hold it
        for more than one step's work.
        """
        ipc_channel = self.ipc
        if ipc_channel is None:
            return
        reported = self._reported
        live = list(self.sessions.live.items())
        step = ipc.REPORT_BATCH
        for start in range(0, max(len(live), 1), step):
            if start:
                await asyncio.sleep(0)
            opened: list[list[Any]] = []
            changed: list[list[Any]] = []
            for protocol, session_id in live[start : start + step]:
                entry = _entry(protocol, session_id)
                if entry is None:
                    continue
                previous = reported.get(session_id)
                if previous is None:
                    opened.append([session_id, protocol._peer(), protocol._when_connected])
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
        if self.ipc is None or (self.ipc.paused and not reply):
            return  # the supervisor is behind: skip, the next report catches up
        self.ipc.send(ipc.REPORT, time=time.monotonic(), accepted=self.sessions.accepted,
                      sessions=batch, last=last, reply=reply)


def _entry(protocol: BaseServer, session_id: int) -> list[Any] | None:
    if protocol._when_connected is None or protocol._closed:
        return None
    # the protocol's own values, read directly: this runs for every session
    extra = protocol._extra
    writer = protocol.writer
    return [
        session_id,
        protocol.rx_bytes,
        protocol.tx_bytes,
        protocol._last_received or 0.0,
        "shell" if protocol._waiter_connected.done() else "negotiating",
        str(extra.get("TERM") or ""),
        _as_int(extra.get("cols", 0)),
        _as_int(extra.get("rows", 0)),
        (writer.encoding or "binary") if writer is not None else "",
    ]


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
