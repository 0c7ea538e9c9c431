"""A ``shardd bench`` run: rounds of every contender and scenario, medians and ratios.

Contenders take turns within each round, in an order that rotates from round
to round; a scenario that wants a fresh server gets a contender process of
its own, the others share one. A scenario that needs a shell of its own
(the talker) gets a server of its own started with it, from the shardd
contenders only: the anchors have no such shell, and show no figure.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import psutil

from shardd.bench.contenders import CONTENDERS, Server
from shardd.bench.measure import SCENARIOS, measure
from shardd.bench.report import show_figure
from shardd.bench.settings import Settings


def run(settings: Settings, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every round of every contender and scenario; the report as a dict."""
    say = progress or (lambda _text: None)
    samples: dict[str, dict[str, list[float]]] = {
        c: {s: [] for s in settings.scenarios} for c in settings.contenders
    }
    details: list[dict[str, Any]] = []
    balance: dict[str, list[list[int]]] = {}
    cases = {s: SCENARIOS[s].case for s in settings.scenarios}
    plain = [s for s, c in cases.items() if not c.fresh_server and c.shell is None]
    own = [s for s, c in cases.items() if c.fresh_server or c.shell is not None]
    started = time.monotonic()
    for round_no in range(settings.rounds):
        shift = round_no % len(settings.contenders)
        order = settings.contenders[shift:] + settings.contenders[:shift]
        for name in order:
            contender = CONTENDERS[name]
            for group in (plain, *([s] for s in own)):
                if not group:
                    continue
                shell = cases[group[0]].shell
                if shell is not None and not contender.shards:
                    continue  # an anchor: no such shell
                server = Server(contender, shell)
                try:
                    for scenario in group:
                        figure, summary = measure(scenario, server, settings)
                        samples[name][scenario].append(figure)
                        details.append(
                            {
                                "round": round_no + 1,
                                "contender": name,
                                "scenario": scenario,
                                "figure": figure,
                                "summary": summary,
                            }
                        )
                        if summary.get("shard_sessions"):
                            balance.setdefault(name, []).append(summary["shard_sessions"])
                        say(
                            f"round {round_no + 1}/{settings.rounds}  {name:<16} "
                            f"{scenario:<8} {show_figure(figure, SCENARIOS[scenario].case)}"
                        )
                finally:
                    server.stop()
    medians = {
        c: {s: statistics.median(v) if v else None for s, v in per.items()}
        for c, per in samples.items()
    }
    return {
        "machine": _machine(),
        "settings": settings.__dict__,
        "elapsed_s": round(time.monotonic() - started, 1),
        "median": medians,
        "ratios": _ratios(medians, settings),
        "shard_balance": {
            name: {"sessions": runs, "max_over_min": [_max_over_min(r) for r in runs]}
            for name, runs in balance.items()
        },
        "runs": details,
    }


def _max_over_min(sessions: list[int]) -> float | None:
    if not sessions or not min(sessions):
        return None
    return round(max(sessions) / min(sessions), 3)


def _ratios(
    medians: dict[str, dict[str, float | None]], settings: Settings
) -> dict[str, dict[str, dict[str, float | None]]]:
    """contender -> anchor -> scenario -> contender's figure / anchor's figure."""
    anchors = [c for c in settings.contenders if CONTENDERS[c].anchor]
    if "shardd-1w" in settings.contenders:
        anchors.append("shardd-1w")  # the 2-worker figures against 1 worker
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in settings.contenders:
        for anchor in anchors:
            if anchor == name:
                continue
            row = {}
            for scenario in settings.scenarios:
                mine, theirs = medians[name][scenario], medians[anchor][scenario]
                row[scenario] = round(mine / theirs, 3) if mine and theirs else None
            out.setdefault(name, {})[anchor] = row
    return out


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "uvloop": version("uvloop"),
        "kernel": platform.release(),
    }
