"""The operator's smaller points on a supervised server: refusals that say so,
signals nobody acts on, a port another process serves, process titles, counts
in good grammar, and a load test that leaves no client behind on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
from conftest import ROOT, ServerProcess, run_shardd, wait_until

from shardd import status_view
from workers.plural import count


def status(server: ServerProcess) -> dict[str, Any]:
    result = run_shardd("status", "--port", str(server.port), "--json")
    assert result.returncode == 0, (result, server.log_text())
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def serving(server: ServerProcess, workers: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        reply = status(server)
        states = [w["state"] for w in reply["workers"]]
        return reply if states == ["serving"] * workers else None

    reply = wait_until(ready, 30, f"{workers} serving workers")
    assert isinstance(reply, dict)
    return reply


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert result.stdout == "", result
    (line,) = result.stderr.splitlines()
    assert "Traceback" not in line
    return line


# ------------------------------------------------------------------ grammar


def test_counts_are_singular_for_one() -> None:
    assert count(1, "session") == "1 session"
    assert count(2, "session") == "2 sessions"
    assert count(0, "shard") == "0 shards"
    assert count(1, "process", "processes") == "1 process"
    assert count(3, "process", "processes") == "3 processes"
    events = {"protocol_errors": 1, "shell_errors": 1, "gmcp_dropped": 1}
    sup = {
        "pid": 1,
        "uptime": 1.0,
        "listen": ["127.0.0.1:6023"],
        "workers": 1,
        **events,
        "tls_handshake_failures": {"timeout": 1},
    }
    text = status_view.render({"supervisor": sup, "workers": [], "connections": []})
    assert "6023, 1 shard\n" in text, text
    for phrase in ("1 protocol error;", "1 shell error", "1 GMCP message ", "1 TLS handshake "):
        assert phrase in text, (phrase, text)


# --------------------------------------------------------- shards refused


def test_workers_below_one_shard_fails_and_says_so(serve: Any) -> None:
    server = serve("--workers", "1", "--shell", "echo")
    serving(server, 1)
    line = one_error_line(run_shardd("workers", "-1", "--port", str(server.port)))
    assert line == (
        "shardd: cannot remove 1 shard: a server keeps at least one shard; 0 removed, now 1 shard"
    )
    line = one_error_line(run_shardd("workers", "-3", "--port", str(server.port)))
    assert line.startswith("shardd: cannot remove 3 shards: "), line
    assert len(status(server)["workers"]) == 1
    added = run_shardd("workers", "+1", "--port", str(server.port))
    assert added.returncode == 0 and added.stdout == "shardd: 2 shards\n", added


def test_workers_past_what_the_server_can_add_fails_and_says_how_far_it_went(
    serve: Any,
) -> None:
    """Out of file descriptors part way: the shards added serve, the rest is a
    failure the operator reads (the shared table's rows run out the same way,
    but only past 60 shards on a one-shard server)."""
    server = serve("--workers", "1", "--shell", "echo", nofile=64)
    serving(server, 1)
    result = run_shardd("workers", "+40", "--port", str(server.port))
    line = one_error_line(result)
    match = re.fullmatch(
        r"shardd: cannot add 40 shards: cannot (?:listen on one more socket|start a worker): "
        r"Too many open files; (\d+) added, now (\d+) shards",
        line,
    )
    assert match, line
    added, now = int(match.group(1)), int(match.group(2))
    assert 0 < added < 40 and now == added + 1, line
    server.wait_for_log(r"ERROR .*cannot (listen on one more socket|start a worker)")
    serving(server, now)  # every shard added serves
    assert server.proc.poll() is None
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()


# --------------------------------------------------------- signals nobody acts on


def test_supervisor_logs_an_unhandled_signal_once_and_serves_on(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo")
    before = {w["pid"] for w in serving(server, 2)["workers"]}
    for signum in (signal.SIGUSR2, signal.SIGUSR2, signal.SIGPROF, signal.SIGALRM):
        server.proc.send_signal(signum)
    server.wait_for_log(r"SIGALRM ignored: shardd has no action for it")
    for pid in before:  # a `pkill -USR2 shardd` reaches the workers too: they ignore it
        psutil.Process(pid).send_signal(signal.SIGUSR2)
    after = serving(server, 2)
    assert {w["pid"] for w in after["workers"]} == before
    assert all(w["restarts"] == 0 for w in after["workers"]), after["workers"]
    text = server.log_text()
    assert text.count("SIGUSR2 ignored") == 1, text
    assert "SIGPROF ignored: shardd has no action for it" in text
    assert server.stop() == 0


# --------------------------------------------------------- a port already served


def test_a_port_another_server_serves_is_refused_unless_shared(serve: Any, tmp_path: Path) -> None:
    first = serve("--workers", "1", "--shell", "echo")
    serving(first, 1)
    port = str(first.port)
    for workers in ("1", "0"):
        result = run_shardd(
            "serve", "--host", "127.0.0.1", "--port", port, "--workers", workers,
            "--control", str(tmp_path / f"second-{workers}.sock"),
        )  # fmt: skip
        line = one_error_line(result)
        assert line == (
            f"shardd: cannot listen on 127.0.0.1:{port}: port {port} is already in use "
            "by another process (--share-port to share it)"
        ), line
    second = serve(
        "--workers", "1", "--port", port, "--share-port",
        "--control", str(tmp_path / "shared.sock"),
    )  # fmt: skip
    assert second.port == first.port
    assert second.stop() == 0
    assert first.proc.poll() is None


def test_a_tls_port_another_process_serves_is_refused(serve: Any, tmp_path: Path) -> None:
    taken = serve("--workers", "1", "--shell", "echo")
    serving(taken, 1)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    result = run_shardd(
        "serve", "--host", "127.0.0.1", "--port", "0", "--workers", "1",
        "--tls-port", str(taken.port), "--certfile", str(tmp_path / "cert.pem"),
        "--keyfile", str(tmp_path / "key.pem"), "--control", str(tmp_path / "c.sock"),
    )  # fmt: skip
    line = one_error_line(result)
    assert f"port {taken.port} is already in use by another process" in line, line


# ------------------------------------------------------------- process titles


def _title(pid: int) -> str:
    return psutil.Process(pid).cmdline()[0]


def test_ps_shows_each_process_role_and_address(serve: Any) -> None:
    server = serve("--workers", "2", "--shell", "echo")
    workers = serving(server, 2)["workers"]
    assert _title(server.proc.pid) == f"shardd: supervisor 127.0.0.1:{server.port}"
    for worker in workers:
        expected = f"shardd: worker shard {worker['shard']} 127.0.0.1:{server.port}"
        assert _title(worker["pid"]) == expected


# ------------------------------------------------------ a load test's clients


def test_sigterm_to_a_loadtest_ends_every_client_process(serve: Any) -> None:
    server = serve("--workers", "1", "--shell", "echo")
    serving(server, 1)
    parent = subprocess.Popen(
        [sys.executable, "-m", "shardd", "loadtest", "echo", "--port", str(server.port),
         "--sessions", "4", "--procs", "2", "--duration", "60", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        me = psutil.Process(parent.pid)
        clients = wait_until(lambda: len(c := me.children()) == 2 and c, 20, "2 client processes")
        assert isinstance(clients, list)
        wait_until(
            lambda: all(_title(c.pid).startswith("shardd: loadtest client ") for c in clients),
            20,
            "the clients' titles",
        )
        wait_until(lambda: len(status(server)["connections"]) == 4, 20, "4 sessions")
        parent.send_signal(signal.SIGTERM)
        out, err = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
    _gone, alive = psutil.wait_procs(clients, timeout=10)
    assert not alive, alive
    summary = json.loads(out)
    assert summary["interrupted"] is True, summary
    assert "Traceback" not in err, err
