"""A ``shardd loadtest`` run split over ``--procs`` client processes, and its merged result.

The client processes are forked before any event loop exists and each runs
its share (:mod:`~shardd.loadtest.client_process`). This (parent) process
reads their pipes, releases barriers, which keep them in step (every echo
process measures the same interval; idle's memory is read while every
process holds its sessions), prints progress, and merges their results:
counts add up, latency histograms merge bucket by bucket. For a scenario
that watches the server's workers, it reads them before and after the run.
"""

from __future__ import annotations

import os
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
from shardd.loadtest import client_process
from shardd.loadtest.plan import VERIFY_REQUEST_TIMEOUT, Plan
from shardd.loadtest.results import ServerMemory
from shardd.loadtest.scenario import Worker
from shardd.loadtest.target import server_rss
from shardd.loadtest.verify import DISAGREE, ROUND_EVERY, UNREADABLE, Verification

PROGRESS_EVERY = 1.0
LOST_PROCESS = "client process lost"


@dataclass
class Outcome:
    """A run's merged summary (what ``--json`` prints) and how it ended."""

    summary: dict[str, Any]
    interrupted: bool
    #: some client process returned a result: the summary has the scenario's own fields
    measured: bool


@dataclass
class _Child:
    index: int
    pid: int
    up: int
    down: int
    unpacker: msgpack.Unpacker = field(default_factory=lambda: msgpack.Unpacker(raw=False))
    snapshot: dict[str, int] = field(default_factory=dict)
    barrier: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    records: list[list[Any]] | None = None  # --verify: its sessions, as last asked
    done: bool = False  # its pipe is closed: it exited, or was killed
    status: int | None = None


#: what the parent passes on to its client processes, then waits for them
FORWARDED = (signal.SIGINT, signal.SIGTERM)


def _fork_clients(plan: Plan, children: list[_Child]) -> None:
    """Fork the client processes into ``children``, with FORWARDED blocked.

    The parent's handlers (:meth:`_Coordinator.interrupt`) must not run in a
    child, so a child puts its own dispositions in place before it unblocks
    them: TERM ends a client that has no loop yet, INT waits for the one its
    loop installs (a Ctrl-C reaches the whole process group; the parent
    decides).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    for index in range(plan.procs):
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the client process
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
                for child in children:
                    os.close(child.up)
                    os.close(child.down)
                os.close(up_r)
                os.close(down_w)
                code = client_process.main(plan, index, up_w, down_r)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(up_w)
        os.close(down_r)
        children.append(_Child(index, pid, up_r, down_w))


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
        self._last_count: int | None = None
        self.verification: Verification | None = None
        self._verify_started = 0.0
        self._next_round: float | None = None  # when to ask the clients again
        self._verified = False

    def interrupt(self, signum: int, _frame: Any) -> None:
        """SIGINT or SIGTERM: passed on to every client process, which stops and
        reports; a second one kills them. Either way the run waits for them."""
        self.interrupts += 1
        for child in self.children:
            if child.status is None:
                try:
                    os.kill(child.pid, signum if self.interrupts == 1 else signal.SIGKILL)
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
                    self._kill_remaining(
                        "did not finish in time"
                        if now > deadline
                        else "killed on a second interrupt"
                    )
                    break
                for key, _mask in selector.select(timeout=min(0.2, deadline - now)):
                    self._read(key.data, selector)
                self._verify_round()
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
            elif kind == "records":
                child.records = message["r"]
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
        plan = self.plan
        if name == plan.scenario.verify_barrier and plan.settle is not None and not self._verified:
            if self.verification is None:
                self.verification = Verification(plan.settle)
                self._verify_started = time.monotonic()
                self._ask_records()
            return  # released once the status agrees, or the settle interval is over
        if name == plan.scenario.memory_barrier and (plan.control_path or plan.pids):
            # every process holds all its sessions and waits here: read the server now
            try:
                self.rss_pids, self.rss_holding = _server_rss(plan)
            except control.ControlError as exc:
                print(f"shardd: cannot read the server's memory: {exc}", file=sys.stderr)
        for child in waiting:
            child.barrier = None
            try:
                os.write(child.down, client_process.GO)
            except OSError:
                pass

    def _ask_records(self) -> None:
        self._next_round = None
        for child in self.children:
            if not child.done:
                child.records = None
                try:
                    os.write(child.down, client_process.RECORDS)
                except OSError:
                    pass

    def _verify_round(self) -> None:
        """Compare the server's status with the clients' latest records, once all are in."""
        verification = self.verification
        if verification is None or self._verified:
            return
        now = time.monotonic()
        if self._next_round is not None:
            if now >= self._next_round:
                self._ask_records()
            return
        waiting = [c for c in self.children if not c.done]
        if any(c.records is None for c in waiting):
            return
        assert self.plan.control_path is not None
        try:
            status = control.status(self.plan.control_path, timeout=VERIFY_REQUEST_TIMEOUT)
        except control.ControlError as exc:
            verification.error = str(exc)
        else:
            records = [r for c in waiting for r in c.records or ()]
            verification.compare(records, status.get("connections", []))
        now = time.monotonic()
        verification.seconds = now - self._verify_started
        if (
            verification.error
            or not verification.disagree
            or now >= self._verify_started + verification.settle
        ):
            self._verified = True
            for child in waiting:
                child.records = None  # they can be large; nobody needs them now
        else:
            self._next_round = now + ROUND_EVERY

    def _print_progress(self, now: float) -> None:
        since, self._last_progress = now - self._last_progress, now
        total: Counter[str] = Counter()
        for child in self.children:
            total.update(child.snapshot)
        if not total:
            return
        keys = list(self.children[0].snapshot or total)
        parts = [f"{k} {total[k]}" for k in keys]
        counted = self.plan.scenario.progress_rate
        if counted in keys:
            count = total[counted]
            if self._last_count is not None:
                parts[keys.index(counted)] += f" ({(count - self._last_count) / since:.0f}/s)"
            self._last_count = count
        stream = sys.stderr if self.plan.json else sys.stdout
        print(
            f"{self.plan.scenario.name} {now - self.started:6.1f}s  " + "  ".join(parts),
            file=stream,
            flush=True,
        )

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


def _workers(path: str) -> list[Worker]:
    workers: list[Worker] = control.request(path, {"cmd": "status"}).get("workers", [])
    return workers


def _merge(
    plan: Plan,
    coordinator: _Coordinator,
    rss_before: int | None,
    before_pids: list[int],
    workers: tuple[list[Worker], list[Worker] | None] | None,
) -> Outcome:
    interrupted = coordinator.interrupts > 0
    results = []
    for child in coordinator.children:
        if child.result is not None:
            wire = dict(child.result)
            interrupted = wire.pop("interrupted", False) or interrupted
            results.append(plan.scenario.result.from_wire(wire))
    lost = [c for c in coordinator.children if c.result is None]
    merged = reduce(lambda a, b: a.merge(b), results) if results else None
    if merged is None:
        summary: dict[str, Any] = {
            "scenario": plan.scenario.name,
            "failures": {},
            "failures_by_phase": {},
            "sources": {},
        }
    else:
        if rss_before is not None and isinstance(merged, ServerMemory):
            merged.pids = coordinator.rss_pids or before_pids
            merged.rss_before = rss_before
            merged.rss_holding = coordinator.rss_holding
        summary = merged.summary()
    verification = coordinator.verification
    if verification is not None:
        summary["verify"] = verification.summary()
        kind, failed = (UNREADABLE, 1) if verification.error else (DISAGREE, verification.disagree)
        if failed:
            summary["failures"][kind] = failed
            summary["failures_by_phase"].setdefault("verify", {})[kind] = failed
    if lost:
        summary["failures"][LOST_PROCESS] = len(lost)
        summary["failures_by_phase"].setdefault("client", {})[LOST_PROCESS] = len(lost)
    if workers is not None and plan.scenario.watch_workers is not None:
        plan.scenario.watch_workers(summary, *workers)
    total = sum(summary["failures"].values())
    summary["failures_total"] = total
    head = {
        "scenario": plan.scenario.name,
        "target": str(plan.target),
        "tls": plan.tls,
        "procs": plan.procs,
    }
    summary = {**head, **summary}
    summary["max_failures"] = plan.max_failures
    summary["passed"] = total <= plan.max_failures
    summary["interrupted"] = interrupted
    return Outcome(summary, interrupted, measured=merged is not None)


def run(plan: Plan) -> Outcome:
    """Fork the client processes, see them through, merge what they return.

    ControlError if the server's memory or workers cannot be read before anything starts.
    """
    rss_before: int | None = None
    before_pids: list[int] = []
    if plan.scenario.memory_barrier is not None and (plan.control_path or plan.pids):
        before_pids, rss_before = _server_rss(plan)  # no server: nothing opened yet
    watched = plan.control_path if plan.scenario.watch_workers is not None else None
    workers_before = _workers(watched) if watched is not None else []
    # INT and TERM are passed on to the client processes, and the run waits
    # for them: none outlives it. Blocked while forking, so that one arriving
    # then reaches every client forked so far, once they are all there.
    coordinator = _Coordinator(plan, [])
    previous = {signum: signal.getsignal(signum) for signum in FORWARDED}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        for signum in FORWARDED:
            signal.signal(signum, coordinator.interrupt)
        try:
            _fork_clients(plan, coordinator.children)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        coordinator.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for child in coordinator.children:
        if child.error:
            print(
                f"shardd: client process {child.index} (pid {child.pid}): {child.error.rstrip()}",
                file=sys.stderr,
            )
    workers: tuple[list[Worker], list[Worker] | None] | None = None
    if watched is not None:
        # a status request waits for every worker's loop to answer, so what the
        # run's last bytes did to a worker has happened by then
        try:
            workers = (workers_before, _workers(watched))
        except control.ControlError as exc:
            print(f"shardd: cannot read the server's workers: {exc}", file=sys.stderr)
            workers = (workers_before, None)
    return _merge(plan, coordinator, rss_before, before_pids, workers)
