"""Listening sockets of the shards, and what the kernel tells about them."""

from __future__ import annotations

import errno
import resource
import socket
import struct

# struct tcp_info (linux/tcp.h): 8 one-byte fields, then u32 rto, ato, snd_mss,
# rcv_mss, unacked, sacked. On a listening socket unacked is the accept-queue
# length and sacked the backlog.
_TCPI_UNACKED = struct.Struct("=II")
_TCPI_UNACKED_OFFSET = 8 + 4 * 4
_TCP_INFO_SIZE = 104


def bind(host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096) -> socket.socket:
    """A listening TCP socket; OSError says why not."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, proto, _name, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class PortServed(OSError):
    """Another process listens on the port: shardd shares it only when told to."""

    def __init__(self, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"port {port} is already in use by another process (--share-port to share it)",
        )


def check_unserved(host: str, port: int) -> None:
    """PortServed if a process listens on ``host:port`` already.

    The shards' SO_REUSEPORT sockets would join any listener of the same
    user that has SO_REUSEPORT too (another shardd, with another --control):
    the kernel would then split the clients between the two servers without
    a word. A probe bound without SO_REUSEPORT cannot join it and fails with
    EADDRINUSE; it is closed before the shards bind. Port 0 (a free port,
    picked at bind) has nobody on it.
    """
    if port == 0:
        return
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, proto, _name, addr = infos[0]
    probe = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        # connections of a server that stopped (TIME_WAIT) are nobody listening
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortServed(port) from None
        raise
    finally:
        probe.close()


def bind_shard(host: str, port: int, backlog: int) -> socket.socket:
    """One SO_REUSEPORT listener; ``port`` 0 picks a free one (then reuse its number)."""
    return bind(host, port, reuse_port=True, backlog=backlog)


def accept_queue(sock: socket.socket) -> int | None:
    """Connections waiting in ``sock``'s accept queue (TCP_INFO), or None if unknown."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError):
        return None
    if len(raw) < _TCPI_UNACKED_OFFSET + _TCPI_UNACKED.size:
        return None
    unacked, _backlog = _TCPI_UNACKED.unpack_from(raw, _TCPI_UNACKED_OFFSET)
    return int(unacked)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft
