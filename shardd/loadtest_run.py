"""``shardd loadtest SCENARIO``: flags, client processes, progress and the summary.

The scenarios themselves are in :mod:`shardd.loadtest`. A run is split over
``--procs`` client processes, forked before any event loop exists; each runs
its share in its own uvloop loop and talks to this (parent) process over two
pipes: msgpack messages up (progress snapshots, "at barrier X", the result),
one byte down per barrier to release it. Barriers keep the processes in step
(every echo process measures the same interval; idle's memory is read while
every process holds its sessions). The parent merges the results: counts
add up, latency histograms merge bucket by bucket.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import selectors
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import msgpack

from shardd import control
from shardd.config import ConfigError
from shardd.loadtest.connect import ConnectResult, connect
from shardd.loadtest.echo import EchoResult, echo
from shardd.loadtest.hooks import Hooks
from shardd.loadtest.idle import IdleResult, idle
from shardd.loadtest.storm import StormResult, storm
from shardd.loadtest.target import CLOSE_GRACE, Target, server_rss

_SCENARIOS: dict[str, Any] = {"connect": connect, "echo": echo, "idle": idle, "storm": storm}
_RESULT_TYPES: dict[str, Any] = {
    "connect": ConnectResult, "echo": EchoResult, "idle": IdleResult, "storm": StormResult,
}

SCENARIO_HELP = {
    "connect": "session setups: connect, negotiate, first shell output, close",
    "echo": "sessions exchanging messages with an echo shell, one in flight each",
    "idle": "sessions opened and held; the server's memory per session",
    "storm": "sessions arriving at a fixed rate, each held a random time",
}

# flag -> scenarios that take it (the rest refuse it), default per scenario
_ONLY: dict[str, tuple[str, ...]] = {
    "sessions": ("connect", "echo", "idle"),
    "concurrency": ("connect", "echo", "idle"),
    "size": ("echo",),
    "duration": ("echo", "idle", "storm"),
    "rate": ("storm",),
    "hold_min": ("storm",),
    "hold_max": ("storm",),
    "seed": ("storm",),
    "max_sessions": ("storm",),
    "control": ("idle",),
    "server_port": ("idle",),
    "pids": ("idle",),
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "connect": {"sessions": 1000, "concurrency": 50},
    "echo": {"sessions": 100, "concurrency": 100, "size": 1024, "duration": 5.0},
    "idle": {"sessions": 1000, "concurrency": 100, "duration": 10.0},
    "storm": {"duration": 10.0, "rate": 100.0, "hold_min": 1.0, "hold_max": 5.0, "seed": 0,
              "max_sessions": 1000},
}

MAX_PROCS = 64
PROGRESS_EVERY = 1.0
SNAPSHOT_EVERY = 0.5
# beyond its own bound, how long the parent gives client processes before killing them
SLACK = 30.0
EXIT_INTERRUPTED = 130
LOST_PROCESS = "client process lost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``loadtest`` subcommand's arguments (values are checked by :func:`run`)."""
    parser.add_argument("scenario", choices=tuple(SCENARIO_HELP),
                        help="; ".join(f"{k}: {v}" for k, v in SCENARIO_HELP.items()))
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="server address, loopback only (default 127.0.0.1)")
    add("--port", default="6023", help="server port (default 6023)")
    add("--sessions", metavar="N", help="connect: setups in all (1000); echo: sessions (100); "
                                        "idle: sessions to hold (1000)")
    add("--concurrency", metavar="C", help="setups in flight (connect 50, echo and idle 100)")
    add("--size", metavar="BYTES", help="echo: message size (1024)")
    add("--duration", metavar="SECONDS", help="echo: measured interval (5); idle: hold (10); "
                                              "storm: arrivals (10)")
    add("--rate", metavar="PER_S", help="storm: new sessions per second (100)")
    add("--hold-min", metavar="SECONDS", help="storm: shortest hold (1)")
    add("--hold-max", metavar="SECONDS", help="storm: longest hold (5)")
    add("--seed", metavar="N", help="storm: seed of the hold times (0)")
    add("--max-sessions", metavar="N", help="storm: sessions in flight at most; an arrival "
                                            "finding that many is skipped, and counted (1000)")
    add("--procs", metavar="P", default="1",
        help="client processes sharing the sessions, at most --sessions and --concurrency (1)")
    add("--source", metavar="ADDR,...",
        help="local addresses, loopback, used round-robin (default: the kernel's choice)")
    add("--negotiation-timeout", metavar="SECONDS", default="10",
        help="longest wait for the shell's first output after connecting (10)")
    add("--connect-timeout", metavar="SECONDS", default="10", help="longest TCP connect (10)")
    add("--max-failures", metavar="N", default="0",
        help="exit status 1 when failures exceed this (0)")
    rss = parser.add_mutually_exclusive_group()
    rss.add_argument("--control", metavar="PATH",
                     help="idle: the server's control socket, to read its workers' memory")
    rss.add_argument("--server-port", metavar="PORT",
                     help="idle: the port shardd serve was started with (finds its control "
                          "socket)")
    rss.add_argument("--pids", metavar="PID,...", help="idle: server processes to read memory of")
    add("--json", action="store_true", help="print the summary as one JSON object")


# ------------------------------------------------------------------ checks

def _int(name: str, text: Any, low: int, high: int) -> int:
    try:
        value = int(str(text), 10)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, not {value}")
    return value


def _float(name: str, text: Any, low: float, high: float, *, above: bool = False) -> float:
    try:
        value = float(str(text))
    except ValueError:
        raise ConfigError(name, f"must be a number, not {text!r}") from None
    if math.isnan(value) or not low <= value <= high or (above and value == low):
        bound = f"more than {low:g}" if above else f"at least {low:g}"
        raise ConfigError(name, f"must be {bound} and at most {high:g}, not {text!r}")
    return value


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


@dataclass
class Plan:
    """A checked command line: what every client process runs, and how to report."""

    scenario: str
    target: Target
    sources: list[str]
    procs: int
    params: dict[str, Any]
    negotiation_timeout: float
    connect_timeout: float
    max_failures: int
    json: bool
    progress: bool
    control_path: str | None = None
    pids: list[int] = field(default_factory=list)

    def share(self, index: int) -> dict[str, Any]:
        """Keyword arguments of the scenario function for client process ``index``."""
        p = self.params
        kwargs: dict[str, Any] = {
            "negotiation_timeout": self.negotiation_timeout,
            "connect_timeout": self.connect_timeout,
            "sources": self.sources,
            "share": (index, self.procs),
        }
        n = self.procs
        if self.scenario in ("connect", "echo", "idle"):
            kwargs["sessions"] = _split(p["sessions"], n, index)
            kwargs["concurrency"] = max(1, _split(p["concurrency"], n, index))
        if self.scenario in ("echo", "idle", "storm"):
            kwargs["duration"] = p["duration"]
        if self.scenario == "echo":
            kwargs["size"] = p["size"]
        if self.scenario == "storm":
            kwargs.update(rate=p["rate"], hold_min=p["hold_min"], hold_max=p["hold_max"],
                          seed=p["seed"], max_sessions=max(1, _split(p["max_sessions"], n, index)))
        return kwargs

    def time_bound(self) -> float:
        """Longest a correct client process can take; beyond it, it is killed."""
        p = self.params
        setup = self.connect_timeout + self.negotiation_timeout + CLOSE_GRACE
        if self.scenario == "storm":
            return p["duration"] + setup + p["hold_max"] + SLACK
        per = math.ceil(p["sessions"] / self.procs)
        rounds = math.ceil(per / max(1, p["concurrency"] // self.procs))
        bound = rounds * setup + p.get("duration", 0) + SLACK
        if self.scenario == "idle":
            bound += 2 * 10  # two control requests, 10 s each at most
        return bound

    def in_flight_per_proc(self) -> int:
        p = self.params
        if self.scenario == "connect":
            return math.ceil(p["concurrency"] / self.procs)
        if self.scenario == "storm":
            return math.ceil(p["max_sessions"] / self.procs)
        return math.ceil(p["sessions"] / self.procs)


def _ephemeral_ports() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28232


def make_plan(args: argparse.Namespace, progress: bool) -> Plan:
    """Check every flag; ConfigError names the first bad one. Connects to nothing."""
    scenario = args.scenario
    for name, scenarios in _ONLY.items():
        if getattr(args, name) is not None and scenario not in scenarios:
            raise ConfigError(name.replace("_", "-"),
                              f"does not apply to the {scenario} scenario "
                              f"(only {', '.join(scenarios)})")
    port = _int("port", args.port, 1, 65535)
    try:
        target = Target.resolve(args.host, port)
    except ValueError as exc:
        raise ConfigError("host", str(exc)) from None
    sources: list[str] = []
    if args.source is not None:
        for text in args.source.split(","):
            if not text.strip():
                raise ConfigError("source", f"give addresses separated by commas, not "
                                            f"{args.source!r}")
            try:
                sources.append(target.source(text.strip()))
            except ValueError as exc:
                raise ConfigError("source", str(exc)) from None
    defaults = _DEFAULTS[scenario]
    given = {k: getattr(args, k) for k in defaults if getattr(args, k) is not None}
    raw = {**defaults, **given}
    params: dict[str, Any] = {}
    checks = {
        "sessions": lambda v: _int("sessions", v, 1, 1_000_000),
        "concurrency": lambda v: _int("concurrency", v, 1, 100_000),
        "size": lambda v: _int("size", v, 1, 16 * 2**20),
        "duration": lambda v: _float("duration", v, 0.0, 86400.0, above=True),
        "rate": lambda v: _float("rate", v, 0.0, 100_000.0, above=True),
        "hold_min": lambda v: _float("hold-min", v, 0.0, 86400.0),
        "hold_max": lambda v: _float("hold-max", v, 0.0, 86400.0),
        "seed": lambda v: _int("seed", v, 0, 2**63 - 1),
        "max_sessions": lambda v: _int("max-sessions", v, 1, 1_000_000),
    }
    for key, value in raw.items():
        params[key] = checks[key](value)
    if scenario == "storm":
        if params["hold_min"] > params["hold_max"]:
            raise ConfigError("hold-max", f"must be at least --hold-min "
                                          f"({params['hold_min']:g}), not {params['hold_max']:g}")
        if params["rate"] * params["duration"] > 10_000_000:
            raise ConfigError("rate", "more than 10000000 sessions in one storm")
    procs = _int("procs", args.procs, 1, MAX_PROCS)
    if "sessions" in params:
        # every process started has sessions to run and setups to make
        procs = min(procs, params["sessions"], params["concurrency"])
    plan = Plan(
        scenario=scenario, target=target, sources=sources, procs=procs, params=params,
        negotiation_timeout=_float("negotiation-timeout", args.negotiation_timeout, 0.0, 3600.0,
                                   above=True),
        connect_timeout=_float("connect-timeout", args.connect_timeout, 0.0, 3600.0,
                               above=True),
        max_failures=_int("max-failures", args.max_failures, 0, 10**12),
        json=args.json, progress=progress,
    )
    if args.control is not None:
        plan.control_path = args.control
    elif args.server_port is not None:
        plan.control_path = control.default_path(_int("server-port", args.server_port, 1, 65535))
    elif args.pids is not None:
        plan.pids = [_int("pids", text.strip(), 1, 2**31 - 1) for text in args.pids.split(",")]
    _check_limits(plan)
    return plan


def _check_limits(plan: Plan) -> None:
    per_proc = plan.in_flight_per_proc()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and per_proc + 64 > hard:
        wanted = math.ceil(plan.in_flight_per_proc() * plan.procs / (hard - 64))
        raise ConfigError("procs", f"{per_proc} sessions per client process exceed the "
                                   f"open-file limit ({hard}); use --procs {wanted} or more")
    if plan.scenario in ("echo", "idle", "storm"):
        held = per_proc * plan.procs
        ports = _ephemeral_ports() * max(1, len(plan.sources))
        if held > ports:
            raise ConfigError("source", f"{held} sessions at once need more local ports than "
                                        f"{max(1, len(plan.sources))} source address(es) have "
                                        f"({ports}); give more --source addresses")


# ------------------------------------------------------------ client side

class _PipeHooks(Hooks):
    """A client process's side of the pipes to the parent."""

    def __init__(self, up: int, down: int) -> None:
        super().__init__()
        self.up = up
        self.down = down
        self.packer = msgpack.Packer(use_bin_type=True)
        self._release: Any = None
        self._reporter: Any = None

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(self.packer.pack(message))
        try:
            while data:
                data = data[os.write(self.up, data):]
        except OSError:  # the parent is gone: nobody to report to, so stop
            self.interrupted.set()

    def attach(self, progress: bool) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        loop.add_reader(self.down, self._from_parent)
        loop.add_signal_handler(signal.SIGINT, self.interrupted.set)
        loop.add_signal_handler(signal.SIGTERM, self.interrupted.set)
        if progress:
            self._reporter = loop.create_task(self._report())

    def _from_parent(self) -> None:
        import asyncio

        try:
            data = os.read(self.down, 64)
        except OSError:
            data = b""
        if not data:  # the parent is gone: stop, and pass every barrier
            asyncio.get_running_loop().remove_reader(self.down)
            self.interrupted.set()
        if self._release is not None and not self._release.done():
            self._release.set_result(None)

    async def barrier(self, name: str) -> None:
        import asyncio

        self._release = asyncio.get_running_loop().create_future()
        self.send({"t": "barrier", "name": name})
        await self._release
        self._release = None

    async def _report(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(SNAPSHOT_EVERY)  # the progress line's period
            if self.snapshot is not None:
                self.send({"t": "progress", "s": self.snapshot()})


def _client(plan: Plan, index: int, up: int, down: int) -> int:
    """A client process: its share of the run, the result sent up the pipe."""
    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    hooks = _PipeHooks(up, down)
    scenario = _SCENARIOS[plan.scenario]

    async def main() -> Any:
        hooks.attach(plan.progress)
        return await scenario(plan.target.address[0], plan.target.port, **plan.share(index),
                              hooks=hooks)

    try:
        result = uvloop.run(main())
    except BaseException:
        hooks.send({"t": "error", "text": traceback.format_exc()})
        return 1
    wire = result.to_wire()
    wire["interrupted"] = hooks.interrupted.is_set()
    hooks.send({"t": "result", "r": wire})
    return 0


# ------------------------------------------------------------ parent side

@dataclass
class _Child:
    index: int
    pid: int
    up: int
    down: int
    unpacker: Any = field(default_factory=lambda: msgpack.Unpacker(raw=False))
    snapshot: dict[str, int] = field(default_factory=dict)
    barrier: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False  # its pipe is closed: it exited, or was killed
    status: int | None = None


def _fork_clients(plan: Plan) -> list[_Child]:
    children: list[_Child] = []
    sys.stdout.flush()
    sys.stderr.flush()
    for index in range(plan.procs):
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the client process
            code = 1
            try:
                for child in children:
                    os.close(child.up)
                    os.close(child.down)
                os.close(up_r)
                os.close(down_w)
                code = _client(plan, index, up_w, down_r)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(up_w)
        os.close(down_r)
        children.append(_Child(index, pid, up_r, down_w))
    return children


class _Coordinator:
    """The parent: reads the pipes, releases barriers, prints progress."""

    def __init__(self, plan: Plan, children: list[_Child]) -> None:
        self.plan = plan
        self.children = children
        self.interrupts = 0
        self.started = time.monotonic()
        self.rss_holding: int | None = None
        self.rss_pids: list[int] = []
        self._last_progress = self.started
        self._last_first: int | None = None

    def interrupt(self, _signum: int, _frame: Any) -> None:
        self.interrupts += 1
        for child in self.children:
            if child.status is None:
                try:
                    os.kill(child.pid, signal.SIGINT if self.interrupts == 1 else signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def run(self) -> None:
        deadline = self.started + self.plan.time_bound()
        with selectors.DefaultSelector() as selector:
            for child in self.children:
                selector.register(child.up, selectors.EVENT_READ, child)
            while any(not c.done for c in self.children):
                now = time.monotonic()
                if now > deadline or self.interrupts > 1:
                    self._kill_remaining("did not finish in time" if now > deadline
                                         else "killed on a second interrupt")
                    break
                for key, _mask in selector.select(timeout=min(0.2, deadline - now)):
                    self._read(key.data, selector)
                self._release_barrier()
                if self.plan.progress and now - self._last_progress >= PROGRESS_EVERY:
                    self._print_progress(now)
        self._reap()

    def _read(self, child: _Child, selector: selectors.BaseSelector) -> None:
        try:
            data = os.read(child.up, 1 << 16)
        except OSError:
            data = b""
        if not data:
            selector.unregister(child.up)
            child.done = True
            if child.result is None and child.error is None:
                child.error = "exited without a result"
            return
        child.unpacker.feed(data)
        for message in child.unpacker:
            kind = message.get("t")
            if kind == "progress":
                child.snapshot = message["s"]
            elif kind == "barrier":
                child.barrier = message["name"]
            elif kind == "result":
                child.result = message["r"]
            elif kind == "error":
                child.error = message["text"]

    def _release_barrier(self) -> None:
        waiting = [c for c in self.children if not c.done]
        names = {c.barrier for c in waiting}
        if not waiting or len(names) != 1 or None in names:
            return
        name = names.pop()
        if name == "held" and (self.plan.control_path or self.plan.pids):
            # every process holds all its sessions and waits here: read the server now
            try:
                self.rss_pids, self.rss_holding = _server_rss(self.plan)
            except control.ControlError as exc:
                print(f"shardd: cannot read the server's memory: {exc}", file=sys.stderr)
        for child in waiting:
            child.barrier = None
            try:
                os.write(child.down, b"g")
            except OSError:
                pass

    def _print_progress(self, now: float) -> None:
        since, self._last_progress = now - self._last_progress, now
        total: Counter = Counter()
        for child in self.children:
            total.update(child.snapshot)
        if not total:
            return
        keys = list(self.children[0].snapshot or total)
        first = total[keys[0]]
        parts = [f"{k} {total[k]}" for k in keys]
        if self._last_first is not None and keys[0] in ("setups", "round trips", "attempts"):
            parts[0] += f" ({(first - self._last_first) / since:.0f}/s)"
        self._last_first = first
        stream = sys.stderr if self.plan.json else sys.stdout
        print(f"{self.plan.scenario} {now - self.started:6.1f}s  " + "  ".join(parts),
              file=stream, flush=True)

    def _kill_remaining(self, why: str) -> None:
        for child in self.children:
            if not child.done:
                child.done = True
                child.error = why
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _reap(self) -> None:
        deadline = time.monotonic() + 5
        for child in self.children:
            while child.status is None:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
                if pid:
                    child.status = status
                elif time.monotonic() > deadline:
                    os.kill(child.pid, signal.SIGKILL)
                    _pid, child.status = os.waitpid(child.pid, 0)
                else:
                    time.sleep(0.01)  # a client process finishing its exit
            for fd in (child.up, child.down):
                try:
                    os.close(fd)
                except OSError:
                    pass


def _server_rss(plan: Plan) -> tuple[list[int], int]:
    pids = plan.pids
    if plan.control_path:
        status = control.request(plan.control_path, {"cmd": "status"})
        pids = [w["pid"] for w in status.get("workers", []) if w.get("pid")]
    return list(pids), server_rss(pids)


# ------------------------------------------------------------------ output

def _merge(plan: Plan, coordinator: _Coordinator, rss_before: int | None,
           before_pids: list[int]) -> tuple[dict[str, Any], bool]:
    cls = _RESULT_TYPES[plan.scenario]
    interrupted = coordinator.interrupts > 0
    results = []
    for child in coordinator.children:
        if child.result is not None:
            wire = dict(child.result)
            interrupted = wire.pop("interrupted", False) or interrupted
            results.append(cls.from_wire(wire))
    lost = [c for c in coordinator.children if c.result is None]
    merged = reduce(lambda a, b: a.merge(b), results) if results else None
    if merged is None:
        summary: dict[str, Any] = {"scenario": plan.scenario, "failures": {},
                                   "failures_by_phase": {}, "sources": {}}
    else:
        if plan.scenario == "idle" and rss_before is not None:
            merged.pids = coordinator.rss_pids or before_pids
            merged.rss_before = rss_before
            merged.rss_holding = coordinator.rss_holding
        summary = merged.summary()
    if lost:
        summary["failures"][LOST_PROCESS] = len(lost)
        summary["failures_by_phase"].setdefault("client", {})[LOST_PROCESS] = len(lost)
    total = sum(summary["failures"].values())
    summary["failures_total"] = total
    head = {
        "scenario": plan.scenario,
        "target": str(plan.target),
        "procs": plan.procs,
    }
    summary = {**head, **summary}
    summary["max_failures"] = plan.max_failures
    summary["passed"] = total <= plan.max_failures
    summary["interrupted"] = interrupted
    return summary, interrupted


def _ms(values: dict[str, float | None]) -> str:
    if values.get("max") is None:
        return "-"
    return "  ".join(f"{k} {v:.3f}" for k, v in values.items() if v is not None)


def render(summary: dict[str, Any]) -> str:
    """The summary as a table for people."""
    s = summary
    sources = ", ".join(f"{a} x{n}" for a, n in sorted(s.get("sources", {}).items())) or "-"
    procs = s["procs"]
    rows: list[tuple[str, str]] = [
        ("target", s["target"]),
        ("client processes", f"{procs}"),
        ("local addresses", sources),
    ]
    scenario = s["scenario"]
    if "duration" not in s:
        pass
    elif scenario == "connect":
        rows += [
            ("setups", f"{s['setups']} of {s['attempts']} attempted "
                       f"({s['sessions']} asked, concurrency {s['concurrency']})"),
            ("duration", f"{s['duration']:.3f} s"),
            ("setups/s", f"{s['setups_per_s']:.1f}"),
            ("setup ms", _ms(s["setup_ms"])),
        ]
    elif scenario == "echo":
        rows += [
            ("sessions", f"{s['established']} of {s['sessions']} established"),
            ("message", f"{s['size']} bytes"),
            ("duration", f"{s['duration']:.3f} s"),
            ("round trips", f"{s['round_trips']} ({s['round_trips_per_s']:.1f}/s)"),
            ("throughput", f"{s['mb_per_s']:.2f} MB/s (both directions)"),
            ("rtt ms", _ms(s["rtt_ms"])),
        ]
    elif scenario == "idle":
        rows += [
            ("sessions", f"{s['held']} held of {s['opened']} opened ({s['sessions']} asked)"),
            ("held for", f"{s['duration']:.3f} s"),
            ("setup ms", _ms(s["setup_ms"])),
        ]
        rss = s.get("rss")
        if rss:
            per = rss["per_session_bytes"]
            rows += [
                ("server pids", ", ".join(str(p) for p in rss["pids"] or []) or "-"),
                ("server rss", f"{rss['before_bytes'] / 2**20:.1f} MiB before, "
                               f"{rss['holding_bytes'] / 2**20:.1f} MiB holding"),
                ("rss/session", "-" if per is None else f"{per / 1024:.1f} KiB"),
            ]
    elif scenario == "storm":
        rows += [
            ("arrivals", f"{s['rate']:g}/s for {s['duration']:g} s, held "
                         f"{s['hold_min']:g}-{s['hold_max']:g} s (seed {s['seed']})"),
            ("attempts", f"{s['attempts']} ({s['skipped']} skipped at "
                         f"{s['max_sessions']} in flight)"),
            ("successes", f"{s['successes']}"),
            ("peak in flight", f"{s['peak_in_flight']}"),
            ("elapsed", f"{s['elapsed']:.3f} s"),
            ("setup ms", _ms(s["setup_ms"])),
        ]
    total = s["failures_total"]
    rows.append(("failures", f"{total}" + (f" (more than --max-failures {s['max_failures']})"
                                           if not s["passed"] else "")))
    for phase, kinds in s["failures_by_phase"].items():
        for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            rows.append(("", f"{n} {kind} ({phase})"))
    if s["interrupted"]:
        rows.append(("interrupted", "yes: partial results"))
    width = max(len(label) for label, _ in rows)
    lines = [f"shardd loadtest {scenario}"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``shardd loadtest``; its exit status. ConfigError for a bad flag value."""
    plan = make_plan(args, progress=sys.stdout.isatty())
    rss_before: int | None = None
    before_pids: list[int] = []
    if plan.control_path or plan.pids:
        before_pids, rss_before = _server_rss(plan)  # ControlError: no server, nothing opened
    # a Ctrl-C while forking must not kill a half-started client; each sets its own
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        children = _fork_clients(plan)
        coordinator = _Coordinator(plan, children)
        signal.signal(signal.SIGINT, coordinator.interrupt)
        coordinator.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    for child in coordinator.children:
        if child.error:
            print(f"shardd: client process {child.index} (pid {child.pid}): "
                  f"{child.error.rstrip()}", file=sys.stderr)
    summary, interrupted = _merge(plan, coordinator, rss_before, before_pids)
    if plan.json:
        print(json.dumps(summary), flush=True)
    else:
        print(render(summary), flush=True)
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if summary["passed"] else 1
