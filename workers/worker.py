"""A worker process: a Server on one shard's socket(s), with a channel to the supervisor.

``run_worker`` is called in the child right after fork and never returns. The
order matters (docs/ARCHITECTURE.md, "Invariants"): reset what was inherited
from the supervisor, ask the kernel to kill us with it, and only then create
a fresh uvloop loop, in which the same :class:`~workers.serving.Server` runs
as in development mode, plus its :class:`~workers.channel.SupervisorChannel`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import uvloop

from workers.channel import SupervisorChannel
from workers.peer_table import PeerTable
from workers.proctitle import set_title
from workers.serving import Server, ServerSettings, SessionOptions
from workers.signal_table import NO_ACTION
from workers.tls import TlsListener

log = logging.getLogger("shardd.worker")

PR_SET_PDEATHSIG = 1
# What a worker does with every signal the supervisor handles, from fork until
# its event loop installs its own handlers (TERM: graceful stop, QUIT: fast
# stop, USR1: reopen logs). A fork inherits the supervisor's Python handlers,
# which must not run here.
SIGNAL_DISPOSITIONS: dict[signal.Signals, signal.Handlers] = {
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGQUIT: signal.SIG_DFL,
    signal.SIGUSR1: signal.SIG_DFL,
    signal.SIGCHLD: signal.SIG_DFL,
    # Ctrl-C, a hangup or job control in a terminal reach the whole process
    # group: the supervisor decides what they mean, so a worker ignores them.
    signal.SIGINT: signal.SIG_IGN,
    signal.SIGHUP: signal.SIG_IGN,
    signal.SIGTTIN: signal.SIG_IGN,
    signal.SIGTTOU: signal.SIG_IGN,
    # A write to a client that hung up must be an EPIPE error for that one
    # session, never a kill of every session of the worker.
    signal.SIGPIPE: signal.SIG_IGN,
    # USR2 and the others nobody acts on (workers/signal_table.py): the
    # supervisor logs the first of each; a worker just goes on.
    **dict.fromkeys(NO_ACTION, signal.SIG_IGN),
}


@dataclass
class WorkerSettings:
    shard: int
    server: ServerSettings
    #: the shared table of counts every worker writes a row of, and this one's row
    peer_table: PeerTable
    row: int
    stats_interval: float = 1.0
    heartbeat_interval: float = 1.0
    reopen_logs: Callable[[], None] | None = None
    #: the shard's TLS socket and the certificate as the supervisor last read it
    tls: TlsListener | None = None
    #: the address it serves, host:port, for its process title
    listen: str = ""


def run_worker(
    settings: WorkerSettings,
    listen_sock: socket.socket,
    ipc_sock: socket.socket,
    make_opts: Callable[[], SessionOptions],
) -> NoReturn:
    """The whole life of a worker process, after fork.

    ``make_opts`` imports the operator's shell and protocol: here, after the
    fork, so that every worker imports them as they are on disk when it
    starts (a reload's new code). One that cannot is a failed start: one
    line in the log, exit status 1.
    """
    code = 0
    try:
        _reset_inherited_state(settings.shard, settings.listen)
        try:
            opts = make_opts()
        except ValueError as exc:  # the one line that says what is wrong
            log.error("shard %d: worker cannot start: %s", settings.shard, exc)
            code = 1
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(_serve(settings, listen_sock, ipc_sock, opts))
    except BaseException as exc:  # the process ends here either way
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            log.exception("shard %d: worker failed: %s", settings.shard, exc)
            code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _reset_inherited_state(shard: int, listen: str) -> None:
    for signum, disposition in SIGNAL_DISPOSITIONS.items():
        signal.signal(signum, disposition)
    # Python keeps the parent's wakeup fd across fork: the parent's handlers
    # would otherwise be woken by this child's signals.
    signal.set_wakeup_fd(-1)
    parent = os.getppid()
    _set_parent_death_signal()
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)
    set_title(f"worker shard {shard} {listen}".rstrip())


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


async def _serve(
    settings: WorkerSettings,
    listen_sock: socket.socket,
    ipc_sock: socket.socket,
    opts: SessionOptions,
) -> None:
    server = Server(
        listen_sock,
        opts,
        settings.server,
        shared_extra={"shard": settings.shard},
        counts=settings.peer_table.writer(settings.row),
        tls=settings.tls,
    )
    channel = SupervisorChannel(
        ipc_sock,
        settings.shard,
        stats_interval=settings.stats_interval,
        heartbeat_interval=settings.heartbeat_interval,
    )
    if settings.reopen_logs is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, settings.reopen_logs)
    await server.serve({signal.SIGTERM: "stop", signal.SIGQUIT: "quit"}, channel)
