"""TLS (telnets): real TLS clients against a real server, on loopback.

Certificates are made by ``openssl`` for each run. The clients are real:
``openssl s_client`` and telnetlib3's ``telnetlib3-client --ssl`` as separate
programs through a pty, Python's ``ssl`` sockets, and the load-test tool with
``--tls``. The first tests run a ``Server`` in this process, on asyncio's
loop and on uvloop's, to look at its sessions and counts; the others run
``shardd serve``. Nothing sleeps to synchronise: every wait is on a
condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest
import uvloop
from conftest import ROOT, ServerProcess, async_wait_until, read_until, run_shardd, wait_until

from shardd.listeners import bind
from workers.admission import TOO_MANY_SESSIONS
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


# ------------------------------------------------------ shardd serve, real clients


def test_openssl_s_client_gets_the_welcome_banner(serve: Any, certs: dict[str, Cert]) -> None:
    server = serve(*tls_args(certs["shardd-a"], "--connect-maxwait", "0.3"))
    port = tls_port(server)
    client = pexpect.spawn(
        "openssl",
        ["s_client", "-connect", f"127.0.0.1:{port}", "-brief"],
        timeout=TIMEOUT,
        encoding="utf-8",
        codec_errors="replace",
    )
    try:
        client.expect(r"Protocol version: (TLSv1\.[23])")
        client.expect("Welcome to shardd.")
        client.expect("> ")
        client.sendline("hello over tls")
        client.expect("You said: hello over tls")
        client.sendline("quit")
        client.expect(pexpect.EOF)
    finally:
        client.close(force=True)
    # the plain port serves the same shell
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    with plain:
        read_until(plain, b"Welcome to shardd.", bytearray())
    assert_nothing_alarming(server)


def test_telnetlib3_client_over_tls(serve: Any, certs: dict[str, Cert]) -> None:
    server = serve(*tls_args(certs["shardd-a"]), "--shell", REPORT_SHELL)
    client = pexpect.spawn(
        str(Path(sys.executable).parent / "telnetlib3-client"),
        ["--ssl", "--ssl-no-verify", "127.0.0.1", str(tls_port(server))],
        timeout=TIMEOUT,
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(30, 100),
        env={**os.environ, "TERM": "xterm"},
    )
    try:
        client.expect(r"REPORT (\{.*?\})\r")
        seen = json.loads(client.match.group(1))
        client.sendline("hi over tls")
        client.expect("You said: hi over tls")
    finally:
        client.close(force=True)
    assert seen["tls"] is True and seen["tls_version"].startswith("TLSv1.")
    assert seen["cipher"]
    # negotiation went through TLS like on the plain port
    assert (seen["term"], seen["cols"], seen["rows"]) == ("xterm", 100, 30)
    assert seen["writer_encoding"] == "utf8"
    assert_nothing_alarming(server)


def test_tls_sessions_are_marked_in_status(serve: Any, certs: dict[str, Cert]) -> None:
    server = serve(
        *tls_args(certs["shardd-a"], "--connect-maxwait", "0.3"),
        "--workers", "2", "--shell", REPORT_SHELL, "--stats-interval", "0.1",
    )  # fmt: skip
    port = tls_port(server)
    secure = tls_connect(port)
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    with secure, plain:
        got = read_until(secure, b"\r\n> ", bytearray())
        (report,) = [json.loads(m) for m in _REPORT.findall(got.decode("utf-8", "replace"))]
        assert report["tls"] is True and report["tls_version"] == secure.version()
        got = read_until(plain, b"\r\n> ", bytearray())
        (report,) = [json.loads(m) for m in _REPORT.findall(got.decode("utf-8", "replace"))]
        assert report["tls"] is None and report["tls_version"] is None

        def both_reported() -> dict[str, Any] | None:
            status = status_json(server)
            states = [c["state"] for c in status["connections"]]
            return status if states == ["shell", "shell"] else None

        status = wait_until(both_reported, TIMEOUT, "both sessions reported")
        assert isinstance(status, dict)
        assert status["supervisor"]["listen_tls"] == [f"127.0.0.1:{port}"]
        by_port = {int(c["peer"].rsplit(":", 1)[1]): c for c in status["connections"]}
        assert by_port[secure.getsockname()[1]]["tls"] == secure.version()
        assert by_port[plain.getsockname()[1]]["tls"] == ""
        text = run_shardd("status", "--port", str(server.port)).stdout
        assert f"TLS on 127.0.0.1:{port}" in text
        assert re.search(rf"\b{re.escape(str(secure.version()))}\s*$", text, re.MULTILINE), text
    assert_nothing_alarming(server)


def test_handshake_timeout_closes_a_silent_connection(serve: Any, certs: dict[str, Cert]) -> None:
    """A client that connects and never sends its ClientHello is closed after
    --tls-handshake-timeout; one that sends something else at once, at once."""
    server = serve(
        *tls_args(certs["shardd-a"], "--tls-handshake-timeout", "0.5"),
        "--workers", "1", "--stats-interval", "0.1",
    )  # fmt: skip
    port = tls_port(server)
    silent = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    started = time.monotonic()
    with silent:
        try:
            end = silent.recv(1024)  # blocks until the server closes the connection
        except ConnectionResetError:
            end = b""
        held = time.monotonic() - started
    assert end == b""
    assert 0.45 <= held < TIMEOUT, held
    wrong = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with wrong:
        wrong.sendall(b"hello, plain telnet here\r\n")
        try:
            assert wrong.recv(1024) == b""
        except ConnectionResetError:
            pass
    server.wait_for_log(r"TLS handshake failed: no handshake within 0\.5s")

    def counted() -> object:
        failures = status_json(server)["supervisor"]["tls_handshake_failures"]
        return failures == {"timeout": 1, "error": 1}

    wait_until(counted, TIMEOUT, "both failures in status")
    text = run_shardd("status", "--port", str(server.port)).stdout
    assert "2 TLS handshakes failed (1 error, 1 timeout)" in text
    # the worker serves on
    with tls_connect(port) as fine:
        read_until(fine, IAC_DO_TTYPE, bytearray())


def test_refusal_on_the_tls_port_closes_without_a_line(serve: Any, certs: dict[str, Cert]) -> None:
    """A refusal line in plain text would be garbage to a TLS client: it gets a close."""
    server = serve(
        *tls_args(certs["shardd-a"]),
        "--max-sessions-per-ip", "1", "--max-connect-rate-per-ip", "0",
        address_limits=True,
    )  # fmt: skip
    port = tls_port(server)
    with tls_connect(port) as first:
        read_until(first, IAC_DO_TTYPE, bytearray())
        refused = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with refused:
            assert refused.recv(1024) == b""
        plain = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        with plain:
            got = read_until(plain, b"\r\n", bytearray())
        assert got.decode().strip() == TOO_MANY_SESSIONS.strip()
    server.wait_for_log(r"refused: 1 session from this address")


def test_loadtest_client_speaks_tls(serve: Any, certs: dict[str, Cert]) -> None:
    server = serve(*tls_args(certs["shardd-a"]), "--shell", "echo")
    port = tls_port(server)
    echo = run_shardd(
        "loadtest", "echo", "--port", str(port), "--tls", "--sessions", "4",
        "--duration", "0.5", "--size", "1024", "--json",
    )  # fmt: skip
    assert echo.returncode == 0, echo.stdout + echo.stderr
    summary = json.loads(echo.stdout)
    assert summary["tls"] is True and summary["target"] == f"127.0.0.1:{port} (TLS)"
    assert summary["round_trips"] > 0 and summary["failures_total"] == 0
    connect = run_shardd(
        "loadtest", "connect", "--port", str(port), "--tls", "--sessions", "10", "--json"
    )
    assert connect.returncode == 0, connect.stdout + connect.stderr
    assert json.loads(connect.stdout)["failures_total"] == 0
    # --tls against the plain port: every handshake fails, so TLS was really spoken
    wrong = run_shardd(
        "loadtest", "connect", "--port", str(server.port), "--tls", "--sessions", "3", "--json"
    )
    assert wrong.returncode == 1
    failed = json.loads(wrong.stdout)
    assert failed["failures_total"] == 3 and list(failed["failures_by_phase"]) == ["connect"]


def test_hup_reloads_the_certificate_and_keeps_sessions(
    serve: Any, certs: dict[str, Cert], tmp_path: Path
) -> None:
    served = Cert(tmp_path / "served.crt", tmp_path / "served.key")
    shutil.copy(certs["shardd-a"].certfile, served.certfile)
    shutil.copy(certs["shardd-a"].keyfile, served.keyfile)
    server = serve(
        *tls_args(served, "--connect-maxwait", "0.3"),
        "--workers", "2", "--graceful-timeout", "60",
    )  # fmt: skip
    port = tls_port(server)
    wait_until(
        lambda: len(re.findall(r"worker \d+ serving", server.log_text())) == 2, TIMEOUT, "workers"
    )
    old = tls_connect(port)
    with old:
        assert old.getpeercert(binary_form=True) == certs["shardd-a"].der
        read_until(old, b"> ", bytearray())

        # new files in place (as certbot does: each replaced whole), then HUP
        for source, target in ((certs["shardd-b"].certfile, served.certfile),
                               (certs["shardd-b"].keyfile, served.keyfile)):  # fmt: skip
            shutil.copy(source, tmp_path / "incoming")
            os.replace(tmp_path / "incoming", target)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log(r"TLS certificate re-read")
        wait_until(
            lambda: len(re.findall(r"which drains its sessions", server.log_text())) == 2,
            TIMEOUT * 2,
            "both shards replaced",
        )
        for _ in range(4):  # whichever new worker takes it
            with tls_connect(port) as new:
                assert new.getpeercert(binary_form=True) == certs["shardd-b"].der
        # the session on the old, draining worker goes on with its old TLS state
        old.sendall(b"still here\r\n")
        read_until(old, b"You said: still here", bytearray())

        # a certificate that cannot be read: no restart, the workers keep theirs
        served.certfile.write_text("not a certificate\n")
        reload = run_shardd("reload", "--port", str(server.port))
        assert reload.returncode == 1, reload
        assert "reload failed: certfile:" in reload.stderr and "holds no PEM" in reload.stderr
        with tls_connect(port) as after:
            assert after.getpeercert(binary_form=True) == certs["shardd-b"].der
        old.sendall(b"and still\r\n")
        read_until(old, b"You said: and still", bytearray())
    assert server.proc.poll() is None


def test_tls_settings_from_the_file_and_the_flags(
    serve: Any, certs: dict[str, Cert], tmp_path: Path
) -> None:
    """tls-port from the file, certfile from a flag (one PEM with the key in it)."""
    cert = certs["shardd-a"]
    combined = tmp_path / "combined.pem"
    combined.write_text(cert.certfile.read_text() + cert.keyfile.read_text())
    config = tmp_path / "shardd.toml"
    config.write_text("tls-port = 0\ntls-handshake-timeout = 5\n")
    server = serve("--config", str(config), "--certfile", str(combined))
    with tls_connect(tls_port(server)) as client:
        assert client.getpeercert(binary_form=True) == cert.der
        read_until(client, IAC_DO_TTYPE, bytearray())


# ------------------------------------------------------------ bad settings


def _bad_settings(certs: dict[str, Cert], tmp: Path) -> dict[str, tuple[list[str], str]]:
    a, b = certs["shardd-a"], certs["shardd-b"]
    text = tmp / "notes.txt"
    text.write_text("this is not PEM\n")
    encrypted = tmp / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(a.keyfile), "-aes256", "-passout", "pass:secret",
         "-out", str(encrypted)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = ["--tls-port", "0"]
    return {
        "missing certfile": (
            [*port, "--certfile", str(tmp / "nowhere.crt"), "--keyfile", str(a.keyfile)],
            "certfile: cannot read",
        ),
        "certfile not PEM": (
            [*port, "--certfile", str(text), "--keyfile", str(a.keyfile)],
            "certfile: " + f"{text} holds no PEM certificate",
        ),
        "keyfile holds a certificate": (
            [*port, "--certfile", str(a.certfile), "--keyfile", str(b.certfile)],
            "keyfile: " + f"{b.certfile} holds no PEM private key",
        ),
        "key of another certificate": (
            [*port, "--certfile", str(a.certfile), "--keyfile", str(b.keyfile)],
            "keyfile: " + f"{b.keyfile} does not match the certificate in {a.certfile}",
        ),
        "encrypted key": (
            [*port, "--certfile", str(a.certfile), "--keyfile", str(encrypted)],
            "is encrypted with a passphrase",
        ),
        "tls-port without certfile": (port, "tls-port: needs certfile"),
        "certfile without tls-port": (
            ["--certfile", str(a.certfile), "--keyfile", str(a.keyfile)],
            "certfile: is for TLS, which needs tls-port too",
        ),
        "same port twice": (
            ["--port", "6999", "--tls-port", "6999", "--certfile", str(a.certfile)],
            "tls-port: must differ from port",
        ),
    }


@pytest.mark.parametrize("workers", ["0", "2"])
def test_bad_certificate_settings_are_one_line_and_exit_2(
    certs: dict[str, Cert], tmp_path: Path, workers: str
) -> None:
    for case, (args, expected) in _bad_settings(certs, tmp_path).items():
        result = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "shardd"), "serve",
             "--host", "127.0.0.1", "--port", "0", "--workers", workers, *args],
            cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        lines = result.stderr.splitlines()
        assert result.returncode == 2, (case, result)
        assert len(lines) == 1 and lines[0].startswith("shardd: error: "), (case, lines)
        assert expected in lines[0], (case, lines[0])
