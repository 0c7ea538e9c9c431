"""End-to-end: MUD clients (TinTin++, TinyFugue) and the other terminal clients
(busybox telnet, plink, telnet-ssl, ...) against a real ``shardd serve``.

Each client runs as its own program in a pty, as a player would run it, and
is driven through its own command line (``tt++ -e``, what is typed). The
server runs the ``report`` test shell, which copies what the server saw to a
file (clients wrap and redraw what they show). Servers wait
``connect_maxwait`` 30 s: a shell that waited on an unanswered option would
start after every deadline here has passed. Every wait has a deadline;
nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import ServerProcess, run_shardd, wait_until

REPORT_SHELL = "tests.shells_for_tests:report"
MAXWAIT = 30.0
TIMEOUT = 10
# the start of a line as a client draws it: CR LF, then perhaps colour or
# cursor sequences
_LINE_START = re.compile(r"\r\n(?:\x1b\[[0-9;?]*[A-Za-z])*$")
UTF8_LINE = "h\u00e9llo \u2713 \u65e5\u672c"


class Player:
    """A MUD client in a pty against a ``report`` shell, and what the server saw."""

    def __init__(self, server: ServerProcess, command: list[str], home: Path, reports: Path):
        self.server = server
        self.reports = reports
        self.child = pexpect.spawn(
            command[0],
            command[1:],
            cwd=str(home),
            env={**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8", "HOME": str(home)},
            dimensions=(24, 80),
            timeout=TIMEOUT,
            encoding="utf-8",
            codec_errors="replace",
        )

    def report(self, n: int) -> dict[str, Any]:
        """The ``n``-th report of the session (1: the one at its start)."""

        def written() -> list[str]:
            return self.reports.read_text().splitlines() if self.reports.exists() else []

        wait_until(lambda: len(written()) >= n, TIMEOUT, f"report {n}")
        return dict(json.loads(written()[n - 1]))

    def type(self, line: str) -> None:
        """A line typed into the client's input line, and Enter."""
        self.child.send(line + "\r")

    def news_starts_a_line(self) -> None:
        """After ``wait``: the news that follows a prompt is drawn on a line of its own."""
        self.type("wait")
        self.child.expect(r"([\s\S])A bird sings\.")
        drawn = self.child.before + self.child.match.group(1)
        assert _LINE_START.search(drawn), repr(drawn[-60:])

    def close(self) -> None:
        self.child.close(force=True)


def _installed(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/games"]))
    assert found, f"{name} is not installed (deploy/install.sh --test installs it)"
    return found


# how each client is started against a port
CLIENTS = {
    "tintin": lambda port: [_installed("tt++"), "-e", f"#session s 127.0.0.1 {port}"],
    "tf": lambda port: [shutil.which("tf5") or _installed("tf"), "-f", "127.0.0.1", str(port)],
    "inetutils-telnet": lambda port: [_installed("telnet"), "127.0.0.1", str(port)],
    "busybox-telnet": lambda port: [_installed("busybox"), "telnet", "127.0.0.1", str(port)],
    "plink": lambda port: [_installed("plink"), "-telnet", "-P", str(port), "127.0.0.1"],
    "telnet-ssl": lambda port: [_installed("telnet-ssl"), "127.0.0.1", str(port)],
    "telnetlib3-client": lambda port: [
        str(Path(sys.executable).parent / "telnetlib3-client"),
        "127.0.0.1",
        str(port),
    ],
}


@pytest.fixture
def play(serve, tmp_path, monkeypatch) -> Iterator[Any]:
    """``play(client)``: a ``report`` shell server and that client connected to it."""
    reports = tmp_path / "reports.jsonl"
    monkeypatch.setenv("SHARDD_REPORT_FILE", str(reports))
    players: list[Player] = []

    def start(client: str, *args: str) -> Player:
        server = serve(
            "--shell",
            REPORT_SHELL,
            "--connect-maxwait",
            str(MAXWAIT),
            "--log-level",
            "debug",
            *args,
        )
        player = Player(server, CLIENTS[client](server.port), tmp_path, reports)
        players.append(player)
        return player

    yield start
    for player in players:
        player.close()


# ----------------------------------------------------------------- TinTin++


def test_tintin_reaches_its_shell_without_waiting_and_is_known(play) -> None:
    tintin = play("tintin")
    seen = tintin.report(1)  # within TIMEOUT, a third of connect_maxwait
    assert seen["shell_started_after"] < MAXWAIT / 3, seen
    # MTTS: TinTin++'s TTYPE cycle is TINTIN++, the terminal, MTTS 271
    assert seen["ttype1"] == "TINTIN++"
    assert seen["TERM"] == seen["term"] == "xterm-256color"
    assert seen["client_name"] == "TinTin++"  # NEW-ENVIRON CLIENT_NAME (MNES) wins
    assert seen["mtts"] == 271  # ANSI, VT100, UTF-8, 256 colours, truecolour
    # UTF-8 both ways, though TinTin++ never agrees to BINARY
    assert seen["writer_encoding"] == seen["reader_encoding"] == "UTF-8"
    # line mode: the server claims neither ECHO nor SGA; prompts are marked with EOR
    assert (seen["server_echo"], seen["server_sga"], seen["eor"]) == (False, False, True)
    assert "negotiation incomplete" not in tintin.server.log_text()


def test_tintin_compresses_both_ways_with_compression_on(play) -> None:
    """TinTin++ agrees to MCCP2 and MCCP3: what it is sent and what is typed
    into it cross compressed, and nothing else changes."""
    tintin = play("tintin", "--compression")
    seen = tintin.report(1)
    assert seen["shell_started_after"] < MAXWAIT / 3, seen
    tintin.type(UTF8_LINE)
    tintin.child.expect(f"You said: {UTF8_LINE}")
    tintin.type("report")
    seen = tintin.report(2)
    assert (seen["mccp2"], seen["mccp3"]) == (True, True), seen
    assert seen["last_line"] == UTF8_LINE
    tintin.news_starts_a_line()  # prompts still marked, inside the stream
    assert "WARNING" not in tintin.server.log_text()


def test_tintin_utf8_round_trip(play) -> None:
    tintin = play("tintin")
    tintin.report(1)
    tintin.type(UTF8_LINE)
    tintin.child.expect_exact(f"You said: {UTF8_LINE}\r\n")  # what TinTin++ shows
    tintin.type("report")
    assert tintin.report(2)["last_line"] == UTF8_LINE  # what the server read


def test_tintin_aliases_and_semicolons_work_in_line_mode(play) -> None:
    tintin = play("tintin")
    tintin.report(1)
    tintin.type("#alias {greet} {say hi;say there}")
    tintin.child.expect_exact("#ALIAS {greet}")
    tintin.type("greet")
    tintin.child.expect_exact("You said: say hi\r\n")
    tintin.child.expect_exact("You said: say there\r\n")
    tintin.type("one;two")
    tintin.child.expect_exact("You said: one\r\n")
    tintin.child.expect_exact("You said: two\r\n")


def test_tintin_shows_prompts_on_their_own_line(play) -> None:
    # unmarked, TinTin++ drew "> A bird sings." (measured before EOR was offered)
    tintin = play("tintin")
    tintin.report(1)
    tintin.news_starts_a_line()


def test_status_shows_who_the_client_is(play) -> None:
    tintin = play("tintin", "--workers", "1")
    tintin.report(1)
    port = str(tintin.server.port)

    def reported() -> dict[str, Any] | None:
        result = run_shardd("status", "--json", "--port", port)
        if result.returncode != 0:
            return None
        sessions = json.loads(result.stdout)["connections"]
        return sessions[0] if sessions and sessions[0]["client_name"] else None

    session = wait_until(reported, 20, "the session in status")
    assert isinstance(session, dict)
    assert session["client_name"] == "TinTin++"
    assert session["term"] == "xterm-256color"
    assert session["mtts"] == 271
    assert session["mtts_flags"] == ["ANSI", "VT100", "UTF-8", "256 colors", "truecolor"]
    assert session["encoding"] == "UTF-8"
    table = run_shardd("status", "--port", port).stdout
    assert re.search(
        r"^\s*0\s+\d+\s+127\.0\.0\.1:\d+\s.*xterm-256color\s+TinTin\+\+\s", table, re.M
    ), table


# ---------------------------------------------------------------- TinyFugue


def test_tf_reaches_its_shell_without_waiting_and_is_known(play) -> None:
    tf = play("tf")
    seen = tf.report(1)
    assert seen["shell_started_after"] < MAXWAIT / 3, seen
    # TinyFugue puts its name first, without MTTS: TINYFUGUE, ANSI-ATTR, ANSI
    assert seen["client_name"] == "TINYFUGUE"
    assert seen["TERM"] == "ansi-attr"
    assert seen["mtts"] is None


def test_tf_shows_prompts_on_their_own_line(play) -> None:
    # unmarked, tf drew "> A bird sings." (measured before EOR was offered)
    tf = play("tf")
    tf.report(1)
    tf.news_starts_a_line()


# ------------------------------------------------------- every other client


@pytest.mark.parametrize(
    "client", ["inetutils-telnet", "busybox-telnet", "plink", "telnet-ssl", "telnetlib3-client"]
)
def test_terminal_client_reaches_its_shell_without_waiting_in_line_mode(play, client) -> None:
    player = play(client)
    seen = player.report(1)
    assert seen["shell_started_after"] < MAXWAIT / 3, seen
    assert seen["TERM"] == seen["TERM"].lower() != "unknown", seen
    assert seen["client_name"] is None and seen["mtts"] is None, seen
    assert (seen["server_echo"], seen["server_sga"]) == (False, False), seen
    player.type("hello")
    player.child.expect(r"You said: hello\r+\n")
