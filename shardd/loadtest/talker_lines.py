"""What a talker (``--shell talker``) says to a player, parsed: sans-I/O.

:class:`TalkerLines` is fed the in-band bytes of one session (after the
telnet layer) and returns what the chat and shout scenarios act on: the
two prompts, the welcome, the player's own join, and the lines of others
that carry a load test's message ids. Every other line is ignored. Lines
are found anywhere in what the talker writes, after a prompt or behind
the escape sequences it uses to redraw the line being typed, so the
parser does not depend on how the talker keeps a typed line intact.

What one session can make it hold is bounded: a line longer than
:data:`LINE_LIMIT` characters is cut to its last ``LINE_LIMIT``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

#: the longest unfinished line kept, in characters
LINE_LIMIT = 4096
NAME_PROMPT = "What is your name? "
COMMAND_PROMPT = "> "

# "[ROOM] NAME says: m<seq>/<total>": a chat scenario's message
_SAYS = re.compile(r"\[([^\]\s]+)\] (\S+) says: m(\d{1,9})/(\d{1,9})")
# "NAME shouts: TEXT"
_SHOUTS = re.compile(r"(\S+) shouts: (\S+)")
# "Welcome, NAME! You are in room ROOM."
_WELCOME = re.compile(r"Welcome, (\S+)! You are in room (\S+?)\.")
# the player's own join, as the talker confirms it
_JOINED = re.compile(r"You are in room (\S+?)\.")
#: what the talker says to a player over its allowance of lines
TOO_FAST = "You are talking too fast."


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt ends what was written: ``name`` (the login's) or the command prompt."""

    name: bool


@dataclass(frozen=True, slots=True)
class Welcome:
    name: str
    room: str


@dataclass(frozen=True, slots=True)
class Joined:
    room: str


@dataclass(frozen=True, slots=True)
class Said:
    """Another player's ``say`` of a chat message id: ``m<seq>/<total>``."""

    room: str
    sender: str
    seq: int
    total: int


@dataclass(frozen=True, slots=True)
class Shouted:
    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class TooFast:
    """The talker refused a line: the player is over its allowance."""


Event = Prompt | Welcome | Joined | Said | Shouted | TooFast


class TalkerLines:
    """The events in a talker's output to one player, fed as it arrives."""

    __slots__ = ("_decoder", "_tail", "truncated")

    def __init__(self) -> None:
        # the talker speaks UTF-8 to a client that asked for it; anything else
        # becomes U+FFFD and matches nothing
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""
        #: lines cut to LINE_LIMIT
        self.truncated = 0

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data``, in order."""
        text = self._tail + self._decoder.decode(data)
        events: list[Event] = []
        if "\n" in text:
            *lines, text = text.split("\n")
            for line in lines:
                event = _parse(line)
                if event is not None:
                    events.append(event)
        if len(text) > LINE_LIMIT:
            self.truncated += 1
            text = text[-LINE_LIMIT:]
        # a prompt is not followed by a newline: it ends what was written so far
        if text.endswith(NAME_PROMPT):
            events.append(Prompt(name=True))
            text = ""
        elif text.endswith(COMMAND_PROMPT):
            event = _parse(text)  # a line the prompt was redrawn after
            if event is not None:
                events.append(event)
            events.append(Prompt(name=False))
            text = ""
        self._tail = text
        return events


def _parse(line: str) -> Event | None:
    if "says: m" in line:
        said = _SAYS.search(line)
        if said is not None:
            room, sender, seq, total = said.groups()
            return Said(room, sender, int(seq), int(total))
    if " shouts: " in line:
        shouted = _SHOUTS.search(line)
        if shouted is not None:
            return Shouted(*shouted.groups())
    if "Welcome, " in line:
        welcome = _WELCOME.search(line)
        if welcome is not None:
            return Welcome(*welcome.groups())
    if "You " in line:
        if TOO_FAST in line:
            return TooFast()
        joined = _JOINED.search(line)
        if joined is not None:
            return Joined(joined.group(1))
    return None
