"""The bus hub of one process, through its public API (workers/bus/hub.py).

No backend: the hub alone is the bus, as with ``--workers 0``. Sessions are
real protocol instances, registered as a server registers them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from conftest import async_wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.bus.api import MAX_CHANNEL, MAX_MESSAGE, MAX_NAME, QUEUE_LIMIT, BusError, Message
from workers.bus.hub import BusHub
from workers.bus.session import SessionHandle
from workers.server import TelnetServer


def _session(hub: BusHub, n: int) -> SessionHandle:
    protocol = TelnetServer(shell=None)
    protocol.session_id = n
    return hub.open(protocol)


def _drain(subscription: Any) -> list[Message]:
    found = []
    while (message := subscription.get_nowait()) is not None:
        found.append(message)
    return found


async def test_publish_reaches_every_subscriber_once() -> None:
    hub = BusHub(prefix="1.")
    alice, bob, carol = (_session(hub, n) for n in (1, 2, 3))
    subs = [s.subscribe("room") for s in (alice, bob)]
    await carol.publish("room", {"text": "hi", "n": (1, 2)})
    for sub in subs:
        assert _drain(sub) == [Message("room", "1.3", {"text": "hi", "n": [1, 2]})]
    assert hub.counters["bus_out"] == 1 and hub.counters["bus_delivered"] == 2


async def test_exclude_self_and_same_subscription() -> None:
    hub = BusHub(prefix="1.")
    alice, bob = _session(hub, 1), _session(hub, 2)
    sub = alice.subscribe("room")
    assert alice.subscribe("room") is sub
    bob_sub = bob.subscribe("room")
    await alice.publish("room", "x", exclude_self=True)
    assert _drain(sub) == [] and len(_drain(bob_sub)) == 1


async def test_async_iteration_ends_on_unsubscribe() -> None:
    hub = BusHub()
    alice = _session(hub, 1)
    sub = alice.subscribe("room")
    got: list[Any] = []

    async def read() -> None:
        async for message in sub:
            got.append(message.data)

    reader = asyncio.get_running_loop().create_task(read())
    await alice.publish("room", 1)
    await alice.publish("room", 2)
    await async_wait_until(lambda: len(got) == 2, what="both messages read")
    alice.unsubscribe("room")
    await asyncio.wait_for(reader, 5)
    assert got == [1, 2]
    assert "room" not in hub.channels and hub.subscription_count == 0


async def test_refused_messages_and_channels() -> None:
    hub = BusHub()
    alice = _session(hub, 1)
    with pytest.raises(BusError, match="msgpack"):
        await alice.publish("room", object())
    with pytest.raises(BusError, match="bytes packed"):
        await alice.publish("room", b"x" * MAX_MESSAGE)
    with pytest.raises(BusError, match="longer than"):
        alice.subscribe("c" * (MAX_CHANNEL + 1))
    with pytest.raises(BusError):
        alice.subscribe("")
    with pytest.raises(BusError):
        alice.name = "n" * (MAX_NAME + 1)
    assert hub.counters["bus_out"] == 0


async def test_direct_messages_who_and_close() -> None:
    hub = BusHub(prefix="7.", host="here", shard=3)
    alice, bob = _session(hub, 1), _session(hub, 2)
    bob.name = "bob"
    assert await alice.send("7.2", ["hello"]) is True
    assert _drain(bob.inbox) == [Message(None, "7.1", ["hello"])]
    assert await alice.send("7.99", "nobody") is False
    who = {info.id: info for info in await alice.who()}
    assert set(who) == {"7.1", "7.2"}
    assert (who["7.2"].name, who["7.2"].shard, who["7.2"].host) == ("bob", 3, "here")
    assert await alice.close_session("7.99") is False


async def test_who_by_name_lists_only_those_so_called() -> None:
    """A login checks its name with who(name=...): the few so called, not everyone."""
    hub = BusHub(prefix="7.")
    alice, bob, carol, _dave = (_session(hub, n) for n in (1, 2, 3, 4))
    alice.name, bob.name = "Alice", "bob"
    assert [s.id for s in await carol.who(name="ALICE")] == ["7.1"]
    assert [s.id for s in await carol.who(name="carol")] == []
    carol.name = "alice"  # two may claim one name; the talker checks after claiming
    assert {s.id for s in await bob.who(name="alice")} == {"7.1", "7.3"}
    alice.name = "al"
    assert [s.id for s in await bob.who(name="Alice")] == ["7.3"]
    assert {s.id for s in await bob.who(name="")} == {"7.4"}  # the unnamed
    hub.closed(carol)
    assert await bob.who(name="alice") == [] and set(hub.names) == {"al", "bob"}
    with pytest.raises(BusError):
        await bob.who(name="x" * (MAX_NAME + 1))


async def test_a_session_closed_through_the_bus_leaves_who_at_once() -> None:
    """close_session's True means gone from who(), before the connection's end is seen."""
    hub = BusHub(prefix="7.")
    alice, bob = _session(hub, 1), _session(hub, 2)
    bob.name = "bob"
    sub = bob.subscribe("room")
    assert await alice.close_session("7.2", "bye") is True
    assert [s.id for s in await alice.who()] == ["7.1"]
    assert await alice.who(name="bob") == [] and sub.closed


async def test_a_closed_session_leaves_nothing() -> None:
    hub = BusHub()
    alice, bob = _session(hub, 1), _session(hub, 2)
    subs = [alice.subscribe(f"c{n}") for n in range(5)]
    bob.subscribe("c0")
    hub.closed(alice)
    assert all(sub.closed for sub in subs) and alice.inbox.closed
    assert set(hub.channels) == {"c0"} and list(hub.channels["c0"]) == [bob]
    assert hub.subscription_count == 1 and alice.id not in hub.sessions
    assert await bob.send(alice.id, "late") is False
    with pytest.raises(BusError):
        alice.subscribe("again")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(published=st.integers(0, 3 * QUEUE_LIMIT), read_every=st.integers(0, 50))
def test_queue_bound_holds_and_drops_are_counted(published: int, read_every: int) -> None:
    """However messages and reads interleave, a queue never holds more than
    QUEUE_LIMIT, what it gives is in publishing order, and every message is
    either read, still queued, or counted as dropped."""

    async def run() -> None:
        counters: Counter[str] = Counter()
        hub = BusHub(counters=counters)
        reader, writer = _session(hub, 1), _session(hub, 2)
        sub = reader.subscribe("c")
        got: list[int] = []
        for n in range(published):
            await writer.publish("c", n)
            assert len(sub) <= QUEUE_LIMIT
            if read_every and n % read_every == 0:
                got.extend(m.data for m in _drain(sub))
        left = [m.data for m in _drain(sub)]
        assert got + left == sorted(got + left)  # in order, gaps where dropped
        assert len(got) + len(left) + sub.dropped == published
        assert counters["bus_dropped"] == sub.dropped

    asyncio.run(run())


@settings(max_examples=40)
@given(plan=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=200))
def test_each_publishers_order_holds(plan: list[tuple[int, int]]) -> None:
    """Messages of several publishers on several channels, interleaved: each
    subscriber sees every publisher's messages in the order published."""

    async def run() -> None:
        hub = BusHub(prefix="p.")
        publishers = [_session(hub, n) for n in range(4)]
        listener = _session(hub, 9)
        subs = [listener.subscribe(f"c{c}") for c in range(3)]
        sent: dict[tuple[str, int], list[int]] = {}
        for seq, (who, channel) in enumerate(plan):
            await publishers[who].publish(f"c{channel}", seq)
            sent.setdefault((publishers[who].id, channel), []).append(seq)
        for channel, sub in enumerate(subs):
            for message in _drain(sub):
                assert message.sender is not None
                expected = sent[(message.sender, channel)]
                assert message.data == expected.pop(0)
        assert not any(sent.values())

    asyncio.run(run())
