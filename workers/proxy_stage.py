"""Reading a connection's PROXY header: the stage before admission on a proxied server.

With ``--proxy-protocol``, every connection, on the plain port and the TLS
port alike, comes from a proxy (HAProxy, stunnel, a cloud load balancer)
and opens with a PROXY header (:mod:`workers.proxy_protocol`). The stage
(:class:`ProxyHeaderStage`) runs first (``Server.preludes``), before
admission and before TLS, and until it is done the server sends nothing:

- a connection whose TCP peer is not in the trusted networks is closed at
  once (anyone else could claim any address);
- the header must be complete within ``header_timeout`` seconds;
- a malformed header, or one past the bounds, closes the connection;
- otherwise the header's source becomes the connection's peer (its
  destination, its ``sockname``), for admission, the limits per address,
  log lines, ``status`` and the shell's ``get_extra_info``; its TLVs are
  there too (``proxy_tlvs``, ``proxy_ssl``, ...). ``PROXY UNKNOWN`` and
  version 2 ``LOCAL`` (health checks) keep the connection's own addresses.

Each failure is counted (``proxy_untrusted``, ``proxy_bad_header``,
``proxy_timeout``) and logged naming the peer and what was wrong, a few
lines per address (workers/log_limits.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workers.log_limits import PROTOCOL_WARNINGS
from workers.proxy_protocol import MAX_TLV_BYTES, ProxyHeader, ProxyHeaderError, ProxyHeaderParser

if TYPE_CHECKING:
    from workers.arrival import Arrival

log = logging.getLogger("shardd.proxy")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Who may send PROXY headers unless told otherwise: this host only.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
#: How long a proxy has to send the whole header (the specification: at
#: least 3 s, to cover a TCP retransmission).
DEFAULT_HEADER_TIMEOUT = 5.0


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Networks from CIDR strings (a bare address is a /32 or /128); ValueError
    names the first that is not one."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"not a network in CIDR form: {exc}") from None
    return tuple(networks)


@dataclass(frozen=True)
class ProxySettings:
    """How a server reads PROXY headers."""

    trusted: tuple[Network, ...] = parse_networks(DEFAULT_TRUSTED_PROXIES)
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_tlv_bytes: int = MAX_TLV_BYTES

    def trusts(self, host: str) -> bool:
        """Whether a TCP peer at ``host`` may send a PROXY header."""
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in network for network in self.trusted)


#: Peers whose trust the stage remembers; past it, it forgets them all and starts over.
TRUST_CACHE_SIZE = 1024


class ProxyHeaderStage:
    """The stage that reads a PROXY header and makes its addresses the connection's."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        # the same few proxies connect again and again: parsing their address
        # each time would cost more than reading the header
        self._trust: dict[str, bool] = {}

    def _trusts(self, host: str) -> bool:
        trust = self._trust.get(host)
        if trust is None:
            if len(self._trust) >= TRUST_CACHE_SIZE:
                self._trust.clear()
            trust = self._trust[host] = self.settings.trusts(host)
        return trust

    async def __call__(self, arrival: Arrival) -> None:
        counters = arrival.server.sessions.counters
        if not self._trusts(arrival.host):
            counters["proxy_untrusted"] += 1
            self._warn(arrival, "not a trusted proxy, closing")
            arrival.drop()
            return
        parser = ProxyHeaderParser(self.settings.max_tlv_bytes)
        try:
            async with asyncio.timeout(self.settings.header_timeout):
                header = await _read_header(arrival, parser)
        except TimeoutError:
            counters["proxy_timeout"] += 1
            self._warn(
                arrival, f"no PROXY header within {self.settings.header_timeout:g}s, closing"
            )
            arrival.drop()
            return
        except ProxyHeaderError as exc:
            counters["proxy_bad_header"] += 1
            self._warn(arrival, f"bad PROXY header: {exc}; closing")
            arrival.drop()
            return
        if header is None:
            # a proxy's health check that connects and leaves (HAProxy's
            # plain "check"): no header, nothing wrong
            log.debug("%s: closed before its PROXY header", arrival.peer)
            arrival.drop()
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s", arrival.peer, _describe(header))
        arrival.unread(parser.rest)
        arrival.relayed(header.source, header.destination, header.extra())

    def _warn(self, arrival: Arrival, what: str) -> None:
        PROTOCOL_WARNINGS.warning(log, arrival.host, "%s: %s", arrival.peer, what)


async def _read_header(arrival: Arrival, parser: ProxyHeaderParser) -> ProxyHeader | None:
    """The header, once complete; None if the connection ends before it."""
    while True:
        data = await arrival.read()
        if not data:
            if parser.pending:
                raise ProxyHeaderError(f"connection ended {parser.pending} bytes into the header")
            return None
        header = parser.feed(data)
        if header is not None:
            return header


def _describe(header: ProxyHeader) -> str:
    if header.source is None:
        return f"PROXY v{header.version} header keeps the connection's own addresses"
    host, port = header.source[:2]
    return f"PROXY v{header.version} header: relays {host}:{port}"
