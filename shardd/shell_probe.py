"""Checking that a shell and protocol import, without importing them here.

The supervisor must not import an operator's modules (a reload's workers are
forked from it and must import the code as it is on disk then, see
:mod:`shardd.session_options`), yet a shell that does not import is one clear
line and exit status 2 at start, and a reload refused with the reason. So a
probe is forked: it imports them, writes its verdict on a pipe and exits.
The supervisor reads the pipe from its select loop (at a reload) or waits on
it (at start); either way a probe that hangs is killed at ``PROBE_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

from shardd.config import ConfigError, ServeConfig

#: how long importing the shell and protocol may take
PROBE_TIMEOUT = 30.0
_OK = b"ok"
_SEP = b"\0"


class ShellProbe:
    """A child process that imports ``cfg``'s shell and protocol and reports."""

    def __init__(self, cfg: ServeConfig, started: float) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _probe(write_end, cfg, started)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.pid = pid
        self.fd = read_end
        self.deadline = time.monotonic() + PROBE_TIMEOUT
        #: None until the verdict is in; then None for a shell that imports
        self.error: ConfigError | None = None
        self.done = False
        self._data = bytearray()

    def fileno(self) -> int:
        return self.fd

    def read(self) -> bool:
        """Read what the probe wrote; True once its verdict is in (see ``error``)."""
        try:
            while chunk := os.read(self.fd, 4096):
                self._data += chunk
                if len(self._data) > 65536:  # a verdict is a line, not a stream
                    break
        except BlockingIOError:
            return False
        self._verdict(bytes(self._data))
        return True

    def expire(self) -> None:
        """The probe took too long: kill it; the verdict is that."""
        self.kill()
        self._set_error(
            ConfigError("shell", f"importing the shell and protocol took over {PROBE_TIMEOUT:g}s")
        )

    def wait(self) -> None:
        """Block until the verdict is in or the time is up, and reap the probe
        (at start: no supervisor loop reaps it yet)."""
        while not self.done:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.expire()
                break
            ready, _w, _x = select.select([self.fd], [], [], left)
            if ready:
                self.read()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _verdict(self, data: bytes) -> None:
        if data == _OK:
            self.done = True
            return
        parts = data.split(_SEP, 2)
        if len(parts) == 3 and parts[0] == b"error":
            key, problem = (p.decode("utf-8", "replace") for p in parts[1:])
            self._set_error(ConfigError(key, problem))
        else:
            self._set_error(ConfigError("shell", "checking the shell failed: the probe died"))

    def _set_error(self, error: ConfigError) -> None:
        if not self.done:
            self.error = error
            self.done = True


def _probe(write_end: int, cfg: ServeConfig, started: float) -> None:
    """In the child: import, report, exit; never returns."""
    try:
        # the supervisor's handlers and wakeup fd must not act here
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_DFL)
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_IGN)
        from shardd.session_options import session_options

        try:
            session_options(cfg, started)
            verdict = _OK
        except ConfigError as exc:
            problem = str(exc).split(": ", 1)[-1]
            verdict = _SEP.join([b"error", exc.key.encode(), problem.encode()])
        except BaseException as exc:  # the operator's code may raise anything
            problem = f"checking the shell failed: {type(exc).__name__}: {exc}"
            verdict = _SEP.join([b"error", b"shell", problem.encode()])
        os.write(write_end, verdict)
    finally:
        os._exit(0)
