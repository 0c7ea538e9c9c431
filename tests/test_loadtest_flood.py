"""``shardd loadtest flood``: bystanders' round trips alone, then while clients flood commands.

No test here asserts a latency figure: this machine is shared, and what a
flood costs the bystanders is the benchmark's to measure (``shardd bench``'s
flood-p99). These check what the summary says and that it adds up.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import run_shardd
from test_loadtest import ECHO, assert_latencies, loadtest

from shardd.loadtest import report
from shardd.loadtest.flood import CHUNK_SIZE, flood_chunks
from workers.telnet.engine import DATA, Command, Subnegotiation, TelnetEngine
from workers.telnet.options import parse_naws
from workers.telnet.telopt import AYT, NAWS, NOP


def _flood(port: int, *args: str) -> tuple[int, dict[str, Any]]:
    return loadtest("flood", "--port", str(port), *args, timeout=60)


def _workers(port: int) -> list[dict[str, Any]]:
    status = json.loads(run_shardd("status", "--port", str(port), "--json").stdout)
    workers: list[dict[str, Any]] = status["workers"]
    return workers


def test_flood_chunks_are_whole_naws_ayt_and_nop_sequences() -> None:
    chunks = flood_chunks()
    assert chunks == flood_chunks()  # the same flood every run
    server = TelnetEngine("server")
    for chunk in chunks:
        assert len(chunk) >= CHUNK_SIZE
        assert server.receive(chunk) == b""  # nothing in-band
        assert server.parser_state == DATA  # each chunk ends between sequences
    events = server.take_events()
    kinds = {type(e) for e in events}
    assert kinds == {Command, Subnegotiation}
    assert {e.cmd for e in events if isinstance(e, Command)} == {AYT, NOP}
    sizes = [parse_naws(e.payload) for e in events if isinstance(e, Subnegotiation)]
    assert all(e.option == NAWS for e in events if isinstance(e, Subnegotiation))
    assert len(set(sizes)) > 100 and all(c >= 1 and r >= 1 for c, r in sizes)
    # a size with an IAC byte in it (255 columns) travels doubled, and parses back
    assert any(255 in (c, r) for c, r in sizes)


def test_flood_measures_both_phases_and_the_server_survives(serve: Any) -> None:
    server = serve("--workers", "1", *ECHO)
    before = _workers(server.port)
    code, s = _flood(
        server.port, "--sessions", "6", "--flooders", "4", "--duration", "0.5", "--procs", "2"
    )
    assert code == 0, s
    assert (s["scenario"], s["procs"], s["size"]) == ("flood", 2, 64)
    assert (s["sessions"], s["established"]) == (6, 6)
    assert (s["flooders"], s["flooding"], s["naws_negotiated"]) == (4, 4, 4)
    assert s["failures"] == {} and s["failures_total"] == 0 and s["passed"]
    for name in ("baseline", "flood"):
        phase = s[name]
        assert phase["duration"] > 0 and phase["round_trips"] > 0, (name, phase)
        assert phase["round_trips_per_s"] == pytest.approx(
            phase["round_trips"] / phase["duration"], rel=0.01
        )
        # every bystander still had its message in flight when the phase ended
        assert phase["unfinished"] == 6
        assert_latencies(phase["rtt_ms"])
    rise = s["flood"]["rtt_ms"]["p99"] - s["baseline"]["rtt_ms"]["p99"]
    assert s["p99_increase_ms"] == pytest.approx(rise, abs=0.002)
    assert s["flood_bytes_sent"] > 0 and s["flood_mb_per_s"] > 0
    assert s["flood_bytes_received"] > 0  # answers to AYT, read and dropped
    assert s["flooders_closed"] == 0
    assert s["sources"] == {"127.0.0.1": 10}
    # the same worker served it all
    assert [(w["pid"], w["restarts"]) for w in _workers(server.port)] == [
        (w["pid"], w["restarts"]) for w in before
    ]
    table = report.render(s, measured=True)
    for label in ("baseline rtt ms", "flood rtt ms", "p99 increase", "flooders", "bytes sent"):
        assert label in table


def test_a_flooder_the_server_closes_is_counted_and_no_failure(serve: Any) -> None:
    server = serve(*ECHO, "--protocol", "tests.protocols_for_tests:DropsFlooders")
    code, s = _flood(server.port, "--sessions", "3", "--flooders", "2", "--duration", "0.3")
    assert code == 0, s
    assert s["flooding"] == 2 and s["flooders_closed"] == 2
    assert s["failures"] == {}
    assert s["established"] == 3 and s["flood"]["round_trips"] > 0


def test_failures_are_told_apart_by_who_and_when(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:close_at_once")
    code, s = _flood(server.port, "--sessions", "3", "--flooders", "2", "--duration", "0.3")
    assert code == 1
    assert s["failures"] == {"closed by server": 5}
    assert s["failures_by_phase"] == {
        "negotiation": {"closed by server": 3},
        "flooder negotiation": {"closed by server": 2},
    }
    assert (s["established"], s["flooding"]) == (0, 0)


def test_a_bystander_stalled_in_the_baseline_is_a_failure_of_that_phase(serve: Any) -> None:
    server = serve("--shell", "tests.shells_for_tests:echo_once")
    # the stall check gives a session at least a second
    code, s = _flood(server.port, "--sessions", "2", "--flooders", "1", "--duration", "1.2")
    assert code == 1
    assert s["failures_by_phase"] == {"baseline": {"timeout": 2}}
    assert s["baseline"]["round_trips"] == 0 and s["baseline"]["unfinished"] == 2
    assert s["flood"]["round_trips"] == 0
