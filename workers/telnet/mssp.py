"""MSSP (telnet option 70): the server's status for MUD crawlers and clients.

After ``IAC WILL MSSP`` and the client's ``IAC DO MSSP``, the server sends one
``IAC SB MSSP MSSP_VAR <name> MSSP_VAL <value> ... IAC SE``. A variable may
have several values (``MSSP_VAR PORT MSSP_VAL 23 MSSP_VAL 4000``), the most
important last; names are upper case and may hold spaces; names and values
hold no NUL, MSSP_VAR, MSSP_VAL or IAC. Numbers are sent as decimal text and
yes/no flags as "1"/"0".

Specification: the MSSP page of Mudhalla (https://tintin.mudhalla.net/protocols/mssp/),
with its list of official variables; ``UPTIME`` is the Unix time the server
started, not a duration.

:func:`server_answer` builds the server's payload from the operator's
settings and the live values in one call; :func:`check_settings` checks the
operator's settings at start. :func:`decode` is for tests and the load-test
client: a server never parses MSSP from clients.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

VAR = 1
VAL = 2

# Official variables. Required:
NAME = "NAME"
PLAYERS = "PLAYERS"  # players logged in now
UPTIME = "UPTIME"  # Unix time of the server's start
# Generic:
CHARSET = "CHARSET"  # charsets in use, the default last
CODEBASE = "CODEBASE"
CONTACT = "CONTACT"  # an email address
CRAWL_DELAY = "CRAWL DELAY"  # hours between crawls; -1: the crawler's default
CREATED = "CREATED"  # year
DISCORD = "DISCORD"
HOSTNAME = "HOSTNAME"
ICON = "ICON"
IP = "IP"
IPV6 = "IPV6"
LANGUAGE = "LANGUAGE"
LOCATION = "LOCATION"
MINIMUM_AGE = "MINIMUM AGE"
PORT = "PORT"  # may repeat, the most important last
REFERRAL = "REFERRAL"  # other MSSP servers, "host port"
SSL = "SSL"  # the TLS port
WEBSITE = "WEBSITE"
# Categorization:
FAMILY = "FAMILY"
GENRE = "GENRE"
GAMEPLAY = "GAMEPLAY"
STATUS = "STATUS"
GAMESYSTEM = "GAMESYSTEM"
INTERMUD = "INTERMUD"
SUBGENRE = "SUBGENRE"
# World:
AREAS = "AREAS"
HELPFILES = "HELPFILES"
MOBILES = "MOBILES"
OBJECTS = "OBJECTS"
ROOMS = "ROOMS"
CLASSES = "CLASSES"
LEVELS = "LEVELS"
RACES = "RACES"
SKILLS = "SKILLS"
# Protocols, 1 or 0:
ANSI = "ANSI"
UTF_8 = "UTF-8"
VT100 = "VT100"
XTERM_256_COLORS = "XTERM 256 COLORS"
XTERM_TRUE_COLORS = "XTERM TRUE COLORS"
# Commercial and hiring, 1 or 0:
PAY_TO_PLAY = "PAY TO PLAY"
PAY_FOR_PERKS = "PAY FOR PERKS"
HIRING_BUILDERS = "HIRING BUILDERS"
HIRING_CODERS = "HIRING CODERS"

#: Not in the specification but read by clients (Mudlet offers to switch to
#: TLS when it sees ``TLS`` or ``SSL``); sent with ``SSL``.
TLS = "TLS"
#: Protocol flags of the older variable list, still read by crawlers.
GMCP = "GMCP"
MCCP = "MCCP"
MSDP = "MSDP"

REQUIRED = (NAME, PLAYERS, UPTIME)
#: The server's live values: never taken from the operator's settings.
LIVE = frozenset({PLAYERS, UPTIME})
OFFICIAL = frozenset(
    {
        *REQUIRED,
        *(CHARSET, CODEBASE, CONTACT, CRAWL_DELAY, CREATED, DISCORD, HOSTNAME, ICON, IP),
        *(IPV6, LANGUAGE, LOCATION, MINIMUM_AGE, PORT, REFERRAL, SSL, WEBSITE),
        *(FAMILY, GENRE, GAMEPLAY, STATUS, GAMESYSTEM, INTERMUD, SUBGENRE),
        *(AREAS, HELPFILES, MOBILES, OBJECTS, ROOMS, CLASSES, LEVELS, RACES, SKILLS),
        *(ANSI, UTF_8, VT100, XTERM_256_COLORS, XTERM_TRUE_COLORS),
        *(PAY_TO_PLAY, PAY_FOR_PERKS, HIRING_BUILDERS, HIRING_CODERS),
    }
)

DEFAULT_NAME = "shardd"
DEFAULT_CODEBASE = "shardd"

Scalar: TypeAlias = str | int  # bool is an int: "1" or "0"
MSSPValue: TypeAlias = Scalar | Sequence[Scalar]

# what a name or a value may not contain: NUL, MSSP_VAR, MSSP_VAL (UTF-8 has no 0xFF)
_FORBIDDEN = re.compile("[\x00-\x02]")
# even items: text; odd items: one control byte
_CONTROLS = re.compile(rb"([\x00-\x02\xff])")


class MSSPError(ValueError):
    """A malformed MSSP payload or setting; the message says why, in one line."""


def encode(variables: Mapping[str, MSSPValue]) -> bytes:
    """The payload carrying ``variables``; a sequence gives a name several values.

    Raises :class:`MSSPError` for an empty name, a name or value holding NUL,
    MSSP_VAR or MSSP_VAL, or a value that is not text, a number or a sequence
    of them.
    """
    out = bytearray()
    for name, value in variables.items():
        out.append(VAR)
        out += _text(name, name=True)
        values = [value] if isinstance(value, str | int) else value
        if isinstance(values, bytes | bytearray) or not isinstance(values, Sequence):
            raise MSSPError(f"MSSP {name} value of type {type(value).__name__}")
        if not values:
            raise MSSPError(f"MSSP {name} without a value")
        for item in values:
            out.append(VAL)
            out += _text(_scalar(name, item))
    return bytes(out)


def _scalar(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise MSSPError(f"MSSP {name} value of type {type(value).__name__}")


def _text(text: str, name: bool = False) -> bytes:
    if name and not text.strip():
        raise MSSPError("empty MSSP variable name")
    if _FORBIDDEN.search(text):
        raise MSSPError(f"MSSP text holds NUL, MSSP_VAR or MSSP_VAL: {text[:40]!r}")
    return text.encode()


def decode(payload: bytes) -> dict[str, list[str]]:
    """Each variable's values, in order (the default last), from a payload.

    A variable sent twice gets the values of both. Raises :class:`MSSPError`
    for data before the first MSSP_VAR, a variable without a name or a value,
    NUL or IAC bytes, or text that is not UTF-8.
    """
    parts = _CONTROLS.split(payload)
    if parts[0]:
        raise MSSPError("MSSP data before the first MSSP_VAR")
    result: dict[str, list[str]] = {}
    name: str | None = None
    values = 0  # of the current variable
    # parts: "", control, text, control, text, ...
    for i in range(1, len(parts), 2):
        control, text = parts[i][0], _utf8(parts[i + 1])
        if control == VAR:
            if name is not None and not values:
                raise MSSPError(f"MSSP variable {name[:40]!r} without a value")
            if not text:
                raise MSSPError("MSSP variable without a name")
            name, values = text, 0
            result.setdefault(name, [])
        elif control == VAL:
            if name is None:
                raise MSSPError("MSSP value before the first MSSP_VAR")
            result[name].append(text)
            values += 1
        else:
            raise MSSPError(f"MSSP payload holds byte {control}")
    if name is not None and not values:
        raise MSSPError(f"MSSP variable {name[:40]!r} without a value")
    return result


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MSSPError("MSSP text is not UTF-8") from None


def check_settings(settings: Mapping[str, object]) -> None:
    """Raise :class:`MSSPError` (one line) unless the operator's variables can be sent.

    Names are upper case text; values are text, integers, booleans or lists of
    them, without NUL or the MSSP bytes; PLAYERS and UPTIME are the server's own.
    """
    for name in settings:
        if not isinstance(name, str):
            raise MSSPError(f"MSSP variable name {name!r} is not text")
        if name in LIVE:
            raise MSSPError(f"MSSP {name} is the server's live value, it cannot be set")
        if name != name.upper():
            raise MSSPError(f"MSSP variable names are upper case: {name!r}")
    encode(settings)  # type: ignore[arg-type]  # checks the values at run time


def server_status(
    settings: Mapping[str, MSSPValue],
    *,
    players: int,
    uptime: float,
    ports: Iterable[int] = (),
    tls_port: int | None = None,
    protocols: Mapping[str, bool] | None = None,
    now: float | None = None,
) -> dict[str, MSSPValue]:
    """The variables the server answers with, before encoding.

    ``players``: sessions now (over every shard); ``uptime``: seconds since the
    server started, sent as the Unix time of the start as the specification
    asks (``now`` defaults to :func:`time.time`). ``ports``: the telnet ports,
    the most important last; ``tls_port`` is sent as ``SSL`` and ``TLS``;
    ``protocols``: flags such as ``{"GMCP": True, "MCCP": False}``. The
    operator's ``settings`` come last and win, except PLAYERS and UPTIME.
    """
    started = (time.time() if now is None else now) - uptime
    status: dict[str, MSSPValue] = {
        NAME: DEFAULT_NAME,
        PLAYERS: players,
        UPTIME: int(started),
        CODEBASE: DEFAULT_CODEBASE,
    }
    port_list = list(ports)
    if port_list:
        status[PORT] = port_list
    if tls_port:
        status[SSL] = tls_port
        status[TLS] = tls_port
    for protocol, on in (protocols or {}).items():
        status[protocol] = on
    status.update((key, value) for key, value in settings.items() if key not in LIVE)
    return status


def server_answer(
    settings: Mapping[str, MSSPValue],
    *,
    players: int,
    uptime: float,
    ports: Iterable[int] = (),
    tls_port: int | None = None,
    protocols: Mapping[str, bool] | None = None,
    now: float | None = None,
) -> bytes:
    """The payload of the server's ``IAC SB MSSP ... IAC SE``: see :func:`server_status`."""
    return encode(
        server_status(
            settings,
            players=players,
            uptime=uptime,
            ports=ports,
            tls_port=tls_port,
            protocols=protocols,
            now=now,
        )
    )
