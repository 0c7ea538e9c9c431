"""TLS (telnets): real TLS clients against a real server, on loopback.

Certificates are made by ``openssl`` for each run. These tests run a
``Server`` in this process, on asyncio's loop and on uvloop's, with Python's
``ssl`` as the client, to look at its sessions and counts. Nothing sleeps to
synchronise: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
from conftest import ServerProcess, async_wait_until, run_shardd

from shardd.listeners import bind
from workers.serving import Server, ServerSettings, SessionOptions
from workers.tls import TlsListener, load_context

TIMEOUT = 10.0
IAC_DO_TTYPE = bytes((255, 253, 24))
WONT_TTYPE = bytes((255, 252, 24))
REPORT_SHELL = "tests.shells_for_tests:report"
_TLS_PORT = re.compile(r"TLS on (\S+):(\d+)")
_REPORT = re.compile(r"REPORT (\{.*?\})\r\n")
ALARMING = re.compile(r"WARNING|ERROR|CRITICAL|Traceback", re.IGNORECASE)


# ----------------------------------------------------------- certificates


@dataclass(frozen=True)
class Cert:
    certfile: Path
    keyfile: Path

    @property
    def der(self) -> bytes:
        """The certificate as a client receives it (DER), to tell two apart."""
        return ssl.PEM_cert_to_DER_cert(self.certfile.read_text())


def make_cert(directory: Path, name: str) -> Cert:
    """A self-signed certificate and key (EC P-256), PEM, made by openssl."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed (deploy/install.sh --test installs it)"
    cert = Cert(directory / f"{name}.crt", directory / f"{name}.key")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", str(cert.keyfile), "-out", str(cert.certfile)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cert]:
    directory = tmp_path_factory.mktemp("certs")
    return {name: make_cert(directory, name) for name in ("shardd-a", "shardd-b")}


def tls_args(cert: Cert, *extra: str) -> tuple[str, ...]:
    return ("--tls-port", "0", "--certfile", str(cert.certfile), "--keyfile", str(cert.keyfile),
            *extra)  # fmt: skip


def tls_port(server: ServerProcess) -> int:
    return int(server.wait_for_log(_TLS_PORT).group(2))


def client_context() -> ssl.SSLContext:
    """A test client's: it takes the self-signed test certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_connect(port: int) -> ssl.SSLSocket:
    """A blocking TLS client socket, handshake done (10 s timeout)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return client_context().wrap_socket(raw)


def assert_nothing_alarming(server: ServerProcess) -> None:
    bad = [line for line in server.log_text().splitlines() if ALARMING.search(line)]
    assert not bad, "alarming server log lines:\n" + "\n".join(bad)


def status_json(server: ServerProcess) -> dict[str, Any]:
    result = run_shardd("status", "--port", str(server.port), "--json")
    assert result.returncode == 0, result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


# ------------------------------------------- a Server in this test's loop


class Recorder:
    """A shell that says ``ready`` and records the sessions it was started for."""

    def __init__(self) -> None:
        self.writers: list[Any] = []

    async def shell(self, reader: Any, writer: Any) -> None:
        self.writers.append(writer)
        writer.write("ready\r\n")
        await reader.readline()


Body = Callable[[Server, Recorder, int], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def tls_serving(request: pytest.FixtureRequest, certs: dict[str, Cert]) -> Callable[[Body], None]:
    """Run a test body against a Server with a TLS listener, on both event loops."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    cert = certs["shardd-a"]

    async def main(body: Body) -> None:
        recorder = Recorder()
        sock, tls_sock = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
        context = load_context(str(cert.certfile), str(cert.keyfile))
        server = Server(
            sock,
            SessionOptions(shell=recorder.shell, connect_maxwait=0.2),
            ServerSettings(manage_gc=False),
            tls=TlsListener(tls_sock, context, handshake_timeout=TIMEOUT),
        )
        task = asyncio.get_running_loop().create_task(server.serve({}))
        try:
            await async_wait_until(lambda: server.listening, TIMEOUT, "listening")
            await body(server, recorder, tls_sock.getsockname()[1])
        finally:
            server.stop("quit")
            await asyncio.wait_for(task, TIMEOUT)
            sock.close()
            tls_sock.close()

    def run(body: Body) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main(body))

    return run


async def _read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), TIMEOUT)


def test_tls_and_plain_ports_serve_the_same_sessions(tls_serving: Any) -> None:
    tls_serving(_both_ports)


async def _both_ports(server: Server, recorder: Recorder, port: int) -> None:
    tls_r, tls_w = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(), server_hostname=""
    )
    await _read_until(tls_r, IAC_DO_TTYPE)
    tls_w.write(WONT_TTYPE)
    await _read_until(tls_r, b"ready\r\n")
    plain_r, plain_w = await asyncio.open_connection("127.0.0.1", server.sock.getsockname()[1])
    await _read_until(plain_r, IAC_DO_TTYPE)
    plain_w.write(WONT_TTYPE)
    await _read_until(plain_r, b"ready\r\n")

    tls_writer, plain_writer = recorder.writers
    assert tls_writer.get_extra_info("tls") is True
    assert (
        tls_writer.get_extra_info("ssl_object").version()
        == tls_w.get_extra_info("ssl_object").version()
    )
    assert tls_writer.get_extra_info("cipher")[0] == tls_w.get_extra_info("cipher")[0]
    assert plain_writer.get_extra_info("tls") is None
    assert plain_writer.get_extra_info("ssl_object") is None
    assert server.sessions.accepted == 2 and len(server.sessions.live) == 2
    for writer in (tls_w, plain_w):
        writer.close()


def test_client_hello_in_one_byte_segments(tls_serving: Any) -> None:
    """The ClientHello arrives as the server's stage starts, partly before, partly
    after the TLS protocol takes the connection: all of it reaches TLS, in order."""
    tls_serving(_hello_byte_by_byte)


async def _hello_byte_by_byte(server: Server, recorder: Recorder, port: int) -> None:
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing)
    sock = socket.socket()
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    try:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        for i in range(len(hello)):
            await loop.sock_sendall(sock, hello[i : i + 1])
            await asyncio.sleep(0)  # one segment a loop turn, not a wait for anything
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await loop.sock_sendall(sock, outgoing.read())
                    data = await loop.sock_recv(sock, 65536)
                    assert data, "the server closed the connection during the handshake"
                    incoming.write(data)
            await loop.sock_sendall(sock, outgoing.read())
            got = b""
            while IAC_DO_TTYPE not in got:
                try:
                    got += tls.read(65536)
                except ssl.SSLWantReadError:
                    data = await loop.sock_recv(sock, 65536)
                    assert data, f"EOF after {got!r}"
                    incoming.write(data)
        assert recorder.writers == [] and server.sessions.accepted == 1
        assert server.counters().get("tls_handshake_error", 0) == 0
    finally:
        sock.close()


def test_failed_handshake_is_counted_and_uncounted_from_the_limits(tls_serving: Any) -> None:
    tls_serving(_failed_handshake)


async def _failed_handshake(server: Server, _recorder: Recorder, port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")  # plain text where TLS was due
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed, nothing said
    writer.close()
    await async_wait_until(
        lambda: server.counters().get("tls_handshake_error") == 1, TIMEOUT, "the failure counted"
    )
    assert server.arriving == 0 and server.sessions.accepted == 0
    admission = server.admit
    assert admission is not None
    counts = admission.counts  # type: ignore[attr-defined]
    await async_wait_until(lambda: counts.host_sessions("127.0.0.1") == 0, TIMEOUT, "released")
