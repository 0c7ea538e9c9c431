"""Signals shardd has no action for, and what every process does with them.

By default most signals end a process, so a stray ``kill -USR2`` (the
binary upgrade of nginx, the re-exec of gunicorn, sent by habit) would drop
every session of the server without a word. The supervisor and the single
process (``--workers 0``) log the first of each of these signals
("SIGUSR2 ignored: shardd has no action for it"), then ignore it; workers
ignore them from the start (``workers/worker.py``: the supervisor speaks for
the server).

Which signals, and why:

- USR2: operators of nginx and gunicorn send it by habit; shardd has no
  re-exec.
- ALRM, VTALRM, PROF: timers; shardd sets none (a profiler that uses them
  installs its own handler over ours).
- IO (POLL): asynchronous I/O notices; shardd asks for none.
- PWR: a power failure, for init to act on.
- STKFLT: unused on Linux.
- XCPU, XFSZ: the soft CPU time and file size limits (RLIMIT_CPU,
  RLIMIT_FSIZE). Ending the server there drops every session; instead it
  says so once and goes on: the hard CPU limit still ends it (SIGKILL), and a
  write past the file size limit fails (EFBIG: a lost log line) rather than
  killing the process.

Left alone: SIGKILL and SIGSTOP (they cannot be caught); the faults (SEGV,
BUS, ILL, FPE, ABRT, SYS, TRAP), after which the process's state cannot be
trusted; PIPE, which Python already ignores (a write fails with EPIPE); the
real-time signals, which nobody sends to a server by habit.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("shardd")

#: signals whose default is to end the process and that shardd does not act on
NO_ACTION: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in (
        "SIGUSR2",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGPWR",
        "SIGSTKFLT",
        "SIGXCPU",
        "SIGXFSZ",
    )
    if hasattr(signal, name)
)


def log_ignored(signum: int) -> None:
    """The one line for the first of a signal in NO_ACTION; the caller then ignores it."""
    log.warning("%s ignored: shardd has no action for it", signal.Signals(signum).name)
