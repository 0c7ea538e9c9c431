"""The one serving path: admission and stages before a session, on asyncio and uvloop.

A ``Server`` runs in this test's event loop on a real loopback socket; the
clients are real sockets. The command-line tests cover the same ``Server`` in
a supervised worker and in ``--workers 0``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop
from conftest import async_wait_until

from shardd.listeners import bind
from workers.arrival import Arrival, Refusal
from workers.serving import Server, ServerSettings, SessionOptions

TIMEOUT = 10.0


class _AnyLoopbackPeer(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("127.0.0.1:")

    __hash__ = str.__hash__


ANY_PEER = _AnyLoopbackPeer()
IAC_DO_TTYPE = bytes((255, 253, 24))


class Recorder:
    """A shell that reports the first line it reads, then ends the session."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    async def shell(self, reader: Any, writer: Any) -> None:
        writer.write("ready\r\n")
        line = await reader.readline()
        await self.lines.put(line)


Body = Callable[[Server, Recorder], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def serving(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    """Run a test body against a live Server, on asyncio's loop and on uvloop's.

    Workers run uvloop, whose transports are not asyncio's: both must work.
    """
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    async def main(body: Body) -> None:
        recorder = Recorder()
        sock = bind("127.0.0.1", 0)
        # manage_gc off: this test process is not a worker whose collector to tune
        settings = ServerSettings(manage_gc=False)
        server = Server(sock, SessionOptions(shell=recorder.shell, connect_maxwait=0.2), settings)
        task = asyncio.get_running_loop().create_task(server.serve({}))
        try:
            await async_wait_until(lambda: server.listening, TIMEOUT, "listening")
            await body(server, recorder)
        finally:
            server.stop("quit")
            await asyncio.wait_for(task, TIMEOUT)
            sock.close()

    def run(body: Body) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main(body))

    return run


async def _client(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = server.sock.getsockname()[1]
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), TIMEOUT)


def test_admission_refuses_with_its_line_and_counts_the_reason(serving: Any) -> None:
    serving(_admission_refuses)


async def _admission_refuses(running: Server, _recorder: Recorder) -> None:
    admitted: list[str] = []

    def admit(arrival: Arrival) -> Refusal | None:
        if admitted:
            return Refusal("full", "Server full, try again later.\r\n")
        admitted.append(arrival.peer)
        return None

    running.admit = admit
    first_r, first_w = await _client(running)
    await _read_until(first_r, IAC_DO_TTYPE)
    second_r, second_w = await _client(running)
    refused = await asyncio.wait_for(second_r.read(), TIMEOUT)  # to EOF
    assert refused == b"Server full, try again later.\r\n"
    assert running.refused == {"full": 1}
    assert len(running.sessions.live) == 1 and running.sessions.accepted == 1
    assert admitted == ["127.0.0.1:{}".format(first_w.get_extra_info("sockname")[1])]
    for writer in (first_w, second_w):
        writer.close()


def test_stage_takes_its_bytes_and_the_session_gets_the_rest(serving: Any) -> None:
    serving(_stage_takes_its_bytes)


async def _stage_takes_its_bytes(running: Server, recorder: Recorder) -> None:
    headers: list[bytes] = []

    async def header_stage(arrival: Arrival) -> None:
        data = b""
        while b"\r\n" not in data:
            chunk = await arrival.read()
            assert chunk, "EOF before the header"
            data += chunk
        header, _, rest = data.partition(b"\r\n")
        headers.append(header)
        arrival.unread(rest)

    running.stages.append(header_stage)
    reader, writer = await _client(running)
    # header and first line in one segment: the stage must give the line back
    writer.write(b"HEADER 10.1.2.3\r\nafter the header\r\n")
    got = await _read_until(reader, IAC_DO_TTYPE)
    assert got == IAC_DO_TTYPE  # nothing of the header echoed or answered
    writer.write(bytes((255, 252, 24)))  # WONT TTYPE: negotiation over
    await _read_until(reader, b"ready\r\n")
    line = await asyncio.wait_for(recorder.lines.get(), TIMEOUT)
    assert line.strip() == "after the header"
    assert headers == [b"HEADER 10.1.2.3"]
    writer.close()


def test_stage_holds_back_the_session_until_it_is_done(serving: Any) -> None:
    serving(_stage_holds_back)


async def _stage_holds_back(running: Server, _recorder: Recorder) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def waiting_stage(arrival: Arrival) -> None:
        entered.set()
        await release.wait()

    running.stages.append(waiting_stage)
    reader, writer = await _client(running)
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    assert running.sessions.accepted == 0 and not running.sessions.live
    release.set()
    await _read_until(reader, IAC_DO_TTYPE)
    assert running.sessions.accepted == 1
    writer.close()


def test_failing_stage_drops_only_its_connection(
    serving: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shardd.arrival"):
        serving(_failing_stage)
    # one line, naming the peer and what was wrong
    assert [r.getMessage().split(": ", 1) for r in caplog.records] == [
        [ANY_PEER, "connection dropped before its session: ValueError: not a header"]
    ]


async def _failing_stage(running: Server, _recorder: Recorder) -> None:
    async def picky_stage(arrival: Arrival) -> None:
        data = await arrival.read()
        if data.startswith(b"BAD"):
            raise ValueError("not a header")
        arrival.unread(data)

    running.stages.append(picky_stage)
    bad_r, bad_w = await _client(running)
    bad_w.write(b"BAD\r\n")
    assert await asyncio.wait_for(bad_r.read(), TIMEOUT) == b""
    good_r, good_w = await _client(running)
    good_w.write(b"fine\r\n")
    await _read_until(good_r, IAC_DO_TTYPE)
    assert running.sessions.accepted == 1
    for writer in (bad_w, good_w):
        writer.close()


def test_client_gone_during_a_stage_cancels_it(serving: Any) -> None:
    serving(_client_gone_during_a_stage)


async def _client_gone_during_a_stage(running: Server, _recorder: Recorder) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_stage(arrival: Arrival) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()  # never done: only the lost connection ends it
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running.stages.append(slow_stage)
    _reader, writer = await _client(running)
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()  # a reset
    await asyncio.wait_for(cancelled.wait(), TIMEOUT)
    assert running.sessions.accepted == 0 and not running.sessions.live


def test_a_client_flooding_commands_cannot_keep_others_waiting(serving: Any) -> None:
    """3 000 000 NAWS updates from one client stalled the others up to 2.6 s: uvloop
    reads up to 32 chunks of 256 KiB a turn, and each was parsed whole. Now a
    session parses a bounded amount a turn: another client's AYT is answered
    while the flood is still being worked through (an order, not a time)."""
    serving(_flood_and_bystander)


async def _flood_and_bystander(running: Server, _recorder: Recorder) -> None:
    flood_r, flood_w = await _client(running)
    await _read_until(flood_r, IAC_DO_TTYPE)
    flood_w.write(bytes((255, 252, 24, 255, 251, 31)))  # WONT TTYPE, WILL NAWS
    await async_wait_until(lambda: len(running.sessions.live) == 1, TIMEOUT, "the flooder")
    (flooder,) = running.sessions.live
    await async_wait_until(lambda: flooder.engine.remote_enabled(31), TIMEOUT, "NAWS on")
    updates = 300_000  # 2.7 MB; the last one sets a width nothing else does
    naws = [bytes((255, 250, 31, 0, 1 + i % 200, 0, 24, 255, 240)) for i in range(updates - 1)]
    flood_w.write(b"".join(naws) + bytes((255, 250, 31, 16, 146, 0, 24, 255, 240)))
    bystander_r, bystander_w = await _client(running)
    await _read_until(bystander_r, IAC_DO_TTYPE)
    bystander_w.write(bytes((255, 246)))  # AYT
    await _read_until(bystander_r, b"[Yes]")
    assert flooder.get_extra_info("cols") != 4242, "the whole flood was parsed first"
    await async_wait_until(lambda: flooder.get_extra_info("cols") == 4242, 60, "the flood")
    for writer in (flood_w, bystander_w):
        writer.close()
