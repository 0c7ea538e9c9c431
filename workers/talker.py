"""``--shell talker``: a small chat server on the message bus.

The template for a shell whose players meet: copy it and change the commands.
Every player sees every other, whichever worker (shard) or host they are on,
because everything between players goes through ``writer.bus``:

- a room is a bus channel (``talker.room.NAME``): ``say`` publishes on it,
  ``join`` unsubscribes from one and subscribes to another;
- ``shout`` publishes on one channel every player subscribes to;
- ``tell`` sends to one session's inbox, found by name in ``who()``;
- a player's name is the session's bus name, so ``who()`` lists it.

Two kinds of task share a session: the one running this shell reads the
player's lines and acts on them; one listener per subscription (the room,
the shout channel, the inbox) prints what arrives. They print through a
:class:`~workers.console.Console`, which keeps the line being typed whole.
When the shell returns, the listeners are cancelled and the subscriptions
closed; the session's end closes whatever was left.

What goes on the bus is a small dict of strings, never a Python object:
the bus carries msgpack, and another host may run another version.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from workers.bus.api import BusError, Message, SessionBus, SessionInfo, Subscription
from workers.console import Console
from workers.input_line import is_printable
from workers.stream_reader import TelnetReader
from workers.stream_writer import TelnetWriter, starts_in

NAME = re.compile(r"[A-Za-z0-9_-]{1,20}")
#: longest text of a say, tell or shout, in characters
MAX_TEXT = 500
#: the talking allowance: a bucket of BURST tokens refilled at RATE a second;
#: say, tell, join and who take one, shout (which reaches everyone) SHOUT_COST
RATE, BURST, SHOUT_COST = 5.0, 10.0, 5.0
#: players a ``who`` lists by name before it only counts them
WHO_SHOWN = 100
LOBBY = "lobby"
SHOUTS = "talker.shout"

HELP = """\
Commands:
  say TEXT        to everyone in your room
  tell NAME TEXT  to one player, wherever they are
  shout TEXT      to every player
  who             every player, and the shard (and host) they are on
  join ROOM       leave your room for another
  mode char|line  char: the server edits your line, and redraws it around news
  quit            leave"""


def room_channel(room: str) -> str:
    return f"talker.room.{room}"


#: the message rendered last, and its text: a worker's subscribers of a
#: channel share one Message, and their listeners run one after the other,
#: so a shout to 5 000 players of a worker is rendered once, not 5 000 times
_last_rendered: list[Any] = [None, None]


def render(message: Message) -> str | None:
    """What a bus message shows; None for one this talker did not send.

    Other shells on the server share the bus: nothing from it is trusted to
    be well formed, and no control character reaches the screen.
    """
    if _last_rendered[0] is message:
        text: str | None = _last_rendered[1]
        return text
    text = _render(message)
    _last_rendered[:] = [message, text]
    return text


def _render(message: Message) -> str | None:
    data = message.data
    if not isinstance(data, dict):
        return None
    fields = [data.get(key, "") for key in ("kind", "name", "room", "text")]
    if not all(isinstance(value, str) for value in fields):
        return None
    kind, name, room, text = (clean(str(value)) for value in fields)
    name, room, text = name[:20], room[:20], text[:MAX_TEXT]
    lines = {
        "say": f"[{room}] {name} says: {text}",
        "shout": f"{name} shouts: {text}",
        "tell": f"{name} tells you: {text}",
        "join": f"{name} joins {room}.",
        "leave": f"{name} leaves {room}.",
    }
    return lines.get(kind)


def clean(text: str) -> str:
    return "".join(filter(is_printable, text))


class Allowance:
    """A token bucket: a burst of BURST, then RATE a second."""

    def __init__(self) -> None:
        self._tokens = BURST
        self._when = time.monotonic()

    def take(self, cost: float) -> bool:
        now = time.monotonic()
        self._tokens = min(BURST, self._tokens + (now - self._when) * RATE)
        self._when = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True


class Player:
    """One player's session: their name, room, listeners and commands."""

    def __init__(self, console: Console, writer: TelnetWriter, name: str) -> None:
        self.console = console
        self.writer = writer
        self.bus: SessionBus = writer.bus
        self.name = name
        self.room = ""
        self.allowance = Allowance()
        self.listeners: dict[str | None, asyncio.Task[None]] = {}
        self.commands: dict[str, Callable[[str], Awaitable[bool]]] = {
            "say": self.say,
            "tell": self.tell,
            "shout": self.shout,
            "who": self.who,
            "join": self.join,
            "mode": self.mode,
            "help": self.help,
            "quit": self.quit,
        }

    # ------------------------------------------------------------ listening

    def listen(self, subscription: Subscription) -> None:
        """Print what arrives on ``subscription`` until it is closed."""
        task = asyncio.create_task(self._print(subscription))
        self.listeners[subscription.channel] = task

    async def _print(self, subscription: Subscription) -> None:
        async for message in subscription:
            text = render(message)
            if text is not None:
                self.console.show(text)
                # a player who reads slowly holds up only this task; the
                # bus drops (and counts) what overflows its queue meanwhile
                try:
                    await self.writer.drain()
                except ConnectionError:
                    # the player has gone: nothing more to print, and no
                    # "exception never retrieved" for a task end() may only cancel
                    return

    async def enter(self, room: str) -> None:
        self.room = room
        self.listen(self.bus.subscribe(room_channel(room)))
        await self.announce("join")

    async def leave_room(self) -> None:
        await self.announce("leave")
        self.bus.unsubscribe(room_channel(self.room))
        listener = self.listeners.pop(room_channel(self.room), None)
        if listener is not None:
            listener.cancel()

    async def announce(self, kind: str, text: str = "", channel: str = "") -> None:
        data = {"kind": kind, "name": self.name, "room": self.room, "text": text}
        await self.bus.publish(channel or room_channel(self.room), data, exclude_self=True)

    async def end(self) -> None:
        """Leave the room (the others see it) and stop every listener."""
        # a BusError: the session's bus has ended already, nothing to tell
        with contextlib.suppress(BusError):
            await self.leave_room()
        for task in self.listeners.values():
            task.cancel()
        await asyncio.gather(*self.listeners.values(), return_exceptions=True)
        self.bus.unsubscribe(SHOUTS)

    # ------------------------------------------------------------- commands

    async def do(self, line: str) -> bool:
        """Act on one typed line; False once the player quits."""
        verb, _, rest = line.strip().partition(" ")
        command = self.commands.get(verb.lower())
        if command is None:
            self.console.show(f"Unknown command {clean(verb)[:20]!r}; type help for commands.")
            return True
        return await command(rest.strip())

    def allowed(self, cost: float = 1.0) -> bool:
        if self.allowance.take(cost):
            return True
        self.console.show("You are talking too fast.")
        return False

    def text_ok(self, text: str, what: str) -> bool:
        if not text:
            self.console.show(f"{what} what?")
        elif len(text) > MAX_TEXT:
            self.console.show(f"That is too long: at most {MAX_TEXT} characters.")
        else:
            return True
        return False

    async def say(self, text: str) -> bool:
        if self.text_ok(text, "Say") and self.allowed():
            await self.announce("say", text)
            self.console.show(f"You say: {text}")
        return True

    async def shout(self, text: str) -> bool:
        if self.text_ok(text, "Shout") and self.allowed(SHOUT_COST):
            await self.announce("shout", text, SHOUTS)
            self.console.show(f"You shout: {text}")
        return True

    async def tell(self, rest: str) -> bool:
        name, _, text = rest.partition(" ")
        text = text.strip()
        if not name or not self.text_ok(text, "Tell them") or not self.allowed():
            return True
        found = await find(self.bus, name)
        data = {"kind": "tell", "name": self.name, "room": self.room, "text": text}
        if found is None or not await self.bus.send(found.id, data):
            self.console.show(f"No one called {clean(name)[:20]} is here.")
        else:
            self.console.show(f"You tell {found.name}: {text}")
        return True

    async def who(self, _: str) -> bool:
        if not self.allowed():
            return True
        players = sorted(
            (s for s in await self.bus.who() if s.name), key=lambda s: s.name.casefold()
        )
        hosts = {s.host for s in players}
        lines = [f"Players ({len(players)}):"]
        for s in players[:WHO_SHOWN]:
            where = f"shard {s.shard}" + (f" on {s.host}" if len(hosts) > 1 else "")
            you = " (you)" if s.id == self.bus.id else ""
            lines.append(f"  {s.name:<20} {where}{you}")
        if len(players) > WHO_SHOWN:
            lines.append(f"  ... and {len(players) - WHO_SHOWN} more.")
        self.console.show("\r\n".join(lines))
        return True

    async def join(self, room: str) -> bool:
        room = room.lower()
        if not NAME.fullmatch(room):
            self.console.show("A room is 1-20 letters, digits, - or _.")
        elif room == self.room:
            self.console.show(f"You are in room {room} already.")
        elif self.allowed():
            await self.leave_room()
            await self.enter(room)
            self.console.show(f"You are in room {room}.")
        return True

    async def mode(self, mode: str) -> bool:
        if mode not in ("char", "line"):
            self.console.show("mode char or mode line.")
        else:
            self.writer.set_mode("character" if mode == "char" else "line")
            self.console.show(f"Mode {mode}.")
        return True

    async def help(self, _: str) -> bool:
        self.console.show(HELP.replace("\n", "\r\n"))
        return True

    async def quit(self, _: str) -> bool:
        self.console.show("Goodbye.")
        return False


async def find(bus: SessionBus, name: str) -> SessionInfo | None:
    """The live session whose player is called ``name`` (in any case)."""
    if not NAME.fullmatch(name):
        return None  # no player is called so (and who() refuses a name too long)
    # asked by name: the few sessions so called, not every session (a login
    # storm of N players asking for everyone would cost O(N²))
    return next(iter(await bus.who(name=name)), None)


async def choose_name(console: Console, bus: SessionBus) -> str | None:
    """Ask until the player gives a good name no one else has; None if they leave.

    The name is claimed, then checked again: of two players who claim one
    name at the same instant, each then sees the other and both are asked
    again, so two players never share a name while ``who()`` sees every
    name as it is set (the local backend, and one Redis host; across Redis
    hosts ``who()`` sees a name once that host has refreshed its key).
    """
    console.prompt = "What is your name? "
    while (name := await console.readline()) is not None:
        name = name.strip()
        if not NAME.fullmatch(name):
            console.show("A name is 1-20 letters, digits, - or _.")
            continue
        if await find(bus, name) is None:
            bus.name = name
            if all(s.id == bus.id for s in await bus.who(name=name)):
                console.prompt = "> "
                return name
            bus.name = ""
        console.show(f"The name {name} is taken.")
    return None


@starts_in("line")
async def talker(reader: TelnetReader, writer: TelnetWriter) -> None:
    """Line mode with marked prompts: MUD clients keep their input line, aliases
    and history; a terminal user may ask for ``mode char``."""
    console = Console(reader, writer)
    name = await choose_name(console, writer.bus)
    if name is None:
        return
    player = Player(console, writer, name)
    try:
        player.listen(player.bus.inbox)
        player.listen(player.bus.subscribe(SHOUTS))
        await player.enter(LOBBY)
        console.show(f"Welcome, {name}! You are in room {LOBBY}. Type help for commands.")
        while (line := await console.readline()) is not None:
            if not await player.do(line):
                break
    finally:
        await player.end()
        await writer.drain()
