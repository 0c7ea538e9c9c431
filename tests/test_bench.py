"""``shardd bench``: every contender and scenario in one small run, and its flags."""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_shardd

from shardd.bench import CONTENDERS, SCENARIOS


def test_small_bench_reports_every_contender_scenario_and_ratio() -> None:
    result = run_shardd(
        "bench",
        "--rounds",
        "1",
        "--duration",
        "0.3",
        "--sessions",
        "20",
        "--connect-sessions",
        "60",
        "--idle-sessions",
        "100",
        "--json",
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert set(report["median"]) == set(CONTENDERS)
    for name, figures in report["median"].items():
        assert set(figures) == set(SCENARIOS), name
        for scenario, value in figures.items():
            if SCENARIOS[scenario].case.shell is not None and CONTENDERS[name].anchor:
                # the talker's chat: an anchor has no such shell, and no figure
                assert value is None, (name, scenario, value)
            elif scenario == "idle" and name == "uvloop-protocol":
                # a bare protocol's sessions can be smaller than RSS granularity
                assert value is not None and not math.isnan(value)
            else:
                assert value and value > 0, (name, scenario, value)
    # shardd against each anchor, and 2 workers against 1
    assert set(report["ratios"]["shardd-1w"]) == {"telnetlib3", "uvloop-streams", "uvloop-protocol"}
    assert "shardd-1w" in report["ratios"]["shardd-2w"]
    # TLS against plain, the same worker
    assert "shardd-1w" in report["ratios"]["shardd-1w-tls"]
    ratio = report["ratios"]["shardd-1w"]["telnetlib3"]["echo-1k"]
    expected = report["median"]["shardd-1w"]["echo-1k"] / report["median"]["telnetlib3"]["echo-1k"]
    assert ratio == pytest.approx(expected, rel=1e-2)
    balance = report["shard_balance"]["shardd-2w"]
    assert sum(balance["sessions"][0]) == 100 and len(balance["sessions"][0]) == 2
    assert report["machine"]["cpus"] >= 1
    # every run of the round is there, each from the load-test client's own summary
    # (the chat column only for shardd: the anchors serve no talker)
    anchors = sum(1 for c in CONTENDERS.values() if c.anchor)
    shells = sum(1 for s in SCENARIOS.values() if s.case.shell is not None)
    assert len(report["runs"]) == len(CONTENDERS) * len(SCENARIOS) - anchors * shells
    assert all(run["summary"]["failures_total"] == 0 for run in report["runs"])


def test_bench_table_names_the_ratios() -> None:
    result = run_shardd(
        "bench",
        "--rounds",
        "1",
        "--duration",
        "0.2",
        "--sessions",
        "10",
        "--contenders",
        "shardd-1w,uvloop-streams",
        "--scenarios",
        "echo-64,connect",
        "--connect-sessions",
        "30",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "shardd-1w ratios" in lines
    header = lines[lines.index("shardd-1w ratios") + 1]
    assert header.split() == ["against", "echo-64", "connect"]
    assert "idle" not in result.stdout


def test_bench_chat_column_is_shardds_alone() -> None:
    result = run_shardd(
        "bench", "--rounds", "1", "--duration", "1", "--contenders", "shardd-1w,uvloop-protocol",
        "--scenarios", "chat-p99", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "chat: 200 talker players in rooms of 20" in lines[1]
    header = next(line for line in lines if line.startswith("contender"))
    assert header.split() == ["contender", "chat-p99", "(ms)"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 1 :][:2]}
    assert float(rows["shardd-1w"][0]) > 0
    assert rows["uvloop-protocol"] == ["-"]  # no talker to measure


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--rounds", "0"], "rounds"),
        (["--duration", "nan"], "duration"),
        (["--contenders", "shardd-1w,nginx"], "nginx"),
        (["--scenarios", "echo-64,ping"], "ping"),
        (["--idle-sessions", "100000"], "idle-sessions"),
    ],
)
def test_bench_bad_flag_is_one_line_and_exit_2(args: list[str], word: str) -> None:
    result = run_shardd("bench", *args)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and word in lines[0], result.stderr
