"""Hostile and impatient clients against a real ``shardd serve``: nothing they do crashes it.

Every test starts a real server subprocess and attacks it over loopback with
plain sockets, as a probe on the internet or a player closing a terminal
mid-output would. What each one checks: the worker that served the attack is
still the same process, still serving, and other sessions are unharmed.
"""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import pytest
from conftest import ServerProcess, connect, read_to_eof, read_until, run_shardd, wait_until

from workers.telnet import options
from workers.telnet.client import TelnetClientSession, Terminal
from workers.telnet.engine import escape

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
TTYPE, NAWS, NEW_ENVIRON, CHARSET, BINARY, TM, AYT = 24, 31, 39, 42, 0, 6, 246
IAC_DO_TTYPE = bytes((IAC, DO, TTYPE))
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def status(server: ServerProcess) -> dict[str, Any]:
    result = run_shardd("status", "--json", "--port", str(server.port))
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def workers(server: ServerProcess) -> dict[int, dict[str, Any]]:
    return {w["shard"]: w for w in status(server)["workers"] if w["state"] == "serving"}


def serving_workers(server: ServerProcess, count: int) -> dict[int, dict[str, Any]]:
    found = wait_until(
        lambda: len(workers(server)) == count and workers(server), 20, f"{count} serving workers"
    )
    assert isinstance(found, dict)
    return found


def start_session(port: int) -> socket.socket:
    """A client past negotiation: it refuses TTYPE, so the shell starts at once."""
    sock = connect(port)
    read_until(sock, IAC_DO_TTYPE, bytearray())
    sock.sendall(bytes((IAC, WONT, TTYPE)))
    return sock


def fill_until_blocked(sock: socket.socket, chunk: bytes, limit: float = 30.0) -> int:
    """Send ``chunk`` without reading until the socket stays unwritable for 1 s: every
    buffer on the way is full, so the server holds output it cannot send."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], 1.0)
        if not writable:
            return sent
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            pass
    raise AssertionError(f"the server kept reading for {limit}s ({sent} bytes)")


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    sock.close()


def assert_unharmed(server: ServerProcess, before: dict[int, dict[str, Any]]) -> None:
    """The same worker processes still serve every shard, and a new client gets in."""
    after = serving_workers(server, len(before))
    assert {s: w["pid"] for s, w in after.items()} == {s: w["pid"] for s, w in before.items()}
    assert all(w["restarts"] == 0 for w in after.values()), after
    with connect(server.port) as sock:
        read_until(sock, IAC_DO_TTYPE, bytearray())
    assert "killed by signal" not in server.log_text()
    assert "Traceback" not in server.log_text()


# ----------------------------------------------------------- hang-ups


def test_hang_up_with_output_queued_does_not_kill_the_worker(serve: Any) -> None:
    """A client that floods the echo shell, never reads, then resets (SIGPIPE, found)."""
    server = serve("--workers", "1", "--shell", "echo", "--encoding", "false")
    before = serving_workers(server, 1)
    for _ in range(5):
        sock = start_session(server.port)
        fill_until_blocked(sock, b"y" * 65536)
        reset(sock)
    assert_unharmed(server, before)


# ------------------------------------------------------------- charsets


class ChoosyClient(TelnetClientSession):
    """A terminal client that answers the server's CHARSET offer with ``accept``, whatever it is."""

    def __init__(self, terminal: Terminal, accept: str | None = None) -> None:
        super().__init__(terminal)
        self.accept = accept

    def _answer(self, option: int, payload: bytes) -> None:
        if option == CHARSET and self.accept is not None:
            self.engine.send_subnegotiation(CHARSET, options.build_charset_reply(self.accept))
        else:
            super()._answer(option, payload)


def negotiate(
    port: int, client: TelnetClientSession, until: bytes, source: str = "127.0.0.1"
) -> tuple[socket.socket, bytes]:
    """Connect from ``source`` and answer the server as ``client`` until ``until`` arrives."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, answer_until(sock, client, until)


def talk(sock: socket.socket, client: TelnetClientSession, line: bytes, until: bytes) -> bytes:
    sock.sendall(escape(line))
    return answer_until(sock, client, until)


def answer_until(sock: socket.socket, client: TelnetClientSession, until: bytes) -> bytes:
    """In-band data received until ``until`` arrives, answering the server meanwhile."""
    got = bytearray()
    deadline = time.monotonic() + 10
    while until not in got:
        assert time.monotonic() < deadline, f"no {until!r} within 10s; got {bytes(got)!r}"
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        assert data, f"closed before {until!r}; got {bytes(got)!r}"
        got += client.receive(data)
        if client.has_output:
            sock.sendall(client.data_to_send())
    return bytes(got)


# Codecs clients chose in the field: bytes-to-bytes (bz2 grew a worker to 2 GB),
# stateful or ASCII-changing ones (each ended its session with a traceback).
HOSTILE_CODECS = ["utf-16", "utf-32", "punycode", "hex", "base64", "uu", "rot13", "zlib",
                  "quopri", "utf-7", "idna", "iso2022_jp", "bz2"]  # fmt: skip


def test_a_client_cannot_choose_a_codec_off_the_list(serve: Any) -> None:
    """By NEW-ENVIRON LANG, by accepting CHARSET, or both: the session stays UTF-8."""
    server = serve("--workers", "1")
    before = serving_workers(server, 1)
    rss_before = psutil.Process(before[0]["pid"]).memory_info().rss
    for n, codec in enumerate(HOSTILE_CODECS):
        for how in ("lang", "charset"):
            terminal = Terminal(env={"LANG": f"en_US.{codec}"} if how == "lang" else {})
            client = ChoosyClient(terminal, accept=codec if how == "charset" else None)
            # one source address each: a peer's warnings past the first few are summarised
            source = f"127.0.{n + 1}.{1 if how == 'lang' else 2}"
            sock, banner = negotiate(server.port, client, b"> ", source)
            with sock:
                assert re.search(rb"encoding (UTF-8|utf8),", banner), (codec, how, banner)
                got = talk(sock, client, "h\u00e9llo\r\n".encode(), b"> ")
                assert "You said: h\u00e9llo".encode() in got, (codec, how, got)
    assert_unharmed(server, before)
    grown = psutil.Process(before[0]["pid"]).memory_info().rss - rss_before
    assert grown < 32 * 2**20, f"the worker grew {grown} bytes"
    log = server.log_text()
    for codec in HOSTILE_CODECS:
        assert f"refused charset '{codec}' of NEW-ENVIRON LANG" in log, codec
        assert f"client accepted charset '{codec}', which is refused" in log, codec


def test_charsets_setting_limits_the_choice(serve: Any) -> None:
    server = serve("--workers", "0", "--charsets", "utf-8,koi8-r")
    for lang, expected in (
        ("ru_RU.KOI8-R", b"encoding KOI8-R"),
        ("en_US.ISO-8859-1", b"encoding UTF-8"),  # refused: the CHARSET it accepted stands
    ):
        client = TelnetClientSession(Terminal(env={"LANG": lang}, charset="UTF-8"))
        sock, banner = negotiate(server.port, client, b"> ")
        sock.close()
        assert expected in banner, (lang, banner)
    assert "refused charset 'ISO-8859-1' of NEW-ENVIRON LANG" in server.log_text()


def test_bad_charsets_setting_is_one_line_and_exit_2() -> None:
    for value, word in (
        ("utf-8,bz2", "bz2"),
        ("utf-16", "utf-16"),
        ("nosuch", "nosuch"),
        (",", "at least one"),
    ):
        result = run_shardd("serve", "--port", "0", "--charsets", value)
        assert result.returncode == 2, result
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "charsets" in lines[0] and word in lines[0], lines


# ------------------------------------------------------- bounded state


def worker_rss(server: ServerProcess) -> int:
    (worker,) = serving_workers(server, 1).values()
    return int(psutil.Process(worker["pid"]).memory_info().rss)


def sb(option: int, payload: bytes) -> bytes:
    return bytes((IAC, SB, option)) + escape(payload) + bytes((IAC, SE))


def still_answers(sock: socket.socket) -> None:
    """The session is alive and its worker's loop is running: AYT gets its answer."""
    sock.settimeout(30)
    sock.sendall(bytes((IAC, AYT)))
    read_until(sock, b"[Yes]", bytearray(), timeout=30)


def flood(port: int, opening: bytes, attack: bytes, source: str = "127.0.0.1") -> socket.socket:
    """A session that opens with ``opening`` and then sends ``attack``, reading what comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    read_until(sock, IAC_DO_TTYPE, bytearray())
    sock.sendall(opening)
    sock.sendall(attack)  # the server's answers are small: nothing blocks on our side
    return sock


@pytest.mark.parametrize(
    ("opening", "attack"),
    [
        # 100 000 distinct terminal types, asked for or not (200 MB were kept)
        (
            bytes((IAC, WILL, TTYPE)),
            b"".join(sb(TTYPE, b"\x00" + b"TERM-%07d" % i + b"x" * 100) for i in range(100_000)),
        ),
        # 100 000 distinct environment variables (811 MB were kept for 200 MB)
        (
            bytes((IAC, WILL, NEW_ENVIRON)),
            b"".join(
                sb(
                    NEW_ENVIRON,
                    b"\x00"
                    + b"".join(b"\x03V%07d\x01%s" % (i * 10 + k, b"v" * 50) for k in range(10)),
                )
                for i in range(10_000)
            ),
        ),
    ],
    ids=["ttype", "new-environ"],
)
def test_what_a_client_sends_is_kept_within_bounds(serve: Any, opening: bytes, attack: bytes):
    server = serve("--workers", "1", "--connect-maxwait", "0.5")
    before = serving_workers(server, 1)
    rss = worker_rss(server)
    with flood(server.port, opening, attack) as sock:
        still_answers(sock)
        grown = worker_rss(server) - rss
        assert grown < 8 * 2**20, f"{len(attack)} bytes sent, the worker grew {grown} bytes"
    assert_unharmed(server, before)


def test_a_flood_of_malformed_commands_writes_a_few_log_lines(serve: Any) -> None:
    """1 MB of IAC 0x01 (not a command) wrote 55 MB of log: one line per pair."""
    server = serve("--workers", "1")
    before = serving_workers(server, 1)
    lines_before = len(server.log_text().splitlines())
    with flood(server.port, bytes((IAC, WONT, TTYPE)), bytes((IAC, 0x01)) * 500_000) as sock:
        still_answers(sock)
        # every one is counted, for the session and for its worker
        st = status(server)
        (session,) = st["connections"]
        assert session["protocol_errors"] == 500_000
        assert st["workers"][0]["protocol_errors"] == 500_000
        assert st["supervisor"]["protocol_errors"] == 500_000
    warnings = [line for line in server.log_text().splitlines()[lines_before:] if "WARNING" in line]
    assert 1 <= len(warnings) <= 10, warnings
    assert_unharmed(server, before)


# ------------------------------------------------ errors stay where they happen


def test_partial_character_then_binary_off_does_not_escape_data_received(serve: Any) -> None:
    """Half a UTF-8 character, then IAC WONT BINARY: it raised out of data_received."""
    server = serve("--workers", "1")
    before = serving_workers(server, 1)
    # no charset agreed (it refuses the offer): BINARY alone makes the session UTF-8
    client = TelnetClientSession(Terminal(env={}, charset="x-none"))
    sock, banner = negotiate(server.port, client, b"> ")
    assert b"encoding utf8," in banner, banner
    with sock:
        # AYT is answered once the half character before it has been read too
        sock.sendall(b"caf\xc3" + bytes((IAC, AYT)))
        answer_until(sock, client, b"[Yes]")
        sock.sendall(bytes((IAC, WONT, BINARY)))
        got = talk(sock, client, b"\r\nnext\r\n", b"You said: next")
        assert b"input was not valid" in got or b"You said: caf" in got, got
    assert "Fatal error" not in server.log_text()
    assert_unharmed(server, before)


def test_echo_shell_survives_bytes_it_cannot_decode(serve: Any) -> None:
    server = serve("--workers", "1", "--shell", "echo")
    before = serving_workers(server, 1)
    client = TelnetClientSession(Terminal(env={}))
    sock, _ = negotiate(server.port, client, b"", "127.0.0.1")
    with sock:
        got = talk(sock, client, b"bad \xc3\x28 byte|", b"|")
        assert got.startswith(b"bad "), got
        assert talk(sock, client, b"still echoing|", b"|").endswith(b"still echoing|")
    assert "shell failed" not in server.log_text()
    assert_unharmed(server, before)


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        ("plain_function_raises", "RuntimeError: the plain shell broke"),
        ("raises_after_banner", "KeyError: 'missing-room'"),
    ],
)
def test_a_failing_shell_closes_its_session_with_one_line(
    serve: Any, shell: str, expected: str
) -> None:
    server = serve("--workers", "1", "--shell", f"tests.shells_for_tests:{shell}")
    before = serving_workers(server, 1)
    sock = start_session(server.port)
    with sock:
        sock.sendall(b"go\r\n")
        read_to_eof(sock)  # closed, not left hanging
        port = sock.getsockname()[1]
    line = server.wait_for_log(rf"127\.0\.0\.1:{port}: shell failed: ")
    assert expected in line.string and "shells_for_tests.py:" in line.string, line.string
    assert "Traceback" not in server.log_text()
    assert_unharmed(server, before)


def test_shell_module_that_fails_on_import_is_one_line_and_exit_2(tmp_path: Any) -> None:
    (tmp_path / "brokenshell.py").write_text("ROOMS = {}\nROOMS['lobby'].append(1)\n")
    result = subprocess.run(
        [sys.executable, "-m", "shardd", "serve", "--port", "0", "--shell", "brokenshell:shell"],
        cwd=tmp_path, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "KeyError: 'lobby'" in lines[0] and "brokenshell.py:2" in lines[0], lines


# ------------------------------------------------------------ output


def test_replies_to_a_client_that_never_reads_stop_reading_from_it(serve: Any) -> None:
    """DO TIMING-MARK sent by a client that never reads: the replies queued without end."""
    server = serve("--workers", "1")
    before = serving_workers(server, 1)
    rss = worker_rss(server)
    sock = start_session(server.port)
    sent = fill_until_blocked(sock, bytes((IAC, DO, TM)) * 21845)
    grown = worker_rss(server) - rss
    assert grown < 8 * 2**20, f"{sent} bytes sent, the worker grew {grown} bytes"
    reset(sock)
    assert_unharmed(server, before)


def test_a_shell_cannot_queue_more_output_than_the_limit(serve: Any) -> None:
    """A shell writing without drain() to a client that never reads grew a worker to 1.9 GB."""
    server = serve("--workers", "1", "--shell", "tests.shells_for_tests:spew")
    before = serving_workers(server, 1)
    rss = worker_rss(server)
    sock = connect(server.port)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        read_until(sock, IAC_DO_TTYPE, bytearray())
        sock.sendall(bytes((IAC, WONT, TTYPE)))
        port = sock.getsockname()[1]
        server.wait_for_log(
            rf"127\.0\.0\.1:{port}: \d+ bytes of output waiting, more than 1048576: "
            "the client is not reading; closing", timeout=30,
        )  # fmt: skip
        grown = worker_rss(server) - rss
        assert grown < 16 * 2**20, f"the worker grew {grown} bytes"
    assert_unharmed(server, before)


# ------------------------------------------------------------- fairness


def test_a_naws_flood_does_not_hold_up_another_session(serve: Any) -> None:
    """3 000 000 NAWS updates from one client stalled the others for up to 2.6 s: each
    of uvloop's reads (32 of 256 KiB a turn) was parsed whole. Checked as an order,
    not a time: another client's AYT is answered while the flood is being parsed."""
    server = serve("--workers", "1", "--connect-maxwait", "0.5")
    flooder = start_session(server.port)
    flooder.sendall(bytes((IAC, WILL, NAWS)))
    updates = 600_000  # 5.4 MB; only the last sets the width to 4242
    flood = b"".join(sb(NAWS, bytes((0, 1 + i % 200, 0, 24))) for i in range(updates - 1))
    flood += sb(NAWS, bytes((16, 146, 0, 24)))
    sender = threading.Thread(target=flooder.sendall, args=(flood,), daemon=True)
    sender.start()

    def flooder_cols() -> int | None:
        sessions = [c for c in status(server)["connections"]
                    if c["peer"].endswith(f":{flooder.getsockname()[1]}")]  # fmt: skip
        return sessions[0]["cols"] if sessions else None

    wait_until(lambda: (flooder_cols() or 0) > 1, 20, "the flood under way")
    with start_session(server.port) as bystander:
        bystander.sendall(bytes((IAC, AYT)))
        read_until(bystander, b"[Yes]", bytearray(), timeout=30)
    assert flooder_cols() != 4242, "the whole flood was parsed before the AYT was answered"
    wait_until(lambda: flooder_cols() == 4242, 120, "the end of the flood")
    sender.join(30)
    flooder.close()
