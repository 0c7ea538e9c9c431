"""The line a player is typing, kept by the server: keys in, lines and echo out.

Sans-I/O (like the telnet engine): :class:`InputLine` is fed the text a
session read in character mode and returns the lines completed and what to
echo; it never touches a socket. :class:`workers.console.Console` drives it.
The server needs the typed line itself only in character mode: it can then
redraw the line after printing something above it. In line mode the client
keeps the line, and the server sees it only whole.
"""

from __future__ import annotations

#: longest line kept; keys past it are dropped until the line ends
MAX_INPUT = 1024

_BACKSPACES = frozenset("\x7f\x08")
_KILL_LINE = "\x15"  # ^U, as a tty's kill character
_ESC = "\x1b"
_NORMAL, _AFTER_CR, _AFTER_ESC, _IN_SEQUENCE = range(4)


def is_printable(char: str) -> bool:
    """Neither a C0 or C1 control nor DEL: safe to show on another player's screen."""
    code = ord(char)
    return code >= 0x20 and not 0x7F <= code <= 0x9F


class InputLine:
    """Line editing for a server that echoes: backspace/DEL, ^U, every line end.

    Line ends are CR LF, CR NUL, a lone CR and a lone LF, also when a CR and
    what follows it arrive in different ``feed`` calls. Escape sequences
    (arrow keys: ``ESC [ A``, ``ESC O A``) are dropped whole, other controls
    one by one: a line holds only printable characters, at most ``limit``.
    """

    __slots__ = ("_chars", "_limit", "_state")

    def __init__(self, limit: int = MAX_INPUT) -> None:
        self._chars: list[str] = []
        self._limit = limit
        self._state = _NORMAL

    @property
    def text(self) -> str:
        """What has been typed of the current line."""
        return "".join(self._chars)

    def feed(self, keys: str) -> tuple[list[str], str]:
        """The lines ``keys`` completed (without line ends), and the echo to show."""
        lines: list[str] = []
        echo: list[str] = []
        chars = self._chars
        state = self._state
        for char in keys:
            if state == _AFTER_CR:
                state = _NORMAL
                if char in "\n\x00":  # the rest of CR LF or CR NUL
                    continue
            elif state == _AFTER_ESC:
                # CSI (ESC [) and SS3 (ESC O) run to a final byte; anything
                # else is a two-character sequence (ESC and one more)
                state = _IN_SEQUENCE if char in "[O" else _NORMAL
                continue
            elif state == _IN_SEQUENCE:
                if "@" <= char <= "~":
                    state = _NORMAL
                continue
            if char in "\r\n":
                lines.append("".join(chars))
                chars.clear()
                echo.append("\r\n")
                state = _AFTER_CR if char == "\r" else _NORMAL
            elif char in _BACKSPACES:
                if chars:
                    chars.pop()
                    echo.append("\b \b")
            elif char == _KILL_LINE:
                echo.append("\b \b" * len(chars))
                chars.clear()
            elif char == _ESC:
                state = _AFTER_ESC
            elif is_printable(char) and len(chars) < self._limit:
                chars.append(char)
                echo.append(char)
        self._state = state
        return lines, "".join(echo)
