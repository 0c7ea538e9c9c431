"""A ``shardd bench`` report for people (tables) and as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shardd.bench.contenders import CONTENDERS
from shardd.bench.measure import SCENARIOS
from shardd.bench.settings import Settings
from shardd.loadtest.scenario import BenchCase


def show_figure(value: float | None, case: BenchCase) -> str:
    if value is None or value != value:
        return "-"
    return case.show(value)


def render(report: dict[str, Any]) -> str:
    """The report as tables: absolute medians, then ratios to each anchor."""
    settings = report["settings"]
    scenarios = settings["scenarios"]
    machine = report["machine"]
    # in the bench's own order, whatever the order asked for; cases may share a line
    about = Settings(**settings)
    what = dict.fromkeys(s.case.about(about) for name, s in SCENARIOS.items() if name in scenarios)
    lines = [
        f"shardd bench: {settings['rounds']} rounds, medians; {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), Python {machine['python']}, uvloop {machine['uvloop']}",
        "; ".join(what),
        "",
    ]
    header = ["contender", *(f"{s} ({SCENARIOS[s].case.unit})" for s in scenarios)]
    rows = [
        [name, *(show_figure(report["median"][name][s], SCENARIOS[s].case) for s in scenarios)]
        for name in settings["contenders"]
    ]
    lines += _table(header, rows)
    for name, per_anchor in report["ratios"].items():
        if CONTENDERS[name].anchor:
            continue
        lines.append("")
        lower = [s for s in scenarios if not SCENARIOS[s].case.higher_is_better]
        lines.append(
            f"{name} ratios" + (f" ({', '.join(lower)}: lower is better)" if lower else "")
        )
        lines += _table(
            ["against", *scenarios],
            [
                [anchor, *("-" if r[s] is None else f"{r[s]:.2f}x" for s in scenarios)]
                for anchor, r in per_anchor.items()
            ],
        )
    for name, info in report["shard_balance"].items():
        lines.append("")
        lines.append(
            f"{name} sessions per shard while idle: {info['sessions']} "
            f"(max/min {info['max_over_min']})"
        )
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*row) for row in rows)]


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, default=lambda o: None if o != o else str(o))
