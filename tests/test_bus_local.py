"""The local backend's worker side (workers/bus/local.py) against a supervisor
played by the test: a real socketpair, the worker's real channel protocol, and
frames read and written with ``workers.ipc`` as the supervisor does.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from conftest import async_wait_until

from workers import ipc
from workers.bus.hub import BusHub
from workers.bus.local import LocalBackend
from workers.bus.session import SessionHandle
from workers.channel import SupervisorChannel, _IpcProtocol
from workers.server import TelnetServer


class Supervisor:
    """The test's end of the worker's channel: the frames the worker wrote."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = ipc.Decoder()
        self.frames: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return self.frames
            self.frames.extend(self.decoder.feed(data))

    def whos(self) -> list[dict[str, Any]]:
        return [f for f in self.read() if f["t"] == ipc.BUS_WHO]

    def answer(self, who: dict[str, Any], sessions: list[list[Any]]) -> None:
        frame = ipc.pack(ipc.BUS_WHO_REPLY, req=who["req"], src=0, sessions=sessions, last=True)
        self.sock.sendall(frame)


async def _worker() -> tuple[BusHub, LocalBackend, Supervisor]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    channel = SupervisorChannel(ours, shard=0)
    loop = asyncio.get_running_loop()
    _t, channel.ipc = await loop.create_unix_connection(lambda: _IpcProtocol(channel), sock=ours)
    hub = BusHub(prefix=f"{os.getpid()}.")
    backend = LocalBackend(hub, channel)
    hub.backend = backend
    await backend.start()
    return hub, backend, Supervisor(theirs)


def _session(hub: BusHub, n: int) -> SessionHandle:
    protocol = TelnetServer(shell=None)
    protocol.session_id = n
    return hub.open(protocol)


ELSEWHERE = ["9.1", 1, "127.0.0.1:5", "xterm", "bob", "here"]


async def test_callers_of_who_share_one_listing_and_a_later_one_asks_again() -> None:
    """20 shells asking who() at once cost one listing of every worker, not 20."""
    hub, backend, sup = await _worker()
    alice = _session(hub, 1)
    asking = [asyncio.create_task(alice.who()) for _ in range(20)]
    await async_wait_until(sup.whos, what="the worker's bus_who")
    named = asyncio.create_task(alice.who(name="Bob"))  # asked alone, at once
    await async_wait_until(lambda: len(sup.whos()) == 2, what="the by-name bus_who")
    first, by_name = sup.whos()
    assert "name" not in first and by_name["name"] == "Bob"
    sup.answer(first, [ELSEWHERE])
    sup.answer(by_name, [ELSEWHERE])
    for found in await asyncio.gather(*asking):
        assert [s.id for s in found] == [alice.id, "9.1"]
    assert [s.name for s in await named] == ["bob"]
    assert len(sup.whos()) == 2  # every caller was answered by those two
    later = asyncio.create_task(alice.who())  # asked after: a listing of its own
    await async_wait_until(lambda: len(sup.whos()) == 3, what="a fresh bus_who")
    sup.answer(sup.whos()[2], [])
    assert [s.id for s in await later] == [alice.id]
    await backend.close()


async def test_a_worker_answers_who_by_name_from_its_index() -> None:
    hub, backend, sup = await _worker()
    alice, bob = _session(hub, 1), _session(hub, 2)
    alice.name, bob.name = "Alice", "bob"
    backend.on_message({"t": ipc.BUS_WHO, "req": 7, "src": 99, "name": "ALICE"})
    backend.on_message({"t": ipc.BUS_WHO, "req": 8, "src": 99})
    await async_wait_until(
        lambda: len([f for f in sup.read() if f["t"] == ipc.BUS_WHO_REPLY]) == 2,
        what="two answers",
    )
    replies = {f["req"]: f for f in sup.frames if f["t"] == ipc.BUS_WHO_REPLY}
    assert [entry[0] for entry in replies[7]["sessions"]] == [alice.id]
    assert {entry[0] for entry in replies[8]["sessions"]} == {alice.id, bob.id}
    await backend.close()
