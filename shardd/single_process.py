"""``shardd serve --workers 0``: one process, no supervisor, the same operator interface.

The same :class:`~workers.serving.Server` as a worker runs, on a uvloop
loop in the ``shardd`` process itself, with what a supervisor would give an
operator:

- the control socket, at the same default path (``shardd status``,
  ``reload``, ``stop``; ``workers`` is refused: there are no shards), served
  on the event loop (:mod:`shardd.control_loop`); ``status`` shows the one
  process as the one worker of shard 0, with the same fields;
- signals: TERM and INT a graceful stop, QUIT a fast one, HUP a reload in
  place (:mod:`shardd.reload_single`), USR1 reopens log files; TTIN and TTOU
  (no shards to add) and the signals shardd has no action for
  (:mod:`workers.signal_table`) are logged once and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

import psutil
import uvloop

from shardd import control, listeners, logs, privileges, status
from shardd.config import ServeConfig
from shardd.control import Refused, Reply
from shardd.control_loop import LoopSelector
from shardd.reload_single import ReloadError, SettingsSource, reload
from workers import proctitle
from workers.channel import session_entry
from workers.plural import count
from workers.serving import Server, SessionOptions, StopMode
from workers.signal_table import NO_ACTION, log_ignored
from workers.tls import TlsListener

log = logging.getLogger("shardd")

#: CPU use is sampled this often: status shows the share of a core over the last one
CPU_WINDOW = 2.0
_NO_SHARDS = (signal.SIGTTIN, signal.SIGTTOU)
_STOPPING: dict[StopMode, str] = {
    "stop": "graceful stop",
    "drain": "draining",
    "quit": "fast stop",
}


class SingleProcess:
    """A server in this process, its control socket and its signals."""

    def __init__(
        self,
        cfg: ServeConfig,
        opts: SessionOptions,
        sock: socket.socket,
        tls: TlsListener | None,
        source: SettingsSource,
        config_path: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.config_path = config_path
        self.server = Server(sock, opts, cfg.server_settings(), tls=tls)
        self.port = sock.getsockname()[1]
        self.tls_port = tls.sock.getsockname()[1] if tls is not None else None
        # the loop exists before it runs, so the control socket can be bound
        # (and a failure reported) before the server says it is serving
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.loop = self.runner.get_loop()
        self.control: control.ControlServer | None = None
        self.started = time.monotonic()
        self.process = psutil.Process()
        self.cpu_percent: float | None = None
        self._cpu_sample: tuple[float, float] | None = None
        self._cpu_timer: asyncio.TimerHandle | None = None

    def bind_control(self) -> None:
        """The control socket; OSError (an unsafe directory, another server on it)."""
        cfg = self.cfg
        self.control = control.ControlServer(
            cfg.control or control.default_path(self.port),
            _Handlers(self),
            LoopSelector(self.loop),
            own_directory=not cfg.control,
            owners=[privileges.uid_of(cfg.user)],
        )

    def close_sockets(self) -> None:
        """Undo what was set up, when the process cannot start after all."""
        self.server.sock.close()
        if self.server.tls is not None:
            self.server.tls.sock.close()
        self.runner.close()

    def run(self) -> None:
        proctitle.set_title(f"single process {proctitle.address(self.cfg.host, self.port)}")
        with self.runner:
            self.runner.run(self._serve())
        log.info("stopped")

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        actions: dict[int, Any] = {
            signal.SIGHUP: self._hangup,
            signal.SIGUSR1: self._reopen_logs,
        }
        for ignored in (*_NO_SHARDS, *NO_ACTION):
            actions[ignored] = lambda ignored=ignored: self._ignore(ignored)
        for signum, action in actions.items():
            loop.add_signal_handler(signum, action)
        self._sample_cpu()
        try:
            await self.server.serve(
                {signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGQUIT: "quit"}, self
            )
        finally:
            if self._cpu_timer is not None:
                self._cpu_timer.cancel()
            for signum in actions:
                loop.remove_signal_handler(signum)
            if self.control is not None:
                self.control.close()

    # ---------------------------------------- the server's Channel: nobody above

    async def open(self, server: Server) -> None:
        pass

    def serving(self) -> None:
        """Every signal handler is in place and the server accepts: say so."""
        host = self.cfg.host
        log.info(
            "serving telnet on %s:%s%s (pid %d, single process, shell %s, control %s)",
            host,
            self.port,
            f" and TLS on {host}:{self.tls_port}" if self.tls_port is not None else "",
            os.getpid(),
            self.cfg.shell,
            self.control.path if self.control else "none",
        )

    def stopping(self, mode: StopMode, sessions: int) -> None:
        log.info("%s, %s", _STOPPING[mode], count(sessions, "session"))

    def close(self) -> None:
        pass

    # ------------------------------------------------------------ signals

    def reload(self, why: str) -> str:
        """Reload in place (HUP, ``shardd reload``); ReloadError if it failed."""
        log.info("%s: reloading in place (single process)", why)
        self.cfg = reload(self.server, self.cfg, self.source, self.config_path)
        return "reloaded in place (see the log for what changed)"

    def _hangup(self) -> None:
        # a failure is logged, at ERROR, and the old settings stay
        with contextlib.suppress(ReloadError):
            self.reload("SIGHUP")

    def _reopen_logs(self) -> None:
        if logs.reopen_files():
            log.info("log files reopened")

    def _ignore(self, signum: int) -> None:
        if signum in _NO_SHARDS:
            log.warning(
                "%s ignored: a single process (--workers 0) has no shards to add or remove",
                signal.Signals(signum).name,
            )
        else:
            log_ignored(signum)
        # once is enough to know: from now on the kernel drops it
        self.loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)

    # ------------------------------------------------------------- status

    def _sample_cpu(self) -> None:
        now = time.monotonic()
        try:
            times = self.process.cpu_times()
        except psutil.Error:
            return
        used = times.user + times.system
        if self._cpu_sample is not None:
            then, used_then = self._cpu_sample
            if now > then:
                self.cpu_percent = round(100.0 * (used - used_then) / (now - then), 1)
        self._cpu_sample = (now, used)
        self._cpu_timer = self.loop.call_later(CPU_WINDOW, self._sample_cpu)

    def status(self) -> dict[str, Any]:
        """What ``shardd status`` shows: the fields of a supervised server's reply,
        this process as the one worker (shard 0), and ``single_process`` true."""
        now = time.monotonic()
        server = self.server
        pid = os.getpid()
        sessions: dict[int, list[Any]] = {}
        for protocol, session_id in server.sessions.live.items():
            entry = session_entry(protocol, session_id)
            if entry is not None:
                sessions[session_id] = [protocol.peer, protocol._when_connected, entry]
        try:
            rss: int | None = self.process.memory_info().rss
        except psutil.Error:
            rss = None
        counters = server.counters()
        host = self.cfg.host
        worker = {
            "shard": 0,
            "pid": pid,
            "state": "stopping" if server.stopping else "serving",
            "restarts": 0,
            "connections": len(sessions),
            "accepted": server.sessions.accepted,
            "accept_queue": listeners.accept_queue(server.sock),
            "tls_accept_queue": listeners.accept_queue(server.tls.sock) if server.tls else None,
            "cpu_percent": self.cpu_percent,
            "rss_bytes": rss,
            "last_report_age": 0.0,  # it answers for itself: always fresh
            **status.events(counters),
        }
        return {
            "supervisor": {
                "pid": pid,
                "single_process": True,
                "uptime": round(now - self.started, 3),
                "listen": [f"{host}:{self.port}"],
                "listen_tls": [] if self.tls_port is None else [f"{host}:{self.tls_port}"],
                "workers": 1,
                "control": self.control.path if self.control else None,
                "stopping": "graceful" if server.stopping else None,
                **status.events(counters),
            },
            "workers": [worker],
            "connection_fields": status.CONNECTION_FIELDS,
            "connections": status.session_rows(0, pid, sessions, now),
        }


class _Handlers:
    """The control socket's commands, for a single process."""

    def __init__(self, process: SingleProcess) -> None:
        self.process = process

    def status(self, reply: Reply) -> None:
        with status.gc_paused():
            reply(self.process.status())

    def reload(self, reply: Reply) -> None:
        try:
            message = self.process.reload("control request")
        except ReloadError as exc:
            reply({"ok": False, "error": str(exc)})
            return
        reply({"ok": True, "message": message})

    def stop(self) -> dict[str, Any]:
        log.info("control request: graceful stop")
        self.process.server.stop("stop")
        return {"message": "graceful stop begun"}

    def workers(self, delta: int) -> dict[str, Any]:
        raise Refused(
            "a single process (--workers 0) has no shards to add or remove; "
            "start it with --workers N for that"
        )
