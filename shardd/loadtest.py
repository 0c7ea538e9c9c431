"""The bundled load-test client: real telnet sessions on uvloop.

Four scenarios, each a coroutine running in the caller's event loop:

- :func:`connect`: session setups, ``concurrency`` of them in flight;
- :func:`echo`: sessions keeping one ``size``-byte message each in flight
  against an echo shell;
- :func:`idle`: sessions opened and held, and the server's memory for them;
- :func:`storm`: sessions arriving at a fixed rate, each held a random time.

Every session answers the server's negotiation like a terminal client
(:class:`~workers.telnet.client.TelnetClientSession`) and counts as set up
when the first in-band byte arrives from the server. As a shell may never
speak first (the echo shell does not), each session sends one probe byte, a
NUL, as soon as it connects: telnet's no-operation, which line shells
ignore and the echo shell returns. The echo scenario's first message is its
probe.

Loopback targets and sources only. ``shardd.loadtest_run`` runs these from
the command line, split over several client processes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import psutil

from workers.telnet.client import TelnetClientSession

_perf = time.perf_counter
_log = math.log

PROBE = b"\x00"

# failure kinds, as counted in every result's ``failures``
REFUSED = "refused"
RESET = "reset"
TIMEOUT = "timeout"
NEGOTIATION_TIMEOUT = "negotiation timeout"
SHORT_ECHO = "short echo"
CORRUPT_ECHO = "corrupt echo"
CLOSED = "closed by server"

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0))

# a close flushes what we wrote; a peer that stops reading must not hold it open
CLOSE_GRACE = 2.0

# Linux: let connect() pick the port of a bound socket, so the 4-tuple, not
# the source address alone, must be unique and TIME_WAIT ports are reused
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


# ------------------------------------------------------------------ targets

def check_loopback(host: str) -> None:
    """Refuse any target outside 127.0.0.0/8 and ::1."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
            raise ValueError(f"{host} ({address}) is not a loopback address; "
                             "the load-test tool only targets this machine")


@dataclass(frozen=True)
class Target:
    """A loopback server address, resolved once."""

    host: str
    port: int
    family: int
    address: tuple[Any, ...]

    @classmethod
    def resolve(cls, host: str, port: int) -> Target:
        """ValueError unless ``host`` is loopback and ``port`` a TCP port."""
        if not 0 < port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {port}")
        check_loopback(host)
        family, _type, _proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        return cls(host, port, family, address)

    def source(self, source: str) -> str:
        """``source`` as a local address for this target; ValueError if it cannot be."""
        check_loopback(source)
        try:
            infos = socket.getaddrinfo(source, None, family=self.family, type=socket.SOCK_STREAM)
        except OSError:
            raise ValueError(f"{source} is not an address of the target's family "
                             f"({self.address[0]})") from None
        return str(infos[0][4][0])

    def __str__(self) -> str:
        host = self.address[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


async def open_session(
    factory: Callable[[], asyncio.Protocol], target: Target, source: str | None, timeout: float
) -> tuple[asyncio.Transport, Any]:
    """A connected transport and its protocol; OSError (TimeoutError included) if not."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            try:
                sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
            sock.bind((source, 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, target.address)
        return await loop.create_connection(factory, sock=sock)  # type: ignore[return-value]
    except BaseException:
        sock.close()
        raise


def connect_failure(exc: BaseException) -> str:
    """The failure kind of a connection attempt that raised ``exc``."""
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return RESET
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}")
    return type(exc).__name__


def lost_failure(exc: BaseException | None) -> str:
    """The failure kind of a connection the server ended (``exc`` None: a clean close)."""
    return CLOSED if exc is None else connect_failure(exc)


def server_rss(pids: Iterable[int]) -> int:
    """Resident memory of these processes, summed; a process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def _rotation(sources: Sequence[str], share: tuple[int, int]) -> Callable[[], str | None]:
    """Local addresses round-robin over every process's sockets: this process's turns."""
    if not sources:
        return lambda: None
    index, count = share
    turns = [sources[(index + k * count) % len(sources)]
             for k in range(len(sources) // math.gcd(len(sources), count))]
    position = -1

    def pick() -> str:
        nonlocal position
        position = (position + 1) % len(turns)
        return turns[position]

    return pick


# ------------------------------------------------------------------ latencies

_PER_E = 200.0  # buckets per factor e: 0.5% wide


class Latencies:
    """Latency samples in log-spaced buckets 0.5% wide.

    Memory stays fixed however long a run lasts, processes' samples merge
    exactly (counts add up), and a percentile is within 0.25% of the sample
    it stands for; min and max are exact.
    """

    __slots__ = ("buckets", "count", "max", "min")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.min = math.inf
        self.max = 0.0

    def add(self, seconds: float) -> None:
        index = int(_log(seconds * 1e6) * _PER_E) if seconds > 1e-6 else 0
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def __len__(self) -> int:
        return self.count

    def merge(self, other: Latencies) -> Latencies:
        buckets = self.buckets
        for index, n in other.buckets.items():
            buckets[index] = buckets.get(index, 0) + n
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile in seconds (nearest rank), None without samples."""
        if not self.count:
            return None
        if q >= 100:
            return self.max
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                value = math.exp((index + 0.5) / _PER_E) / 1e6
                return min(max(value, self.min), self.max)
        return self.max

    def summary_ms(self) -> dict[str, float | None]:
        result: dict[str, float | None] = {}
        for name, q in PERCENTILES:
            value = self.percentile(q)
            result[name] = None if value is None else round(value * 1000, 3)
        return result

    def to_wire(self) -> list[Any]:
        return [self.count, self.min if self.count else None, self.max,
                [[i, n] for i, n in self.buckets.items()]]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Latencies:
        lat = cls()
        lat.count, low, lat.max, pairs = wire
        lat.min = math.inf if low is None else low
        lat.buckets = {int(i): int(n) for i, n in pairs}
        return lat


# ------------------------------------------------------------------- hooks

class Hooks:
    """How a scenario reports to, and waits for, whatever runs it.

    The defaults suit a scenario run on its own in the caller's loop: barriers
    pass at once and nothing is reported. The command line's client
    processes replace them to keep several processes in step.
    """

    def __init__(self) -> None:
        self.interrupted = asyncio.Event()
        #: live counters for a progress line, set by the running scenario
        self.snapshot: Callable[[], dict[str, int]] | None = None

    async def barrier(self, name: str) -> None:
        """Return once every process running this scenario has reached ``name``."""
        return None

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if interrupted."""
        if self.interrupted.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await self.interrupted.wait()
        except TimeoutError:
            pass


async def _lanes(count: int, width: int, job: Callable[[], Awaitable[None]],
                 hooks: Hooks) -> int:
    """Run ``job`` ``count`` times, ``width`` at once; how many were started."""
    started = 0

    async def lane() -> None:
        nonlocal started
        while started < count and not hooks.interrupted.is_set():
            started += 1
            await job()

    await asyncio.gather(*(lane() for _ in range(min(width, count))))
    return started


async def _close_all(protocols: Iterable[Any]) -> None:
    """Close sessions and wait for them to be gone; bounded by CLOSE_GRACE."""
    waiting = []
    for proto in protocols:
        proto.close()
        if not proto.closed.done():
            waiting.append(proto.closed)
    if waiting:
        await asyncio.wait(waiting, timeout=CLOSE_GRACE + 1)


# ----------------------------------------------------------------- results

def _merge_counts(mine: Counter, theirs: Counter) -> Counter:
    mine.update(theirs)
    return mine


def _merge_phases(mine: dict[str, Counter], theirs: dict[str, Counter]) -> dict[str, Counter]:
    for phase, kinds in theirs.items():
        mine.setdefault(phase, Counter()).update(kinds)
    return mine


class _Result:
    """What every scenario's result has: failures by kind and phase, sources."""

    scenario = ""
    failures: Counter
    failures_by_phase: dict[str, Counter]
    sources: Counter

    def _common(self) -> dict[str, Any]:
        return {
            "failures": dict(self.failures),
            "failures_total": sum(self.failures.values()),
            "failures_by_phase": {p: dict(k) for p, k in self.failures_by_phase.items() if k},
            "sources": dict(self.sources),
        }

    @property
    def failures_total(self) -> int:
        return sum(self.failures.values())

    def to_wire(self) -> dict[str, Any]:
        """A plain structure for the pipe between client processes."""
        wire: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Latencies):
                value = {"latencies": value.to_wire()}
            elif f.name == "failures_by_phase":
                value = {p: dict(k) for p, k in value.items()}
            elif isinstance(value, Counter):
                value = dict(value)
            wire[f.name] = value
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Any:
        values: dict[str, Any] = {}
        for name, value in wire.items():
            if isinstance(value, dict) and set(value) == {"latencies"}:
                value = Latencies.from_wire(value["latencies"])
            elif name == "failures_by_phase":
                value = {p: Counter(k) for p, k in value.items()}
            elif name in ("failures", "sources"):
                value = Counter(value)
            values[name] = value
        return cls(**values)

    def _merge_common(self, other: _Result) -> None:
        _merge_counts(self.failures, other.failures)
        _merge_phases(self.failures_by_phase, other.failures_by_phase)
        _merge_counts(self.sources, other.sources)


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


@dataclass
class EchoResult(_Result):
    """The echo scenario: round trips in the measured interval and their RTTs."""

    sessions: int
    size: int
    duration: float
    round_trips: int
    rtts: Latencies = field(repr=False)
    failures: Counter = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter] = field(default_factory=dict)
    sources: Counter = field(default_factory=Counter)
    established: int = 0
    scenario = "echo"

    @property
    def rate(self) -> float:
        return self.round_trips / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float:
        value = self.rtts.percentile(q)
        return float("nan") if value is None else value

    def merge(self, other: EchoResult) -> EchoResult:
        self.sessions += other.sessions
        # the processes measure the same interval, started together
        self.duration = max(self.duration, other.duration)
        self.round_trips += other.round_trips
        self.rtts.merge(other.rtts)
        self.established += other.established
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": "echo",
            "sessions": self.sessions,
            "established": self.established,
            "size": self.size,
            "duration": round(self.duration, 3),
            "round_trips": self.round_trips,
            "round_trips_per_s": round(self.rate, 1),
            "mb_per_s": round(self.rate * self.size * 2 / 1e6, 2),
            "rtt_ms": self.rtts.summary_ms(),
            **self._common(),
        }


@dataclass
class ConnectResult(_Result):
    """The connect scenario: setups completed and how long each took."""

    sessions: int
    concurrency: int
    attempts: int
    setups: int
    duration: float
    setup: Latencies = field(repr=False)
    failures: Counter = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter] = field(default_factory=dict)
    sources: Counter = field(default_factory=Counter)
    scenario = "connect"

    def merge(self, other: ConnectResult) -> ConnectResult:
        self.sessions += other.sessions
        self.concurrency += other.concurrency
        self.attempts += other.attempts
        self.setups += other.setups
        self.duration = max(self.duration, other.duration)
        self.setup.merge(other.setup)
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": "connect",
            "sessions": self.sessions,
            "concurrency": self.concurrency,
            "attempts": self.attempts,
            "setups": self.setups,
            "duration": round(self.duration, 3),
            "setups_per_s": _rate(self.setups, self.duration),
            "setup_ms": self.setup.summary_ms(),
            **self._common(),
        }


@dataclass
class IdleResult(_Result):
    """The idle scenario: sessions opened and held, and the server's memory."""

    sessions: int
    concurrency: int
    opened: int
    held: int
    duration: float
    setup: Latencies = field(repr=False)
    failures: Counter = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter] = field(default_factory=dict)
    sources: Counter = field(default_factory=Counter)
    pids: list[int] | None = None
    rss_before: int | None = None
    rss_holding: int | None = None
    scenario = "idle"

    def merge(self, other: IdleResult) -> IdleResult:
        self.sessions += other.sessions
        self.concurrency += other.concurrency
        self.opened += other.opened
        self.held += other.held
        self.duration = max(self.duration, other.duration)
        self.setup.merge(other.setup)
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        rss = None
        if self.rss_before is not None and self.rss_holding is not None:
            grown = self.rss_holding - self.rss_before
            rss = {
                "pids": self.pids,
                "before_bytes": self.rss_before,
                "holding_bytes": self.rss_holding,
                "per_session_bytes": round(grown / self.held) if self.held else None,
            }
        return {
            "scenario": "idle",
            "sessions": self.sessions,
            "concurrency": self.concurrency,
            "opened": self.opened,
            "held": self.held,
            "duration": round(self.duration, 3),
            "setup_ms": self.setup.summary_ms(),
            "rss": rss,
            **self._common(),
        }


@dataclass
class StormResult(_Result):
    """The storm scenario: arrivals, what became of them, and setup times."""

    rate: float
    duration: float
    hold_min: float
    hold_max: float
    seed: int
    max_sessions: int
    attempts: int
    successes: int
    skipped: int
    peak_in_flight: int
    elapsed: float
    setup: Latencies = field(repr=False)
    failures: Counter = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter] = field(default_factory=dict)
    sources: Counter = field(default_factory=Counter)
    scenario = "storm"

    def merge(self, other: StormResult) -> StormResult:
        # every process follows the same schedule, taking its own arrivals of it
        self.max_sessions += other.max_sessions
        self.attempts += other.attempts
        self.successes += other.successes
        self.skipped += other.skipped
        # each process's own peak; together at most their sum
        self.peak_in_flight += other.peak_in_flight
        self.elapsed = max(self.elapsed, other.elapsed)
        self.setup.merge(other.setup)
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": "storm",
            "rate": round(self.rate, 3),
            "duration": round(self.duration, 3),
            "hold_min": self.hold_min,
            "hold_max": self.hold_max,
            "seed": self.seed,
            "max_sessions": self.max_sessions,
            "attempts": self.attempts,
            "successes": self.successes,
            "skipped": self.skipped,
            "peak_in_flight": self.peak_in_flight,
            "elapsed": round(self.elapsed, 3),
            "setup_ms": self.setup.summary_ms(),
            **self._common(),
        }


RESULT_TYPES: dict[str, type[Any]] = {
    "connect": ConnectResult, "echo": EchoResult, "idle": IdleResult, "storm": StormResult,
}


# --------------------------------------------------------- set-up sessions

class _Tally:
    """Counters one scenario run shares among its sessions."""

    def __init__(self, negotiation_timeout: float = 10.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.negotiation_timeout = negotiation_timeout
        self.failures: Counter = Counter()
        self.failures_by_phase: dict[str, Counter] = {}
        self.sources: Counter = Counter()
        self.on_lost: Callable[[Any], None] | None = None

    def fail(self, phase: str, kind: str) -> None:
        self.failures[kind] += 1
        phases = self.failures_by_phase
        if phase not in phases:
            phases[phase] = Counter()
        phases[phase][kind] += 1

    def connected(self, transport: asyncio.BaseTransport) -> None:
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.sources[sockname[0]] += 1


class _Session(asyncio.Protocol):
    """A connect, idle or storm session: set up at the first in-band byte.

    ``ready`` gets the perf_counter time of that byte, or the failure kind
    (a str) when the server closed first or was silent too long.
    """

    __slots__ = ("_timer", "closed", "closing", "lost", "ready", "tally", "telnet", "transport")

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self.telnet = TelnetClientSession()
        self.transport: asyncio.Transport | None = None
        loop = tally.loop
        self.ready: asyncio.Future[float | str] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.lost: str | None = None
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.tally.connected(transport)
        self._timer = self.tally.loop.call_later(
            self.tally.negotiation_timeout, self._negotiation_expired)
        transport.write(PROBE)  # type: ignore[attr-defined]

    def _negotiation_expired(self) -> None:
        self._timer = None
        if not self.ready.done():
            self.ready.set_result(NEGOTIATION_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        telnet = self.telnet
        inband = telnet.receive(data)
        if telnet.has_output:
            self.transport.write(telnet.data_to_send())  # type: ignore[union-attr]
        if inband and not self.ready.done():
            self.ready.set_result(_perf())
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closing:
            self.closing = True
            self.lost = lost_failure(exc)
            if not self.ready.done():
                self.ready.set_result(self.lost)
            elif self.tally.on_lost is not None:
                self.tally.on_lost(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        if transport is not None:
            transport.close()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.tally.loop.call_later(CLOSE_GRACE, transport.abort)


async def _set_up(tally: _Tally, target: Target, source: str | None,
                  connect_timeout: float) -> tuple[_Session | None, float]:
    """One session to the point of the server's first in-band byte.

    The session and its setup time in seconds, or None (the failure counted).
    """
    started = _perf()
    try:
        _transport, proto = await open_session(lambda: _Session(tally), target, source,
                                               connect_timeout)
    except OSError as exc:
        tally.fail("connect", connect_failure(exc))
        return None, 0.0
    outcome = await proto.ready
    if type(outcome) is str:
        tally.fail("negotiation", outcome)
        proto.close()
        await proto.closed
        return None, 0.0
    return proto, outcome - started  # type: ignore[operator]


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be positive, not {value!r}")


async def connect(
    host: str,
    port: int,
    *,
    sessions: int = 1000,
    concurrency: int = 50,
    negotiation_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    sources: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
) -> ConnectResult:
    """Set up ``sessions`` sessions, ``concurrency`` at a time, closing each once set up.

    ``share`` is (this process, processes) when a run is split over several:
    it decides this process's turns in the round-robin over ``sources``.
    """
    target = Target.resolve(host, port)
    locals_ = [target.source(s) for s in sources]
    _check_positive(sessions=sessions, concurrency=concurrency,
                    negotiation_timeout=negotiation_timeout, connect_timeout=connect_timeout)
    hooks = hooks or Hooks()
    tally = _Tally(negotiation_timeout)
    pick = _rotation(locals_, share)
    setup = Latencies()
    done = in_flight = 0

    async def one() -> None:
        nonlocal done, in_flight
        in_flight += 1
        proto, seconds = await _set_up(tally, target, pick(), connect_timeout)
        if proto is not None:
            setup.add(seconds)
            done += 1
            proto.close()
            await proto.closed
        in_flight -= 1

    hooks.snapshot = lambda: {"setups": done, "in flight": in_flight,
                              "failures": sum(tally.failures.values())}
    await hooks.barrier("start")
    started = _perf()
    attempts = await _lanes(sessions, concurrency, one, hooks)
    elapsed = _perf() - started
    return ConnectResult(sessions, concurrency, attempts, done, elapsed, setup, tally.failures,
                         tally.failures_by_phase, tally.sources)


async def idle(
    host: str,
    port: int,
    *,
    sessions: int = 1000,
    duration: float = 10.0,
    concurrency: int = 100,
    negotiation_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    sources: Sequence[str] = (),
    pids: Sequence[int] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
) -> IdleResult:
    """Open ``sessions`` sessions (``concurrency`` setups at a time) and hold them.

    Every session must stay up for ``duration`` after the last one opened; one
    the server drops counts as a failure. With ``pids``, the resident memory
    of those (server) processes is measured before opening and at the end of
    the hold.
    """
    target = Target.resolve(host, port)
    locals_ = [target.source(s) for s in sources]
    _check_positive(sessions=sessions, concurrency=concurrency, duration=duration,
                    negotiation_timeout=negotiation_timeout, connect_timeout=connect_timeout)
    hooks = hooks or Hooks()
    tally = _Tally(negotiation_timeout)
    pick = _rotation(locals_, share)
    setup = Latencies()
    live: set[_Session] = set()
    opened = 0

    def lost(proto: _Session) -> None:
        live.discard(proto)
        tally.fail("hold", proto.lost or CLOSED)

    tally.on_lost = lost

    async def one() -> None:
        nonlocal opened
        proto, seconds = await _set_up(tally, target, pick(), connect_timeout)
        if proto is not None:
            setup.add(seconds)
            opened += 1
            live.add(proto)

    hooks.snapshot = lambda: {"open": len(live), "failures": sum(tally.failures.values())}
    rss_before = server_rss(pids) if pids else None
    await _lanes(sessions, concurrency, one, hooks)
    await hooks.barrier("open")
    started = _perf()
    await hooks.pause(duration)
    elapsed = _perf() - started
    held = len(live)
    rss_holding = server_rss(pids) if pids else None
    await hooks.barrier("held")
    tally.on_lost = None
    await _close_all(list(live))
    return IdleResult(sessions, concurrency, opened, held, elapsed, setup, tally.failures,
                      tally.failures_by_phase, tally.sources,
                      pids=list(pids) if pids else None,
                      rss_before=rss_before, rss_holding=rss_holding)


async def storm(
    host: str,
    port: int,
    *,
    rate: float = 100.0,
    duration: float = 10.0,
    hold_min: float = 1.0,
    hold_max: float = 5.0,
    seed: int = 0,
    max_sessions: int = 1000,
    negotiation_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    sources: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
) -> StormResult:
    """New sessions at ``rate`` per second for ``duration``, each held a random time.

    Arrival ``g`` (counting from 0) is due at ``g / rate`` seconds and held for
    the ``g``-th draw of ``random.Random(seed).uniform(hold_min, hold_max)``
    once set up, so a seed gives the same schedule however the run is split
    (``share``: this process takes arrivals ``index, index + count, ...``).
    An arrival finding ``max_sessions`` of this process's sessions in flight is
    skipped, and counted as such.
    """
    target = Target.resolve(host, port)
    locals_ = [target.source(s) for s in sources]
    _check_positive(rate=rate, duration=duration, max_sessions=max_sessions,
                    negotiation_timeout=negotiation_timeout, connect_timeout=connect_timeout)
    if not 0 <= hold_min <= hold_max or math.isinf(hold_max):
        raise ValueError(f"need 0 <= hold_min <= hold_max, not {hold_min!r}, {hold_max!r}")
    hooks = hooks or Hooks()
    loop = asyncio.get_running_loop()
    tally = _Tally(negotiation_timeout)
    pick = _rotation(locals_, share)
    index, count = share
    rng = random.Random(seed)
    setup = Latencies()
    live: set[_Session] = set()
    tasks: set[asyncio.Task[None]] = set()
    # arrivals g with g / rate < duration, whatever the rounding of rate * duration
    arrivals = math.ceil(rate * duration - 1e-9)
    attempts = successes = skipped = in_flight = peak = 0

    async def one(hold: float) -> None:
        nonlocal successes, in_flight
        try:
            proto, seconds = await _set_up(tally, target, pick(), connect_timeout)
            if proto is None:
                return
            setup.add(seconds)
            if hooks.interrupted.is_set():
                proto.close()
                await proto.closed
                return
            live.add(proto)
            timer = loop.call_later(hold, proto.close)
            await proto.closed
            timer.cancel()
            live.discard(proto)
            if proto.lost is not None:
                tally.fail("hold", proto.lost)
            elif not hooks.interrupted.is_set():
                successes += 1
        finally:
            in_flight -= 1

    hooks.snapshot = lambda: {"attempts": attempts, "in flight": in_flight,
                              "successes": successes, "failures": sum(tally.failures.values())}
    await hooks.barrier("start")
    started = _perf()
    drawn = 0  # hold times drawn so far, for every process's arrivals
    g = index
    while g < arrivals and not hooks.interrupted.is_set():
        wait = started + g / rate - _perf()
        if wait > 0.0005:
            # the arrival schedule itself
            await (asyncio.sleep(wait) if wait < 0.1 else hooks.pause(wait))
            continue
        while drawn <= g:
            hold = rng.uniform(hold_min, hold_max)
            drawn += 1
        g += count
        if in_flight >= max_sessions:
            skipped += 1
            continue
        attempts += 1
        in_flight += 1
        peak = max(peak, in_flight)
        task = loop.create_task(one(hold))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # the last arrivals are done within one setup and one hold
    bound = connect_timeout + negotiation_timeout + hold_max + CLOSE_GRACE + 1
    if tasks:
        everything = asyncio.gather(*tasks, return_exceptions=True)
        interrupted = loop.create_task(hooks.interrupted.wait())
        await asyncio.wait([everything, interrupted], timeout=bound,
                           return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if hooks.interrupted.is_set() and tasks:
            for proto in list(live):
                proto.close()
            await asyncio.wait(list(tasks), timeout=CLOSE_GRACE + 1)
    for task in list(tasks):
        task.cancel()
        if not hooks.interrupted.is_set():
            tally.fail("hold", TIMEOUT)
    elapsed = _perf() - started
    return StormResult(rate, duration, hold_min, hold_max, seed, max_sessions, attempts,
                       successes, skipped, peak, elapsed, setup, tally.failures,
                       tally.failures_by_phase, tally.sources)


# ------------------------------------------------------------------ echo

class _EchoSession(asyncio.Protocol):
    """One session: send a message, wait for all of it to come back, repeat."""

    def __init__(self, run: _EchoRun) -> None:
        self.run = run
        self.telnet = TelnetClientSession()
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.sent_at = 0.0
        self.closing = False
        self._abort: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.first_done = loop.create_future()
        self.closed = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run.tally.connected(transport)
        self._send()

    def _send(self) -> None:
        self.sent_at = _perf()
        self.transport.write(self.run.payload)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        telnet = self.telnet
        data = telnet.receive(data)
        if telnet.has_output:
            self.transport.write(telnet.data_to_send())  # type: ignore[union-attr]
        if not data:
            return
        run = self.run
        if self.closing:
            return
        payload = run.payload
        received = self.received
        if received or data != payload:  # else the whole message came in one piece
            received += data
            size = len(payload)
            if len(received) < size:
                return
            if received[:size] != payload:
                self._fail(CORRUPT_ECHO)
                return
            del received[:size]
        if run.measuring:
            run.rtts.add(_perf() - self.sent_at)
            run.round_trips += 1
        if not self.first_done.done():
            self.first_done.set_result(None)
        if not run.stopping:
            self._send()

    def _fail(self, kind: str) -> None:
        self.run.tally.fail("echo" if self.first_done.done() else "negotiation", kind)
        if not self.first_done.done():
            self.first_done.set_result(None)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not (self.closing or self.run.stopping):
            self.closing = True
            self._fail(SHORT_ECHO if exc is None and self.received else lost_failure(exc))
        if not self.first_done.done():
            self.first_done.set_result(None)
        if self._abort is not None:
            self._abort.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.transport is not None:
                self.transport.close()
                self._abort = self.run.loop.call_later(CLOSE_GRACE, self.transport.abort)


class _EchoRun:
    def __init__(self, size: int) -> None:
        # bytes the echo shell returns unchanged in any encoding; no IAC to double
        self.payload = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (size // 36 + 1))[:size]
        self.measuring = False
        self.stopping = False
        self.round_trips = 0
        self.rtts = Latencies()
        self.tally = _Tally()
        self.loop = self.tally.loop


async def echo(
    host: str,
    port: int,
    *,
    sessions: int = 100,
    size: int = 1024,
    duration: float = 5.0,
    connect_timeout: float = 10.0,
    negotiation_timeout: float = 30.0,
    concurrency: int | None = None,
    sources: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
) -> EchoResult:
    """Run the echo scenario once; every session first completes one round trip.

    A session whose first round trip (its negotiation and probe) is not done
    within ``negotiation_timeout`` fails with a negotiation timeout. Sessions are
    opened ``concurrency`` at a time (all at once by default).
    """
    target = Target.resolve(host, port)
    locals_ = [target.source(s) for s in sources]
    if size < 1 or sessions < 1 or not duration > 0:
        raise ValueError("sessions, size and duration must be positive")
    _check_positive(connect_timeout=connect_timeout, negotiation_timeout=negotiation_timeout)
    hooks = hooks or Hooks()
    run = _EchoRun(size)
    tally = run.tally
    pick = _rotation(locals_, share)
    protocols: list[_EchoSession] = []

    async def open_one() -> None:
        try:
            _t, proto = await open_session(lambda: _EchoSession(run), target, pick(),
                                           connect_timeout)
        except OSError as exc:
            tally.fail("connect", connect_failure(exc))
            return
        protocols.append(proto)

    def live() -> int:
        return sum(1 for p in protocols if not p.closing)

    hooks.snapshot = lambda: {"round trips": run.round_trips, "sessions": live(),
                              "failures": sum(tally.failures.values())}
    await _lanes(sessions, concurrency or sessions, open_one, hooks)
    if protocols:
        _done, pending = await asyncio.wait([p.first_done for p in protocols],
                                            timeout=negotiation_timeout)
        for proto in protocols:
            if proto.first_done in pending:
                tally.fail("negotiation", NEGOTIATION_TIMEOUT)
                proto.close()
    established = live()
    await hooks.barrier("start")
    run.measuring = True
    started = _perf()
    if established:
        await hooks.pause(duration)  # the measured interval itself
    run.measuring = False
    elapsed = _perf() - started
    run.stopping = True
    now = _perf()
    stalled_after = min(negotiation_timeout, max(elapsed, 1.0))
    for proto in protocols:
        # no round trip in the whole interval: the shell lost or kept bytes
        if not proto.closing and now - proto.sent_at > stalled_after:
            tally.fail("echo", TIMEOUT)
    await _close_all(protocols)
    return EchoResult(sessions, size, elapsed, run.round_trips, run.rtts, tally.failures,
                      tally.failures_by_phase, tally.sources, established)


SCENARIOS: dict[str, Callable[..., Awaitable[Any]]] = {
    "connect": connect, "echo": echo, "idle": idle, "storm": storm,
}
