"""``shardd loadtest hostile``: its inputs (pure), and runs against a real ``shardd serve``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, run_shardd, wait_until
from test_loadtest import assert_latencies, loadtest

from shardd.loadtest import report
from shardd.loadtest.hostile_inputs import (
    CODEC_ROUTES,
    CODECS,
    KINDS,
    MAX_INPUT_BYTES,
    MAX_SESSION_BYTES,
    RESYNC,
    Planned,
    attack,
    check_kinds,
    choose_codec,
    schedule,
)
from workers.server import TelnetServer
from workers.telnet import options
from workers.telnet.engine import DATA, Command, Subnegotiation, TelnetEngine
from workers.telnet.telopt import (
    AYT,
    CHARSET,
    CHARSET_ACCEPTED,
    CHARSET_REQUEST,
    DO,
    IAC,
    NEW_ENVIRON,
    TM,
    WILL,
)

PROBED = [k.name for k in KINDS.values() if k.probes]
# The server survives every kind. Before the hardening, four did not: iac (a log
# line per IAC stalled a worker for seconds), codec and binary (sessions ended
# with a traceback), close (workers killed by SIGPIPE).
SURVIVED = "random,iac,sb,ttype,environ,charset,codec,naws,binary,close,reset,never-read,silent"


def _server_engine() -> TelnetEngine:
    return TelnetEngine(
        "server",
        accept_local=TelnetServer.accept_local,
        accept_remote=TelnetServer.accept_remote,
    )


def _forced(kind: str, number: int, inputs: int | None = None) -> Any:
    """Session ``number``'s attack, of ``kind``, with ``inputs`` (default: its most)."""
    n = KINDS[kind].max_inputs if inputs is None else inputs
    return attack(number, Planned(number, kind, n), (kind,))


# ------------------------------------------------------------- the inputs


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_bounded_in_bytes(kind: str) -> None:
    for number in range(12):
        chunks = _forced(kind, number).chunks
        assert len(chunks) == KINDS[kind].max_inputs
        assert all(0 < len(c) <= MAX_INPUT_BYTES for c in chunks)
        assert sum(map(len, chunks)) <= MAX_SESSION_BYTES


@pytest.mark.parametrize("kind", PROBED)
def test_only_the_probe_is_answered_with_a_timing_mark(kind: str) -> None:
    """Whatever an attack leaves open, RESYNC and DO TM get the probe's answer, and only it."""
    for number in range(8):
        engine = _server_engine()
        for chunk in _forced(kind, number).chunks:
            engine.receive(chunk)
            assert not any(isinstance(e, Command) and e.cmd == AYT for e in engine.take_events())
            assert bytes((IAC, WILL, TM)) not in engine.data_to_send()
        engine.receive(RESYNC + bytes((IAC, DO, TM)))
        assert engine.parser_state == DATA
        assert engine.data_to_send().endswith(bytes((IAC, WILL, TM)))


def test_codec_routes_make_the_server_see_the_codec() -> None:
    for codec in CODECS:
        for route in CODEC_ROUTES:
            engine = _server_engine()
            engine.receive(choose_codec(codec, route, random.Random(0)))
            (sb,) = [e for e in engine.take_events() if isinstance(e, Subnegotiation)]
            if route == "lang":
                assert sb.option == NEW_ENVIRON
                _verb, items = options.parse_environ(sb.payload)
                (lang,) = [value for _kind, name, value in items if name == "LANG"]
                assert options.lang_charset(str(lang)) == codec
            else:
                verb = CHARSET_ACCEPTED if route == "accepted" else CHARSET_REQUEST
                assert (sb.option, options.parse_charset(sb.payload)) == (CHARSET, (verb, [codec]))


def test_schedule_spends_the_inputs_the_same_way_every_time() -> None:
    kinds = tuple(KINDS)
    planned = list(schedule(7, 500, 3000, kinds))
    assert planned == list(schedule(7, 500, 3000, kinds))
    assert planned != list(schedule(8, 500, 3000, kinds))
    assert sum(p.inputs for p in planned) == 3000
    assert [p.number for p in planned] == list(range(len(planned)))
    assert all(p.inputs >= 1 for p in planned if KINDS[p.kind].max_inputs)
    # fewer inputs wanted than allowed: every session runs, with what it drew
    few = list(schedule(7, 5, 10**6, kinds))
    assert len(few) == 5 and sum(p.inputs for p in few) == sum(p.inputs for p in planned[:5])


def test_check_kinds() -> None:
    assert check_kinds("all") == tuple(KINDS)
    assert check_kinds("naws, sb") == ("sb", "naws")
    with pytest.raises(ValueError, match="unknown kind 'nosuch'"):
        check_kinds("sb,nosuch")


# --------------------------------------------------- against a real server


def _status(port: int) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(run_shardd("status", "--port", str(port), "--json").stdout)
    return reply


def _hostile(port: int, *args: str) -> tuple[int, dict[str, Any]]:
    return loadtest("hostile", "--port", str(port), "--server-port", str(port), *args, timeout=120)


@pytest.mark.parametrize("shell", ["welcome", "echo"])
def test_survivable_kinds_are_survived(serve: Any, shell: str) -> None:
    """Every kind, against the welcome shell and the echo shell, which never speaks
    first and writes back what it was sent, in the encoding of the other direction."""
    server = serve("--workers", "2", "--shell", shell)
    code, s = _hostile(
        server.port,
        "--kinds",
        SURVIVED,
        "--sessions",
        "60",
        "--inputs",
        "600",
        "--concurrency",
        "12",
        "--procs",
        "2",
        "--seed",
        "3",
    )
    assert code == 0, s
    assert s["failures"] == {} and s["passed"]
    assert (s["ended_unexpectedly"], s["unresponsive"]) == (0, 0)
    assert s["kinds"] == SURVIVED.split(",")
    assert s["inputs"] == sum(s["inputs_by_kind"].values()) == s["inputs_planned"] == 600
    assert s["sessions_run"] == sum(s["sessions_by_kind"].values()) <= 60
    assert set(s["sessions_by_kind"]) <= set(s["kinds"])
    probed = sum(n for k, n in s["sessions_by_kind"].items() if KINDS[k].probes)
    assert s["survived"] == sum(s["survived_by_kind"].values()) == probed
    assert s["bytes_sent"] > 600
    assert s["bystanders"] == 2 and s["bystander_probes"] >= 2
    assert_latencies(s["bystander_rtt_ms"])
    workers = s["workers"]
    assert workers["restarts"] == 0
    assert workers["rss_before_bytes"] > 0 and workers["rss_after_bytes"] > 0
    assert [w["pid"] for w in workers["before"]] == [w["pid"] for w in workers["after"]]
    table = report.render(s, measured=True)
    for label in ("ended unexpectedly", "bystanders", "worker restarts", "worker rss"):
        assert label in table


def test_same_seed_same_inputs_however_split(serve: Any) -> None:
    server = serve("--workers", "2")
    args = ("--kinds", SURVIVED, "--sessions", "40", "--inputs", "300", "--seed", "11")
    runs = [_hostile(server.port, *args, "--procs", procs) for procs in ("1", "3")]
    (code1, one), (code3, three) = runs
    assert (code1, code3) == (0, 0), runs
    assert three["procs"] == 3
    assert one["inputs_by_kind"] == three["inputs_by_kind"]
    assert one["sessions_by_kind"] == three["sessions_by_kind"]
    assert one["inputs"] == three["inputs"] == 300


def test_a_worker_lost_during_the_run_fails_it(serve: Any) -> None:
    server = serve("--workers", "2")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardd",
            "loadtest",
            "hostile",
            "--port",
            str(server.port),
            "--server-port",
            str(server.port),
            "--kinds",
            "sb,ttype,charset,silent",
            "--sessions",
            "100000",
            "--inputs",
            "100000000",
            "--duration",
            "4",
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the bystanders connect before the first attack, and stay to the end
        status = wait_until(
            lambda: (lambda s: s["connections"] and s)(_status(server.port)),
            timeout=30,
            what="the run's sessions in shardd status",
        )
        victim = status["workers"][0]["pid"]  # type: ignore[index]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    s = json.loads(out)
    workers = s["workers"]
    assert workers["restarts"] >= 1
    assert s["failures"]["worker restart"] == workers["restarts"]
    assert s["failures_by_phase"]["server"]["worker restart"] == workers["restarts"]
    assert victim in [w["pid"] for w in workers["before"]]
    assert victim not in [w["pid"] for w in workers["after"]]
    assert not s["passed"]
