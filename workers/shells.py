"""Built-in shells, and resolving ``--shell`` values to callables.

A shell is ``async def shell(reader, writer)``, as in telnetlib3: it starts
when negotiation ends and the session closes when it returns. Each built-in
shell states its mode (see :mod:`workers.stream_writer`): ``welcome`` works in
line mode, ``echo`` in character mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from workers import loader
from workers.stream_reader import TelnetReader
from workers.stream_writer import TelnetWriter, starts_in
from workers.talker import talker
from workers.telnet import mtts

ECHO_READ_SIZE = 2**16
MAX_LINE = 4096
_BACKSPACES = ("\x7f", "\x08")


@starts_in("character")
async def echo(reader: TelnetReader, writer: TelnetWriter) -> None:
    """Send back whatever arrives, unchanged: the load-test shell.

    Character mode: the client sends keys as they are typed and shows only
    what comes back, so a person sees each key once. (Declared, so that it is
    claimed with the rest of negotiation.)
    """
    # (no locals caching reader.read & co: three bound methods per idle session
    # cost more memory than the lookups cost time)
    while True:
        try:
            data = await reader.read(ECHO_READ_SIZE)
        except UnicodeDecodeError:
            # the reader kept the text, with U+FFFD for what it could not decode:
            # the next read returns it, and the client hears it back
            continue
        if not data:
            return
        try:
            writer.write(data)
        except UnicodeEncodeError:
            # BINARY on one way only: what arrived in UTF-8 goes back in US-ASCII,
            # with '?' for what that cannot carry
            writer.write(data.encode(writer.encoding or "ascii", "replace"))
        await writer.drain()


class LineEditor:
    """Reads lines of text, echoing keystrokes when the server echoes (character
    mode, input not hidden: ``writer.echo``).

    Handles backspace/DEL and every line end (CR LF, CR NUL, CR, LF), also when
    a CR and its LF or NUL arrive in different segments. Echoes go out with what
    the shell writes next in the same loop turn: a line that arrived in one
    segment is echoed in one.
    """

    def __init__(self, reader: TelnetReader, writer: TelnetWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = ""  # read past the end of the previous line
        self._after_cr = False

    async def readline(self) -> str | None:
        """One line without its end, or None at EOF."""
        chars: list[str] = []
        writer = self._writer

        def echo(text: str) -> None:
            writer.echo(_encode(writer, text))

        while True:
            data, self._pending = self._pending, ""
            if not data:
                data = await self._reader.read(1024)
                if not data:
                    return None
                if isinstance(data, bytes):
                    data = data.decode("latin-1")
            if self._after_cr:
                self._after_cr = False
                if data[0] in "\n\x00":
                    data = data[1:]
            for i, char in enumerate(data):
                if char in "\r\n":
                    echo("\r\n")
                    self._pending = data[i + 1 :]
                    self._after_cr = char == "\r"
                    return "".join(chars)
                if char in _BACKSPACES:
                    if chars:
                        chars.pop()
                        echo("\b \b")
                elif char < " " and char != "\t":
                    continue
                elif len(chars) < MAX_LINE:
                    chars.append(char)
                    echo(char)


def _encode(writer: TelnetWriter, text: str) -> bytes:
    """Text in the session's current encoding; what it cannot carry becomes '?'.

    A session whose client named no charset and refused BINARY (nc, busybox
    telnet) is US-ASCII, and its user may still type anything: the shell must
    not die writing back what it was sent.
    """
    return text.encode(writer.encoding or "latin-1", "replace")


async def welcome(reader: TelnetReader, writer: TelnetWriter) -> None:
    """The default shell: a banner describing the session, then a line echo.

    Line mode: the client edits and echoes each line itself (MUD clients keep
    their aliases and history); every prompt is marked (``end_prompt``).
    """
    writer.set_mode("line")  # the default; said here for whoever copies this shell
    info = writer.get_extra_info
    shard = info("shard")
    encoding = writer.encoding or "binary"
    client = info("client_name")
    flags = info("mtts")

    def say(text: str) -> None:
        writer.write(_encode(writer, text))

    say(
        "\r\nWelcome to shardd.\r\n"
        f"Terminal {info('TERM')}, window {info('cols')}x{info('rows')}, "
        f"encoding {encoding}, worker pid {os.getpid()}, "
        f"shard {'-' if shard is None else shard}.\r\n"
    )
    if client:
        said = f" ({', '.join(mtts.flag_names(flags))})" if flags else ""
        say(f"Client {client}{said}.\r\n")
    say("Type a line to hear it back; 'quit' ends the session.\r\n")
    editor = LineEditor(reader, writer)
    while True:
        say("> ")
        writer.end_prompt()
        await writer.drain()
        try:
            line = await editor.readline()
        except UnicodeDecodeError:
            say("\r\n(input was not valid for this session's encoding)\r\n")
            continue
        if line is None:
            return
        if line.strip().lower() == "quit":
            say("Goodbye.\r\n")
            await writer.drain()
            return
        say(f"You said: {line}\r\n")


BUILTIN_SHELLS: dict[str, Callable[..., Any]] = {
    "echo": echo,
    "welcome": welcome,
    "talker": talker,
}


def resolve(spec: str) -> Callable[..., Any]:
    """A shell from a built-in name or ``module:callable``; ValueError says why not."""
    shell: Callable[..., Any] = loader.load(spec, BUILTIN_SHELLS, "shell")
    return shell
