"""A run's merged summary as a table for people."""

from __future__ import annotations

from typing import Any

from shardd.loadtest import verify
from shardd.loadtest.registry import SCENARIOS


def render(summary: dict[str, Any], measured: bool) -> str:
    """The summary as a table; the scenario's own lines only if ``measured``."""
    s = summary
    sources = ", ".join(f"{a} x{n}" for a, n in sorted(s.get("sources", {}).items())) or "-"
    procs = s["procs"]
    rows: list[tuple[str, str]] = [
        ("target", s["target"]),
        ("client processes", f"{procs}"),
        ("local addresses", sources),
    ]
    scenario = s["scenario"]
    if measured:
        rows += SCENARIOS[scenario].rows(s)
    if "verify" in s:
        rows += verify.rows(s["verify"])
    total = s["failures_total"]
    rows.append(
        (
            "failures",
            f"{total}"
            + (f" (more than --max-failures {s['max_failures']})" if not s["passed"] else ""),
        )
    )
    for phase, kinds in s["failures_by_phase"].items():
        for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            rows.append(("", f"{n} {kind} ({phase})"))
    if s["interrupted"]:
        rows.append(("interrupted", "yes: partial results"))
    width = max(len(label) for label, _ in rows)
    lines = [f"shardd loadtest {scenario}"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
