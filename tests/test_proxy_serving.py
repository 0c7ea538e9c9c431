"""``shardd serve --proxy-protocol``: behind a real HAProxy, and against raw peers.

The client behind the proxy is the session's peer everywhere: its shell's
``peername``, the limits per address, the log and ``status``. Connections
that do not open with a valid header from a trusted proxy get nothing and
are closed.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import read_until, run_shardd, wait_until
from haproxy_peer import (
    TIMEOUT,
    HAProxy,
    closed_with_nothing,
    connect_from,
    free_port,
    read_addresses,
)
from test_tls import make_cert

from workers.admission import TOO_MANY_SESSIONS

SHELL = "tests.shells_for_tests:addresses"
# the shell starts at once for a raw socket that answers no negotiation
QUICK = ("--shell", SHELL, "--connect-maxwait", "0.3")
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

Start = Callable[..., HAProxy]


def haproxy_config(front: int, server_line: str, *, frontend: str = "", bind: str = "") -> str:
    return f"""
global
    log stdout format raw daemon
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend telnet
    bind 127.0.0.1:{front} {bind}
{frontend}
    default_backend shardd
backend shardd
    server s1 {server_line}
"""


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Start]:
    started: list[HAProxy] = []

    def start(config: str, listens: list[int], env: dict[str, str] | None = None) -> HAProxy:
        directory = tmp_path / f"haproxy{len(started)}"
        directory.mkdir()
        proxy = HAProxy(config, directory, listens, env)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def v2_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    addresses = (
        socket.inet_aton(source[0])
        + socket.inet_aton(destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(addresses)) + addresses


# ------------------------------------------------------ behind HAProxy


@pytest.mark.parametrize("send_proxy, version", [("send-proxy-v2", 2), ("send-proxy", 1)])
def test_haproxy_relays_the_client_address(
    serve: Any, haproxy: Start, send_proxy: str, version: int
) -> None:
    server = serve("--proxy-protocol", *QUICK)
    front = free_port()
    haproxy(haproxy_config(front, f"127.0.0.1:{server.port} {send_proxy}"), [front])
    with connect_from("127.0.0.5", front) as client:
        got = bytearray()
        seen = read_addresses(client, got)
        assert seen["peername"] == ["127.0.0.5", client.getsockname()[1]]
        assert seen["sockname"] == ["127.0.0.1", front]
        assert seen["proxy_version"] == version
        client.sendall(b"hello\r\n")
        read_until(client, b"You said: hello\r\n", got)


def test_haproxy_unique_id_reaches_the_shell(serve: Any, haproxy: Start) -> None:
    server = serve("--proxy-protocol", *QUICK)
    front = free_port()
    config = haproxy_config(
        front,
        f"127.0.0.1:{server.port} send-proxy-v2 proxy-v2-options unique-id,crc32c",
        frontend="    unique-id-format shardd-%ci-%cp",
    )
    haproxy(config, [front])
    with connect_from("127.0.0.7", front) as client:
        seen = read_addresses(client)
        assert seen["proxy_unique_id"] == f"shardd-127.0.0.7-{client.getsockname()[1]}"


def test_haproxy_ending_tls_sends_its_details(serve: Any, haproxy: Start, tmp_path: Path) -> None:
    """HAProxy decrypts (bind ... ssl crt) and relays to the plain port with the SSL TLV."""
    cert = make_cert(tmp_path, "haproxy")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(cert.certfile.read_text() + cert.keyfile.read_text())
    server = serve("--proxy-protocol", *QUICK)
    front = free_port()
    config = haproxy_config(
        front,
        f"127.0.0.1:{server.port} send-proxy-v2 "
        "proxy-v2-options ssl,ssl-cipher,cert-sig,cert-key,authority,crc32c",
        bind=f"ssl crt {bundle}",
    )
    haproxy(config, [front])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(
        connect_from("127.0.0.8", front), server_hostname="mud.example.org"
    ) as client:
        seen = read_addresses(client)
        assert seen["peername"][0] == "127.0.0.8"
        assert seen["tls"] is None  # shardd itself speaks plain telnet to HAProxy
        assert seen["proxy_authority"] == "mud.example.org"
        details = seen["proxy_ssl"]
        assert details["ssl"] is True and details["verify"] == 0
        assert details["version"] == client.version()
        assert details["cipher"] == client.cipher()[0]
        assert details["key_alg"] == "EC256"  # make_cert's key: P-256
        assert "SHA256" in details["sig_alg"].upper()


def test_proxy_header_comes_before_tls_on_the_tls_port(
    serve: Any, haproxy: Start, tmp_path: Path
) -> None:
    """HAProxy passing TLS through to shardd's TLS port: header first, then the handshake."""
    cert = make_cert(tmp_path, "shardd")
    server = serve(
        "--proxy-protocol", *QUICK, "--tls-port", "0",
        "--certfile", str(cert.certfile), "--keyfile", str(cert.keyfile),
    )  # fmt: skip
    tls_port = int(server.wait_for_log(r"TLS on \S+:(\d+)").group(1))
    front = free_port()
    haproxy(haproxy_config(front, f"127.0.0.1:{tls_port} send-proxy-v2"), [front])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(connect_from("127.0.0.9", front)) as client:
        seen = read_addresses(client)
        assert seen["tls"] is True
        assert seen["peername"] == ["127.0.0.9", client.getsockname()[1]]


def test_limits_per_address_count_the_client_behind_the_proxy(serve: Any, haproxy: Start) -> None:
    server = serve(
        "--proxy-protocol", *QUICK, "--workers", "1", "--stats-interval", "0.1",
        "--max-sessions-per-ip", "1", "--max-connect-rate-per-ip", "0",
        address_limits=True,
    )  # fmt: skip
    front = free_port()
    haproxy(haproxy_config(front, f"127.0.0.1:{server.port} send-proxy-v2"), [front])
    with connect_from("127.0.0.5", front) as first, connect_from("127.0.0.6", front) as other:
        # two addresses through one proxy are two clients: both served
        assert read_addresses(first)["peername"][0] == "127.0.0.5"
        assert read_addresses(other)["peername"][0] == "127.0.0.6"
        with connect_from("127.0.0.5", front) as second:
            got = read_until(second, b"\r\n", bytearray())
            assert got.decode().strip() == TOO_MANY_SESSIONS.strip()
            port = second.getsockname()[1]
        server.wait_for_log(rf"127\.0\.0\.5:{port}: refused: 1 session from this address")

        def both_shown() -> Any:
            result = run_shardd("status", "--port", str(server.port), "--json")
            status = json.loads(result.stdout) if result.returncode == 0 else None
            if status and sorted(c["peer"] for c in status["connections"]) == sorted(
                f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in (first, other)
            ):
                return status
            return None

        status = wait_until(both_shown, TIMEOUT, "status showing the clients behind the proxy")
        assert status["supervisor"]["refused"] == {"per_ip": 1}


# ---------------------------------------------------- raw peers, no proxy


def test_first_bytes_after_the_header_are_kept(serve: Any) -> None:
    server = serve("--proxy-protocol", *QUICK)
    for header in (
        b"PROXY TCP4 198.51.100.3 127.0.0.1 5555 23\r\n",
        v2_header(("198.51.100.3", 5555), ("127.0.0.1", 23)),
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
            client.sendall(header + b"hello\r\n")  # one segment: header and telnet together
            got = bytearray()
            seen = read_addresses(client, got)
            assert seen["peername"] == ["198.51.100.3", 5555]
            assert seen["sockname"] == ["127.0.0.1", 23]
            read_until(client, b"You said: hello\r\n", got)


def test_unknown_and_local_keep_the_connection_address(serve: Any) -> None:
    server = serve("--proxy-protocol", *QUICK)
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    for header in (b"PROXY UNKNOWN\r\n", local):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
            client.sendall(header)
            seen = read_addresses(client)
            assert seen["peername"] == list(client.getsockname())


def test_untrusted_peer_is_closed_with_nothing_sent(serve: Any) -> None:
    server = serve("--proxy-protocol", "--trusted-proxies", "192.0.2.0/24,2001:db8::/32", *QUICK)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
        client.sendall(b"PROXY TCP4 203.0.113.1 127.0.0.1 1 23\r\n")
        assert closed_with_nothing(client) == b""
        port = client.getsockname()[1]
    server.wait_for_log(rf"127\.0\.0\.1:{port}: not a trusted proxy, closing")


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\xff\xfb\x18hello", "not a PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "port"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "more than 4096 bytes of TLVs"),
    ],
)
def test_bad_header_is_closed_and_logged(serve: Any, data: bytes, why: str) -> None:
    server = serve("--proxy-protocol", *QUICK)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
        client.sendall(data)
        assert closed_with_nothing(client) == b""
        port = client.getsockname()[1]
    server.wait_for_log(rf"WARNING .*127\.0\.0\.1:{port}: bad PROXY header: .*{why}.*; closing")


def test_header_timeout_closes_and_nothing_is_sent_before_it(serve: Any) -> None:
    """Half a header, then nothing: the server says nothing (no negotiation, no
    banner) and closes after --proxy-header-timeout."""
    server = serve("--proxy-protocol", *QUICK, "--proxy-header-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
        started = time.monotonic()
        client.sendall(b"PROXY TCP4 1.2.3.4 ")
        assert closed_with_nothing(client) == b""
        held = time.monotonic() - started
        port = client.getsockname()[1]
    assert 0.45 <= held < TIMEOUT, held
    server.wait_for_log(rf"127\.0\.0\.1:{port}: no PROXY header within 0\.5s, closing")
    # the server serves on
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
        client.sendall(b"PROXY UNKNOWN\r\n")
        read_addresses(client)


def test_failures_are_counted_in_status(serve: Any) -> None:
    server = serve(
        "--proxy-protocol", *QUICK, "--workers", "1", "--stats-interval", "0.1",
        "--proxy-header-timeout", "0.3", "--trusted-proxies", "127.0.0.1/32",
    )  # fmt: skip
    for source, data in (("127.0.0.2", b""), ("127.0.0.1", b"GET /"), ("127.0.0.1", b"P")):
        with connect_from(source, server.port) as client:
            client.sendall(data)
            assert closed_with_nothing(client) == b""

    def counted() -> Any:
        result = run_shardd("status", "--port", str(server.port), "--json")
        if result.returncode:
            return None
        failures = json.loads(result.stdout)["supervisor"]["proxy_header_failures"]
        return failures == {"untrusted": 1, "bad_header": 1, "timeout": 1}

    wait_until(counted, TIMEOUT, "the three failures in status")
    text = run_shardd("status", "--port", str(server.port)).stdout
    assert "3 closed before a valid PROXY header (1 bad header, 1 timeout, 1 untrusted)" in text


# ------------------------------------------------------------- settings


def test_settings_from_the_file(serve: Any, tmp_path: Path) -> None:
    config = tmp_path / "shardd.toml"
    config.write_text(
        'proxy-protocol = true\ntrusted-proxies = ["127.0.0.2/32"]\nproxy-header-timeout = 2\n'
    )
    server = serve("--config", str(config), *QUICK)
    with connect_from("127.0.0.2", server.port) as client:
        client.sendall(b"PROXY TCP4 198.51.100.4 127.0.0.1 4000 23\r\n")
        assert read_addresses(client)["peername"] == ["198.51.100.4", 4000]
    with connect_from("127.0.0.3", server.port) as client:
        assert closed_with_nothing(client) == b""


@pytest.mark.parametrize(
    "args, line",
    [
        (("--trusted-proxies", "10.0.0.0/33"), "trusted-proxies: not a network in CIDR form"),
        (("--trusted-proxies", "10.0.0.1/8"), "trusted-proxies: not a network in CIDR form"),
        (("--trusted-proxies", ","), "trusted-proxies: must name at least one network"),
        (("--proxy-header-timeout", "0"), "proxy-header-timeout: must be more than 0"),
        (("--proxy-header-timeout", "soon"), "proxy-header-timeout: must be a number"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(args: tuple[str, ...], line: str) -> None:
    result = run_shardd("serve", "--proxy-protocol", "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and line in result.stderr, result.stderr


def test_bad_setting_in_the_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('trusted-proxies = ["not-a-network"]\n')
    result = run_shardd("serve", "--config", str(config), "--port", "0")
    assert result.returncode == 2
    assert f"{config}: trusted-proxies: not a network in CIDR form" in result.stderr


def test_reload_applies_the_proxy_settings(serve: Any, tmp_path: Path) -> None:
    """The PROXY settings need no restart: the workers a reload starts apply them."""
    config = tmp_path / "shardd.toml"
    config.write_text("proxy-protocol = false\n")
    server = serve("--config", str(config), *QUICK, "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
        assert read_addresses(client)["peername"] == list(client.getsockname())
    config.write_text('proxy-protocol = true\ntrusted-proxies = ["127.0.0.1/32"]\n')
    result = run_shardd("reload", "--port", str(server.port), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as client:
        client.sendall(b"PROXY TCP4 198.51.100.5 127.0.0.1 4001 23\r\n")
        assert read_addresses(client)["peername"] == ["198.51.100.5", 4001]
    with connect_from("127.0.0.2", server.port) as client:
        assert closed_with_nothing(client) == b""
