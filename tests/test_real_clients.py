"""End-to-end: real telnet clients against a real ``shardd serve`` subprocess.

The clients are separate programs (telnetlib3's client in its own Python
process, Debian's inetutils telnet through a pty, OpenBSD netcat, raw
sockets), so these tests see exactly the bytes a user would see. Every read
and wait has a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

import pexpect
import pytest
from conftest import ROOT, ServerProcess, wait_until

IAC, DONT, DO, WONT, WILL, SB, SE, GA = 255, 254, 253, 252, 251, 250, 240, 249
BINARY, ECHO, SGA, TTYPE = 0, 1, 3, 24
IAC_DO_TTYPE = bytes((IAC, DO, TTYPE))

REPORT_SHELL = "tests.shells_for_tests:report"
_REPORT_LINE = re.compile(r"REPORT (\{.*?\})\r\n")

ALARMING = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Exception", re.IGNORECASE)


def reports(text: str) -> list[dict]:
    """Every ``REPORT {json}`` line the ``report`` test shell sent, in order."""
    return [json.loads(m.group(1)) for m in _REPORT_LINE.finditer(text)]


def assert_nothing_alarming(server: ServerProcess) -> None:
    bad = [line for line in server.log_text().splitlines() if ALARMING.search(line)]
    assert not bad, "alarming server log lines:\n" + "\n".join(bad)


# --------------------------------------------------------------- a raw client


class RawTelnet:
    """A telnet client on a plain socket that negotiates only what it is told to.

    It agrees to perform the options in ``will`` and to let the server perform
    those in ``do``; it refuses every other request. ``wire`` holds every byte
    received, ``data`` the in-band bytes once telnet commands are removed.
    """

    def __init__(
        self, port: int, *, will: Iterable[int] = (), do: Iterable[int] = (), timeout: float = 10.0
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.will, self.do = set(will), set(do)
        self.local: set[int] = set()  # options we perform
        self.remote: set[int] = set()  # options the server performs
        self.wire = bytearray()
        self.data = bytearray()
        self.commands: list[tuple[int, int]] = []  # (WILL/WONT/DO/DONT, option) received
        self.subnegotiations: list[bytes] = []
        self.eof = False
        self._unparsed = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def offer(self, option: int) -> None:
        """Send WILL ``option`` unasked."""
        self.local.add(option)
        self.send(bytes((IAC, WILL, option)))

    def request(self, option: int) -> None:
        """Send DO ``option`` unasked."""
        self.remote.add(option)
        self.send(bytes((IAC, DO, option)))

    def read_until(
        self, predicate: Callable[[RawTelnet], object], timeout: float = 10.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                raise AssertionError(
                    f"{'EOF' if self.eof else f'timed out after {timeout}s'} waiting for "
                    f"{what or predicate}; received so far: {bytes(self.wire)!r}"
                )
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                self.eof = True
                continue
            self.wire += chunk
            self._unparsed += chunk
            self._parse()

    def read_data_until(self, marker: bytes, timeout: float = 10.0) -> None:
        self.read_until(lambda c: marker in c.data, timeout, f"in-band {marker!r}")

    def read_until_eof(self, timeout: float = 10.0) -> None:
        self.read_until(lambda c: c.eof, timeout, "EOF")

    def _parse(self) -> None:
        buf = self._unparsed
        i = 0
        while i < len(buf):
            byte = buf[i]
            if byte != IAC:
                self.data.append(byte)
                i += 1
                continue
            if i + 1 >= len(buf):
                break
            cmd = buf[i + 1]
            if cmd == IAC:
                self.data.append(IAC)
                i += 2
            elif cmd in (WILL, WONT, DO, DONT):
                if i + 2 >= len(buf):
                    break
                self._negotiate(cmd, buf[i + 2])
                i += 3
            elif cmd == SB:
                end = self._find_se(buf, i + 2)
                if end < 0:
                    break
                self.subnegotiations.append(bytes(buf[i + 2 : end]).replace(b"\xff\xff", b"\xff"))
                i = end + 2
            else:
                self.commands.append((cmd, -1))
                i += 2
        del buf[:i]

    @staticmethod
    def _find_se(buf: bytearray, start: int) -> int:
        j = start
        while j + 1 < len(buf):
            if buf[j] == IAC:
                if buf[j + 1] == SE:
                    return j
                j += 2
            else:
                j += 1
        return -1

    def _negotiate(self, cmd: int, opt: int) -> None:
        self.commands.append((cmd, opt))
        reply: int | None = None
        if cmd == DO:
            if opt in self.will:
                if opt not in self.local:
                    self.local.add(opt)
                    reply = WILL
            else:
                reply = WONT
        elif cmd == DONT:
            if opt in self.local:
                self.local.discard(opt)
                reply = WONT
        elif cmd == WILL:
            if opt in self.do:
                if opt not in self.remote:
                    self.remote.add(opt)
                    reply = DO
            else:
                reply = DONT
        elif cmd == WONT and opt in self.remote:
            self.remote.discard(opt)
            reply = DONT
        if reply is not None:
            self.send(bytes((IAC, reply, opt)))


class StreamCollector:
    """Collects a subprocess's output on a thread; waits on it with deadlines."""

    def __init__(self, stream) -> None:
        self.buf = bytearray()
        self.chunks: list[tuple[float, bytes]] = []  # (arrival time, bytes)
        self.eof = False
        self._fd = stream.fileno()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self.eof = True
                    self._cond.notify_all()
                    return
                self.chunks.append((time.monotonic(), chunk))
                self.buf += chunk
                self._cond.notify_all()

    def wait_for(self, marker: bytes, timeout: float = 10.0) -> float:
        """Wait until ``marker`` has arrived; the time the chunk completing it arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while marker not in self.buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    raise AssertionError(
                        f"{'EOF' if self.eof else 'timeout'} waiting for {marker!r}; "
                        f"got {bytes(self.buf)!r}"
                    )
                self._cond.wait(remaining)
            end = self.buf.index(marker) + len(marker)
            total = 0
            for when, chunk in self.chunks:
                total += len(chunk)
                if total >= end:
                    return when
            raise AssertionError("unreachable")

    def wait_eof(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no EOF after {timeout}s; got {bytes(self.buf)!r}")
                self._cond.wait(remaining)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


# ------------------------------------------------- 1. telnetlib3's client process

TELNETLIB3_CLIENT = r"""
import asyncio, json, sys, time
import telnetlib3

async def main(port, term, cols, rows, lines):
    deadline = time.monotonic() + 20
    got = []
    pos = 0
    result = {"transcript": "", "error": None}

    async def read_past(marker):
        nonlocal pos
        while marker not in "".join(got)[pos:]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r}")
            chunk = await asyncio.wait_for(reader.read(4096), remaining)
            if not chunk:
                raise EOFError(f"EOF before {marker!r}")
            got.append(chunk)
        text = "".join(got)
        pos = text.index(marker, pos) + len(marker)

    reader, writer = await asyncio.wait_for(telnetlib3.open_connection(
        "127.0.0.1", port, term=term, cols=cols, rows=rows, connect_maxwait=5,
    ), 15)
    try:
        await read_past("> ")
        for line in lines:
            writer.write(line + "\r\n")
            await read_past(f"You said: {line}\r\n")
            await read_past("> ")
        writer.write("quit\r\n")
        await read_past("Goodbye.\r\n")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server did not close the session")
            chunk = await asyncio.wait_for(reader.read(4096), remaining)
            if not chunk:
                break
            got.append(chunk)
        result["closed"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["transcript"] = "".join(got)
    writer.close()
    print(json.dumps(result))

args = sys.argv[1:]
asyncio.run(main(int(args[0]), args[1], int(args[2]), int(args[3]), args[4:]))
"""


def run_telnetlib3_client(
    port: int, lines: list[str], *, term: str = "xterm-256color", cols: int = 132, rows: int = 43
) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", TELNETLIB3_CLIENT, str(port), term, str(cols), str(rows), *lines],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=40,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    out = proc.stdout.decode("utf-8")
    assert proc.returncode == 0, f"client failed ({proc.returncode}):\n{out}\n{proc.stderr!r}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["error"] is None, result
    return result


def test_telnetlib3_client_negotiates_term_window_and_charset(serve) -> None:
    server = serve("--shell", REPORT_SHELL, "--log-level", "debug")
    lines = ["hello there", "héllo wörld ✓ — ünïcode", "  spaces  kept  "]
    result = run_telnetlib3_client(server.port, lines)
    transcript = result["transcript"]

    (seen,) = reports(transcript)
    assert seen["term"] == "xterm-256color"
    assert seen["TERM"].lower() == "xterm-256color"
    assert seen["ttype1"] == "xterm-256color"
    assert (seen["cols"], seen["rows"]) == (132, 43)
    assert seen["charset"] == "UTF-8"
    assert seen["writer_encoding"].replace("-", "").lower() == "utf8"
    assert seen["reader_encoding"].replace("-", "").lower() == "utf8"

    for line in lines:
        assert f"You said: {line}\r\n" in transcript
    assert result["closed"]
    server.wait_for_log(r"connection closed")
    assert_nothing_alarming(server)


def test_telnetlib3_client_gets_welcome_banner(serve) -> None:
    server = serve()
    result = run_telnetlib3_client(server.port, ["first line", "second"], cols=100, rows=30)
    transcript = result["transcript"]
    match = re.search(
        r"Terminal (\S+), window (\d+)x(\d+), encoding (\S+), worker pid (\d+), shard -\.",
        transcript,
    )
    assert match, transcript
    assert match.group(1).lower() == "xterm-256color"
    assert (match.group(2), match.group(3)) == ("100", "30")
    assert match.group(4).replace("-", "").lower() == "utf8"
    assert int(match.group(5)) == server.proc.pid
    assert "You said: first line\r\n" in transcript
    assert "You said: second\r\n" in transcript
    assert transcript.endswith("Goodbye.\r\n")
    assert server.proc.poll() is None


# ----------------------------------------------- 2. inetutils telnet through a pty


def _spawn_telnet(port: int, rows: int, cols: int) -> pexpect.spawn:
    telnet = shutil.which("telnet")
    assert telnet, "inetutils-telnet is not installed"
    env = {**os.environ, "TERM": "xterm"}
    return pexpect.spawn(
        telnet,
        ["127.0.0.1", str(port)],
        env=env,
        dimensions=(rows, cols),
        timeout=10,
        encoding="utf-8",
        codec_errors="replace",
    )


def test_inetutils_telnet_welcome_session(serve) -> None:
    server = serve("--log-level", "debug")
    child = _spawn_telnet(server.port, rows=40, cols=100)
    try:
        child.expect(r"Terminal (\S+), window (\d+)x(\d+), encoding (\S+),")
        term, cols, rows, _encoding = child.match.groups()
        assert term == "xterm"  # inetutils telnet sends XTERM: TERM is in lower case
        assert (cols, rows) == ("100", "40")
        child.expect_exact("> ")

        child.sendline("hello world")
        child.expect_exact("You said: hello world\r\n")
        child.expect_exact("> ")
        child.sendline("second line")
        child.expect_exact("You said: second line\r\n")
        child.expect_exact("> ")

        # line mode: telnet edits the line (here its terminal does: DEL erases)
        # and sends it whole
        child.send("hellx\x7fo\r")
        child.expect_exact("You said: hello\r\n")
        child.expect_exact("> ")

        # telnet's own command mode: "send ayt" is answered by the server
        child.sendcontrol("]")
        child.expect_exact("telnet>")
        child.sendline("send ayt")
        child.expect_exact("[Yes]")
        child.sendline("after ayt")
        child.expect_exact("You said: after ayt\r\n")
        child.expect_exact("> ")

        child.sendline("quit")
        child.expect_exact("Goodbye.")
        child.expect_exact("Connection closed by foreign host")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    server.wait_for_log(r"connection closed")
    assert server.proc.poll() is None
    assert_nothing_alarming(server)


def test_inetutils_telnet_report_and_window_resize(serve) -> None:
    server = serve("--shell", REPORT_SHELL)
    child = _spawn_telnet(server.port, rows=40, cols=100)
    try:
        child.expect(r"REPORT (\{.*?\})\r\n")
        seen = json.loads(child.match.group(1))
        assert seen["term"] == seen["TERM"] == "xterm"  # telnet sent XTERM
        assert seen["ttype1"] == "XTERM"  # the raw value, as telnet sent it
        assert (seen["cols"], seen["rows"]) == (100, 40)
        assert (seen["server_echo"], seen["server_sga"]) == (False, False)  # line mode
        child.expect_exact("> ")

        child.sendline("hello")
        child.expect_exact("You said: hello\r\n")
        child.expect_exact("> ")

        # a resized window is sent again by NAWS; ask until the server has it
        child.setwinsize(50, 120)
        deadline = time.monotonic() + 10
        while True:
            child.sendline("report")
            child.expect(r"REPORT (\{.*?\})\r\n")
            seen = json.loads(child.match.group(1))
            child.expect_exact("> ")
            if (seen["cols"], seen["rows"]) == (120, 50):
                break
            assert time.monotonic() < deadline, f"window never became 120x50: {seen}"

        child.sendline("quit")
        child.expect_exact("Connection closed by foreign host")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert server.proc.poll() is None


def test_inetutils_telnet_character_mode_and_hidden_input_when_the_shell_asks(serve) -> None:
    server = serve("--shell", "tests.shells_for_tests:modes")
    child = _spawn_telnet(server.port, rows=24, cols=80)
    try:
        child.expect_exact("char mode> ")
        # character mode (WILL SGA, WILL ECHO): each key reaches the shell at once
        child.send("a")
        child.expect_exact("[a]")
        child.send("b")
        child.expect_exact("[b]")
        child.send("\r")
        # a password prompt: WILL ECHO alone, so telnet shows nothing of what is typed
        child.expect_exact("Password: ")
        child.sendline("s3cr3t")
        child.expect_exact("Got 6 characters.")
        assert "s3cr3t" not in child.before, child.before
        # back to line mode: telnet echoes, edits and sends the line itself
        child.expect_exact("> ")
        child.sendline("in line mode")
        child.expect_exact("in line mode")  # telnet's own echo, before the reply
        child.expect_exact("You said: in line mode\r\n")
        child.sendline("quit")
        child.expect_exact("Connection closed by foreign host")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert server.proc.poll() is None
    assert_nothing_alarming(server)


# ------------------------------------------------------------------- 3. nc -z


def test_nc_zero_io_probe_is_harmless(serve) -> None:
    server = serve("--log-level", "debug")
    # nc -z connects and closes at once. The server has already sent IAC DO
    # TTYPE by then, so the closed socket may answer with a reset that the
    # server sees before the FIN: which of the two it sees is a race. Probe
    # until the EOF path (eof_received) has been taken at least once.
    probes = 0
    deadline = time.monotonic() + 30
    while "EOF received" not in server.log_text():
        assert probes < 100 and time.monotonic() < deadline, (
            f"no 'EOF received' after {probes} probes:\n{server.log_text()}"
        )
        probe = subprocess.run(
            ["nc", "-z", "127.0.0.1", str(server.port)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
        assert probe.returncode == 0, probe
        probes += 1
        wait_until(
            lambda n=probes: server.log_text().count("connection closed") >= n,
            10,
            f"probe {probes} to be closed",
        )
    server.wait_for_log(r"EOF received, closing")
    assert server.proc.poll() is None

    # a later connection still gets served
    client = RawTelnet(server.port)
    try:
        client.read_until(lambda c: (DO, TTYPE) in c.commands, what="IAC DO TTYPE")
        client.send(bytes((IAC, WONT, TTYPE)))  # refusing settles negotiation at once
        client.read_data_until(b"Welcome to shardd.")
        client.read_data_until(b"> ")
        client.send(b"still up\r\n")
        client.read_data_until(b"You said: still up\r\n")
    finally:
        client.close()
    assert_nothing_alarming(server)


def test_half_close_takes_the_eof_path(serve) -> None:
    """The deterministic form of nc -z: FIN while our side still reads."""
    server = serve("--log-level", "debug")
    client = RawTelnet(server.port)
    try:
        client.read_until(lambda c: (DO, TTYPE) in c.commands, what="IAC DO TTYPE")
        client.sock.shutdown(socket.SHUT_WR)
        server.wait_for_log(r"EOF received, closing")
        client.read_until_eof()
        server.wait_for_log(r"connection closed: EOF")
    finally:
        client.close()
    assert server.proc.poll() is None
    assert_nothing_alarming(server)


# ---------------------------------------------------- 4. plain nc, no replies


def test_plain_nc_gets_shell_after_connect_maxwait(serve) -> None:
    server = serve("--connect-maxwait", "0.5", "--log-level", "debug")
    started = time.monotonic()
    nc = subprocess.Popen(
        ["nc", "127.0.0.1", str(server.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        out = StreamCollector(nc.stdout)
        first = out.wait_for(IAC_DO_TTYPE)
        banner = out.wait_for(b"Welcome to shardd.\r\n")
        # SGA was never agreed, so the prompt is followed by IAC GA
        out.wait_for(b"> " + bytes((IAC, GA)))
        # negotiation came first, alone; the shell started only when
        # connect_maxwait ran out (nc never answers), well before the default 4s
        assert out.buf.startswith(IAC_DO_TTYPE + b"\r\nWelcome to shardd.\r\n"), out.buf
        assert banner - first >= 0.4, (first, banner)
        assert banner - started < 3.5, banner - started
        assert b"Terminal unknown, window 80x25, encoding US-ASCII" in out.buf
        server.wait_for_log(r"negotiation incomplete after 0\.5s \(unanswered: DO TTYPE\)")

        before = len(out.buf)
        nc.stdin.write(b"hello\n")
        nc.stdin.flush()
        out.wait_for(b"You said: hello\r\n")
        reply = bytes(out.buf[before:])
        # nc never agreed to ECHO, so the server must not echo the keystrokes
        assert reply.startswith(b"You said: hello\r\n"), reply

        nc.stdin.write(b"quit\n")
        nc.stdin.flush()
        out.wait_for(b"Goodbye.\r\n")
        server.wait_for_log(r"connection closed")  # the server ended the session
        nc.stdin.close()  # nc itself lingers until its input ends
        assert nc.wait(10) == 0
        out.wait_eof()
    finally:
        _end(nc)
    assert server.proc.poll() is None
    assert_nothing_alarming(server)


def test_plain_nc_non_ascii_input_does_not_kill_the_session(serve) -> None:
    """nc negotiates nothing, so the session is US-ASCII; UTF-8 typed into it
    gets the 'not valid' notice and the session goes on."""
    server = serve("--connect-maxwait", "0.2", "--log-level", "debug")
    nc = subprocess.Popen(
        ["nc", "127.0.0.1", str(server.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        out = StreamCollector(nc.stdout)
        out.wait_for(b"encoding US-ASCII")
        out.wait_for(b"> " + bytes((IAC, GA)))
        nc.stdin.write("café\n".encode())
        nc.stdin.flush()
        out.wait_for(b"(input was not valid for this session's encoding)\r\n")
        nc.stdin.write(b"hello\n")
        nc.stdin.flush()
        try:
            out.wait_for(b"You said: hello\r\n", timeout=5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nserver log:\n{server.log_text()}") from None
        nc.stdin.write(b"quit\n")
        nc.stdin.flush()
        out.wait_for(b"Goodbye.\r\n")
        nc.stdin.close()
        nc.wait(10)
    finally:
        _end(nc)
    assert "shell failed" not in server.log_text()
    assert_nothing_alarming(server)


# ------------------------------------------------------- 5. the echo shell


def agree_binary(client: RawTelnet) -> None:
    """Offer and request BINARY, and wait until both directions are agreed."""
    client.offer(BINARY)
    client.request(BINARY)
    client.read_until(
        lambda c: (DO, BINARY) in c.commands and (WILL, BINARY) in c.commands,
        what="BINARY agreed both ways",
    )


@pytest.mark.parametrize("encoding", ["false", "latin-1"])
def test_echo_shell_returns_bytes_unchanged_with_iac_doubled(serve, encoding: str) -> None:
    server = serve("--shell", "echo", "--encoding", encoding)
    client = RawTelnet(server.port, will={BINARY}, do={BINARY})
    try:
        agree_binary(client)
        start = len(client.wire)
        client.send(b"a\xff\xffb")
        client.read_data_until(b"a\xffb")
        assert b"a\xff\xffb" in client.wire[start:]  # IAC doubled on the way back

        everything = bytes(range(256)) + b"\r\n\r\x00\r" + bytes(range(255, -1, -1))
        mark = len(client.data)
        client.send(everything.replace(b"\xff", b"\xff\xff"))
        client.read_until(
            lambda c: len(c.data) - mark >= len(everything), what=f"{len(everything)} bytes echoed"
        )
        assert bytes(client.data[mark:]) == everything
    finally:
        client.close()
    assert_nothing_alarming(server)


def test_echo_shell_large_binary_stream(serve) -> None:
    """A quarter MiB of random bytes, sent while the echo is read back."""
    server = serve("--shell", "echo", "--encoding", "false")
    client = RawTelnet(server.port, will={BINARY}, do={BINARY})
    payload = random.Random(1234).randbytes(256 * 1024)
    errors: list[BaseException] = []

    def send_all() -> None:
        try:
            view = payload.replace(b"\xff", b"\xff\xff")
            for i in range(0, len(view), 8192):
                client.sock.sendall(view[i : i + 8192])
        except BaseException as exc:
            errors.append(exc)

    try:
        agree_binary(client)
        mark = len(client.data)
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        client.read_until(
            lambda c: len(c.data) - mark >= len(payload),
            timeout=30,
            what="the whole payload echoed",
        )
        sender.join(10)
        assert not sender.is_alive() and not errors, errors
        assert bytes(client.data[mark:]) == payload
    finally:
        client.close()
    assert_nothing_alarming(server)


def test_raw_socket_without_replies_still_reaches_echo_shell(serve) -> None:
    """A client that never answers negotiation (like nc) is echoed after connect_maxwait."""
    server = serve("--shell", "echo", "--encoding", "false", "--connect-maxwait", "0.3")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"ping \xff\xff pong")
        got = bytearray()
        deadline = time.monotonic() + 10
        while b"pong" not in got:
            remaining = deadline - time.monotonic()
            assert remaining > 0, got
            ready, _, _ = select.select([sock], [], [], remaining)
            if ready:
                chunk = sock.recv(4096)
                assert chunk, f"EOF; got {bytes(got)!r}"
                got += chunk
        assert bytes(got) == IAC_DO_TTYPE + b"ping \xff\xff pong"
    finally:
        sock.close()
