"""End-to-end: the supervisor of ``shardd serve --workers N`` under signals and failures.

Every test runs a real ``shardd serve`` subprocess on 127.0.0.1 and talks to it
with plain sockets, the ``shardd status`` command and the control socket. The
worker processes are watched with psutil. Every wait has a deadline and every
loop a bound; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import psutil
from conftest import (
    CONNECTION_FIELDS,
    IAC_DO_TTYPE,
    WORKER_FIELDS,
    ServerProcess,
    async_wait_until,
    gone,
    peer_of,
    read_to_eof,
    run_shardd,
    wait_until,
)
from connect_loops import ATTEMPT_ERRORS, attempt, attempt_loops, open_attempt

from shardd import control

HOST = "127.0.0.1"
WORKER_TITLE = "shardd: worker shard {} 127.0.0.1:{}"


# ------------------------------------------------------------------ helpers


def status(server: ServerProcess) -> dict[str, Any]:
    """The supervisor's status through its control socket (cheap enough to poll)."""
    reply = control.status(control.default_path(server.port), timeout=10)
    reply.pop("ok", None)
    return reply


def status_cli(server: ServerProcess) -> dict[str, Any]:
    """What ``shardd status --json --port P`` prints."""
    result = run_shardd("status", "--json", "--port", str(server.port))
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def worker_of(st: dict[str, Any], shard: int) -> dict[str, Any] | None:
    """The serving worker of ``shard`` in a status reply, if there is exactly one."""
    found = [w for w in st["workers"] if w["shard"] == shard and w["state"] == "serving"]
    return found[0] if len(found) == 1 else None


def all_serving(server: ServerProcess, count: int) -> dict[str, Any] | None:
    """The status once exactly ``count`` workers, shards 0..count-1, are all serving."""
    st = status(server)
    workers = st["workers"]
    if (
        st["supervisor"]["workers"] == count
        and len(workers) == count
        and all(w["state"] == "serving" for w in workers)
        and sorted(w["shard"] for w in workers) == list(range(count))
    ):
        return st
    return None


def served_by(sock: socket.socket, candidates: list[psutil.Process]) -> int | None:
    """Which of ``candidates`` holds the server side of the client socket ``sock``."""
    local = sock.getsockname()[:2]
    for proc in candidates:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.raddr and tuple(c.raddr) == local for c in conns):
            return proc.pid
    return None


def until_worker_accepts(server: ServerProcess, shard: int, pid: int, limit: int = 400) -> None:
    """Open sessions until ``pid``, serving ``shard``, has accepted one (bounded)."""
    for made in range(1, limit + 1):
        attempt(server.port)
        if made % 10 == 0:
            w = worker_of(status(server), shard)
            if w is not None and w["pid"] == pid and w["accepted"] > 0:
                return
    raise AssertionError(f"shard {shard} worker {pid} accepted none of {limit} sessions")


def recv_until(sock: socket.socket, token: bytes, timeout: float = 5.0) -> bytes:
    """Read until ``token`` has arrived; fail on EOF or after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while token not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{token!r} not received within {timeout}s; got {data!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"EOF before {token!r}; got {data!r}")
        data += chunk
    return data


def echo_round_trip(sock: socket.socket, token: bytes) -> None:
    sock.sendall(token)
    recv_until(sock, token)


def open_sessions(port: int, count: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(open_attempt(port))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


# ------------------------------------------------ 1. sessions and statistics


async def _open_async_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    try:
        first = await asyncio.wait_for(reader.readexactly(3), 10)
    except BaseException:
        writer.close()
        raise
    assert first == IAC_DO_TTYPE
    return reader, writer


async def test_status_lists_every_session_of_both_shards(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo", "--stats-interval", "0.2")
    wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    results = await asyncio.gather(
        *(_open_async_session(server.port) for _ in range(200)), return_exceptions=True
    )
    writers = [r[1] for r in results if isinstance(r, tuple)]
    try:
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:5]
        peers = {"{}:{}".format(*w.get_extra_info("sockname")[:2]): w for w in writers}
        assert len(peers) == 200

        def complete() -> dict[str, Any] | None:
            st = status_cli(server)
            return st if len(st["connections"]) == 200 else None

        first = await asyncio.to_thread(wait_until, complete, 20, "200 sessions in status")
        assert isinstance(first, dict)
        sup = first["supervisor"]
        assert sup["pid"] == server.proc.pid
        assert sup["workers"] == 2
        assert sup["listen"] == [f"{HOST}:{server.port}"]
        workers = {w["shard"]: w for w in first["workers"]}
        assert sorted(workers) == [0, 1], first["workers"]
        for w in workers.values():
            assert set(w) >= WORKER_FIELDS, w
            assert w["state"] == "serving"
            assert w["connections"] > 0, f"no session landed on shard {w['shard']}: {workers}"
            assert w["accepted"] >= w["connections"]
        assert sum(w["connections"] for w in workers.values()) == 200
        conns = first["connections"]
        assert {c["peer"] for c in conns} == set(peers)
        assert len({(c["shard"], c["id"]) for c in conns}) == 200
        for c in conns:
            assert set(c) >= CONNECTION_FIELDS, c
            assert c["worker_pid"] == workers[c["shard"]]["pid"], c
            assert c["duration"] >= c["idle"] >= 0, c
            assert c["rx_bytes"] == 0, c  # these clients have not sent a byte yet
            assert c["tx_bytes"] >= len(IAC_DO_TTYPE), c
            assert isinstance(c["term"], str) and isinstance(c["encoding"], str), c
            assert isinstance(c["cols"], int) and isinstance(c["rows"], int), c
        per_shard = {s: sum(c["shard"] == s for c in conns) for s in workers}
        assert per_shard == {s: w["connections"] for s, w in workers.items()}

        second = await asyncio.to_thread(status_cli, server)
        before = {c["peer"]: c for c in conns}
        after = {c["peer"]: c for c in second["connections"]}
        assert set(after) == set(before)
        for peer, c in after.items():
            assert c["duration"] > before[peer]["duration"], (before[peer], c)

        # one session types: its idle resets below everyone else's, its rx_bytes grow
        typist = sorted(peers)[0]
        payload = b"typing on one session\r\n"
        peers[typist].write(payload)
        await peers[typist].drain()

        def typed() -> dict[str, Any] | None:
            st = status_cli(server)
            by_peer = {c["peer"]: c for c in st["connections"]}
            mine = by_peer.get(typist)
            if mine is None or mine["rx_bytes"] < len(payload):
                return None
            others = [c["idle"] for p, c in by_peer.items() if p != typist]
            return st if len(others) == 199 and mine["idle"] < min(others) else None

        third = await asyncio.to_thread(wait_until, typed, 15, "the typist's idle to reset")
        assert isinstance(third, dict)
        by_peer = {c["peer"]: c for c in third["connections"]}
        assert by_peer[typist]["rx_bytes"] == len(payload)
        assert by_peer[typist]["idle"] < before[typist]["idle"] + 0.5
        assert all(c["rx_bytes"] == 0 for p, c in by_peer.items() if p != typist)
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    # the supervisor hears of the closed sessions too
    await async_wait_until(lambda: not status(server)["connections"], 15, "sessions to go")


# ----------------------------------------------------- 2. kill -9 of a worker


def test_kill_9_worker_loses_no_connection(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo")
    st = wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    assert isinstance(st, dict)
    victim = worker_of(st, 0)
    other = worker_of(st, 1)
    assert victim is not None and other is not None
    supervisor = psutil.Process(server.proc.pid)
    old = {victim["pid"], other["pid"]}
    failures: list[str] = []

    def one() -> socket.socket | None:
        try:
            return open_attempt(server.port)
        except ATTEMPT_ERRORS as exc:
            failures.append(repr(exc))
            return None

    for _ in range(50):  # warm up
        sock = one()
        if sock is not None:
            sock.close()
    assert not failures, failures[:5]

    os.kill(victim["pid"], signal.SIGKILL)  # between two attempts: none is in flight
    killed_at = time.monotonic()
    first_served: float | None = None
    new_pid: int | None = None
    after = 0
    deadline = killed_at + 30
    while (first_served is None or after < 100) and time.monotonic() < deadline:
        sock = one()
        if sock is None:
            continue
        with sock:
            if first_served is not None:
                after += 1
                continue
            served_at = time.monotonic()
            fresh = [p for p in supervisor.children() if p.pid not in old]
            owner = served_by(sock, fresh)
            if owner is not None:
                first_served, new_pid = served_at - killed_at, owner
    assert not failures, f"{len(failures)} failed attempts, first: {failures[:5]}"
    assert first_served is not None and new_pid is not None, "no replacement served a session"
    assert after >= 100
    print(
        f"\nkill -9 to the replacement's first served connection: "
        f"{first_served * 1000:.1f} ms (worker {victim['pid']} -> {new_pid})"
    )

    def replaced() -> dict[str, Any] | None:
        now = status(server)
        w0, w1 = worker_of(now, 0), worker_of(now, 1)
        return now if w0 and w1 and w0["pid"] == new_pid and len(now["workers"]) == 2 else None

    final = wait_until(replaced, 10, "shard 0 served by its replacement")
    assert isinstance(final, dict)
    w0, w1 = worker_of(final, 0), worker_of(final, 1)
    assert w0 is not None and w1 is not None
    assert w0["restarts"] == 1, w0
    assert w0["accepted"] > 0, w0
    assert w1["pid"] == other["pid"] and w1["restarts"] == 0, w1
    assert gone(victim["pid"])
    server.wait_for_log(rf"shard 0: worker {victim['pid']} killed by signal 9")


# ------------------------------------------------------------- 3. SIGHUP


def test_sighup_rolls_every_shard_without_losing_a_connection(serve: Any) -> None:
    server = serve(
        "--workers",
        "2",
        "--shell",
        "echo",
        "--graceful-timeout",
        "30",
        "--connect-maxwait",
        "0.5",
        "--stats-interval",
        "0.2",
    )
    st = wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    assert isinstance(st, dict)
    old = {w["pid"] for w in st["workers"]}
    sessions = open_sessions(server.port, 5)
    try:
        for n, sock in enumerate(sessions):
            echo_round_trip(sock, f"before-{n}.".encode())
        mine = {peer_of(sock) for sock in sessions}

        def listed() -> dict[str, int] | None:
            by_peer = {c["peer"]: c["worker_pid"] for c in status(server)["connections"]}
            return by_peer if mine <= set(by_peer) else None

        before = wait_until(listed, 10, "the 5 sessions in status")
        assert isinstance(before, dict)
        held = {before[peer] for peer in mine}
        assert held <= old, held

        with attempt_loops(server.port, 3) as loops:
            wait_until(lambda: all(loop.ok >= 20 for loop in loops), 15, "the loops to run")
            server.proc.send_signal(signal.SIGHUP)

            def rolled() -> dict[str, Any] | None:
                now = status(server)
                fresh = [worker_of(now, s) for s in (0, 1)]
                if all(w is not None and w["pid"] not in old for w in fresh):
                    return now
                return None

            now = wait_until(rolled, 30, "every shard to get a new serving worker")
            assert isinstance(now, dict)
            ok_at_roll = [loop.ok for loop in loops]
            wait_until(
                lambda: all(loop.ok >= n + 50 for loop, n in zip(loops, ok_at_roll, strict=True)),
                20,
                "50 more attempts per loop after the roll",
            )
        failures = [f for loop in loops for f in loop.failures]
        total = sum(loop.ok for loop in loops)
        assert not failures, f"{len(failures)} of {total} attempts failed: {failures[:5]}"

        new = {w["pid"] for w in now["workers"] if w["state"] == "serving"}
        assert len(new) == 2 and not new & old, now["workers"]
        for w in now["workers"]:
            if w["pid"] in old:
                assert w["state"] == "draining", w
            else:
                assert w["restarts"] == 0, w  # a planned replacement is not a restart
        # the sessions opened before the HUP are still served, by the old workers
        for pid in held:
            assert not gone(pid), f"old worker {pid} left before its sessions ended"
        for n, sock in enumerate(sessions):
            echo_round_trip(sock, f"after-{n}.".encode())
        still = wait_until(listed, 10, "the 5 sessions in status after the roll")
        assert isinstance(still, dict)
        assert {peer: still[peer] for peer in mine} == {peer: before[peer] for peer in mine}
    finally:
        for sock in sessions:
            sock.close()
    wait_until(lambda: all(gone(pid) for pid in old), 15, "the old workers to exit")
    final = wait_until(lambda: all_serving(server, 2), 10, "just the 2 new workers")
    assert isinstance(final, dict)
    assert {w["pid"] for w in final["workers"]} == new
    assert server.wait_for_log(r"SIGHUP: rolling restart")


# ------------------------------------------------------ 4. SIGTERM, kill -9


def test_sigterm_says_goodbye_and_exits_0(serve: Any) -> None:
    graceful = 10.0
    server = serve(
        "--workers",
        "2",
        "--shell",
        "welcome",
        "--connect-maxwait",
        "0.3",
        "--graceful-timeout",
        str(graceful),
        "--stats-interval",
        "0.2",
    )
    st = wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    assert isinstance(st, dict)
    pids = [w["pid"] for w in st["workers"]]
    sessions = open_sessions(server.port, 20)
    try:
        for sock in sessions:
            recv_until(sock, b"Welcome to shardd.")

        def in_shell() -> bool:
            conns = status(server)["connections"]
            return len(conns) == 20 and all(c["state"] == "shell" for c in conns)

        wait_until(in_shell, 10, "20 sessions in their shell")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for n, sock in enumerate(sessions):
            text = read_to_eof(sock, timeout=graceful + 5)
            assert b"shutting down" in text, (n, text[-200:])
        code = server.proc.wait(graceful + 5)
        elapsed = time.monotonic() - started
    finally:
        for sock in sessions:
            sock.close()
    assert code == 0, server.log_text()
    assert elapsed < graceful, f"took {elapsed:.1f}s, graceful timeout {graceful}s"
    wait_until(lambda: all(gone(pid) for pid in pids), 5, "the workers to exit")
    assert "graceful stop" in server.log_text()
    assert "killing them" not in server.log_text()  # the workers ended on their own


def test_workers_exit_when_the_supervisor_is_killed(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo")
    st = wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    assert isinstance(st, dict)
    pids = [w["pid"] for w in st["workers"]]
    sessions = open_sessions(server.port, 4)
    try:
        server.proc.kill()
        server.proc.wait(5)
        wait_until(
            lambda: all(gone(pid) for pid in pids),
            5,
            "the orphaned workers to die (PR_SET_PDEATHSIG)",
        )
    finally:
        for sock in sessions:
            sock.close()


# -------------------------------------------------- 5. a stalled event loop


def test_stalled_worker_is_killed_and_replaced(serve: Any) -> None:
    server = serve(
        "--workers",
        "2",
        "--shell",
        "echo",
        "--worker-timeout",
        "1.5",
        "--stats-interval",
        "0.2",
        "--graceful-timeout",
        "2",
    )
    st = wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    assert isinstance(st, dict)
    victim = worker_of(st, 0)
    other = worker_of(st, 1)
    assert victim is not None and other is not None
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        server.wait_for_log(
            rf"shard 0: worker {victim['pid']} sent no heartbeat for [\d.]+s .*killing it", 10
        )

        def replaced() -> dict[str, Any] | None:
            now = status(server)
            w = worker_of(now, 0)
            return now if w is not None and w["pid"] != victim["pid"] else None

        now = wait_until(replaced, 10, "a new worker on shard 0")
        assert isinstance(now, dict)
    finally:
        if not gone(victim["pid"]):
            os.kill(victim["pid"], signal.SIGKILL)  # the supervisor reaps it
    w0, w1 = worker_of(now, 0), worker_of(now, 1)
    assert w0 is not None and w1 is not None
    assert w0["restarts"] == 1, w0
    assert w1["pid"] == other["pid"] and w1["restarts"] == 0, w1
    until_worker_accepts(server, 0, w0["pid"])
    wait_until(lambda: gone(victim["pid"]), 5, "the stalled worker to be reaped")
    server.wait_for_log(rf"shard 0: worker {victim['pid']} killed by signal 9")


# ------------------------------------------- 6. a shard that dies at start


def test_shard_dying_at_start_backs_off_then_gives_up(serve: Any, tmp_path: Path) -> None:
    # Every worker dies before it says hello, as with a broken shell or protocol
    # module (tests/shell_that_breaks_workers.py). Killing workers from outside as
    # they appear would not do: a worker says hello within milliseconds of its
    # fork, and the death of one that did is a crash, never a reason to give up.
    server = serve(
        "--workers",
        "2",
        "--shell",
        "tests.shell_that_breaks_workers:shell",
        env={"SHARDD_TEST_PROBED": str(tmp_path / "probed")},
    )
    code = server.proc.wait(30)
    text = server.log_text()
    assert code == 1, text
    giving_up = [line for line in text.splitlines() if "giving up" in line]
    assert len(giving_up) == 1, text
    (line,) = giving_up
    found = re.search(r"shard (\d): worker failed to start 5 times .*exited with status 3", line)
    assert " ERROR " in line and found, line
    shard = found[1]
    assert len(re.findall(rf"shard {shard}: worker \d+ exited with status 3", text)) == 5, text
    assert not re.search(r"worker \d+ serving", text), "a broken worker said hello"
    assert "Traceback" not in text, text
    assert "respawning in" not in text.split(line)[1], "respawned after giving up"
    started = [int(pid) for pid in re.findall(r"shard \d: worker (\d+) started", text)]
    wait_until(lambda: all(gone(pid) for pid in started), 5, "no worker left")
    delays = [float(d) for d in re.findall(rf"shard {shard}: respawning in ([\d.]+)s", text)]
    assert len(delays) == 4, text
    # backing off: each failed start waits longer before the next one
    assert all(a < b for a, b in itertools.pairwise(delays)), f"backoff does not grow: {delays}"


def test_serving_workers_killed_50_times_in_a_row_never_make_it_give_up(serve: Any) -> None:
    # Found in the field: workers killed soon after their start, though they were
    # serving, counted as failed starts, and a few attacks took the server down.
    server = serve("--workers", "2", "--shell", "echo")
    wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    killed: list[tuple[int, int]] = []  # (shard, pid), in order
    dead: set[int] = set()

    def new_serving_worker(shard: int) -> int | None:
        try:
            st = status(server)
        except control.ControlError:
            code = server.proc.wait(5)  # no answer: the supervisor is gone
            raise AssertionError(
                f"the supervisor exited with {code} after {len(killed)} kills:\n"
                + server.log_text()
            ) from None
        w = worker_of(st, shard)
        return w["pid"] if w is not None and w["pid"] not in dead else None

    for n in range(50):
        shard = n % 2
        pid = wait_until(
            functools.partial(new_serving_worker, shard),
            15,
            f"a new serving worker on shard {shard} before kill {n + 1}",
        )
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)  # as soon as it serves: the youngest a serving worker gets
        dead.add(pid)
        killed.append((shard, pid))

    final = wait_until(lambda: all_serving(server, 2), 15, "both shards serving again")
    assert isinstance(final, dict)
    assert not {w["pid"] for w in final["workers"]} & dead, final["workers"]
    for w in final["workers"]:
        assert w["restarts"] == 25, w
        until_worker_accepts(server, w["shard"], w["pid"])
    open_attempt(server.port).close()  # IAC DO TTYPE, the first bytes of a session
    assert server.proc.poll() is None
    for shard, pid in killed:
        server.wait_for_log(rf"shard {shard}: worker {pid} killed by signal 9")
    text = server.log_text()
    assert "giving up" not in text, text
    # none of them counted as a worker that could not start
    assert not re.search(r"shard \d: respawning in", text), text
    assert "Traceback" not in text, text


# ------------------------------------------------------ 7. SIGTTIN / SIGTTOU


def _title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


def test_ttin_adds_a_shard_and_ttou_removes_one(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo", "--stats-interval", "0.2")
    st = wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    assert isinstance(st, dict)
    before = {w["shard"]: w["pid"] for w in st["workers"]}

    server.proc.send_signal(signal.SIGTTIN)
    grown = wait_until(lambda: all_serving(server, 3), 15, "3 serving workers")
    assert isinstance(grown, dict)
    three = {w["shard"]: w["pid"] for w in grown["workers"]}
    assert {s: three[s] for s in before} == before  # the old shards were left alone
    for shard, pid in three.items():
        assert _title(pid) == WORKER_TITLE.format(shard, server.port), (shard, pid, _title(pid))
        assert psutil.Process(pid).ppid() == server.proc.pid
    until_worker_accepts(server, 2, three[2])

    server.proc.send_signal(signal.SIGTTOU)
    shrunk = wait_until(lambda: all_serving(server, 2), 15, "back to 2 serving workers")
    assert isinstance(shrunk, dict)
    assert {w["shard"]: w["pid"] for w in shrunk["workers"]} == before
    wait_until(lambda: gone(three[2]), 10, "the removed shard's worker to exit")
    for _ in range(50):  # the remaining shards still take every session
        attempt(server.port)


# ------------------------------------------------------------- 8. SIGQUIT


def test_sigquit_stops_fast(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "welcome", "--graceful-timeout", "30")
    st = wait_until(lambda: all_serving(server, 2), 15, "2 serving workers")
    assert isinstance(st, dict)
    pids = [w["pid"] for w in st["workers"]]
    sessions = open_sessions(server.port, 6)
    try:
        wait_until(lambda: len(status(server)["connections"]) == 6, 10, "6 sessions")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGQUIT)
        code = server.proc.wait(10)
        elapsed = time.monotonic() - started
        for sock in sessions:
            read_to_eof(sock, timeout=5)  # dropped, not kept open
    finally:
        for sock in sessions:
            sock.close()
    assert code == 0, server.log_text()
    assert elapsed < 3.0, f"fast stop took {elapsed:.2f}s"
    assert "killing them" not in server.log_text()  # the workers quit on their own
    wait_until(lambda: all(gone(pid) for pid in pids), 5, "the workers to exit")
    assert "fast stop" in server.log_text()
