"""The supervisor's view of every session is exact, converges, and answers at scale.

A worker whose channel to the supervisor fills up waits to send the rest of
its report, and never counts an entry as reported before it is written:
``SHARDD_IPC_SNDBUF`` shrinks the channel so that it pauses all the time, and
``shardd loadtest idle --verify`` compares every session's reported bytes,
terminal and window size with what its client sent and saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, ServerProcess, connect, read_until, wait_until

from shardd import control

SESSIONS = 10_000
SOURCES = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"


@pytest.fixture
def paused_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--workers", "2", "--shell", "echo", env={"SHARDD_IPC_SNDBUF": "4096"})
    yield server
    server.stop()


def test_every_session_matches_its_client_with_the_channel_paused(
    paused_server: ServerProcess,
) -> None:
    port = str(paused_server.port)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardd",
            "loadtest",
            "idle",
            "--port",
            port,
            "--sessions",
            str(SESSIONS),
            "--concurrency",
            "200",
            "--procs",
            "2",
            "--source",
            SOURCES,
            "--duration",
            "1",
            "--server-port",
            port,
            "--verify",
            "--settle",
            "30",
            "--negotiation-timeout",
            "60",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(result.stdout)
    verify = summary["verify"]
    assert verify["disagree"] == 0, verify
    assert result.returncode == 0, (summary, result.stderr)
    assert summary["held"] == SESSIONS
    assert verify["sessions"] == SESSIONS
    assert verify["error"] is None
    # the channel did pause: the path under test was taken, and status shows it
    status = control.status(control.default_path(paused_server.port))
    assert all(w["ipc_pauses"] > 0 for w in status["workers"]), status["workers"]
    assert status["supervisor"]["ipc_pauses"] == sum(w["ipc_pauses"] for w in status["workers"])


def test_a_changed_session_after_its_last_report_is_still_reported(
    paused_server: ServerProcess,
) -> None:
    """Bytes a session moved after a report reach status without any further activity."""
    with connect(paused_server.port) as sock:
        sock.sendall(b"x" * 5000)
        read_until(sock, b"x" * 5000, bytearray())

        def counted() -> dict[str, Any] | None:
            conns = control.status(control.default_path(paused_server.port))["connections"]
            return conns[0] if conns and conns[0]["rx_bytes"] >= 5000 else None

        conn: Any = wait_until(counted, 10, "the session's bytes in status")
        assert conn["state"] == "shell"
        assert conn["tx_bytes"] >= 5000


def test_cpu_percent_is_the_same_for_overlapping_requests() -> None:
    """Every request reads the supervisor's sample of the last window: two at once
    both see a busy worker as busy (psutil's per-call figure gave one of them ~0)."""
    server = ServerProcess("--workers", "1", "--shell", "tests.shells_for_tests:spin")
    try:
        path = control.default_path(server.port)
        with connect(server.port) as sock:
            read_until(sock, b"spinning", bytearray())

            def busy() -> float | None:
                cpu = control.status(path)["workers"][0]["cpu_percent"]
                return cpu if cpu is not None and cpu > 20 else None

            wait_until(busy, 15, "the spinning worker's CPU share")
            figures: list[float] = []

            def ask() -> None:
                figures.append(control.status(path)["workers"][0]["cpu_percent"])

            threads = [threading.Thread(target=ask) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert len(figures) == 8
            assert all(figure > 20 for figure in figures), figures
    finally:
        server.stop()
