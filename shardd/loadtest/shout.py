"""The shout scenario: one shout to every player of a talker, and how long it takes.

``--sessions`` players (see :mod:`~shardd.loadtest.talker_players`) log in
to a talker (``shardd serve --shell talker``) and join rooms of
``--room-size`` (so that no room holds them all: the talker tells a room
who comes and goes). Once every client process has its players in their
rooms, one player, the first of the first process, shouts once; every
other player notes when ``NAME shouts: TEXT`` arrived (CLOCK_MONOTONIC, one
clock for all processes). The figure is the time from the shout until the
last player received it, with how many did; a player that had not
received it after ``--drain`` seconds is a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.loadtest.chat import JOIN_SETTLE
from shardd.loadtest.hooks import Hooks
from shardd.loadtest.latencies import Latencies, format_ms
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import (
    Param,
    Rows,
    Scenario,
    concurrency_param,
    number,
    setup_rounds,
    whole,
)
from shardd.loadtest.sessions import check_positive
from shardd.loadtest.talker_players import Players, leave, log_in
from shardd.loadtest.target import CLOSE_GRACE, Target, rotation

_now = time.monotonic

#: what is shouted
SHOUT = "loadtest-shout"
#: the kind a player that never heard the shout counts as among the failures
MISSED = "shout missed"


@dataclass
class ShoutResult(Result):
    """The shout scenario: the shout's send time and every receive time."""

    sessions: int
    room_size: int
    drain: float
    ready: int = 0
    #: the shouter's send time (the first process's), None if nobody shouted
    shouted_at: float | None = None
    #: every other ready player's receive time
    heard: list[float] = field(default_factory=list)
    login: Latencies = field(default_factory=Latencies, repr=False)
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)

    def merge(self, other: ShoutResult) -> ShoutResult:
        self.ready += other.ready
        if other.shouted_at is not None:
            self.shouted_at = other.shouted_at
        self.heard += other.heard
        self.login.merge(other.login)
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        expected = max(0, self.ready - 1) if self.shouted_at is not None else 0
        after = Latencies()
        last = None
        if self.shouted_at is not None:
            for at in self.heard:
                after.add(max(at - self.shouted_at, 0.0))
            if self.heard:
                last = round((max(self.heard) - self.shouted_at) * 1000, 3)
        missed = expected - len(self.heard)
        return {
            "scenario": "shout",
            "sessions": self.sessions,
            "room_size": self.room_size,
            "ready": self.ready,
            "shouted": self.shouted_at is not None,
            "expected": expected,
            "heard": len(self.heard),
            "last_ms": last,
            "heard_ms": after.summary_ms(),
            "login_ms": self.login.summary_ms(),
            **self._common("delivery", {MISSED: missed}),
        }


async def shout(
    host: str,
    port: int,
    *,
    sessions: int = 1000,
    room_size: int = 20,
    concurrency: int = 100,
    drain: float = 10.0,
    connect_timeout: float = 10.0,
    negotiation_timeout: float = 10.0,
    sources: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
    tls: bool = False,
) -> ShoutResult:
    """``sessions`` players in rooms of ``room_size``; one shouts, the others hear it.

    ``share`` (index, count): this process's players are the run's numbers
    index, index + count, ... below ``sessions``; process 0 shouts.
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    check_positive(
        sessions=sessions,
        room_size=room_size,
        concurrency=concurrency,
        drain=drain,
        connect_timeout=connect_timeout,
        negotiation_timeout=negotiation_timeout,
    )
    hooks = hooks or Hooks()
    players = Players(negotiation_timeout, room_size)
    tally = players.tally
    start, step = share
    hooks.snapshot = lambda: {
        "players": sum(1 for p in players.ready if not p.closing),
        "heard": len(players.shout_times),
        "failures": sum(tally.failures.values()),
    }
    ready = await log_in(
        players,
        range(start, sessions, step),
        concurrency,
        target,
        rotation(locals_, share),
        connect_timeout,
        negotiation_timeout,
        hooks,
    )
    count = len(ready)
    players.shout_text = SHOUT
    if start == 0 and ready:
        players.shouter = min(ready, key=lambda p: p.index)
    await hooks.barrier("ready")
    await hooks.pause(JOIN_SETTLE)
    players.wait_for(p for p in ready if p is not players.shouter)
    await hooks.barrier("shout")
    shouted_at = None
    if players.shouter is not None and not players.shouter.closing:
        shouted_at = _now()
        players.shouter.write_line(f"shout {SHOUT}")
    if not hooks.interrupted.is_set():
        try:
            async with asyncio.timeout(drain):
                await players.all_heard.wait()
        except TimeoutError:
            pass
    await hooks.barrier("heard")
    await leave(players)
    return ShoutResult(
        sessions,
        room_size,
        drain,
        ready=count,
        shouted_at=shouted_at,
        heard=players.shout_times,
        login=players.login,
        failures=tally.failures,
        failures_by_phase=tally.failures_by_phase,
        sources=tally.sources,
    )


def _rows(s: dict[str, Any]) -> Rows:
    last = s["last_ms"]
    return [
        ("players", f"{s['ready']} of {s['sessions']} in rooms of {s['room_size']}"),
        ("login ms", format_ms(s["login_ms"])),
        (
            "shout",
            f"heard by {s['heard']} of {s['expected']} others"
            if s["shouted"]
            else "not shouted: no player of the first process was ready",
        ),
        ("last heard", "-" if last is None else f"{last:.3f} ms after the shout"),
        ("heard ms", format_ms(s["heard_ms"])),
    ]


def _time_bound(p: dict[str, Any], procs: int, setup: float) -> float:
    login = setup_rounds(p, procs) * 2 * setup
    return login + JOIN_SETTLE + float(p["drain"]) + CLOSE_GRACE


SCENARIO = Scenario(
    name="shout",
    help="talker players in rooms; one shouts once: the time until the last one hears it",
    run=shout,
    result=ShoutResult,
    params=(
        # not split: each process takes its own indexes of the run's players
        Param("sessions", 1000, whole(1, 1_000_000), "players", "N", bounds_procs=True),
        Param("room_size", 20, whole(1, 100_000), "players in a room", "K"),
        concurrency_param(100),
        Param(
            "drain",
            10.0,
            number(0.0, 3600.0, above=True),
            "longest wait for the shout to reach everyone",
            "SECONDS",
        ),
    ),
    rows=_rows,
    in_flight=lambda p: p["sessions"],
    time_bound=_time_bound,
    progress_rate="heard",
)
