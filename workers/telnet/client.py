"""The client role of a telnet session, sans-I/O: what the load-test tool speaks.

It answers a server the way a real terminal client does: agrees to TTYPE, NAWS,
NEW-ENVIRON, CHARSET, BINARY, SGA and ECHO, and answers their subnegotiations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.telnet import options
from workers.telnet.engine import OptionEnabled, Subnegotiation, TelnetEngine
from workers.telnet.telopt import (
    BINARY,
    CHARSET,
    CHARSET_REQUEST,
    ECHO,
    NAWS,
    NEW_ENVIRON,
    SEND,
    SGA,
    TSPEED,
    TTYPE,
    XDISPLOC,
)

_ACCEPT_LOCAL = frozenset({TTYPE, NAWS, NEW_ENVIRON, CHARSET, BINARY, TSPEED, XDISPLOC})
_ACCEPT_REMOTE = frozenset({BINARY, SGA, ECHO})


@dataclass
class Terminal:
    """What the client tells the server about itself."""

    term: str = "xterm-256color"
    cols: int = 80
    rows: int = 25
    charset: str = "UTF-8"
    env: dict[str, str] = field(default_factory=lambda: {"LANG": "en_US.UTF-8"})


class TelnetClientSession:
    """Client-role engine plus the answers a terminal client gives."""

    __slots__ = ("engine", "terminal")

    def __init__(self, terminal: Terminal | None = None) -> None:
        self.terminal = terminal or Terminal()
        self.engine = TelnetEngine(
            "client", accept_local=_ACCEPT_LOCAL, accept_remote=_ACCEPT_REMOTE
        )

    def receive(self, data: bytes) -> bytes:
        """In-band data of ``data``; answers go to :meth:`data_to_send`."""
        engine = self.engine
        inband = engine.receive(data)
        if engine.events:
            for event in engine.take_events():
                if type(event) is Subnegotiation:
                    self._answer(event.option, event.payload)
                elif type(event) is OptionEnabled and event.local and event.option == NAWS:
                    term = self.terminal
                    engine.send_subnegotiation(NAWS, options.build_naws(term.cols, term.rows))
        return inband

    def data_to_send(self) -> bytes:
        return self.engine.data_to_send()

    @property
    def has_output(self) -> bool:
        return self.engine.has_output

    def _answer(self, option: int, payload: bytes) -> None:
        term = self.terminal
        send = self.engine.send_subnegotiation
        is_send = payload[:1] == bytes((SEND,))
        if option == TTYPE and is_send:
            send(TTYPE, options.build_is(term.term.upper()))
        elif option == TSPEED and is_send:
            send(TSPEED, options.build_is("38400,38400"))
        elif option == XDISPLOC and is_send:
            send(XDISPLOC, options.build_is(term.env.get("DISPLAY", "")))
        elif option == NEW_ENVIRON and is_send:
            env = {
                "TERM": term.term,
                "COLUMNS": str(term.cols),
                "LINES": str(term.rows),
                **term.env,
            }
            send(NEW_ENVIRON, options.build_environ_is(env))
        elif option == CHARSET and payload[:1] == bytes((CHARSET_REQUEST,)):
            try:
                _verb, offered = options.parse_charset(payload)
            except ValueError:
                offered = []
            wanted = options.python_codec(term.charset)
            chosen = next((n for n in offered if options.python_codec(n) == wanted), None)
            send(CHARSET, options.build_charset_reply(chosen))
