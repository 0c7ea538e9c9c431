"""Shared test helpers: real ``shardd serve`` subprocesses and condition waits."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"serving telnet on (\S+):(\d+)")
NO_ADDRESS_LIMITS = ("--max-sessions-per-ip", "0", "--max-connect-rate-per-ip", "0")
IAC_DO_TTYPE = bytes((255, 253, 24))  # the first bytes every session gets
IAC_WONT_TTYPE = bytes((255, 252, 24))


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


#: the fields ``status`` documents for each worker and each connection
#: (README, "Operating"); tests check replies have at least these
WORKER_FIELDS = frozenset(
    {
        "shard",
        "pid",
        "state",
        "restarts",
        "connections",
        "accepted",
        "accept_queue",
        "cpu_percent",
        "rss_bytes",
        "last_report_age",
    }
)
CONNECTION_FIELDS = frozenset(
    {
        "shard",
        "worker_pid",
        "id",
        "peer",
        "duration",
        "idle",
        "rx_bytes",
        "tx_bytes",
        "term",
        "client_name",
        "mtts",
        "mtts_flags",
        "cols",
        "rows",
        "encoding",
        "state",
    }
)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


async def async_wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = ""
) -> object:
    """``wait_until`` for coroutines: yields to the loop between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A blocking client socket to the server (10 s timeout)."""
    return socket.create_connection((host, port), timeout=10)


def read_until(
    sock: socket.socket, marker: bytes, got: bytearray, timeout: float = 10.0
) -> bytearray:
    """Receive into ``got`` until ``marker`` is in it; fail on timeout or EOF."""
    deadline = time.monotonic() + timeout
    while marker not in got:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {marker!r}; got {bytes(got)!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        assert chunk, f"EOF waiting for {marker!r}; got {bytes(got)!r}"
        got += chunk
    return got


def read_to_eof(
    sock: socket.socket, got: bytearray | None = None, timeout: float = 10.0
) -> bytearray:
    """Receive into ``got`` until the server closes (EOF, or a reset); fail on timeout."""
    got = bytearray() if got is None else got
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not closed within {timeout}s; got {bytes(got)!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def start_session(
    port: int, marker: bytes = b"> ", source: str | None = None
) -> tuple[socket.socket, bytearray]:
    """Connect (from ``source``, an address on loopback), refuse TTYPE so that
    negotiation settles and the shell starts at once, and read up to ``marker``
    (nothing past the refusal if it is empty)."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=None if source is None else (source, 0)
    )
    try:
        got = read_until(sock, IAC_DO_TTYPE, bytearray())
        sock.sendall(IAC_WONT_TTYPE)
        if marker:
            read_until(sock, marker, got)
    except BaseException:
        sock.close()
        raise
    return sock, got


class ServerProcess:
    """A ``shardd serve`` subprocess on loopback, its stderr collected line by line."""

    def __init__(
        self,
        *args: str,
        cwd: Path = ROOT,
        console_script: bool = False,
        address_limits: bool = False,
        nofile: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``console_script``: run the installed ``shardd`` command, not ``python -m shardd``.

        Every client of a test comes from loopback, most from 127.0.0.1: unless
        ``address_limits``, the limits per address are off (tests of them turn
        them on). ``nofile``: the server's limit of open files, soft and hard.
        ``env``: variables added to the server's environment.
        """
        self.args = list(args)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        if "--workers" not in args:
            args = ("--workers", "0", *args)
        if not address_limits:
            args = (*NO_ADDRESS_LIMITS, *args)
        command = (
            [str(Path(sys.executable).parent / "shardd")]
            if console_script
            else [sys.executable, "-m", "shardd"]
        )
        self.proc = subprocess.Popen(
            [*command, "serve", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=None if nofile is None else lambda: _limit_files(nofile),
            env=None if env is None else {**os.environ, **env},
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        match = self.wait_for_log(_LISTENING, timeout=20)
        self.host, self.port = match.group(1), int(match.group(2))

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """The first stderr line matching ``pattern``, waiting for it to appear."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no log line matching {regex.pattern!r}; stderr so far:\n"
                        + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.2))

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"shardd did not exit within {timeout}s of signal {sig}") from None


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``shardd serve`` with the given extra arguments; stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str, **options: Any) -> ServerProcess:
        server = ServerProcess(*args, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()


def run_shardd(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run one ``shardd`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "shardd", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
async def harness() -> AsyncIterator[Any]:
    """In-process listeners on loopback for BaseServer/TelnetServer tests."""
    from server_peers import Harness

    h = Harness()
    yield h
    await h.aclose()


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def peer_of(sock: socket.socket) -> str:
    """How the server names this client: host:port."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"
