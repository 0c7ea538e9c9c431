"""Payload codecs for option subnegotiations, shared by the server and client roles.

Pure functions from payload bytes to values and back (the engine has already
removed IAC SB <option> ... IAC SE and undoubled IACs). Each parser raises
:class:`ValueError` with a short reason on a malformed payload.
"""

from __future__ import annotations

import codecs
import functools
import re
import struct
import sys

from workers.telnet.telopt import (
    CHARSET_ACCEPTED,
    CHARSET_REJECTED,
    CHARSET_REQUEST,
    ENV_ESC,
    ENV_USERVAR,
    ENV_VALUE,
    ENV_VAR,
    INFO,
    IS,
    SEND,
)

# inetutils-telnet keeps subnegotiations in a 256-byte buffer; larger ones are cut.
MAX_CLIENT_SB = 256


def text(payload: bytes) -> str:
    """Decode a protocol string (terminal type, speed, display) leniently."""
    return payload.decode("ascii", "replace")


# ---------------------------------------------------------------- TTYPE, TSPEED, XDISPLOC


def send_request() -> bytes:
    """The SEND payload of TTYPE, TSPEED and XDISPLOC."""
    return bytes((SEND,))


def parse_is(payload: bytes) -> str:
    """The value of an ``IS <value>`` reply (TTYPE, TSPEED, XDISPLOC)."""
    if not payload or payload[0] != IS:
        raise ValueError("expected IS")
    return text(payload[1:])


def build_is(value: str) -> bytes:
    return bytes((IS,)) + value.encode("ascii", "replace")


# ----------------------------------------------------------------------------- NAWS


def parse_naws(payload: bytes) -> tuple[int, int]:
    """(columns, rows) from a NAWS payload."""
    if len(payload) != 4:
        raise ValueError(f"NAWS payload of {len(payload)} bytes, expected 4")
    cols, rows = struct.unpack("!HH", payload)
    return cols, rows


def build_naws(cols: int, rows: int) -> bytes:
    return struct.pack("!HH", max(0, min(cols, 0xFFFF)), max(0, min(rows, 0xFFFF)))


# ---------------------------------------------------------------------- NEW-ENVIRON


def _env_escape(raw: bytes) -> bytes:
    for special in (ENV_ESC, ENV_VAR, ENV_VALUE, ENV_USERVAR):
        raw = raw.replace(bytes((special,)), bytes((ENV_ESC, special)))
    return raw


def build_environ_send(names: list[tuple[int, str]], limit: int = MAX_CLIENT_SB) -> list[bytes]:
    """SEND payloads asking for ``names`` ((VAR or USERVAR, name) pairs).

    A pair with an empty name asks for every variable of that type. Payloads
    are split so that each whole SB (6 bytes of framing) stays within ``limit``.
    """
    payloads: list[bytes] = []
    current = bytearray((SEND,))
    for kind, name in names:
        item = bytes((kind,)) + _env_escape(name.encode("ascii", "replace"))
        if len(current) + len(item) + 5 > limit and len(current) > 1:
            payloads.append(bytes(current))
            current = bytearray((SEND,))
        current += item
    payloads.append(bytes(current))
    return payloads


# type, name, and an optional VALUE and value, when nothing is escaped
_ENV_ITEM = re.compile(rb"([\x00\x03])([^\x00\x01\x03]*)(?:\x01([^\x00\x01\x03]*))?")


def parse_environ(payload: bytes) -> tuple[int, list[tuple[int, str, str | None]]]:
    """(IS/INFO/SEND, [(VAR or USERVAR, name, value or None), ...])."""
    if not payload or payload[0] not in (IS, SEND, INFO):
        raise ValueError("NEW-ENVIRON payload without IS, SEND or INFO")
    verb = payload[0]
    if ENV_ESC not in payload:
        # every session sends one of these: parse it in C when nothing is escaped
        items: list[tuple[int, str, str | None]] = []
        pos = 1
        for match in _ENV_ITEM.finditer(payload, 1):
            if match.start() != pos:
                break
            kind, name, value = match.groups()
            items.append((kind[0], sys.intern(text(name)), None if value is None else text(value)))
            pos = match.end()
        else:
            if pos == len(payload):
                return verb, items
    return verb, _parse_environ_bytewise(payload)


def _parse_environ_bytewise(payload: bytes) -> list[tuple[int, str, str | None]]:
    items: list[tuple[int, str, str | None]] = []
    kind: int | None = None
    name = bytearray()
    value: bytearray | None = None
    i, end = 1, len(payload)

    def finish() -> None:
        if kind is not None:
            # names repeat in every session of a server: one copy of each
            items.append(
                (kind, sys.intern(text(bytes(name))), None if value is None else text(bytes(value)))
            )

    while i < end:
        byte = payload[i]
        i += 1
        if byte in (ENV_VAR, ENV_USERVAR):
            finish()
            kind, name, value = byte, bytearray(), None
        elif kind is None:
            raise ValueError("NEW-ENVIRON data before VAR or USERVAR")
        elif byte == ENV_VALUE:
            value = bytearray()
        else:
            if byte == ENV_ESC and i < end:
                byte = payload[i]
                i += 1
            (name if value is None else value).append(byte)
    finish()
    return items


def build_environ_is(variables: dict[str, str], verb: int = IS) -> bytes:
    """An IS (or INFO) payload carrying ``variables``, each sent as a USERVAR
    unless RFC 1572 names it a well-known VAR."""
    out = bytearray((verb,))
    for name, value in variables.items():
        kind = ENV_VAR if name in WELL_KNOWN_VARS else ENV_USERVAR
        out.append(kind)
        out += _env_escape(name.encode("ascii", "replace"))
        out.append(ENV_VALUE)
        out += _env_escape(value.encode("utf-8", "replace"))
    return bytes(out)


WELL_KNOWN_VARS = frozenset({"USER", "JOB", "ACCT", "PRINTER", "SYSTEMTYPE", "DISPLAY"})


# -------------------------------------------------------------------------- CHARSET


def build_charset_request(charsets: list[str], sep: str = ";") -> bytes:
    return bytes((CHARSET_REQUEST,)) + (sep + sep.join(charsets)).encode("ascii")


def parse_charset(payload: bytes) -> tuple[int, list[str]]:
    """(verb, names): the offered names of a REQUEST, the one of ACCEPTED, none else."""
    if not payload:
        raise ValueError("empty CHARSET payload")
    verb, rest = payload[0], payload[1:]
    if verb == CHARSET_REQUEST:
        if rest.startswith(b"[TTABLE]"):
            rest = rest[len(b"[TTABLE]") + 1 :]  # the version byte follows the marker
        if not rest:
            raise ValueError("CHARSET REQUEST without a separator")
        sep = rest[:1]
        return verb, [text(n) for n in rest[1:].split(sep) if n]
    if verb == CHARSET_ACCEPTED:
        return verb, [text(rest)]
    return verb, []


def build_charset_reply(accepted: str | None) -> bytes:
    if accepted is None:
        return bytes((CHARSET_REJECTED,))
    return bytes((CHARSET_ACCEPTED,)) + accepted.encode("ascii")


@functools.lru_cache(maxsize=256)
def python_codec(name: str) -> str | None:
    """The Python codec for a charset name from the wire, or None if unknown."""
    try:
        return codecs.lookup(name.strip()).name
    except (LookupError, ValueError):
        return None


def lang_charset(lang: str) -> str | None:
    """The charset named by a LANG value such as ``en_US.UTF-8@euro``, if any."""
    if "." not in lang:
        return None
    return lang.split(".", 1)[1].split("@", 1)[0] or None
