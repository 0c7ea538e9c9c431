"""Which character sets a client may choose for its session, and checking them.

A client names a charset three ways: NEW-ENVIRON ``LANG=en_US.<name>``,
accepting one of the server's CHARSET offers, or offering its own list. Each
name goes through :meth:`Charsets.codec`: it must be a Python codec on the
allow-list (``--charsets``), or the choice is refused and the session keeps
its encoding. Without that, a client could pick ``bz2`` (786 bytes grew a
worker to 2 GB) or ``utf-16`` and ``punycode`` (tracebacks).

Every charset on the list, the operator's too, must be a text encoding that
reads and writes ASCII as ASCII and keeps no state between characters: telnet
commands, line ends and the shell's prompts are ASCII, and the reader may
decode each chunk on its own.

Building a :class:`Charsets` imports every codec on it: the supervisor does
so before it drops privileges, after which the interpreter may no longer be
able to read its library (a virtualenv under /root).
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
from collections.abc import Iterable

#: What telnet clients really use: Unicode, Latin-1 and the ISO-8859 family,
#: the DOS and Windows code pages, Cyrillic, Thai, Chinese, Korean, Japanese.
DEFAULT_CHARSETS = (
    "utf-8", "ascii", "latin-1",
    *(f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
    "cp437", "cp850", "cp852", "cp866",
    *(f"cp{n}" for n in range(1250, 1259)),
    "koi8-r", "koi8-u", "tis-620", "cp874",
    "big5", "big5hkscs", "gbk", "gb2312", "gb18030",
    "euc_kr", "cp949", "shift_jis", "cp932", "euc_jp",
)  # fmt: skip

_ASCII = bytes(range(0x20, 0x7F)) + b"\r\n\t\x00\x07\x08\x1b\x7f"


def check_charset(name: str) -> str:
    """The Python codec ``name`` stands for; ValueError unless a session may use it."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        raise ValueError(f"unknown charset {name!r}") from None
    codec = info.name
    if not info._is_text_encoding:  # bz2, zlib, hex, base64, rot13, uu, quopri
        raise ValueError(f"{name!r} is not a text encoding")
    # utf-16 and utf-32 (two or four bytes for one ASCII letter), utf-7, punycode and
    # idna change ASCII; iso2022 and hz switch state with escape sequences
    try:
        ascii_kept = _ASCII.decode(codec) == _ASCII.decode("ascii") and (
            _ASCII.decode("ascii").encode(codec) == _ASCII
        )
    except UnicodeError:
        ascii_kept = False
    if not ascii_kept or codec.startswith("iso2022") or codec == "hz":
        raise ValueError(f"{name!r} does not keep ASCII and telnet's bytes as they are")
    return codec


class Charsets:
    """An allow-list of charsets, by codec: what a client may choose."""

    __slots__ = ("_allowed", "_names")

    def __init__(self, names: Iterable[str] = DEFAULT_CHARSETS) -> None:
        self._allowed = frozenset(check_charset(name) for name in names)
        # Every spelling of an allowed codec Python knows, normalised. Names
        # from the wire are looked up here and never passed to codecs.lookup,
        # whose search function caches every name it is asked, misses too
        # (encodings._cache): a client naming charsets at random would grow
        # it for the life of the worker.
        names_of: dict[str, str] = {}
        for alias, module in encodings.aliases.aliases.items():
            codec = _codec_of(module)
            if codec in self._allowed:
                names_of[_normal(alias)] = codec
        for codec in self._allowed:
            names_of[_normal(codec)] = codec
            names_of[_normal(codecs.lookup(codec).name)] = codec
        self._names = names_of

    def __contains__(self, codec: object) -> bool:
        return codec in self._allowed

    def codec(self, name: str) -> str | None:
        """The codec for a charset name from the wire, if the list allows it."""
        if len(name) > MAX_NAME:
            return None
        return self._names.get(_normal(name))

    def __repr__(self) -> str:
        return f"Charsets({sorted(self._allowed)})"


#: longer names from the wire are refused unread (IANA's longest is 45)
MAX_NAME = 64


def _normal(name: str) -> str:
    # as the encodings package normalises, and case and "." folded
    return encodings.normalize_encoding(name.strip().lower()).replace(".", "_")


def _codec_of(module: str) -> str | None:
    try:
        return codecs.lookup(module).name
    except LookupError:  # an alias of a codec this Python was built without
        return None
