"""The hostile scenario: randomised hostile telnet streams, and whether the server survives them.

What each session sends comes from :mod:`~shardd.loadtest.hostile_inputs`:
session ``g`` of a run gets an attack kind and a share of ``--inputs``
drawn from the seed, so a seed gives the same inputs however the run is
split over client processes. ``--concurrency`` sessions run at once; the
run ends when the scheduled sessions are done, or after ``--duration``
(sessions in flight then stop sending, and still end as their kind does).
Every wait for the server is bounded by ``--negotiation-timeout``.

How a session ends, by kind (:mod:`~shardd.loadtest.hostile_sessions`):

- ``random``, ``iac``, ``sb``, ``ttype``, ``environ``, ``charset``,
  ``codec``, ``naws``, ``binary`` leave a usable connection. After its
  inputs the session ends any sequence left open and sends ``IAC DO
  TIMING-MARK``, which a server's telnet engine answers (WILL or WONT)
  whatever the session's state; then a second one, once the first is
  answered, by which time what the inputs set off has happened (a shell
  failing on the last line closes the session a loop turn after reading
  it). The inputs hold no DO TIMING-MARK or AYT of their own, so an
  answer is to the probe. Then the session sends EOF and the server
  closes. The server closing or resetting such a session at any point is
  a failure: the session *ended unexpectedly*. No answer in time, or
  inputs the server stops reading, is a failure too: it was
  *unresponsive*.
- ``close`` (closes while the server is still answering its inputs),
  ``reset`` (resets, SO_LINGER 0, with output unread), ``never-read``
  (reads nothing for 0.5-2 s, then resets) and ``silent`` (never
  negotiates or sends, 0.5-3 s) leave no usable connection: the server
  closing them is legitimate (a server may drop a client that never reads
  once its output cap is hit, or one that stays idle). They fail only if
  they cannot connect, or the server drops them while they negotiate.
  What they do to the server shows in the bystanders and the workers.

Bystanders (``--bystanders``, at least one per client process) negotiate
like a terminal and send a DO TIMING-MARK every ``BYSTANDER_EVERY``
seconds, one at a time, from before the first attack until ``SETTLE``
seconds after every process's last session; the round trips show stalls,
and a bystander dropped or not answered is a failure.

With ``--control`` or ``--server-port`` the parent reads the server's
workers before and after the run (:mod:`~shardd.loadtest.hostile_report`):
a worker restarted in between is a failure, and their memory is reported.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.config import ConfigError
from shardd.loadtest import hostile_inputs
from shardd.loadtest.hooks import Hooks
from shardd.loadtest.hostile_inputs import KINDS, RESET, Attack, check_kinds, schedule
from shardd.loadtest.hostile_report import rows, watch_workers
from shardd.loadtest.hostile_sessions import (
    BYSTANDER,
    EOF,
    RESET_WAIT,
    Bystander,
    HostileSession,
    Run,
)
from shardd.loadtest.latencies import Latencies
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import Param, Scenario, concurrency_param, duration_param, whole
from shardd.loadtest.sessions import check_positive
from shardd.loadtest.target import CLOSE_GRACE, Target, connect_failure, open_session, rotation

_perf = time.perf_counter

# after the last session, what its inputs set off plays out (a shell still
# writing to a session closed under it) while the bystanders watch
SETTLE = 1.0


def _count(counter: dict[str, int], other: dict[str, int]) -> None:
    for key, n in other.items():
        counter[key] = counter.get(key, 0) + n


@dataclass
class HostileResult(Result):
    """The hostile scenario: inputs sent, sessions by kind and how they ended, bystanders."""

    sessions: int
    concurrency: int
    inputs_limit: int
    duration: float
    seed: int
    kinds: str
    elapsed: float
    bystander_rtt: Latencies = field(repr=False)
    bystanders: int = 0
    bytes_sent: int = 0
    sessions_by_kind: dict[str, int] = field(default_factory=dict)
    inputs_by_kind: dict[str, int] = field(default_factory=dict)
    planned_by_kind: dict[str, int] = field(default_factory=dict)
    survived_by_kind: dict[str, int] = field(default_factory=dict)
    ended_by_kind: dict[str, int] = field(default_factory=dict)
    unresponsive_by_kind: dict[str, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)

    def merge(self, other: HostileResult) -> HostileResult:
        # every process follows the same schedule, taking its own sessions of it
        self.concurrency += other.concurrency
        self.elapsed = max(self.elapsed, other.elapsed)
        self.bystander_rtt.merge(other.bystander_rtt)
        self.bystanders += other.bystanders
        self.bytes_sent += other.bytes_sent
        for mine, theirs in (
            (self.sessions_by_kind, other.sessions_by_kind),
            (self.inputs_by_kind, other.inputs_by_kind),
            (self.planned_by_kind, other.planned_by_kind),
            (self.survived_by_kind, other.survived_by_kind),
            (self.ended_by_kind, other.ended_by_kind),
            (self.unresponsive_by_kind, other.unresponsive_by_kind),
        ):
            _count(mine, theirs)
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        def ordered(counts: dict[str, int]) -> dict[str, int]:
            return {k: counts[k] for k in KINDS if counts.get(k)}

        return {
            "scenario": "hostile",
            "seed": self.seed,
            "kinds": self.kinds.split(","),
            "sessions": self.sessions,
            "concurrency": self.concurrency,
            "inputs_limit": self.inputs_limit,
            "duration": round(self.duration, 3),
            "elapsed": round(self.elapsed, 3),
            "sessions_run": sum(self.sessions_by_kind.values()),
            "sessions_by_kind": ordered(self.sessions_by_kind),
            "inputs": sum(self.inputs_by_kind.values()),
            "inputs_by_kind": ordered(self.inputs_by_kind),
            "inputs_planned": sum(self.planned_by_kind.values()),
            "bytes_sent": self.bytes_sent,
            "survived": sum(self.survived_by_kind.values()),
            "survived_by_kind": ordered(self.survived_by_kind),
            "ended_unexpectedly": sum(self.ended_by_kind.values()),
            "ended_unexpectedly_by_kind": ordered(self.ended_by_kind),
            "unresponsive": sum(self.unresponsive_by_kind.values()),
            "unresponsive_by_kind": ordered(self.unresponsive_by_kind),
            "bystanders": self.bystanders,
            "bystander_probes": self.bystander_rtt.count,
            "bystander_rtt_ms": self.bystander_rtt.summary_ms(),
            "workers": None,
            **self._common(),
        }


async def hostile(
    host: str,
    port: int,
    *,
    sessions: int = 200,
    concurrency: int = 20,
    inputs: int = 20_000,
    duration: float = 30.0,
    seed: int = 0,
    kinds: str = "all",
    bystanders: int = 2,
    negotiation_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    sources: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
    tls: bool = False,
) -> HostileResult:
    """Hostile sessions from the seed's schedule (this process's share), and bystanders.

    ``share`` (index, count): this process runs sessions index, index +
    count, ... of the schedule, ``concurrency`` at once, and ``bystanders``
    of its own. ``negotiation_timeout`` bounds every wait for the server:
    a setup, a write it does not take, a probe's answer.
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    check_positive(
        sessions=sessions,
        concurrency=concurrency,
        inputs=inputs,
        duration=duration,
        bystanders=bystanders,
        negotiation_timeout=negotiation_timeout,
        connect_timeout=connect_timeout,
    )
    names = check_kinds(kinds)
    hooks = hooks or Hooks()
    pick = rotation(locals_, share)
    index, count = share
    run = Run(hooks, time.monotonic() + duration, negotiation_timeout)
    loop = run.loop

    async def attack_one(attack: Attack) -> None:
        name = attack.kind.name
        run.sessions[name] += 1
        run.planned[name] += len(attack.chunks)
        try:
            _transport, proto = await open_session(
                lambda: HostileSession(run, attack), target, pick(), connect_timeout
            )
        except OSError as exc:
            run.tally.fail(name, connect_failure(exc))
            return
        try:
            await proto.play()
        finally:
            proto.close(EOF if attack.kind.reads else RESET)  # if play() did not
            await proto.closed

    planned = (p for p in schedule(seed, sessions, inputs, names) if p.number % count == index)

    async def lane() -> None:
        for p in planned:  # shared by the lanes: each session is taken once
            if run.stopping():
                return
            await attack_one(hostile_inputs.attack(seed, p, names))

    done = asyncio.Event()
    watchers: list[asyncio.Task[None]] = []
    watched: list[Bystander] = []

    async def bystander(ready: asyncio.Future[None]) -> None:
        try:
            _transport, proto = await open_session(
                lambda: Bystander(run), target, pick(), connect_timeout
            )
            watched.append(proto)
            await proto.watch(ready, done)
        except OSError as exc:
            run.tally.fail(BYSTANDER, connect_failure(exc))
        finally:
            if not ready.done():  # the attacks wait for every bystander's setup
                ready.set_result(None)

    readies = [loop.create_future() for _ in range(bystanders)]
    for ready in readies:
        watchers.append(loop.create_task(bystander(ready)))
    await asyncio.wait(readies)
    hooks.snapshot = lambda: {
        "sessions": sum(run.sessions.values()),
        "inputs": sum(run.inputs.values()),
        "ended": sum(run.ended.values()),
        "failures": sum(run.tally.failures.values()),
    }
    await hooks.barrier("start")
    started = _perf()
    run.deadline = time.monotonic() + duration
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = _perf() - started
    await hooks.pause(SETTLE)
    await hooks.barrier("attacked")  # bystanders watch until every process is done
    done.set()
    await asyncio.wait(watchers)
    for proto in watched:
        proto.close()
    if watched:
        await asyncio.wait([p.closed for p in watched], timeout=CLOSE_GRACE + 1)
    return HostileResult(
        sessions,
        concurrency,
        inputs,
        duration,
        seed,
        ",".join(names),
        elapsed,
        run.rtt,
        bystanders=bystanders,
        bytes_sent=run.bytes_sent,
        sessions_by_kind=dict(run.sessions),
        inputs_by_kind=dict(run.inputs),
        planned_by_kind=dict(run.planned),
        survived_by_kind=dict(run.survived),
        ended_by_kind=dict(run.ended),
        unresponsive_by_kind=dict(run.unresponsive),
        failures=run.tally.failures,
        failures_by_phase=run.tally.failures_by_phase,
        sources=run.tally.sources,
    )


def _kinds(flag: str, value: Any) -> str:
    try:
        return ",".join(check_kinds(str(value)))
    except ValueError as exc:
        raise ConfigError(flag, str(exc)) from None


def _time_bound(p: dict[str, Any], procs: int, setup: float) -> float:
    # after the attacks' duration, the last sessions' setup, a stalled write, the
    # probe and the close; the bystanders' last probe; and the parent's two
    # status requests (10 s each at most)
    longest_hold = max(k.hold[1] for k in KINDS.values())
    duration: float = p["duration"]
    return duration + 4 * setup + RESET_WAIT + longest_hold + SETTLE + 2 * 10


SCENARIO = Scenario(
    name="hostile",
    help="randomised hostile telnet streams; whether the server and bystanders survive",
    run=hostile,
    result=HostileResult,
    params=(
        Param("sessions", 200, whole(1, 1_000_000), "hostile sessions", "N", bounds_procs=True),
        concurrency_param(20),
        Param("inputs", 20_000, whole(1, 10**9), "hostile inputs (writes), all sessions", "N"),
        duration_param(30.0, "longest time the attacks go on"),
        Param("seed", 0, whole(0, 2**63 - 1), "seed of the hostile inputs", "N"),
        Param("kinds", "all", _kinds, "attack kinds: all, or of " + ",".join(KINDS), "A,B,..."),
        Param(
            "bystanders",
            2,
            whole(1, 1000),
            "well-behaved sessions probed throughout (one per process at least)",
            "N",
            split=True,
        ),
    ),
    rows=rows,
    in_flight=lambda p: p["concurrency"] + p["bystanders"],
    time_bound=_time_bound,
    watch_workers=watch_workers,
    progress_rate="inputs",
)
