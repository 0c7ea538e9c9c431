"""MSDP (telnet option 69): typeless variables, tables and arrays, and its commands.

A payload is a sequence of ``MSDP_VAR <name> MSDP_VAL <value>``; a value is a
string, a table (``MSDP_TABLE_OPEN``, pairs of VAR and VAL, ``MSDP_TABLE_CLOSE``)
or an array (``MSDP_ARRAY_OPEN``, each item after a VAL, ``MSDP_ARRAY_CLOSE``).
Names and values are text without NUL, the six MSDP bytes or IAC; we encode it
as UTF-8. A variable may also be given several values in a row
(``VAR REPORT VAL HEALTH VAL MANA``): clients send command arguments that way,
and :func:`decode` returns them as a list, like an array.

Python values: ``str``, ``list`` (array) and ``dict`` (table), nested; encoding
also takes ``int`` (and ``bool`` as "1"/"0"), sent as its digits.

The commands LIST, REPORT, SEND, RESET and UNREPORT are answered by
:class:`MSDPServer`, a sans-I/O state object: payloads in, payloads to send out,
variable values from a callback.

Specification: the MSDP page of Mudhalla (https://tintin.mudhalla.net/protocols/msdp/).

Bounds on what a client can make us do: the payload size (``MAX_PAYLOAD``,
the engine's subnegotiation cap), the nesting of tables and arrays
(``MAX_DEPTH``; the parser recurses at most that deep) and the variables one
session may have reported (``MAX_REPORTED``). A malformed payload raises
:class:`MSDPError` with a one-line reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeAlias

from workers.telnet.engine import DEFAULT_SB_LIMIT

VAR = 1
VAL = 2
TABLE_OPEN = 3
TABLE_CLOSE = 4
ARRAY_OPEN = 5
ARRAY_CLOSE = 6

#: What :func:`decode` accepts: the engine discards longer subnegotiations anyway.
MAX_PAYLOAD = DEFAULT_SB_LIMIT
#: Deepest nesting of tables and arrays in a received payload.
MAX_DEPTH = 16
#: Variables one session may have reported at once (REPORT beyond it is ignored).
MAX_REPORTED = 64

MSDPValue: TypeAlias = "str | list[MSDPValue] | dict[str, MSDPValue]"
#: What :func:`encode` takes: MSDP values, with ints (and bools) for numbers.
Encodable: TypeAlias = "str | int | Sequence[Encodable] | Mapping[str, Encodable]"

COMMANDS = ("LIST", "REPORT", "RESET", "SEND", "UNREPORT")
LISTS = ("COMMANDS", "LISTS", "REPORTABLE_VARIABLES", "REPORTED_VARIABLES", "SENDABLE_VARIABLES")

# what a name or a value may not contain: NUL and the MSDP bytes (UTF-8 has no 0xFF)
_FORBIDDEN = re.compile("[\x00-\x06]")
# a received payload cut into text runs and single control bytes (the split
# keeps the controls: even items are text, odd items one control byte)
_CONTROLS = re.compile(rb"([\x00-\x06\xff])")


class MSDPError(ValueError):
    """A malformed MSDP payload; the message says why, in one line."""


# -------------------------------------------------------------------- encoding


def encode(variables: Mapping[str, Encodable] | Iterable[tuple[str, Encodable]]) -> bytes:
    """The payload carrying ``variables`` (a mapping, or pairs to repeat a name).

    Lists go out as arrays and dicts as tables. Raises ValueError for an empty
    name, or a name or value holding U+0000 to U+0006 (NUL and the MSDP bytes)
    or a lone surrogate; TypeError for a value that is none of the above.
    """
    pairs = variables.items() if isinstance(variables, Mapping) else variables
    out = bytearray()
    for name, value in pairs:
        _encode_pair(out, name, value)
    return bytes(out)


def encode_command(command: str, *args: str) -> bytes:
    """``VAR command VAL arg VAL arg ...``: a command as clients send it."""
    out = bytearray((VAR,))
    out += _text(command, name=True)
    for arg in args:
        out.append(VAL)
        out += _text(arg)
    if not args:
        out.append(VAL)
    return bytes(out)


def _encode_pair(out: bytearray, name: str, value: Encodable) -> None:
    out.append(VAR)
    out += _text(name, name=True)
    out.append(VAL)
    _encode_value(out, value)


def _encode_value(out: bytearray, value: Encodable) -> None:
    if isinstance(value, str):
        out += _text(value)
    elif isinstance(value, bool):
        out += b"1" if value else b"0"
    elif isinstance(value, int):
        out += str(value).encode("ascii")
    elif isinstance(value, Mapping):
        out.append(TABLE_OPEN)
        for key, item in value.items():
            _encode_pair(out, key, item)
        out.append(TABLE_CLOSE)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append(ARRAY_OPEN)
        for item in value:
            out.append(VAL)
            _encode_value(out, item)
        out.append(ARRAY_CLOSE)
    else:
        raise TypeError(f"MSDP cannot carry a {type(value).__name__}")


def _text(text: str, name: bool = False) -> bytes:
    if name and not text:
        raise ValueError("empty MSDP variable name")
    if _FORBIDDEN.search(text):
        raise ValueError(f"MSDP text holds a reserved character: {text[:40]!r}")
    return text.encode()


# -------------------------------------------------------------------- decoding


def decode(payload: bytes) -> list[tuple[str, MSDPValue]]:
    """The (name, value) pairs of a received payload, in order.

    A name may come more than once. A variable given several values in a row
    gets them as a list. Raises :class:`MSDPError` when the payload is
    malformed, too large, nested deeper than ``MAX_DEPTH``, or not UTF-8.
    """
    if len(payload) > MAX_PAYLOAD:
        raise MSDPError(f"MSDP payload of {len(payload)} bytes, over {MAX_PAYLOAD}")
    parser = _Parser(payload)
    pairs = parser.pairs(depth=0, closer=None)
    return pairs


def decode_dict(payload: bytes) -> dict[str, MSDPValue]:
    """:func:`decode` as a dict: a name given more than once keeps its last value."""
    return dict(decode(payload))


class _Parser:
    """Recursive descent over the tokens of one payload, at most MAX_DEPTH deep."""

    __slots__ = ("pos", "tokens")

    def __init__(self, payload: bytes) -> None:
        parts = _CONTROLS.split(payload)
        tokens: list[int | str] = []
        for i, part in enumerate(parts):
            if i % 2:
                byte = part[0]
                if byte == 0 or byte == 0xFF:
                    raise MSDPError(f"MSDP payload holds byte {byte}")
                tokens.append(byte)
            elif part:
                try:
                    tokens.append(part.decode("utf-8"))
                except UnicodeDecodeError:
                    raise MSDPError("MSDP text is not UTF-8") from None
        self.tokens = tokens
        self.pos = 0

    def _peek(self) -> int | str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def pairs(self, depth: int, closer: int | None) -> list[tuple[str, MSDPValue]]:
        """VAR name VAL value ... up to ``closer`` (TABLE_CLOSE) or the end."""
        pairs: list[tuple[str, MSDPValue]] = []
        while (token := self._peek()) != closer:
            if token != VAR:
                raise MSDPError(f"MSDP expected VAR, got {_describe(token)}")
            self.pos += 1
            name = self._peek()
            if not isinstance(name, str):
                raise MSDPError("MSDP variable without a name")
            self.pos += 1
            if self._peek() != VAL:
                raise MSDPError(f"MSDP variable {name[:40]!r} without a value")
            values: list[MSDPValue] = []
            while self._peek() == VAL:
                self.pos += 1
                values.append(self.value(depth))
            pairs.append((name, values[0] if len(values) == 1 else values))
        if closer is not None:
            self.pos += 1
        return pairs

    def value(self, depth: int) -> MSDPValue:
        """What follows a VAL: text, a table, an array, or nothing (an empty string)."""
        token = self._peek()
        if isinstance(token, str):
            self.pos += 1
            return token
        if token in (TABLE_OPEN, ARRAY_OPEN):
            if depth >= MAX_DEPTH:
                raise MSDPError(f"MSDP tables and arrays nested deeper than {MAX_DEPTH}")
            self.pos += 1
            if token == TABLE_OPEN:
                return dict(self.pairs(depth + 1, TABLE_CLOSE))
            return self.array(depth + 1)
        return ""  # VAL followed by VAR, VAL, a close or the end

    def array(self, depth: int) -> list[MSDPValue]:
        items: list[MSDPValue] = []
        while (token := self._peek()) != ARRAY_CLOSE:
            if token != VAL:
                raise MSDPError(f"MSDP expected VAL in an array, got {_describe(token)}")
            self.pos += 1
            items.append(self.value(depth))
        self.pos += 1
        return items


_NAMES = {
    VAR: "VAR",
    VAL: "VAL",
    TABLE_OPEN: "TABLE_OPEN",
    TABLE_CLOSE: "TABLE_CLOSE",
    ARRAY_OPEN: "ARRAY_OPEN",
    ARRAY_CLOSE: "ARRAY_CLOSE",
}


def _describe(token: int | str | None) -> str:
    if token is None:
        return "the end"
    if isinstance(token, str):
        return "text"
    return _NAMES.get(token, str(token))


# ------------------------------------------------------------ the server side


class MSDPInput(NamedTuple):
    """What :meth:`MSDPServer.receive` made of one payload."""

    #: payloads to send back, each one ``IAC SB MSDP ... IAC SE``
    replies: list[bytes]
    #: variables that are not commands (a client's CLIENT_NAME, ...), for the shell
    variables: list[tuple[str, MSDPValue]]


class MSDPServer:
    """One session's MSDP state on the server: answers commands, tracks REPORT.

    ``reportable``: the variables a client may REPORT (and SEND).
    ``sendable``: more variables a client may only SEND.
    ``values(name)``: a variable's current value, or None if it has none now.

    Sans-I/O: :meth:`receive` takes a payload and returns the payloads to send;
    when variables change, :meth:`changed` returns the payload reporting the
    ones the client asked for. Variables nobody declared are never looked up.
    """

    __slots__ = ("max_reported", "reportable", "reported", "sendable", "values")

    def __init__(
        self,
        reportable: Iterable[str],
        values: Callable[[str], Encodable | None],
        *,
        sendable: Iterable[str] = (),
        max_reported: int = MAX_REPORTED,
    ) -> None:
        self.reportable = frozenset(reportable)
        self.sendable = self.reportable | frozenset(sendable)
        self.values = values
        self.max_reported = max_reported
        #: the variables the client asked to be reported, in the order asked
        self.reported: dict[str, None] = {}

    def receive(self, payload: bytes) -> MSDPInput:
        """Act on a client's payload. Raises :class:`MSDPError` if it is malformed."""
        replies: list[bytes] = []
        others: list[tuple[str, MSDPValue]] = []
        for name, value in decode(payload):
            command = name.upper()
            if command not in COMMANDS:
                others.append((name, value))
                continue
            args = _arguments(value)
            if command == "LIST":
                replies.extend(filter(None, (self._list(arg) for arg in args)))
            elif command == "SEND":
                reply = self._values(dict.fromkeys(a for a in args if a in self.sendable))
                if reply:
                    replies.append(reply)
            elif command == "REPORT":
                added = [a for a in args if a in self.reportable and a not in self.reported]
                added = added[: max(0, self.max_reported - len(self.reported))]
                self.reported.update(dict.fromkeys(added))
                reply = self._values(added)
                if reply:
                    replies.append(reply)
            elif command == "UNREPORT":
                for arg in args:
                    self.reported.pop(arg, None)
            elif command == "RESET" and (
                "REPORTED_VARIABLES" in args or "REPORTABLE_VARIABLES" in args
            ):
                self.reported.clear()
        return MSDPInput(replies, others)

    def changed(self, names: Iterable[str]) -> bytes | None:
        """The payload reporting those of ``names`` the client asked for, if any."""
        return self._values([name for name in names if name in self.reported])

    def reset(self) -> None:
        """Forget what was reported: MSDP was turned off, or is renegotiated."""
        self.reported.clear()

    def _list(self, which: str) -> bytes | None:
        items: Iterable[str]
        if which == "COMMANDS":
            items = COMMANDS
        elif which == "LISTS":
            items = LISTS
        elif which == "REPORTABLE_VARIABLES":
            items = sorted(self.reportable)
        elif which == "REPORTED_VARIABLES":
            items = self.reported
        elif which == "SENDABLE_VARIABLES":
            items = sorted(self.sendable)
        else:
            return None
        return encode({which: list(items)})

    def _values(self, names: Iterable[str]) -> bytes | None:
        pairs: list[tuple[str, Encodable]] = []
        for name in names:
            value = self.values(name)
            if value is not None:
                pairs.append((name, value))
        return encode(pairs) if pairs else None


def _arguments(value: MSDPValue) -> list[str]:
    """A command's arguments: its string values (tables in them are ignored)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []
