"""Built-in shells, and resolving ``--shell`` values to callables.

A shell is ``async def shell(reader, writer)``, as in telnetlib3: it starts
when negotiation ends and the session closes when it returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from workers import loader
from workers.stream_reader import TelnetReader
from workers.stream_writer import TelnetWriter

ECHO_READ_SIZE = 2**16
MAX_LINE = 4096
_BACKSPACES = ("\x7f", "\x08")


async def echo(reader: TelnetReader, writer: TelnetWriter) -> None:
    """Send back whatever arrives, unchanged: the load-test shell."""
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
    """Reads lines of text, echoing keystrokes when we agreed to echo (WILL ECHO).

    Handles backspace/DEL and every line end (CR LF, CR NUL, CR, LF), also when
    a CR and its LF or NUL arrive in different segments.
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

    A session without BINARY is US-ASCII, and its user may still type
    anything: the shell must not die writing back what it was sent.
    """
    return text.encode(writer.encoding or "latin-1", "replace")


async def welcome(reader: TelnetReader, writer: TelnetWriter) -> None:
    """The default shell: a banner describing the session, then a line echo."""
    info = writer.get_extra_info
    shard = info("shard")
    encoding = writer.encoding or "binary"

    def say(text: str) -> None:
        writer.write(_encode(writer, text))

    say(
        "\r\nWelcome to shardd.\r\n"
        f"Terminal {info('TERM')}, window {info('cols')}x{info('rows')}, "
        f"encoding {encoding}, worker pid {os.getpid()}, "
        f"shard {'-' if shard is None else shard}.\r\n"
        "Type a line to hear it back; 'quit' ends the session.\r\n"
    )
    editor = LineEditor(reader, writer)
    while True:
        say("> ")
        writer.send_ga()
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


BUILTIN_SHELLS: dict[str, Callable[..., Any]] = {"echo": echo, "welcome": welcome}


def resolve(spec: str) -> Callable[..., Any]:
    """A shell from a built-in name or ``module:callable``; ValueError says why not."""
    shell: Callable[..., Any] = loader.load(spec, BUILTIN_SHELLS, "shell")
    return shell
