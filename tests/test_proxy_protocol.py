"""The PROXY header parser (workers/proxy_protocol.py), fed bytes directly.

A version 2 encoder lives here, written from the specification, so that
round trips check the parser against an independent writer of the format.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.proxy_protocol import (
    MAX_TLV_BYTES,
    MAX_V1_HEADER,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
    crc32c,
)

# ------------------------------------------------------------------ encoder


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def encode_v2(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    tlvs: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    *,
    local: bool = False,
    with_crc: bool = False,
    family_byte: int | None = None,
) -> bytes:
    """A version 2 header: PROXY (or LOCAL) over TCP4 or TCP6, or UNSPEC
    without addresses; ``with_crc`` appends a correct CRC32C TLV."""
    if source is None or destination is None:
        fam, addresses = 0x00, b""
    else:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        fam = 0x11 if src.version == 4 else 0x21
        addresses = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    if family_byte is not None:
        fam = family_byte
    body = addresses + b"".join(tlv(kind, value) for kind, value in tlvs)
    crc_at = -1
    if with_crc:
        crc_at = 16 + len(body) + 3
        body += tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")
    header = V2_SIGNATURE + bytes([0x20 if local else 0x21, fam]) + struct.pack("!H", len(body))
    header += body
    if with_crc:
        checksum = crc32c(header).to_bytes(4, "big")
        header = header[:crc_at] + checksum + header[crc_at + 4 :]
    return header


def ssl_tlv(client: int, verify: int, subs: list[tuple[int, bytes]]) -> bytes:
    return struct.pack("!BI", client, verify) + b"".join(tlv(k, v) for k, v in subs)


def canonical(host: str) -> str:
    """An address as the socket API writes it (``::ffff:1.2.3.4``, not ``::ffff:102:304``)."""
    address = ipaddress.ip_address(host)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return socket.inet_ntop(family, address.packed)


def parse(data: bytes) -> tuple[ProxyHeader | None, bytes]:
    parser = ProxyHeaderParser()
    header = parser.feed(data)
    return header, parser.rest


def parse_in_pieces(data: bytes, cuts: list[int]) -> tuple[Any, bytes]:
    """Feed ``data`` cut at ``cuts``: the header and the rest, or the error's type."""
    parser = ProxyHeaderParser()
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    header = None
    try:
        for piece in pieces:
            if header is None:
                header = parser.feed(piece)
            else:  # once complete, what follows belongs to the connection
                parser.rest += piece
    except ProxyHeaderError:
        return ProxyHeaderError, b""
    return header, parser.rest


# -------------------------------------------------------------- strategies

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
tlv_types = st.integers(0, 255).filter(lambda t: t not in (PP2_TYPE_CRC32C, PP2_TYPE_NOOP))


@st.composite
def v2_headers(draw: st.DrawFn) -> tuple[bytes, tuple[Any, ...] | None, dict[int, bytes]]:
    hosts = draw(
        st.one_of(ipv4, ipv6).flatmap(
            lambda h: st.tuples(st.just(h), ipv4 if ":" not in h else ipv6)
        )
    )
    source = (hosts[0], draw(ports))
    destination = (hosts[1], draw(ports))
    raw = draw(st.lists(st.tuples(tlv_types, st.binary(max_size=40)), max_size=5))
    # an SSL TLV must be well formed to be accepted: draw only valid ones for it
    tlvs = [(k, v) for k, v in raw if k != PP2_TYPE_SSL]
    expected: dict[int, bytes] = {}
    for kind, value in tlvs:
        expected.setdefault(kind, value)
    data = encode_v2(source, destination, tlvs, with_crc=draw(st.booleans()))
    return data, source, expected


# ---------------------------------------------------------------- version 1


def test_v1_tcp4_and_what_follows() -> None:
    header, rest = parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 23\r\nhello\r\n")
    assert header is not None
    assert (header.version, header.source, header.destination) == (
        1,
        ("192.0.2.1", 56324),
        ("198.51.100.7", 23),
    )
    assert rest == b"hello\r\n"
    assert header.extra() == {"proxy_version": 1}


def test_ipv4_mapped_addresses_read_as_sockets_write_them() -> None:
    line = b"PROXY TCP6 ::ffff:102:304 ::1 1 2\r\n"
    v2 = encode_v2(("::ffff:1.2.3.4", 1), ("::1", 2))
    for data in (line, v2):
        header, _ = parse(data)
        assert header is not None and header.source == ("::ffff:1.2.3.4", 1, 0, 0)


def test_v1_tcp6_gives_a_socket_shaped_address() -> None:
    header, _ = parse(b"PROXY TCP6 2001:db8::1 2001:DB8::2 1 65535\r\n")
    assert header is not None
    assert header.source == ("2001:db8::1", 1, 0, 0)
    assert header.destination == ("2001:db8::2", 65535, 0, 0)


@pytest.mark.parametrize(
    "line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n"]
)
def test_v1_unknown_keeps_the_connection_addresses(line: bytes) -> None:
    header, rest = parse(line + b"x")
    assert header is not None and header.local and header.destination is None
    assert rest == b"x"


def test_v1_worst_case_length_is_accepted() -> None:
    six = "ffff:" * 7 + "ffff"
    line = f"PROXY UNKNOWN {six} {six} 65535 65535\r\n".encode()
    assert len(line) == MAX_V1_HEADER
    assert parse(line)[0] is not None


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "lone CR or LF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n", "lone CR or LF"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "IPv4 address"),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "IPv4 address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "IPv4 address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6 address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "fields"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
        (b"PROXY UNKNOWNX\r\n", "protocol"),
        (b"PROXYTCP4\r\n", "not a PROXY header"),
        (b"GET / HTTP/1.0\r\n", "not a PROXY header"),
        (b"\xff\xfd\x18", "not a PROXY header"),
        (b"PROXY " + b"A" * 120, "longer than 107"),
    ],
)
def test_v1_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse(line)


def test_v1_needs_more_until_crlf() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") is None
    assert parser.pending > 0
    header = parser.feed(b"\n")
    assert header is not None and header.source == ("1.2.3.4", 1)


def test_telnet_first_is_refused_at_once() -> None:
    """A client that speaks telnet to a proxied port is told off on its first byte."""
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"\xff")
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(b"P\x00")


# ---------------------------------------------------------------- version 2


def test_v2_tcp4_with_tlvs() -> None:
    ssl = ssl_tlv(
        0x07, 0, [(0x21, b"TLSv1.3"), (0x23, b"TLS_AES_256_GCM_SHA384"), (0x22, b"alice")]
    )
    data = encode_v2(
        ("203.0.113.9", 40000),
        ("10.0.0.1", 23),
        [
            (PP2_TYPE_ALPN, b"telnet"),
            (PP2_TYPE_AUTHORITY, b"mud.example.org"),
            (PP2_TYPE_UNIQUE_ID, b"abc-123"),
            (PP2_TYPE_NETNS, b"blue"),
            (PP2_TYPE_NOOP, b"\0\0"),
            (PP2_TYPE_SSL, ssl),
            (0xE0, b"custom"),
        ],
        with_crc=True,
    )
    header, rest = parse(data + b"\xff\xfb\x18")
    assert header is not None and rest == b"\xff\xfb\x18"
    assert header.source == ("203.0.113.9", 40000)
    assert header.destination == ("10.0.0.1", 23)
    extra = header.extra()
    assert extra["proxy_version"] == 2
    assert extra["proxy_alpn"] == b"telnet"
    assert extra["proxy_authority"] == "mud.example.org"
    assert extra["proxy_unique_id"] == b"abc-123"
    assert extra["proxy_netns"] == "blue"
    assert extra["proxy_tlvs"][0xE0] == b"custom"
    assert PP2_TYPE_NOOP not in extra["proxy_tlvs"]
    assert extra["proxy_ssl"] == {
        "client": 7,
        "ssl": True,
        "cert_conn": True,
        "cert_sess": True,
        "verify": 0,
        "version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "cn": "alice",
    }


def test_v2_tcp6() -> None:
    header, _ = parse(encode_v2(("2001:db8::5", 1), ("::1", 2)))
    assert header is not None
    assert header.source == ("2001:db8::5", 1, 0, 0) and header.destination == ("::1", 2, 0, 0)


def test_v2_local_keeps_the_connection_addresses() -> None:
    """HAProxy's health checks with check-send-proxy: LOCAL, no addresses."""
    header, rest = parse(encode_v2(None, None, local=True) + b"after")
    assert header is not None and header.local and rest == b"after"
    # LOCAL ignores the family, even one whose addresses are not there
    header, _ = parse(encode_v2(None, None, local=True, family_byte=0x11))
    assert header is not None and header.local


@pytest.mark.parametrize("family_byte", [0x00, 0x12, 0x22, 0x31, 0x32, 0x10, 0x20])
def test_v2_other_families_fall_back_to_the_connection_addresses(family_byte: int) -> None:
    sizes = {0: 0, 1: 12, 2: 36, 3: 216}
    body = b"\0" * sizes[family_byte >> 4]
    data = V2_SIGNATURE + bytes([0x21, family_byte]) + struct.pack("!H", len(body)) + body
    header, _ = parse(data)
    assert header is not None and header.local


def test_v2_crc_mismatch_is_refused() -> None:
    data = bytearray(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), with_crc=True))
    data[-1] ^= 1
    with pytest.raises(ProxyHeaderError, match="CRC32C"):
        parse(bytes(data))


def test_v2_tlvs_past_the_bound_are_refused_from_the_first_16_bytes() -> None:
    big = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), [(0xE0, b"x" * MAX_TLV_BYTES)])
    with pytest.raises(ProxyHeaderError, match="more than 4096 bytes of TLVs"):
        ProxyHeaderParser().feed(big[:16])
    at_bound = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), [(0xE0, b"x" * (MAX_TLV_BYTES - 3))])
    assert parse(at_bound)[0] is not None


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[:12] + b"\x11" + d[13:], "version 1"),
        (lambda d: d[:12] + b"\x22" + d[13:], "command"),
        (lambda d: d[:13] + b"\x41" + d[14:], "family"),
        (lambda d: d[:13] + b"\x13" + d[14:], "family"),
        (lambda d: d[:14] + b"\x00\x04" + d[16:], "address block"),
        (lambda d: d[:15] + bytes([d[15] + 2]) + d[16:] + b"\xe0\x00", "cut short"),
        (lambda d: d[:15] + bytes([d[15] + 3]) + d[16:] + b"\xe0\x00\x09", "says 9 bytes"),
        (lambda d: b"\r\n\r\n\x00\r\nQUIT\r", "not a PROXY header"),
    ],
)
def test_v2_bad_headers(mutate: Any, reason: str) -> None:
    data = mutate(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2)))
    with pytest.raises(ProxyHeaderError, match=reason):
        parse(data)


@pytest.mark.parametrize(
    "value",
    [b"\x01\0\0\0", ssl_tlv(1, 0, [])[:4] + b"", ssl_tlv(1, 0, [(0x21, b"TLSv1.3")])[:-1]],
)
def test_v2_malformed_ssl_tlv_is_refused(value: bytes) -> None:
    with pytest.raises(ProxyHeaderError, match="SSL"):
        parse(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), [(PP2_TYPE_SSL, value)]))


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC catalogue's check value


def test_feeding_after_the_header_is_a_caller_bug() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") is not None
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


# --------------------------------------------------------------- properties


@settings(deadline=None, max_examples=300)
@given(v2_headers(), st.binary(max_size=20))
def test_v2_round_trip(case: Any, after: bytes) -> None:
    data, source, tlvs = case
    header, rest = parse(data + after)
    assert header is not None
    assert header.source is not None and header.source[:2] == (canonical(source[0]), source[1])
    assert {k: v for k, v in header.tlvs.items() if k != PP2_TYPE_CRC32C} == tlvs
    assert header.size == len(data)
    assert rest == after


@settings(deadline=None, max_examples=300)
@given(st.one_of(ipv4.map(lambda h: (b"TCP4", h)), ipv6.map(lambda h: (b"TCP6", h))), ports, ports)
def test_v1_round_trip(proto_host: tuple[bytes, str], sport: int, dport: int) -> None:
    proto, host = proto_host
    line = b"PROXY %s %s %s %d %d\r\n" % (proto, host.encode(), host.encode(), sport, dport)
    header, rest = parse(line + b"\xff\xfd\x18")
    assert header is not None and header.source is not None
    assert header.source[:2] == (canonical(host), sport)
    assert rest == b"\xff\xfd\x18"


def _soup() -> st.SearchStrategy[bytes]:
    """Byte soup, and soup that starts like a header so the parser goes deeper."""
    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=120).map(lambda b: b"PROXY " + b),
        st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b),
        st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b"\x21" + b),
        # a valid start and a length that fits: the TLVs are soup
        st.binary(max_size=200).map(
            lambda b: V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 12 + len(b)) + bytes(12) + b
        ),
        # a v1 line of the right characters in the wrong order
        st.text(alphabet="0123456789abcdefABCDEF.: ", max_size=90).flatmap(
            lambda t: st.sampled_from([b"TCP4 ", b"TCP6 "]).map(
                lambda proto: b"PROXY " + proto + t.encode() + b"\r\n"
            )
        ),
    )


@settings(deadline=None, max_examples=1000)
@given(_soup())
def test_any_bytes_raise_only_proxy_header_error(data: bytes) -> None:
    parser = ProxyHeaderParser()
    try:
        header = parser.feed(data)
    except ProxyHeaderError as exc:
        assert "\n" not in str(exc)  # one line for the log
        return
    if header is not None:
        header.extra()  # everything a session may ask for is decodable
        assert header.size + len(parser.rest) == len(data)
    else:
        assert parser.pending == len(data)


@settings(deadline=None, max_examples=300)
@given(
    st.one_of(
        v2_headers().map(lambda case: case[0]),
        _soup(),
        st.just(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ),
    st.binary(max_size=10),
    st.data(),
)
def test_split_anywhere_gives_the_same_result(
    data: bytes, after: bytes, draw: st.DataObject
) -> None:
    whole = data + after
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(whole)), max_size=6)))
    assert parse_in_pieces(whole, cuts) == parse_in_pieces(whole, [])


def test_split_at_every_position() -> None:
    data = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), [(PP2_TYPE_ALPN, b"x")], with_crc=True)
    line = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    for whole in (data + b"telnet", line + b"telnet"):
        expected = parse_in_pieces(whole, [])
        assert expected[0] is not None and expected[1] == b"telnet"
        for at in range(1, len(whole)):
            assert parse_in_pieces(whole, [at]) == expected, at
