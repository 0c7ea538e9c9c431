"""Who the client is, from its TTYPE cycle: MTTS, the convention of MUD clients.

A terminal answers every TTYPE SEND with its terminal type (inetutils-telnet
sends ``XTERM-256COLOR`` again and again). A MUD client that follows MTTS
(https://tintin.mudhalla.net/protocols/mtts/) answers the first SEND with its
own name, the second with the terminal type and the third with ``MTTS <n>``,
a bitfield of what it supports. A few clients older than MTTS still put
their name first (TinyFugue: ``TINYFUGUE``, ``ANSI-ATTR``, ``ANSI``).

Pure functions of the values received: the server decides when to ask.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: the largest MTTS value taken: 32 bits hold every flag defined, and a
#: client cannot make us hold a number of its choosing
MTTS_MAX = 2**32 - 1


class Mtts(enum.IntFlag):
    """The MTTS bits (the third TTYPE reply, ``MTTS <n>``); unknown bits are kept."""

    ANSI = 1
    VT100 = 2
    UTF8 = 4
    COLORS_256 = 8
    MOUSE_TRACKING = 16
    OSC_COLOR_PALETTE = 32
    SCREEN_READER = 64
    PROXY = 128
    TRUECOLOR = 256
    MNES = 512
    MSLP = 1024
    SSL = 2048


# names as status shows them, in bit order
_FLAG_NAMES = {
    Mtts.ANSI: "ANSI",
    Mtts.VT100: "VT100",
    Mtts.UTF8: "UTF-8",
    Mtts.COLORS_256: "256 colors",
    Mtts.MOUSE_TRACKING: "mouse tracking",
    Mtts.OSC_COLOR_PALETTE: "OSC color palette",
    Mtts.SCREEN_READER: "screen reader",
    Mtts.PROXY: "proxy",
    Mtts.TRUECOLOR: "truecolor",
    Mtts.MNES: "MNES",
    Mtts.MSLP: "MSLP",
    Mtts.SSL: "TLS",
}

#: Clients known to send their own name as the first TTYPE reply without
#: following it with MTTS (upper case, as they send it).
CLIENTS_WITHOUT_MTTS = frozenset({"TINYFUGUE", "MUSHCLIENT", "ZMUD", "CMUD", "POTATO", "ATLANTIS"})

_MTTS = re.compile(r"MTTS (\d{1,10})", re.IGNORECASE)


def parse_mtts(value: str) -> int | None:
    """The bitfield of an ``MTTS <n>`` reply; None if ``value`` is not one."""
    match = _MTTS.fullmatch(value.strip())
    if match is None:
        return None
    bits = int(match.group(1))
    return bits if bits <= MTTS_MAX else None


def flag_names(bits: int) -> list[str]:
    """The names of the MTTS flags set in ``bits``, in bit order; unknown bits as numbers."""
    names = [name for flag, name in _FLAG_NAMES.items() if bits & flag]
    unknown = bits & ~sum(_FLAG_NAMES)
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            names.append(str(bit))
        bit <<= 1
    return names


@dataclass(frozen=True, slots=True)
class Identity:
    """What a TTYPE cycle says: the client's name, its terminal, its MTTS bits."""

    client_name: str | None = None
    #: the terminal type, lower case
    terminal: str | None = None
    mtts: int | None = None


def cycle_ended(values: Sequence[str]) -> bool:
    """Whether a TTYPE cycle that received ``values`` so far has nothing more to say.

    It ends when a value repeats the previous one or the first one (RFC 1091:
    the client's list is exhausted), or with an MTTS value (the last of MTTS).
    """
    n = len(values)
    if n < 2:
        return False
    last = values[-1]
    return last in (values[0], values[-2]) or (n >= 3 and parse_mtts(last) is not None)


def identify(values: Sequence[str]) -> Identity:
    """The client's identity from the TTYPE values it sent, in order."""
    if not values:
        return Identity()
    first = values[0]
    second = values[1] if len(values) > 1 else None
    if len(values) >= 3 and second is not None:
        mtts = parse_mtts(values[2])
        if mtts is not None:
            return Identity(first, second.lower(), mtts)
    if first.upper() in CLIENTS_WITHOUT_MTTS:
        terminal = second.lower() if second is not None and second != first else None
        return Identity(first, terminal)
    return Identity(None, first.lower())
