"""The bench's scenarios, each a load-test scenario's bench case, and one measurement.

Every load-test scenario declares the columns it offers the bench
(:class:`~shardd.loadtest.scenario.BenchCase`); here they are gathered in
the registry's order and run, in this process, against a contender.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import uvloop

from shardd.bench.contenders import HOST, BenchError, Server
from shardd.loadtest.hooks import Hooks
from shardd.loadtest.registry import SCENARIOS as LOADTEST_SCENARIOS
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import BenchCase, BenchSettings, Scenario

# No scenario may take longer than this: a contender that stops answering
# fails the run instead of stalling it.
SCENARIO_TIMEOUT = 300.0


@dataclass(frozen=True)
class BenchScenario:
    """A column of the bench: a load-test scenario and one way of running it."""

    scenario: Scenario
    case: BenchCase


SCENARIOS: dict[str, BenchScenario] = {
    case.name: BenchScenario(scenario, case)
    for scenario in LOADTEST_SCENARIOS.values()
    for case in scenario.bench
}


def _run(work: Awaitable[Result], what: str) -> Result:
    async def bounded() -> Result:
        try:
            return await asyncio.wait_for(work, SCENARIO_TIMEOUT)
        except TimeoutError:
            raise BenchError(f"{what} did not finish within {SCENARIO_TIMEOUT:.0f}s") from None

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(bounded())


def measure(name: str, server: Server, settings: BenchSettings) -> tuple[float, dict[str, Any]]:
    """One bench scenario against one running contender: (figure, loadtest summary)."""
    scenario, case = SCENARIOS[name].scenario, SCENARIOS[name].case
    kwargs = case.params(settings)
    hooks = Hooks()
    balance: _BalanceHooks | None = None
    if scenario.memory_barrier is not None:
        kwargs["pids"] = server.pids()
        hooks = balance = _BalanceHooks(server, scenario.memory_barrier)
    if server.contender.tls:
        kwargs["tls"] = True
    result = _run(
        scenario.run(HOST, server.client_port, **kwargs, hooks=hooks),
        f"{server.contender.name} {name}",
    )
    summary = result.summary()
    if balance is not None:
        summary["shard_sessions"] = balance.balance
    figure = case.figure(summary)
    failures = summary.get("failures_total", 0)
    if failures:
        raise BenchError(
            f"{server.contender.name} {name}: {failures} failures {summary.get('failures')}"
        )
    return figure, summary


class _BalanceHooks(Hooks):
    """Reads how the held sessions spread over shards while they are all open.

    At the memory barrier: after the memory reading, since a status of
    thousands of sessions makes the supervisor allocate (and keep) a few MB.
    """

    def __init__(self, server: Server, at: str) -> None:
        super().__init__()
        self.server = server
        self.at = at
        self.balance: list[int] | None = None

    async def barrier(self, name: str) -> None:
        if name == self.at and self.server.contender.shards:
            loop = asyncio.get_running_loop()
            self.balance = await loop.run_in_executor(None, self.server.shard_balance)
        await super().barrier(name)
