"""Subnegotiation payload codecs: the NEW-ENVIRON fast path agrees with the byte-wise one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.telnet import options
from workers.telnet.telopt import ENV_ESC, ENV_USERVAR, ENV_VALUE, ENV_VAR, INFO, IS

# bytes biased toward the NEW-ENVIRON type codes, so that structure is common
_env_bytes = st.lists(
    st.one_of(
        st.sampled_from([ENV_VAR, ENV_VALUE, ENV_USERVAR, ENV_ESC]),
        st.integers(32, 126),
        st.integers(0, 255),
    ),
    max_size=60,
).map(bytes)


@settings(max_examples=500, deadline=None)
@given(verb=st.sampled_from([IS, INFO]), body=_env_bytes)
def test_environ_fast_path_matches_bytewise_parser(verb: int, body: bytes) -> None:
    payload = bytes((verb,)) + body
    try:
        expected = options._parse_environ_bytewise(payload)
    except ValueError:
        expected = None
    try:
        verb_seen, items = options.parse_environ(payload)
        assert verb_seen == verb
    except ValueError:
        items = None
    assert items == expected


def test_environ_round_trip() -> None:
    env = {"USER": "root", "LANG": "en_US.UTF-8", "ODD": "a\x01b\x02c\x00d\x03e"}
    _verb, items = options.parse_environ(options.build_environ_is(env))
    assert {name: value for _kind, name, value in items} == env
    assert [kind for kind, _n, _v in items] == [ENV_VAR, ENV_USERVAR, ENV_USERVAR]


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=40),
    cuts=st.lists(st.integers(0, 200), max_size=6),
    encoding=st.sampled_from(["utf-8", "latin-1", "cp437", "utf-16", "shift_jis"]),
)
def test_reader_decodes_any_split_like_one_decode(
    text: str, cuts: list[int], encoding: str
) -> None:
    """The reader's direct-decode fast path never splits a character wrongly."""
    from workers.stream_reader import TelnetReader

    data = text.encode(encoding, "replace")
    expected = data.decode(encoding, "replace")
    reader = TelnetReader(encoding=encoding, encoding_errors="replace")
    points = sorted({c % (len(data) + 1) for c in cuts})
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        if end > start:
            reader.feed_data(data[start:end])
    reader.feed_eof()
    assert reader._buf == expected
