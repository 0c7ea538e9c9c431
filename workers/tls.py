"""TLS (telnets): the certificate, and the handshake as a stage before the telnet session.

A server with a TLS listener serves the same sessions on a second socket,
whose connections go through one more stage first (:mod:`workers.arrival`):
:class:`Handshake`, which upgrades the connection to TLS, server side, within
a time limit. Admission has run before it, on the bare TCP connection, so a
client pays for handshakes only once it is let in, and a client that never
sends its ClientHello holds its file descriptor for ``handshake_timeout`` at
most, counted by the limits per address meanwhile.

The certificate and key are read by :func:`load_context`, once when the
server starts (a bad file is a one-line error there) and again on every
rolling restart (SIGHUP), in the supervisor: workers forked after it serve
the new certificate, and sessions on the old workers keep their TLS state.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workers.log_limits import PROTOCOL_WARNINGS

if TYPE_CHECKING:
    from workers.arrival import Arrival

log = logging.getLogger("shardd.tls")

#: How long a client has for its TLS handshake, from the end of admission.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Read at most this much of a certificate or key file to check it is PEM.
_PEM_PEEK = 1 << 20


class TlsError(ValueError):
    """A certificate or key that cannot be used; ``key`` names the setting, ``str()``
    is the one line to show."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


class _Encrypted(Exception):
    """The key asked for a passphrase: nobody is there to type it."""


def _no_passphrase() -> str:
    raise _Encrypted


def _check_pem(key: str, path: str, marker: bytes, what: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(_PEM_PEEK)
    except OSError as exc:
        raise TlsError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in head or marker not in head:
        raise TlsError(key, f"{path} holds no PEM {what}")


def load_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server-side SSLContext with this certificate chain and key (PEM).

    ``keyfile`` None: the key is in ``certfile``. TlsError says what is wrong
    (a missing or unreadable file, not PEM, a key that does not match the
    certificate, a key encrypted with a passphrase).
    """
    key_setting = "keyfile" if keyfile else "certfile"
    key_path = keyfile or certfile
    _check_pem("certfile", certfile, b"-----BEGIN CERTIFICATE-----", "certificate")
    _check_pem(key_setting, key_path, b"PRIVATE KEY-----", "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except _Encrypted:
        raise TlsError(
            key_setting, f"{key_path} is encrypted with a passphrase; give an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                key_setting, f"{key_path} does not match the certificate in {certfile}"
            ) from None
        raise TlsError(key_setting, f"cannot load {certfile}: {exc.reason or exc}") from None
    except OSError as exc:  # the file went away between the check and the load
        raise TlsError(key_setting, f"cannot read {exc.filename}: {exc.strerror}") from None
    return context


@dataclass(frozen=True)
class TlsListener:
    """A server's second listening socket, whose clients speak TLS first."""

    sock: socket.socket
    context: ssl.SSLContext
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


class Handshake:
    """The stage that upgrades an admitted connection to TLS.

    A handshake that fails (not TLS, an alert from the client, a reset) or
    takes longer than ``timeout`` ends the connection; both are counted
    (``tls_handshake_error``, ``tls_handshake_timeout``) and logged at INFO,
    a few lines per address (workers/log_limits.py): a scanner or a client
    that does not trust the certificate is the client's business, not an
    error of the server.
    """

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        self.context = context
        self.timeout = timeout

    async def __call__(self, arrival: Arrival) -> None:
        started = time.monotonic()
        try:
            await arrival.start_tls(self.context, self.timeout)
        except OSError as exc:  # ssl.SSLError too
            # uvloop and asyncio both end a handshake that is out of time with
            # a ConnectionAbortedError; the clock says which one this was
            timed_out = isinstance(exc, ConnectionAbortedError) and (
                time.monotonic() - started >= self.timeout * 0.99
            )
            counters = arrival.server.sessions.counters
            if timed_out:
                counters["tls_handshake_timeout"] += 1
                why = f"no handshake within {self.timeout:g}s"
            else:
                counters["tls_handshake_error"] += 1
                why = _reason(exc)
            PROTOCOL_WARNINGS.warning(
                log, arrival.host, "%s: TLS handshake failed: %s", arrival.peer, why,
                level=logging.INFO,
            )  # fmt: skip
            arrival.drop()


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__
