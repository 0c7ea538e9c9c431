"""The ``shardd`` command line: usage errors, bind errors, and a clean stop."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import connect, read_to_eof, read_until, run_shardd, start_session

IAC, WILL, DO, WONT, GA = 255, 251, 253, 252, 249
ECHO, SGA = 1, 3
TTYPE = 24
IAC_DO_TTYPE = bytes((IAC, DO, TTYPE))


# ------------------------------------------------------------- usage errors

BAD_VALUES = [
    # (arguments, words the one error line must contain)
    (["--port", "70000"], ["port", "70000"]),
    (["--port", "abc"], ["port", "abc"]),
    (["--port", "-1"], ["port", "-1"]),
    (["--port", "1.5"], ["port", "1.5"]),
    (["--connect-maxwait", "-1"], ["connect-maxwait", "-1"]),
    (["--connect-maxwait", "nan"], ["connect-maxwait", "nan"]),
    (["--connect-maxwait", "inf"], ["connect-maxwait", "inf"]),
    (["--connect-maxwait", "soon"], ["connect-maxwait", "soon"]),
    (["--limit", "0"], ["limit", "0"]),
    (["--limit", "many"], ["limit", "many"]),
    (["--encoding", "nosuchcodec"], ["encoding", "nosuchcodec"]),
    (["--encoding-errors", "nosuchhandler"], ["encoding-errors", "nosuchhandler"]),
    (["--shell", "nosuchmodule:fn"], ["shell", "nosuchmodule"]),
    (["--shell", "bogus"], ["shell", "bogus"]),
    (["--shell", "workers.shells:nosuchshell"], ["shell", "nosuchshell"]),
    (["--shell", "workers.shells:MAX_LINE"], ["shell", "not callable"]),
    (["--workers", "2000"], ["workers", "2000"]),
    (["--worker-timeout", "0"], ["worker-timeout", "0"]),
    (["--stats-interval", "0.01"], ["stats-interval", "0.01"]),
    (["--log-format", "xml"], ["log-format", "xml"]),
    (["--protocol", "workers.shells:echo"], ["protocol", "BaseServer"]),
    (["--protocol", "nosuchmodule:Cls"], ["protocol", "nosuchmodule"]),
    (["--user", "no-such-user-here"], ["user", "no-such-user-here"]),
    (["--config", "/nonexistent/shardd.toml"], ["config", "/nonexistent/shardd.toml"]),
    (["--workers", "-1"], ["workers", "-1"]),
    (["--graceful-timeout", "nan"], ["graceful-timeout", "nan"]),
    (["--backlog", "0"], ["backlog", "0"]),
    (["--bogus"], ["--bogus"]),
    (["--log-level", "loud"], ["log-level", "loud"]),
    (["--host", ""], ["host"]),
    (["--max-output-buffer", "10"], ["max-output-buffer", "10"]),
    (["--charsets", "utf-8,rot13"], ["charsets", "rot13"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_value_is_one_line_and_exit_2(args: list[str], words: list[str]) -> None:
    result = run_shardd("serve", "--host", "127.0.0.1", "--port", "0", *args)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("shardd: error: "), line
    for word in words:
        assert word in line, (word, line)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_no_command_prints_the_help_on_stderr_and_exits_2() -> None:
    """Like git and gunicorn: the commands there are, as a usage error (status 2)."""
    result = run_shardd()
    assert result.returncode == 2, result
    assert result.stdout == "", result
    assert result.stderr.startswith("usage: shardd"), result.stderr
    for command in ("serve", "status", "reload", "stop", "workers", "loadtest", "bench"):
        assert command in result.stderr, command


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    result = run_shardd("--version")
    assert result.returncode == 0, result
    assert result.stdout == f"shardd {version('shardd')}\n", result
    assert result.stderr == ""


def test_port_in_use_is_one_line_and_nonzero() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_shardd("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0] and "in use" in lines[0].lower(), lines[0]
    assert "Traceback" not in result.stderr


# --------------------------------------------------------- running servers


def test_encoding_false_starts_with_bytes_echo_shell(serve) -> None:
    server = serve("--encoding", "false", "--shell", "echo")
    with connect(server.port) as sock:
        got = read_until(sock, IAC_DO_TTYPE, bytearray())
        sock.sendall(bytes((IAC, WONT, TTYPE)))
        sock.sendall(b"bytes \x80\xfe\xff\xff!")  # not text in any session encoding
        read_until(sock, b"!", got)
    # the echo shell works in character mode: it claims SGA and ECHO
    claims = bytes((IAC, WILL, SGA, IAC, WILL, ECHO))
    assert bytes(got) == IAC_DO_TTYPE + claims + b"bytes \x80\xfe\xff\xff!"
    assert server.proc.poll() is None


def test_encoding_false_welcome_shell(serve) -> None:
    """The default shell in a bytes session: its banner says 'encoding binary'."""
    server = serve("--encoding", "false")
    try:
        sock, got = start_session(server.port)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nserver log:\n{server.log_text()}") from None
    with sock:
        assert b"Welcome to shardd." in got
        assert b"encoding binary" in got
        sock.sendall(b"hello\r\n")
        read_until(sock, b"You said: hello\r\n", got)
    assert "shell failed" not in server.log_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_says_goodbye_and_exits_0(serve, sig: int) -> None:
    server = serve()
    sock, got = start_session(server.port)
    idle = connect(server.port)  # a second client, still negotiating
    with sock, idle:
        read_until(idle, IAC_DO_TTYPE, bytearray())
        assert server.stop(sig) == 0
        read_to_eof(sock, got)
        idle_got = read_to_eof(idle, bytearray())
    assert b"The server is shutting down. Goodbye.\r\n" in got, got
    assert b"shutting down" in idle_got, idle_got
    server.wait_for_log(r"INFO +\d+ shardd: stopped")
    assert "Traceback" not in server.log_text()


def test_sigterm_goodbye_in_bytes_session(serve) -> None:
    server = serve("--encoding", "false", "--shell", "echo")
    with connect(server.port) as sock:
        got = read_until(sock, IAC_DO_TTYPE, bytearray())
        sock.sendall(bytes((IAC, WONT, TTYPE)) + b"ping")
        read_until(sock, b"ping", got)
        assert server.stop(signal.SIGTERM) == 0
        read_to_eof(sock, got)
    assert b"shutting down" in got, got


def test_stop_is_bounded_by_graceful_timeout_when_a_client_never_reads(serve) -> None:
    """A client that floods the echo shell and never reads cannot hold the stop up."""
    server = serve("--encoding", "false", "--shell", "echo", "--graceful-timeout", "1")
    with connect(server.port) as sock:
        read_until(sock, IAC_DO_TTYPE, bytearray())
        sock.sendall(bytes((IAC, WONT, TTYPE)))
        sock.setblocking(False)
        # send until the socket stays unwritable: every buffer on the way is full
        chunk = b"x" * 65536
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the server kept reading for 30s"
            _, writable, _ = select.select([], [sock], [], 1.0)
            if not writable:
                break
            try:
                sock.send(chunk)
            except BlockingIOError:
                pass
        started = time.monotonic()
        assert server.stop(signal.SIGTERM, timeout=10) == 0
        assert time.monotonic() - started < 6
    server.wait_for_log(r"INFO +\d+ shardd: stopped")


# ------------------------------------------------- shells from the current directory

PROJECT_SHELL = """
async def shell(reader, writer):
    import workers.server
    writer.write(f"their shell on {workers.server.TelnetServer.__name__}\\r\\n")
    await writer.drain()
"""


@pytest.mark.parametrize("console_script", [False, True], ids=["python -m shardd", "shardd"])
def test_shell_from_a_project_with_its_own_workers_package(serve, tmp_path, console_script):
    """``--shell theirmod:shell`` imports from the current directory; its workers/ can't shadow."""
    (tmp_path / "theirmod.py").write_text(PROJECT_SHELL)
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text(
        'raise ImportError("the project\'s own workers package was imported")\n'
    )
    server = serve(
        "--shell",
        "theirmod:shell",
        "--connect-maxwait",
        "0.2",
        cwd=tmp_path,
        console_script=console_script,
    )
    with connect(server.port) as sock:
        got = read_until(sock, IAC_DO_TTYPE, bytearray())
        read_until(sock, b"their shell on TelnetServer\r\n", got)
    assert "Traceback" not in server.log_text()


def test_a_module_missing_from_shardd_own_package_names_the_shadowing(tmp_path) -> None:
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "tasks.py").write_text("async def shell(reader, writer): pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "shardd", "serve", "--port", "0", "--shell", "workers.tasks:shell"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "workers.tasks" in lines[0] and "shardd's own workers package" in lines[0], lines
