"""A player typing half a line when another player's say arrives, in real clients.

TinTin++ and inetutils telnet run in a pty as a player would run them; the
other player is a plain socket. In each case the half line must survive the
news: finishing it sends what was typed, whole. In character mode the server
also draws the prompt and the half line again below the news.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import ServerProcess
from talker_peers import Player

ARGS = ("--shell", "talker", "--connect-maxwait", "5")
TIMEOUT = 10


def _installed(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/games"]))
    assert found, f"{name} is not installed (deploy/install.sh --test installs it)"
    return found


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Callable[[list[str]], pexpect.spawn]]:
    children: list[pexpect.spawn] = []

    def spawn(command: list[str]) -> pexpect.spawn:
        child = pexpect.spawn(
            command[0],
            command[1:],
            cwd=str(tmp_path),
            env={**os.environ, "TERM": "xterm", "LANG": "C.UTF-8", "HOME": str(tmp_path)},
            dimensions=(24, 100),
            timeout=TIMEOUT,
            encoding="utf-8",
            codec_errors="replace",
        )
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)


def _half_line_survives(server: ServerProcess, bob: Any, redraws: bool = False) -> None:
    """Bob (in a client) types half a say; Alice's say arrives; Bob finishes it."""
    alice = Player(server.port, "Alice")
    try:
        bob.send("say hel")
        alice.command("say news from Alice", "You say: news from Alice")
        bob.expect_exact("[lobby] Alice says: news from Alice\r\n")
        if redraws:  # the prompt and the half line, drawn again under the news
            bob.expect_exact("> say hel")
        bob.send("lo\r")
        alice.expect("[lobby] Bob says: hello")  # exactly what Bob typed, whole
        bob.expect_exact("You say: hello")
    finally:
        alice.close()


def _telnet(server: ServerProcess, spawn: Callable[[list[str]], Any]) -> Any:
    bob = spawn([_installed("telnet"), "127.0.0.1", str(server.port)])
    bob.expect_exact("What is your name? ")
    bob.send("Bob\r")
    bob.expect_exact("Welcome, Bob! You are in room lobby.")
    bob.expect_exact("> ")
    return bob


def test_telnet_in_line_mode_keeps_the_half_line(serve: Any, client: Any) -> None:
    server = serve(*ARGS)
    _half_line_survives(server, _telnet(server, client))


def test_telnet_in_character_mode_redraws_the_half_line(serve: Any, client: Any) -> None:
    server = serve(*ARGS)
    bob = _telnet(server, client)
    bob.send("mode char\r")
    bob.expect_exact("Mode char.")
    bob.expect_exact("> ")
    _half_line_survives(server, bob, redraws=True)
    bob.send("say ab\x7fc\r")  # the server edits the line now: DEL erases
    bob.expect_exact("You say: ac")


def test_tintin_keeps_the_half_line(serve: Any, client: Any) -> None:
    server = serve(*ARGS)
    bob = client([_installed("tt++"), "-e", f"#session s 127.0.0.1 {server.port}"])
    bob.expect_exact("What is your name? ")
    bob.send("Bob\r")
    bob.expect_exact("Welcome, Bob! You are in room lobby.")
    _half_line_survives(server, bob)
