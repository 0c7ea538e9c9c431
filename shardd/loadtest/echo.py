"""The echo scenario: sessions keeping one message each in flight against an echo shell.

A session's first message is also its probe (see :mod:`~shardd.loadtest.sessions`):
its first round trip spans the negotiation. The measured interval starts
once every session has completed one (or failed), at the same moment in
every client process.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from shardd.loadtest.hooks import Hooks, close_all, lanes
from shardd.loadtest.latencies import Latencies, format_ms
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import (
    BenchCase,
    BenchSettings,
    Param,
    Rows,
    Scenario,
    concurrency_param,
    duration_param,
    sessions_param,
    setup_rounds,
    whole,
)
from shardd.loadtest.sessions import Tally, check_positive
from shardd.loadtest.target import (
    CLOSE_GRACE,
    CORRUPT_ECHO,
    NEGOTIATION_TIMEOUT,
    SHORT_ECHO,
    TIMEOUT,
    Target,
    connect_failure,
    lost_failure,
    open_session,
    rotation,
)
from shardd.loadtest.verify import CountedSession
from workers.telnet.client import TelnetClientSession

_perf = time.perf_counter

# where every session has stopped sending (--verify)
QUIET = "quiet"


@dataclass
class EchoResult(Result):
    """The echo scenario: round trips in the measured interval and their RTTs."""

    sessions: int
    size: int
    duration: float
    round_trips: int
    rtts: Latencies = field(repr=False)
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)
    established: int = 0

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


class EchoSession(CountedSession, asyncio.Protocol):
    """One session: send a message, wait for all of it to come back, repeat."""

    transport: asyncio.Transport  # set on connection, before anyone else has the session

    def __init__(self, run: EchoRun) -> None:
        self.run = run
        self.telnet = TelnetClientSession()
        self.received = bytearray()
        self.sent_at = 0.0
        self.closing = False
        self._abort: asyncio.TimerHandle | None = None
        # bytes on the wire (telnet commands included), as the server counts them
        self.rx = self.tx = 0
        loop = asyncio.get_running_loop()
        self.first_done: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.run.tally.connected(transport)
        self._send()

    def _send(self) -> None:
        self.sent_at = _perf()
        self.write(self.run.payload)

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        telnet = self.telnet
        data = telnet.receive(data)
        if telnet.has_output:
            self.write(telnet.data_to_send())
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
        self.run.tally.fail(self.run.phase if self.first_done.done() else "negotiation", kind)
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
            self.transport.close()
            self._abort = self.run.loop.call_later(CLOSE_GRACE, self.transport.abort)


class EchoRun:
    """What the sessions of one echo run share."""

    def __init__(self, size: int) -> None:
        # bytes the echo shell returns unchanged in any encoding; no IAC to double
        self.payload = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (size // 36 + 1))[:size]
        self.measuring = False
        self.stopping = False
        #: the phase a session's failure after its first round trip counts in
        self.phase = "echo"
        self.round_trips = 0
        self.rtts = Latencies()
        self.tally = Tally()
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
    tls: bool = False,
) -> EchoResult:
    """Run the echo scenario once; every session first completes one round trip.

    A session whose first round trip (its negotiation and probe) is not done
    within ``negotiation_timeout`` fails with a negotiation timeout. Sessions are
    opened ``concurrency`` at a time (all at once by default).
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    if size < 1 or sessions < 1 or not duration > 0:
        raise ValueError("sessions, size and duration must be positive")
    check_positive(connect_timeout=connect_timeout, negotiation_timeout=negotiation_timeout)
    hooks = hooks or Hooks()
    run = EchoRun(size)
    tally = run.tally
    pick = rotation(locals_, share)
    protocols: list[EchoSession] = []

    def live() -> int:
        return sum(1 for p in protocols if not p.closing)

    hooks.snapshot = lambda: {
        "round trips": run.round_trips,
        "sessions": live(),
        "failures": sum(tally.failures.values()),
    }
    hooks.records = lambda: [p.record() for p in protocols if not p.closing]
    await open_sessions(
        run,
        protocols,
        sessions,
        concurrency or sessions,
        target,
        pick,
        connect_timeout,
        negotiation_timeout,
        hooks,
    )
    established = live()
    await hooks.barrier("start")
    run.measuring = True
    started = _perf()
    if established:
        await hooks.pause(duration)  # the measured interval itself
    run.measuring = False
    elapsed = _perf() - started
    run.stopping = True
    for _proto in stalled(protocols, elapsed, negotiation_timeout):
        tally.fail("echo", TIMEOUT)
    await hooks.barrier(QUIET)  # with --verify, the server's status is compared here
    await close_all(protocols)
    return EchoResult(
        sessions,
        size,
        elapsed,
        run.round_trips,
        run.rtts,
        tally.failures,
        tally.failures_by_phase,
        tally.sources,
        established,
    )


async def open_sessions(
    run: EchoRun,
    protocols: list[EchoSession],
    count: int,
    width: int,
    target: Target,
    pick: Callable[[], str | None],
    connect_timeout: float,
    negotiation_timeout: float,
    hooks: Hooks,
) -> None:
    """Open ``count`` sessions into ``protocols``, ``width`` at once, and see each
    through its first round trip; failures are counted, and such sessions closed."""
    tally = run.tally

    async def open_one() -> None:
        try:
            _t, proto = await open_session(
                lambda: EchoSession(run), target, pick(), connect_timeout
            )
        except OSError as exc:
            tally.fail("connect", connect_failure(exc))
            return
        protocols.append(proto)

    await lanes(count, width, open_one, hooks)
    if protocols:
        _done, pending = await asyncio.wait(
            [p.first_done for p in protocols], timeout=negotiation_timeout
        )
        for proto in protocols:
            if proto.first_done in pending:
                tally.fail("negotiation", NEGOTIATION_TIMEOUT)
                proto.close()


def stalled(
    protocols: Sequence[EchoSession], elapsed: float, negotiation_timeout: float
) -> list[EchoSession]:
    """The open sessions with no round trip in an interval of ``elapsed`` seconds just
    ended (the shell lost or kept bytes), with at least a second's grace."""
    now = _perf()
    stalled_after = min(negotiation_timeout, max(elapsed, 1.0))
    return [p for p in protocols if not p.closing and now - p.sent_at > stalled_after]


def _rows(s: dict[str, Any]) -> Rows:
    return [
        ("sessions", f"{s['established']} of {s['sessions']} established"),
        ("message", f"{s['size']} bytes"),
        ("duration", f"{s['duration']:.3f} s"),
        ("round trips", f"{s['round_trips']} ({s['round_trips_per_s']:.1f}/s)"),
        ("throughput", f"{s['mb_per_s']:.2f} MB/s (both directions)"),
        ("rtt ms", format_ms(s["rtt_ms"])),
    ]


def _about(s: BenchSettings) -> str:
    return f"echo: {s.sessions} sessions, one message in flight each, {s.duration:g}s"


SCENARIO = Scenario(
    name="echo",
    help="sessions exchanging messages with an echo shell, one in flight each",
    run=echo,
    result=EchoResult,
    params=(
        sessions_param(100, "sessions"),
        concurrency_param(100),
        Param("size", 1024, whole(1, 16 * 2**20), "message size", "BYTES"),
        duration_param(5.0, "measured interval"),
    ),
    rows=_rows,
    verify_barrier=QUIET,
    in_flight=lambda p: p["sessions"],
    time_bound=lambda p, procs, setup: setup_rounds(p, procs) * setup + p["duration"],
    progress_rate="round trips",
    bench=(
        BenchCase(
            "echo-64",
            "round trips/s",
            True,
            params=lambda s: {"sessions": s.sessions, "size": 64, "duration": s.duration},
            figure=lambda summary: summary["round_trips_per_s"],
            about=_about,
        ),
        BenchCase(
            "echo-1k",
            "round trips/s",
            True,
            params=lambda s: {"sessions": s.sessions, "size": 1024, "duration": s.duration},
            figure=lambda summary: summary["round_trips_per_s"],
            about=_about,
        ),
    ),
)
