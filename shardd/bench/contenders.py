"""The servers ``shardd bench`` measures, and each one's process while it is measured."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import psutil

from shardd import control

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Contender:
    name: str
    command: tuple[str, ...]  # with {port} to fill in ({tls_port}, {certfile}, {keyfile} too)
    anchor: bool = False
    shards: int = 0  # >0: a shardd supervisor with this many workers
    #: clients speak TLS, to {tls_port}, with a self-signed certificate made for the run
    tls: bool = False


def _shardd(workers: int) -> tuple[str, ...]:
    return (
        sys.executable,
        "-m",
        "shardd",
        "serve",
        "--host",
        HOST,
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--shell",
        "echo",
        "--log-level",
        "warning",
        # every session comes from 127.0.0.1: the limits per address would refuse
        # most of them, and a benchmark measures throughput, not limits
        "--max-sessions-per-ip",
        "0",
        "--max-connect-rate-per-ip",
        "0",
    )


def _tls(command: tuple[str, ...]) -> tuple[str, ...]:
    return (
        *command,
        "--tls-port",
        "{tls_port}",
        "--certfile",
        "{certfile}",
        "--keyfile",
        "{keyfile}",
    )


def _anchor(kind: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "shardd.bench.anchors", kind, "--host", HOST, "--port", "{port}")


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("shardd-1w", _shardd(1), shards=1),
        Contender("shardd-2w", _shardd(2), shards=2),
        # the same worker, every session over TLS: its ratios to shardd-1w are TLS's cost
        Contender("shardd-1w-tls", _tls(_shardd(1)), shards=1, tls=True),
        Contender("telnetlib3", _anchor("telnetlib3"), anchor=True),
        Contender("uvloop-streams", _anchor("streams"), anchor=True),
        Contender("uvloop-protocol", _anchor("protocol"), anchor=True),
    )
}


class BenchError(RuntimeError):
    """A contender would not start or a scenario failed; the message says which."""


class Server:
    """One contender process on a free loopback port."""

    def __init__(self, contender: Contender, shell: str | None = None) -> None:
        """``shell``: a shardd contender serves it instead of its own (``--shell``)."""
        self.contender = contender
        self.port = _free_port()
        #: the port clients connect to: the TLS one for a TLS contender
        self.client_port = self.port
        self.scratch = tempfile.TemporaryDirectory(prefix="shardd-bench-")
        values = {"{port}": str(self.port)}
        if contender.tls:
            self.client_port = _free_port(other_than=self.port)
            certfile, keyfile = _self_signed(self.scratch.name)
            values.update(
                {"{tls_port}": str(self.client_port), "{certfile}": certfile, "{keyfile}": keyfile}
            )
        command = [values.get(part, part) for part in contender.command]
        if shell is not None:
            if not contender.shards:
                raise BenchError(f"{contender.name} cannot serve the {shell} shell")
            command[command.index("--shell") + 1] = shell
        # a file, not a pipe: nobody reads a contender's log while it runs, and a
        # full pipe would freeze it mid-write (telnetlib3 logs every reset)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log
        )
        try:
            self._wait_ready(20.0)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                raise BenchError(
                    f"{self.contender.name} exited with status "
                    f"{self.proc.returncode}: {err.strip()[-500:]}"
                )
            if self._ready():
                return
            time.sleep(0.05)  # polling a starting process, bounded by the deadline
        raise BenchError(f"{self.contender.name} was not serving within {timeout:.0f}s")

    def _ready(self) -> bool:
        if self.contender.shards:
            try:
                status = control.request(
                    control.default_path(self.port), {"cmd": "status"}, timeout=2.0
                )
            except control.ControlError:
                return False
            workers = status["workers"]
            return len(workers) == self.contender.shards and all(
                w["state"] == "serving" for w in workers
            )
        try:
            socket.create_connection((HOST, self.client_port), timeout=1.0).close()
        except OSError:
            return False
        return True

    def pids(self) -> list[int]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            return []

    def shard_balance(self) -> list[int] | None:
        if not self.contender.shards:
            return None
        status = control.request(control.default_path(self.port), {"cmd": "status"})
        return [w["connections"] for w in status["workers"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        self.scratch.cleanup()


def _free_port(other_than: int = 0) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        if port != other_than:
            return port


def _self_signed(directory: str) -> tuple[str, str]:
    """A throwaway certificate and key (EC P-256, the usual choice today), by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("the TLS contender needs the openssl command (Debian: openssl)")
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=shardd-bench", "-keyout", keyfile, "-out", certfile],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise BenchError(f"openssl could not make a test certificate: {made.stderr.strip()}")
    return certfile, keyfile
