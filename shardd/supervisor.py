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
from functools import partial
from typing import Any

import psutil

from shardd import control, listeners, logs, privileges
from shardd.bus_relay import BusRelay
from shardd.config import ConfigError, ConfigSource, ServeConfig, split_address
from shardd.control_handlers import SupervisorHandlers
from shardd.metrics import CONTENT_TYPE, Exposition, ShardTotals
from shardd.metrics_http import MetricsServer
from shardd.reloading import Answer, Reload, keep_restart_only
from shardd.sd_notify import Notifier
from shardd.session_options import session_options
from shardd.shell_probe import ShellProbe
from workers import ipc, proctitle
from workers.peer_table import PeerTable
from workers.plural import count
from workers.signal_table import NO_ACTION, log_ignored
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
# Bytes waiting to be written to one worker (bus traffic, mostly) past which
# the bus frames for it are dropped and counted: a worker that does not read
# its channel never grows the supervisor's memory.
BUS_OUTBOX_LIMIT = 8 * 2**20
# A worker's bus drops are logged at most once in this many seconds
BUS_DROP_LOG_INTERVAL = 10.0
# How often workers are told the sessions of every worker (MSSP PLAYERS)
PLAYERS_INTERVAL = 1.0
# Shards that TTIN or `shardd workers +N` may add to those started with.
EXTRA_SHARDS = 16
# Rows of the shared peer table per shard: its serving worker's, and those of
# old workers still draining after reloads (up to --reload-timeout, a day by
# default). A reload with no free row for every shard's new worker is refused.
ROWS_PER_SHARD = 4
# How often systemd's STATUS= line may change (sd_notify), at most.
NOTIFY_STATUS_INTERVAL = 2.0
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
    drain_until: float | None = None  # draining: when the reload timeout closes its sessions
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
    # bytes of its sessions closed since its last report, as last reported: its
    # next report's counters hold them (shardd/metrics.py)
    unreported_rx: int = 0
    unreported_tx: int = 0
    # what could not be written to its channel yet (its frames in order)
    outbox: bytearray = field(default_factory=bytearray)
    bus_dropped: int = 0  # bus frames for it dropped, its outbox full
    bus_drop_logged: float = 0.0

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
        self,
        cfg: ServeConfig,
        tls_context: ssl.SSLContext | None = None,
        *,
        source: ConfigSource | None = None,
        started: float | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """``tls_context``: the certificate as loaded at start; with it, every shard
        also listens on ``cfg.tls_port``. ``source``: where a reload reads the
        settings again (without one, it keeps ``cfg``). ``started``: the wall
        clock time the server started (MSSP's UPTIME). ``notifier``: systemd's
        (default: from the environment)."""
        self.cfg = cfg
        self.source = source
        self.started_wall = time.time() if started is None else started
        self.notifier = Notifier.from_environment() if notifier is None else notifier
        #: what workers forked from now on serve TLS with (re-read on HUP)
        self.tls_context = tls_context
        self.server_settings = cfg.server_settings()
        # Every worker's counts for the limits per address, shared (mapped before
        # any fork), a row per worker: rows never touched cost no memory.
        self.peer_table = PeerTable(ROWS_PER_SHARD * (cfg.workers + EXTRA_SHARDS))
        self.free_rows = list(range(self.peer_table.rows - 1, -1, -1))
        self.shards: list[Shard] = []
        self.past_counters: Counter[str] = Counter()  # of workers that are gone
        self.past_max_pause_us = 0
        self.shard_totals = ShardTotals()  # per shard, of workers that are gone (metrics)
        self.metrics: MetricsServer | None = None
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
        self.reload: Reload | None = None  # the reload under way
        self.ready = False  # systemd told READY=1: every shard served
        self.notify_status_at = 0.0
        self.watchdog_at = 0.0
        self.control: control.ControlServer | None = None
        self.status_waiters: list[tuple[float, Callable[[], None]]] = []
        self.next_cpu_sample = 0.0
        # only a server that answers MSSP needs its workers told the total
        self.tell_players = "mssp" in cfg.offer
        self.players_at = 0.0
        self._wakeup_r = self._wakeup_w = -1
        #: the local message bus between workers (shardd/bus_relay.py)
        self.bus_relay = BusRelay(self._send_bus_frame, self._bus_workers)

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

    def bind_metrics(self) -> None:
        """Listen for Prometheus scrapes, if ``--metrics`` says where."""
        if self.cfg.metrics is None:
            return
        host, port = split_address(self.cfg.metrics)
        sock = listeners.bind(host, port, backlog=64)
        self.metrics = MetricsServer(
            sock,
            self.selector,
            Exposition(self).render,
            CONTENT_TYPE,
            refresh=self.request_status,  # exact figures, as `shardd status` has
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
        if self.metrics is not None:
            mhost, mport = self.metrics.address
            mhost = f"[{mhost}]" if ":" in mhost else mhost
            log.info("metrics on http://%s:%d/metrics", mhost, mport)
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
        if self.signals:
            return 0.0
        if self.notifier.watchdog_interval is not None:
            return max(0.0, min(0.2, self.watchdog_at - time.monotonic()))
        return 0.2

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
                log.info("SIGHUP: rolling restart, with the settings read again")
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
        self.notifier.stopping()
        if self.reload is not None:
            self._end_reload(False, "reload cut short: the server is stopping")
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

    def begin_reload(self, answer: Answer | None = None) -> None:
        """Begin a reload (HUP, ``shardd reload``); ``answer`` learns how it ends.

        The settings are read again (``--config`` and the flags), the TLS
        certificate too, and a probe imports the shell and protocol; if any of
        that fails, nothing changes. Then each shard gets a new worker, one
        at a time, and its old one drains (docs/ARCHITECTURE.md, "Reload").
        """
        if self.stopping:
            if answer is not None:
                answer(False, "the server is stopping: no reload")
            return
        if self.reload is not None:
            log.info("reload: one is already under way")
            if answer is not None:
                answer(False, "a reload is already under way")
            return
        self.notifier.reloading()
        self.reload = reload = Reload(self.cfg, self.tls_context, None)
        if answer is not None:
            reload.answers.append(answer)
        path = self.source.path if self.source is not None else None
        log.info("reload: reading the settings%s again", f" of {path}" if path else "")
        try:
            cfg = self.source.load() if self.source is not None else self.cfg
        except ConfigError as exc:
            self._reload_failed(str(exc))
            return
        for line in keep_restart_only(self.cfg, cfg, path):
            log.warning("%s", line)
        if self.tls_port is not None:
            if cfg.certfile is None:
                self._reload_failed("certfile: not set, and TLS stays on until a restart")
                return
            try:
                reload.tls_context = load_context(cfg.certfile, cfg.keyfile)
            except TlsError as exc:
                self._reload_failed(f"{exc.key}: {exc}")
                return
            log.info("reload: TLS certificate re-read from %s", cfg.certfile)
        shards = len(self.active_shards())
        if len(self.free_rows) < shards:
            draining = sum(1 for h in self.workers.values() if h.state == "draining")
            self._reload_failed(
                f"{count(draining, 'old worker')} still draining leave room for "
                f"{count(len(self.free_rows), 'new worker')}, not {shards} (wait for their "
                "sessions to end, or lower "
                "reload-timeout)"
            )
            return
        reload.cfg = cfg
        reload.probe = probe = ShellProbe(cfg, self.started_wall)
        self.selector.register(probe.fd, selectors.EVENT_READ, self._probe_readable)

    def _probe_readable(self, _key: Any, _mask: int) -> None:
        reload = self.reload
        if reload is not None and reload.probe is not None and reload.probe.read():
            self._probed(reload)

    def _probed(self, reload: Reload) -> None:
        """The probe's verdict is in: refuse the reload, or start the new workers."""
        probe = reload.probe
        assert probe is not None
        self._close_probe(reload)
        if probe.error is not None:
            self._reload_failed(str(probe.error))
            return
        cfg = self.cfg = reload.cfg
        self.server_settings = cfg.server_settings()
        self.tls_context = reload.tls_context
        logging.getLogger().setLevel(cfg.log_level.upper())
        self.tell_players = "mssp" in cfg.offer
        reload.rolling = True
        log.info(
            "reload: shell %s imports; a new worker for each of %s",
            cfg.shell,
            count(len(self.active_shards()), "shard"),
        )
        self.rolling.extend(shard.index for shard in self.active_shards())

    def _close_probe(self, reload: Reload) -> None:
        probe, reload.probe = reload.probe, None
        if probe is None:
            return
        if probe.fd >= 0:
            try:
                self.selector.unregister(probe.fd)
            except (KeyError, ValueError):
                pass
        if not probe.done:
            probe.kill()  # reaped by _reap, like any child
        probe.close()

    def _reload_failed(self, problem: str) -> None:
        log.error("reload failed: %s; the old workers keep serving", problem)
        self._end_reload(False, f"reload failed: {problem}; the old workers keep serving")

    def _end_reload(self, ok: bool, message: str) -> None:
        reload, self.reload = self.reload, None
        if reload is None:
            return
        self._close_probe(reload)
        reload.finish(ok, message)
        if not self.stopping:  # systemd waits for READY=1 after RELOADING=1
            self.notifier.ready(self._notify_status_line())

    def _reload_done(self, reload: Reload) -> None:
        old = [h for h in self.workers.values() if h.state == "draining"]
        sessions = sum(self.peer_table.row_sessions(h.row) for h in old)
        timeout = self.cfg.reload_timeout
        message = (
            f"reloaded: {count(reload.rolled, 'shard')} serving new workers; "
            f"{count(sessions, 'session')} {'stays' if sessions == 1 else 'stay'} on old "
            "workers until they end"
            f"{f' or {timeout:g} s' if timeout else ''}"
        )
        log.info("%s (%.2fs)", message, time.monotonic() - reload.started)
        self._end_reload(True, message)

    def change_workers(self, delta: int) -> tuple[int, str | None]:
        """Add (``delta`` > 0) or remove shards; the shards served now, and why
        not all of ``delta`` was done (None if it was)."""
        if self.stopping:
            return len(self.active_shards()), "the server is stopping"
        problem = None
        # a row of the shared table each; those of draining workers are taken
        room = len(self.free_rows)
        if delta > room:
            problem = (
                f"the shared table has rows for {max(room, 0)} more (restart with more --workers)"
            )
            log.warning("adding %s, not %d: %s", count(max(room, 0), "shard"), delta, problem)
            delta = max(room, 0)
        for _ in range(delta):
            try:
                shard = self._add_shard_socket(len(self.shards))
            except OSError as exc:  # out of file descriptors, say: the others serve on
                problem = f"cannot listen on one more socket: {exc.strerror or exc}"
                log.error("adding shards: %s", problem)
                break
            try:
                self._spawn(shard)
            except OSError as exc:
                problem = f"cannot start a worker: {exc.strerror or exc}"
                log.error("shard %d: %s; shard removed", shard.index, problem)
                _close_sockets(shard)
                self.shards.remove(shard)
                break
            log.info("shard %d added", shard.index)
        for _ in range(-delta):
            active = self.active_shards()
            if len(active) <= 1:
                problem = "a server keeps at least one shard"
                log.warning("not removing the last shard")
                break
            self._remove_shard(active[-1])
        return len(self.active_shards()), problem

    def active_shards(self) -> list[Shard]:
        """The shards being served: not those being removed."""
        return [s for s in self.shards if not s.removing]

    def _remove_shard(self, shard: Shard) -> None:
        shard.removing = True
        log.info("shard %d removed: its worker drains its sessions", shard.index)
        if shard.worker is not None:
            self._drain(shard.worker)
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

    def _drain(self, handle: WorkerHandle) -> None:
        """Tell an old worker to stop accepting; its sessions go on for up to the reload timeout."""
        timeout = self.cfg.reload_timeout
        self._send(handle, ipc.DRAIN, timeout=timeout)
        handle.state = "draining"
        handle.drain_until = time.monotonic() + timeout if timeout else None

    def _spawn(self, shard: Shard) -> WorkerHandle | None:
        """Fork a worker for ``shard``; None if no row of the shared table is free."""
        if not self.free_rows:
            log.error(
                "shard %d: no free row in the shared table for a new worker "
                "(old workers still drain); trying again in a second",
                shard.index,
            )
            return None
        ours, theirs = socket.socketpair()
        row = self.free_rows.pop()
        try:
            pid = os.fork()
        except OSError:
            self.free_rows.append(row)
            ours.close()
            theirs.close()
            raise
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
            run_worker(
                settings, shard.sock, theirs, partial(session_options, self.cfg, self.started_wall)
            )
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
        log.info(
            "shard %d: worker %d started",
            shard.index,
            pid,
            extra={"event": "worker_started", "shard": shard.index, "worker": pid},
        )
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
        if self.metrics is not None:
            self.metrics.close_in_child()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)
        if self.reload is not None and self.reload.probe is not None:
            self.reload.probe.close()

    def _channel_readable(self, handle: WorkerHandle) -> Callable[[Any, int], None]:
        def on_readable(_key: Any, mask: int) -> None:
            if mask & selectors.EVENT_WRITE:
                self._flush_outbox(handle)
            if not mask & selectors.EVENT_READ:
                return
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
            # whatever a worker sends, its loop sent it: a heartbeat queued
            # behind a burst of bus frames must not make a live worker look hung
            handle.last_heartbeat = time.monotonic()
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
        handle.outbox.clear()
        self.bus_relay.forget(handle.pid)

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
            handle.unreported_rx = handle.unreported_tx = 0  # these counters hold them
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
            record = handle.sessions.pop(message["id"], None)
            if record is not None and record[2] is not None:
                handle.unreported_rx += record[2][1]
                handle.unreported_tx += record[2][2]
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
        elif kind in ipc.BUS_KINDS:
            self.bus_relay.on_message(handle.pid, message)
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
            if self.reload is not None:
                self.reload.rolled += 1
            if old is not None and old is not handle and old.pid in self.workers:
                # the new worker is accepting: now the old one may stop
                log.info(
                    "shard %d: worker %d replaces %d, which drains its sessions",
                    shard.index,
                    handle.pid,
                    old.pid,
                )
                self._drain(old)
        if not self.ready and all(
            s.worker is not None and s.worker.state == "serving" for s in self.active_shards()
        ):
            self.ready = True
            self.notifier.ready(self._notify_status_line())

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
        self._write(handle, ipc.pack(kind, **fields))

    def _write(self, handle: WorkerHandle, frame: bytes, *, bus: bool = False) -> bool:
        """Write ``frame`` to the worker, or queue it behind what waits already.

        The socket is non-blocking: what it does not take now waits in the
        handle's outbox, written as the channel becomes writable, so frames
        are never cut. Bus frames for a worker whose outbox holds
        BUS_OUTBOX_LIMIT are dropped (False); control frames are tiny and
        always queued.
        """
        if handle.channel.fileno() < 0:
            return False
        outbox = handle.outbox
        if outbox:
            if bus and len(outbox) + len(frame) > BUS_OUTBOX_LIMIT:
                self._bus_dropped(handle)
                return False
            outbox += frame
            return True
        try:
            sent = handle.channel.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # a closed channel: a dying worker
            log.debug("shard %d: cannot write to worker %d: %s", handle.shard, handle.pid, exc)
            return False
        if sent < len(frame):
            outbox += frame[sent:]
            self._watch_writable(handle, True)
        return True

    def _flush_outbox(self, handle: WorkerHandle) -> None:
        outbox = handle.outbox
        try:
            sent = handle.channel.send(outbox) if outbox else 0
        except BlockingIOError:
            return
        except OSError:
            outbox.clear()
            sent = 0
        del outbox[:sent]
        if not outbox:
            self._watch_writable(handle, False)

    def _watch_writable(self, handle: WorkerHandle, on: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        try:
            self.selector.modify(handle.channel, events, self._channel_readable(handle))
        except (KeyError, ValueError):
            pass

    def _bus_dropped(self, handle: WorkerHandle) -> None:
        handle.bus_dropped += 1
        now = time.monotonic()
        if now - handle.bus_drop_logged >= BUS_DROP_LOG_INTERVAL:
            handle.bus_drop_logged = now
            log.warning(
                "shard %d: worker %d reads its channel too slowly: bus messages for it "
                "dropped (%d so far; its outbox holds %d bytes)",
                handle.shard,
                handle.pid,
                handle.bus_dropped,
                len(handle.outbox),
            )

    def _send_bus_frame(self, pid: int, frame: bytes) -> bool:
        handle = self.workers.get(pid)
        return handle is not None and not handle.replaced and self._write(handle, frame, bus=True)

    def _bus_workers(self) -> list[int]:
        """The workers a who() asks and a send may reach: those that serve sessions."""
        return [
            handle.pid
            for handle in self.workers.values()
            if handle.state in ("serving", "draining") and not handle.replaced
        ]

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
            lost = self._sessions_lost(handle)  # before its row is cleared
            self._release_row(handle)
            self._worker_died(handle, _describe_exit(status), lost)

    def _sessions_lost(self, handle: WorkerHandle) -> tuple[int, bool]:
        """How many sessions a dead worker still held, and whether that is exact.

        Its row of the peer table counts, as the worker admitted and ended
        them, every connection it held (those still in a TLS handshake too),
        sessions opened since its last report included. A worker that died
        before it wrote its row leaves only its reports: at least those.
        """
        reported = max(
            len(handle.sessions),
            handle.accepted - handle.counters.get("sessions_ended", 0),
        )
        if self.peer_table.in_use(handle.row):
            return max(self.peer_table.row_sessions(handle.row), reported), True
        return reported, False

    def _release_row(self, handle: WorkerHandle) -> None:
        # status totals outlive the worker
        self.past_counters.update(handle.counters)
        pause = handle.counters.get("gc_max_pause_us", 0)
        self.past_max_pause_us = max(self.past_max_pause_us, pause)
        self.shard_totals.retire(handle)
        # the worker and its sessions are gone: so are their counts
        self.peer_table.clear(handle.row)
        self.free_rows.append(handle.row)

    def _worker_died(
        self, handle: WorkerHandle, how: str, lost: tuple[int, bool] = (0, True)
    ) -> None:
        shard = self.shard(handle.shard)
        expected = self.stopping or handle.state in ("draining", "stopping")
        level = logging.INFO if expected else logging.ERROR
        sessions, exact = lost
        if sessions or not expected:
            what = f"; {'' if exact else 'at least '}{count(sessions, 'session')} lost"
        else:
            what = ""
        log.log(
            level,
            "shard %d: worker %d %s%s",
            handle.shard,
            handle.pid,
            how,
            what,
            extra={
                "event": "worker_died",
                "shard": handle.shard,
                "worker": handle.pid,
                "exit": how,
                "sessions_lost": sessions,
            },
        )
        if self.rolling_new is handle:
            self.rolling_new = None
            log.error(
                "shard %d: replacement worker died during the rolling restart; "
                "the old worker keeps serving",
                handle.shard,
            )
            if self.reload is not None:
                self.rolling.clear()
                reload = self.reload
                self._end_reload(
                    False,
                    f"reload failed: shard {handle.shard}'s new worker {how} before serving "
                    f"(see the log); {reload.rolled} of {len(self.active_shards())} shards "
                    "serve new workers, the others keep their old ones",
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
        if self.metrics is not None:
            self.metrics.expire(now)
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
                shard.worker = self._spawn(shard)
                shard.respawn_at = None if shard.worker is not None else now + 1.0
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
        reload = self.reload
        if reload is not None and reload.probe is not None and now >= reload.probe.deadline:
            reload.probe.expire()
            self._probed(reload)
        self._roll(now)
        self.bus_relay.check_deadlines(now)
        self._answer_status_waiters(now)
        self._notify(now)
        if self.tell_players and now >= self.players_at:
            self.players_at = now + PLAYERS_INTERVAL
            self._tell_players()

    def _tell_players(self) -> None:
        """Every worker's sessions, summed from the shared table, to each worker."""
        total = self.peer_table.sessions()
        for handle in self.workers.values():
            if handle.state in ("serving", "draining") and not handle.replaced:
                self._send(handle, ipc.PLAYERS, sessions=total)

    def _notify(self, now: float) -> None:
        """systemd's watchdog, and its STATUS= line when it changed."""
        notifier = self.notifier
        if not notifier.enabled:
            return
        if notifier.watchdog_interval is not None and now >= self.watchdog_at:
            self.watchdog_at = now + notifier.watchdog_interval
            notifier.watchdog()
        if self.ready and now >= self.notify_status_at:
            self.notify_status_at = now + NOTIFY_STATUS_INTERVAL
            notifier.status(self._notify_status_line())

    def _notify_status_line(self) -> str:
        sessions = self.peer_table.sessions()
        line = f"{count(len(self.active_shards()), 'shard')}, {sessions:,} session"
        line += "" if sessions == 1 else "s"
        draining = sum(1 for h in self.workers.values() if h.state == "draining")
        return line + (f", {count(draining, 'old worker')} draining" if draining else "")

    def _roll(self, now: float) -> None:
        if self.rolling_new is not None:
            return
        if not self.rolling:
            if self.reload is not None and self.reload.rolling:
                self._reload_done(self.reload)
            return
        index = self.rolling.popleft()
        shard = self.shard(index)
        if shard is None or shard.removing:
            return
        log.info("shard %d: rolling restart, starting a new worker", index)
        self.rolling_new = self._spawn(shard)
        if self.rolling_new is None:
            self.rolling.clear()
            if self.reload is not None:
                self._end_reload(
                    False,
                    f"reload failed: no free row for shard {index}'s new worker "
                    "(old workers still drain)",
                )
            return
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
        if self.reload is not None:
            self.reload.finish(False, "reload cut short: the server stopped")
            self._close_probe(self.reload)
        self.notifier.close()
        if self.control is not None:
            self.control.close()
        if self.metrics is not None:
            self.metrics.close()
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
