"""The writer a shell gets: ``write``, ``drain``, ``close`` and the telnet extras."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from workers.telnet.engine import escape
from workers.telnet.telopt import DO, DONT, ECHO, GA, IAC_BYTE, SGA, WILL, WONT

if TYPE_CHECKING:
    from workers.server_base import BaseServer


class TelnetWriter:
    """Writes in-band data to one session, encoding ``str`` and escaping IAC.

    ``encoding=None`` gives a bytes writer, which refuses ``str``.
    """

    __slots__ = ("_errors", "_protocol", "_transport", "encoding")

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

    def set_encoding(self, encoding: str | None) -> None:
        """Encode ``str`` with ``encoding`` from now on."""
        if encoding is None and self.encoding is not None:
            raise ValueError("a text writer cannot become a bytes writer")
        self.encoding = encoding

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

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
        """Write ``data`` only if we agreed to echo the client's input (WILL ECHO)."""
        if self._protocol.engine.local_enabled(ECHO):
            self.write(data)

    def send_ga(self) -> bool:
        """Send IAC GA after a prompt unless SGA is on; return whether it was sent."""
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
        self._protocol.flush()
        return sent

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        protocol = self._protocol
        # the usual case, checked here: no second coroutine per call on the hot path
        if protocol.writing_paused or protocol.closed:
            await protocol.wait_writable()

    def close(self) -> None:
        """Close the session once what was written has been sent."""
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
