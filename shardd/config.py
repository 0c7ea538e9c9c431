"""Server configuration: every setting, its default, and how its value is checked.

Settings come from the defaults, then a TOML file (``--config``), then the
command line, each overriding the one before. File keys are the flag names
(``worker-timeout``; ``worker_timeout`` is accepted too). A bad value raises
:class:`ConfigError` naming the key (and the file) and what is wrong; the
command line turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import codecs
import grp
import ipaddress
import math
import os
import pwd
import socket
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from workers.admission import AdmissionLimits
from workers.limits import DEFAULT_MAX_OUTPUT_BUFFER
from workers.mud import COMPRESSION, DEFAULT_OFFER, OPTION_NAMES
from workers.proxy_stage import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_TRUSTED_PROXIES,
    ProxySettings,
    parse_networks,
)
from workers.serving import ServerSettings
from workers.telnet.charsets import DEFAULT_CHARSETS, check_charset
from workers.telnet.mssp import MSSPError, check_settings
from workers.tls import DEFAULT_HANDSHAKE_TIMEOUT


class ConfigError(ValueError):
    """A setting with a bad value; ``str()`` is the one line to show."""

    def __init__(self, key: str, problem: str, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}")
        self.key = key


#: a day: long enough for players to finish, short enough that an old worker
#: (and its code) does not live forever
DEFAULT_RELOAD_TIMEOUT = 86400.0

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 6023
    #: TLS (telnets): a second port, its certificate chain and key (PEM)
    tls_port: int | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: PROXY protocol: every connection, on both ports, comes from one of the
    #: trusted proxies and opens with a header naming the client
    proxy_protocol: bool = False
    trusted_proxies: list[str] = field(default_factory=lambda: list(DEFAULT_TRUSTED_PROXIES))
    proxy_header_timeout: float = DEFAULT_HEADER_TIMEOUT
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    shell: str = "welcome"
    protocol: str = "workers.server:TelnetServer"
    encoding: str | bool = "utf8"
    encoding_errors: str = "strict"
    force_binary: bool = False
    connect_maxwait: float = 4.0
    limit: int = 2**16
    charsets: list[str] = field(default_factory=lambda: list(DEFAULT_CHARSETS))
    max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER
    #: the MUD options offered (gmcp, msdp, mssp; mccp2, mccp3 need compression)
    offer: list[str] = field(default_factory=lambda: list(DEFAULT_OFFER))
    #: MCCP2 and MCCP3 (zlib) on plain telnet sessions, never over TLS
    compression: bool = False
    #: MSSP variables the operator sets (NAME, CONTACT, WEBSITE, ...)
    mssp: dict[str, Any] = field(default_factory=dict)
    max_sessions: int = 0
    max_sessions_per_ip: int = AdmissionLimits.max_sessions_per_ip
    max_connect_rate_per_ip: int = AdmissionLimits.max_connect_rate_per_ip
    idle_timeout: float = 3600.0
    graceful_timeout: float = 10.0
    #: how long a draining worker (after a reload, or its shard removed) keeps
    #: its sessions; 0: until they end
    reload_timeout: float = DEFAULT_RELOAD_TIMEOUT
    worker_timeout: float = 30.0
    stats_interval: float = 1.0
    backlog: int = 4096
    #: listen on a port another process serves too (SO_REUSEPORT splits the clients)
    share_port: bool = False
    pidfile: str | None = None
    user: str | None = None
    group: str | None = None
    control: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    log_file: str | None = None
    #: a line on the logger shardd.access when each session opens and closes
    access_log: bool = True
    #: HOST:PORT ([::1]:9100 for IPv6) where the supervisor serves Prometheus
    #: metrics over HTTP; None: not served
    metrics: str | None = None
    #: the message bus's backend: "local" (through the supervisor) or redis://HOST:PORT/DB
    bus: str = "local"

    def server_settings(self) -> ServerSettings:
        """What every worker's server is built with."""
        return ServerSettings(
            backlog=self.backlog,
            graceful_timeout=self.graceful_timeout,
            admission=AdmissionLimits(
                max_sessions=self.max_sessions,
                max_sessions_per_ip=self.max_sessions_per_ip,
                max_connect_rate_per_ip=self.max_connect_rate_per_ip,
            ),
            idle_timeout=self.idle_timeout,
            proxy=ProxySettings(
                parse_networks(self.trusted_proxies), header_timeout=self.proxy_header_timeout
            )
            if self.proxy_protocol
            else None,
            bus=self.bus,
        )

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def check(self, source: str | None = None) -> ServeConfig:
        """Validate and normalise every field in place; return self."""
        try:
            self._check()
        except ConfigError as exc:
            if source:
                raise ConfigError(exc.key, str(exc).split(": ", 1)[1], source) from None
            raise
        return self

    def _check(self) -> None:
        check_host(self.host)
        self.port = check_int("port", self.port, 0, 65535)
        if self.tls_port is not None:
            self.tls_port = check_int("tls-port", self.tls_port, 0, 65535)
        self.tls_handshake_timeout = check_float(
            "tls-handshake-timeout", self.tls_handshake_timeout, 0.0, 3600.0, above=True
        )
        self.proxy_protocol = check_bool("proxy-protocol", self.proxy_protocol)
        self.trusted_proxies = check_networks(self.trusted_proxies)
        self.proxy_header_timeout = check_float(
            "proxy-header-timeout", self.proxy_header_timeout, 0.0, 3600.0, above=True
        )
        self.workers = check_int("workers", self.workers, 0, 1024)
        self.shell = check_str("shell", self.shell)
        self.protocol = check_str("protocol", self.protocol)
        self.encoding = check_encoding(self.encoding)
        try:
            codecs.lookup_error(check_str("encoding-errors", self.encoding_errors))
        except LookupError:
            raise ConfigError(
                "encoding-errors", f"unknown error handler {self.encoding_errors!r}"
            ) from None
        self.force_binary = check_bool("force-binary", self.force_binary)
        self.connect_maxwait = check_float("connect-maxwait", self.connect_maxwait, 0.0, 3600.0)
        self.limit = check_int("limit", self.limit, 64, 2**30)
        self.charsets = check_charsets(self.charsets)
        self.max_output_buffer = check_int("max-output-buffer", self.max_output_buffer, 4096, 2**31)
        self.offer = check_offer(self.offer)
        self.compression = check_bool("compression", self.compression)
        self.mssp = check_mssp(self.mssp)
        self.max_sessions = check_int("max-sessions", self.max_sessions, 0, 10**7)
        self.max_sessions_per_ip = check_int(
            "max-sessions-per-ip", self.max_sessions_per_ip, 0, 60000
        )
        self.max_connect_rate_per_ip = check_int(
            "max-connect-rate-per-ip", self.max_connect_rate_per_ip, 0, 60000
        )
        self.idle_timeout = check_float("idle-timeout", self.idle_timeout, 0.0, 10**7)
        self.graceful_timeout = check_float("graceful-timeout", self.graceful_timeout, 0.0, 86400)
        self.reload_timeout = check_float("reload-timeout", self.reload_timeout, 0.0, 10**7)
        self.worker_timeout = check_float("worker-timeout", self.worker_timeout, 1.0, 86400)
        self.stats_interval = check_float("stats-interval", self.stats_interval, 0.0, 3600)
        if 0 < self.stats_interval < 0.05:
            raise ConfigError(
                "stats-interval", f"must be 0 (off) or at least 0.05, not {self.stats_interval:g}"
            )
        self.backlog = check_int("backlog", self.backlog, 1, 65535)
        self.share_port = check_bool("share-port", self.share_port)
        self.log_level = check_choice("log-level", self.log_level, LOG_LEVELS)
        self.log_format = check_choice("log-format", self.log_format, LOG_FORMATS)
        self.access_log = check_switch("access-log", self.access_log)
        for key in ("pidfile", "control", "log_file", "user", "group", "certfile", "keyfile"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, check_str(key.replace("_", "-"), value))
        if self.metrics is not None:
            self.metrics = check_metrics(self.metrics)
        self.bus = check_bus(self.bus)
        if self.user is not None:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise ConfigError("user", f"no such user {self.user!r}") from None
        if self.group is not None:
            try:
                grp.getgrnam(self.group)
            except KeyError:
                raise ConfigError("group", f"no such group {self.group!r}") from None

    def check_together(self) -> ServeConfig:
        """The checks between settings, once the file and the flags are both in."""
        if self.metrics is not None and self.workers == 0:
            # the supervisor serves them, from its workers' reports
            raise ConfigError("metrics", "needs a supervisor: workers must be 1 or more")
        named = [name for name in self.offer if name in COMPRESSION]
        if named and not self.compression:
            raise ConfigError("offer", f"{', '.join(named)} needs compression on")
        if self.tls_port is None:
            for key in ("certfile", "keyfile"):
                if getattr(self, key) is not None:
                    raise ConfigError(key, "is for TLS, which needs tls-port too")
            return self
        if self.certfile is None:
            raise ConfigError("tls-port", "needs certfile (and keyfile, unless the key is in it)")
        if self.tls_port == self.port != 0:
            raise ConfigError("tls-port", f"must differ from port ({self.port})")
        return self


def load_toml(path: str) -> dict[str, Any]:
    """Settings from a TOML file, keys normalised; ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    known = set(ServeConfig.keys())
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(key, "unknown setting", path)
        settings[name] = value
    return settings


def build(
    file_settings: dict[str, Any], flag_settings: dict[str, Any], source: str | None = None
) -> ServeConfig:
    """Defaults, then the file's settings, then the flags; checked."""
    cfg = ServeConfig()
    for name, value in file_settings.items():
        setattr(cfg, name, value)
    cfg.check(source)
    for name, value in flag_settings.items():
        if value is None:
            continue
        if name == "mssp" and isinstance(value, dict):
            # the flags' variables add to the file's, one by one
            value = {**cfg.mssp, **value}
        setattr(cfg, name, value)
    return cfg.check().check_together()


@dataclass(frozen=True)
class ConfigSource:
    """Where a server's settings come from: its ``--config`` file, read again on
    every reload, and the flags it was started with, which still win."""

    path: str | None
    flags: dict[str, Any]

    def load(self) -> ServeConfig:
        """The settings as they are now; ConfigError naming the file and key."""
        file_settings = load_toml(self.path) if self.path else {}
        return build(file_settings, self.flags, self.path)


def check_host(host: Any) -> None:
    if not isinstance(host, str) or not host:
        raise ConfigError("host", f"must be an address or host name, not {host!r}")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError("host", f"cannot resolve {host!r}: {exc.strerror or exc}") from None


def check_metrics(value: Any) -> str:
    """``HOST:PORT`` or ``[IPv6]:PORT``, checked; returned as given."""
    split_address(check_str("metrics", value))
    return str(value)


def split_address(value: str, key: str = "metrics") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port); ConfigError naming ``key``."""
    form = "must be HOST:PORT or [IPv6]:PORT"
    if value.startswith("["):
        host, bracket, port = value[1:].partition("]:")
        if not bracket:
            raise ConfigError(key, f"{form}, not {value!r}")
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ConfigError(key, f"{host!r} in brackets must be an IPv6 address") from None
    else:
        host, colon, port = value.rpartition(":")
        if not colon or not host:
            raise ConfigError(key, f"{form}, not {value!r}")
        if ":" in host:
            raise ConfigError(key, f"write an IPv6 address in brackets ([{host}]:{port})")
        try:
            check_host(host)
        except ConfigError as exc:
            raise ConfigError(key, str(exc).split(": ", 1)[1]) from None
    if not port.isascii() or not port.isdigit():
        raise ConfigError(key, f"{form}, with a port number, not {value!r}")
    return host, check_int(key, port, 0, 65535)


def check_bus(value: Any) -> str:
    """``local`` or a ``redis://`` URL (workers/bus/backends.py)."""
    from workers.bus.backends import valid_spec

    if not isinstance(value, str) or not valid_spec(value):
        raise ConfigError("bus", f"must be local or a redis:// URL, not {value!r}")
    return value


def check_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a non-empty string, not {value!r}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ConfigError(key, f"must be true or false, not {value!r}")


def check_switch(key: str, value: Any) -> bool:
    """on/off (or true/false, yes/no, 1/0), as a flag or a TOML string or boolean."""
    if isinstance(value, str) and value.lower() in ("on", "off"):
        return value.lower() == "on"
    try:
        return check_bool(key, value)
    except ConfigError:
        raise ConfigError(key, f"must be on or off, not {value!r}") from None


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}, not {value!r}")
    return value.lower()


def check_int(key: str, value: Any, low: int, high: int) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(key, f"must be between {low} and {high}, not {number}")
    return number


def check_float(
    key: str,
    value: Any,
    low: float,
    high: float,
    *,
    above: bool = False,
    unit: str | None = "seconds",
) -> float:
    """``value`` as a float in [low, high], or (``above``) in (low, high].

    ``unit`` names what the number counts in the message for a non-number;
    None says just "a number".
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        what = f"a number of {unit}" if unit else "a number"
        raise ConfigError(key, f"must be {what}, not {value!r}") from None
    if math.isnan(number) or not low <= number <= high or (above and number == low):
        bound = (
            f"more than {low:g} and at most {high:g}" if above else f"between {low:g} and {high:g}"
        )
        raise ConfigError(key, f"must be {bound}, not {value!r}")
    return number


def check_charsets(value: Any) -> list[str]:
    """A list of charsets, or one string of them separated by commas."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("charsets", f"must be charset names separated by commas, not {value!r}")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ConfigError("charsets", "must name at least one charset")
    for name in names:
        try:
            check_charset(name)
        except ValueError as exc:
            raise ConfigError("charsets", str(exc)) from None
    return names


def check_networks(value: Any) -> list[str]:
    """trusted-proxies: networks in CIDR form, a list or one string separated by commas."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(n, str) for n in items):
        raise ConfigError(
            "trusted-proxies", f"must be networks (CIDR) separated by commas, not {value!r}"
        )
    items = [n.strip() for n in items if n.strip()]
    if not items:
        raise ConfigError("trusted-proxies", "must name at least one network")
    try:
        parse_networks(items)
    except ValueError as exc:
        raise ConfigError("trusted-proxies", str(exc)) from None
    return items


def check_offer(value: Any) -> list[str]:
    """MUD option names, a list or one string separated by commas; "none" for none."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("offer", f"must be option names separated by commas, not {value!r}")
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["none"]:
        return []
    for name in names:
        if name not in OPTION_NAMES:
            raise ConfigError(
                "offer", f"unknown option {name!r}: choose from {', '.join(OPTION_NAMES)} or none"
            )
    return list(dict.fromkeys(names))


def check_mssp(value: Any) -> dict[str, Any]:
    """MSSP variables: a table of upper-case names to text, numbers, yes/no or lists."""
    if not isinstance(value, dict):
        raise ConfigError("mssp", f"must be a table of MSSP variables, not {value!r}")
    try:
        check_settings(value)
    except MSSPError as exc:
        raise ConfigError("mssp", str(exc)) from None
    return value


def parse_mssp_flags(items: list[str]) -> dict[str, Any]:
    """``--mssp KEY=VALUE`` flags as a table; a name given twice gets both values."""
    table: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError("mssp", f"must be NAME=VALUE, not {item!r}")
        name = name.strip()
        if name in table:
            before = table[name]
            table[name] = [*before, text] if isinstance(before, list) else [before, text]
        else:
            table[name] = text
    return table


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
