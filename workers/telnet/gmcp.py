"""GMCP (telnet option 201): ``Package.SubPackage.Message <JSON>`` payloads.

The Generic MUD Communication Protocol carries one message per subnegotiation,
``IAC SB GMCP <package> [SP <json>] IAC SE``: a dotted package name, then
optionally one space and a JSON value, UTF-8 encoded. A message without data
omits the space. Package names are compared case-insensitively by convention.

Specification: the GMCP page of Mudhalla (https://tintin.mudhalla.net/protocols/gmcp/),
kept from the defunct mudstandards.org; JSON is RFC 8259.

Everything a client can make :func:`decode` do is bounded: the payload size
(``MAX_PAYLOAD``, the engine's subnegotiation cap), the package name's length
(``MAX_PACKAGE_LENGTH``) and the JSON value's nesting depth (``MAX_DEPTH``,
checked before :func:`json.loads` runs, so it never recurses deeply). A
malformed payload raises :class:`GMCPError` with a one-line reason, for the
server's rate-limited protocol warning.
"""

from __future__ import annotations

import json
import re
from typing import TypeAlias

from workers.telnet.engine import DEFAULT_SB_LIMIT

#: What :func:`decode` accepts: the engine discards longer subnegotiations anyway.
MAX_PAYLOAD = DEFAULT_SB_LIMIT
#: Longest package name, in characters ("Char.Vitals", "Client.Media.Play", ...).
MAX_PACKAGE_LENGTH = 128
#: Deepest nesting of JSON arrays and objects in a received message.
MAX_DEPTH = 32

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

# Dotted names of letters, digits, "_" and "-", starting with a letter:
# "Core.Hello", "char.vitals", "IRE.Rift.Change", "MSDP" (MSDP over GMCP).
_PACKAGE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
# a backslash escape inside a JSON string; outside strings valid JSON has none
_ESCAPE = re.compile(r"\\.", re.DOTALL)
# a JSON string once its escapes are gone
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class GMCPError(ValueError):
    """A malformed GMCP payload; the message says why, in one line."""


def check_package(package: str) -> None:
    """Raise :class:`GMCPError` unless ``package`` is a dotted GMCP name."""
    if len(package) > MAX_PACKAGE_LENGTH:
        raise GMCPError(f"GMCP package name longer than {MAX_PACKAGE_LENGTH} characters")
    if not _PACKAGE.fullmatch(package):
        raise GMCPError(f"bad GMCP package name {package[:40]!r}")


def encode(package: str, data: object = None) -> bytes:
    """The payload for ``package`` with ``data`` as JSON (no data when None).

    Raises :class:`GMCPError` for a bad package name, and what
    :func:`json.dumps` raises for data JSON cannot carry (TypeError, or
    ValueError for NaN and infinities, which JSON does not have).
    """
    check_package(package)
    if data is None:
        return package.encode("ascii")
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return f"{package} {body}".encode()


def decode(payload: bytes) -> tuple[str, JSONValue]:
    """(package, data) of a received payload; data is None when there is none.

    Raises :class:`GMCPError` when the payload is too large, not UTF-8, has a
    bad package name, holds JSON nested deeper than ``MAX_DEPTH`` or anything
    that is not JSON (NaN and Infinity included).
    """
    if len(payload) > MAX_PAYLOAD:
        raise GMCPError(f"GMCP payload of {len(payload)} bytes, over {MAX_PAYLOAD}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GMCPError(f"GMCP payload is not UTF-8 (byte {exc.start})") from None
    package, _sp, body = text.partition(" ")
    check_package(package)
    if not body.strip():
        return package, None
    _check_depth(body)
    try:
        return package, json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError, NaN/Infinity, integers over sys.get_int_max_str_digits()
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
        raise GMCPError(f"bad JSON in GMCP {package}: {reason}") from None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check_depth(body: str) -> None:
    """Raise :class:`GMCPError` if ``body`` nests arrays and objects too deep.

    Linear time and no recursion: drop escapes, then strings, then all but
    brackets, and follow the depth over what is left. For malformed JSON the
    figure may be off, but then json.loads refuses it anyway.
    """
    if body.count("[") + body.count("{") <= MAX_DEPTH:
        return
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", body)))
    depth = 0
    for char in skeleton:
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise GMCPError(f"GMCP JSON nested deeper than {MAX_DEPTH}")
        else:
            depth -= 1
