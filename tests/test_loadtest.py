"""``shardd loadtest``: every scenario against real servers, failure kinds, process split."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_shardd, wait_until

from shardd import cli
from shardd.loadtest.latencies import Latencies

ECHO = ("--shell", "echo")
PERCENTILE_KEYS = {"p50", "p90", "p99", "p99.9", "max"}


def loadtest(*args: str, timeout: float = 40.0) -> tuple[int, dict[str, Any]]:
    """Run ``shardd loadtest ... --json``: its exit status and summary."""
    result = run_shardd("loadtest", *args, "--json", timeout=timeout)
    assert result.stdout.count("\n") == 1, result  # one JSON object, nothing else
    return result.returncode, json.loads(result.stdout)


def assert_latencies(values: dict[str, Any]) -> None:
    assert set(values) == PERCENTILE_KEYS
    ordered = [values[k] for k in ("p50", "p90", "p99", "p99.9", "max")]
    assert all(isinstance(v, float) and v > 0 for v in ordered), values
    assert ordered == sorted(ordered), values


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


# ------------------------------------------------------------- scenarios


@pytest.mark.parametrize("shell", ["echo", "welcome"])
def test_connect_sets_up_every_session(serve: Any, shell: str) -> None:
    server = serve("--shell", shell)
    code, s = loadtest(
        "connect", "--port", str(server.port), "--sessions", "40", "--concurrency", "8"
    )
    assert code == 0, s
    assert (s["scenario"], s["sessions"], s["attempts"], s["setups"]) == ("connect", 40, 40, 40)
    assert s["failures"] == {} and s["failures_total"] == 0 and s["passed"]
    assert s["setups_per_s"] > 0
    assert_latencies(s["setup_ms"])
    assert s["sources"] == {"127.0.0.1": 40}


def test_echo_round_trips(serve: Any) -> None:
    server = serve(*ECHO)
    code, s = loadtest(
        "echo", "--port", str(server.port), "--sessions", "4", "--size", "700", "--duration", "0.5"
    )
    assert code == 0, s
    assert (s["sessions"], s["established"], s["size"]) == (4, 4, 700)
    assert s["failures"] == {}
    assert s["round_trips"] > 4
    assert s["round_trips_per_s"] == pytest.approx(s["round_trips"] / s["duration"], rel=0.01)
    assert s["mb_per_s"] > 0
    assert_latencies(s["rtt_ms"])


def test_idle_holds_sessions_and_reports_rss_per_session(serve: Any) -> None:
    server = serve("--workers", "1", *ECHO)
    status = json.loads(run_shardd("status", "--port", str(server.port), "--json").stdout)
    worker_pids = [w["pid"] for w in status["workers"]]
    code, s = loadtest(
        "idle",
        "--port",
        str(server.port),
        "--server-port",
        str(server.port),
        "--sessions",
        "60",
        "--concurrency",
        "20",
        "--duration",
        "0.3",
    )
    assert code == 0, s
    assert (s["sessions"], s["opened"], s["held"]) == (60, 60, 60)
    assert s["failures"] == {}
    assert_latencies(s["setup_ms"])
    rss = s["rss"]
    assert rss["pids"] == worker_pids
    assert rss["before_bytes"] > 0 and rss["holding_bytes"] > 0
    assert isinstance(rss["per_session_bytes"], int)
    assert rss["per_session_bytes"] == round(
        (rss["holding_bytes"] - rss["before_bytes"]) / s["held"]
    )


def test_idle_reads_rss_of_given_pids(serve: Any) -> None:
    server = serve(*ECHO)  # one process, no supervisor: its own pid
    code, s = loadtest(
        "idle",
        "--port",
        str(server.port),
        "--pids",
        str(server.proc.pid),
        "--sessions",
        "10",
        "--duration",
        "0.2",
    )
    assert code == 0, s
    assert s["held"] == 10
    assert s["rss"]["pids"] == [server.proc.pid] and s["rss"]["holding_bytes"] > 0


def test_idle_without_a_server_to_measure_is_refused_before_connecting(
    serve: Any, tmp_path: Path
) -> None:
    server = serve(*ECHO)
    result = run_shardd(
        "loadtest",
        "idle",
        "--port",
        str(server.port),
        "--control",  # no server answers there
        str(tmp_path / "nobody.sock"),
        "--sessions",
        "1",
    )
    assert result.returncode == 1
    assert "control socket" in result.stderr and result.stdout == ""


def test_idle_measures_a_single_process_through_its_control_socket(serve: Any) -> None:
    server = serve(*ECHO)  # --workers 0 has the control socket too
    code, s = loadtest(
        "idle", "--port", str(server.port), "--server-port", str(server.port), "--sessions", "2"
    )
    assert code == 0, s
    assert s["rss"]["pids"] == [server.proc.pid], s


def test_storm_arrivals_at_rate(serve: Any) -> None:
    server = serve(*ECHO)
    code, s = loadtest(
        "storm",
        "--port",
        str(server.port),
        "--rate",
        "40",
        "--duration",
        "0.5",
        "--hold-min",
        "0.05",
        "--hold-max",
        "0.15",
        "--seed",
        "7",
        "--max-sessions",
        "50",
    )
    assert code == 0, s
    # arrivals at 0, 1/40, ... while under 0.5 s
    assert (s["attempts"], s["successes"], s["skipped"]) == (20, 20, 0)
    assert s["failures"] == {} and s["seed"] == 7
    assert 1 <= s["peak_in_flight"] <= 20
    assert_latencies(s["setup_ms"])


def test_storm_skips_arrivals_beyond_max_sessions(serve: Any) -> None:
    server = serve(*ECHO)
    # ten arrivals within 0.45 s; the first is held 1 s, so the other nine find it there
    code, s = loadtest(
        "storm",
        "--port",
        str(server.port),
        "--rate",
        "20",
        "--duration",
        "0.5",
        "--hold-min",
        "1",
        "--hold-max",
        "1",
        "--max-sessions",
        "1",
    )
    assert code == 0, s
    assert (s["attempts"], s["successes"], s["skipped"], s["peak_in_flight"]) == (1, 1, 9, 1)


# ------------------------------------------------------- processes, sources


def test_procs_and_sources_split_and_merge(serve: Any) -> None:
    server = serve(*ECHO)
    code, s = loadtest(
        "connect",
        "--port",
        str(server.port),
        "--sessions",
        "31",
        "--concurrency",
        "6",
        "--procs",
        "3",
        "--source",
        "127.0.0.2,127.0.0.3",
    )
    assert code == 0, s
    assert s["procs"] == 3
    assert (s["attempts"], s["setups"], s["concurrency"]) == (31, 31, 6)
    assert s["setup_ms"]["max"] is not None
    # round-robin over every process's sockets: 16 and 15
    assert sorted(s["sources"].values()) == [15, 16]
    assert set(s["sources"]) == {"127.0.0.2", "127.0.0.3"}


def test_server_sees_peers_from_every_source(serve: Any) -> None:
    server = serve("--workers", "1", *ECHO)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardd",
            "loadtest",
            "idle",
            "--port",
            str(server.port),
            "--sessions",
            "10",
            "--duration",
            "60",
            "--procs",
            "2",
            "--source",
            "127.0.0.2,127.0.0.3",
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def peers() -> list[str]:
            reply = run_shardd("status", "--port", str(server.port), "--json")
            return [c["peer"] for c in json.loads(reply.stdout)["connections"]]

        seen = wait_until(
            lambda: len(peers()) == 10 and peers(), timeout=20, what="10 sessions in shardd status"
        )
        hosts = [peer.rsplit(":", 1)[0] for peer in seen]  # type: ignore[union-attr]
        assert sorted(hosts) == ["127.0.0.2"] * 5 + ["127.0.0.3"] * 5
        proc.send_signal(signal.SIGINT)  # ends the hold early, with a summary
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    s = json.loads(out)
    assert s["interrupted"] is True and s["procs"] == 2
    assert (s["opened"], s["held"], s["failures"]) == (10, 10, {})
    assert s["sources"] == {"127.0.0.2": 5, "127.0.0.3": 5}


# --------------------------------------------------------- failure kinds


def test_refused_fails_the_run_unless_allowed(dead_port: int) -> None:
    code, s = loadtest("connect", "--port", str(dead_port), "--sessions", "3")
    assert code == 1
    assert s["failures"] == {"refused": 3} and s["failures_total"] == 3
    assert s["failures_by_phase"] == {"connect": {"refused": 3}}
    assert (s["setups"], s["passed"]) == (0, False)

    code, s = loadtest(
        "connect", "--port", str(dead_port), "--sessions", "3", "--max-failures", "3"
    )
    assert code == 0
    assert s["failures"] == {"refused": 3} and s["passed"] is True


def test_corrupt_echo(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:upper_echo")
    code, s = loadtest("echo", "--port", str(server.port), "--sessions", "3", "--duration", "0.3")
    assert code == 1
    assert s["failures"] == {"corrupt echo": 3}
    assert s["established"] == 0 and s["round_trips"] == 0


def test_short_echo(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:half_echo")
    code, s = loadtest(
        "echo", "--port", str(server.port), "--sessions", "3", "--size", "200", "--duration", "0.3"
    )
    assert code == 1
    assert s["failures"] == {"short echo": 3}


def test_echo_that_stops_coming_back_is_a_timeout(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:echo_once")
    code, s = loadtest("echo", "--port", str(server.port), "--sessions", "2", "--duration", "1")
    assert code == 1
    assert s["established"] == 2 and s["round_trips"] == 0
    assert s["failures"] == {"timeout": 2}
    assert s["failures_by_phase"] == {"echo": {"timeout": 2}}


def test_closed_by_server(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:close_at_once")
    code, s = loadtest(
        "connect", "--port", str(server.port), "--sessions", "5", "--concurrency", "5"
    )
    assert code == 1
    assert s["failures"] == {"closed by server": 5}
    assert s["failures_by_phase"] == {"negotiation": {"closed by server": 5}}


def test_negotiation_timeout(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:silent")
    code, s = loadtest(
        "connect", "--port", str(server.port), "--sessions", "2", "--negotiation-timeout", "0.3"
    )
    assert code == 1
    assert s["failures"] == {"negotiation timeout": 2}


# ------------------------------------------------------------ bad values


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(["loadtest", *args])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


NOT_LOOPBACK = [
    ["connect", "--host", "10.1.2.3"],
    ["echo", "--source", "192.168.0.1"],
    ["idle", "--source", "127.0.0.2,192.168.0.1"],
]


@pytest.mark.parametrize("args", NOT_LOOPBACK, ids=" ".join)
def test_non_loopback_is_refused_before_any_socket(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a socket or a client process was created")

    monkeypatch.setattr(socket, "socket", forbidden)
    monkeypatch.setattr(os, "fork", forbidden)
    code, err = _main(args, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and "not a loopback address" in err, err


def test_non_loopback_from_the_command_line() -> None:
    for args in NOT_LOOPBACK[:2]:
        result = run_shardd("loadtest", *args, "--json", timeout=10)
        assert result.returncode == 2, result
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and "loopback" in result.stderr


BAD_VALUES = [
    (["connect", "--sessions", "0"], "sessions"),
    (["connect", "--concurrency", "many"], "concurrency"),
    (["echo", "--duration", "nan"], "duration"),
    (["echo", "--size", "0"], "size"),
    (["storm", "--rate", "-1"], "rate"),
    (["storm", "--hold-min", "3", "--hold-max", "1"], "hold-max"),
    (["connect", "--procs", "0"], "procs"),
    (["connect", "--port", "70000"], "port"),
    (["connect", "--size", "10"], "size"),
    (["echo", "--server-port", "6023"], "server-port"),
    (["idle", "--pids", "12,x"], "pids"),
    (["idle", "--server-port", "1", "--pids", "1"], "pids"),
    (["connect", "--negotiation-timeout", "0"], "negotiation-timeout"),
    (["connect", "--max-failures", "-1"], "max-failures"),
    (["connect", "--source", "::1"], "source"),
    (["idle", "--sessions", "100000"], "procs"),
    (["nosuch"], "scenario"),
    (["hostile", "--kinds", "sb,nosuch"], "kinds"),
    (["hostile", "--kinds", ""], "kinds"),
    (["hostile", "--inputs", "0"], "inputs"),
    (["hostile", "--bystanders", "0"], "bystanders"),
    (["hostile", "--seed", "-1"], "seed"),
    (["hostile", "--duration", "0"], "duration"),
    (["hostile", "--pids", "1"], "pids"),
    (["connect", "--kinds", "sb"], "kinds"),
    (["flood", "--flooders", "0"], "flooders"),
    (["flood", "--flooders", "many"], "flooders"),
    (["flood", "--sessions", "0"], "sessions"),
    (["flood", "--size", "0"], "size"),
    (["flood", "--duration", "inf"], "duration"),
    (["flood", "--server-port", "6023"], "server-port"),
    (["echo", "--flooders", "2"], "flooders"),
    (["connect", "--verify"], "verify"),
    (["idle", "--verify"], "verify"),
    (["idle", "--settle", "5"], "settle"),
    (["echo", "--verify", "--server-port", "6023", "--settle", "-1"], "settle"),
    (["echo", "--control", "/tmp/x.sock"], "control"),
]


@pytest.mark.parametrize(("args", "word"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_value_is_one_line_and_exit_2(
    args: list[str],
    word: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("a client process was started"))
    code, err = _main(args, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and word in err, err


# ------------------------------------------------------------- latencies


def test_latencies_merge_like_one_histogram() -> None:
    rng = random.Random(3)
    samples = [rng.lognormvariate(-7, 1) for _ in range(20_000)]
    whole, parts = Latencies(), [Latencies() for _ in range(3)]
    for i, value in enumerate(samples):
        whole.add(value)
        parts[i % 3].add(value)
    merged = Latencies()
    for part in parts:
        merged.merge(Latencies.from_wire(part.to_wire()))
    ordered = sorted(samples)
    assert merged.count == len(samples)
    for q in (50, 90, 99, 99.9):
        exact = ordered[math.ceil(q / 100 * len(ordered)) - 1]
        assert merged.percentile(q) == whole.percentile(q)
        assert merged.percentile(q) == pytest.approx(exact, rel=0.005)
    assert merged.percentile(100) == max(samples)
    assert Latencies().percentile(50) is None
