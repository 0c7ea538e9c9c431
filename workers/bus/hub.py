"""One worker's part of the message bus: its subscriptions, its sessions, its backend.

The hub is the only place a message is packed (once, by msgpack, whoever
publishes it) and unpacked (once per worker, whoever subscribes): a message
for 10 000 subscribers of one worker is one ``Message`` object put in 10 000
bounded queues, and at most one payload handed to the backend. Subscribers in
one worker therefore share the message's value: a shell must not mutate it.

Everything here runs in the worker's event loop; nothing blocks and nothing
waits but a publisher on its backend's flow control.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgpack

from workers.bus.api import (
    MAX_CHANNEL,
    MAX_MESSAGE,
    MAX_NAME,
    QUEUE_LIMIT,
    Backend,
    BusError,
    Message,
    SessionInfo,
)
from workers.ipc import MAX_CLOSE_MESSAGE
from workers.log_limits import WarningLimiter

if TYPE_CHECKING:
    import asyncio

    from workers.bus.session import SessionHandle
    from workers.server_base import BaseServer

log = logging.getLogger("shardd.bus")
#: what the hub logs about broken payloads from elsewhere, at most so many lines
BUS_WARNINGS = WarningLimiter()

# The worker's counters (reported to the supervisor, shown by status/metrics)
IN = "bus_in"  # messages that arrived from the backend (once per worker, not per subscriber)
OUT = "bus_out"  # messages this worker's sessions published or sent
DELIVERED = "bus_delivered"  # messages put in a subscriber's queue
DROPPED = "bus_dropped"  # messages dropped for a full queue
UNDELIVERABLE = "bus_undeliverable"  # payloads from elsewhere that did not unpack
LOST = "bus_lost"  # messages the backend could not carry (Redis unreachable)
OUTAGES = "bus_outages"  # times the backend (Redis) became unreachable
#: a gauge, not counted in ``counters`` (which only grow): live subscriptions
SUBSCRIPTIONS = "bus_subscriptions"


def check_channel(channel: object) -> str:
    if not isinstance(channel, str) or not channel:
        raise BusError(f"a channel is a non-empty str, not {channel!r:.40}")
    if len(channel) > MAX_CHANNEL:
        raise BusError(f"channel name longer than {MAX_CHANNEL} characters")
    return channel


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise BusError(f"a session's name is a str, not {type(name).__name__}")
    if len(name) > MAX_NAME:
        raise BusError(f"session name longer than {MAX_NAME} characters")
    return name


def pack(data: Any) -> bytes:
    """``data`` as the bus carries it; BusError if msgpack cannot, or it is too big."""
    try:
        payload: bytes = msgpack.packb(data, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BusError(f"message is not msgpack-serialisable: {exc}") from None
    if len(payload) > MAX_MESSAGE:
        raise BusError(f"message is {len(payload)} bytes packed, more than {MAX_MESSAGE}")
    return payload


def unpack(payload: bytes) -> Any:
    # strict_map_key off: a shell's maps may have int keys; the size is bounded by the caller
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


class Queue:
    """A subscription's (or inbox's) bounded queue: :class:`~workers.bus.api.Subscription`."""

    __slots__ = ("_hub", "_items", "_waiter", "channel", "closed", "dropped", "owner")

    def __init__(self, hub: BusHub, owner: SessionHandle, channel: str | None) -> None:
        self._hub = hub
        self.owner = owner
        self.channel = channel
        self.dropped = 0
        self.closed = False
        self._items: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, message: Message) -> bool:
        """Queue ``message``; False (and counted) if the queue is full or closed."""
        if self.closed:
            return False
        if len(self._items) >= QUEUE_LIMIT:
            self.dropped += 1
            self._hub.counters[DROPPED] += 1
            return False
        self._items.append(message)
        self._hub.counters[DELIVERED] += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def __len__(self) -> int:
        return len(self._items)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        return await self.get()

    async def get(self) -> Message:
        while not self._items:
            if self.closed:
                raise StopAsyncIteration
            if self._waiter is None or self._waiter.done():
                self._waiter = self._hub.loop().create_future()
            await self._waiter
        return self._items.popleft()

    def get_nowait(self) -> Message | None:
        """The next message if one is waiting, else None."""
        return self._items.popleft() if self._items else None

    def close(self) -> None:
        if self.channel is None:
            self.owner.close_inbox()
        else:
            self.owner.unsubscribe(self.channel)

    def _end(self) -> None:
        """Closed: what was queued is dropped, a waiting reader ends."""
        self.closed = True
        self._items.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class BusHub:
    """The bus of one process: local fan-out, the session registry, the backend.

    ``prefix`` starts every session id of this process (``"<pid>."``; a backend
    spanning hosts sets ``"<host>/<pid>."`` before any session opens).
    """

    def __init__(
        self,
        *,
        shard: int = 0,
        counters: Counter[str] | None = None,
        host: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self.shard = shard
        self.host = host or socket.gethostname()
        self.prefix = prefix if prefix is not None else f"{os.getpid()}."
        #: where this worker's events are counted (the server's counters, reported)
        self.counters: Counter[str] = counters if counters is not None else Counter()
        #: how messages leave this process; None: this hub alone is the bus
        self.backend: Backend | None = None
        #: the backend's name, for status and metrics ("none", "local", "redis")
        self.backend_name = "none"
        self.channels: dict[str, dict[SessionHandle, Queue]] = {}
        self.sessions: dict[str, SessionHandle] = {}
        #: casefolded name -> the sessions called so: ``who(name=...)`` without a scan
        self.names: dict[str, dict[str, SessionHandle]] = {}
        self.subscription_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            import asyncio

            self._loop = asyncio.get_running_loop()
        return self._loop

    # ------------------------------------------------------------- sessions

    def open(self, protocol: BaseServer) -> SessionHandle:
        """Register a new session (its ``session_id`` set); its handle is ``writer.bus``."""
        from workers.bus.session import SessionHandle

        handle = SessionHandle(self, f"{self.prefix}{protocol.session_id}", protocol)
        self.sessions[handle.id] = handle
        self.session_changed(handle.id)
        return handle

    def closed(self, handle: SessionHandle) -> None:
        """The session ended: its subscriptions and inbox end, its entry goes."""
        for channel in list(handle.subscriptions):
            self.unsubscribe(handle, channel)
        handle.close_inbox()
        self.renamed(handle, handle.name, "")
        if self.sessions.pop(handle.id, None) is not None:
            self.session_changed(handle.id)

    def renamed(self, handle: SessionHandle, old: str, new: str) -> None:
        """Keep the name index true: ``handle`` was called ``old``, now ``new``."""
        if old:
            holders = self.names.get(old.casefold())
            if holders is not None:
                holders.pop(handle.id, None)
                if not holders:
                    del self.names[old.casefold()]
        if new and not handle.closed:
            self.names.setdefault(new.casefold(), {})[handle.id] = handle

    def session_changed(self, session_id: str) -> None:
        """A session opened, closed or was renamed: a backend that lists this
        worker's sessions elsewhere (Redis's who hashes) hears of it."""
        notify = getattr(self.backend, "session_changed", None)
        if notify is not None:
            notify(session_id)

    def local_sessions(self, name: str | None = None) -> list[SessionInfo]:
        """This process's sessions; only those called ``name`` (casefolded) if given."""
        if name is None:
            return [handle.info() for handle in self.sessions.values()]
        if not name:
            return [h.info() for h in self.sessions.values() if not h.name]
        return [handle.info() for handle in self.names.get(name.casefold(), {}).values()]

    # -------------------------------------------------------- subscriptions

    def subscribe(self, handle: SessionHandle, channel: str) -> Queue:
        check_channel(channel)
        queue = handle.subscriptions.get(channel)
        if queue is not None:
            return queue
        queue = Queue(self, handle, channel)
        handle.subscriptions[channel] = queue
        members = self.channels.get(channel)
        if members is None:
            members = self.channels[channel] = {}
            if self.backend is not None:
                self.backend.channel_added(channel)
        members[handle] = queue
        self.subscription_count += 1
        return queue

    def unsubscribe(self, handle: SessionHandle, channel: str) -> None:
        queue = handle.subscriptions.pop(channel, None)
        if queue is None:
            return
        queue._end()
        self.subscription_count -= 1
        members = self.channels.get(channel)
        if members is None:
            return
        members.pop(handle, None)
        if not members:
            del self.channels[channel]
            if self.backend is not None:
                self.backend.channel_removed(channel)

    # ---------------------------------------------------------- publishing

    async def publish(
        self, sender: SessionHandle | None, channel: str, data: Any, *, exclude_self: bool = False
    ) -> None:
        check_channel(channel)
        payload = pack(data)
        await self._backend_ready()
        sender_id = sender.id if sender is not None else None
        self.counters[OUT] += 1
        members = self.channels.get(channel)
        if members:
            message = Message(channel, sender_id, unpack(payload))
            skip = sender if exclude_self else None
            for handle, queue in members.items():
                if handle is not skip:
                    queue.put(message)
        if self.backend is not None:
            self.backend.publish(channel, sender_id, payload)

    async def send(self, sender: SessionHandle | None, session_id: str, data: Any) -> bool:
        payload = pack(data)
        sender_id = sender.id if sender is not None else None
        self.counters[OUT] += 1
        target = self.sessions.get(session_id)
        if target is not None:
            return target.inbox_put(Message(None, sender_id, unpack(payload)))
        if self.backend is None or not isinstance(session_id, str):
            return False
        await self._backend_ready()
        return await self.backend.send(session_id, sender_id, payload)

    async def who(self, name: str | None = None) -> list[SessionInfo]:
        if name is not None:
            check_name(name)
        sessions = self.local_sessions(name)
        if self.backend is not None:
            sessions.extend(await self.backend.who(name=name))
        return sessions

    async def close_session(self, session_id: str, message: str = "") -> bool:
        if not isinstance(message, str) or len(message) > MAX_CLOSE_MESSAGE:
            raise BusError(f"a closing line is a str of at most {MAX_CLOSE_MESSAGE} characters")
        if self.close_local(session_id, message):
            return True
        if self.backend is None or not isinstance(session_id, str):
            return False
        return await self.backend.close_session(session_id, message)

    async def _backend_ready(self) -> None:
        # a backend may pace publishers (the local one while the supervisor is behind)
        ready = getattr(self.backend, "ready", None)
        if ready is not None:
            await ready()

    # ------------------------------------------- what the backend delivers

    def deliver(self, channel: str, sender: str | None, payload: bytes) -> None:
        """A message published elsewhere, for this worker's subscribers of ``channel``."""
        self.counters[IN] += 1
        members = self.channels.get(channel)
        if not members:
            return
        data = self._unpack_remote(payload)
        if data is _BROKEN:
            return
        message = Message(channel, sender, data)
        for queue in members.values():
            queue.put(message)

    def deliver_direct(self, session_id: str, sender: str | None, payload: bytes) -> bool:
        """A message sent from elsewhere to one of this worker's sessions; whether it is live."""
        self.counters[IN] += 1
        target = self.sessions.get(session_id)
        if target is None:
            return False
        data = self._unpack_remote(payload)
        if data is _BROKEN:
            return False
        target.inbox_put(Message(None, sender, data))
        return True

    def close_local(self, session_id: str, message: str) -> bool:
        """Close one of this worker's sessions with ``message`` as its last line."""
        target = self.sessions.get(session_id)
        if target is None:
            return False
        target.close_connection(message)
        return True

    def _unpack_remote(self, payload: bytes) -> Any:
        if len(payload) > MAX_MESSAGE:
            return self._broken("a message of %d bytes", len(payload))
        try:
            return unpack(payload)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            return self._broken("an undecodable message (%s)", type(exc).__name__)

    def _broken(self, what: str, detail: object) -> object:
        self.counters[UNDELIVERABLE] += 1
        BUS_WARNINGS.warning(log, "bus", "bus: dropped " + what + " from the backend", detail)
        return _BROKEN

    async def close(self) -> None:
        """The process is done: every session's bus ends, then the backend."""
        for handle in list(self.sessions.values()):
            self.closed(handle)
        if self.backend is not None:
            backend, self.backend = self.backend, None
            await backend.close()


_BROKEN = object()
