"""The PROXY protocol (HAProxy's, versions 1 and 2), receiver side, sans-I/O.

A proxy in front of the server (HAProxy ``send-proxy``/``send-proxy-v2``,
stunnel, a cloud load balancer) opens each connection with a header that
says whose connection it relays: the client's address and port, the address
it reached, and (version 2) TLVs such as the TLS details of a connection
the proxy decrypted. :class:`ProxyHeaderParser` is fed the first bytes of a
connection and returns the :class:`ProxyHeader` once it is complete, or
raises :class:`ProxyHeaderError`, a one-line reason, as soon as the bytes
cannot be the start of a valid header. No I/O happens here; the stage that
reads a connection's header is :mod:`workers.proxy_stage`.

Bounds (what a peer can make the parser hold): a version 1 line is at most
107 bytes (the specification's own worst case); a version 2 header is 16
bytes, the address block (at most 216 bytes, two ``AF_UNIX`` paths) and
at most :data:`MAX_TLV_BYTES` of TLVs: a longer one is refused as soon as
its 16 first bytes have arrived, before the rest is read.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The longest version 1 line, CRLF included ("PROXY UNKNOWN" and two IPv6 addresses).
MAX_V1_HEADER = 107
#: The most TLV bytes a version 2 header may carry here. The format allows
#: 65535 less the addresses; HAProxy's largest (SSL details with a client
#: certificate's CN, a 128-byte unique id, ALPN, SNI) stay well under 1 KiB.
MAX_TLV_BYTES = 4096

# Version 2: the 13th byte is version (high nibble, 2) and command (low).
_LOCAL, _PROXY = 0x0, 0x1
# The 14th byte is address family (high nibble) and transport (low).
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1
_ADDRESS_BYTES = {_UNSPEC: 0, _INET: 12, _INET6: 36, _UNIX: 216}

# TLV types (proxy-protocol.txt, 2.2)
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30
# the SSL TLV's client bits
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

_SSL_SUBTYPES = {
    PP2_SUBTYPE_SSL_VERSION: "version",
    PP2_SUBTYPE_SSL_CN: "cn",
    PP2_SUBTYPE_SSL_CIPHER: "cipher",
    PP2_SUBTYPE_SSL_SIG_ALG: "sig_alg",
    PP2_SUBTYPE_SSL_KEY_ALG: "key_alg",
}
# decimal, no leading zero (the specification forbids them: octal confusion)
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V1_IPV4 = re.compile(rb"[0-9.]{7,15}")
_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:.]{2,45}")

Address = tuple[Any, ...]


class ProxyHeaderError(ValueError):
    """Bytes that are not a valid PROXY header; ``str()`` is a one-line reason."""


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B), as the CRC32C TLV carries it."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True)
class ProxyHeader:
    """A complete PROXY header.

    ``source`` and ``destination`` are the relayed connection's addresses in
    the shape ``getpeername()`` gives (``(host, port)``, IPv6
    ``(host, port, 0, 0)``), or None when the header says to keep the
    connection's own: version 1 ``UNKNOWN``, version 2 ``LOCAL`` (a proxy's
    health check), and families other than TCP over IPv4 or IPv6, which the
    specification lets a receiver treat alike. ``tlvs``: version 2's TLVs by
    type (the first of a type given twice), NOOP left out.
    """

    version: int
    source: Address | None
    destination: Address | None
    tlvs: Mapping[int, bytes] = field(default_factory=dict)
    #: how many bytes the header took on the wire
    size: int = 0

    @property
    def local(self) -> bool:
        """Whether the connection keeps its own addresses."""
        return self.source is None

    def extra(self) -> dict[str, Any]:
        """What a session shows through ``get_extra_info`` (beside the addresses).

        ``proxy_version`` always; ``proxy_tlvs`` (type -> bytes) with version 2,
        and the registered TLVs by name: ``proxy_alpn`` (bytes),
        ``proxy_authority`` (str, the client's SNI when the proxy decrypted TLS),
        ``proxy_unique_id`` (bytes), ``proxy_netns`` (str), ``proxy_ssl`` (a dict,
        see :func:`ssl_details`).
        """
        info: dict[str, Any] = {"proxy_version": self.version}
        if self.version != 2:
            return info
        tlvs = self.tlvs
        info["proxy_tlvs"] = dict(tlvs)
        if PP2_TYPE_ALPN in tlvs:
            info["proxy_alpn"] = tlvs[PP2_TYPE_ALPN]
        if PP2_TYPE_AUTHORITY in tlvs:
            info["proxy_authority"] = tlvs[PP2_TYPE_AUTHORITY].decode("utf-8", "replace")
        if PP2_TYPE_UNIQUE_ID in tlvs:
            info["proxy_unique_id"] = tlvs[PP2_TYPE_UNIQUE_ID]
        if PP2_TYPE_NETNS in tlvs:
            info["proxy_netns"] = tlvs[PP2_TYPE_NETNS].decode("ascii", "replace")
        if PP2_TYPE_SSL in tlvs:
            info["proxy_ssl"] = ssl_details(tlvs[PP2_TYPE_SSL])
        return info


def ssl_details(value: bytes) -> dict[str, Any]:
    """The SSL TLV as a dict: ``client`` (its bits), ``ssl`` (the client spoke
    TLS), ``cert_conn``, ``cert_sess`` (it showed a certificate on this
    connection, in this TLS session), ``verify`` (0: that certificate was
    verified), and, as sent, ``version``, ``cipher``, ``sig_alg``, ``key_alg``,
    ``cn``. ProxyHeaderError if it is malformed (the parser checks it first)."""
    if len(value) < 5:
        raise ProxyHeaderError(f"SSL TLV of {len(value)} bytes, shorter than its 5 fixed ones")
    client, verify = struct.unpack_from("!BI", value)
    details: dict[str, Any] = {
        "client": client,
        "ssl": bool(client & PP2_CLIENT_SSL),
        "cert_conn": bool(client & PP2_CLIENT_CERT_CONN),
        "cert_sess": bool(client & PP2_CLIENT_CERT_SESS),
        "verify": verify,
    }
    for kind, sub in _tlvs(value, 5, "SSL sub-TLV"):
        name = _SSL_SUBTYPES.get(kind)
        if name is not None and name not in details:
            details[name] = sub.decode("utf-8", "replace")
    return details


def _tlvs(data: bytes, start: int, what: str = "TLV") -> list[tuple[int, bytes]]:
    """Type-length-value triples from ``data[start:]``, which they must fill exactly."""
    found = []
    at = start
    end = len(data)
    while at < end:
        if end - at < 3:
            raise ProxyHeaderError(f"{what} cut short: {end - at} bytes left, a TLV takes 3")
        kind, length = struct.unpack_from("!BH", data, at)
        at += 3
        if at + length > end:
            raise ProxyHeaderError(
                f"{what} of type 0x{kind:02x} says {length} bytes, {end - at} are left"
            )
        found.append((kind, data[at : at + length]))
        at += length
    return found


class ProxyHeaderParser:
    """Fed a connection's first bytes, returns its PROXY header once complete.

    :meth:`feed` returns None while more bytes are needed, the
    :class:`ProxyHeader` once the header is complete (then :attr:`rest` holds
    the bytes that came after it, which belong to the relayed connection), or
    raises :class:`ProxyHeaderError` as soon as what it has cannot begin a
    valid header. Both versions are accepted: the first bytes tell which.
    """

    def __init__(self, max_tlv_bytes: int = MAX_TLV_BYTES) -> None:
        self.max_tlv_bytes = max_tlv_bytes
        self._buffer = bytearray()
        self.header: ProxyHeader | None = None
        #: what followed the header, once it is complete
        self.rest = b""

    @property
    def pending(self) -> int:
        """How many bytes of an incomplete header it holds."""
        return len(self._buffer)

    def feed(self, data: bytes) -> ProxyHeader | None:
        if self.header is not None:
            raise RuntimeError("the header is complete: what follows is the connection's")
        self._buffer += data
        buffer = self._buffer
        if buffer[:1] == V2_SIGNATURE[:1]:
            header = self._v2(buffer)
        elif buffer[:1] == V1_PREFIX[:1]:
            header = self._v1(buffer)
        elif buffer:
            raise ProxyHeaderError(f"not a PROXY header: starts with {bytes(buffer[:16])!r}")
        else:
            header = None
        if header is not None:
            self.header = header
            self.rest = bytes(buffer[header.size :])
            self._buffer = bytearray()
        return header

    # -------------------------------------------------------------- version 1

    def _v1(self, buffer: bytearray) -> ProxyHeader | None:
        head = bytes(buffer[: len(V1_PREFIX)])
        if not V1_PREFIX.startswith(head):
            raise ProxyHeaderError(f"not a PROXY header: starts with {bytes(buffer[:16])!r}")
        end = buffer.find(b"\r\n", 0, MAX_V1_HEADER)
        if end < 0:
            # a lone CR or LF cannot end the line, and nothing else may hold one
            # (a CR that is the last byte so far may still be followed by LF)
            cr = buffer.find(b"\r", 0, MAX_V1_HEADER)
            if b"\n" in buffer[:MAX_V1_HEADER] or 0 <= cr < len(buffer) - 1:
                raise ProxyHeaderError("version 1 line with a lone CR or LF")
            if len(buffer) >= MAX_V1_HEADER:
                raise ProxyHeaderError(
                    f"version 1 line longer than {MAX_V1_HEADER} bytes with no CRLF"
                )
            return None
        line = bytes(buffer[len(V1_PREFIX) : end])
        if b"\r" in line or b"\n" in line:
            raise ProxyHeaderError("version 1 line with a lone CR or LF")
        size = end + 2
        proto, _, addresses = line.partition(b" ")
        if proto == b"UNKNOWN":  # anything may follow, and is ignored
            return ProxyHeader(1, None, None, size=size)
        if proto not in (b"TCP4", b"TCP6"):
            raise ProxyHeaderError(f"version 1 protocol {proto[:16]!r}, not TCP4, TCP6 or UNKNOWN")
        parts = addresses.split(b" ")
        if len(parts) != 4:
            raise ProxyHeaderError(
                f"version 1 {proto.decode()} line with {len(parts)} fields after it, not 4"
            )
        six = proto == b"TCP6"
        source = _v1_address(parts[0], six)
        destination = _v1_address(parts[1], six)
        source_port = _v1_port(parts[2])
        destination_port = _v1_port(parts[3])
        return ProxyHeader(
            1, _address(source, source_port), _address(destination, destination_port), size=size
        )

    # -------------------------------------------------------------- version 2

    def _v2(self, buffer: bytearray) -> ProxyHeader | None:
        head = bytes(buffer[:12])
        if not V2_SIGNATURE.startswith(head):
            raise ProxyHeaderError(f"not a PROXY header: starts with {bytes(buffer[:16])!r}")
        if len(buffer) > 12 and buffer[12] >> 4 != 2:
            raise ProxyHeaderError(f"version 2 signature with version {buffer[12] >> 4}")
        if len(buffer) > 12 and buffer[12] & 0xF not in (_LOCAL, _PROXY):
            raise ProxyHeaderError(f"version 2 command 0x{buffer[12] & 0xF:x}, not LOCAL or PROXY")
        if len(buffer) > 13:
            family, transport = buffer[13] >> 4, buffer[13] & 0xF
            if family not in _ADDRESS_BYTES or transport > 2:
                raise ProxyHeaderError(f"version 2 family and protocol 0x{buffer[13]:02x}")
        if len(buffer) < 16:
            return None
        command = buffer[12] & 0xF
        family, transport = buffer[13] >> 4, buffer[13] & 0xF
        (length,) = struct.unpack_from("!H", buffer, 14)
        address_bytes = _ADDRESS_BYTES[family]
        if length > address_bytes + self.max_tlv_bytes:
            raise ProxyHeaderError(
                f"version 2 header of {16 + length} bytes: more than "
                f"{self.max_tlv_bytes} bytes of TLVs"
            )
        if length < address_bytes and command == _PROXY:
            raise ProxyHeaderError(
                f"version 2 address block of {length} bytes, its family needs {address_bytes}"
            )
        size = 16 + length
        if len(buffer) < size:
            return None
        header = bytes(buffer[:size])
        if length < address_bytes:  # LOCAL: the address block is ignored, and holds no TLVs
            return ProxyHeader(2, None, None, size=size)
        tlvs = self._v2_tlvs(header, 16 + address_bytes)
        source = destination = None
        if command == _PROXY and transport == _STREAM and family in (_INET, _INET6):
            source, destination = _v2_addresses(header, family)
        return ProxyHeader(2, source, destination, tlvs, size)

    def _v2_tlvs(self, header: bytes, start: int) -> dict[int, bytes]:
        tlvs: dict[int, bytes] = {}
        crc_at = -1
        at = start
        for kind, value in _tlvs(header, start):
            if kind == PP2_TYPE_CRC32C:
                if len(value) != 4:
                    raise ProxyHeaderError(f"CRC32C TLV of {len(value)} bytes, not 4")
                if crc_at < 0:
                    crc_at = at + 3
            elif kind == PP2_TYPE_SSL:
                ssl_details(value)  # well-formed, or the header is not
            at += 3 + len(value)
            if kind != PP2_TYPE_NOOP:
                tlvs.setdefault(kind, value)
        if crc_at >= 0:
            sent = int.from_bytes(header[crc_at : crc_at + 4], "big")
            blanked = header[:crc_at] + b"\0\0\0\0" + header[crc_at + 4 :]
            if crc32c(blanked) != sent:
                raise ProxyHeaderError("CRC32C TLV does not match the header")
        return tlvs


def _v1_address(text: bytes, six: bool) -> str:
    pattern = _V1_IPV6 if six else _V1_IPV4
    try:
        if not pattern.fullmatch(text):
            raise ValueError
        address = (ipaddress.IPv6Address if six else ipaddress.IPv4Address)(text.decode())
    except ValueError:
        family = "IPv6" if six else "IPv4"
        raise ProxyHeaderError(f"version 1 {family} address {text[:48]!r} is not one") from None
    # the text a socket's getpeername() would give, as version 2's addresses have
    return socket.inet_ntop(socket.AF_INET6 if six else socket.AF_INET, address.packed)


def _v1_port(text: bytes) -> int:
    if not _V1_PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyHeaderError(f"version 1 port {text[:8]!r} is not 0 to 65535 without leading 0")
    return int(text)


def _v2_addresses(header: bytes, family: int) -> tuple[Address, Address]:
    # inet_ntop gives the canonical text, as ipaddress does, at a tenth of its cost
    if family == _INET:
        src, dst, src_port, dst_port = struct.unpack_from("!4s4sHH", header, 16)
        kind = socket.AF_INET
    else:
        src, dst, src_port, dst_port = struct.unpack_from("!16s16sHH", header, 16)
        kind = socket.AF_INET6
    return (
        _address(socket.inet_ntop(kind, src), src_port),
        _address(socket.inet_ntop(kind, dst), dst_port),
    )


def _address(host: str, port: int) -> Address:
    # the shape a socket's getpeername() has, so that code reading it by index works
    return (host, port, 0, 0) if ":" in host else (host, port)
