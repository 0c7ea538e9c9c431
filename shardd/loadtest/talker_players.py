"""Players of a talker (``--shell talker``): the sessions of the chat and shout scenarios.

A :class:`Player` logs in as the talker asks (its name at the name prompt,
then ``join ROOM`` once welcomed) and is ready when the talker confirms the
join. From then on it says what its scenario tells it to, and hands what it
hears from others to its :class:`Players`, with the CLOCK_MONOTONIC time
the bytes arrived (``time.monotonic``: one clock for every process on the
machine, so a sender's time and a receiver's compare across processes).

Names are ``u<index>``, the player's index in the whole run (over every
client process); its room is ``r<index // room size>``, so a run's rooms and
members follow from the session count and room size alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from shardd.loadtest.hooks import Hooks, close_all, lanes
from shardd.loadtest.latencies import Latencies
from shardd.loadtest.sessions import Tally
from shardd.loadtest.talker_lines import (
    Joined,
    Prompt,
    Said,
    Shouted,
    TalkerLines,
    TooFast,
    Welcome,
)
from shardd.loadtest.target import (
    CLOSE_GRACE,
    NEGOTIATION_TIMEOUT,
    Target,
    connect_failure,
    lost_failure,
    open_session,
)
from workers.telnet.client import TelnetClientSession

_now = time.monotonic

#: failure kinds of a login, beside the connection's own
NAME_REFUSED = "name refused"
LOGIN_TIMEOUT = "login timeout"
#: a line the talker refused: the player was over its allowance
TOO_FAST = "talking too fast"
#: a chat message's id: its sender's index and sequence number in one int
SEQ_BITS = 20


def player_name(index: int) -> str:
    return f"u{index}"


def room_of(index: int, room_size: int) -> str:
    return f"r{index // room_size}"


def message_id(sender: int, seq: int) -> int:
    return sender << SEQ_BITS | seq


def sender_index(name: str) -> int | None:
    """The run's index of the player named ``name``; None if no player of a load test."""
    if name[:1] != "u" or not name[1:].isdigit() or len(name) > 12:
        return None
    return int(name[1:])


class Players:
    """What the players of one client process share: the tally, and what they heard."""

    def __init__(self, negotiation_timeout: float, room_size: int) -> None:
        self.tally = Tally(negotiation_timeout)
        self.loop = self.tally.loop
        self.room_size = room_size
        self.login = Latencies()
        #: the phase a failure of a ready player counts in
        self.phase = "chat"
        self.stopping = False
        #: chat: message id -> [members who heard it, the last one's receive time]
        self.receipts: dict[int, list[float]] = {}
        self.heard = 0
        #: chat: a sender's message that came after a later one of it, or twice
        self.out_of_order = 0
        #: chat: says heard of other rooms or players not of this run (the talker misrouted)
        self.stray = 0
        #: shout: the shout's text, its sender, and its receive times
        self.shout_text: str | None = None
        self.shouter: Player | None = None
        self.shout_times: list[float] = []
        #: ready players yet to hear all they wait for: every other member's last
        #: message (chat) or the shout; ``all_heard`` is set once there are none
        self.waiting: set[Player] = set()
        self.all_heard = asyncio.Event()
        self.ready: list[Player] = []
        #: chat: how many others' last messages a player waits for
        self.expect_senders: Callable[[Player], int] = lambda _p: 0

    def wait_for(self, players: Iterable[Player]) -> None:
        """From now on, ``all_heard`` is set once every one of ``players`` is done."""
        self.waiting = {p for p in players if not p.closing}
        if not self.waiting:
            self.all_heard.set()

    def on_said(self, player: Player, said: Said, at: float) -> None:
        sender = sender_index(said.sender)
        if sender is None or said.room != player.room or sender == player.index:
            self.stray += 1
            return
        last = player.last_seq.get(sender, -1)
        if said.seq <= last:
            self.out_of_order += 1
        else:
            player.last_seq[sender] = said.seq
        key = message_id(sender, said.seq)
        receipt = self.receipts.get(key)
        if receipt is None:
            self.receipts[key] = [1, at]
        else:
            receipt[0] += 1
            if at > receipt[1]:
                receipt[1] = at
        self.heard += 1
        if said.seq == said.total - 1:
            player.senders_done += 1
            if player.senders_done >= self.expect_senders(player):
                self._done(player)

    def on_shouted(self, player: Player, shouted: Shouted, at: float) -> None:
        if shouted.text != self.shout_text or player.heard_shout or player is self.shouter:
            return
        player.heard_shout = True
        self.shout_times.append(at)
        self._done(player)

    def _done(self, player: Player) -> None:
        waiting = self.waiting
        if player in waiting:
            waiting.discard(player)
            if not waiting:
                self.all_heard.set()

    def on_lost(self, player: Player) -> None:
        if not self.stopping:
            self.tally.fail(self.phase, player.lost or "closed by server")
        self._done(player)


class Player(asyncio.Protocol):
    """One player: logs in, joins its room, then says what it is told and hears the rest."""

    __slots__ = (
        "_abort",
        "_started",
        "closed",
        "closing",
        "heard_shout",
        "index",
        "last_seq",
        "lines",
        "lost",
        "name",
        "players",
        "ready",
        "room",
        "senders_done",
        "state",
        "telnet",
        "transport",
    )

    transport: asyncio.Transport  # set on connection, before anyone else has the session

    def __init__(self, players: Players, index: int) -> None:
        self.players = players
        self.index = index
        self.name = player_name(index)
        self.room = room_of(index, players.room_size)
        self.telnet = TelnetClientSession()
        self.lines = TalkerLines()
        loop = players.loop
        #: None once logged in and in its room, else the failure kind
        self.ready: asyncio.Future[str | None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.state = "name"
        self.closing = False
        self.lost: str | None = None
        self.last_seq: dict[int, int] = {}
        self.senders_done = 0
        self.heard_shout = False
        self._started = _now()
        self._abort: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.players.tally.connected(transport)

    def data_received(self, data: bytes) -> None:
        at = _now()
        telnet = self.telnet
        inband = telnet.receive(data)
        if telnet.has_output:
            self.transport.write(telnet.data_to_send())
        if not inband or self.closing:
            return
        players = self.players
        for event in self.lines.feed(inband):
            kind = type(event)
            if kind is Said:
                if self.state == "ready":
                    players.on_said(self, cast(Said, event), at)
            elif kind is Shouted:
                if self.state == "ready":
                    players.on_shouted(self, cast(Shouted, event), at)
            elif kind is Prompt:
                if cast(Prompt, event).name:
                    if self.state != "name":
                        self._not_ready(NAME_REFUSED)
                        return
                    self.state = "welcome"
                    self.write_line(self.name)
            elif kind is Welcome:
                if self.state == "welcome" and cast(Welcome, event).name == self.name:
                    self.state = "joining"
                    self.write_line(f"join {self.room}")
            elif kind is TooFast:
                players.tally.fail(players.phase if self.state == "ready" else "login", TOO_FAST)
            elif (
                kind is Joined and self.state == "joining" and cast(Joined, event).room == self.room
            ):
                self.state = "ready"
                players.login.add(at - self._started)
                if not self.ready.done():
                    self.ready.set_result(None)

    def write_line(self, text: str) -> None:
        self.transport.write(text.encode() + b"\r\n")

    def _not_ready(self, kind: str) -> None:
        if not self.ready.done():
            self.ready.set_result(kind)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.lost = lost_failure(exc)
            if not self.ready.done():
                self.ready.set_result(self.lost)
            else:
                self.players.on_lost(self)
        if self._abort is not None:
            self._abort.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()
            self._abort = self.players.loop.call_later(CLOSE_GRACE, self.transport.abort)


async def log_in(
    players: Players,
    indexes: Sequence[int],
    concurrency: int,
    target: Target,
    pick: Callable[[], str | None],
    connect_timeout: float,
    negotiation_timeout: float,
    hooks: Hooks,
) -> list[Player]:
    """Log a player in for each of ``indexes``, ``concurrency`` at a time, each into its
    room; the ready ones, in ``players.ready`` too. Failures are counted, such sessions closed.

    Each login (connect aside) has ``negotiation_timeout`` to be done.
    """
    tally = players.tally
    todo = iter(indexes)

    async def one() -> None:
        index = next(todo)
        try:
            _t, player = await open_session(
                lambda: Player(players, index), target, pick(), connect_timeout
            )
        except OSError as exc:
            tally.fail("connect", connect_failure(exc))
            return
        try:
            async with asyncio.timeout(negotiation_timeout):
                outcome = await asyncio.shield(player.ready)
        except TimeoutError:
            outcome = LOGIN_TIMEOUT if player.state != "name" else NEGOTIATION_TIMEOUT
        if outcome is None:
            players.ready.append(player)
        else:
            tally.fail("login", outcome)
            player.close()

    await lanes(len(indexes), concurrency, one, hooks)
    return players.ready


async def leave(players: Players) -> None:
    """Close every ready player (without counting it as a failure)."""
    players.stopping = True
    await close_all(players.ready)
