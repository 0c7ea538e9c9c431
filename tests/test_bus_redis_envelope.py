"""What travels through Redis: envelopes and who entries, parsed without I/O."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.bus.api import MAX_CHANNEL, SessionInfo
from workers.bus.redis_envelope import (
    CLOSE,
    DIRECT,
    PUBLICATION,
    Envelope,
    channel_key,
    inbox_key,
    pack_envelope,
    pack_who_entry,
    unpack_envelope,
    unpack_who_entry,
    worker_of,
)
from workers.bus.redis_url import check_host_id, parse_redis_url

ids = st.text(min_size=1, max_size=40)
senders = st.none() | ids


@given(st.binary(max_size=2048))
def test_any_bytes_are_an_envelope_or_refused(data: bytes) -> None:
    envelope = unpack_envelope(data)
    assert envelope is None or isinstance(envelope, Envelope)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=20)
        | st.binary(max_size=20),
        lambda inner: st.lists(inner, max_size=6),
        max_leaves=20,
    )
)
def test_any_msgpack_value_is_an_envelope_or_refused(value: object) -> None:
    envelope = unpack_envelope(msgpack.packb(value, use_bin_type=True))
    assert envelope is None or isinstance(envelope, Envelope)


@given(ids, st.text(min_size=1, max_size=MAX_CHANNEL), senders, st.binary(max_size=512))
def test_publications_round_trip(
    origin: str, channel: str, sender: str | None, body: bytes
) -> None:
    packed = pack_envelope(origin, PUBLICATION, channel, sender, body)
    assert unpack_envelope(packed) == Envelope(origin, PUBLICATION, channel, sender, body)


@given(ids, ids, senders, st.binary(max_size=512), st.text(max_size=100))
def test_direct_messages_and_closes_round_trip(
    origin: str, target: str, sender: str | None, body: bytes, line: str
) -> None:
    direct = pack_envelope(origin, DIRECT, target, sender, body)
    assert unpack_envelope(direct) == Envelope(origin, DIRECT, target, sender, body)
    close = pack_envelope(origin, CLOSE, target, None, line)
    assert unpack_envelope(close) == Envelope(origin, CLOSE, target, None, line)


def test_shapes_that_are_refused() -> None:
    def packed(*fields: object) -> bytes:
        return bytes(msgpack.packb(list(fields), use_bin_type=True))

    assert unpack_envelope(packed("a/1", "x", "ch", None, b"")) is None  # unknown kind
    assert unpack_envelope(packed("a/1", [], "ch", None, b"")) is None  # a kind not hashable
    assert unpack_envelope(packed("a/1", DIRECT, "a/1.1", None, "text")) is None  # str payload
    assert unpack_envelope(packed("a/1", CLOSE, "a/1.1", None, b"bytes")) is None
    assert unpack_envelope(packed("", PUBLICATION, "ch", None, b"")) is None  # no origin
    assert unpack_envelope(packed("a/1", PUBLICATION, "c" * (MAX_CHANNEL + 1), None, b"")) is None
    assert unpack_envelope(packed("a/1", PUBLICATION, "ch", 7, b"")) is None  # sender not str
    assert unpack_envelope(packed("a/1", PUBLICATION, "ch", None)) is None  # four fields
    assert unpack_envelope(b"\xc1") is None  # never used in msgpack


def test_channels_and_inboxes_never_share_a_name() -> None:
    # whatever a shell calls its channel, it is not some worker's inbox
    assert channel_key("inbox:a/1") != inbox_key("a/1")
    assert not channel_key("@x").startswith(inbox_key(""))


@given(st.binary(max_size=300), st.binary(max_size=300) | st.text(max_size=50))
def test_any_who_entry_is_listed_or_refused(data: bytes, session_id: bytes | str) -> None:
    info = unpack_who_entry("b/7", session_id, data)
    assert info is None or isinstance(info, SessionInfo)


def test_who_entries_round_trip() -> None:
    info = SessionInfo(
        id="b/7.3", shard=1, peer="127.0.0.1:4000", term="XTERM", name="bob", host="b"
    )
    assert unpack_who_entry("b/7", b"b/7.3", pack_who_entry(info)) == info


def test_a_session_id_names_its_worker() -> None:
    assert worker_of("mud.example.org/1234.5") == "mud.example.org/1234"
    assert worker_of("1234.5") is None  # no host: not for Redis
    assert worker_of("a/1.x") is None
    assert worker_of("nonsense") is None


def test_redis_urls() -> None:
    address = parse_redis_url("redis://:secret@10.0.0.5:6380/2")
    assert (address.host, address.port, address.db) == ("10.0.0.5", 6380, 2)
    assert address.display() == "10.0.0.5:6380"  # never the password
    assert parse_redis_url("rediss://[::1]/").display() == "[::1]:6379"
    for bad in ("http://h/0", "redis://h:0/0", "redis://h/-1", "redis://", "redis://h/0?db=1"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def test_host_ids() -> None:
    assert check_host_id("mud-1.example.org") == "mud-1.example.org"
    for bad in ("", "a/b", "a b", "-a", "x" * 65):
        with pytest.raises(ValueError):
            check_host_id(bad)
