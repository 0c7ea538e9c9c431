"""GMCP, MSDP, MSSP, MCCP2 and MCCP3 on a real ``shardd serve``, with real clients.

telnetlib3's client is the peer that speaks the MUD protocols (it has all
five); raw sockets check what is offered and what happens to bad input.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import telnetlib3
from conftest import async_wait_until, connect, read_to_eof, read_until, run_shardd
from telnetlib3.telopt import MSDP as TL3_MSDP
from telnetlib3.telopt import MSSP as TL3_MSSP
from test_tls import make_cert, tls_args, tls_connect, tls_port

from workers.mud import MAX_GMCP_QUEUE, MAX_GMCP_QUEUE_BYTES
from workers.telnet.telopt import (
    AYT,
    DO,
    GMCP,
    IAC,
    MCCP2,
    MCCP3,
    MSDP,
    MSSP,
    NAWS,
    SB,
    SE,
    WILL,
    WONT,
)

TIMEOUT = 10.0
MUD_SHELL = ("--shell", "tests.shells_for_tests:mud")
START_MCCP2 = bytes((IAC, SB, MCCP2, IAC, SE))
START_MCCP3 = bytes((IAC, SB, MCCP3, IAC, SE))


def will(opt: int) -> bytes:
    return bytes((IAC, WILL, opt))


def sb(opt: int, payload: bytes) -> bytes:
    return bytes((IAC, SB, opt)) + payload + bytes((IAC, SE))


# ------------------------------------------------------- telnetlib3's client


class MudClient(telnetlib3.TelnetClient):  # type: ignore[misc]
    """telnetlib3's client, agreeing to GMCP, MSDP and MSSP, keeping what it gets."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.gmcp: list[tuple[str, Any]] = []
        self.msdp: list[dict[str, Any]] = []
        self.mssp: list[dict[str, Any]] = []
        writer = self.writer
        writer.passive_do.update({TL3_MSDP, TL3_MSSP})
        writer.set_ext_callback(TL3_MSDP, self.msdp.append)
        writer.set_ext_callback(TL3_MSSP, self.mssp.append)

    def on_gmcp(self, package: str, data: Any) -> None:
        self.gmcp.append((package, data))


async def open_mud(port: int, **options: Any) -> tuple[Any, Any, MudClient]:
    made: list[MudClient] = []

    def factory(**kwargs: Any) -> MudClient:
        made.append(MudClient(**kwargs))
        return made[-1]

    reader, writer = await telnetlib3.open_connection(
        "127.0.0.1", port, client_factory=factory, connect_maxwait=2.0, **options
    )
    return reader, writer, made[0]


async def read_to(reader: Any, marker: bytes) -> bytes:
    data: bytes = await asyncio.wait_for(reader.readuntil(marker), TIMEOUT)
    return data


async def read_much(reader: Any, marker: str) -> str:
    """Text up to ``marker``, past the reader's limit on one ``readuntil``."""
    got = ""
    deadline = time.monotonic() + TIMEOUT
    while marker not in got:
        chunk = await asyncio.wait_for(reader.read(65536), max(0.0, deadline - time.monotonic()))
        assert chunk, f"EOF waiting for {marker!r}; got {got[-200:]!r}"
        got += chunk
    return got


def gmcp_of(client: MudClient, package: str) -> list[Any]:
    return [data for name, data in client.gmcp if name == package]


# ------------------------------------------------------------- raw sockets


def offered(sock: socket.socket, hello: bytes = will(NAWS)) -> bytes:
    """What the server sends a client that agrees to one thing, up to the answer
    to an AYT sent after its timing mark: everything it offers at connection."""
    got = bytearray()
    sock.sendall(hello)
    read_until(sock, bytes((IAC, DO, 6)), got)  # its DO TIMING-MARK
    sock.sendall(bytes((IAC, AYT)))
    read_until(sock, b"[Yes]", got)
    return bytes(got)


# ------------------------------------------------------------------ GMCP


async def test_gmcp_round_trip_with_telnetlib3(serve: Any) -> None:
    server = serve(*MUD_SHELL)
    reader, writer, client = await open_mud(server.port)
    try:
        await read_to(reader, b"mud ready\r\n")
        # telnetlib3 sends Core.Hello and Core.Supports.Set once GMCP is on;
        # the shell reads them from writer.gmcp_messages() and answers each
        await async_wait_until(lambda: len(gmcp_of(client, "Echo.Reply")) >= 2, TIMEOUT)
        writer.send_gmcp("Char.Login", {"name": "Ünïcode", "levels": [1, 2.5, None, True]})
        await async_wait_until(lambda: len(gmcp_of(client, "Echo.Reply")) >= 3, TIMEOUT)
        replies = gmcp_of(client, "Echo.Reply")
        assert replies[0]["package"] == "Core.Hello"
        assert replies[0]["data"]["client"] == "telnetlib3"
        assert replies[1]["package"] == "Core.Supports.Set"
        assert replies[2] == {
            "package": "Char.Login",
            "data": {"name": "Ünïcode", "levels": [1, 2.5, None, True]},
        }
        writer.write("options\r\n")
        line = await read_to(reader, b"}\r\n")
        assert b'"gmcp": true' in line and b'"mccp2": false' in line
    finally:
        writer.close()


async def test_gmcp_and_msdp_by_callback(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:mud_callback")
    reader, writer, client = await open_mud(server.port)
    try:
        await read_to(reader, b"mud ready\r\n")
        writer.send_gmcp("Client.Map", {"url": "x"})
        writer.send_msdp({"CLIENT_NAME": "telnetlib3"})
        await async_wait_until(lambda: gmcp_of(client, "Echo.MSDP"), TIMEOUT)
        await async_wait_until(
            lambda: ["Client.Map", {"url": "x"}] in gmcp_of(client, "Echo.Callback"), TIMEOUT
        )
        assert gmcp_of(client, "Echo.MSDP") == [["CLIENT_NAME", "telnetlib3"]]
    finally:
        writer.close()


async def test_unread_gmcp_messages_are_bounded(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:mud_unread", "--workers", "1")
    reader, writer, _client = await open_mud(server.port)
    try:
        await read_to(reader, b"mud ready\r\n")
        sent = MAX_GMCP_QUEUE + 36
        for n in range(sent - 2):  # with Core.Hello and Core.Supports.Set
            writer.send_gmcp("Test.Flood", n)
        writer.write("count\r\n")
        line = await read_to(reader, b"\r\n")
        assert line.strip() == f"COUNT {MAX_GMCP_QUEUE} DROPPED {sent - MAX_GMCP_QUEUE}".encode()

        def dropped() -> object:
            result = run_shardd("status", "--port", str(server.port), "--json")
            return (
                result.returncode == 0
                and json.loads(result.stdout)["supervisor"]["gmcp_dropped"] == 36
            )

        await async_wait_until(dropped, TIMEOUT, "status to count the dropped messages")
        result = run_shardd("status", "--port", str(server.port))
        assert "36 GMCP messages dropped unread" in result.stdout
    finally:
        writer.close()


async def test_unread_gmcp_payloads_are_bounded_in_bytes(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:mud_unread")
    reader, writer, _client = await open_mud(server.port)
    try:
        await read_to(reader, b"mud ready\r\n")
        for _ in range(30):  # 4 KiB each: far fewer than MAX_GMCP_QUEUE fit
            writer.send_gmcp("Test.Big", "x" * 4096)
        writer.write("count\r\n")
        line = await read_to(reader, b"\r\n")
        match = re.fullmatch(rb"COUNT (\d+) DROPPED (\d+)", line.strip())
        assert match, line
        waiting, dropped = int(match.group(1)), int(match.group(2))
        assert waiting + dropped == 32  # with Core.Hello and Core.Supports.Set
        # the two small ones and as many big ones as fit in the bytes allowed
        assert waiting - 2 == MAX_GMCP_QUEUE_BYTES // (4096 + len('Test.Big ""')), line
    finally:
        writer.close()


def test_malformed_gmcp_and_msdp_are_warned_about_and_the_session_goes_on(serve: Any) -> None:
    server = serve(*MUD_SHELL, "--connect-maxwait", "0.5")
    with connect(server.port) as sock:
        got = bytearray(offered(sock, will(NAWS) + bytes((IAC, DO, GMCP, IAC, DO, MSDP))))
        read_until(sock, b"mud ready\r\n", got)
        sock.sendall(sb(GMCP, b'Core.Hello {"client": ') + sb(MSDP, b"\x02no variable"))
        sock.sendall(sb(GMCP, b'Core.Hello {"client": "raw"}') + b"still here\r\n")
        read_until(sock, b"echo still here\r\n", got)
        read_until(sock, b'"package":"Core.Hello","data":{"client":"raw"}', got)
        peer = re.escape(f"127.0.0.1:{sock.getsockname()[1]}")
    server.wait_for_log(rf"WARNING .*{peer}: bad GMCP subnegotiation: bad JSON")
    server.wait_for_log(rf"WARNING .*{peer}: bad MSDP subnegotiation")


# ------------------------------------------------------------------ MSDP


async def test_msdp_list_report_unreport_and_updates(serve: Any) -> None:
    server = serve(*MUD_SHELL)
    reader, writer, client = await open_mud(server.port)
    try:
        await read_to(reader, b"mud ready\r\n")
        writer.send_msdp({"LIST": ["COMMANDS", "REPORTABLE_VARIABLES"]})
        writer.send_msdp({"REPORT": ["HEALTH", "ROOM", "NOT_A_VARIABLE"]})
        await async_wait_until(lambda: len(client.msdp) >= 3, TIMEOUT)
        assert client.msdp[0] == {"COMMANDS": ["LIST", "REPORT", "RESET", "SEND", "UNREPORT"]}
        assert client.msdp[1] == {"REPORTABLE_VARIABLES": ["HEALTH", "ROOM"]}
        assert client.msdp[2] == {"HEALTH": "100", "ROOM": {"VNUM": "1", "NAME": "Start"}}
        writer.write("hp 42\r\n")
        await read_to(reader, b"health 42\r\n")
        assert client.msdp[3:] == [{"HEALTH": "42"}]  # sent before the line, in order
        writer.send_msdp({"UNREPORT": "HEALTH"})
        writer.send_msdp({"SEND": "HEALTH"})
        writer.write("hp 7\r\n")
        await read_to(reader, b"health 7\r\n")
        assert client.msdp[4:] == [{"HEALTH": "42"}]  # SEND's answer; 7 not reported
    finally:
        writer.close()


# ------------------------------------------------------------------ MSSP


def mssp_now(port: int) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        _reader, writer, client = await open_mud(port)
        try:
            await async_wait_until(lambda: client.mssp, TIMEOUT, "MSSP")
            return client.mssp[0]
        finally:
            writer.close()

    return asyncio.run(ask())


def test_mssp_from_the_config_file_and_flags(serve: Any, tmp_path: Path) -> None:
    config = tmp_path / "shardd.toml"
    config.write_text(
        'offer = ["gmcp", "mssp"]\n'
        "[mssp]\n"
        'NAME = "Test MUD"\n'
        '"CRAWL DELAY" = -1\n'
        'GENRE = ["Fantasy", "Science Fiction"]\n'
        "ANSI = true\n"
    )
    before = int(time.time())
    server = serve(*MUD_SHELL, "--config", str(config), "--mssp", "CONTACT=admin@example.org")
    status = mssp_now(server.port)
    assert status["NAME"] == "Test MUD"
    assert status["CRAWL DELAY"] == "-1"
    assert status["GENRE"] == ["Fantasy", "Science Fiction"]
    assert status["ANSI"] == "1"
    assert status["CONTACT"] == "admin@example.org"
    assert status["PLAYERS"] == "1"
    assert status["PORT"] == str(server.port)
    assert status["GMCP"] == "1" and status["MSDP"] == "0" and status["MCCP"] == "0"
    assert before - 1 <= int(status["UPTIME"]) <= time.time()  # when it started, not how long
    assert "SSL" not in status


def test_mssp_players_counts_every_shard(serve: Any) -> None:
    server = serve(*MUD_SHELL, "--workers", "2")
    others = [connect(server.port) for _ in range(6)]
    try:
        for sock in others:  # each a session: it has had its first negotiation
            read_until(sock, bytes((IAC, DO, 24)), bytearray())
        deadline = time.monotonic() + 15
        seen: list[str] = []
        while True:
            status = mssp_now(server.port)
            seen.append(status["PLAYERS"])
            if status["PLAYERS"] == "7":
                break
            assert time.monotonic() < deadline, f"PLAYERS was {seen}"
        uptimes = {mssp_now(server.port)["UPTIME"] for _ in range(4)}
        assert len(uptimes) == 1, "every worker answers the supervisor's start"
    finally:
        for sock in others:
            sock.close()


def test_mssp_names_the_tls_port(serve: Any, tmp_path: Path) -> None:
    cert = make_cert(tmp_path, "mud")
    server = serve(*MUD_SHELL, *tls_args(cert), "--compression")
    status = mssp_now(server.port)
    assert status["SSL"] == str(tls_port(server))
    assert status["MCCP"] == "1"


# ------------------------------------------------------------- what is offered


def test_offered_by_default_and_by_flag(serve: Any) -> None:
    server = serve(*MUD_SHELL)
    with connect(server.port) as sock:
        got = offered(sock)
    assert all(will(opt) in got for opt in (GMCP, MSDP, MSSP))
    assert will(MCCP2) not in got and will(MCCP3) not in got
    with connect(server.port) as sock:
        # asked for anyway: refused, compression is off
        got = offered(sock, will(NAWS) + bytes((IAC, DO, MCCP2)))
    assert bytes((IAC, WONT, MCCP2)) in got and START_MCCP2 not in got

    only = serve(*MUD_SHELL, "--offer", "msdp")
    with connect(only.port) as sock:
        got = offered(sock)
    assert will(MSDP) in got
    assert all(will(opt) not in got for opt in (GMCP, MSSP, MCCP2, MCCP3))

    none = serve(*MUD_SHELL, "--offer", "none", "--compression")
    with connect(none.port) as sock:
        got = offered(sock)
    # "none" names nothing, so compression adds MCCP2 and MCCP3 alone
    assert all(will(opt) not in got for opt in (GMCP, MSDP, MSSP))
    assert will(MCCP2) in got and will(MCCP3) in got


def test_no_compression_over_tls(serve: Any, tmp_path: Path) -> None:
    cert = make_cert(tmp_path, "mud")
    server = serve(*MUD_SHELL, *tls_args(cert), "--compression")
    with connect(server.port) as sock:
        got = offered(sock)
    assert will(MCCP2) in got and will(MCCP3) in got
    with tls_connect(tls_port(server)) as tls_sock:
        got = offered(tls_sock, will(NAWS) + bytes((IAC, DO, MCCP2, IAC, DO, MCCP3)))  # type: ignore[arg-type]
    assert will(GMCP) in got
    assert bytes((IAC, WONT, MCCP2)) in got and bytes((IAC, WONT, MCCP3)) in got
    assert START_MCCP2 not in got


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--offer", "gmcp,zmp"), "offer: unknown option 'zmp'"),
        (("--offer", "gmcp,mccp2"), "offer: mccp2 needs compression on"),
        (("--mssp", "contact=x"), "mssp: MSSP variable names are upper case"),
        (("--mssp", "CONTACT"), "mssp: must be NAME=VALUE"),
        (("--mssp", "PLAYERS=9"), "mssp: MSSP PLAYERS is the server's live value"),
        (("--mssp", "NAME=a\x01b"), "mssp: MSSP text holds"),
    ],
)
def test_bad_mud_settings_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_shardd("serve", "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_bad_mssp_table_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "shardd.toml"
    config.write_text('[mssp]\nNAME = "x"\nRATING = 2.5\n')
    result = run_shardd("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1 and "mssp: MSSP RATING value of type float" in result.stderr
    )


# -------------------------------------------------------------- MCCP2, MCCP3


async def test_mccp2_and_mccp3_with_telnetlib3(serve: Any) -> None:
    server = serve(*MUD_SHELL, "--compression")
    reader, writer, client = await open_mud(server.port, compression=True)
    try:
        await read_to(reader, b"mud ready\r\n")
        await async_wait_until(lambda: writer.mccp2_active and writer.mccp3_active, TIMEOUT)
        writer.write("options\r\n")
        line = await read_to(reader, b"}\r\n")
        assert b'"mccp2": true' in line and b'"mccp3": true' in line, line
        # both ways through the streams: lines typed in, GMCP and MSDP, big output
        writer.send_gmcp("Char.Login", {"name": "z"})
        writer.send_msdp({"REPORT": "HEALTH"})
        writer.write("big 3000\r\n")
        out = await read_much(reader, "big done\r\n")
        assert out.count("of the big output") == 3000
        await async_wait_until(
            lambda: (
                gmcp_of(client, "Echo.Reply")[-1:]
                == [{"package": "Char.Login", "data": {"name": "z"}}]
            ),
            TIMEOUT,
        )
        assert {"HEALTH": "100"} in client.msdp
    finally:
        writer.close()


def test_mccp2_output_is_one_zlib_stream_flushed_per_write(serve: Any) -> None:
    server = serve(*MUD_SHELL, "--compression", "--connect-maxwait", "0.5")
    with connect(server.port) as sock:
        got = bytearray()
        sock.sendall(bytes((IAC, DO, MCCP2)))
        read_until(sock, START_MCCP2, got)
        inflate = zlib.decompressobj()
        plain = bytearray(inflate.decompress(got[got.index(START_MCCP2) + len(START_MCCP2) :]))
        sock.settimeout(TIMEOUT)

        def until(marker: bytes) -> None:
            # each chunk inflates by itself: a sync flush ends every write
            while marker not in plain:
                chunk = sock.recv(65536)
                assert chunk, f"EOF waiting for {marker!r}"
                plain.extend(inflate.decompress(chunk))

        until(b"mud ready\r\n")
        sock.sendall(b"big 2000\r\n")
        until(b"big done\r\n")
        assert plain.count(b"of the big output") == 2000
        # telnet inside the stream: the AYT answer comes compressed too
        sock.sendall(bytes((IAC, AYT)))
        until(b"[Yes]")


def test_mccp3_input_is_inflated_before_it_is_parsed(serve: Any) -> None:
    server = serve(*MUD_SHELL, "--compression", "--connect-maxwait", "0.5")
    with connect(server.port) as sock:
        got = bytearray()
        deflate = zlib.compressobj(9, zlib.DEFLATED, 10)
        # the start and the first compressed bytes in one segment, as a client may send
        first = deflate.compress(b"line one\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH)
        sock.sendall(bytes((IAC, DO, MCCP3)) + START_MCCP3 + first)
        read_until(sock, b"echo line one\r\n", got)
        lines = b"".join(b"line %d\r\n" % n for n in range(5000))
        sock.sendall(deflate.compress(lines + bytes((IAC, AYT))) + deflate.flush(zlib.Z_SYNC_FLUSH))
        read_until(sock, b"echo line 4999\r\n", got)
        read_until(sock, b"[Yes]", got)
        # the client ends its stream: plain telnet again
        sock.sendall(deflate.flush(zlib.Z_FINISH) + b"plain again\r\n")
        read_until(sock, b"echo plain again\r\n", got)


def test_a_broken_mccp3_stream_closes_the_session_with_one_line(serve: Any) -> None:
    server = serve(*MUD_SHELL, "--compression", "--connect-maxwait", "0.5")
    with connect(server.port) as sock:
        got = bytearray()
        sock.sendall(bytes((IAC, DO, MCCP3)))
        read_until(sock, b"mud ready\r\n", got)
        sock.sendall(START_MCCP3 + b"this is not zlib at all")
        read_to_eof(sock)
        port = sock.getsockname()[1]
    line = server.wait_for_log(rf"127\.0\.0\.1:{port}: MCCP3: broken compressed stream")
    assert "closing" in line.string
    with connect(server.port) as sock:  # the server goes on
        read_until(sock, bytes((IAC, DO, 24)), bytearray())


def test_mccp3_start_without_mccp3_is_refused_and_parsed_as_telnet(serve: Any) -> None:
    server = serve(*MUD_SHELL, "--connect-maxwait", "0.5")
    with connect(server.port) as sock:
        got = bytearray()
        sock.sendall(START_MCCP3 + b"plain after\r\n")
        read_until(sock, b"echo plain after\r\n", got)
        port = sock.getsockname()[1]
    server.wait_for_log(rf"127\.0\.0\.1:{port}: bad MCCP3 subnegotiation")


def test_an_mccp3_bomb_is_refused_after_a_bounded_amount(serve: Any) -> None:
    """Zeros compress a thousandfold: past the first MiB inflated, a stream
    over MAX_INFLATE_RATIO closes its session, whatever it still holds."""
    server = serve(
        "--shell", "tests.shells_for_tests:silent", "--compression", "--connect-maxwait", "0.5"
    )
    with connect(server.port) as sock:
        deflate = zlib.compressobj(9)
        bomb = deflate.compress(bytes(64 * 2**20)) + deflate.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 100_000
        sock.sendall(bytes((IAC, DO, MCCP3)) + START_MCCP3 + bomb)
        read_to_eof(sock)
        port = sock.getsockname()[1]
    server.wait_for_log(rf"127\.0\.0\.1:{port}: MCCP3: compressed stream inflates over 100 times")
