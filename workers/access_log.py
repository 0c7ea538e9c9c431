"""The access log: one line when a session opens, one when it closes, and why.

Lines go to the logger ``shardd.access`` at INFO, so that an operator can
route them apart from the rest (or turn them off: ``--access-log off``).
Text::

    session 4321.17 open peer=203.0.113.5:51234 shard=2
    session 4321.17 close peer=203.0.113.5:51234 shard=2 duration=12.345s in=1024 \
        out=20480 reason="client closed"

(one line, here folded)

A session is named ``<worker pid>.<n>``: ``n`` counts the sessions of one
worker process, and a replacement worker starts counting again, so the pid
makes the name unique for the server's life (it is also what ``status``
shows as ``worker_pid`` and ``id``). JSON logs carry the same as fields
(``event``, ``session``, ``peer``, ``peer_port``, ``shard``, and at close
``duration``, ``bytes_in``, ``bytes_out``, ``reason``).

Why a session closed is one of a small fixed vocabulary (the constants
below), recorded where the close happens (``BaseServer.record_close_reason``);
the first reason recorded wins.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.server_base import BaseServer

#: the logger every access line goes to
ACCESS = logging.getLogger("shardd.access")

# Why a session closed. The client's doing:
CLIENT_CLOSED = "client closed"  # EOF, or a clean close, from the client
# ``connection error: ECONNRESET`` and the like: see connection_error()
# The shell's:
SHELL_ENDED = "shell ended"  # the shell returned, or closed its writer
SHELL_FAILED = "shell failed"  # the shell raised
# The server's, for this session:
IDLE_TIMEOUT = "idle timeout"  # --idle-timeout
OUTPUT_OVERFLOW = "output overflow"  # --max-output-buffer
PROTOCOL_ERROR = "protocol error"  # input that cannot be parsed on (a broken MCCP3 stream)
CLOSED_BY_BUS = "closed by another session"  # a shell's bus.close_session
START_FAILED = "session start failed"  # the protocol could not set the session up
# The server's, for every session:
SERVER_STOPPING = "server stopping"  # a graceful stop (TERM, shardd stop)
DRAIN_TIMEOUT = "drain timeout"  # a draining worker's --graceful-timeout ran out
SERVER_QUITTING = "server quitting"  # a fast stop (QUIT)


def connection_error(exc: BaseException) -> str:
    """The reason for a connection lost with ``exc``: its errno's name when it has one."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"connection error: {errno.errorcode[code]}"
    return f"connection error: {type(exc).__name__}"


def split_peer(peername: Any) -> tuple[str, int | None]:
    """(host, port) of a socket's peer name; (str(peername), None) if it is not an address."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0]), int(peername[1])
    return str(peername), None


def show_peer(host: str, port: int | None) -> str:
    """``host:port``, an IPv6 address in brackets so that the port stands apart."""
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AccessLog:
    """Writes a server's access lines; one per worker process (it names the pid)."""

    def __init__(self, logger: logging.Logger = ACCESS) -> None:
        self.log = logger
        self.pid = os.getpid()

    def name(self, session_id: int) -> str:
        return f"{self.pid}.{session_id}"

    def _named(self, protocol: BaseServer, event: str) -> tuple[str, str, object, dict[str, Any]]:
        """What the open and the close line both name: the session, the peer and
        the shard as the text shows them, and the JSON fields they share."""
        host, port = split_peer(protocol.get_extra_info("peername"))
        session = self.name(protocol.session_id)
        shard = protocol.get_extra_info("shard")
        fields = {
            "event": event,
            "session": session,
            "peer": host,
            "peer_port": port,
            "shard": shard,
        }
        return session, show_peer(host, port), "-" if shard is None else shard, fields

    def opened(self, protocol: BaseServer) -> None:
        log = self.log
        if not log.isEnabledFor(logging.INFO):
            return
        session, peer, shard, fields = self._named(protocol, "session_open")
        log.info("session %s open peer=%s shard=%s", session, peer, shard, extra=fields)

    def closed(self, protocol: BaseServer) -> None:
        log = self.log
        if not log.isEnabledFor(logging.INFO):
            return
        session, peer, shard, fields = self._named(protocol, "session_close")
        duration = round(protocol.duration, 3)
        reason = protocol.close_reason or CLIENT_CLOSED
        fields.update(
            duration=duration,
            bytes_in=protocol.rx_bytes,
            bytes_out=protocol.tx_bytes,
            reason=reason,
        )
        log.info(
            'session %s close peer=%s shard=%s duration=%.3fs in=%d out=%d reason="%s"',
            session,
            peer,
            shard,
            duration,
            protocol.rx_bytes,
            protocol.tx_bytes,
            reason,
            extra=fields,
        )
