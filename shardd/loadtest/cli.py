"""``shardd loadtest SCENARIO``: its flags, and the run from flags to exit status.

The scenario flags come from the registry: one flag per parameter, shared
by the scenarios that take it, with each one's meaning and default in its
help.
"""

from __future__ import annotations

import argparse
import json
import sys

from shardd.loadtest import registry, report, runner
from shardd.loadtest.plan import make_plan
from shardd.loadtest.scenario import Param, Scenario, Value

EXIT_INTERRUPTED = 130


def _listing(words: list[str], last: str = "and") -> str:
    return f" {last} ".join(w for w in (", ".join(words[:-1]), *words[-1:]) if w)


HELP = "load-test a server on this machine: " + _listing([s.name for s in registry.by_name()], "or")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``loadtest`` subcommand's arguments (values are checked by :func:`run`)."""
    scenarios = registry.by_name()
    parser.add_argument(
        "scenario",
        choices=[s.name for s in scenarios],
        help="; ".join(f"{s.name}: {s.help}" for s in scenarios),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="server address, loopback only (default 127.0.0.1)")
    add("--port", default="6023", help="server port (default 6023)")
    add(
        "--tls",
        action="store_true",
        help="speak TLS (telnets), to a server's --tls-port; a test tool: the "
        "certificate is not verified, so a self-signed one will do",
    )
    bounding: list[str] = []
    for uses in registry.param_flags().values():
        param = uses[0][1]
        add("--" + param.flag, metavar=param.metavar, help=_flag_help(uses))
        if any(p.bounds_procs for _s, p in uses):
            bounding.append("--" + param.flag)
    add(
        "--procs",
        metavar="P",
        default="1",
        help=f"client processes sharing the sessions, at most {_listing(bounding)} (1)",
    )
    add(
        "--source",
        metavar="ADDR,...",
        help="local addresses, loopback, used round-robin (default: the kernel's choice)",
    )
    add(
        "--negotiation-timeout",
        metavar="SECONDS",
        default="10",
        help="longest wait for the shell's first output after connecting (10)",
    )
    add("--connect-timeout", metavar="SECONDS", default="10", help="longest TCP connect (10)")
    add(
        "--max-failures",
        metavar="N",
        default="0",
        help="exit status 1 when failures exceed this (0)",
    )
    memory = ", ".join(registry.memory_scenarios())
    watching = ", ".join(registry.control_scenarios())
    rss = parser.add_mutually_exclusive_group()
    rss.add_argument(
        "--control",
        metavar="PATH",
        help=f"{watching}: the server's control socket, to read its workers",
    )
    rss.add_argument(
        "--server-port",
        metavar="PORT",
        help=f"{watching}: the port shardd serve was started with (finds its control socket)",
    )
    rss.add_argument(
        "--pids", metavar="PID,...", help=f"{memory}: server processes to read memory of"
    )
    verifying = ", ".join(registry.verify_scenarios())
    add(
        "--verify",
        action="store_true",
        help=f"{verifying}: once every session is quiet, compare each one's bytes in "
        "and out, terminal type and window size with the server's status (needs "
        "--control or --server-port); any that disagree after --settle fail the run",
    )
    add(
        "--settle",
        metavar="SECONDS",
        help="--verify: how long the server's status may take to agree (10)",
    )
    add("--json", action="store_true", help="print the summary as one JSON object")


def _flag_help(uses: list[tuple[Scenario, Param]]) -> str:
    """Each scenario's meaning and default; one meaning and the defaults if they agree."""
    meanings = {p.help for _s, p in uses}
    if len(uses) > 1 and len(meanings) == 1:
        by_default: dict[str, list[str]] = {}
        for scenario, param in uses:
            by_default.setdefault(_value(param.default), []).append(scenario.name)
        defaults = ", ".join(f"{_listing(names)} {value}" for value, names in by_default.items())
        return f"{meanings.pop()} ({defaults})"
    return "; ".join(f"{s.name}: {p.help} ({_value(p.default)})" for s, p in uses)


def _value(value: Value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    """Run ``shardd loadtest``; its exit status. ConfigError for a bad flag value."""
    plan = make_plan(args, progress=sys.stdout.isatty())
    outcome = runner.run(plan)
    if plan.json:
        print(json.dumps(outcome.summary), flush=True)
    else:
        print(report.render(outcome.summary, outcome.measured), flush=True)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return 0 if outcome.summary["passed"] else 1
