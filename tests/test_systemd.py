"""systemd: the notify protocol against a real NOTIFY_SOCKET, and the unit file.

A datagram socket bound in the test's directory stands for systemd's: the
server is started with NOTIFY_SOCKET (and WATCHDOG_USEC) pointing at it, and
each datagram's sender is read from its credentials (SO_PASSCRED), so the
test sees that only the supervisor notifies.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from conftest import ROOT, ServerProcess, read_until, run_shardd, wait_until

from shardd.sd_notify import Notifier

IAC_DO_TTYPE = bytes((255, 253, 24))
_UCRED = struct.Struct("3i")


class NotifySocket:
    """A stand-in for systemd's notify socket: every datagram, with its sender's pid."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, float, dict[str, str]]] = []  # pid, when, fields
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(value[: _UCRED.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.messages.append((pid, time.monotonic(), fields))

    def seen(self) -> list[tuple[int, float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def with_field(self, name: str, value: str | None = None) -> list[dict[str, str]]:
        return [f for _p, _t, f in self.seen() if name in f and value in (None, f[name])]

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()


def _index(notify: NotifySocket, name: str, after: int = -1) -> int | None:
    for n, (_pid, _t, fields) in enumerate(notify.seen()):
        if n > after and name in fields:
            return n
    return None


def test_the_supervisor_notifies_ready_status_watchdog_reloading_stopping(
    serve: Any, tmp_path: Path
) -> None:
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    try:
        server: ServerProcess = serve(
            "--workers", "2", "--shell", "echo",
            env={
                "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                "WATCHDOG_USEC": "400000",  # WATCHDOG=1 every 0.2 s
                "RUNTIME_DIRECTORY": str(runtime),
            },
        )  # fmt: skip
        # the control socket goes in systemd's RuntimeDirectory
        path = runtime / str(server.port) / "control.sock"
        server.wait_for_log(rf"control {path}\)")
        ready = wait_until(lambda: _index(notify, "READY"), 20, "READY=1")
        assert notify.seen()[ready][2] == {"READY": "1", "STATUS": "2 shards, 0 sessions"}
        wait_until(lambda: len(notify.with_field("WATCHDOG", "1")) >= 3, 10, "WATCHDOG=1")

        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            read_until(sock, IAC_DO_TTYPE, bytearray())
            wait_until(lambda: notify.with_field("STATUS", "2 shards, 1 session"), 10, "1 session")
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            result = run_shardd("reload", "--control", str(path))
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert result.returncode == 0, result
            reloading = _index(notify, "RELOADING", after=ready)
            assert reloading is not None, notify.seen()
            fields = notify.seen()[reloading][2]
            assert fields["RELOADING"] == "1"
            assert before <= int(fields["MONOTONIC_USEC"]) <= after, (before, fields, after)
            # READY=1 once the new workers serve: before `shardd reload` returned
            done = _index(notify, "READY", after=reloading)
            assert done is not None, notify.seen()
            # the old worker with no session may or may not have left yet
            assert notify.seen()[done][2]["STATUS"].startswith("2 shards, 1 session, ")

        server.proc.terminate()
        assert server.proc.wait(15) == 0
        assert _index(notify, "STOPPING", after=done) is not None, notify.seen()
        assert _index(notify, "READY", after=_index(notify, "STOPPING") or 0) is None
        # every datagram came from the supervisor, none from a worker
        assert {pid for pid, _t, _f in notify.seen()} == {server.proc.pid}
    finally:
        notify.close()


def test_the_environment_it_notifies_from() -> None:
    name = f"shardd-test-{os.getpid()}"
    notify = NotifySocket("\0" + name)  # an abstract name: NOTIFY_SOCKET=@...
    try:
        environ = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}
        notifier = Notifier.from_environment(environ)
        assert environ == {}  # nothing left for workers to see
        assert notifier.watchdog_interval is None  # WATCHDOG_PID is another process's
        notifier.status("2 shards, 0 sessions")
        notifier.status("2 shards, 0 sessions")  # unchanged: not sent again
        notifier.ready("2 shards, 0 sessions")
        wait_until(lambda: len(notify.seen()) == 2, 5, "two datagrams")
        assert [f for _p, _t, f in notify.seen()] == [
            {"STATUS": "2 shards, 0 sessions"},
            {"READY": "1"},
        ]
        notifier.close()
        mine = Notifier.from_environment(
            {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())}
        )
        assert not mine.enabled and mine.watchdog_interval == 2.5
        mine.watchdog()  # no socket: nothing happens
    finally:
        notify.close()


def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "shardd.service").read_text()
    shardd = Path(sys.executable).parent / "shardd"
    assert "ExecStart=/opt/shardd/.venv/bin/shardd serve" in unit
    # verify checks that ExecStart's program exists: this checkout's
    rendered = tmp_path / "shardd.service"
    rendered.write_text(unit.replace("/opt/shardd/.venv/bin/shardd", str(shardd)))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: deploy/install.sh --test installs systemd"
    result = subprocess.run(
        [analyze, "verify", str(rendered)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout and not result.stderr, result
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "RuntimeDirectory=shardd",
    ):
        assert f"\n{line}\n" in unit, line
