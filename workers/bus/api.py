"""The message bus as shells see it: what a session may do with the others.

This module is the contract between the three parts of the bus, which are
built apart (docs/ARCHITECTURE.md, "Message bus"):

- the **hub** (``workers/bus/hub.py``), one per worker process: it holds the
  worker's subscriptions and sessions, fans a message out to every local
  subscriber, and hands what must leave the process to its backend;
- a **backend** (:class:`Backend`): ``local`` relays through the supervisor
  over the msgpack channels (``workers/bus/local.py`` and
  ``shardd/bus_relay.py``), ``redis`` through Redis pub/sub
  (``workers/bus/redis_backend.py``); with ``--workers 0`` and no Redis the
  hub alone is the bus;
- the **session's handle** (:class:`SessionBus`), ``writer.bus`` in a shell.

Semantics follow Phoenix.PubSub and Django Channels' groups:

- A channel is a name (``str``, at most :data:`MAX_CHANNEL` characters); a
  message is any msgpack-serialisable value (never pickle), at most
  :data:`MAX_MESSAGE` bytes packed. A value that does not pack or is too
  big raises :class:`BusError` in the publisher, and nothing is sent.
- ``publish`` reaches every subscriber of the channel on every shard (and
  host), the publisher's own subscriptions included unless ``exclude_self``
  (Phoenix's ``broadcast_from``). It crosses the IPC (or Redis) once per
  worker that has subscribers, never once per subscriber.
- Messages from one publisher arrive at each subscriber in the order they
  were published. Nothing is promised across publishers.
- Every subscription (and every session's inbox) has a bounded queue of
  :data:`QUEUE_LIMIT` messages. A message for a full queue is dropped for
  that subscriber only and counted (``Subscription.dropped``, the worker's
  ``bus_dropped`` counter): a slow reader never holds up the others, and
  never grows memory (Django Channels drops when a channel is full).
- ``send(session_id, message)`` reaches one session's inbox wherever it is;
  it returns whether that session was known to be live when routed (False
  for an unknown or closed one; a message in flight to a session that
  closes meanwhile is dropped).
- ``who()`` lists every live session of every shard (and host): a snapshot,
  taken when asked. ``who(name=NAME)`` lists only the sessions called NAME
  (compared casefolded): what a shell checks a name with, at the cost of the
  few sessions that match rather than of every session (a login that lists
  everyone is O(sessions), and a crowd of logins O(sessions²)).
- When a session ends, its subscriptions and inbox end with it; when a
  worker dies, the relay forgets its subscriptions and sessions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

#: longest channel name, in characters
MAX_CHANNEL = 200
#: largest message, packed with msgpack, in bytes
MAX_MESSAGE = 64 * 1024
#: messages waiting in one subscription's (or inbox's) queue before drops
QUEUE_LIMIT = 256
#: longest name a shell may give its session (``SessionBus.name``)
MAX_NAME = 64


class BusError(ValueError):
    """A message or channel the bus refuses; ``str()`` says why in one line."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a subscriber receives it."""

    #: the channel it was published on; ``None`` for a direct ``send``
    channel: str | None
    #: the publishing session's id (``None`` if the server itself sent it)
    sender: str | None
    #: the value, as msgpack gives it back (lists for tuples, str, bytes, ...)
    data: Any


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session as ``who()`` lists it."""

    id: str
    shard: int
    peer: str
    term: str
    #: what the session's shell set as ``bus.name``, or ""
    name: str
    #: the host it is on (``--bus-host``, by default the machine's name)
    host: str


class Subscription(Protocol):
    """Messages of one channel (or a session's inbox), in arrival order."""

    channel: str | None
    #: messages dropped because this queue was full
    dropped: int

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def __anext__(self) -> Message: ...

    async def get(self) -> Message:
        """The next message; ends (StopAsyncIteration) once unsubscribed or closed."""
        ...

    def close(self) -> None:
        """Unsubscribe; a task waiting in ``get`` or ``async for`` ends."""
        ...


class SessionBus(Protocol):
    """What a shell's session may do on the bus: ``writer.bus``."""

    #: this session's id on the bus (unique across shards and hosts)
    id: str

    @property
    def name(self) -> str: ...

    @name.setter
    def name(self, value: str) -> None:
        """The name ``who()`` shows (at most MAX_NAME characters; BusError otherwise)."""

    def subscribe(self, channel: str) -> Subscription:
        """Join ``channel``; the same Subscription if already joined."""
        ...

    def unsubscribe(self, channel: str) -> None:
        """Leave ``channel`` (nothing if not joined); its iterator ends."""
        ...

    @property
    def inbox(self) -> Subscription:
        """Direct messages (``send``) for this session."""
        ...

    async def publish(self, channel: str, data: Any, *, exclude_self: bool = False) -> None:
        """To every subscriber of ``channel``, everywhere."""
        ...

    async def send(self, session_id: str, data: Any) -> bool:
        """To one session's inbox, wherever it is."""
        ...

    async def who(self, *, name: str | None = None) -> list[SessionInfo]:
        """Every live session of every shard and host; with ``name``, only
        those whose name is ``name`` (compared casefolded)."""
        ...

    async def close_session(self, session_id: str, message: str = "") -> bool:
        """Close another session (with ``message`` as its last line); whether it was live."""
        ...


class Backend(Protocol):
    """How a worker's hub reaches the other workers (and hosts).

    The hub calls these; a backend calls the hub's ``deliver``,
    ``deliver_direct`` and ``close_local`` for what arrives from elsewhere.
    Payloads are packed once by the publisher's hub and travel as bytes.
    """

    async def start(self) -> None: ...

    def channel_added(self, channel: str) -> None:
        """The worker's first subscriber of ``channel`` arrived."""
        ...

    def channel_removed(self, channel: str) -> None:
        """The worker's last subscriber of ``channel`` left."""
        ...

    def publish(self, channel: str, sender: str | None, payload: bytes) -> None:
        """To the other workers and hosts with subscribers (not this worker's:
        the hub has delivered those already)."""
        ...

    async def send(self, session_id: str, sender: str | None, payload: bytes) -> bool:
        """To a session of another worker or host."""
        ...

    async def who(self, *, name: str | None = None) -> list[SessionInfo]:
        """The sessions of every other worker and host (only those called
        ``name``, casefolded, if given)."""
        ...

    async def close_session(self, session_id: str, message: str) -> bool: ...

    async def close(self) -> None: ...
