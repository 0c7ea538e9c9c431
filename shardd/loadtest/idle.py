"""The idle scenario: sessions opened and held, and the server's memory for them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.loadtest.hooks import Hooks, close_all, lanes
from shardd.loadtest.latencies import Latencies
from shardd.loadtest.results import Result, ServerMemory
from shardd.loadtest.sessions import SetupSession, Tally, check_positive, set_up
from shardd.loadtest.target import CLOSED, Target, rotation, server_rss

_perf = time.perf_counter


@dataclass
class IdleResult(Result, ServerMemory):
    """The idle scenario: sessions opened and held, and the server's memory."""

    sessions: int
    concurrency: int
    opened: int
    held: int
    duration: float
    setup: Latencies = field(repr=False)
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)
    pids: list[int] | None = None
    rss_before: int | None = None
    rss_holding: int | None = None

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
    check_positive(sessions=sessions, concurrency=concurrency, duration=duration,
                   negotiation_timeout=negotiation_timeout, connect_timeout=connect_timeout)
    hooks = hooks or Hooks()
    tally = Tally(negotiation_timeout)
    pick = rotation(locals_, share)
    setup = Latencies()
    live: set[SetupSession] = set()
    opened = 0

    def lost(proto: SetupSession) -> None:
        live.discard(proto)
        tally.fail("hold", proto.lost or CLOSED)

    tally.on_lost = lost

    async def one() -> None:
        nonlocal opened
        proto, seconds = await set_up(tally, target, pick(), connect_timeout)
        if proto is not None:
            setup.add(seconds)
            opened += 1
            live.add(proto)

    hooks.snapshot = lambda: {"open": len(live), "failures": sum(tally.failures.values())}
    rss_before = server_rss(pids) if pids else None
    await lanes(sessions, concurrency, one, hooks)
    await hooks.barrier("open")
    started = _perf()
    await hooks.pause(duration)
    elapsed = _perf() - started
    held = len(live)
    rss_holding = server_rss(pids) if pids else None
    await hooks.barrier("held")
    tally.on_lost = None
    await close_all(list(live))
    return IdleResult(sessions, concurrency, opened, held, elapsed, setup, tally.failures,
                      tally.failures_by_phase, tally.sources,
                      pids=list(pids) if pids else None,
                      rss_before=rss_before, rss_holding=rss_holding)
