"""``shardd bench``: shardd against its anchors, in one run, on loopback.

Every contender is started as its own process and driven by the same
load-test client (``shardd.loadtest``) from this process. Contenders take
turns within each round, in an order that rotates from round to round, and
the report gives each figure's median over the rounds, plus every
contender's ratio to every anchor. Absolute figures drift with the machine;
the ratios of one run are what to compare.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
import uvloop

from shardd import control
from shardd.loadtest.connect import connect
from shardd.loadtest.echo import echo
from shardd.loadtest.hooks import Hooks
from shardd.loadtest.idle import idle

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Contender:
    name: str
    command: tuple[str, ...]  # with {port} to fill in
    anchor: bool = False
    shards: int = 0  # >0: a shardd supervisor with this many workers


def _shardd(workers: int) -> tuple[str, ...]:
    return (sys.executable, "-m", "shardd", "serve", "--host", HOST, "--port", "{port}",
            "--workers", str(workers), "--shell", "echo", "--log-level", "warning")


def _anchor(kind: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "shardd.anchors", kind, "--host", HOST, "--port", "{port}")


CONTENDERS: dict[str, Contender] = {c.name: c for c in (
    Contender("shardd-1w", _shardd(1), shards=1),
    Contender("shardd-2w", _shardd(2), shards=2),
    Contender("telnetlib3", _anchor("telnetlib3"), anchor=True),
    Contender("uvloop-streams", _anchor("streams"), anchor=True),
    Contender("uvloop-protocol", _anchor("protocol"), anchor=True),
)}


@dataclass(frozen=True)
class Scenario:
    name: str
    unit: str
    higher_is_better: bool
    fresh_server: bool = False  # measured on a server that has done nothing else


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("echo-64", "round trips/s", True),
    Scenario("echo-1k", "round trips/s", True),
    Scenario("connect", "setups/s", True),
    Scenario("idle", "RSS bytes/session", False, fresh_server=True),
)}


@dataclass
class Settings:
    rounds: int = 3
    duration: float = 5.0
    sessions: int = 100
    connect_sessions: int = 2000
    connect_concurrency: int = 20
    idle_sessions: int = 5000
    idle_hold: float = 2.0
    contenders: list[str] = field(default_factory=lambda: list(CONTENDERS))
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))


class BenchError(RuntimeError):
    """A contender would not start or a scenario failed; the message says which."""


# ------------------------------------------------------------------ servers

class _Server:
    """One contender process on a free loopback port."""

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        self.port = _free_port()
        command = [part.replace("{port}", str(self.port)) for part in contender.command]
        # a file, not a pipe: nobody reads a contender's log while it runs, and a
        # full pipe would freeze it mid-write (telnetlib3 logs every reset)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        try:
            self._wait_ready(20.0)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                raise BenchError(f"{self.contender.name} exited with status "
                                 f"{self.proc.returncode}: {err.strip()[-500:]}")
            if self._ready():
                return
            time.sleep(0.05)  # polling a starting process, bounded by the deadline
        raise BenchError(f"{self.contender.name} was not serving within {timeout:.0f}s")

    def _ready(self) -> bool:
        if self.contender.shards:
            try:
                status = control.request(control.default_path(self.port), {"cmd": "status"},
                                         timeout=2.0)
            except control.ControlError:
                return False
            workers = status["workers"]
            return len(workers) == self.contender.shards and all(
                w["state"] == "serving" for w in workers)
        try:
            socket.create_connection((HOST, self.port), timeout=1.0).close()
        except OSError:
            return False
        return True

    def pids(self) -> list[int]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            return []

    def shard_balance(self) -> list[int] | None:
        if not self.contender.shards:
            return None
        status = control.request(control.default_path(self.port), {"cmd": "status"})
        return [w["connections"] for w in status["workers"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- scenarios

# No scenario may take longer than this: a contender that stops answering
# fails the run instead of stalling it.
SCENARIO_TIMEOUT = 300.0


def _run(coro: Any, what: str) -> Any:
    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro, SCENARIO_TIMEOUT)
        except TimeoutError:
            raise BenchError(f"{what} did not finish within {SCENARIO_TIMEOUT:.0f}s") from None

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(bounded())


def _measure(scenario: str, server: _Server, settings: Settings) -> tuple[float, dict[str, Any]]:
    """One scenario against one running contender: (figure, loadtest summary)."""
    port = server.port
    what = f"{server.contender.name} {scenario}"
    if scenario in ("echo-64", "echo-1k"):
        result = _run(echo(HOST, port, sessions=settings.sessions,
                                    size=64 if scenario == "echo-64" else 1024,
                                    duration=settings.duration), what)
        summary = result.summary()
        figure = summary["round_trips_per_s"]
    elif scenario == "connect":
        result = _run(connect(HOST, port, sessions=settings.connect_sessions,
                                       concurrency=settings.connect_concurrency), what)
        summary = result.summary()
        figure = summary["setups_per_s"]
    else:
        hooks = _BalanceHooks(server)
        result = _run(idle(HOST, port, sessions=settings.idle_sessions,
                                    duration=settings.idle_hold, pids=server.pids(),
                                    concurrency=100, hooks=hooks), what)
        summary = result.summary()
        summary["shard_sessions"] = hooks.balance
        figure = (summary["rss"] or {}).get("per_session_bytes") or float("nan")
    failures = summary.get("failures_total", 0)
    if failures:
        raise BenchError(f"{server.contender.name} {scenario}: {failures} failures "
                         f"{summary.get('failures')}")
    return figure, summary


class _BalanceHooks(Hooks):
    """Reads how the held sessions spread over shards while they are all open.

    At the "held" barrier: after the memory reading, since a status of
    thousands of sessions makes the supervisor allocate (and keep) a few MB.
    """

    def __init__(self, server: _Server) -> None:
        super().__init__()
        self.server = server
        self.balance: list[int] | None = None

    async def barrier(self, name: str) -> None:
        if name == "held" and self.server.contender.shards:
            loop = asyncio.get_running_loop()
            self.balance = await loop.run_in_executor(None, self.server.shard_balance)
        await super().barrier(name)


# -------------------------------------------------------------------- runs

def run(settings: Settings, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every round of every contender and scenario; the report as a dict."""
    say = progress or (lambda _text: None)
    samples: dict[str, dict[str, list[float]]] = {
        c: {s: [] for s in settings.scenarios} for c in settings.contenders}
    details: list[dict[str, Any]] = []
    balance: dict[str, list[list[int]]] = {}
    plain = [s for s in settings.scenarios if not SCENARIOS[s].fresh_server]
    fresh = [s for s in settings.scenarios if SCENARIOS[s].fresh_server]
    started = time.monotonic()
    for round_no in range(settings.rounds):
        shift = round_no % len(settings.contenders)
        order = settings.contenders[shift:] + settings.contenders[:shift]
        for name in order:
            contender = CONTENDERS[name]
            for group in (plain, *([s] for s in fresh)):
                if not group:
                    continue
                server = _Server(contender)
                try:
                    for scenario in group:
                        figure, summary = _measure(scenario, server, settings)
                        samples[name][scenario].append(figure)
                        details.append({"round": round_no + 1, "contender": name,
                                        "scenario": scenario, "figure": figure,
                                        "summary": summary})
                        if summary.get("shard_sessions"):
                            balance.setdefault(name, []).append(summary["shard_sessions"])
                        say(f"round {round_no + 1}/{settings.rounds}  {name:<16} "
                            f"{scenario:<8} {_fmt(figure, SCENARIOS[scenario])}")
                finally:
                    server.stop()
    medians = {c: {s: statistics.median(v) if v else None for s, v in per.items()}
               for c, per in samples.items()}
    return {
        "machine": _machine(),
        "settings": settings.__dict__,
        "elapsed_s": round(time.monotonic() - started, 1),
        "median": medians,
        "ratios": _ratios(medians, settings),
        "shard_balance": {name: {"sessions": runs, "max_over_min": [
            round(max(r) / min(r), 3) if r and min(r) else None for r in runs]}
            for name, runs in balance.items()},
        "runs": details,
    }


def _ratios(medians: dict[str, dict[str, float | None]],
            settings: Settings) -> dict[str, dict[str, dict[str, float | None]]]:
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
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "uvloop": uvloop.__version__,
            "kernel": platform.release()}


def _fmt(value: float | None, scenario: Scenario) -> str:
    if value is None or value != value:
        return "-"
    if scenario.name == "idle":
        return f"{value / 1024:.2f} KiB"
    return f"{value:,.0f}"


def render(report: dict[str, Any]) -> str:
    """The report as tables: absolute medians, then ratios to each anchor."""
    settings = report["settings"]
    scenarios = settings["scenarios"]
    machine = report["machine"]
    what = []
    if any(s.startswith("echo") for s in scenarios):
        what.append(f"echo: {settings['sessions']} sessions, one message in flight each, "
                    f"{settings['duration']:g}s")
    if "connect" in scenarios:
        what.append(f"connect: {settings['connect_sessions']} setups with full negotiation, "
                    f"{settings['connect_concurrency']} at a time")
    if "idle" in scenarios:
        what.append(f"idle: {settings['idle_sessions']} negotiated sessions, server RSS "
                    "growth per session")
    lines = [
        f"shardd bench: {settings['rounds']} rounds, medians; {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), Python {machine['python']}, uvloop {machine['uvloop']}",
        "; ".join(what),
        "",
    ]
    header = ["contender", *(f"{s} ({SCENARIOS[s].unit})" for s in scenarios)]
    rows = [[name, *(_fmt(report["median"][name][s], SCENARIOS[s]) for s in scenarios)]
            for name in settings["contenders"]]
    lines += _table(header, rows)
    for name, per_anchor in report["ratios"].items():
        if CONTENDERS[name].anchor:
            continue
        lines.append("")
        lower = [s for s in scenarios if not SCENARIOS[s].higher_is_better]
        lines.append(f"{name} ratios" + (f" ({', '.join(lower)}: lower is better)"
                                         if lower else ""))
        lines += _table(["against", *scenarios], [
            [anchor, *("-" if r[s] is None else f"{r[s]:.2f}x" for s in scenarios)]
            for anchor, r in per_anchor.items()])
    for name, info in report["shard_balance"].items():
        lines.append("")
        lines.append(f"{name} sessions per shard while idle: {info['sessions']} "
                     f"(max/min {info['max_over_min']})")
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*row) for row in rows)]


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, default=lambda o: None if o != o else str(o))
