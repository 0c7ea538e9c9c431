"""``shardd bench``: its flags, and the run from flags to report."""

from __future__ import annotations

import argparse
import sys

from shardd.bench import report
from shardd.bench.contenders import CONTENDERS, BenchError
from shardd.bench.measure import SCENARIOS
from shardd.bench.run import run as run_bench
from shardd.bench.settings import Settings
from shardd.config import ConfigError, check_float, check_int

HELP = "shardd against telnetlib3 and bare uvloop echo servers, on loopback"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's arguments (values are checked by :func:`run`)."""
    add = parser.add_argument
    add("--rounds", default="3", help="rounds, contenders alternating (default 3)")
    add("--duration", default="5", metavar="SECONDS", help="each echo measurement (default 5)")
    add("--sessions", default="100", help="echo sessions (default 100)")
    add("--connect-sessions", default="2000", help="setups per connect measurement (default 2000)")
    add("--connect-concurrency", default="20", help="setups in flight (default 20)")
    add(
        "--idle-sessions",
        default="5000",
        help="sessions held for the memory measurement (default 5000)",
    )
    add("--contenders", metavar="A,B,...", help="a subset of " + ",".join(CONTENDERS))
    add("--scenarios", metavar="A,B,...", help="a subset of " + ",".join(SCENARIOS))
    add("--json", action="store_true", help="the whole report as JSON")


def _subset(key: str, text: str | None, known: list[str]) -> list[str]:
    if text is None:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ConfigError(
            key, f"unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(known)}"
        )
    return names


def run(args: argparse.Namespace) -> int:
    """Run ``shardd bench``; its exit status. ConfigError for a bad flag value."""
    settings = Settings(
        rounds=check_int("rounds", args.rounds, 1, 50),
        duration=check_float("duration", args.duration, 0.1, 600),
        sessions=check_int("sessions", args.sessions, 1, 5000),
        connect_sessions=check_int("connect-sessions", args.connect_sessions, 1, 1_000_000),
        connect_concurrency=check_int("connect-concurrency", args.connect_concurrency, 1, 1000),
        idle_sessions=check_int("idle-sessions", args.idle_sessions, 1, 9000),
        contenders=_subset("contenders", args.contenders, list(CONTENDERS)),
        scenarios=_subset("scenarios", args.scenarios, list(SCENARIOS)),
    )
    progress = (
        (lambda text: print(text, file=sys.stderr, flush=True))
        if sys.stderr.isatty() or not args.json
        else None
    )
    try:
        result = run_bench(settings, progress)
    except BenchError as exc:
        print(f"shardd bench: {exc}", file=sys.stderr)
        return 1
    print(report.to_json(result) if args.json else report.render(result))
    return 0
