"""``--shell talker`` end to end: real ``shardd serve`` processes, players on sockets.

Players on one worker (``--workers 0``) and on two (``--workers 2``, where
``who`` and ``status`` show them on different shards). The in-process test at
the end looks into the worker's hub after 100 players have come and gone.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ServerProcess, async_wait_until, run_shardd, wait_until
from talker_peers import Player

from shardd.listeners import bind
from workers.admission import AdmissionLimits
from workers.bus.api import Message
from workers.serving import Server, ServerSettings, SessionOptions
from workers.talker import BURST, MAX_TEXT, render, talker

ARGS = ("--shell", "talker", "--connect-maxwait", "0.3")
ALARMING = re.compile(r"WARNING|ERROR|CRITICAL|Traceback", re.IGNORECASE)


@pytest.fixture
def players() -> Iterator[Callable[..., Player]]:
    made: list[Player] = []

    def make(port: int, name: str | None = None) -> Player:
        player = Player(port, name)
        made.append(player)
        return player

    yield make
    for player in made:
        player.close()


@pytest.fixture
def talk(serve: Callable[..., ServerProcess]) -> ServerProcess:
    return serve(*ARGS)


def test_name_is_asked_until_good_and_free(talk: ServerProcess, players: Any) -> None:
    players(talk.port, "Alice")
    bob = players(talk.port)
    for bad in ("", "two words", "x" * 21, "caf\u00e9", "semi;colon"):
        bob.wait_prompt("What is your name? ")
        bob.send(bad)
        if bad:
            bob.expect("A name is 1-20 letters, digits, - or _.")
    bob.wait_prompt("What is your name? ")
    bob.send("aLiCe")  # names are unique whatever their case
    bob.expect("The name aLiCe is taken.")
    bob.wait_prompt("What is your name? ")
    bob.send("Bob")
    bob.expect("Welcome, Bob! You are in room lobby. Type help for commands.")
    bob.wait_prompt("> ")


def test_say_stays_in_the_room_and_join_moves(talk: ServerProcess, players: Any) -> None:
    alice, bob, carol = (players(talk.port, n) for n in ("Alice", "Bob", "Carol"))
    carol.command("join Cellar", "You are in room cellar.")
    alice.expect("Carol leaves lobby.")
    bob.expect("Carol leaves lobby.")
    alice.command("say hello there", "You say: hello there")
    bob.expect("[lobby] Alice says: hello there")
    alice.command("shout done", "You shout: done")
    carol.expect("Alice shouts: done")  # published after the say: the say never came
    assert not any("hello there" in line for line in carol.lines), carol.lines

    bob.command("join cellar", "You are in room cellar.")
    alice.expect("Bob leaves lobby.")
    carol.expect("Bob joins cellar.")
    bob.command("say down here", "You say: down here")
    carol.expect("[cellar] Bob says: down here")
    bob.command("join cellar", "You are in room cellar already.")
    bob.command("join no/rooms", "A room is 1-20 letters, digits, - or _.")


def test_tell_who_shout_and_quit(talk: ServerProcess, players: Any) -> None:
    alice, bob = players(talk.port, "Alice"), players(talk.port, "Bob")
    alice.command("tell bob psst", "You tell Bob: psst")  # the name in any case
    bob.expect("Alice tells you: psst")
    alice.command("tell Nobody hi", "No one called Nobody is here.")
    alice.command("tell Bob", "Tell them what?")

    alice.send("who")
    alice.expect("Players (2):")
    assert re.fullmatch(r"  Alice +shard 0 \(you\)", alice.expect("  Alice")), alice.lines
    assert re.fullmatch(r"  Bob +shard 0", alice.expect("  Bob"))

    bob.command("join attic", "You are in room attic.")
    bob.command("shout fire!", "You shout: fire!")
    alice.expect("Bob shouts: fire!")
    alice.command("join attic", "You are in room attic.")
    bob.expect("Alice joins attic.")
    alice.command("quit", "Goodbye.")
    assert alice.closed()
    bob.expect("Alice leaves attic.")
    carol = players(talk.port, "Carol")  # Alice's name is free again, and so is
    carol.close()  # a player's who just goes away without quit: the room hears it
    players(talk.port, "Alice").command("join attic", "You are in room attic.")
    bob.expect("Alice joins attic.")
    assert not ALARMING.search(talk.log_text()), talk.log_text()


def test_bounds_rate_length_and_control_characters(talk: ServerProcess, players: Any) -> None:
    alice, bob = players(talk.port, "Alice"), players(talk.port, "Bob")
    too_long = "x" * (MAX_TEXT + 1)
    alice.command(f"say {too_long}", f"That is too long: at most {MAX_TEXT} characters.")
    alice.command("say \x1b[2Jclear \x07screen", "You say: [2Jclear screen")
    bob.expect("[lobby] Alice says: [2Jclear screen")  # no escape reaches Bob's terminal
    alice.command("dance", "Unknown command 'dance'; type help for commands.")
    alice.command("help", "Commands:")


def test_a_burst_is_cut_to_the_allowance(talk: ServerProcess, players: Any) -> None:
    alice, bob = players(talk.port, "Alice"), players(talk.port, "Bob")
    sent = 3 * int(BURST)
    alice.sock.sendall(b"".join(f"say flood {n}\r\n".encode() for n in range(sent)))
    answers = [alice.expect("You ") for _ in range(sent)]
    heard = [a for a in answers if a.startswith("You say: flood")]
    # the allowance refills as the lines are read: a few more than BURST may pass
    assert BURST <= len(heard) <= BURST + 5, answers
    assert answers.count("You are talking too fast.") == sent - len(heard)
    # talking again once the allowance has refilled (asked until it has)
    wait_until(lambda: alice.command("say end", "You ") == "You say: end", 10, "a refill")
    bob.expect("[lobby] Alice says: end")
    # one publisher, one channel: what Bob got came in order, before "end"
    said = [line.split(": ", 1)[1] for line in heard]
    assert [line.split(": ", 1)[1] for line in bob.skipped] == said


async def test_sessions_leave_nothing_in_the_hub() -> None:
    """100 players come and go (half quit, half hang up): no session,
    subscription, channel or task of theirs is left."""
    sock = bind("127.0.0.1", 0)
    # every player comes from 127.0.0.1: no limits per address
    limits = AdmissionLimits(max_sessions_per_ip=0, max_connect_rate_per_ip=0)
    settings = ServerSettings(manage_gc=False, admission=limits)
    server = Server(sock, SessionOptions(shell=talker, connect_maxwait=0.2), settings)
    serving = asyncio.get_running_loop().create_task(server.serve({}))
    baseline = len(asyncio.all_tasks())
    port = sock.getsockname()[1]

    async def play(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(reader.readuntil(b"name? "), 10)
        writer.write(f"P{n}\r\nsay hi\r\njoin r{n % 7}\r\n".encode())
        await asyncio.wait_for(reader.readuntil(f"room r{n % 7}.".encode()), 10)
        if n % 2:
            writer.write(b"quit\r\n")
            await asyncio.wait_for(reader.readuntil(b"Goodbye."), 10)
        writer.close()

    try:
        await async_wait_until(lambda: server.listening, 10, "listening")
        for start in range(0, 100, 20):
            await asyncio.gather(*(play(n) for n in range(start, start + 20)))
        hub = server.bus
        await async_wait_until(lambda: not server.sessions.live, 10, "sessions to end")
        await async_wait_until(
            lambda: not hub.sessions and not hub.channels and hub.subscription_count == 0,
            10,
            "the hub to be empty",
        )
        await async_wait_until(
            lambda: len(asyncio.all_tasks()) <= baseline, 10, "the players' tasks to end"
        )
    finally:
        server.stop("quit")
        await asyncio.wait_for(serving, 10)
        sock.close()


# ------------------------------------------------------------ across workers


def _shards(server: ServerProcess, players: list[Player]) -> list[int]:
    """Each player's shard, as ``status`` lists its session (by its address)."""
    peers = [":".join(map(str, p.sock.getsockname()[:2])) for p in players]

    found: list[list[int]] = []

    def listed() -> bool:
        done = run_shardd("status", "--json", "--port", str(server.port))
        assert done.returncode == 0, done.stderr
        rows = {row["peer"]: row["shard"] for row in json.loads(done.stdout)["connections"]}
        if set(peers) <= set(rows):
            found.append([rows[peer] for peer in peers])
        return bool(found)

    wait_until(listed, 20, "every player in status")
    return found[-1]


def test_players_on_two_shards_talk(serve: Callable[..., ServerProcess], players: Any) -> None:
    server = serve(*ARGS, "--workers", "2")
    # the kernel spreads connections over the shards' sockets: connect until
    # status shows one on each
    arrived: list[Player] = []
    while len(set(_shards(server, arrived))) < 2:
        assert len(arrived) < 40, "40 connections, all on one shard"
        arrived.append(players(server.port))
    shards = _shards(server, arrived)
    alice = arrived[shards.index(0)]
    bob = arrived[shards.index(1)]
    alice.wait_prompt("What is your name? ")
    alice.send("Alice")
    alice.expect("Welcome, Alice!")
    bob.wait_prompt("What is your name? ")
    bob.send("ALICE")  # taken, on the other shard
    bob.expect("The name ALICE is taken.")
    bob.wait_prompt("What is your name? ")
    bob.send("Bob")
    bob.expect("Welcome, Bob!")
    alice.expect("Bob joins lobby.")

    bob.send("who")
    assert re.fullmatch(r"  Alice +shard 0", bob.expect("  Alice"))
    assert re.fullmatch(r"  Bob +shard 1 \(you\)", bob.expect("  Bob"))

    alice.command("say across", "You say: across")
    bob.expect("[lobby] Alice says: across")
    bob.command("tell Alice hush", "You tell Alice: hush")
    alice.expect("Bob tells you: hush")
    alice.command("join far", "You are in room far.")
    bob.expect("Alice leaves lobby.")
    bob.command("shout everywhere", "You shout: everywhere")
    alice.expect("Bob shouts: everywhere")
    bob.command("join far", "You are in room far.")
    alice.expect("Bob joins far.")
    bob.command("quit", "Goodbye.")
    alice.expect("Bob leaves far.")
    assert bob.closed()
    players(server.port, "bob")  # free again, once Bob has gone
    assert not ALARMING.search(server.log_text()), server.log_text()


def test_logins_list_no_one(serve: Callable[..., ServerProcess], players: Any) -> None:
    """A login checks its name with who(name=...), never by listing everyone:
    the supervisor relays no session for 30 logins on two shards (listing
    everyone, 10 000 logins cost 10 000² entries, and a worker its heartbeat)."""
    server = serve(*ARGS, "--workers", "2")
    arrived = [players(server.port, f"p{n}") for n in range(30)]
    assert set(_shards(server, arrived)) == {0, 1}
    relay = json.loads(run_shardd("status", "--json", "--port", str(server.port)).stdout)
    assert relay["supervisor"]["bus_relay"]["who_listed"] == 0
    arrived[0].send("who")  # a who command does list everyone
    arrived[0].expect("Players (30):")
    relay = json.loads(run_shardd("status", "--json", "--port", str(server.port)).stdout)
    assert relay["supervisor"]["bus_relay"]["who_listed"] > 0


def test_a_message_shared_by_subscribers_is_rendered_once() -> None:
    """A worker's subscribers share one Message: the text is made once for all."""
    shout = Message("talker.shout", "1.2", {"kind": "shout", "name": "u1", "text": "hey"})
    text = render(shout)
    assert text == "u1 shouts: hey" and render(shout) is text
    other = Message("talker.shout", "1.3", {"kind": "shout", "name": "u2", "text": "hey"})
    assert render(other) == "u2 shouts: hey" and render(shout) == text
    assert render(Message(None, "1.4", ["not", "a", "talker's"])) is None
