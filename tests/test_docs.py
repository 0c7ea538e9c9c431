"""The README's commands work as written: the Quick start, and every ``shardd`` command and flag.

The Quick start is exactly two commands (install and serve; install what
the tests need and run them), the second the same as the one ``.ci/run``
runs. Every ``shardd <command>`` the README shows, in its ``sh`` blocks or
in its text, names a command the parser has, and every flag given to it is
one of that command's.
"""

from __future__ import annotations

import argparse
import re

import pytest
from conftest import ROOT

from shardd.cli import _build_parser

README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: flags in the README's text that belong to other programs
NOT_SHARDD = {"--test", "--check", "--now"}  # install.sh, ruff format, systemctl


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _commands(block: str) -> list[str]:
    """A shell block's commands: continued lines (a trailing backslash, or a
    synopsis line that goes on with ``[``) joined, blank lines and comments out."""
    commands: list[str] = []
    continued = False
    for raw in block.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continued = False
            continue
        if commands and (continued or line.startswith("[")):
            commands[-1] += " " + line.rstrip("\\").strip()
        else:
            commands.append(line.rstrip("\\").strip())
        continued = raw.rstrip().endswith("\\")
    return commands


def _sh_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == "sh"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


PARSER = _build_parser()
COMMANDS = _subparsers(PARSER)


def _uses(text: str) -> list[tuple[str, list[str]]]:
    """Each ``shardd <command>`` in ``text`` and the flags after it (alternatives
    of a synopsis, ``reload | stop | workers``, each get the flags)."""
    uses = []
    for match in re.finditer(r"(?:^|[\s/`(])shardd ((?:[a-z]+)(?: \| [a-z]+ ?[+-]?N?)*)", text):
        rest = text[match.end() :]
        flags = FLAG.findall(re.split(r"&&|`|\n\n", rest, maxsplit=1)[0])
        for name in re.findall(r"[a-z]+", match.group(1)):
            if name != "N":
                uses.append((name, flags))
    return uses


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    blocks = _sh_blocks(_section(README, "Quick start"))
    assert len(blocks) == 1, blocks
    commands = _commands(blocks[0])
    assert len(commands) == 2, commands
    serve, tests = commands
    assert serve.startswith("sh deploy/install.sh && ") and "shardd serve" in serve, serve
    assert tests.startswith("sh deploy/install.sh --test && "), tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, f"{tests!r} is not a line of .ci/run"


def test_every_shardd_command_in_the_readme_blocks_exists_with_its_flags() -> None:
    seen = 0
    for block in _sh_blocks(README):
        for command in _commands(block):
            for name, flags in _uses(command):
                assert name in COMMANDS, f"shardd {name}: no such command ({command})"
                unknown = set(flags) - _options(COMMANDS[name])
                assert not unknown, f"shardd {name} has no {sorted(unknown)} ({command})"
                seen += 1
    assert seen >= 10, seen  # the parsing found the blocks' commands


def test_every_shardd_command_in_the_readme_text_exists_with_its_flags() -> None:
    spans = re.findall(r"`(shardd [^`]+)`", FENCE.sub("", README))
    assert len(spans) >= 10, spans
    for span in spans:
        for name, flags in _uses(span):
            assert name in COMMANDS, f"`{span}`: no command {name}"
            unknown = set(flags) - _options(COMMANDS[name])
            assert not unknown, f"`{span}`: shardd {name} has no {sorted(unknown)}"


def test_every_flag_the_readme_names_is_one_of_shardds() -> None:
    known = set().union(_options(PARSER), *(_options(p) for p in COMMANDS.values())) | NOT_SHARDD
    named = set(FLAG.findall(" ".join(re.findall(r"`([^`\n]+)`", FENCE.sub("", README)))))
    assert named, "no flags found in the README's text"
    assert not named - known, sorted(named - known)


@pytest.mark.parametrize("path", ["README.md", "deploy/README.md", "docs/ARCHITECTURE.md"])
def test_control_socket_paths_in_the_docs_are_the_real_one(path: str) -> None:
    """The control socket is ``<dir>/PORT/control.sock`` (shardd/control.py), never
    ``PORT.sock`` or ``shardd.sock``."""
    text = (ROOT / path).read_text()
    wrong = re.findall(r"[\w/$<>{}.-]*(?:PORT|port>|\d+)\.sock\b|shardd\.sock\b", text)
    assert not wrong, wrong
    for found in re.findall(r"[\w/$<>{}-]+/control\.sock", text):
        assert re.search(r"/(PORT|<port>|\d+)/control\.sock$", found), found


def test_deploy_readme_names_what_install_sh_installs() -> None:
    text = (ROOT / "deploy" / "README.md").read_text()
    script = (ROOT / "deploy" / "install.sh").read_text()
    for package in re.findall(r"`([a-z0-9+.-]+)`", text):
        if package.endswith(("-telnet", "-openbsd")):
            assert package in script, package


def test_the_serve_synopsis_lists_every_flag() -> None:
    """The README's `shardd serve` synopsis and the parser have the same flags."""
    block = _sh_blocks(_section(README, "Running"))[0]
    (serve,) = [c for c in _commands(block) if c.startswith("shardd serve")]
    flags = set(FLAG.findall(serve))
    assert flags <= _options(COMMANDS["serve"]), sorted(flags - _options(COMMANDS["serve"]))
    # and the other way: the synopsis shows every flag serve has
    missing = _options(COMMANDS["serve"]) - flags - {"-h", "--help"}
    assert not missing, f"README's serve synopsis lacks {sorted(missing)}"
