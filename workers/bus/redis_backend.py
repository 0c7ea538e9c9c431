"""The bus across hosts: a :class:`~workers.bus.api.Backend` on Redis pub/sub.

Each worker process has its own Redis connections (the supervisor stays out
of it): one pub/sub connection that receives, and a small pool for commands.

- **Publications.** The worker SUBSCRIBEs ``shardd:bus:ch:<channel>`` when
  its first local subscriber of the channel arrives and UNSUBSCRIBEs when the
  last leaves, so a message crosses Redis once per worker with subscribers.
  Its own publications come back to it and are skipped (the hub has
  delivered them locally): an envelope names its origin worker.
- **Order.** Everything a worker sends (PUBLISH, direct messages, closes)
  goes through one queue drained by one task, each batch pipelined and
  answered before the next is sent: Redis sees one publisher's messages in
  the order they were published, and hands them on in that order.
- **Direct messages and closes** go to the target worker's inbox channel
  ``shardd:bus:inbox:<host>/<pid>``, through a short Lua script that first
  checks the session is in its worker's who hash: ``send`` returns whether it
  was, and nothing is published for an unknown session.
- **who.** Each worker keeps the hash ``shardd:who:<host>/<pid>`` (session id
  -> packed info), written within :data:`WHO_FLUSH_GAP` of a session opening,
  closing or being renamed, with an expiry of :data:`WHO_TTL` it refreshes
  every third of that: a host that dies without a word leaves its sessions
  listed until then.
- **Outages.** Nothing here blocks the worker's loop or crashes it when
  Redis goes away. The pub/sub connection reconnects with a backoff from
  :data:`BACKOFF_MIN` doubling to :data:`BACKOFF_MAX`, resubscribes every
  channel and rewrites the who hash. Meanwhile every message is dropped and
  counted (``lost``), and the outage is logged twice: when it starts and when
  it ends, with how many messages were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from workers.bus.api import SessionInfo
from workers.bus.hub import LOST, OUTAGES
from workers.bus.redis_envelope import (
    CHANNEL_PREFIX,
    CLOSE,
    DIRECT,
    INBOX_PREFIX,
    PUBLICATION,
    WHO_PREFIX,
    channel_key,
    inbox_key,
    pack_envelope,
    pack_who_entry,
    unpack_envelope,
    unpack_who_entry,
    who_key,
    worker_of,
)
from workers.bus.redis_url import RedisAddress, parse_redis_url
from workers.log_limits import WarningLimiter

log = logging.getLogger("shardd.bus")
_T = TypeVar("_T")

#: seconds a worker's who hash outlives the worker's last refresh
WHO_TTL = 30.0
#: test knob: a shorter WHO_TTL (seconds), so an expiry is seen in a test
WHO_TTL_ENV = "SHARDD_BUS_WHO_TTL"
#: at most this long (seconds) between a session's change and its who entry
WHO_FLUSH_GAP = 0.05
#: who(): at most this many workers' hashes read, and entries returned
MAX_WHO_WORKERS = 10_000
MAX_WHO_ENTRIES = 100_000
#: reconnect backoff, seconds
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
#: a command (or a batch of them) that takes longer means Redis is unreachable
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
#: connections a worker reads who() on (it sends on one more, and listens on one)
READ_CONNECTIONS = 4
#: messages waiting to be sent to Redis, and their bytes, before drops
OUTBOX_LIMIT = 10_000
OUTBOX_BYTES = 16 * 1024 * 1024
#: commands pipelined in one round trip
BATCH = 512
#: messages read from Redis between two yields to the worker's other tasks
YIELD_EVERY = 32

# KEYS: the target worker's who hash, its inbox channel; ARGV: session id,
# envelope. Publishes only for a session its worker lists.
_SEND_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return redis.call('PUBLISH', KEYS[2], ARGV[2])
end
return -1
"""

_OS_ERROR = re.compile(r"\bError (\d+) ")
_SEND_SHA = hashlib.sha1(_SEND_SCRIPT.encode()).hexdigest()

_errors = (RedisError, OSError, TimeoutError)


class _Listed(Protocol):
    def info(self) -> SessionInfo: ...


class HubLink(Protocol):
    """What the backend uses of its worker's hub (workers/bus/hub.py): what it
    calls for what arrives from Redis, and the sessions its who hash lists."""

    host: str
    prefix: str
    sessions: Mapping[str, _Listed]
    #: the worker's counters, reported to the supervisor
    counters: Counter[str]

    def deliver(self, channel: str, sender: str | None, payload: bytes) -> None: ...

    def deliver_direct(self, session_id: str, sender: str | None, payload: bytes) -> bool: ...

    def close_local(self, session_id: str, message: str) -> bool: ...


@dataclass
class RedisBusStats:
    """The backend's counters (``status`` and the metrics show them)."""

    #: envelopes handed to Redis (publications, direct messages, closes)
    sent: int = 0
    #: envelopes from Redis handed to the hub
    received: int = 0
    #: messages dropped because Redis was unreachable or the outbox full
    lost: int = 0
    #: direct messages or closes for a session no longer here
    unknown: int = 0
    #: envelopes from Redis that were not well-formed
    refused: int = 0
    #: times Redis became unreachable
    outages: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "unknown": self.unknown,
            "refused": self.refused,
            "outages": self.outages,
        }


@dataclass
class _Outgoing:
    args: tuple[Any, ...]
    size: int
    reply: asyncio.Future[Any] | None = None


@dataclass
class _Link:
    """Whether Redis is reachable, and what the current outage has cost."""

    up: bool = False
    ever_up: bool = False
    down_since: float = field(default_factory=time.monotonic)
    lost: int = 0
    logged: bool = False


def who_ttl() -> float:
    value = os.environ.get(WHO_TTL_ENV)
    if value:
        with contextlib.suppress(ValueError):
            return max(0.3, float(value))
    return WHO_TTL


def _reason(exc: BaseException) -> str:
    """The name of what went wrong, preferring the OS's error under redis-py's."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, RedisError):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, TimeoutError):
        return f"no reply within {COMMAND_TIMEOUT:g}s"
    # redis-py words the OS's error ("Error 111 connecting to ..."): name it
    text = str(exc)
    number = _OS_ERROR.search(text)
    if number:
        return type(OSError(int(number.group(1)), "")).__name__
    return f"{type(exc).__name__}: {text[:100]}" if text else type(exc).__name__


class RedisBackend:
    """One worker's link to the other workers and hosts through Redis."""

    def __init__(
        self,
        address: RedisAddress,
        hub: HubLink,
        *,
        host_id: str,
        pid: int | None = None,
    ) -> None:
        self.address = address
        self.hub = hub
        self.host_id = host_id
        #: this worker on the bus: ``host/pid``; its sessions are ``host/pid.N``
        self.worker = f"{host_id}/{os.getpid() if pid is None else pid}"
        self.session_prefix = self.worker + "."
        self.stats = RedisBusStats()
        self.who_ttl = who_ttl()
        self._inbox = inbox_key(self.worker)
        self._who_key = who_key(self.worker)
        self._link = _Link()
        self._channels: set[str] = set()  # Redis channel keys this worker wants
        self._changes: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_bytes = 0
        self._wake_writer = asyncio.Event()
        self._who_dirty: set[str] = set()  # sessions whose entry is to be written
        self._wake_who = asyncio.Event()
        self._who_lock = asyncio.Lock()
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._warnings = WarningLimiter(per_host=5, total=5)
        self._closing = False
        common: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            # we reconnect ourselves, with our backoff: redis-py's own
            # retries would block a publisher for seconds while Redis is down
            "retry": Retry(NoBackoff(), 0),
        }
        # one connection sends everything (publications in order, the who
        # hash); who() reads on others, so that readers never delay a sender
        self._commands: Any = self._client(1, common)
        self._readers: Any = self._client(READ_CONNECTIONS, common)
        self._who_read: asyncio.Future[list[SessionInfo]] | None = None
        # the pub/sub connection waits for messages as long as it takes
        self._listener: Any = redis.Redis.from_url(address.url, socket_timeout=None, **common)

    def _client(self, connections: int, common: dict[str, Any]) -> Any:
        # a blocking pool: a caller waits for a free connection (at most
        # COMMAND_TIMEOUT) instead of failing as if Redis were down
        pool = redis.BlockingConnectionPool.from_url(
            self.address.url,
            max_connections=connections,
            timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            **common,
        )
        return redis.Redis(connection_pool=pool)

    # -- Backend -----------------------------------------------------------

    async def start(self) -> None:
        """Starts connecting; returns at once (the worker serves while Redis is down)."""
        loop = asyncio.get_running_loop()
        for coro in (self._keep_linked(), self._write(), self._keep_who(), self._subscriptions()):
            self._tasks.append(loop.create_task(coro))

    def channel_added(self, channel: str) -> None:
        key = channel_key(channel)
        self._channels.add(key)
        self._changes.put_nowait((True, key))

    def channel_removed(self, channel: str) -> None:
        key = channel_key(channel)
        self._channels.discard(key)
        self._changes.put_nowait((False, key))

    def publish(self, channel: str, sender: str | None, payload: bytes) -> None:
        envelope = pack_envelope(self.worker, PUBLICATION, channel, sender, payload)
        self._queue(("PUBLISH", channel_key(channel), envelope), len(envelope))

    async def send(self, session_id: str, sender: str | None, payload: bytes) -> bool:
        return await self._to_session(session_id, DIRECT, sender, payload)

    async def close_session(self, session_id: str, message: str) -> bool:
        return await self._to_session(session_id, CLOSE, None, message)

    async def who(self, *, name: str | None = None) -> list[SessionInfo]:
        """Every other worker's sessions, as their who hashes list them;
        nothing while Redis is unreachable or does not answer in time.
        With ``name``, those so called (casefolded), picked from the same read.

        Callers while a read is under way share it (one read however many
        shells ask at once: a talker's login storm asks twice a player)."""
        if not self._link.up:
            return []
        if self._who_read is None:
            self._who_read = asyncio.ensure_future(self._read_who_once())
        # shielded: one caller cancelled does not cancel the others' read
        found = await asyncio.shield(self._who_read)
        if name is None:
            return found
        wanted = name.casefold()
        return [s for s in found if s.name.casefold() == wanted]

    async def _read_who_once(self) -> list[SessionInfo]:
        try:
            return await _within(COMMAND_TIMEOUT * 2, self._read_who())
        except _errors:
            # not an outage by itself (the link and the writer judge that):
            # a slow answer, or every reading connection busy
            log.debug("bus: who() from redis failed", exc_info=True)
            return []
        finally:
            self._who_read = None

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks.clear()
        for item in self._outbox:
            if item.reply is not None and not item.reply.done():
                item.reply.set_result(None)
        if self._link.up:
            with contextlib.suppress(*_errors):
                await _within(1.0, self._commands.delete(self._who_key))
        await self._drop_pubsub()
        if self._who_read is not None:
            self._who_read.cancel()
        for client in (self._commands, self._readers, self._listener):
            with contextlib.suppress(*_errors):
                await client.aclose()

    # -- sessions of this worker, for who() elsewhere -----------------------

    def session_changed(self, session_id: str) -> None:
        """A session of this worker opened, closed, or changed its name."""
        self._who_dirty.add(session_id)
        self._wake_who.set()
        handle = self.hub.sessions.get(session_id)
        # its terminal is known once negotiation is over: written again then
        waiter = getattr(getattr(handle, "protocol", None), "_waiter_connected", None)
        if isinstance(waiter, asyncio.Future) and not waiter.done():
            waiter.add_done_callback(lambda _done: self._mark(session_id))

    def _mark(self, session_id: str) -> None:
        if session_id in self.hub.sessions:
            self._who_dirty.add(session_id)
            self._wake_who.set()

    def counters(self) -> dict[str, int]:
        return self.stats.as_dict()

    # -- sending ------------------------------------------------------------

    def _queue(
        self, args: tuple[Any, ...], size: int, reply: asyncio.Future[Any] | None = None
    ) -> bool:
        link = self._link
        if (
            not link.up
            or len(self._outbox) >= OUTBOX_LIMIT
            or self._outbox_bytes + size > OUTBOX_BYTES
        ):
            self._lose(1)
            if link.up:
                self._warnings.warning(
                    log, "redis", "bus: outbox to redis full; messages are dropped"
                )
            return False
        self._outbox.append(_Outgoing(args, size, reply))
        self._outbox_bytes += size
        self._wake_writer.set()
        return True

    async def _to_session(
        self, session_id: str, kind: str, sender: str | None, body: bytes | str
    ) -> bool:
        worker = worker_of(session_id)
        if worker is None:
            return False
        envelope = pack_envelope(self.worker, kind, session_id, sender, body)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        args = ("EVALSHA", _SEND_SHA, 2, who_key(worker), inbox_key(worker))
        if not self._queue((*args, session_id, envelope), len(envelope), reply):
            return False
        try:
            result = await _within(COMMAND_TIMEOUT * 2, reply)
        except TimeoutError:
            return False
        return isinstance(result, int) and result > 0

    async def _write(self) -> None:
        """The one task that sends: batches in order, each answered before the next."""
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(BATCH, len(self._outbox)))]
                self._outbox_bytes -= sum(item.size for item in batch)
                if not self._link.up:
                    self._fail(batch)
                    continue
                try:
                    results = await self._send_batch(batch)
                except _errors as exc:
                    self._fail(batch)
                    self._went_down(exc)
                    continue
                self.stats.sent += len(batch)
                for item, result in zip(batch, results, strict=True):
                    if item.reply is not None and not item.reply.done():
                        item.reply.set_result(result)

    async def _send_batch(self, batch: list[_Outgoing]) -> list[Any]:
        pipe = self._commands.pipeline(transaction=False)
        for item in batch:
            pipe.execute_command(*item.args)
        try:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            results = [exc] * len(batch)
        if any(_noscript(result) for result in results):
            # Redis restarted and forgot the script: load it, resend those
            await self._commands.script_load(_SEND_SCRIPT)
            retry = [item for item, result in zip(batch, results, strict=True) if _noscript(result)]
            again = iter(await self._send_batch(retry))
            results = [next(again) if _noscript(result) else result for result in results]
        return results

    def _fail(self, batch: Iterable[_Outgoing]) -> None:
        for item in batch:
            self._lose(1)
            if item.reply is not None and not item.reply.done():
                item.reply.set_result(None)

    def _lose(self, count: int) -> None:
        self.stats.lost += count
        self.hub.counters[LOST] += count
        self._link.lost += count

    # -- receiving and staying linked --------------------------------------

    async def _keep_linked(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            try:
                await self._connect()
            except Exception as exc:  # an outage, or a bug: either way, try again
                if not isinstance(exc, _errors):
                    log.error("bus: linking to redis failed", exc_info=True)
                log.debug("bus: linking to redis failed", exc_info=True)
                await self._drop_pubsub()
                self._went_down(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_MIN
            self._came_up()
            try:
                await self._listen()
            except Exception as exc:
                if not isinstance(exc, _errors):
                    log.error("bus: reading from redis failed", exc_info=True)
                self._went_down(exc)
            await self._drop_pubsub()

    async def _connect(self) -> None:
        pubsub = self._listener.pubsub()
        self._pubsub = pubsub
        await _within(COMMAND_TIMEOUT, pubsub.subscribe(self._inbox, *self._channels))
        # the inbox is subscribed before the who entries say the sessions are
        # here, so a send routed by them finds it: wait for Redis to confirm
        deadline = time.monotonic() + COMMAND_TIMEOUT
        inbox = self._inbox.encode()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            reply = await pubsub.get_message(timeout=remaining)
            if reply is None:
                continue
            if reply.get("type") == "message":
                self._arrived(reply["channel"], reply["data"])
            elif reply.get("type") == "subscribe" and reply.get("channel") == inbox:
                break
        await _within(COMMAND_TIMEOUT, self._commands.script_load(_SEND_SCRIPT))
        await _within(COMMAND_TIMEOUT, self._write_who(everything=True))

    async def _listen(self) -> None:
        pubsub = self._pubsub
        streak = 0
        while self._link.up:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            self._arrived(message["channel"], message["data"])
            streak += 1
            if streak >= YIELD_EVERY:
                # messages already buffered are read without yielding: let
                # the subscribers take theirs before their queues fill
                streak = 0
                await asyncio.sleep(0)

    async def _subscriptions(self) -> None:
        """Applies channel_added/removed to the pub/sub connection, in order."""
        while True:
            wanted, key = await self._changes.get()
            pubsub = self._pubsub
            if not self._link.up or pubsub is None:
                continue  # the next connection subscribes self._channels
            # the state may have changed again since: apply what it is now
            wanted = key in self._channels
            try:
                if wanted:
                    await _within(COMMAND_TIMEOUT, pubsub.subscribe(key))
                else:
                    await _within(COMMAND_TIMEOUT, pubsub.unsubscribe(key))
            except _errors as exc:
                self._went_down(exc)

    def _arrived(self, channel: object, data: object) -> None:
        envelope = unpack_envelope(data) if isinstance(data, bytes) else None
        if envelope is None or not isinstance(channel, bytes):
            self.stats.refused += 1
            self._warnings.warning(
                log, "redis", "bus: a malformed message on redis channel %r, dropped", channel
            )
            return
        if envelope.origin == self.worker:
            return  # our own publication: the hub delivered it here already
        self.stats.received += 1
        try:
            if envelope.kind == PUBLICATION:
                if channel != channel_key(envelope.target).encode():
                    self.stats.refused += 1
                    return
                assert isinstance(envelope.body, bytes)
                self.hub.deliver(envelope.target, envelope.sender, envelope.body)
            elif channel != self._inbox.encode():
                self.stats.refused += 1
            elif envelope.kind == DIRECT:
                assert isinstance(envelope.body, bytes)
                if not self.hub.deliver_direct(envelope.target, envelope.sender, envelope.body):
                    self.stats.unknown += 1
            elif envelope.kind == CLOSE:
                assert isinstance(envelope.body, str)
                if not self.hub.close_local(envelope.target, envelope.body):
                    self.stats.unknown += 1
        except Exception:  # a bug in delivery must not end the link
            self._warnings.warning(
                log, "redis", "bus: delivering a message failed", level=logging.ERROR
            )
            log.debug("bus: delivery failure", exc_info=True)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*_errors):
                await _within(1.0, pubsub.aclose())

    def _went_down(self, exc: BaseException) -> None:
        link = self._link
        if self._closing:
            return
        if link.up:
            link.up = False
            link.down_since = time.monotonic()
            link.lost = 0
            link.logged = False
            self.stats.outages += 1
            self.hub.counters[OUTAGES] += 1
        if not link.logged:
            link.logged = True
            log.warning(
                "bus: redis at %s unreachable (%s); messages are dropped until it is back",
                self.address.display(),
                _reason(exc),
            )

    def _came_up(self) -> None:
        link = self._link
        link.up = True
        if link.logged:
            link.logged = False
            log.warning(
                "bus: redis back after %.1f s; %d messages lost",
                time.monotonic() - link.down_since,
                link.lost,
            )
        if not link.ever_up:
            link.ever_up = True
            log.info("bus: redis at %s linked (worker %s)", self.address.display(), self.worker)

    # -- who ------------------------------------------------------------------

    async def _keep_who(self) -> None:
        """Writes changes within WHO_FLUSH_GAP, refreshes the expiry every TTL/3."""
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + self.who_ttl / 3
        while True:
            with contextlib.suppress(TimeoutError):
                await _within(max(0.0, refresh_at - loop.time()), self._wake_who.wait())
            self._wake_who.clear()
            refresh = loop.time() >= refresh_at
            if refresh:
                refresh_at = loop.time() + self.who_ttl / 3
            if self._link.up and (self._who_dirty or refresh):
                try:
                    await _within(COMMAND_TIMEOUT, self._write_who(everything=False))
                except _errors as exc:
                    self._went_down(exc)
            await asyncio.sleep(WHO_FLUSH_GAP)

    async def _write_who(self, *, everything: bool) -> None:
        async with self._who_lock:
            pipe = self._commands.pipeline(transaction=True)
            dirty: set[str] = set()
            sessions = self.hub.sessions
            if everything:
                self._who_dirty.clear()
                pipe.delete(self._who_key)
                handles = list(sessions.values())
                for start in range(0, len(handles), 1000):
                    infos = [handle.info() for handle in handles[start : start + 1000]]
                    entries = {info.id: pack_who_entry(info) for info in infos}
                    pipe.hset(self._who_key, mapping=entries)
            else:
                dirty, self._who_dirty = self._who_dirty, set()
                present = {
                    key: pack_who_entry(sessions[key].info()) for key in dirty if key in sessions
                }
                gone = [key for key in dirty if key not in sessions]
                if present:
                    pipe.hset(self._who_key, mapping=present)
                if gone:
                    pipe.hdel(self._who_key, *gone)
            pipe.pexpire(self._who_key, int(self.who_ttl * 1000))
            try:
                await pipe.execute()
            except BaseException:
                self._who_dirty |= dirty  # written on the next try, or the reconnect
                raise

    async def _read_who(self) -> list[SessionInfo]:
        keys: list[bytes] = []
        own = self._who_key.encode()
        async for key in self._readers.scan_iter(match=WHO_PREFIX + "*", count=1000):
            if key != own:
                keys.append(key)
            if len(keys) >= MAX_WHO_WORKERS:
                break
        found: list[SessionInfo] = []
        for start in range(0, len(keys), 100):
            chunk = keys[start : start + 100]
            pipe = self._readers.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
            for key, entries in zip(chunk, await pipe.execute(), strict=True):
                worker = key.decode(errors="replace")[len(WHO_PREFIX) :]
                for session_id, packed in entries.items():
                    info = unpack_who_entry(worker, session_id, packed)
                    if info is not None:
                        found.append(info)
                    if len(found) >= MAX_WHO_ENTRIES:
                        return found
        return found


def make(spec: str, hub: Any, channel: object = None) -> RedisBackend:
    """The backend for ``--bus redis://...`` (workers/bus/backends.py): its
    sessions are named ``host/pid.N``."""
    backend = RedisBackend(parse_redis_url(spec), hub, host_id=hub.host)
    hub.prefix = backend.session_prefix
    return backend


async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
    """``awaitable``'s result, or TimeoutError after ``seconds``. Not
    asyncio.wait_for: in Python 3.11 it swallows a cancellation that comes as
    the awaited event is set, and a worker stopping would wait forever."""
    async with asyncio.timeout(seconds):
        return await awaitable


def _noscript(result: object) -> bool:
    return isinstance(result, RedisError) and "NOSCRIPT" in str(result)


__all__ = ["CHANNEL_PREFIX", "INBOX_PREFIX", "HubLink", "RedisBackend", "RedisBusStats", "make"]
