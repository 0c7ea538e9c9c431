"""``shardd loadtest``'s flags, checked into a :class:`Plan`, before any socket or process."""

from __future__ import annotations

import argparse
import math
import resource
from dataclasses import dataclass, field
from typing import Any

from shardd import control
from shardd.config import ConfigError, check_float, check_int
from shardd.loadtest.registry import (
    SCENARIOS,
    control_scenarios,
    memory_scenarios,
    param_flags,
    verify_scenarios,
)
from shardd.loadtest.scenario import Scenario
from shardd.loadtest.target import CLOSE_GRACE, Target

MAX_PROCS = 64
# beyond its own bound, how long the parent gives client processes before killing them
SLACK = 30.0
# the flags naming the server whose control socket or memory is read, by their argparse names
CONTROL_FLAGS = ("control", "server_port")
# the longest one --verify status request may take (100 000 sessions take about 1 s)
VERIFY_REQUEST_TIMEOUT = 30.0


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


@dataclass
class Plan:
    """A checked command line: what every client process runs, and how to report."""

    scenario: Scenario
    target: Target
    sources: list[str]
    procs: int
    params: dict[str, Any]
    negotiation_timeout: float
    connect_timeout: float
    max_failures: int
    json: bool
    progress: bool
    tls: bool = False
    control_path: str | None = None
    pids: list[int] = field(default_factory=list)
    #: --verify: compare the server's status with the sessions, within this many seconds
    settle: float | None = None

    def share(self, index: int) -> dict[str, Any]:
        """Keyword arguments of the scenario's coroutine for client process ``index``."""
        kwargs: dict[str, Any] = {
            "negotiation_timeout": self.negotiation_timeout,
            "connect_timeout": self.connect_timeout,
            "sources": self.sources,
            "share": (index, self.procs),
            "tls": self.tls,
        }
        for param in self.scenario.params:
            value = self.params[param.name]
            kwargs[param.name] = max(1, _split(value, self.procs, index)) if param.split else value
        return kwargs

    def time_bound(self) -> float:
        """Longest a correct client process can take; beyond it, it is killed."""
        setup = self.connect_timeout + self.negotiation_timeout + CLOSE_GRACE
        verify = 0.0 if self.settle is None else self.settle + VERIFY_REQUEST_TIMEOUT
        return self.scenario.time_bound(self.params, self.procs, setup) + verify + SLACK

    def in_flight_per_proc(self) -> int:
        return math.ceil(self.scenario.in_flight(self.params) / self.procs)


def make_plan(args: argparse.Namespace, progress: bool) -> Plan:
    """Check every flag; ConfigError names the first bad one. Connects to nothing."""
    scenario = SCENARIOS[args.scenario]
    takers = {name: [s.name for s, _p in uses] for name, uses in param_flags().items()}
    takers.update(dict.fromkeys(CONTROL_FLAGS, control_scenarios()))
    takers["pids"] = memory_scenarios()
    takers["settle"] = verify_scenarios()
    for name, scenarios in takers.items():
        if getattr(args, name) is not None and scenario.name not in scenarios:
            raise ConfigError(
                name.replace("_", "-"),
                f"does not apply to the {scenario.name} scenario (only {', '.join(scenarios)})",
            )
    port = check_int("port", args.port, 1, 65535)
    try:
        target = Target.resolve(args.host, port, tls=args.tls)
    except ValueError as exc:
        raise ConfigError("host", str(exc)) from None
    sources: list[str] = []
    if args.source is not None:
        for text in args.source.split(","):
            if not text.strip():
                raise ConfigError(
                    "source", f"give addresses separated by commas, not {args.source!r}"
                )
            try:
                sources.append(target.source(text.strip()))
            except ValueError as exc:
                raise ConfigError("source", str(exc)) from None
    params: dict[str, Any] = {}
    for param in scenario.params:
        given = getattr(args, param.name)
        params[param.name] = param.check(param.flag, param.default if given is None else given)
    if scenario.check is not None:
        scenario.check(params)
    procs = check_int("procs", args.procs, 1, MAX_PROCS)
    procs = min([procs, *(params[p.name] for p in scenario.params if p.bounds_procs)])
    plan = Plan(
        scenario=scenario,
        target=target,
        sources=sources,
        procs=procs,
        params=params,
        negotiation_timeout=check_float(
            "negotiation-timeout", args.negotiation_timeout, 0.0, 3600.0, above=True, unit=None
        ),
        connect_timeout=check_float(
            "connect-timeout", args.connect_timeout, 0.0, 3600.0, above=True, unit=None
        ),
        max_failures=check_int("max-failures", args.max_failures, 0, 10**12),
        json=args.json,
        progress=progress,
        tls=args.tls,
    )
    if args.control is not None:
        plan.control_path = args.control
    elif args.server_port is not None:
        plan.control_path = control.default_path(
            check_int("server-port", args.server_port, 1, 65535)
        )
    elif args.pids is not None:
        plan.pids = [check_int("pids", text.strip(), 1, 2**31 - 1) for text in args.pids.split(",")]
    reads_server = scenario.memory_barrier is not None or scenario.watch_workers is not None
    if plan.control_path is not None and not args.verify and not reads_server:
        flag = "control" if args.control is not None else "server-port"
        raise ConfigError(flag, f"applies to the {scenario.name} scenario only with --verify")
    if args.settle is not None and not args.verify:
        raise ConfigError("settle", "applies only with --verify")
    if args.verify:
        if scenario.name not in verify_scenarios():
            raise ConfigError(
                "verify",
                f"does not apply to the {scenario.name} scenario "
                f"(only {', '.join(verify_scenarios())})",
            )
        if plan.control_path is None:
            raise ConfigError("verify", "needs the server's --control or --server-port")
        plan.settle = check_float(
            "settle", "10" if args.settle is None else args.settle, 0.0, 3600.0, unit=None
        )
    _check_limits(plan)
    return plan


def _ephemeral_ports() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28232


def _check_limits(plan: Plan) -> None:
    per_proc = plan.in_flight_per_proc()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and per_proc + 64 > hard:
        wanted = math.ceil(per_proc * plan.procs / (hard - 64))
        raise ConfigError(
            "procs",
            f"{per_proc} sessions per client process exceed the "
            f"open-file limit ({hard}); use --procs {wanted} or more",
        )
    if plan.scenario.holds_sessions:
        held = per_proc * plan.procs
        ports = _ephemeral_ports() * max(1, len(plan.sources))
        if held > ports:
            raise ConfigError(
                "source",
                f"{held} sessions at once need more local ports than "
                f"{max(1, len(plan.sources))} source address(es) have "
                f"({ports}); give more --source addresses",
            )
