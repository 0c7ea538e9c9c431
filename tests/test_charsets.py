"""The charsets a client may choose (workers/telnet/charsets.py)."""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases

from hypothesis import given
from hypothesis import strategies as st

from workers.telnet.charsets import MAX_NAME, Charsets

CHARSETS = Charsets()


def _spellings() -> list[str]:
    """Every alias Python knows of an allowed codec, as clients write them."""
    names = []
    for alias, module in encodings.aliases.aliases.items():
        try:
            codec = codecs.lookup(module).name
        except LookupError:
            continue
        if codec in CHARSETS:
            names += [alias, alias.upper(), alias.replace("_", "-").upper()]
    return names


def test_every_spelling_of_an_allowed_charset_finds_the_codec_python_would() -> None:
    spellings = [*_spellings(), "UTF-8", "US-ASCII", "ISO-8859-1", "windows-1252", " utf-8 "]
    assert len(spellings) > 300
    for name in spellings:
        assert CHARSETS.codec(name) == codecs.lookup(name.strip()).name, name


def test_codecs_off_the_list_are_refused() -> None:
    for name in ("bz2", "zlib", "utf-16", "UTF-32", "punycode", "hex", "rot13", "idna", "utf-7"):
        assert CHARSETS.codec(name) is None, name
    assert CHARSETS.codec("u" * (MAX_NAME + 1)) is None


@given(st.text(max_size=80))
def test_a_name_from_the_wire_never_reaches_python_s_codec_cache(name: str) -> None:
    """encodings caches every name codecs.lookup is asked, misses too: a client
    naming charsets at random must not grow it."""
    before = dict(encodings._cache)  # type: ignore[attr-defined]
    codec = CHARSETS.codec(name)
    assert encodings._cache == before  # type: ignore[attr-defined]
    assert codec is None or codec in CHARSETS
