"""The flood scenario: echo bystanders' round trips, alone and while clients flood commands.

Bystanders (``--sessions``) are the echo scenario's sessions, one ``--size``
message in flight each. Flooders (``--flooders``) set up like a terminal
(negotiation answered, so a server enables NAWS, and the shell's first
byte seen) and stay idle through the first phase. Two phases of
``--duration`` each, started together in every client process:

- **baseline**: the bystanders alone;
- **flood**: the same bystanders while every flooder writes an endless
  stream of ``IAC SB NAWS <random size> IAC SE``, ``IAC AYT`` and ``IAC NOP``
  as fast as the server takes it (as long as its writes are not paused), and
  reads and discards whatever comes back, unparsed, so the server's answers
  never pile up and cost the client little.

Each phase counts the round trips that end in it and, for every message
still in flight at its end, its age then: a lower bound of its round trip,
so that a server stalled past the end of a phase cannot hide the stall.
The bystanders' p99 under flood minus their baseline p99 is what a flood of
one client's commands costs everyone else. A bystander lost or stalled is a
failure, as is a flooder that cannot be set up. A flooder the server closes
is not: dropping a client that floods it is a server's right, and does not
hurt the others, which is what this measures. Such flooders are counted
(``flooders_closed``); the flood was lighter from then on.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.loadtest.echo import EchoRun, EchoSession, open_sessions, stalled
from shardd.loadtest.hooks import Hooks, close_all, lanes
from shardd.loadtest.latencies import Latencies, format_ms
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import (
    BenchCase,
    BenchSettings,
    Param,
    Rows,
    Scenario,
    duration_param,
    sessions_param,
    whole,
)
from shardd.loadtest.sessions import SetupSession, Tally, check_positive, set_up_as
from shardd.loadtest.target import CLOSE_GRACE, TIMEOUT, Target, rotation
from workers.telnet.engine import TelnetEngine
from workers.telnet.options import build_naws
from workers.telnet.telopt import AYT, NAWS, NOP

_perf = time.perf_counter

#: the distinct flood chunks a run writes, each flooder starting at its own
CHUNKS = 4
#: bytes of one chunk, of whole sequences; the flooder writes one a loop turn
CHUNK_SIZE = 16384
#: a flooder's socket send buffer (the kernel doubles it). Autotuned, it grows
#: to megabytes the server will not read before the run ends, written at the
#: cost of the client process the bystanders share; the server's receive
#: buffer still holds some, so bytes sent are more than the server parsed.
SEND_BUFFER = 65536
#: the bench's flooders and bystanders: the figures of the requirement
BENCH_FLOODERS = 8
BENCH_BYSTANDERS = 20


def flood_chunks(seed: int = 0) -> list[bytes]:
    """Chunks of NAWS updates (random sizes, IAC doubled where a size has one), AYT and NOP."""
    rng = random.Random(seed)
    # the sans-I/O engine encodes them, as it encodes every telnet sequence we send
    encoder = TelnetEngine("client")
    chunks = []
    for _ in range(CHUNKS):
        chunk = bytearray()
        while len(chunk) < CHUNK_SIZE:
            kind = rng.randrange(3)
            if kind == 0:
                size = build_naws(rng.randint(1, 1000), rng.randint(1, 1000))
                encoder.send_subnegotiation(NAWS, size)
            else:
                encoder.send_command(AYT if kind == 1 else NOP)
            chunk += encoder.data_to_send()
        chunks.append(bytes(chunk))
    return chunks


class Flooder(SetupSession):
    """A session set up like a terminal's that then floods commands, when started."""

    __slots__ = (
        "_chunks",
        "_next",
        "_pump_handle",
        "flooding",
        "naws",
        "paused",
        "received",
        "sent",
    )

    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        self._chunks: list[bytes] | None = None
        self._next = 0
        self._pump_handle: asyncio.Handle | None = None
        self.flooding = False
        self.paused = False
        #: the server agreed to NAWS (a bare echo server negotiates nothing)
        self.naws = False
        self.sent = 0
        self.received = 0

    def data_received(self, data: bytes) -> None:
        if self._chunks is None:
            super().data_received(data)  # still a terminal: answer the negotiation
        else:
            self.received += len(data)  # answers to the flood: read so they never pile up

    def start(self, chunks: list[bytes], first: int) -> None:
        self.naws = self.telnet.engine.local_enabled(NAWS)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._chunks = chunks
        self._next = first % len(chunks)
        self.flooding = True
        self._pump()

    def stop(self) -> None:
        self.flooding = False
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None

    def _pump(self) -> None:
        # one chunk a turn of the loop, so the bystanders of this process get theirs
        self._pump_handle = None
        chunks = self._chunks
        if not self.flooding or self.paused or self.closing or chunks is None:
            return
        chunk = chunks[self._next]
        self._next = (self._next + 1) % len(chunks)
        self.transport.write(chunk)
        self.sent += len(chunk)
        if not self.paused:
            self._pump_handle = self.tally.loop.call_soon(self._pump)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.flooding and self._pump_handle is None:
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop()
        super().connection_lost(exc)


@dataclass
class Phase:
    """One phase of the bystanders' round trips."""

    seconds: float = 0.0
    round_trips: int = 0
    #: messages still in flight when the phase ended: their age then is among
    #: the RTTs, a lower bound, so that a stall past the phase's end still shows
    unfinished: int = 0
    rtts: Latencies = field(default_factory=Latencies)

    def summary(self) -> dict[str, Any]:
        rate = self.round_trips / self.seconds if self.seconds else 0.0
        return {
            "duration": round(self.seconds, 3),
            "round_trips": self.round_trips,
            "round_trips_per_s": round(rate, 1),
            "unfinished": self.unfinished,
            "rtt_ms": self.rtts.summary_ms(),
        }


@dataclass
class FloodResult(Result):
    """The flood scenario: the bystanders' round trips in each phase, and the flood."""

    sessions: int
    flooders: int
    size: int
    duration: float
    established: int = 0
    baseline_seconds: float = 0.0
    baseline_round_trips: int = 0
    baseline_unfinished: int = 0
    baseline_rtt: Latencies = field(default_factory=Latencies, repr=False)
    flood_seconds: float = 0.0
    flood_round_trips: int = 0
    flood_unfinished: int = 0
    flood_rtt: Latencies = field(default_factory=Latencies, repr=False)
    flooding: int = 0
    naws_negotiated: int = 0
    flood_bytes_sent: int = 0
    flood_bytes_received: int = 0
    flooders_closed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)

    @property
    def baseline(self) -> Phase:
        return Phase(
            self.baseline_seconds,
            self.baseline_round_trips,
            self.baseline_unfinished,
            self.baseline_rtt,
        )

    @property
    def flood(self) -> Phase:
        return Phase(
            self.flood_seconds, self.flood_round_trips, self.flood_unfinished, self.flood_rtt
        )

    def merge(self, other: FloodResult) -> FloodResult:
        self.sessions += other.sessions
        self.flooders += other.flooders
        self.established += other.established
        # the processes measure the same phases, started together
        self.baseline_seconds = max(self.baseline_seconds, other.baseline_seconds)
        self.baseline_round_trips += other.baseline_round_trips
        self.baseline_unfinished += other.baseline_unfinished
        self.baseline_rtt.merge(other.baseline_rtt)
        self.flood_seconds = max(self.flood_seconds, other.flood_seconds)
        self.flood_round_trips += other.flood_round_trips
        self.flood_unfinished += other.flood_unfinished
        self.flood_rtt.merge(other.flood_rtt)
        self.flooding += other.flooding
        self.naws_negotiated += other.naws_negotiated
        self.flood_bytes_sent += other.flood_bytes_sent
        self.flood_bytes_received += other.flood_bytes_received
        self.flooders_closed += other.flooders_closed
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        before, during = self.baseline_rtt.percentile(99), self.flood_rtt.percentile(99)
        rise = None if before is None or during is None else round((during - before) * 1000, 3)
        rate = self.flood_bytes_sent / self.flood_seconds if self.flood_seconds else 0.0
        return {
            "scenario": "flood",
            "sessions": self.sessions,
            "established": self.established,
            "size": self.size,
            "duration": round(self.duration, 3),
            "flooders": self.flooders,
            "flooding": self.flooding,
            "naws_negotiated": self.naws_negotiated,
            "baseline": self.baseline.summary(),
            "flood": self.flood.summary(),
            "p99_increase_ms": rise,
            "flood_bytes_sent": self.flood_bytes_sent,
            "flood_mb_per_s": round(rate / 1e6, 2),
            "flood_bytes_received": self.flood_bytes_received,
            "flooders_closed": self.flooders_closed,
            **self._common(),
        }


async def _measure(
    run: EchoRun,
    name: str,
    bystanders: list[EchoSession],
    duration: float,
    negotiation_timeout: float,
    hooks: Hooks,
) -> Phase:
    """One phase of the bystanders' round trips; those that stalled are failures, closed."""
    phase = Phase()
    run.phase = name
    run.rtts = phase.rtts
    before = run.round_trips
    run.measuring = True
    started = _perf()
    if any(not p.closing for p in bystanders):
        await hooks.pause(duration)  # the measured phase itself
    run.measuring = False
    now = _perf()
    phase.seconds = now - started
    phase.round_trips = run.round_trips - before
    for proto in bystanders:
        if not proto.closing:  # an open session always has its one message in flight
            phase.rtts.add(now - proto.sent_at)
            phase.unfinished += 1
    for proto in stalled(bystanders, phase.seconds, negotiation_timeout):
        run.tally.fail(name, TIMEOUT)
        proto.close()
    return phase


async def flood(
    host: str,
    port: int,
    *,
    sessions: int = 20,
    flooders: int = 8,
    size: int = 64,
    duration: float = 5.0,
    connect_timeout: float = 10.0,
    negotiation_timeout: float = 10.0,
    sources: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
    tls: bool = False,
) -> FloodResult:
    """Bystanders' round trips for ``duration`` alone, then as long while ``flooders`` flood.

    ``share`` (index, count): this process's flooders are numbers index,
    index + count, ... of the run's, each starting at its own chunk.
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    check_positive(
        sessions=sessions,
        flooders=flooders,
        size=size,
        duration=duration,
        connect_timeout=connect_timeout,
        negotiation_timeout=negotiation_timeout,
    )
    hooks = hooks or Hooks()
    run = EchoRun(size)
    tally = run.tally
    # the flooders' own, so that their setup failures are told apart from the bystanders'
    flood_tally = Tally(negotiation_timeout)
    pick = rotation(locals_, share)
    bystanders: list[EchoSession] = []
    flooding: list[Flooder] = []

    hooks.snapshot = lambda: {
        "round trips": run.round_trips,
        "bystanders": sum(1 for p in bystanders if not p.closing),
        "flooders": sum(1 for f in flooding if not f.closing),
        "flood bytes": sum(f.sent for f in flooding),
        "failures": sum(tally.failures.values()) + sum(flood_tally.failures.values()),
    }
    await open_sessions(
        run,
        bystanders,
        sessions,
        sessions,
        target,
        pick,
        connect_timeout,
        negotiation_timeout,
        hooks,
    )
    established = sum(1 for p in bystanders if not p.closing)

    async def set_up_flooder() -> None:
        proto, _seconds = await set_up_as(Flooder, flood_tally, target, pick(), connect_timeout)
        if proto is not None:
            flooding.append(proto)

    await lanes(flooders, flooders, set_up_flooder, hooks)
    await hooks.barrier("start")
    baseline = await _measure(run, "baseline", bystanders, duration, negotiation_timeout, hooks)
    await hooks.barrier("flood")
    chunks = flood_chunks()
    index, count = share
    for k, flooder in enumerate(flooding):
        flooder.start(chunks, index + k * count)
    under_flood = await _measure(run, "flood", bystanders, duration, negotiation_timeout, hooks)
    for flooder in flooding:
        flooder.stop()
    closed = sum(1 for f in flooding if f.lost is not None)
    run.stopping = True
    await close_all([*bystanders, *flooding])
    for phase, kinds in flood_tally.failures_by_phase.items():
        tally.failures.update(kinds)
        tally.failures_by_phase.setdefault(f"flooder {phase}", Counter()).update(kinds)
    tally.sources.update(flood_tally.sources)
    return FloodResult(
        sessions,
        flooders,
        size,
        duration,
        established,
        baseline_seconds=baseline.seconds,
        baseline_round_trips=baseline.round_trips,
        baseline_unfinished=baseline.unfinished,
        baseline_rtt=baseline.rtts,
        flood_seconds=under_flood.seconds,
        flood_round_trips=under_flood.round_trips,
        flood_unfinished=under_flood.unfinished,
        flood_rtt=under_flood.rtts,
        flooding=len(flooding),
        naws_negotiated=sum(1 for f in flooding if f.naws),
        flood_bytes_sent=sum(f.sent for f in flooding),
        flood_bytes_received=sum(f.received for f in flooding),
        flooders_closed=closed,
        failures=tally.failures,
        failures_by_phase=tally.failures_by_phase,
        sources=tally.sources,
    )


def _phase_rows(name: str, p: dict[str, Any]) -> Rows:
    return [
        (
            name,
            f"{p['duration']:.3f} s, {p['round_trips']} round trips "
            f"({p['round_trips_per_s']:.1f}/s), {p['unfinished']} unfinished at its end",
        ),
        (f"{name} rtt ms", format_ms(p["rtt_ms"])),
    ]


def _rows(s: dict[str, Any]) -> Rows:
    rise = s["p99_increase_ms"]
    return [
        (
            "bystanders",
            f"{s['established']} of {s['sessions']} established, {s['size']}-byte messages",
        ),
        (
            "flooders",
            f"{s['flooding']} of {s['flooders']} flooding (NAWS agreed by {s['naws_negotiated']}), "
            f"{s['flooders_closed']} closed by the server (not failures)",
        ),
        *_phase_rows("baseline", s["baseline"]),
        *_phase_rows("flood", s["flood"]),
        ("p99 increase", "-" if rise is None else f"{rise:+.3f} ms"),
        (
            "flood",
            f"{s['flood_bytes_sent']:,} bytes sent ({s['flood_mb_per_s']:.2f} MB/s), "
            f"{s['flood_bytes_received']:,} received back",
        ),
    ]


def _flood_p99(summary: dict[str, Any]) -> float:
    value = summary["flood"]["rtt_ms"]["p99"]
    return math.nan if value is None else float(value)


def _about(s: BenchSettings) -> str:
    return (
        f"flood: {BENCH_BYSTANDERS} echo bystanders' p99 while {BENCH_FLOODERS} clients "
        f"flood NAWS, AYT and NOP, {s.duration / 2:g}s baseline then {s.duration / 2:g}s"
    )


SCENARIO = Scenario(
    name="flood",
    help="echo bystanders' round trips, alone and while clients flood NAWS, AYT and NOP",
    run=flood,
    result=FloodResult,
    params=(
        sessions_param(20, "bystanders, echo sessions measuring round trips"),
        Param(
            "flooders",
            8,
            whole(1, 10_000),
            "clients flooding NAWS, AYT and NOP in the second phase",
            "N",
            split=True,
            bounds_procs=True,
        ),
        Param("size", 64, whole(1, 16 * 2**20), "bystanders' message size", "BYTES"),
        duration_param(5.0, "each phase, baseline then flood"),
    ),
    rows=_rows,
    in_flight=lambda p: p["sessions"] + p["flooders"],
    # bystanders, then flooders, set up; two phases; the close
    time_bound=lambda p, procs, setup: 2 * setup + 2 * p["duration"] + CLOSE_GRACE,
    progress_rate="round trips",
    bench=(
        BenchCase(
            "flood-p99",
            "ms",
            False,
            params=lambda s: {
                "sessions": BENCH_BYSTANDERS,
                "flooders": BENCH_FLOODERS,
                "size": 64,
                "duration": s.duration / 2,
            },
            figure=_flood_p99,
            about=_about,
            show=lambda ms: f"{ms:.2f}",
        ),
    ),
)
