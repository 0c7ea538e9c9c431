"""The message bus across shards: real ``shardd serve --workers 2``, real sockets.

Sessions are placed on both shards (SO_REUSEPORT spreads connections: the
test connects until it has sessions on both, and ``status`` confirms the
worker pids) and talk through ``tests.shells_for_tests:bus``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import Any

import pytest
from bus_peers import BusPeer
from conftest import ServerProcess, run_shardd, wait_until

from workers import ipc
from workers.bus.api import QUEUE_LIMIT

BUS_SHELL = ("--shell", "tests.shells_for_tests:bus", "--connect-maxwait", "0.2")


def _status(server: ServerProcess) -> dict[str, Any]:
    result = run_shardd("status", "--json", "--port", str(server.port))
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def _two_shards(server: ServerProcess, per_shard: int = 1) -> tuple[list[BusPeer], list[BusPeer]]:
    """Sessions on shard 0 and on shard 1, ``per_shard`` each at least."""
    server.wait_for_log(r"shard 1: worker \d+ serving")
    server.wait_for_log(r"shard 0: worker \d+ serving")
    by_shard: dict[int, list[BusPeer]] = {0: [], 1: []}
    for _ in range(200):
        peer = BusPeer(server.port)
        by_shard[peer.shard].append(peer)
        if min(len(p) for p in by_shard.values()) >= per_shard:
            break
    assert min(len(p) for p in by_shard.values()) >= per_shard, "connections all on one shard"
    pids = {w["shard"]: w["pid"] for w in _status(server)["workers"]}
    assert {p.pid for p in by_shard[0]} == {pids[0]} and {p.pid for p in by_shard[1]} == {pids[1]}
    for extra in by_shard[0][per_shard:] + by_shard[1][per_shard:]:
        extra.close()
    return by_shard[0][:per_shard], by_shard[1][:per_shard]


@pytest.fixture
def two(serve: Any) -> ServerProcess:
    server: ServerProcess = serve("--workers", "2", *BUS_SHELL)
    return server


def test_publish_send_who_and_close_across_shards(two: ServerProcess) -> None:
    (a,), (b,) = _two_shards(two)
    a.command("sub room")
    b.command("sub room")
    wait_until(lambda: _status(two)["supervisor"]["bus_relay"]["subscriptions"] == 2)
    b.command("pub room hello")
    assert a.messages("room", 1) == [(b.id, "hello")]
    assert b.messages("room", 1) == [(b.id, "hello")]
    assert a.command(f"send {b.id} psst", "SENT") == "SENT True"
    assert b.expect("DM ") == f'DM {a.id} "psst"'
    assert a.command(f"send {b.pid}.9999 nobody", "SENT") == "SENT False"
    a.command("name alice")
    who = json.loads(b.command("who", "WHO ")[4:])
    assert {(s[0], s[1], s[4]) for s in who} == {(a.id, a.shard, "alice"), (b.id, b.shard, "")}
    assert a.command(f"close {b.id} Goodbye from alice", "CLOSED") == "CLOSED True"
    assert b.closed()
    assert "Goodbye from alice" in "\n".join(b.lines)
    who = json.loads(a.command("who", "WHO ")[4:])
    assert [s[0] for s in who] == [a.id]
    status = _status(two)
    assert status["supervisor"]["bus"]["out"] == 3  # the publication and two sends
    assert status["supervisor"]["bus_relay"]["subscriptions"] == 1  # b's went with it


def test_one_frame_per_worker_for_a_thousand_subscribers(two: ServerProcess) -> None:
    """1000 subscribers on the other shard: the message crosses the IPC once."""
    (a,), (b,) = _two_shards(two)
    listeners = [b]
    while len(listeners) < 1000:
        # connect many at once: their negotiations' waits overlap
        batch = [BusPeer(two.port, identify=False) for _ in range(200)]
        for peer in batch:
            peer.send("id")
        for peer in batch:
            peer.identify()
            if peer.shard == b.shard and len(listeners) < 1000:
                peer.send("sub crowd")
                listeners.append(peer)
            else:
                peer.close()
    for peer in listeners:
        peer.expect("OK sub") if peer is not b else peer.command("sub crowd")
    relay = _status(two)["supervisor"]["bus_relay"]
    a.command("pub crowd hear ye")
    for peer in listeners:
        assert peer.messages("crowd", 1) == [(a.id, "hear ye")]
    after = _status(two)["supervisor"]["bus_relay"]
    assert after["published"] - relay["published"] == 1
    assert after["relayed"] - relay["relayed"] == 1
    for peer in listeners:
        peer.close()


def test_order_from_one_publisher_across_shards(two: ServerProcess) -> None:
    (a,), (b,) = _two_shards(two)
    b.command("sub seq")
    wait_until(lambda: _status(two)["supervisor"]["bus_relay"]["subscriptions"] == 1)
    got: list[int] = []
    for _ in range(10):  # 100 at a time: fewer than a queue holds, so none dropped
        a.command("pubn seq 100")
        got += [data for _sender, data in b.messages("seq", 100)]
    assert got == list(range(100)) * 10 and b.command("dropped seq", "DROPPED") == "DROPPED 0"


def test_a_slow_subscriber_loses_messages_the_others_do_not(two: ServerProcess) -> None:
    (a, _a2), (b, c) = _two_shards(two, per_shard=2)
    b.command("slowsub news")
    c.command("sub news")
    wait_until(lambda: _status(two)["supervisor"]["bus_relay"]["subscriptions"] == 1)
    sent = 0
    got: list[int] = []
    for _ in range(5):
        a.command("pubn news 100")
        sent += 100
        got += [data for _s, data in c.messages("news", 100)]
    assert got == list(range(100)) * 5
    assert b.command("dropped news", "DROPPED") == f"DROPPED {sent - QUEUE_LIMIT}"
    wait_until(lambda: _status(two)["supervisor"]["bus"]["dropped"] == sent - QUEUE_LIMIT)


def test_a_killed_worker_is_forgotten_and_the_other_goes_on(two: ServerProcess) -> None:
    (a, a2), (b, _b2) = _two_shards(two, per_shard=2)
    for peer in (a, b):
        peer.command("sub room")
    b.command("sub only-b")
    wait_until(lambda: _status(two)["supervisor"]["bus_relay"]["subscriptions"] == 3)
    b.send("pubn room 100000")  # mid-stream when it dies
    a.messages("room", 10)
    os.kill(b.pid, signal.SIGKILL)
    two.wait_for_log(rf"worker {b.pid} killed by signal 9")
    relay = wait_until(
        lambda: (r := _status(two)["supervisor"]["bus_relay"])["subscriptions"] == 1 and r,
        what="the relay to forget the dead worker",
    )
    assert relay["channels"] == 1 and relay["workers"] == 1 and relay["who_pending"] == 0
    a.lines.clear()
    a2.command("pub room still here")
    a.take(lambda line: line == f'MSG room {a2.id} "still here"')
    who = json.loads(a.command("who", "WHO ")[4:])
    assert b.id not in [s[0] for s in who]


def test_a_garbage_bus_frame_is_refused_and_the_supervisor_stays(two: ServerProcess) -> None:
    (a,), (b,) = _two_shards(two)
    b.send("garbage")  # a bus_pub with a channel name over MAX_CHANNEL, past the hub's check
    two.wait_for_log(rf"worker {b.pid} sent a bad frame \(bus_pub: channel name longer")
    two.wait_for_log(r"shard 1: worker \d+ serving")
    assert two.proc.poll() is None
    a.command("sub room")
    a.command("pub room fine")
    assert a.messages("room", 1) == [(a.id, "fine")]
    assert len(_status(two)["workers"]) == 2


def test_bus_frames_are_checked() -> None:
    decoder = ipc.Decoder()
    good = ipc.pack(ipc.BUS_PUB, ch="room", sender="1.2", p=b"\xa2hi")
    assert next(iter(decoder.feed(good)))["ch"] == "room"
    for bad in (
        ipc.pack(ipc.BUS_PUB, ch="room", sender=1, p=b""),
        ipc.pack(ipc.BUS_PUB, ch="room", sender=None, p=b"x" * (64 * 1024 + 1)),
        ipc.pack(ipc.BUS_SEND, to="1.2", sender=None, p=b"", req="1", src=0),
        ipc.pack(ipc.BUS_WHO_REPLY, req=1, src=0, sessions=[["1.2", 0, "p", "t", "n"]], last=True),
        ipc.pack(ipc.BUS_CLOSE, to="1.2", msg="x" * 5000, req=1, src=0),
    ):
        with pytest.raises(ipc.FrameError):
            list(ipc.Decoder().feed(bad))


def test_bus_metrics(serve: Any) -> None:
    server: ServerProcess = serve("--workers", "2", *BUS_SHELL, "--metrics", "127.0.0.1:0")
    match = server.wait_for_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
    (a,), (b,) = _two_shards(server)
    a.command("sub room")
    b.command("pub room hi")
    a.messages("room", 1)

    def scrape() -> str:
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    text = wait_until(
        lambda: (
            (t := scrape())
            and f'shardd_bus_messages_in_total{{backend="local",shard="{a.shard}"}} 1.0' in t
            and t
        ),
        what="the worker's report of the message in",
    )
    assert f'shardd_bus_messages_out_total{{backend="local",shard="{b.shard}"}} 1.0' in str(text)
    assert "shardd_bus_relayed_total 1.0" in str(text)
