"""The writer a shell gets: ``write``, ``drain``, ``close`` and the telnet extras.

Telnet terms for what a shell chooses (RFC 857, 858): in **line mode** (the
default) the server claims neither ECHO nor SGA, so the client edits a line
and echoes it itself, and sends it whole on Enter; MUD clients keep their
aliases, ``;`` and history. In **character mode** the server claims SGA and
ECHO: the client sends each key as it is typed and shows only what the server
echoes. ``hide_input`` claims ECHO alone and echoes nothing: a password prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from workers.access_log import SHELL_ENDED
from workers.telnet import gmcp, msdp
from workers.telnet.engine import escape
from workers.telnet.telopt import (
    DO,
    DONT,
    ECHO,
    EOR,
    EOR_CMD,
    GA,
    GMCP,
    IAC,
    IAC_BYTE,
    MSDP,
    SGA,
    WILL,
    WONT,
)

if TYPE_CHECKING:
    from workers.bus.api import SessionBus
    from workers.mud import GMCPCallback, GMCPMessage, MSDPCallback
    from workers.server_base import BaseServer

Mode = Literal["line", "character"]
_ShellT = TypeVar("_ShellT", bound=Callable[..., Any])


def starts_in(mode: Mode) -> Callable[[_ShellT], _ShellT]:
    """Declare the mode a shell starts in (a decorator).

    ``TelnetServer`` then claims it with the rest of negotiation, so the
    shell's first output does not wait on a round trip, as it would after a
    ``writer.set_mode`` at its start. Read as the shell's ``telnet_mode``.
    """
    if mode not in ("line", "character"):
        raise ValueError(f"mode must be 'line' or 'character', not {mode!r}")

    def declare(shell: _ShellT) -> _ShellT:
        shell.telnet_mode = mode  # type: ignore[attr-defined]
        return shell

    return declare


class TelnetWriter:
    """Writes in-band data to one session, encoding ``str`` and escaping IAC.

    ``encoding=None`` gives a bytes writer, which refuses ``str``.
    """

    __slots__ = ("_errors", "_hidden", "_mode", "_protocol", "_transport", "encoding")

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: BaseServer,
        *,
        encoding: str | None = None,
        encoding_errors: str = "strict",
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._errors = encoding_errors
        self.encoding = encoding
        self._mode: Mode = "line"
        self._hidden = False

    def set_encoding(self, encoding: str | None) -> None:
        """Encode ``str`` with ``encoding`` from now on."""
        if encoding is None and self.encoding is not None:
            raise ValueError("a text writer cannot become a bytes writer")
        self.encoding = encoding

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    @property
    def bus(self) -> SessionBus:
        """This session's handle on the message bus (README, "Message bus")."""
        bus = self._protocol.bus
        if bus is None:
            raise RuntimeError("this session has no message bus (not served by a shardd server)")
        return bus

    @property
    def protocol(self) -> BaseServer:
        return self._protocol

    def write(self, data: str | bytes) -> None:
        """Send in-band data: ``str`` is encoded, every IAC byte doubled.

        What is written in one turn of the event loop goes out in one write
        at its end (``drain`` and ``close`` do not lose it).
        """
        if isinstance(data, str):
            if self.encoding is None:
                raise TypeError("this session has no encoding: write bytes, not str")
            data = data.encode(self.encoding, self._errors)
        if IAC_BYTE in data:
            data = escape(data)
        protocol = self._protocol
        if not protocol.closed:
            protocol.tx_bytes += len(data)
            protocol.queue(data)

    def writelines(self, lines: Iterable[str | bytes]) -> None:
        for line in lines:
            self.write(line)

    def echo(self, data: str | bytes) -> None:
        """Write ``data`` only if the server echoes the client's input: ECHO is
        on (character mode) and the input is not hidden."""
        if not self._hidden and self._protocol.engine.local_enabled(ECHO):
            self.write(data)

    # ------------------------------------------------------------- modes

    @property
    def mode(self) -> Mode:
        """``"line"`` (the default) or ``"character"``: what the shell asked for."""
        return self._mode

    @property
    def input_hidden(self) -> bool:
        """Whether ``hide_input`` is in force."""
        return self._hidden

    def set_mode(self, mode: Mode, *, send: bool = True) -> None:
        """Switch to ``"character"`` mode (BBS menus, full-screen programs) or
        back to ``"line"`` mode.

        Character mode claims SGA and ECHO (WILL SGA, WILL ECHO): the client
        sends every key at once and echoes nothing, so the shell echoes what it
        wants shown (``echo``). Line mode withdraws them (WONT), unless input is
        hidden. The client answers later; until then a few keys may come the
        old way. A client that has sent no telnet command (nc) is not told.
        (``send=False``, for protocols: the requests wait in the engine, to go
        out with the protocol's own.)
        """
        if mode not in ("line", "character"):
            raise ValueError(f"mode must be 'line' or 'character', not {mode!r}")
        self._mode = mode
        character = mode == "character"
        self._claim(SGA, character)
        self._claim(ECHO, character or self._hidden)
        if send:
            self._send_requests()

    def hide_input(self) -> None:
        """Stop the client showing what is typed: for password prompts.

        The server claims ECHO (WILL ECHO), so the client stops echoing, and
        echoes nothing itself until ``show_input``. Call it before writing the
        prompt. In line mode the client still edits and sends whole lines.
        """
        self._hidden = True
        self._claim(ECHO, True)
        self._send_requests()

    def show_input(self) -> None:
        """Undo ``hide_input``: in line mode the client echoes again (WONT ECHO);
        in character mode ``echo`` shows the keys again."""
        self._hidden = False
        if self._mode == "line":
            self._claim(ECHO, False)
            self._send_requests()

    def _send_requests(self) -> None:
        """What the engine has to send, after what was written: in the same write."""
        protocol = self._protocol
        engine = protocol.engine
        if engine.has_output and not protocol.closed:
            data = engine.data_to_send()
            protocol.tx_bytes += len(data)
            protocol.queue(data)

    def _claim(self, option: int, claimed: bool) -> None:
        engine = self._protocol.engine
        # also what a client's own DO or DONT for it is answered with
        engine.accept_local(option, claimed)
        if engine.heard:
            # a client that never sent a telnet command (nc) would show these as junk
            engine.request_local(option, claimed)

    # ----------------------------------------------------------- prompts

    def end_prompt(self) -> None:
        """Mark the end of a prompt: IAC EOR when the client agreed to EOR, else
        IAC GA unless SGA is on, else nothing.

        MUD clients (TinTin++, TinyFugue, Mudlet) show a marked prompt as a
        prompt and put the next output on its own line. Call it right after
        writing the prompt; it goes out with it.
        """
        engine = self._protocol.engine
        if engine.local_enabled(EOR):
            command = EOR_CMD
        elif not engine.local_enabled(SGA):
            command = GA
        else:
            return
        protocol = self._protocol
        if not protocol.closed:
            protocol.tx_bytes += 2
            protocol.queue(bytes((IAC, command)))

    def send_ga(self) -> bool:
        """Send IAC GA after a prompt unless SGA is on; return whether it was sent.

        ``end_prompt`` is better: it sends EOR to clients that asked for it.
        """
        if self._protocol.engine.local_enabled(SGA):
            return False
        return self.iac(GA)

    def iac(self, cmd: int, opt: int | None = None) -> bool:
        """Send a telnet command; WILL/WONT/DO/DONT go through RFC 1143 state.

        Returns False when nothing was sent, such as a WILL for an option that
        is already on or being negotiated.
        """
        engine = self._protocol.engine
        if cmd in (WILL, WONT, DO, DONT):
            if opt is None:
                raise ValueError("WILL, WONT, DO and DONT need an option")
            if cmd in (WILL, WONT):
                sent = engine.request_local(opt, cmd == WILL)
            else:
                sent = engine.request_remote(opt, cmd == DO)
        else:
            engine.send_command(cmd)
            sent = True
        self._send_requests()
        return sent

    # ------------------------------------------------------- MUD protocols

    def send_gmcp(self, package: str, data: object = None) -> bool:
        """Send a GMCP message (``Char.Vitals``, ``{"hp": 10}``); False, and
        nothing sent, unless the client agreed to GMCP.

        ``data`` is sent as JSON (None: no data). Raises ValueError for a bad
        package name, TypeError or ValueError for data JSON cannot carry.
        """
        if not self._protocol.engine.local_enabled(GMCP):
            return False
        self._protocol.engine.send_subnegotiation(GMCP, gmcp.encode(package, data))
        self._send_requests()
        return True

    def gmcp_messages(self) -> AsyncIterator[GMCPMessage]:
        """The client's GMCP messages, ``(package, data)``, as they come:
        ``async for package, data in writer.gmcp_messages()``; ends when the
        connection does. At most ``workers.mud.MAX_GMCP_QUEUE`` wait unread;
        later ones are dropped (and counted, ``gmcp_dropped``)."""
        return self._protocol.mud_session().messages()

    def on_gmcp(self, callback: GMCPCallback | None) -> None:
        """Call ``callback(package, data)`` for each GMCP message from the client
        instead of queueing it (those already queued first); None: queue again."""
        self._protocol.mud_session().on_gmcp(callback)

    def msdp_update(self, name: str, value: msdp.Encodable) -> bool:
        """Set the MSDP variable ``name``: a client may now SEND and REPORT it,
        and one that asked for its REPORT gets the new value at once (True)."""
        session = self._protocol.mud_session()
        if not session.msdp_set(name, value):
            return False
        return self.send_msdp({name: value})

    def msdp_updates(self, values: Mapping[str, msdp.Encodable]) -> bool:
        """Set several MSDP variables; those reported go out in one message."""
        session = self._protocol.mud_session()
        reported = [name for name, value in values.items() if session.msdp_set(name, value)]
        return bool(reported) and self.send_msdp({name: values[name] for name in reported})

    def send_msdp(self, variables: Mapping[str, msdp.Encodable]) -> bool:
        """Send MSDP variables as they are (nothing is remembered); False, and
        nothing sent, unless the client agreed to MSDP."""
        if not self._protocol.engine.local_enabled(MSDP):
            return False
        self._protocol.engine.send_subnegotiation(MSDP, msdp.encode(variables))
        self._send_requests()
        return True

    def on_msdp(self, callback: MSDPCallback | None) -> None:
        """Call ``callback(name, value)`` for each MSDP variable the client sends
        that is not a command (CLIENT_NAME, ...); without one they are dropped."""
        self._protocol.mud_session().msdp_callback = callback

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        protocol = self._protocol
        # the usual case, checked here: no second coroutine per call on the hot path
        if protocol.writing_paused or protocol.closed:
            await protocol.wait_writable()

    def close(self) -> None:
        """Close the session once what was written has been sent."""
        self._protocol.record_close_reason(SHELL_ENDED)
        self._protocol.flush_output()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol._waiter_closed)

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._protocol.get_extra_info(name, default)

    def __repr__(self) -> str:
        return f"<TelnetWriter encoding={self.encoding!r} closing={self.is_closing()}>"
