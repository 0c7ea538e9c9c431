"""Every load-test scenario, in one list.

A new scenario is a module with its coroutine, its result and its
:class:`~shardd.loadtest.scenario.Scenario`, added to :data:`SCENARIOS`.
The order there is ``shardd bench``'s column order; the command line lists
scenarios by name.
"""

from __future__ import annotations

from shardd.loadtest import chat, connect, echo, flood, hostile, idle, shout, storm
from shardd.loadtest.scenario import Param, Scenario

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        echo.SCENARIO,
        connect.SCENARIO,
        idle.SCENARIO,
        storm.SCENARIO,
        hostile.SCENARIO,
        flood.SCENARIO,
        chat.SCENARIO,
        shout.SCENARIO,
    )
}


def by_name() -> list[Scenario]:
    """The scenarios in the command line's order."""
    return sorted(SCENARIOS.values(), key=lambda s: s.name)


def param_flags() -> dict[str, list[tuple[Scenario, Param]]]:
    """Every parameter, in the command line's order, with the scenarios that take it."""
    flags: dict[str, list[tuple[Scenario, Param]]] = {}
    for scenario in by_name():
        for param in scenario.params:
            flags.setdefault(param.name, []).append((scenario, param))
    return flags


def memory_scenarios() -> list[str]:
    """The scenarios that read the server's memory (--control, --server-port, --pids)."""
    return [s.name for s in by_name() if s.memory_barrier is not None]


def control_scenarios() -> list[str]:
    """The scenarios that read the server's control socket (--control, --server-port)."""
    return [
        s.name
        for s in by_name()
        if s.memory_barrier is not None
        or s.watch_workers is not None
        or s.verify_barrier is not None
    ]


def verify_scenarios() -> list[str]:
    """The scenarios ``--verify`` applies to."""
    return [s.name for s in by_name() if s.verify_barrier is not None]
