"""The local backend, a worker's side: the bus through the supervisor.

Everything goes over the worker's one channel to its supervisor
(:class:`~workers.channel.SupervisorChannel`), an ordered stream: a
publisher's messages leave in the order published, the supervisor forwards
them in the order read (``shardd/bus_relay.py``), so they arrive in order.
The supervisor learns which channels this worker has subscribers of (one
``bus_sub`` for the first, one ``bus_unsub`` after the last), and sends a
message published elsewhere here once, whatever the number of subscribers.

Requests that want an answer (``send``, ``close_session``, ``who``) carry a
number; a reply that does not come within ``REPLY_TIMEOUT`` (a worker died
on the way) counts as "not live" (or, for ``who``, as no sessions there).
A ``who`` for one name asks only for the sessions so called; a ``who`` of
everyone is asked at most once at a time per worker, callers sharing it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from workers import ipc
from workers.bus.api import SessionInfo

if TYPE_CHECKING:
    from workers.bus.hub import BusHub
    from workers.channel import SupervisorChannel

log = logging.getLogger("shardd.bus")

#: how long a send, close or who waits for the supervisor's answer, in seconds
REPLY_TIMEOUT = 5.0


class LocalBackend:
    """:class:`~workers.bus.api.Backend` over the supervisor channel."""

    def __init__(self, hub: BusHub, channel: SupervisorChannel) -> None:
        self.hub = hub
        self.channel = channel
        self._requests = itertools.count(1)
        self._acks: dict[int, asyncio.Future[bool]] = {}
        self._who: dict[int, tuple[list[SessionInfo], asyncio.Future[None]]] = {}
        #: the full listing that who() callers since the last one started share
        self._who_next: asyncio.Future[list[SessionInfo]] | None = None
        self._who_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.channel.bus = self
        for channel in self.hub.channels:  # none yet, unless a shell ran first
            self.channel_added(channel)

    def _send(self, kind: str, **fields: Any) -> None:
        if self.channel.ipc is not None:
            self.channel.ipc.send(kind, **fields)

    async def ready(self) -> None:
        """Return once the supervisor has read enough of our channel to take more."""
        if self.channel.ipc is not None:
            await self.channel.ipc.writable()

    def channel_added(self, channel: str) -> None:
        self._send(ipc.BUS_SUB, ch=channel)

    def channel_removed(self, channel: str) -> None:
        self._send(ipc.BUS_UNSUB, ch=channel)

    def publish(self, channel: str, sender: str | None, payload: bytes) -> None:
        self._send(ipc.BUS_PUB, ch=channel, sender=sender, p=payload)

    async def send(self, session_id: str, sender: str | None, payload: bytes) -> bool:
        if len(session_id) > ipc.MAX_SESSION_ID:
            return False
        req = next(self._requests)
        self._send(ipc.BUS_SEND, to=session_id, sender=sender, p=payload, req=req, src=0)
        return await self._ack(req)

    async def close_session(self, session_id: str, message: str) -> bool:
        if len(session_id) > ipc.MAX_SESSION_ID:
            return False
        req = next(self._requests)
        self._send(ipc.BUS_CLOSE, to=session_id, msg=message, req=req, src=0)
        return await self._ack(req)

    async def _ack(self, req: int) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks[req] = future
        try:
            return await asyncio.wait_for(future, REPLY_TIMEOUT)
        except TimeoutError:
            return False
        finally:
            self._acks.pop(req, None)

    async def who(self, *, name: str | None = None) -> list[SessionInfo]:
        if name is not None:
            # a few sessions at most: asked alone, never shared with a question
            # asked before the caller (which may just have set its own name)
            return await self._ask_who(name)
        # Every session, from every worker: O(sessions) to list, so at most
        # one such question is in flight per worker. Callers meanwhile share
        # the next one, asked once this one is answered: each still gets a
        # snapshot taken after it asked, and a crowd asking at once costs two
        # listings, not one each.
        if self._who_next is None:
            self._who_next = asyncio.get_running_loop().create_future()
            if self._who_task is None:
                self._who_task = asyncio.create_task(self._list_everyone())
        return await asyncio.shield(self._who_next)

    async def _list_everyone(self) -> None:
        try:
            while (waiting := self._who_next) is not None:
                self._who_next = None
                try:
                    found = await self._ask_who(None)
                except asyncio.CancelledError:
                    waiting.cancel()  # the worker is stopping: its callers end too
                    raise
                if not waiting.done():
                    waiting.set_result(found)
        finally:
            self._who_task = None

    async def _ask_who(self, name: str | None) -> list[SessionInfo]:
        req = next(self._requests)
        found: list[SessionInfo] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._who[req] = (found, done)
        named = {} if name is None else {"name": name}
        self._send(ipc.BUS_WHO, req=req, src=0, **named)
        try:
            await asyncio.wait_for(done, REPLY_TIMEOUT)
        except TimeoutError:
            pass
        finally:
            self._who.pop(req, None)
        return found

    async def close(self) -> None:
        for future in self._acks.values():
            if not future.done():
                future.set_result(False)
        for _found, done in self._who.values():
            if not done.done():
                done.set_result(None)
        waiting, self._who_next = self._who_next, None
        if waiting is not None and not waiting.done():
            waiting.set_result([])
        if self.channel.bus is self:
            self.channel.bus = None

    # ------------------------------------------- what the supervisor sends

    def on_message(self, message: dict[str, Any]) -> None:
        """A bus frame from the supervisor (checked by ``ipc.check``)."""
        kind = message["t"]
        hub = self.hub
        if kind == ipc.BUS_PUB:
            hub.deliver(message["ch"], message["sender"], message["p"])
        elif kind == ipc.BUS_SEND:
            ok = hub.deliver_direct(message["to"], message["sender"], message["p"])
            self._send(ipc.BUS_ACK, req=message["req"], src=message["src"], ok=ok)
        elif kind == ipc.BUS_CLOSE:
            ok = hub.close_local(message["to"], message["msg"])
            self._send(ipc.BUS_ACK, req=message["req"], src=message["src"], ok=ok)
        elif kind == ipc.BUS_ACK:
            future = self._acks.get(message["req"])
            if future is not None and not future.done():
                future.set_result(message["ok"])
        elif kind == ipc.BUS_WHO:
            self._answer_who(message["req"], message["src"], message.get("name"))
        elif kind == ipc.BUS_WHO_REPLY:
            waiting = self._who.get(message["req"])
            if waiting is None:
                return
            found, done = waiting
            found.extend(SessionInfo(*entry) for entry in message["sessions"])
            if message["last"] and not done.done():
                done.set_result(None)
        else:
            log.warning("bus: unexpected %r from the supervisor", kind)

    def _answer_who(self, req: int, src: int, name: str | None) -> None:
        cut = ipc.MAX_SESSION_ID  # a longer field would be a bad frame
        sessions = [
            [s.id, s.shard, s.peer[:cut], s.term[:cut], s.name, s.host[:cut]]
            for s in self.hub.local_sessions(name)
        ]
        step = ipc.WHO_BATCH
        for start in range(0, max(len(sessions), 1), step):
            batch = sessions[start : start + step]
            last = start + step >= len(sessions)
            self._send(ipc.BUS_WHO_REPLY, req=req, src=src, sessions=batch, last=last)
