"""A session's handle on the bus: ``writer.bus`` (:class:`~workers.bus.api.SessionBus`).

Made by the worker's hub when the session opens, closed when it ends: then
its subscriptions and inbox end (a shell's ``async for`` over them stops) and
``who()`` no longer lists it. Its inbox is made on first use, so a session
that never reads direct messages holds none (messages sent to it are dropped
and counted, as for a full queue).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.bus.api import BusError, Message, SessionInfo
from workers.bus.hub import BusHub, Queue, check_name

if TYPE_CHECKING:
    from workers.server_base import BaseServer


class SessionHandle:
    """What one session may do on the bus; see :class:`workers.bus.api.SessionBus`."""

    __slots__ = ("_inbox", "_name", "_peer", "closed", "hub", "id", "protocol", "subscriptions")

    def __init__(self, hub: BusHub, session_id: str, protocol: BaseServer) -> None:
        self.hub = hub
        self.id = session_id
        self.protocol = protocol
        self.subscriptions: dict[str, Queue] = {}
        self._inbox: Queue | None = None
        self._name = ""
        self._peer: str | None = None  # BaseServer.peer is formatted on each call
        self.closed = False

    def __repr__(self) -> str:
        return f"<SessionBus {self.id}>"

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        old, self._name = self._name, check_name(value)
        self.hub.renamed(self, old, self._name)
        self.hub.session_changed(self.id)

    def subscribe(self, channel: str) -> Queue:
        self._check_open()
        return self.hub.subscribe(self, channel)

    def unsubscribe(self, channel: str) -> None:
        self.hub.unsubscribe(self, channel)

    @property
    def inbox(self) -> Queue:
        if self._inbox is None:
            self._inbox = Queue(self.hub, self, None)
            if self.closed:
                self._inbox._end()
        return self._inbox

    def close_inbox(self) -> None:
        if self._inbox is not None:
            self._inbox._end()
        self.closed = True

    def inbox_put(self, message: Message) -> bool:
        """A direct message for this session; whether it was queued."""
        if self.closed:
            return False
        if self._inbox is None:
            # nobody reads it yet: dropped for a full queue of size 0 would
            # lose the first message of a shell that looks at its inbox later
            self._inbox = Queue(self.hub, self, None)
        return self._inbox.put(message)

    async def publish(self, channel: str, data: Any, *, exclude_self: bool = False) -> None:
        await self.hub.publish(self, channel, data, exclude_self=exclude_self)

    async def send(self, session_id: str, data: Any) -> bool:
        return await self.hub.send(self, session_id, data)

    async def who(self, *, name: str | None = None) -> list[SessionInfo]:
        return await self.hub.who(name)

    async def close_session(self, session_id: str, message: str = "") -> bool:
        return await self.hub.close_session(session_id, message)

    def info(self) -> SessionInfo:
        protocol = self.protocol
        peer = self._peer
        if peer is None:
            peer = self._peer = protocol.peer
        return SessionInfo(
            id=self.id,
            shard=self.hub.shard,
            peer=peer,
            term=str(protocol.get_extra_info("TERM") or ""),
            name=self._name,
            host=self.hub.host,
        )

    def close_connection(self, message: str) -> None:
        """Another session closes this one: ``message`` is its last line."""
        from workers.access_log import CLOSED_BY_BUS

        protocol = self.protocol
        writer = protocol.writer
        if message and writer is not None and not writer.is_closing():
            line = message if message.endswith("\n") else message + "\r\n"
            try:
                writer.write(line if writer.encoding is not None else line.encode("utf-8"))
            except (UnicodeEncodeError, RuntimeError):
                pass
        protocol.record_close_reason(CLOSED_BY_BUS)
        # off the bus now, not when the connection's end is seen a loop turn
        # or more later: whoever learns that the close succeeded (the ack)
        # finds the session gone from who(), as its client finds its EOF
        self.hub.closed(self)
        if protocol._transport is not None:
            protocol.flush_output()
            protocol._transport.close()

    def _check_open(self) -> None:
        if self.closed:
            raise BusError(f"session {self.id} has ended")
