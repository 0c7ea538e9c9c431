"""The ``--bus redis://HOST:PORT/DB`` address and ``--bus-host``, checked at start.

No Redis client is imported here: the supervisor checks the setting before
any worker starts, with or without redis-py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = ("redis", "rediss")
DEFAULT_PORT = 6379
#: Redis's own bound is its ``databases`` setting (16 by default)
MAX_DB = 1 << 20
MAX_HOST_ID = 64
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class RedisAddress:
    url: str
    scheme: str
    host: str
    port: int
    db: int

    def display(self) -> str:
        """``HOST:PORT`` for log lines: never the password the URL may hold."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_redis_url(value: str) -> bool:
    return value.partition(":")[0].lower() in SCHEMES


def parse_redis_url(value: str) -> RedisAddress:
    """The address in ``value``; ValueError saying what is wrong in one line."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a redis:// URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be redis:// or rediss://, not {parts.scheme or value!r}")
    if not parts.hostname:
        raise ValueError(f"{value!r} names no host (redis://HOST:PORT/DB)")
    if port is None:
        port = DEFAULT_PORT
    elif not 0 < port <= 65535:
        raise ValueError(f"port must be 1 to 65535, not {port}")
    path = unquote(parts.path).strip("/")
    if not path:
        db = 0
    elif path.isdigit() and int(path) < MAX_DB:
        db = int(path)
    else:
        raise ValueError(f"database must be a number (redis://HOST:PORT/DB), not {path!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: no ?options or #fragment are understood")
    return RedisAddress(url=value, scheme=scheme, host=parts.hostname, port=port, db=db)


def check_host_id(value: str) -> str:
    """``--bus-host``: part of every session id (``HOST/PID.N``), so no ``/``."""
    if not 0 < len(value) <= MAX_HOST_ID or not _HOST_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} must be 1 to {MAX_HOST_ID} letters, digits, '.', '-' or '_'"
            " (it is part of every session id)"
        )
    return value
