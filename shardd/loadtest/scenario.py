"""What a load-test scenario declares about itself, in one :class:`Scenario`.

The command line's flags and their checks, the split of a run over client
processes, its time bound, the plan's open-file and port checks and the
summary table all come from a scenario's entry, and so do the columns it
offers ``shardd bench`` (:class:`BenchCase`): the code that runs scenarios
has no branch for any one of them. The flags several scenarios share are
defined here once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shardd.config import check_float, check_int
from shardd.loadtest.results import Result, ServerMemory

#: a parameter's value: a number, or a word list such as hostile's --kinds
Value = int | float | str
#: (flag, value) -> checked value; ConfigError naming the flag
Check = Callable[[str, Any], Value]
#: a worker as the control socket's ``status`` lists it (shard, pid, restarts, rss_bytes, ...)
Worker = dict[str, Any]
#: the table's (label, value) lines for one summary
Rows = list[tuple[str, str]]


def whole(low: int, high: int) -> Check:
    """A whole number from ``low`` to ``high``."""
    return lambda flag, value: check_int(flag, value, low, high)


def number(low: float, high: float, *, above: bool = False) -> Check:
    """A number from ``low`` (``above``: more than ``low``) to ``high``."""
    # no unit in the message: not every number here is in seconds (--rate)
    return lambda flag, value: check_float(flag, value, low, high, above=above, unit=None)


@dataclass(frozen=True)
class Param:
    """A keyword of a scenario's coroutine, set by the flag ``--name`` (dashes for underscores).

    Scenarios that take the same parameter share the flag; each gives its own
    default and meaning for its help.
    """

    name: str
    default: Value
    check: Check
    help: str
    metavar: str
    #: divided between the client processes (at least 1 each) instead of copied to each
    split: bool = False
    #: --procs is at most this, so that every process started has a share of it
    bounds_procs: bool = False

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")


def sessions_param(default: int, help: str) -> Param:
    return Param("sessions", default, whole(1, 1_000_000), help, "N", split=True, bounds_procs=True)


def concurrency_param(default: int) -> Param:
    return Param(
        "concurrency",
        default,
        whole(1, 100_000),
        "setups in flight",
        "C",
        split=True,
        bounds_procs=True,
    )


def duration_param(default: float, help: str) -> Param:
    return Param("duration", default, number(0.0, 86400.0, above=True), help, "SECONDS")


def setup_rounds(params: dict[str, Any], procs: int) -> int:
    """How many setups one client process makes one after another, at most."""
    sessions: int = params["sessions"]
    concurrency: int = params["concurrency"]
    per = math.ceil(sessions / procs)
    return math.ceil(per / max(1, concurrency // procs))


class BenchSettings(Protocol):
    """What a bench case reads of ``shardd bench``'s settings."""

    duration: float
    sessions: int
    connect_sessions: int
    connect_concurrency: int
    idle_sessions: int
    idle_hold: float


def thousands(figure: float) -> str:
    return f"{figure:,.0f}"


@dataclass(frozen=True)
class BenchCase:
    """A column of ``shardd bench``: the scenario run one way against every contender."""

    name: str
    unit: str
    higher_is_better: bool
    #: (bench settings) -> the scenario's keyword arguments
    params: Callable[[BenchSettings], dict[str, Any]]
    #: (the scenario's summary) -> the column's figure
    figure: Callable[[dict[str, Any]], float]
    #: (bench settings) -> what was run, for the report's header; a scenario's
    #: cases may share one
    about: Callable[[BenchSettings], str]
    #: the figure for people
    show: Callable[[float], str] = thousands
    #: measured on a server that has done nothing else
    fresh_server: bool = False
    #: the shell the contender serves for it (``--shell``), on a server of its
    #: own; a contender that has no such shell (an anchor) shows no figure
    shell: str | None = None


@dataclass(frozen=True)
class Scenario:
    """One scenario: its coroutine, result, parameters and how to run and report it.

    ``run`` is called as ``run(host, port, **params, negotiation_timeout=,
    connect_timeout=, sources=, share=, hooks=, tls=)``, and returns a
    ``result``; ``tls`` True: every session speaks TLS (``Target.resolve``).
    A scenario with a ``memory_barrier`` also takes ``pids`` (the server's
    processes, to read their memory itself) and reaches that barrier while
    every session is held: a run split over client processes has its parent
    read the memory there instead. Its result is then a ServerMemory, and
    --control, --server-port and --pids apply to it.
    """

    name: str
    help: str
    run: Callable[..., Awaitable[Result]]
    result: type[Result]
    params: tuple[Param, ...]
    #: the summary's lines in the table
    rows: Callable[[dict[str, Any]], Rows]
    #: (params) -> sessions open at once over all processes, for the open-file check
    in_flight: Callable[[dict[str, Any]], int]
    #: (params, procs, longest setup) -> longest a correct client process runs
    time_bound: Callable[[dict[str, Any], int, float], float]
    #: checks between parameters, after each has been checked; ConfigError
    check: Callable[[dict[str, Any]], None] | None = None
    #: sessions stay open once set up, each on a local port: the plan checks
    #: there are enough (a connect session is closed as soon as it is set up)
    holds_sessions: bool = True
    #: the barrier where every session is held, if the server's memory is read (see above)
    memory_barrier: str | None = None
    #: watches the server's workers: with --control or --server-port, the
    #: parent reads them (``status``) before the run and after it (None if
    #: it could not) and this adds what it makes of them to the summary,
    #: failures included: (summary, before, after) -> None
    watch_workers: Callable[[dict[str, Any], list[Worker], list[Worker] | None], None] | None = None
    #: the barrier where every session is held and quiet, so that ``--verify``
    #: can compare what the server's status says of each with what its client
    #: saw; the scenario then sets ``hooks.records`` (see ``verify``)
    verify_barrier: str | None = None
    #: the progress line's counter that also gets a rate per second
    progress_rate: str | None = None
    bench: tuple[BenchCase, ...] = ()

    def __post_init__(self) -> None:
        if self.memory_barrier is not None and not issubclass(self.result, ServerMemory):
            raise TypeError(f"{self.name}: a memory_barrier needs a ServerMemory result")
