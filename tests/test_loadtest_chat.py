"""``shardd loadtest chat`` and ``shout``: players of the talker, across shards.

No test here asserts a latency figure: this machine is shared. These check
that what the summary says adds up, that every line and the shout reach
every member, and that a lost message is caught.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, run_shardd, wait_until
from hypothesis import given
from hypothesis import strategies as st
from test_loadtest import assert_latencies, loadtest

from shardd.loadtest import report
from shardd.loadtest.chat import LOST, lines_of, room_members
from shardd.loadtest.talker_lines import (
    LINE_LIMIT,
    Joined,
    Prompt,
    Said,
    Shouted,
    TalkerLines,
    TooFast,
    Welcome,
)
from workers.bus.api import Message
from workers.talker import render

TALKER = ("--shell", "talker", "--workers", "2")


def _writes() -> list[bytes]:
    """What the talker writes to a player in line mode, in its own words, write by write."""
    said = render(Message("talker.room.r0", "1.2", _data("say", "u3", "r0", "m4/10")))
    shouted = render(Message("talker.shout", "1.3", _data("shout", "u7", "r2", "loud")))
    joined = render(Message("talker.room.r0", "1.4", _data("join", "u9", "r0", "")))
    # (the prompts' GA marks are telnet's: the client strips them before the parser)
    return [
        b"What is your name? ",
        b"Welcome, u1! You are in room lobby. Type help for commands.\r\n> ",
        b"\r\nYou are in room r0.\r\n> ",
        *(f"\r\n{line}\r\n> ".encode() for line in (said, shouted, joined)),
        b"\r\nYou are talking too fast.\r\n> ",
        b"\r\nYou are in room r0 already.\r\n> ",
    ]


def _transcript() -> bytes:
    return b"".join(_writes())


def _data(kind: str, name: str, room: str, text: str) -> dict[str, str]:
    return {"kind": kind, "name": name, "room": room, "text": text}


EXPECTED = [
    Prompt(name=True),
    Welcome("u1", "lobby"),
    Prompt(name=False),
    Joined("r0"),
    Prompt(name=False),
    Said("r0", "u3", 4, 10),
    Prompt(name=False),
    Shouted("u7", "loud"),
    Prompt(name=False),
    Prompt(name=False),  # "u9 joins r0." is nothing to a load test
    TooFast(),
    Prompt(name=False),
    Prompt(name=False),  # already there: no join
]


def test_the_talkers_own_lines_parse() -> None:
    lines = TalkerLines()
    assert [e for data in _writes() for e in lines.feed(data)] == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(_transcript())), max_size=30))
def test_any_split_of_the_output_gives_the_same_events(cuts: list[int]) -> None:
    data = _transcript()
    lines = TalkerLines()
    events = []
    edges = [0, *sorted(cuts), len(data)]
    for start, end in itertools.pairwise(edges):
        events += lines.feed(data[start:end])
    # a prompt is one only at the end of what arrived; every other event is the same
    assert [e for e in events if not isinstance(e, Prompt)] == [
        e for e in EXPECTED if not isinstance(e, Prompt)
    ]


@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_any_bytes_parse_without_error_and_within_bounds(chunks: list[bytes]) -> None:
    lines = TalkerLines()
    for chunk in chunks:
        for event in lines.feed(chunk):
            assert isinstance(event, Prompt | Welcome | Joined | Said | Shouted | TooFast)
        assert len(lines._tail) <= LINE_LIMIT


def test_a_line_without_end_is_cut_to_the_limit() -> None:
    lines = TalkerLines()
    assert lines.feed(b"x" * (3 * LINE_LIMIT)) == []
    assert lines.truncated == 1 and len(lines._tail) == LINE_LIMIT
    # what ends it still parses
    assert lines.feed(b"\r\n[r1] u2 says: m0/1\r\n") == [Said("r1", "u2", 0, 1)]


def test_rooms_and_schedules() -> None:
    # 45 players in rooms of 10: four full rooms, and five in the last
    assert [room_members(i, 45, 10) for i in (0, 9, 10, 39, 40, 44)] == [10, 10, 10, 10, 5, 5]
    # first lines spread over the first period; each says rate x duration, within one
    offsets = [lines_of(i, 40, 2.0, 3.0) for i in range(40)]
    assert offsets[0] == (0.0, 6) and all(0 <= o < 0.5 for o, _n in offsets)
    assert {n for _o, n in offsets} <= {5, 6}


# ------------------------------------------------------------ end to end


def _status(port: int) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(run_shardd("status", "--port", str(port), "--json").stdout)
    return status


def test_chat_over_two_shards_delivers_every_line_to_every_member(serve: Any) -> None:
    server = serve(*TALKER)
    sessions, room, rate, duration = 40, 10, 2.0, 3.0
    code, s = loadtest(
        "chat", "--port", str(server.port), "--sessions", str(sessions),
        "--room-size", str(room), "--rate", str(rate), "--duration", str(duration),
        "--procs", "2", timeout=120,
    )  # fmt: skip
    assert code == 0, s
    assert (s["scenario"], s["procs"], s["ready"], s["rooms"]) == ("chat", 2, 40, 4)
    # each player says rate x duration lines, within one
    assert abs(s["sent"] - sessions * rate * duration) <= sessions, s
    assert s["expected_receipts"] == s["sent"] * (room - 1)
    assert s["receipts"] == s["expected_receipts"] and s["delivered"] == s["sent"]
    assert (s["lost"], s["lost_pct"], s["rooms_with_losses"]) == (0, 0.0, 0)
    assert (s["duplicates"], s["out_of_order"], s["stray"]) == (0, 0, 0)
    assert s["receipts_per_s"] == pytest.approx(s["receipts"] / s["duration"], rel=1e-3)
    assert_latencies(s["latency_ms"])
    assert_latencies(s["login_ms"])
    assert s["failures"] == {} and s["passed"]
    # the players were spread over both shards
    assert sorted(w["accepted"] > 0 for w in _status(server.port)["workers"]) == [True, True]
    table = report.render({**s, "interrupted": False}, measured=True)
    assert "40 of 40 in 4 rooms of 10" in table and "0 lost (0%)" in table


def test_one_shout_reaches_every_player(serve: Any) -> None:
    server = serve(*TALKER)
    code, s = loadtest(
        "shout", "--port", str(server.port), "--sessions", "60", "--room-size", "7",
        "--procs", "2", timeout=120,
    )  # fmt: skip
    assert code == 0, s
    assert (s["ready"], s["shouted"], s["expected"], s["heard"]) == (60, True, 59, 59)
    assert s["last_ms"] > 0 and s["last_ms"] == s["heard_ms"]["max"]
    assert_latencies(s["heard_ms"])
    assert s["failures"] == {}


def test_a_worker_killed_mid_run_loses_messages_and_players(serve: Any) -> None:
    server = serve(*TALKER)
    sessions = 40
    run = subprocess.Popen(
        [sys.executable, "-m", "shardd", "loadtest", "chat", "--port", str(server.port),
         "--sessions", str(sessions), "--room-size", "10", "--rate", "2", "--duration", "8",
         "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # every player logged in: kill the worker with the most of them
        workers = wait_until(
            lambda: (
                (w := _status(server.port)["workers"])
                and sum(x["connections"] for x in w) == sessions
                and w
            ),
            timeout=60,
            what="every player connected",
        )
        assert isinstance(workers, list)
        victim = max(workers, key=lambda w: w["connections"])
        killed = victim["connections"]
        assert 0 < killed < sessions
        os.kill(victim["pid"], signal.SIGKILL)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 1, err
    s = json.loads(out)
    assert s["ready"] == sessions and not s["passed"]
    # the killed worker's players are failures of the chat phase...
    assert sum(s["failures_by_phase"]["chat"].values()) == killed
    # ...and the lines they did not hear are lost, each counted once
    assert 0 < s["lost"] <= s["sent"] and s["failures"][LOST] == s["lost"]
    assert s["failures_by_phase"]["delivery"] == {LOST: s["lost"]}
    assert s["receipts"] < s["expected_receipts"]
    assert 0 < s["rooms_with_losses"] <= s["rooms"]
    assert not math.isnan(s["lost_pct"]) and s["lost_pct"] > 0


def test_plan_checks_are_one_line_and_exit_2() -> None:
    for args, key in (
        (("--rate", "5"), "rate"),  # above the talker's allowance
        (("--rate", "0.1", "--duration", "3"), "duration"),  # no line to say
        (("--room-size", "0"), "room-size"),
        (("--host", "192.0.2.1"), "host"),  # loopback only
    ):
        result = run_shardd("loadtest", "chat", *args)
        assert result.returncode == 2, (args, result)
        assert result.stderr.count("\n") == 1 and key in result.stderr, (args, result.stderr)
