"""Server configuration: every setting, its default, and how its value is checked.

A bad value raises :class:`ConfigError` naming the key and what is wrong; the
command line turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import codecs
import ipaddress
import socket
from dataclasses import dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """A setting with a bad value; ``str()`` is the one line to show."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 6023
    workers: int = 0
    shell: str = "welcome"
    encoding: str | bool = "utf8"
    encoding_errors: str = "strict"
    force_binary: bool = False
    connect_maxwait: float = 4.0
    limit: int = 2**16
    graceful_timeout: float = 10.0
    backlog: int = 4096
    log_level: str = "info"

    def check(self) -> ServeConfig:
        """Validate every field in place; return self."""
        check_host(self.host)
        self.port = check_int("port", self.port, 0, 65535)
        self.workers = check_int("workers", self.workers, 0, 1024)
        self.encoding = check_encoding(self.encoding)
        try:
            codecs.lookup_error(self.encoding_errors)
        except LookupError:
            raise ConfigError(
                "encoding-errors", f"unknown error handler {self.encoding_errors!r}"
            ) from None
        self.connect_maxwait = check_float("connect-maxwait", self.connect_maxwait, 0.0, 3600.0)
        self.limit = check_int("limit", self.limit, 64, 2**30)
        self.graceful_timeout = check_float("graceful-timeout", self.graceful_timeout, 0.0, 86400)
        self.backlog = check_int("backlog", self.backlog, 1, 65535)
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError("log-level", f"must be one of {', '.join(LOG_LEVELS)}, "
                                           f"not {self.log_level!r}")
        self.log_level = self.log_level.lower()
        return self

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


LOG_LEVELS = ("debug", "info", "warning", "error")


def check_host(host: str) -> None:
    if not host:
        raise ConfigError("host", "must not be empty")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError("host", f"cannot resolve {host!r}: {exc.strerror or exc}") from None


def check_int(key: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(key, f"must be between {low} and {high}, not {number}")
    return number


def check_float(key: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number of seconds, not {value!r}") from None
    if not low <= number <= high:  # also refuses nan
        raise ConfigError(key, f"must be between {low:g} and {high:g}, not {value!r}")
    return number


def check_encoding(value: Any) -> str | bool:
    if value is False or (isinstance(value, str) and value.lower() in ("false", "none", "binary")):
        return False
    if not isinstance(value, str) or not value:
        raise ConfigError("encoding", f"must be a codec name or false, not {value!r}")
    try:
        codecs.lookup(value)
    except LookupError:
        raise ConfigError("encoding", f"unknown encoding {value!r}") from None
    return value
