"""The connect scenario: session setups, ``concurrency`` of them in flight.

Each session is closed as soon as it is set up (the server's first in-band
byte); the figure is setups per second and the setup times.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.loadtest.hooks import Hooks, lanes
from shardd.loadtest.latencies import Latencies, format_ms
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import (
    BenchCase,
    Rows,
    Scenario,
    concurrency_param,
    sessions_param,
    setup_rounds,
)
from shardd.loadtest.sessions import Tally, check_positive, set_up
from shardd.loadtest.target import Target, rotation

_perf = time.perf_counter


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


@dataclass
class ConnectResult(Result):
    """The connect scenario: setups completed and how long each took."""

    sessions: int
    concurrency: int
    attempts: int
    setups: int
    duration: float
    setup: Latencies = field(repr=False)
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)

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
    tls: bool = False,
) -> ConnectResult:
    """Set up ``sessions`` sessions, ``concurrency`` at a time, closing each once set up.

    ``share`` is (this process, processes) when a run is split over several:
    it decides this process's turns in the round-robin over ``sources``.
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    check_positive(
        sessions=sessions,
        concurrency=concurrency,
        negotiation_timeout=negotiation_timeout,
        connect_timeout=connect_timeout,
    )
    hooks = hooks or Hooks()
    tally = Tally(negotiation_timeout)
    pick = rotation(locals_, share)
    setup = Latencies()
    done = in_flight = 0

    async def one() -> None:
        nonlocal done, in_flight
        in_flight += 1
        proto, seconds = await set_up(tally, target, pick(), connect_timeout)
        if proto is not None:
            setup.add(seconds)
            done += 1
            proto.close()
            await proto.closed
        in_flight -= 1

    hooks.snapshot = lambda: {
        "setups": done,
        "in flight": in_flight,
        "failures": sum(tally.failures.values()),
    }
    await hooks.barrier("start")
    started = _perf()
    attempts = await lanes(sessions, concurrency, one, hooks)
    elapsed = _perf() - started
    return ConnectResult(
        sessions,
        concurrency,
        attempts,
        done,
        elapsed,
        setup,
        tally.failures,
        tally.failures_by_phase,
        tally.sources,
    )


def _rows(s: dict[str, Any]) -> Rows:
    return [
        (
            "setups",
            f"{s['setups']} of {s['attempts']} attempted "
            f"({s['sessions']} asked, concurrency {s['concurrency']})",
        ),
        ("duration", f"{s['duration']:.3f} s"),
        ("setups/s", f"{s['setups_per_s']:.1f}"),
        ("setup ms", format_ms(s["setup_ms"])),
    ]


SCENARIO = Scenario(
    name="connect",
    help="session setups: connect, negotiate, first shell output, close",
    run=connect,
    result=ConnectResult,
    params=(
        sessions_param(1000, "setups in all"),
        concurrency_param(50),
    ),
    rows=_rows,
    in_flight=lambda p: p["concurrency"],
    time_bound=lambda p, procs, setup: setup_rounds(p, procs) * setup,
    holds_sessions=False,
    progress_rate="setups",
    bench=(
        BenchCase(
            "connect",
            "setups/s",
            True,
            params=lambda s: {"sessions": s.connect_sessions, "concurrency": s.connect_concurrency},
            figure=lambda summary: summary["setups_per_s"],
            about=lambda s: (
                f"connect: {s.connect_sessions} setups with full negotiation, "
                f"{s.connect_concurrency} at a time"
            ),
        ),
    ),
)
