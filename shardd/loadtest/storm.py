"""The storm scenario: sessions arriving at a fixed rate, each held a random time."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.config import ConfigError
from shardd.loadtest.hooks import Hooks
from shardd.loadtest.latencies import Latencies, format_ms
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import Param, Rows, Scenario, duration_param, number, whole
from shardd.loadtest.sessions import SetupSession, Tally, check_positive, set_up
from shardd.loadtest.target import CLOSE_GRACE, TIMEOUT, Target, rotation

_perf = time.perf_counter


@dataclass
class StormResult(Result):
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
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)

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
    tls: bool = False,
) -> StormResult:
    """New sessions at ``rate`` per second for ``duration``, each held a random time.

    Arrival ``g`` (counting from 0) is due at ``g / rate`` seconds and held for
    the ``g``-th draw of ``random.Random(seed).uniform(hold_min, hold_max)``
    once set up, so a seed gives the same schedule however the run is split
    (``share``: this process takes arrivals ``index, index + count, ...``).
    An arrival finding ``max_sessions`` of this process's sessions in flight is
    skipped, and counted as such.
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    check_positive(
        rate=rate,
        duration=duration,
        max_sessions=max_sessions,
        negotiation_timeout=negotiation_timeout,
        connect_timeout=connect_timeout,
    )
    if not 0 <= hold_min <= hold_max or math.isinf(hold_max):
        raise ValueError(f"need 0 <= hold_min <= hold_max, not {hold_min!r}, {hold_max!r}")
    hooks = hooks or Hooks()
    loop = asyncio.get_running_loop()
    tally = Tally(negotiation_timeout)
    pick = rotation(locals_, share)
    index, count = share
    rng = random.Random(seed)
    setup = Latencies()
    live: set[SetupSession] = set()
    tasks: set[asyncio.Task[None]] = set()
    # arrivals g with g / rate < duration, whatever the rounding of rate * duration
    arrivals = math.ceil(rate * duration - 1e-9)
    attempts = successes = skipped = in_flight = peak = 0

    async def one(hold: float) -> None:
        nonlocal successes, in_flight
        try:
            proto, seconds = await set_up(tally, target, pick(), connect_timeout)
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

    hooks.snapshot = lambda: {
        "attempts": attempts,
        "in flight": in_flight,
        "successes": successes,
        "failures": sum(tally.failures.values()),
    }
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
        everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        interrupted: asyncio.Future[Any] = loop.create_task(hooks.interrupted.wait())
        await asyncio.wait(
            [everything, interrupted], timeout=bound, return_when=asyncio.FIRST_COMPLETED
        )
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
    return StormResult(
        rate,
        duration,
        hold_min,
        hold_max,
        seed,
        max_sessions,
        attempts,
        successes,
        skipped,
        peak,
        elapsed,
        setup,
        tally.failures,
        tally.failures_by_phase,
        tally.sources,
    )


def _check(p: dict[str, Any]) -> None:
    if p["hold_min"] > p["hold_max"]:
        raise ConfigError(
            "hold-max", f"must be at least --hold-min ({p['hold_min']:g}), not {p['hold_max']:g}"
        )
    if p["rate"] * p["duration"] > 10_000_000:
        raise ConfigError("rate", "more than 10000000 sessions in one storm")


def _rows(s: dict[str, Any]) -> Rows:
    return [
        (
            "arrivals",
            f"{s['rate']:g}/s for {s['duration']:g} s, held "
            f"{s['hold_min']:g}-{s['hold_max']:g} s (seed {s['seed']})",
        ),
        ("attempts", f"{s['attempts']} ({s['skipped']} skipped at {s['max_sessions']} in flight)"),
        ("successes", f"{s['successes']}"),
        ("peak in flight", f"{s['peak_in_flight']}"),
        ("elapsed", f"{s['elapsed']:.3f} s"),
        ("setup ms", format_ms(s["setup_ms"])),
    ]


SCENARIO = Scenario(
    name="storm",
    help="sessions arriving at a fixed rate, each held a random time",
    run=storm,
    result=StormResult,
    params=(
        duration_param(10.0, "arrivals"),
        Param(
            "rate", 100.0, number(0.0, 100_000.0, above=True), "new sessions per second", "PER_S"
        ),
        Param("hold_min", 1.0, number(0.0, 86400.0), "shortest hold", "SECONDS"),
        Param("hold_max", 5.0, number(0.0, 86400.0), "longest hold", "SECONDS"),
        Param("seed", 0, whole(0, 2**63 - 1), "seed of the hold times", "N"),
        Param(
            "max_sessions",
            1000,
            whole(1, 1_000_000),
            "sessions in flight at most; an arrival finding that many is skipped, and counted",
            "N",
            split=True,
        ),
    ),
    check=_check,
    rows=_rows,
    in_flight=lambda p: p["max_sessions"],
    time_bound=lambda p, procs, setup: p["duration"] + setup + p["hold_max"],
    progress_rate="attempts",
)
