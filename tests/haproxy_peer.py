"""A real HAProxy in front of ``shardd serve`` for the PROXY protocol tests.

HAProxy (Debian's ``haproxy``, installed by ``deploy/install.sh --test``)
runs in the foreground (``-db``) with a configuration the test gives; its
log and warnings are collected line by line, as ``ServerProcess`` does for
shardd.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from conftest import read_until, wait_until

TIMEOUT = 10.0
_ADDRESSES = re.compile(rb"ADDRESSES (\{.*?\})\r\n")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now, for HAProxy to bind."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (read from /proc: no connection made)."""
    needle = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if (fields[1] + " ").endswith(needle) and fields[3] == "0A":
                        return True
        except FileNotFoundError:
            continue
    return False


class HAProxy:
    """``haproxy -db -f CONFIG``, started once every port in ``listens`` is bound."""

    def __init__(
        self, config: str, directory: Path, listens: list[int], env: dict[str, str] | None = None
    ) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        assert os.path.exists(haproxy), "haproxy is not installed (deploy/install.sh --test)"
        self.path = directory / "haproxy.cfg"
        self.path.write_text(config)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(self.path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._collect, daemon=True).start()
        for port in listens:
            wait_until(
                lambda port=port: listening(port) or self.proc.poll() is not None,
                TIMEOUT,
                f"haproxy listening on {port}",
            )
            assert self.proc.poll() is None, "haproxy exited:\n" + self.log_text()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no haproxy line matching {pattern!r}:\n" + "\n".join(
                    self.lines
                )
                self._cond.wait(min(remaining, 0.2))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)


def connect_from(source: str, port: int, host: str = "127.0.0.1") -> socket.socket:
    """A client socket to ``host:port`` from the loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def read_addresses(sock: socket.socket, got: bytearray | None = None) -> dict[str, Any]:
    """What the ``addresses`` test shell says the session's addresses are."""
    got = bytearray() if got is None else got
    read_until(sock, b"}\r\n", got)
    match = _ADDRESSES.search(got)
    assert match, bytes(got)
    seen: dict[str, Any] = json.loads(match.group(1))
    return seen


def closed_with_nothing(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes ``sock`` (a reset counts as a close)."""
    got = bytearray()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return bytes(got)
        except TimeoutError:
            continue
        if not chunk:
            return bytes(got)
        got += chunk
    raise AssertionError(f"not closed within {TIMEOUT}s; got {bytes(got)!r}")
