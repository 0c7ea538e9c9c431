"""The supervisor: binds every shard's socket, forks workers, keeps them alive.

One loop (``run``) does everything, like gunicorn's arbiter: signal handlers
only enqueue, and the loop reaps children, reads worker channels, answers the
control socket, and acts on timers. It runs no event loop and no threads, so
forking a worker from it is safe (docs/ARCHITECTURE.md, "Invariants").

Each shard's SO_REUSEPORT socket (two with TLS: one per port) is bound here
and kept open for the supervisor's whole life; a replacement worker inherits
the same sockets, so connections waiting in their accept queues survive a
worker's death. The TLS certificate is read here too, at start and on every
rolling restart, so that workers forked after a HUP serve the new one.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from shardd import control, listeners, logs, privileges
from shardd.config import ServeConfig
from shardd.control_handlers import SupervisorHandlers
from workers import ipc, proctitle
from workers.peer_table import PeerTable
from workers.plural import count
from workers.serving import SessionOptions
from workers.signal_table import NO_ACTION, log_ignored
from workers.telnet.telopt import MSSP
from workers.tls import TlsError, TlsListener, load_context
from workers.worker import WorkerSettings, run_worker

log = logging.getLogger("shardd.supervisor")

# A worker that dies before saying hello failed to start (an import error, a
# broken shell or protocol module): nothing suggests the next one will do
# better, so its shard backs off, and this many start failures of one shard
# within the window end the supervisor.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
MAX_START_FAILURES = 5
FAILURE_WINDOW = 60.0
# A worker that said hello could start, so its death (a crash, an attack, the
# OOM killer) never ends the supervisor: whatever else is wrong, giving up
# would leave every client unserved. Its replacement starts at once; if that
# one dies too before it has served CRASH_RESET, each next replacement waits
# a little longer, up to CRASH_BACKOFF_MAX, so a shard whose workers die as
# soon as they serve costs a few forks a second, not a core. Connections
# wait in the shard's accept queue meanwhile (the supervisor holds it).
CRASH_BACKOFF_FIRST = 0.05
CRASH_BACKOFF_MAX = 0.5
CRASH_RESET = 10.0
# How long a status request waits for fresh worker reports.
STATUS_WAIT = 1.0
# How often workers are told the sessions of every worker (MSSP PLAYERS)
PLAYERS_INTERVAL = 1.0
# Shards that TTIN or `shardd workers +N` may add to those started with.
EXTRA_SHARDS = 16
# After a fast stop (QUIT), how long workers get before SIGKILL.
QUIT_TIMEOUT = 2.0
# Each worker's CPU use is sampled this often, and status shows the share of
# one core it used over the last such window: one reading for everybody, so
# requests that overlap cannot disturb each other's figures.
CPU_WINDOW = 2.0

_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
    # logged once, then ignored (workers/signal_table.py)
    *NO_ACTION,
)


@dataclass
class WorkerHandle:
    """The supervisor's view of one worker process."""

    shard: int
    pid: int
    channel: socket.socket
    started_at: float
    row: int  # its row of the shared peer table
    state: str = "starting"  # starting, serving, draining, stopping
    serving_since: float | None = None  # when it said hello
    decoder: ipc.Decoder = field(default_factory=ipc.Decoder)
    last_heartbeat: float = 0.0
    last_report: float | None = None
    accepted: int = 0
    counters: dict[str, int] = field(default_factory=dict)  # the worker's, as reported
    sessions: dict[int, list[Any]] = field(default_factory=dict)  # id -> [peer, at, entry]
    awaiting_reply: bool = False
    process: psutil.Process | None = None
    replaced: bool = False  # killed on purpose; its shard is respawned
    cpu_percent: float | None = None  # over the last CPU_WINDOW
    cpu_sample: tuple[float, float] | None = None  # (monotonic, CPU seconds) at its start

    def sample_cpu(self, now: float) -> None:
        """Close one CPU window and open the next."""
        if self.process is None:
            return
        try:
            times = self.process.cpu_times()
        except psutil.Error:
            return
        used = times.user + times.system
        if self.cpu_sample is not None:
            then, used_then = self.cpu_sample
            if now > then:
                self.cpu_percent = round(100.0 * (used - used_then) / (now - then), 1)
        self.cpu_sample = (now, used)


@dataclass
class Shard:
    index: int
    sock: socket.socket
    tls_sock: socket.socket | None = None  # its TLS port's socket, if TLS is on
    worker: WorkerHandle | None = None
    restarts: int = 0
    failures: deque[float] = field(default_factory=deque)
    respawn_at: float | None = None
    backoff: float = BACKOFF_FIRST  # after a failed start
    crash_backoff: float = 0.0  # after the death of a worker that served
    removing: bool = False


class SupervisorError(RuntimeError):
    """The supervisor cannot go on; the message says why."""


class Supervisor:
    def __init__(
        self, cfg: ServeConfig, opts: SessionOptions, tls_context: ssl.SSLContext | None = None
    ) -> None:
        """``tls_context``: the certificate as loaded at start; with it, every shard
        also listens on ``cfg.tls_port``."""
        self.cfg = cfg
        self.opts = opts
        #: what workers forked from now on serve TLS with (re-read on HUP)
        self.tls_context = tls_context
        self.server_settings = cfg.server_settings()
        # Every worker's counts for the limits per address, shared (mapped before
        # any fork). Two rows a shard: a rolling restart's new worker and the old.
        self.peer_table = PeerTable(2 * (cfg.workers + EXTRA_SHARDS))
        self.free_rows = list(range(self.peer_table.rows - 1, -1, -1))
        self.shards: list[Shard] = []
        self.past_counters: Counter[str] = Counter()  # of workers that are gone
        self.past_max_pause_us = 0
        self.workers: dict[int, WorkerHandle] = {}  # pid -> handle, every live child
        self.selector = selectors.DefaultSelector()
        self.signals: deque[int] = deque()
        self.started = time.monotonic()
        self.port = cfg.port
        self.tls_port = cfg.tls_port if tls_context is not None else None
        self.binding = cfg.port  # the port being bound, for the message if it fails
        self.exit_code = 0
        self.stopping: str | None = None  # None, "graceful" or "fast"
        self.stop_deadline = 0.0
        self.rolling: deque[int] = deque()  # shards still to restart after a HUP
        self.rolling_new: WorkerHandle | None = None
        self.control: control.ControlServer | None = None
        self.status_waiters: list[tuple[float, Callable[[], None]]] = []
        self.next_cpu_sample = 0.0
        # only a server that answers MSSP needs its workers told the total
        self.tell_players = MSSP in opts.mud.options
        self.players_at = 0.0
        self._wakeup_r = self._wakeup_w = -1

    # ------------------------------------------------------------ start-up

    def bind_shards(self) -> None:
        """Bind every shard's socket (before privileges drop: port 23 needs root)."""
        capacity = listeners.raise_fd_limit()
        if not self.cfg.share_port:
            for port in (self.port, self.tls_port):
                if port is not None:
                    self.binding = port
                    listeners.check_unserved(self.cfg.host, port)
        try:
            for index in range(self.cfg.workers):
                self._add_shard_socket(index)
        except OSError:
            for shard in self.shards:
                _close_sockets(shard)
            raise
        log.info(
            "file descriptor limit %d per worker, so about %s each",
            capacity,
            count(max(0, capacity - 64), "session"),
        )

    def bind_control(self) -> None:
        """Create the control socket, at a path derived from the port unless given."""
        path = self.cfg.control or control.default_path(self.port)
        self.control = control.ControlServer(
            path,
            SupervisorHandlers(self),
            self.selector,
            own_directory=not self.cfg.control,
            owners=[privileges.uid_of(self.cfg.user)],
        )

    def _add_shard_socket(self, index: int) -> Shard:
        self.binding = self.port
        sock = listeners.bind_shard(self.cfg.host, self.port, self.cfg.backlog)
        self.port = sock.getsockname()[1]
        shard = Shard(index, sock)
        if self.tls_port is not None:
            self.binding = self.tls_port
            try:
                tls_sock = listeners.bind_shard(self.cfg.host, self.tls_port, self.cfg.backlog)
            except OSError:
                sock.close()
                raise
            shard.tls_sock = tls_sock
            self.tls_port = tls_sock.getsockname()[1]
        self.shards.append(shard)
        return shard

    def run(self) -> int:
        """The supervisor's life; returns the exit status."""
        self._install_signals()
        assert self.control is not None
        host = self.cfg.host
        log.info(
            "serving telnet on %s:%d%s (supervisor %d, %s, control %s)",
            host,
            self.port,
            "" if self.tls_port is None else f" and TLS on {host}:{self.tls_port}",
            os.getpid(),
            count(len(self.shards), "worker"),
            self.control.path,
        )
        proctitle.set_title(f"supervisor {proctitle.address(host, self.port)}")
        for shard in self.shards:
            self._spawn(shard)
        try:
            while True:
                self._step()
                if self.stopping and not self.workers:
                    break
        except SupervisorError as exc:
            log.error("%s", exc)
            self.exit_code = 1
            self._kill_all()
        finally:
            self._close()
        log.info("stopped (exit status %d)", self.exit_code)
        return self.exit_code

    def _step(self) -> None:
        for key, mask in self.selector.select(self._next_timeout()):
            key.data(key, mask)
        self._handle_signals()
        self._reap()
        self._check_timers()

    def _next_timeout(self) -> float:
        return 0.0 if self.signals else 0.2

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._drain_wakeup)
        for signum in _SIGNALS:
            signal.signal(signum, self._enqueue_signal)

    def _enqueue_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)  # the loop acts on it

    def _drain_wakeup(self, _key: Any, _mask: int) -> None:
        try:
            while os.read(self._wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass

    # ----------------------------------------------------------------- signals

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.begin_stop("graceful", signal.Signals(signum).name)
            elif signum == signal.SIGQUIT:
                self.begin_stop("fast", "SIGQUIT")
            elif signum == signal.SIGHUP:
                self.begin_reload()
            elif signum == signal.SIGTTIN:
                self.change_workers(1)
            elif signum == signal.SIGTTOU:
                self.change_workers(-1)
            elif signum == signal.SIGUSR1:
                if logs.reopen_files():
                    log.info("log files reopened")
                self._signal_workers(signal.SIGUSR1)
            elif signum in NO_ACTION:
                log_ignored(signum)
                signal.signal(signum, signal.SIG_IGN)  # once is enough to know
            # SIGCHLD: _reap runs on every step

    def begin_stop(self, mode: str, why: str) -> None:
        if self.stopping == "fast" or self.stopping == mode:
            return
        self.stopping = mode
        self.rolling.clear()
        if mode == "graceful":
            self.stop_deadline = time.monotonic() + self.cfg.graceful_timeout
            log.info(
                "%s: graceful stop, waiting up to %.1fs for %s",
                why,
                self.cfg.graceful_timeout,
                count(len(self.workers), "worker"),
            )
            for handle in self.workers.values():
                self._send(handle, ipc.STOP)
                handle.state = "stopping"
        else:
            self.stop_deadline = time.monotonic() + QUIT_TIMEOUT
            log.info("%s: fast stop", why)
            self._signal_workers(signal.SIGQUIT)

    def begin_reload(self) -> str:
        """Begin a rolling restart (HUP); what happened, in a few words.

        With TLS, the certificate and key are read again first: the new
        workers serve them, while sessions on the old ones keep theirs until
        those drain. If they cannot be read, nothing restarts.
        """
        if self.stopping:
            return "stopping: no restart"
        if self.rolling or self.rolling_new:
            log.info("SIGHUP: a rolling restart is already under way")
            return "a rolling restart is already under way"
        reloaded = ""
        if self.tls_context is not None and self.cfg.certfile is not None:
            try:
                self.tls_context = load_context(self.cfg.certfile, self.cfg.keyfile)
            except TlsError as exc:
                log.error(
                    "SIGHUP: no restart: %s: %s (the workers keep the certificate they have)",
                    exc.key,
                    exc,
                )
                return f"no restart: {exc.key}: {exc}"
            reloaded = ", TLS certificate re-read"
            log.info("SIGHUP: TLS certificate re-read from %s", self.cfg.certfile)
        log.info("SIGHUP: rolling restart of %s", count(len(self.shards), "shard"))
        self.rolling.extend(shard.index for shard in self.shards if not shard.removing)
        return "rolling restart begun" + reloaded

    def change_workers(self, delta: int) -> int:
        if self.stopping:
            return len(self.shards)
        # each shard has two rows of the shared table: one to spare for a rolling restart
        room = self.peer_table.rows // 2 - len(self.shards)
        if delta > room:
            log.warning(
                "adding %s, not %d: the shared table has rows for %d more "
                "(restart to have more)", count(max(room, 0), "shard"), delta, max(room, 0),
            )  # fmt: skip
            delta = max(room, 0)
        for _ in range(delta):
            shard = self._add_shard_socket(len(self.shards))
            log.info("shard %d added", shard.index)
            self._spawn(shard)
        for _ in range(-delta):
            active = self.active_shards()
            if len(active) <= 1:
                log.warning("not removing the last shard")
                break
            self._remove_shard(active[-1])
        return len(self.active_shards())

    def active_shards(self) -> list[Shard]:
        """The shards being served: not those being removed."""
        return [s for s in self.shards if not s.removing]

    def _remove_shard(self, shard: Shard) -> None:
        shard.removing = True
        log.info("shard %d removed: its worker drains its sessions", shard.index)
        if shard.worker is not None:
            self._send(shard.worker, ipc.DRAIN)
            shard.worker.state = "draining"
        # The socket leaves the reuseport group once its worker closes it too.
        _close_sockets(shard)
        self.shards.remove(shard)

    def _signal_workers(self, signum: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------------ workers

    def _spawn(self, shard: Shard) -> WorkerHandle:
        ours, theirs = socket.socketpair()
        row = self.free_rows.pop()
        pid = os.fork()
        if pid == 0:  # the worker
            ours.close()
            self._close_in_child(keep=shard)
            tls = None
            if shard.tls_sock is not None and self.tls_context is not None:
                tls = TlsListener(shard.tls_sock, self.tls_context, self.cfg.tls_handshake_timeout)
            settings = WorkerSettings(
                shard=shard.index,
                server=self.server_settings,
                peer_table=self.peer_table,
                row=row,
                stats_interval=self.cfg.stats_interval,
                reopen_logs=logs.reopen,
                tls=tls,
                listen=proctitle.address(self.cfg.host, self.port),
            )
            run_worker(settings, shard.sock, theirs, self.opts)
        theirs.close()
        ours.setblocking(False)
        now = time.monotonic()
        handle = WorkerHandle(shard.index, pid, ours, started_at=now, row=row, last_heartbeat=now)
        try:
            handle.process = psutil.Process(pid)
        except psutil.Error:
            handle.process = None
        handle.sample_cpu(now)  # its first CPU window starts now
        self.workers[pid] = handle
        self.selector.register(ours, selectors.EVENT_READ, self._channel_readable(handle))
        log.info("shard %d: worker %d started", shard.index, pid)
        return handle

    def _close_in_child(self, keep: Shard) -> None:
        """In a fresh worker: drop every inherited descriptor but its own sockets."""
        self.selector.close()
        for shard in self.shards:
            if shard is not keep:
                _close_sockets(shard)
        for handle in self.workers.values():
            handle.channel.close()
        if self.control is not None:
            self.control.close_in_child()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)

    def _channel_readable(self, handle: WorkerHandle) -> Callable[[Any, int], None]:
        def on_readable(_key: Any, _mask: int) -> None:
            try:
                data = handle.channel.recv(1 << 18)
            except BlockingIOError:
                return
            except OSError as exc:
                data = b""
                log.debug("shard %d: channel of worker %d: %s", handle.shard, handle.pid, exc)
            if not data:
                self._forget_channel(handle)
                return
            try:
                for message in handle.decoder.feed(data):
                    self._on_message(handle, message)
            except ipc.FrameError as exc:
                log.error(
                    "shard %d: worker %d sent a bad frame (%s); replacing it",
                    handle.shard,
                    handle.pid,
                    exc,
                )
                self._replace(handle)

        return on_readable

    def _forget_channel(self, handle: WorkerHandle) -> None:
        try:
            self.selector.unregister(handle.channel)
        except (KeyError, ValueError):
            pass
        handle.channel.close()

    def _on_message(self, handle: WorkerHandle, message: dict[str, Any]) -> None:
        kind = message["t"]
        now = time.monotonic()
        if kind == ipc.HEARTBEAT:
            handle.last_heartbeat = now
        elif kind == ipc.REPORT:
            handle.last_heartbeat = now
            handle.last_report = now
            handle.accepted = message["accepted"]
            handle.counters = message["counters"]
            for entry in message["sessions"]:
                record = handle.sessions.get(entry[0])
                if record is not None:
                    record[2] = entry
            if message["reply"] and message["last"]:
                handle.awaiting_reply = False
        elif kind == ipc.OPEN:
            for session_id, peer, connected_at in message["sessions"]:
                handle.sessions[session_id] = [peer, connected_at, None]
        elif kind == ipc.CLOSE:
            handle.sessions.pop(message["id"], None)
        elif kind == ipc.HELLO:
            if message["pid"] != handle.pid or message["shard"] != handle.shard:
                raise ipc.FrameError(
                    f"hello from pid {message['pid']} shard "
                    f"{message['shard']}, expected {handle.pid}/{handle.shard}"
                )
            handle.last_heartbeat = now
            self._serving(handle)
        elif kind == ipc.STOPPING:
            handle.last_heartbeat = now
            if handle.state in ("starting", "serving"):
                handle.state = "stopping"
        else:
            raise ipc.FrameError(f"{kind!r} is not a worker's message")

    def _serving(self, handle: WorkerHandle) -> None:
        if handle.state != "starting":
            return
        handle.state = "serving"
        handle.serving_since = time.monotonic()
        if self.tell_players:
            self._send(handle, ipc.PLAYERS, sessions=self.peer_table.sessions())
        shard = self.shard(handle.shard)
        if self.stopping:
            self._send(handle, ipc.STOP)
            handle.state = "stopping"
            return
        if shard is None:
            return
        old = shard.worker
        shard.worker = handle
        if self.rolling_new is handle:
            self.rolling_new = None
            if old is not None and old is not handle and old.pid in self.workers:
                # the new worker is accepting: now the old one may stop
                log.info(
                    "shard %d: worker %d replaces %d, which drains its sessions",
                    shard.index,
                    handle.pid,
                    old.pid,
                )
                self._send(old, ipc.DRAIN)
                old.state = "draining"

    def _replace(self, handle: WorkerHandle) -> None:
        """Kill a misbehaving worker; its shard gets a new one when it is reaped."""
        handle.replaced = True
        self._forget_channel(handle)
        try:
            os.kill(handle.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def shard(self, index: int) -> Shard | None:
        for shard in self.shards:
            if shard.index == index:
                return shard
        return None

    def _send(self, handle: WorkerHandle, kind: str, **fields: Any) -> None:
        try:
            handle.channel.send(ipc.pack(kind, **fields))
        except (BlockingIOError, OSError) as exc:
            # control messages are tiny; a full or closed channel means a dying worker
            log.debug(
                "shard %d: cannot send %s to worker %d: %s", handle.shard, kind, handle.pid, exc
            )

    # ------------------------------------------------------------------ reaping

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            handle = self.workers.pop(pid, None)
            if handle is None:
                continue
            self._forget_channel(handle)
            self._release_row(handle)
            self._worker_died(handle, _describe_exit(status))

    def _release_row(self, handle: WorkerHandle) -> None:
        # status totals outlive the worker
        self.past_counters.update(handle.counters)
        pause = handle.counters.get("gc_max_pause_us", 0)
        self.past_max_pause_us = max(self.past_max_pause_us, pause)
        # the worker and its sessions are gone: so are their counts
        self.peer_table.clear(handle.row)
        self.free_rows.append(handle.row)

    def _worker_died(self, handle: WorkerHandle, how: str) -> None:
        shard = self.shard(handle.shard)
        expected = self.stopping or handle.state in ("draining", "stopping")
        level = logging.INFO if expected else logging.ERROR
        log.log(level, "shard %d: worker %d %s", handle.shard, handle.pid, how)
        if self.rolling_new is handle:
            self.rolling_new = None
            log.error(
                "shard %d: replacement worker died during the rolling restart; "
                "the old worker keeps serving",
                handle.shard,
            )
            return
        if expected or shard is None or shard.worker not in (handle, None):
            return
        shard.worker = None
        now = time.monotonic()
        if handle.serving_since is None:
            self._failed_start(shard, now, how)
        else:
            self._serving_worker_died(shard, now, now - handle.serving_since)
        shard.restarts += 1

    def _failed_start(self, shard: Shard, now: float, how: str) -> None:
        shard.failures.append(now)
        while shard.failures and now - shard.failures[0] > FAILURE_WINDOW:
            shard.failures.popleft()
        if len(shard.failures) >= MAX_START_FAILURES:
            raise SupervisorError(
                f"shard {shard.index}: worker failed to start {len(shard.failures)} times "
                f"in {FAILURE_WINDOW:.0f}s (last: {how}); giving up"
            )
        shard.respawn_at = now + shard.backoff
        log.warning("shard %d: respawning in %.1fs", shard.index, shard.backoff)
        shard.backoff = min(shard.backoff * 2, BACKOFF_MAX)

    def _serving_worker_died(self, shard: Shard, now: float, served: float) -> None:
        if served >= CRASH_RESET:
            # a long-lived worker: the shard is healthy, whatever killed this one
            shard.crash_backoff = 0.0
            shard.backoff = BACKOFF_FIRST
        delay = shard.crash_backoff
        shard.respawn_at = now + delay
        if delay:
            log.warning(
                "shard %d: its workers keep dying (this one served %.2fs); restarting in %.2fs",
                shard.index,
                served,
                delay,
            )
        shard.crash_backoff = min(max(delay * 2, CRASH_BACKOFF_FIRST), CRASH_BACKOFF_MAX)

    # ------------------------------------------------------------------- timers

    def _check_timers(self) -> None:
        now = time.monotonic()
        if self.stopping:
            if now >= self.stop_deadline and self.workers:
                log.warning(
                    "stop: %s still running after the timeout; killing them",
                    count(len(self.workers), "worker"),
                )
                self._kill_all()
            return
        for shard in self.shards:
            if shard.respawn_at is not None and now >= shard.respawn_at and shard.worker is None:
                shard.respawn_at = None
                shard.worker = self._spawn(shard)
        timeout = self.cfg.worker_timeout
        for handle in list(self.workers.values()):
            if handle.replaced:
                continue
            silent = now - handle.last_heartbeat
            if silent > timeout:
                log.error(
                    "shard %d: worker %d sent no heartbeat for %.1fs (timeout %.1fs); killing it",
                    handle.shard,
                    handle.pid,
                    silent,
                    timeout,
                )
                self._replace(handle)
        if now >= self.next_cpu_sample:
            self.next_cpu_sample = now + CPU_WINDOW
            for handle in self.workers.values():
                handle.sample_cpu(now)
        self._roll(now)
        self._answer_status_waiters(now)
        if self.tell_players and now >= self.players_at:
            self.players_at = now + PLAYERS_INTERVAL
            self._tell_players()

    def _tell_players(self) -> None:
        """Every worker's sessions, summed from the shared table, to each worker."""
        total = self.peer_table.sessions()
        for handle in self.workers.values():
            if handle.state in ("serving", "draining") and not handle.replaced:
                self._send(handle, ipc.PLAYERS, sessions=total)

    def _roll(self, now: float) -> None:
        if self.rolling_new is not None or not self.rolling:
            return
        index = self.rolling.popleft()
        shard = self.shard(index)
        if shard is None or shard.removing:
            return
        log.info("shard %d: rolling restart, starting a new worker", index)
        self.rolling_new = self._spawn(shard)
        if shard.worker is None:
            shard.worker = self.rolling_new

    def _kill_all(self) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.workers and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            handle = self.workers.pop(pid, None)
            if handle is not None:
                self._forget_channel(handle)
                self._release_row(handle)
                log.info("shard %d: worker %d %s", handle.shard, pid, _describe_exit(status))
        self.workers.clear()

    def _close(self) -> None:
        if self.control is not None:
            self.control.close()
        for shard in self.shards:
            _close_sockets(shard)
        signal.set_wakeup_fd(-1)
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        for fd in (self._wakeup_r, self._wakeup_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # ------------------------------------------------------------------ status

    def request_status(self, answer: Callable[[], None]) -> None:
        """Ask every worker for a fresh report; call ``answer`` once all replied."""
        for handle in self.workers.values():
            if handle.state in ("serving", "draining") and handle.channel.fileno() >= 0:
                handle.awaiting_reply = True
                self._send(handle, ipc.STATUS)
        self.status_waiters.append((time.monotonic() + STATUS_WAIT, answer))
        self._answer_status_waiters(time.monotonic())

    def _answer_status_waiters(self, now: float) -> None:
        if not self.status_waiters:
            return
        ready = not any(h.awaiting_reply for h in self.workers.values())
        keep = []
        for deadline, answer in self.status_waiters:
            if ready or now >= deadline:
                answer()
            else:
                keep.append((deadline, answer))
        self.status_waiters = keep


def _close_sockets(shard: Shard) -> None:
    shard.sock.close()
    if shard.tls_sock is not None:
        shard.tls_sock.close()


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"killed by signal {signum} ({name})"
    code = os.WEXITSTATUS(status)
    return "exited normally" if code == 0 else f"exited with status {code}"
