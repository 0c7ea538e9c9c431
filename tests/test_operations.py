"""The operator surface of ``shardd serve --workers N``: real supervisors on loopback.

Covers the supervisor <-> worker channel under attack (garbage written into a
worker's end from outside with pidfd_getfd), the control socket (mode, path,
peer check, bad requests), ``shardd status`` (human view, ``--json``,
``--watch``, accept-queue depth), ``reload`` / ``workers`` / ``stop``, config
files, pidfile, log files (reopened on SIGUSR1), JSON logs and dropping root.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import json
import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
from conftest import (
    CONNECTION_FIELDS,
    ROOT,
    WORKER_FIELDS,
    ServerProcess,
    connect,
    peer_of,
    read_until,
    run_shardd,
    start_session,
    wait_until,
)

from shardd.control import default_path
from shardd.status import expand

IAC, DO, WONT = 255, 253, 252
TTYPE = 24
IAC_DO_TTYPE = bytes((IAC, DO, TTYPE))

LISTENING = re.compile(r"serving telnet on (\S+):(\d+)")
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) +\d+ ")

SUPERVISOR_FIELDS = {"pid", "uptime", "listen", "workers"}

SYS_PIDFD_GETFD = 438  # x86_64
NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup")
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root (0700)


# ------------------------------------------------------------------ servers


class Server(ServerProcess):
    """``shardd serve`` with exactly ``args`` (nothing added), stderr collected.

    With ``log_file`` the listening line is looked for in that file instead of stderr.
    """

    def __init__(self, *args: str, log_file: Path | None = None) -> None:
        # ServerProcess.__init__ always adds --host/--port 0 (and --workers 0)
        self.args = list(args)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardd", "serve", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        try:
            if log_file is None:
                match = self.wait_for_log(LISTENING, timeout=20)
            else:
                match = wait_until(
                    lambda: self._listening_in(log_file),
                    timeout=20,
                    what=f"the listening line in {log_file}",
                )
        except BaseException:
            self.proc.kill()
            self.proc.wait(5)
            raise
        self.host, self.port = match.group(1), int(match.group(2))

    def _listening_in(self, path: Path) -> re.Match[str] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"shardd exited with {self.proc.returncode}: {self.log_text()}")
        try:
            return LISTENING.search(path.read_text())
        except FileNotFoundError:
            return None


@pytest.fixture
def launch() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, log_file: Path | None = None) -> Server:
        server = Server(*args, log_file=log_file)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may search (tmp_path's parents are root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="shardd-ops-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sup_pid(server: ServerProcess) -> int:
    return server.proc.pid


# ------------------------------------------------------------ control socket


def control_raw(path: str, payload: bytes, timeout: float = 10.0) -> Any:
    """Send raw bytes to a control socket; the decoded reply (AssertionError if none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"control socket closed without a reply to {payload[:40]!r}")
            unpacker.feed(chunk)
            for reply in unpacker:
                return reply


def control(path: str, request: dict[str, Any]) -> dict[str, Any]:
    reply = control_raw(path, msgpack.packb(request))
    assert isinstance(reply, dict) and reply.get("ok") is True, reply
    return reply


def status_of(server: ServerProcess, path: str | None = None) -> dict[str, Any]:
    return expand(control(path or default_path(server.port), {"cmd": "status"}))


def serving_workers(
    server: ServerProcess,
    count: int,
    *,
    not_pids: AbstractSet[int] = frozenset(),
    timeout: float = 20.0,
    path: str | None = None,
) -> dict[int, dict[str, Any]]:
    """Wait until exactly ``count`` workers serve shards 0..count-1 (none in ``not_pids``)."""

    def ready() -> dict[int, dict[str, Any]] | None:
        workers = status_of(server, path)["workers"]
        if len(workers) != count or any(w["state"] != "serving" for w in workers):
            return None
        if sorted(w["shard"] for w in workers) != list(range(count)):
            return None
        if {w["pid"] for w in workers} & not_pids:
            return None
        return {w["shard"]: w for w in workers}

    try:
        return wait_until(ready, timeout, f"{count} serving workers")  # type: ignore[return-value]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nserver log:\n{server.log_text()}") from None


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result
    return lines[0]


# ----------------------------------------------------------------- sessions


def shows(text: str, peer: str) -> bool:
    """Whether ``text`` names ``peer`` (not merely a longer address starting with it)."""
    return re.search(rf"(?<![\d.]){re.escape(peer)}(?!\d)", text) is not None


def echo_round_trip(port: int) -> bytes:
    """One session with an echo shell: what came back for b'ping-pong!'."""
    sock, got = start_session(port, marker=b"")
    with sock:
        sock.sendall(b"ping-pong!")
        read_until(sock, b"ping-pong!", got)
    return bytes(got)


# --------------------------------------------------- a worker's IPC channel


def steal_channel(supervisor: int, worker: int) -> socket.socket:
    """A duplicate of ``worker``'s end of its socketpair with ``supervisor``.

    The worker's Unix sockets are found by matching /proc/PID/fd inodes against
    /proc/net/unix and duplicated with pidfd_getfd; the IPC one is the pair the
    supervisor created (SO_PEERCRED of a socketpair names its creator), unlike
    the event loop's own signal socketpair.
    """
    unix_inodes: set[int] = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 7:
                unix_inodes.add(int(fields[6]))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = os.pidfd_open(worker)
    try:
        for name in sorted(os.listdir(f"/proc/{worker}/fd"), key=int):
            try:
                target = os.readlink(f"/proc/{worker}/fd/{name}")
            except FileNotFoundError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match is None or int(match.group(1)) not in unix_inodes:
                continue
            fd = libc.syscall(
                ctypes.c_long(SYS_PIDFD_GETFD),
                ctypes.c_long(pidfd),
                ctypes.c_long(int(name)),
                ctypes.c_long(0),
            )
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"pidfd_getfd({worker}, {name}): {os.strerror(err)}")
            sock = socket.socket(fileno=fd)
            creator, _uid, _gid = struct.unpack(
                "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            )
            if creator == supervisor:
                return sock
            sock.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"worker {worker} has no socketpair made by supervisor {supervisor}")


BAD_FRAMES = [
    # (id, bytes written into the worker's end, what the log line must show)
    ("not-msgpack", b"\xc1\xc1not msgpack", [r"\\xc1|c1 ?c1|not msgpack"]),
    ("unknown-type", msgpack.packb({"t": "bogus", "x": 1}), ["bogus"]),
    (
        "wrong-field-type",
        msgpack.packb({"t": "heartbeat", "time": "noon"}),
        ["heartbeat", "time", "noon"],
    ),
    (
        "bad-session-entry",
        msgpack.packb(
            {
                "t": "report",
                "time": 1.0,
                "accepted": 0,
                "counters": {},
                "sessions": [[1, "x"]],
                "last": True,
                "reply": False,
            }
        ),
        ["report", "session"],
    ),
    ("not-a-map", msgpack.packb([1, 2, 3]), ["list"]),
    ("hello-from-elsewhere", msgpack.packb({"t": "hello", "pid": 1, "shard": 1}), ["hello"]),
    (
        "oversized",
        msgpack.packb({"t": "heartbeat", "time": 1.0, "pad": b"\0" * (5 << 20)}),
        ["4194304|larger|too large|too big"],
    ),
]


@pytest.mark.parametrize(
    ("frame", "patterns"), [f[1:] for f in BAD_FRAMES], ids=[f[0] for f in BAD_FRAMES]
)
def test_bad_frame_on_worker_channel_replaces_only_that_worker(
    serve, frame: bytes, patterns: list[str]
) -> None:
    server = serve("--workers", "2")
    before = serving_workers(server, 2)
    victim = before[1]["pid"]
    with steal_channel(sup_pid(server), victim) as channel:
        channel.settimeout(20)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            channel.sendall(frame)  # the oversized one: the supervisor hangs up midway
    line = server.wait_for_log(rf"shard 1: worker {victim} sent a bad frame").string
    after = serving_workers(server, 2, not_pids={victim})
    assert after[1]["restarts"] == 1, after
    assert after[0]["pid"] == before[0]["pid"] and after[0]["restarts"] == 0, after
    wait_until(lambda: not psutil.pid_exists(victim), 10, f"worker {victim} gone")
    assert server.proc.poll() is None
    result = run_shardd("status", "--port", str(server.port))
    assert result.returncode == 0, result
    assert str(after[1]["pid"]) in result.stdout
    # the new worker takes connections (sent to both shards), and sessions work
    socks = [connect(server.port) for _ in range(16)]
    try:
        wait_until(
            lambda: {w["shard"]: w for w in status_of(server)["workers"]}[1]["accepted"],
            10,
            "the new worker accepting",
        )
    finally:
        for each in socks:
            each.close()
    sock, got = start_session(server.port)
    sock.close()
    assert b"Welcome to shardd." in got
    assert "Traceback" not in server.log_text()
    # last, so the checks above run either way: the line shows what was wrong
    for pattern in patterns:
        assert re.search(pattern, line, re.IGNORECASE), (pattern, line)


# ------------------------------------------------------------ control socket


def test_control_socket_default_path_is_derived_from_the_port_and_mode_0600(launch) -> None:
    port = free_port()
    server = launch("--host", "127.0.0.1", "--port", str(port), "--workers", "2")
    assert server.port == port
    path = default_path(port)
    assert path == f"/run/shardd/{port}/control.sock"  # as root
    assert f"control {path}" in server.log_text()
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(mode)
    result = run_shardd("status", "--port", str(port))
    assert result.returncode == 0, result
    assert f"listening on 127.0.0.1:{port}" in result.stdout
    assert server.stop() == 0
    assert not os.path.exists(path), "control socket left behind after a clean stop"


def test_control_flag_overrides_the_path(launch, tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "run" / "ctl.sock"  # its directory does not exist yet
    server = launch(
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--control", str(path)
    )
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)
    assert not os.path.exists(default_path(port))
    result = run_shardd("status", "--control", str(path), "--json")
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["supervisor"]["listen"] == [f"127.0.0.1:{port}"]
    by_port = run_shardd("status", "--port", str(port))
    assert by_port.returncode != 0
    assert str(port) in one_line_error(by_port)
    assert server.stop() == 0
    assert not path.exists()


def refused_start(*args: str) -> subprocess.CompletedProcess[str]:
    """``shardd serve`` with ``args``, which must exit by itself: it refuses to start."""
    try:
        return run_shardd("serve", *args, timeout=20)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"shardd serve started instead of refusing:\n{exc.stderr!r}") from None


def _mode_and_owner(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid


def _unsafe_port_directory(problem: str, directory: Path, tmp_path: Path) -> None:
    """Make ``directory`` (the per-port control directory) unsafe in the way named."""
    if problem == "symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        directory.symlink_to(target)
        return
    directory.mkdir()
    if problem == "another-user":
        os.chown(directory, NOBODY.pw_uid, NOGROUP.gr_gid)
        directory.chmod(0o700)
    elif problem == "world-writable":
        directory.chmod(0o777)
    elif problem == "group-writable":
        directory.chmod(0o770)
    else:
        raise AssertionError(problem)


UNSAFE_DIRECTORIES = [
    # (problem, what the error line must say)
    ("another-user", rf"owned by uid {NOBODY.pw_uid}\b"),
    ("world-writable", r"writable by group or others"),
    ("group-writable", r"writable by group or others"),
    ("symlink", r"symlink"),
]


@pytest.mark.parametrize(
    ("problem", "says"), UNSAFE_DIRECTORIES, ids=[u[0] for u in UNSAFE_DIRECTORIES]
)
def test_an_unsafe_control_directory_is_refused_and_left_alone(
    tmp_path: Path, problem: str, says: str
) -> None:
    # Another user could answer `shardd status` and `shardd stop` in the server's
    # place from a directory it made, or made writable, before the server started.
    base = Path(default_path(0)).parent.parent  # /run/shardd, as root
    base.mkdir(mode=0o755, exist_ok=True)
    for _ in range(100):  # a port no server left a directory for
        port = free_port()
        directory = base / str(port)
        if not os.path.lexists(directory):
            break
    _unsafe_port_directory(problem, directory, tmp_path)
    try:
        before = _mode_and_owner(directory), _mode_and_owner(base)
        result = refused_start("--host", "127.0.0.1", "--port", str(port), "--workers", "2")
        after = _mode_and_owner(directory), _mode_and_owner(base)
        leftovers = os.listdir(directory)
    finally:
        if directory.is_symlink():
            directory.unlink()
        else:
            for name in os.listdir(directory):
                os.unlink(directory / name)
            directory.rmdir()
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    # log lines may come first (the file descriptor limit), then one line says why
    errors = [line for line in result.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(errors) == 1, result.stderr
    (line,) = errors
    assert line.startswith("shardd: cannot start: "), line
    assert str(directory) in line, line
    assert re.search(says, line), line
    assert after == before, "shardd changed a directory it did not create"
    assert leftovers == [], leftovers


@pytest.mark.parametrize("mode", [0o1777, 0o700], ids=["like-tmp", "like-systemd-runtime-dir"])
def test_the_control_directorys_parent_keeps_its_mode(launch, tmp_path: Path, mode: int) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    parent.chmod(mode)
    path = parent / "ctl" / "control.sock"
    server = launch("--host", "127.0.0.1", "--port", "0", "--workers", "2", "--control", str(path))
    assert stat.S_IMODE(os.stat(parent).st_mode) == mode, oct(os.stat(parent).st_mode)
    created = os.lstat(path.parent)
    assert stat.S_ISDIR(created.st_mode) and stat.S_IMODE(created.st_mode) == 0o700, created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert status_of(server, str(path))["supervisor"]["pid"] == sup_pid(server)
    assert server.stop() == 0
    assert stat.S_IMODE(os.stat(parent).st_mode) == mode, oct(os.stat(parent).st_mode)


def test_with_user_a_directory_shardd_did_not_create_keeps_its_owner(
    launch, shared_dir: Path
) -> None:
    path = shared_dir / "ctl.sock"  # in an existing directory of root's
    before = _mode_and_owner(shared_dir)
    server = launch(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        "2",
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "--control",
        str(path),
    )
    serving_workers(server, 2, path=str(path))
    assert os.lstat(path).st_uid == NOBODY.pw_uid  # the socket is the server's
    assert _mode_and_owner(shared_dir) == before
    assert server.stop() == 0
    assert _mode_and_owner(shared_dir) == before


_NOBODY_CLIENT = r"""
import os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print(os.geteuid(), "connect-denied")
    sys.exit(3)
data = b""
try:
    sock.sendall(b"\x81\xa3cmd\xa6status")  # msgpack {"cmd": "status"}
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
except (BrokenPipeError, ConnectionResetError):
    pass
print(os.geteuid(), "reply" if data else "closed", data[:200])
sys.exit(0 if data else 4)
"""


def run_as_nobody(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", _NOBODY_CLIENT, path],
        user=NOBODY.pw_uid,
        group=NOGROUP.gr_gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_non_root_user_cannot_get_a_status(launch, shared_dir: Path) -> None:
    path = shared_dir / "ctl.sock"
    server = launch("--host", "127.0.0.1", "--port", "0", "--workers", "2", "--control", str(path))
    # the file mode keeps other users out
    denied = run_as_nobody(str(path))
    assert denied.stdout.split()[:2] == [str(NOBODY.pw_uid), "connect-denied"], denied
    assert denied.returncode == 3, denied
    # and the peer check does too, should the file's mode be loosened
    path.chmod(0o666)
    refused = run_as_nobody(str(path))
    assert refused.stdout.split()[:2] == [str(NOBODY.pw_uid), "closed"], refused
    assert refused.returncode == 4, refused
    server.wait_for_log(rf"refused a client with uid {NOBODY.pw_uid}")
    # root still can
    result = run_shardd("status", "--control", str(path))
    assert result.returncode == 0, result
    assert f"shardd supervisor {sup_pid(server)}," in result.stdout
    assert server.proc.poll() is None


BAD_REQUESTS = [
    # (id, raw request bytes, pattern the error must match)
    ("garbage", b"\xc1\xc1garbage", "undecodable"),
    ("list", msgpack.packb(["status"]), "map"),
    ("string", msgpack.packb("status"), "map"),
    ("no-cmd", msgpack.packb({"command": "status"}), "cmd"),
    ("cmd-not-a-string", msgpack.packb({"cmd": 5}), "cmd"),
    ("unknown-cmd", msgpack.packb({"cmd": "explode"}), "unknown command.*explode"),
    ("int-key", msgpack.packb({1: 2}), "undecodable"),
    ("workers-bad-delta", msgpack.packb({"cmd": "workers", "delta": "lots"}), "delta"),
    ("workers-huge-delta", msgpack.packb({"cmd": "workers", "delta": 10**6}), "delta"),
    ("workers-bool-delta", msgpack.packb({"cmd": "workers", "delta": True}), "delta"),
    (
        "oversized",
        msgpack.packb({"cmd": "status", "pad": "x" * 200_000}),
        "too large|undecodable|exceeds",
    ),
]


def test_bad_control_requests_get_error_replies_and_the_server_stays_up(serve) -> None:
    server = serve("--workers", "2")
    path = default_path(server.port)
    workers = serving_workers(server, 2)
    for name, payload, pattern in BAD_REQUESTS:
        reply = control_raw(path, payload)
        assert isinstance(reply, dict), (name, reply)
        assert reply.get("ok") is False, (name, reply)
        assert isinstance(reply.get("error"), str) and reply["error"], (name, reply)
        assert re.search(pattern, reply["error"], re.IGNORECASE), (name, reply)
    # clients that hang up early: nothing, half a request
    for payload in (b"", b"\x81", b"\x81\xa3cm"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(payload)
    assert server.proc.poll() is None
    after = serving_workers(server, 2)
    assert {w["pid"] for w in after.values()} == {w["pid"] for w in workers.values()}
    assert status_of(server)["supervisor"]["workers"] == 2
    result = run_shardd("status", "--port", str(server.port))
    assert result.returncode == 0, result
    assert "Traceback" not in server.log_text()


def test_status_with_no_server_is_one_line_and_nonzero(tmp_path: Path) -> None:
    port = free_port()
    result = run_shardd("status", "--port", str(port))
    assert result.returncode != 0
    assert str(port) in one_line_error(result)
    # a socket file nobody listens on (a crashed server's leftover)
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    for command in (["status"], ["status", "--json"], ["reload"], ["stop"], ["workers", "+1"]):
        result = run_shardd(*command, "--control", str(stale))
        assert result.returncode != 0, (command, result)
        assert str(stale) in one_line_error(result), command


# -------------------------------------------------------------------- status


def _worker_rows(text: str) -> dict[int, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("SHARD  PID"))
    rows: dict[int, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[int(cells[0])] = cells
    return rows


def test_status_human_view_and_json_fields(serve) -> None:
    server = serve("--workers", "2")
    workers = serving_workers(server, 2)
    sessions = [start_session(server.port) for _ in range(3)]
    try:
        for sock, got in sessions:
            sock.sendall(b"hello\r\n")
            read_until(sock, b"You said: hello", got)
        peers = {peer_of(sock) for sock, _ in sessions}

        def reported() -> dict[str, Any] | None:
            status = status_of(server)
            conns = status["connections"]
            if {c["peer"] for c in conns} == peers and all(c["rx_bytes"] >= 7 for c in conns):
                return status
            return None

        wait_until(reported, 10, "three sessions with their input counted")

        human = run_shardd("status", "--port", str(server.port))
        assert human.returncode == 0, human
        text = human.stdout
        header = text.splitlines()[0]
        assert re.fullmatch(
            rf"shardd supervisor {sup_pid(server)}, up \d+s, listening on "
            rf"127\.0\.0\.1:{server.port}, 2 shards",
            header,
        ), header
        assert re.search(r"^SHARD\s+PID\s+STATE\s+RESTARTS\s+SESSIONS", text, re.M), text
        rows = _worker_rows(text)
        assert set(rows) == {0, 1}, text
        for shard, worker in workers.items():
            assert rows[shard][1] == str(worker["pid"]), text
            assert rows[shard][2] == "serving", text
            assert rows[shard][3] == "0", text
        assert sum(int(row[4]) for row in rows.values()) == 3, text
        assert "3 sessions" in text
        assert re.search(r"^SHARD\s+ID\s+PEER\s+DURATION\s+IDLE", text, re.M), text
        for peer in peers:
            assert re.search(rf"^\d+\s+\d+\s+{re.escape(peer)}\s", text, re.M), (peer, text)

        def cpu_measured() -> dict[str, Any] | None:
            # each worker's CPU share appears once its first window (2 s) has closed
            result = run_shardd("status", "--port", str(server.port), "--json")
            assert result.returncode == 0, result
            data: dict[str, Any] = json.loads(result.stdout)
            return data if all(w["cpu_percent"] is not None for w in data["workers"]) else None

        data: Any = wait_until(cpu_measured, 15, "every worker's cpu_percent")
        sup = data["supervisor"]
        assert set(sup) >= SUPERVISOR_FIELDS, sup
        assert sup["pid"] == sup_pid(server)
        assert isinstance(sup["uptime"], (int, float)) and sup["uptime"] >= 0
        assert sup["listen"] == [f"127.0.0.1:{server.port}"]
        assert sup["workers"] == 2
        assert len(data["workers"]) == 2
        for worker in data["workers"]:
            assert set(worker) >= WORKER_FIELDS, worker
            assert worker["pid"] == workers[worker["shard"]]["pid"]
            assert worker["state"] == "serving"
            assert worker["restarts"] == 0
            assert worker["accept_queue"] == 0
            assert isinstance(worker["rss_bytes"], int) and worker["rss_bytes"] > 0
            assert isinstance(worker["cpu_percent"], (int, float))
            assert isinstance(worker["last_report_age"], (int, float))
        assert sum(w["connections"] for w in data["workers"]) == 3
        assert sum(w["accepted"] for w in data["workers"]) == 3
        pids = {w["shard"]: w["pid"] for w in data["workers"]}
        assert {c["peer"] for c in data["connections"]} == peers
        for conn in data["connections"]:
            assert set(conn) >= CONNECTION_FIELDS, conn
            assert conn["worker_pid"] == pids[conn["shard"]]
            assert conn["rx_bytes"] >= 7 and conn["tx_bytes"] > 0
            assert conn["encoding"] and conn["duration"] >= conn["idle"] >= 0
    finally:
        for sock, _ in sessions:
            sock.close()


def test_status_summarises_more_than_50_sessions(serve) -> None:
    server = serve("--workers", "2")
    serving_workers(server, 2)
    socks: list[socket.socket] = []
    try:
        for _ in range(60):
            socks.append(connect(server.port))
        peers = {peer_of(s) for s in socks}
        wait_until(
            lambda: {c["peer"] for c in status_of(server)["connections"]} == peers,
            20,
            "60 sessions in the status",
        )

        result = run_shardd("status", "--port", str(server.port), "--json")
        assert result.returncode == 0, result
        data = json.loads(result.stdout)
        assert len(data["connections"]) == 60
        assert {c["peer"] for c in data["connections"]} == peers
        per_shard = Counter(c["shard"] for c in data["connections"])
        assert set(per_shard) == {0, 1}, per_shard  # 60 connections reach both shards

        human = run_shardd("status", "--port", str(server.port))
        assert human.returncode == 0, human
        text = human.stdout
        summary = next((line for line in text.splitlines() if line.startswith("60 sessions")), None)
        assert summary is not None, text
        for shard, count in per_shard.items():
            assert f"shard {shard}: {count}" in summary, (summary, per_shard)
        assert re.search(r"^longest\b", text, re.M | re.I), text
        assert re.search(r"^most idle\b", text, re.M | re.I), text
        assert "--json" in text
        listed = [peer for peer in peers if shows(text, peer)]
        assert 0 < len(listed) <= 10, text  # a few examples, not every session

        # 50 is still a full table
        for sock in socks[50:]:
            sock.close()
        socks = socks[:50]
        peers = {peer_of(s) for s in socks}
        wait_until(
            lambda: {c["peer"] for c in status_of(server)["connections"]} == peers,
            20,
            "50 sessions in the status",
        )
        human = run_shardd("status", "--port", str(server.port))
        assert human.returncode == 0, human
        assert "50 sessions" in human.stdout
        assert all(shows(human.stdout, peer) for peer in peers), human.stdout
        assert "most idle" not in human.stdout
    finally:
        for sock in socks:
            sock.close()


def _read_output(
    proc: subprocess.Popen[bytes], done: Callable[[bytes], bool], timeout: float = 15.0
) -> bytes:
    """Everything ``proc`` writes to stdout until ``done(output)``; fail at the deadline."""
    assert proc.stdout is not None
    output = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not done(output):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; output so far: {output!r}"
            if sel.select(remaining):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"EOF (exit {proc.poll()}); output: {output!r}"
                output += chunk
    return output


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_watch_refreshes(serve, as_json: bool) -> None:
    server = serve("--workers", "2")
    serving_workers(server, 2)
    args = ["--json"] if as_json else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardd",
            "status",
            "--port",
            str(server.port),
            "--watch",
            "0.2",
            *args,
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        if as_json:
            output = _read_output(proc, lambda out: out.count(b"\n") >= 3)
            views = [json.loads(line) for line in output.splitlines()[:3]]
            assert all(v["supervisor"]["pid"] == sup_pid(server) for v in views)
            uptimes = [v["supervisor"]["uptime"] for v in views]
            assert uptimes == sorted(uptimes) and uptimes[0] < uptimes[-1], uptimes
        else:
            output = _read_output(proc, lambda out: out.count(b"shardd supervisor ") >= 3)
            assert output.count(f"shardd supervisor {sup_pid(server)},".encode()) >= 3
            assert b"\x1b[" not in output  # not a terminal: no screen clearing
        assert proc.poll() is None, "--watch stopped on its own"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()


def test_accept_queue_counts_connections_a_stopped_worker_has_not_taken(serve) -> None:
    server = serve("--workers", "2")
    workers = serving_workers(server, 2)
    stopped = workers[0]["pid"]
    socks: list[socket.socket] = []
    os.kill(stopped, signal.SIGSTOP)
    try:
        for _ in range(24):
            socks.append(connect(server.port))

        def queued() -> dict[int, dict[str, Any]] | None:
            rows = {w["shard"]: w for w in status_of(server)["workers"]}
            # every connection is either queued for the stopped worker or taken by the other
            if (
                rows[0]["accept_queue"]
                and rows[1]["accepted"]
                and not rows[1]["accept_queue"]
                and rows[0]["accept_queue"] + rows[1]["accepted"] == len(socks)
            ):
                return rows
            return None

        rows = wait_until(queued, 20, "connections queued on the stopped shard")
        assert isinstance(rows, dict)
        assert rows[0]["pid"] == stopped
        assert 0 < rows[0]["accept_queue"] < 24, rows
        assert rows[0]["accepted"] == 0, rows
        human = run_shardd("status", "--port", str(server.port))
        assert human.returncode == 0, human
        assert _worker_rows(human.stdout)[0][6] == str(rows[0]["accept_queue"]), human.stdout
    finally:
        os.kill(stopped, signal.SIGCONT)
    try:
        peers = {peer_of(s) for s in socks}

        def drained() -> bool:
            status = status_of(server)
            return (
                all(w["accept_queue"] == 0 for w in status["workers"])
                and {c["peer"] for c in status["connections"]} == peers
            )

        wait_until(drained, 20, "the queued connections accepted")
        assert serving_workers(server, 2)[0]["pid"] == stopped  # it was not replaced
    finally:
        for sock in socks:
            sock.close()


# ------------------------------------------------ reload, workers, stop


def test_reload_workers_and_stop(serve) -> None:
    server = serve("--workers", "2")
    first = serving_workers(server, 2)
    old = {w["pid"] for w in first.values()}

    result = run_shardd("reload", "--port", str(server.port))
    assert result.returncode == 0, result
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith("shardd: ")
    reloaded = serving_workers(server, 2, not_pids=old)
    assert all(w["restarts"] == 0 for w in reloaded.values()), reloaded
    wait_until(lambda: not any(psutil.pid_exists(pid) for pid in old), 20, "old workers gone")
    sock, got = start_session(server.port)
    sock.close()
    assert b"Welcome to shardd." in got

    result = run_shardd("workers", "+1", "--port", str(server.port))
    assert result.returncode == 0, result
    assert result.stdout.strip() == "shardd: 3 shards", result
    three = serving_workers(server, 3)
    assert {three[s]["pid"] for s in (0, 1)} == {reloaded[s]["pid"] for s in (0, 1)}
    assert status_of(server)["supervisor"]["workers"] == 3

    result = run_shardd("workers", "-1", "--port", str(server.port))
    assert result.returncode == 0, result
    assert result.stdout.strip() == "shardd: 2 shards", result
    two = serving_workers(server, 2)
    assert {w["pid"] for w in two.values()} == {reloaded[s]["pid"] for s in (0, 1)}
    wait_until(lambda: not psutil.pid_exists(three[2]["pid"]), 20, "shard 2's worker gone")
    assert status_of(server)["supervisor"]["workers"] == 2

    for bad in ("5", "+x", "1+"):
        result = run_shardd("workers", bad, "--port", str(server.port))
        assert result.returncode == 2, (bad, result)
        assert "workers" in one_line_error(result), bad
    assert len(serving_workers(server, 2)) == 2

    path = default_path(server.port)
    result = run_shardd("stop", "--port", str(server.port))
    assert result.returncode == 0, result
    assert result.stdout.startswith("shardd: ")
    assert server.proc.wait(20) == 0
    server.wait_for_log(r"stopped \(exit status 0\)")
    assert not os.path.exists(path)
    for pid in (w["pid"] for w in two.values()):
        assert not psutil.pid_exists(pid)


# -------------------------------------------------------------------- config


def test_config_file_settings(launch, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "shardd.toml"
    config.write_text(f'port = {port}\nworkers = 2\nshell = "echo"\nstats-interval = 0.5\n')
    server = launch("--config", str(config))
    assert (server.host, server.port) == ("127.0.0.1", port)
    assert len(serving_workers(server, 2)) == 2
    result = run_shardd("status", "--port", str(port))
    assert result.returncode == 0, result
    assert ", 2 shards" in result.stdout.splitlines()[0]
    got = echo_round_trip(port)
    assert got.endswith(b"ping-pong!") and b"Welcome" not in got, got


def test_flags_win_over_the_config_file(serve, tmp_path: Path) -> None:
    config = tmp_path / "shardd.toml"
    config.write_text('port = 1\nworkers = 3\nshell = "welcome"\n')
    server = serve("--config", str(config), "--workers", "2", "--shell", "echo")
    assert server.port != 1
    assert len(serving_workers(server, 2)) == 2
    got = echo_round_trip(server.port)
    assert got.endswith(b"ping-pong!") and b"Welcome" not in got, got


BAD_CONFIGS = [
    # (id, file text, words the one error line must contain besides the file's path)
    ("unknown-key", "port = 0\nbogus-key = 1\n", ["bogus-key"]),
    ("workers-many", 'workers = "many"\n', ["workers", "many"]),
    ("invalid-toml", "port = 0\nworkers = [\n", ["TOML"]),
    ("stats-interval-too-small", "stats-interval = 0.01\n", ["stats-interval"]),
    ("table", "[server]\nport = 1\n", ["server"]),
    ("shell-not-a-string", "shell = 5\n", ["shell"]),
]


@pytest.mark.parametrize(
    ("text", "words"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_file_is_one_line_and_exit_2(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = run_shardd("serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0")
    assert result.returncode == 2, result
    line = one_line_error(result)
    assert line.startswith("shardd: error: "), line
    assert str(config) in line, line
    for word in words:
        assert word in line, (word, line)


# ------------------------------------------------------------ pidfile, logs


def test_pidfile_holds_the_supervisor_pid_and_is_removed(serve, tmp_path: Path) -> None:
    pidfile = tmp_path / "shardd.pid"
    server = serve("--workers", "2", "--pidfile", str(pidfile))
    assert pidfile.read_text().strip() == str(sup_pid(server))
    serving_workers(server, 2)
    assert server.stop() == 0
    assert not pidfile.exists()


def _fd_targets(pid: int) -> set[str]:
    targets = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets.add(os.readlink(f"/proc/{pid}/fd/{name}"))
    return targets


def test_log_file_is_reopened_on_sigusr1(launch, tmp_path: Path) -> None:
    log_file = tmp_path / "shardd.log"
    rotated = tmp_path / "shardd.log.1"
    server = launch(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        "2",
        "--log-file",
        str(log_file),
        log_file=log_file,
    )
    workers = serving_workers(server, 2)
    first = log_file.read_text()
    assert "shard 0: worker" in first and "shard 1: worker" in first, first
    assert server.log_text() == ""  # nothing on stderr
    log_file.rename(rotated)
    os.kill(sup_pid(server), signal.SIGUSR1)
    wait_until(
        lambda: log_file.exists() and "log files reopened" in log_file.read_text(),
        10,
        "the supervisor logging to a new file",
    )

    # every worker holds the new file, none the rotated one
    def reopened() -> bool:
        for worker in workers.values():
            targets = _fd_targets(worker["pid"])
            if str(log_file) not in targets or str(rotated) in targets:
                return False
        return True

    wait_until(reopened, 10, "the workers reopening the log file")
    result = run_shardd("workers", "-1", "--port", str(server.port))
    assert result.returncode == 0, result
    wait_until(
        lambda: f"shard 1: worker {workers[1]['pid']} draining" in log_file.read_text(),
        10,
        "the draining worker's line in the new file",
    )
    assert server.stop() == 0
    new = log_file.read_text()
    assert "stopped (exit status 0)" in new, new
    old = rotated.read_text()
    assert "log files reopened" not in old and "draining" not in old, old
    assert "stopped" not in old
    assert server.log_text() == ""


def _remove_control_directory(port: int) -> None:
    """The default control directory a server run as nobody leaves: it cannot remove it."""
    path = Path(default_path(port))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(FileNotFoundError):
        path.parent.rmdir()


def test_a_log_file_that_cannot_be_reopened_is_logged_and_kept(launch, shared_dir: Path) -> None:
    # root's directory, as /var/log is: the server, as nobody, cannot create files there
    logs = shared_dir / "logs"
    logs.mkdir(mode=0o755)
    log_file = logs / "shardd.log"
    rotated = logs / "shardd.log.1"
    server = launch(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        "2",
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "--log-file",
        str(log_file),
        log_file=log_file,
    )
    try:
        workers = serving_workers(server, 2)
        log_file.rename(rotated)  # logrotate without `create`
        os.kill(sup_pid(server), signal.SIGUSR1)

        def failure(pid: int) -> str:
            return (
                rf" ERROR +{pid} shardd\.logs: cannot reopen the log file "
                rf"{re.escape(str(log_file))}: Permission denied"
            )

        # the supervisor and each worker (they reopen on USR1 too) say so in the old file
        for pid in (sup_pid(server), *(w["pid"] for w in workers.values())):
            wait_until(
                lambda pid=pid: re.search(failure(pid), rotated.read_text()),
                10,
                f"process {pid} logging that it cannot reopen the log file",
            )
        assert server.proc.poll() is None, server.log_text()
        result = run_shardd("status", "--port", str(server.port))
        assert result.returncode == 0, result
        assert f"shardd supervisor {sup_pid(server)}," in result.stdout
        after = serving_workers(server, 2)
        assert {w["pid"] for w in after.values()} == {w["pid"] for w in workers.values()}
        # the old file still gets every line, from the supervisor and the workers
        assert run_shardd("workers", "-1", "--port", str(server.port)).returncode == 0
        wait_until(
            lambda: f"shard 1: worker {workers[1]['pid']} draining" in rotated.read_text(),
            10,
            "the draining worker's line in the old file",
        )
        assert server.stop() == 0
        text = rotated.read_text()
        assert len(re.findall(failure(sup_pid(server)), text)) == 1, text
        assert "log files reopened" not in text, text
        assert "stopped (exit status 0)" in text, text
        assert "Traceback" not in text, text
        assert not log_file.exists()
        assert server.log_text() == ""  # nothing on stderr: no logging errors
    finally:
        _remove_control_directory(server.port)


def test_json_log_format(serve) -> None:
    server = serve("--workers", "2", "--log-format", "json")
    workers = serving_workers(server, 2)
    sock, got = start_session(server.port)
    with sock:
        sock.sendall(b"hi\r\n")
        read_until(sock, b"You said: hi", got)
    assert run_shardd("reload", "--port", str(server.port)).returncode == 0
    serving_workers(server, 2, not_pids={w["pid"] for w in workers.values()})
    assert server.stop() == 0
    lines = server.log_text().splitlines()
    assert len(lines) >= 8, lines
    pids = set()
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert {"time", "level", "pid", "logger", "message"} <= set(entry), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), line
        assert entry["level"] in ("debug", "info", "warning", "error", "critical"), line
        assert isinstance(entry["pid"], int) and isinstance(entry["logger"], str), line
        assert isinstance(entry["message"], str) and entry["message"], line
        pids.add(entry["pid"])
    assert sup_pid(server) in pids
    assert {w["pid"] for w in workers.values()} <= pids  # workers log JSON too
    assert any(LISTENING.search(json.loads(line)["message"]) for line in lines)


# ------------------------------------------------------------- privileges


def _assert_runs_as_nobody(server: ServerProcess) -> dict[int, dict[str, Any]]:
    workers = serving_workers(server, 2)
    pids = [sup_pid(server), *(w["pid"] for w in workers.values())]
    for pid in pids:
        proc = psutil.Process(pid)
        assert tuple(proc.uids()) == (NOBODY.pw_uid,) * 3, (pid, proc.uids())
        assert tuple(proc.gids()) == (NOGROUP.gr_gid,) * 3, (pid, proc.gids())
    assert {p.pid for p in psutil.Process(sup_pid(server)).children()} == set(pids[1:])
    return workers


@pytest.fixture
def serve_as_nobody(serve) -> Iterator[Callable[..., ServerProcess]]:
    """``serve`` with --user nobody --group nogroup; removes the control files it may leave."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = serve("--workers", "2", "--user", "nobody", "--group", "nogroup", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()
        _remove_control_directory(server.port)


def test_user_and_group_drop_root(serve_as_nobody) -> None:
    # a bytes echo session needs no codec: see the next test for the default session
    server = serve_as_nobody("--encoding", "false", "--shell", "echo")
    server.wait_for_log(rf"running as uid {NOBODY.pw_uid}, gid {NOGROUP.gr_gid}")
    first = _assert_runs_as_nobody(server)
    got = echo_round_trip(server.port)
    assert got.endswith(b"ping-pong!"), got
    result = run_shardd("status", "--port", str(server.port))
    assert result.returncode == 0, result
    assert f"shardd supervisor {sup_pid(server)}," in result.stdout
    assert "serving" in result.stdout
    # workers forked after the drop are nobody's too
    assert run_shardd("reload", "--port", str(server.port)).returncode == 0
    serving_workers(server, 2, not_pids={w["pid"] for w in first.values()})
    _assert_runs_as_nobody(server)
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()


def test_default_session_works_after_dropping_root(serve_as_nobody) -> None:
    server = serve_as_nobody()
    _assert_runs_as_nobody(server)
    try:
        sock, got = start_session(server.port)
        with sock:
            assert b"Welcome to shardd." in got
            sock.sendall(b"as nobody\r\n")
            read_until(sock, b"You said: as nobody", got)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nserver log:\n{server.log_text()}") from None
    assert "Traceback" not in server.log_text()


def test_stop_removes_the_control_socket_after_dropping_root(serve_as_nobody) -> None:
    server = serve_as_nobody()
    _assert_runs_as_nobody(server)
    path = default_path(server.port)
    assert os.path.exists(path)
    assert server.stop() == 0
    server.wait_for_log(r"stopped \(exit status 0\)")
    assert not os.path.exists(path), f"control socket {path} left behind after a clean stop"


def _listen_backlogs(port: int) -> list[int]:
    """Send-Q of every listening socket on ``port``: the backlog the kernel uses."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_backlog_flag_reaches_the_kernel(serve: Callable[..., ServerProcess], workers: str) -> None:
    server = serve("--workers", workers, "--backlog", "1234", "--shell", "echo")
    if workers != "0":
        server.wait_for_log(r"shard 1: worker \d+ serving")
    backlogs = wait_until(lambda: _listen_backlogs(server.port), what="the listening sockets")
    assert backlogs and all(b == 1234 for b in backlogs), backlogs
