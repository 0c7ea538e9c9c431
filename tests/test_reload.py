"""Reload (HUP, ``shardd reload``) against real ``shardd serve`` subprocesses.

A reload reads ``--config`` again (the flags still win), imports the shell
afresh in the new workers, and lets sessions on the old workers go on until
they end or ``--reload-timeout`` passes; a reload that cannot be done
changes nothing and says why.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from conftest import (
    ServerProcess,
    gone,
    peer_of,
    read_to_eof,
    read_until,
    run_shardd,
    start_session,
    wait_until,
)
from connect_loops import attempt_loops

from shardd import control

GOODBYE = b"The server is shutting down. Goodbye."

SHELL = """
async def shell(reader, writer):
    writer.write("{greeting}\\r\\n> ")
    while True:
        line = await reader.readline()
        if not line:
            return
        writer.write("{tag}: " + line.strip() + "\\r\\n> ")
"""


def write_shell(path: Path, greeting: str, tag: str) -> None:
    path.write_text(SHELL.format(greeting=greeting, tag=tag))


def status(server: ServerProcess) -> dict[str, Any]:
    return control.status(control.default_path(server.port))


def serving(
    server: ServerProcess, count: int, not_pids: frozenset[int] | set[int] = frozenset()
) -> dict[int, int]:
    """Wait until ``count`` shards each have a serving worker outside ``not_pids``:
    shard -> pid."""

    def ready() -> dict[int, int] | None:
        workers = [w for w in status(server)["workers"] if w["state"] == "serving"]
        found = {w["shard"]: w["pid"] for w in workers if w["pid"] not in not_pids}
        return found if len(found) == count == len(workers) else None

    found = wait_until(ready, 20, f"{count} serving workers")
    assert isinstance(found, dict)
    return found


def say(sock: socket.socket, text: str, expect: str) -> None:
    sock.sendall(text.encode() + b"\r\n")
    read_until(sock, expect.encode(), bytearray())


def reload(server: ServerProcess) -> Any:
    return run_shardd("reload", "--port", str(server.port), timeout=90)


# ------------------------------------------------------------ new code


def test_reload_imports_the_changed_shell_and_old_sessions_keep_theirs(
    serve: Any, tmp_path: Path
) -> None:
    write_shell(tmp_path / "reload_shell.py", "version one", "v1")
    # graceful-timeout 0: a drain bound by it (as before) would close the old session at once
    server = serve(
        "--workers", "2", "--shell", "reload_shell:shell", "--graceful-timeout", "0",
        "--stats-interval", "0.2", cwd=tmp_path,
    )  # fmt: skip
    old = serving(server, 2)
    old_sock, got = start_session(server.port)
    with old_sock:
        assert b"version one" in got
        say(old_sock, "a", "v1: a")

        # a longer file: the bytecode cache knows it changed even within the second
        write_shell(tmp_path / "reload_shell.py", "version two, longer", "v2")
        result = reload(server)
        assert result.returncode == 0, result
        assert result.stdout == (
            "shardd: reloaded: 2 shards serving new workers; "
            "1 session stays on old workers until they end or 86400 s\n"
        ), result
        new = serving(server, 2, not_pids=set(old.values()))

        for _ in range(4):  # whichever shard takes it
            new_sock, got = start_session(server.port)
            with new_sock:
                assert b"version two, longer" in got, got
                say(new_sock, "b", "v2: b")

        # the old session keeps its worker and its shell, past the graceful timeout
        say(old_sock, "c", "v1: c")
        st = status(server)
        (row,) = [c for c in st["connections"] if c["peer"] == peer_of(old_sock)]
        assert row["worker_pid"] in old.values(), row
        by_pid = {w["pid"]: w for w in st["workers"]}
        drainer = by_pid[row["worker_pid"]]
        assert drainer["state"] == "draining" and drainer["connections"] == 1, drainer
        assert 86000 < drainer["drain_left"] <= 86400, drainer
        assert {w["pid"] for w in st["workers"] if w["state"] == "serving"} == set(new.values())
    wait_until(lambda: gone(row["worker_pid"]), 15, "the old worker to leave with its session")
    assert server.wait_for_log(r"SIGHUP|reload: shell reload_shell:shell imports")


# ------------------------------------------------------ the config file


def test_reload_reads_the_config_again_and_the_flags_still_win(serve: Any, tmp_path: Path) -> None:
    config = tmp_path / "shardd.toml"
    config.write_text('shell = "welcome"\n')
    # the fixture's own flags include --max-sessions-per-ip 0
    server = serve("--workers", "2", "--config", str(config))
    old = serving(server, 2)
    sock, got = start_session(server.port)
    sock.close()
    assert b"Welcome to shardd." in got

    config.write_text('shell = "echo"\nidle-timeout = 1\nbacklog = 100\nmax-sessions-per-ip = 1\n')
    result = reload(server)
    assert result.returncode == 0, result
    assert result.stdout.startswith("shardd: reloaded: 2 shards serving new workers"), result
    serving(server, 2, not_pids=set(old.values()))
    server.wait_for_log(
        rf"WARNING .*reload: backlog changed 4096 -> 100 in {re.escape(str(config))}; "
        r"it needs a restart, keeping 4096"
    )
    # the file's shell and idle timeout; the flag's limit per address (none), not the file's 1
    first, _got = start_session(server.port, marker=b"")
    second, _got = start_session(server.port, marker=b"")
    with first, second:
        say(first, "ping", "ping")
        say(second, "pong", "pong")
        assert b"idle too long" in read_to_eof(first, timeout=15)
        assert b"idle too long" in read_to_eof(second, timeout=15)


def test_a_reload_that_cannot_be_done_changes_nothing_and_says_why(
    serve: Any, tmp_path: Path
) -> None:
    config = tmp_path / "shardd.toml"
    config.write_text('shell = "echo"\n')
    server = serve("--workers", "2", "--config", str(config), cwd=tmp_path)
    old = serving(server, 2)
    sock, _got = start_session(server.port, marker=b"")
    with sock:
        say(sock, "before", "before")

        config.write_text('shell = "echo"\nidle-timeout = "soon"\n')
        result = reload(server)
        assert result.returncode == 1, result
        assert result.stdout == "", result
        assert result.stderr == (
            f"shardd: reload failed: {config}: idle-timeout: must be a number of seconds, "
            "not 'soon'; the old workers keep serving\n"
        ), result
        server.wait_for_log(rf"ERROR .*reload failed: {re.escape(str(config))}: idle-timeout")

        (tmp_path / "broken_shell.py").write_text("raise RuntimeError('no database')\n")
        config.write_text('shell = "broken_shell:shell"\n')
        result = reload(server)
        assert result.returncode == 1, result
        (line,) = result.stderr.splitlines()
        assert line.startswith("shardd: reload failed: shell: shell 'broken_shell:shell'"), line
        assert "RuntimeError: no database" in line and "old workers keep serving" in line, line
        server.wait_for_log(r"ERROR .*reload failed: shell: .*RuntimeError: no database")

        assert serving(server, 2) == old  # the same workers, still serving
        say(sock, "after", "after")
        fresh, _got = start_session(server.port, marker=b"")
        with fresh:
            say(fresh, "fresh", "fresh")

        config.write_text('shell = "welcome"\n')
        result = reload(server)
        assert result.returncode == 0, result
        serving(server, 2, not_pids=set(old.values()))
    assert "Traceback" not in server.log_text()


# ------------------------------------------------------ the reload timeout


def test_reload_timeout_says_goodbye_to_old_sessions(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo", "--reload-timeout", "1")
    old = serving(server, 2)
    sock, _got = start_session(server.port, marker=b"")
    with sock:
        say(sock, "hello", "hello")
        result = reload(server)
        assert result.returncode == 0, result
        assert result.stdout.endswith("until they end or 1 s\n"), result
        assert GOODBYE in read_to_eof(sock, timeout=15)
    wait_until(lambda: all(gone(pid) for pid in old.values()), 15, "the old workers gone")
    fresh, _got = start_session(server.port, marker=b"")
    with fresh:
        say(fresh, "new", "new")


# ------------------------------------------- sessions kept, connects served


def test_two_reloads_keep_every_session_and_refuse_no_connection(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo", "--stats-interval", "0.2")
    first = serving(server, 2)
    sources = [f"127.0.0.{n}" for n in range(2, 6)]
    socks = [start_session(server.port, b"", sources[n % 4])[0] for n in range(40)]
    try:
        with attempt_loops(server.port, 2) as loops:
            wait_until(lambda: all(loop.ok >= 20 for loop in loops), 20, "the loops to run")
            result = reload(server)
            assert result.returncode == 0, result
            # and perhaps a few of the loops' connections: a loop closes its
            # connection and opens the next at once, and the old worker counts
            # the closed one until it has read its FIN
            kept = re.search(r"; (\d+) sessions stay on old workers", result.stdout)
            assert kept and 40 <= int(kept[1]) <= 50, result
            second = serving(server, 2, not_pids=set(first.values()))
            # a second generation while the first still drains: three per shard
            result = reload(server)
            assert result.returncode == 0, result
            kept = re.search(r"; (\d+) sessions stay on old workers", result.stdout)
            assert kept and 40 <= int(kept[1]) <= 50, result
            serving(server, 2, not_pids={*first.values(), *second.values()})
            at_reload = [loop.ok for loop in loops]
            wait_until(
                lambda: all(loop.ok >= n + 20 for loop, n in zip(loops, at_reload, strict=True)),
                20,
                "more attempts after the reloads",
            )
        failures = [f for loop in loops for f in loop.failures]
        assert not failures, failures[:5]
        # the second generation held no session: it is gone; the first drains its 40
        wait_until(lambda: all(gone(pid) for pid in second.values()), 15, "2nd generation gone")
        st = status(server)
        draining = [w for w in st["workers"] if w["state"] == "draining"]
        assert {w["pid"] for w in draining} == set(first.values()), st["workers"]
        assert sum(w["connections"] for w in draining) == 40, draining
        for n, sock in enumerate(socks):
            say(sock, f"still-{n}", f"still-{n}")
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: all(gone(pid) for pid in first.values()), 15, "1st generation gone")


def test_a_stop_during_a_drain_says_goodbye_to_old_sessions(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo")
    serving(server, 2)
    sock, _got = start_session(server.port, marker=b"")
    with sock:
        assert reload(server).returncode == 0
        server.proc.terminate()
        assert GOODBYE in read_to_eof(sock, timeout=15)
    assert server.proc.wait(15) == 0
