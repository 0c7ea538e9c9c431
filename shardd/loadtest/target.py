"""Where sessions go and come from, and how a connection fails.

Targets and local (source) addresses are loopback only: the load-test tool
refuses anything else before it opens a socket. Failures are counted by
kind, the strings below, in every scenario's result.

With ``--tls`` every session speaks TLS (telnets). This is a test tool: it
does not verify the server's certificate, so a self-signed test certificate
serves, and the figures measure the server's TLS work, not a PKI.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil

# failure kinds, as counted in every result's ``failures``
REFUSED = "refused"
RESET = "reset"
TIMEOUT = "timeout"
NEGOTIATION_TIMEOUT = "negotiation timeout"
SHORT_ECHO = "short echo"
CORRUPT_ECHO = "corrupt echo"
CLOSED = "closed by server"
TLS_FAILED = "tls handshake failed"

# a close flushes what we wrote; a peer that stops reading must not hold it open
CLOSE_GRACE = 2.0

# Linux: let connect() pick the port of a bound socket, so the 4-tuple, not
# the source address alone, must be unique and TIME_WAIT ports are reused
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_P = TypeVar("_P", bound=asyncio.BaseProtocol)


def check_loopback(host: str) -> None:
    """Refuse any target outside 127.0.0.0/8 and ::1."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
            raise ValueError(
                f"{host} ({address}) is not a loopback address; "
                "the load-test tool only targets this machine"
            )


@dataclass(frozen=True)
class Target:
    """A loopback server address, resolved once."""

    host: str
    port: int
    family: int
    address: tuple[Any, ...]
    #: sessions speak TLS with this (see the module's note: no verification)
    tls: ssl.SSLContext | None = None

    @classmethod
    def resolve(cls, host: str, port: int, *, tls: bool = False) -> Target:
        """ValueError unless ``host`` is loopback and ``port`` a TCP port."""
        if not 0 < port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {port}")
        check_loopback(host)
        family, _type, _proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        return cls(host, port, family, address, client_tls_context() if tls else None)

    def source(self, source: str) -> str:
        """``source`` as a local address for this target; ValueError if it cannot be."""
        check_loopback(source)
        try:
            infos = socket.getaddrinfo(source, None, family=self.family, type=socket.SOCK_STREAM)
        except OSError:
            raise ValueError(
                f"{source} is not an address of the target's family ({self.address[0]})"
            ) from None
        return str(infos[0][4][0])

    def __str__(self) -> str:
        host = self.address[0]
        where = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        return f"{where} (TLS)" if self.tls is not None else where


def client_tls_context() -> ssl.SSLContext:
    """TLS for a test tool: any certificate will do, the server's is not verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def open_session(
    factory: Callable[[], _P], target: Target, source: str | None, timeout: float
) -> tuple[asyncio.Transport, _P]:
    """A connected transport and its protocol, through the TLS handshake if the
    target speaks TLS; OSError (TimeoutError, ssl.SSLError included) if not."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            try:
                sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
            sock.bind((source, 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, target.address)
            if target.tls is not None:
                return await loop.create_connection(
                    factory, sock=sock, ssl=target.tls, server_hostname=target.host
                )
        return await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise


def connect_failure(exc: BaseException) -> str:
    """The failure kind of a connection attempt that raised ``exc``."""
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, ssl.SSLError):
        return TLS_FAILED
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return RESET
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}")
    return type(exc).__name__


def lost_failure(exc: BaseException | None) -> str:
    """The failure kind of a connection the server ended (``exc`` None: a clean close)."""
    return CLOSED if exc is None else connect_failure(exc)


def server_rss(pids: Iterable[int]) -> int:
    """Resident memory of these processes, summed; a process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def rotation(sources: Sequence[str], share: tuple[int, int]) -> Callable[[], str | None]:
    """Local addresses round-robin over every process's sockets: this process's turns."""
    if not sources:
        return lambda: None
    index, count = share
    turns = [
        sources[(index + k * count) % len(sources)]
        for k in range(len(sources) // math.gcd(len(sources), count))
    ]
    position = -1

    def pick() -> str:
        nonlocal position
        position = (position + 1) % len(turns)
        return turns[position]

    return pick
