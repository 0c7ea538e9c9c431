"""A prompt and the line being typed, kept whole while other output arrives.

A chat, MUD or BBS shell prints what others do while its player is typing.
How the typed line survives depends on who keeps it:

- **line mode, MUD client** (TinTin++, Mudlet, TinyFugue): the client keeps
  its input line apart from the output, and a marked prompt (GA or EOR) tells
  it where the output ends. The console prints the news and the prompt again,
  marked, and the client redraws.
- **line mode, terminal** (telnet): the terminal echoes and edits the line
  itself and sends it whole on Enter, so the server never sees a half line.
  The news goes on a fresh line below what was typed, then the prompt again;
  what the player typed before is still in the terminal's buffer and is sent
  with the rest (a tty's ^R shows it again).
- **character mode** (the server echoes): the console holds the line
  (:class:`workers.input_line.InputLine`), so it blanks it, prints the news
  and draws the prompt and the half line again, as readline does.
"""

from __future__ import annotations

from collections import deque

from workers.input_line import MAX_INPUT, InputLine, is_printable
from workers.stream_reader import LineTooLong, TelnetReader
from workers.stream_writer import TelnetWriter

READ_SIZE = 1024


class Console:
    """Reads lines and prints around them for one session."""

    def __init__(self, reader: TelnetReader, writer: TelnetWriter, prompt: str = "> ") -> None:
        self._reader = reader
        self._writer = writer
        self.prompt = prompt
        self._input = InputLine()
        self._lines: deque[str] = deque()  # typed ahead, in character mode
        self._prompt_shown = False
        # a MUD client names itself; it puts what follows a marked prompt on
        # a line of its own, where a terminal would carry on after "> "
        self._breaks_after_prompt = writer.get_extra_info("client_name") is not None

    def write(self, text: str) -> None:
        """Text as is, in the session's encoding ('?' for what it cannot carry)."""
        writer = self._writer
        # a session whose client named no charset may still be sent anything
        writer.write(text.encode(writer.encoding or "latin-1", "replace"))

    def show(self, text: str) -> None:
        """Print ``text`` as whole lines, above the prompt and the typed line if
        they are on the screen, and draw them again below it."""
        if not self._prompt_shown:
            self.write(f"{text}\r\n")
            return
        if self._writer.mode == "character":
            # blank what we drew: the prompt and the half line (spaces, not
            # an escape sequence: every terminal understands them)
            self.write("\r" + " " * (len(self.prompt) + len(self._input.text)) + "\r")
            self.write(f"{text}\r\n{self.prompt}{self._input.text}")
        else:
            start = "" if self._breaks_after_prompt else "\r\n"
            self.write(f"{start}{text}\r\n{self.prompt}")
        self._writer.end_prompt()

    async def readline(self) -> str | None:
        """Show the prompt and read one line; None once the player has gone.

        The line holds only printable characters (no escape sequence reaches
        another player's screen). An empty line gets the prompt again; a line
        longer than MAX_INPUT, or not in the session's encoding, is dropped
        with a word to the player.
        """
        while True:
            if self._lines:
                line = self._lines.popleft()
                self._prompt_shown = False
                if line:
                    return line
                continue
            if not self._prompt_shown:
                self.write(self.prompt)
                self._writer.end_prompt()
                self._prompt_shown = True
            await self._writer.drain()
            try:
                lines = await self._read()
            except (LineTooLong, UnicodeDecodeError) as error:
                self._prompt_shown = False
                said = "too long" if isinstance(error, LineTooLong) else "not in your encoding"
                self.write(f"\r\nThat line was {said}.\r\n")
                continue
            if lines is None:
                return None
            self._lines.extend(lines)

    async def _read(self) -> list[str] | None:
        """The lines read (perhaps none yet), or None at EOF."""
        reader = self._reader
        if self._writer.mode == "line" and not self._input.text:
            text = await reader.readline()
            if isinstance(text, bytes):
                text = text.decode("latin-1")
            if not text:
                return None
            line = "".join(filter(is_printable, text.rstrip("\r\n")))
            if len(line) > MAX_INPUT:
                raise LineTooLong(f"line of {len(line)} characters")
            return [line]
        data = await reader.read(READ_SIZE)
        if not data:
            return None
        if isinstance(data, bytes):
            data = data.decode("latin-1")
        lines, echo = self._input.feed(data)
        if echo:
            self._writer.echo(echo.encode(self._writer.encoding or "latin-1", "replace"))
        return lines
