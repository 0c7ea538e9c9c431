"""The idle scenario: sessions opened and held, and the server's memory for them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.loadtest.hooks import Hooks, close_all, lanes
from shardd.loadtest.latencies import Latencies, format_ms
from shardd.loadtest.results import Result, ServerMemory
from shardd.loadtest.scenario import (
    BenchCase,
    Rows,
    Scenario,
    concurrency_param,
    duration_param,
    sessions_param,
    setup_rounds,
)
from shardd.loadtest.sessions import SetupSession, Tally, check_positive, set_up
from shardd.loadtest.target import CLOSED, Target, rotation, server_rss

_perf = time.perf_counter

# where every session is open and held: the server's memory is read here
HELD = "held"
# then, with --verify, the server's status is compared with the sessions
QUIET = "quiet"


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
    tls: bool = False,
) -> IdleResult:
    """Open ``sessions`` sessions (``concurrency`` setups at a time) and hold them.

    Every session must stay up for ``duration`` after the last one opened; one
    the server drops counts as a failure. With ``pids``, the resident memory
    of those (server) processes is measured before opening and at the end of
    the hold.
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    check_positive(
        sessions=sessions,
        concurrency=concurrency,
        duration=duration,
        negotiation_timeout=negotiation_timeout,
        connect_timeout=connect_timeout,
    )
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
    hooks.records = lambda: [p.record() for p in live]
    rss_before = server_rss(pids) if pids else None
    await lanes(sessions, concurrency, one, hooks)
    await hooks.barrier("open")
    started = _perf()
    await hooks.pause(duration)
    elapsed = _perf() - started
    held = len(live)
    rss_holding = server_rss(pids) if pids else None
    await hooks.barrier(HELD)
    await hooks.barrier(QUIET)
    tally.on_lost = None
    await close_all(list(live))
    return IdleResult(
        sessions,
        concurrency,
        opened,
        held,
        elapsed,
        setup,
        tally.failures,
        tally.failures_by_phase,
        tally.sources,
        pids=list(pids) if pids else None,
        rss_before=rss_before,
        rss_holding=rss_holding,
    )


def _rows(s: dict[str, Any]) -> Rows:
    rows = [
        ("sessions", f"{s['held']} held of {s['opened']} opened ({s['sessions']} asked)"),
        ("held for", f"{s['duration']:.3f} s"),
        ("setup ms", format_ms(s["setup_ms"])),
    ]
    rss = s.get("rss")
    if rss:
        per = rss["per_session_bytes"]
        rows += [
            ("server pids", ", ".join(str(p) for p in rss["pids"] or []) or "-"),
            (
                "server rss",
                f"{rss['before_bytes'] / 2**20:.1f} MiB before, "
                f"{rss['holding_bytes'] / 2**20:.1f} MiB holding",
            ),
            ("rss/session", "-" if per is None else f"{per / 1024:.1f} KiB"),
        ]
    return rows


def _time_bound(p: dict[str, Any], procs: int, setup: float) -> float:
    hold: float = p["duration"]
    # and the parent's two control requests for the memory, 10 s each at most
    return setup_rounds(p, procs) * setup + hold + 2 * 10


SCENARIO = Scenario(
    name="idle",
    help="sessions opened and held; the server's memory per session",
    run=idle,
    result=IdleResult,
    params=(
        sessions_param(1000, "sessions to hold"),
        concurrency_param(100),
        duration_param(10.0, "hold"),
    ),
    rows=_rows,
    in_flight=lambda p: p["sessions"],
    time_bound=_time_bound,
    memory_barrier=HELD,
    verify_barrier=QUIET,
    bench=(
        BenchCase(
            "idle",
            "RSS bytes/session",
            False,
            params=lambda s: {
                "sessions": s.idle_sessions,
                "duration": s.idle_hold,
                "concurrency": 100,
            },
            figure=lambda summary: (summary["rss"] or {}).get("per_session_bytes") or float("nan"),
            about=lambda s: (
                f"idle: {s.idle_sessions} negotiated sessions, server RSS growth per session"
            ),
            show=lambda figure: f"{figure / 1024:.2f} KiB",
            fresh_server=True,
        ),
    ),
)
