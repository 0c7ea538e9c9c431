"""The bus across hosts through a real ``redis-server``: two ``shardd serve``
processes ("hosts" a and b, two workers each) on one machine."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from bus_peers import BusPeer
from conftest import ServerProcess, run_shardd, wait_until
from redis_peer import RedisServer

from workers.bus.redis_backend import WHO_TTL_ENV

SHELL = ("--shell", "tests.shells_for_tests:bus", "--connect-maxwait", "0.2")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.close()


@pytest.fixture
def peers() -> Iterator[list[BusPeer]]:
    opened: list[BusPeer] = []
    yield opened
    for peer in opened:
        peer.close()


def start_host(
    serve: Callable[..., ServerProcess],
    redis_server: RedisServer,
    host: str,
    *args: str,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    server = serve(
        "--workers",
        str(workers),
        "--bus",
        redis_server.url,
        "--bus-host",
        host,
        *SHELL,
        *args,
        env=env,
    )
    linked = max(workers, 1)
    wait_until(
        lambda: server.log_text().count("linked (worker") >= linked,
        timeout=20,
        what=f"{linked} workers of host {host} linked to redis",
    )
    return server


def open_peers(server: ServerProcess, opened: list[BusPeer], shards: int) -> list[BusPeer]:
    """One session on each of the server's ``shards`` shards (SO_REUSEPORT
    chooses the shard: connect until each has one; the rest are closed)."""
    found: dict[int, BusPeer] = {}
    for _ in range(200):
        peer = BusPeer(server.port)
        if peer.shard in found:
            peer.close()
        else:
            found[peer.shard] = peer
            opened.append(peer)
        if len(found) == shards:
            return [found[shard] for shard in sorted(found)]
    raise AssertionError(f"sessions landed on shards {sorted(found)} only")


def subscribers(client: redis.Redis, channel: str) -> int:
    reply: Any = client.pubsub_numsub(f"shardd:bus:ch:{channel}")
    return int(reply[0][1])


def status(server: ServerProcess) -> dict[str, Any]:
    result = run_shardd("status", "--json", "--port", str(server.port))
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def who(peer: BusPeer) -> list[list[Any]]:
    peer.send("who")
    found: list[list[Any]] = json.loads(peer.expect("WHO ").removeprefix("WHO "))
    return found


def test_sessions_on_two_hosts_and_shards_publish_and_send(
    serve: Callable[..., ServerProcess], redis_server: RedisServer, peers: list[BusPeer]
) -> None:
    host_a = start_host(serve, redis_server, "a")
    host_b = start_host(serve, redis_server, "b")
    a0, a1 = open_peers(host_a, peers, 2)
    (b0,) = open_peers(host_b, peers, 1)
    assert {a0.shard, a1.shard} == {0, 1}
    # status confirms: two workers, each serving one of the two sessions
    pids = {worker["shard"]: worker["pid"] for worker in status(host_a)["workers"]}
    assert pids == {a0.shard: a0.pid, a1.shard: a1.pid}
    assert a0.id.startswith(f"a/{a0.pid}.") and a1.id.startswith(f"a/{a1.pid}.")
    assert b0.id.startswith(f"b/{b0.pid}.")

    client = redis.Redis(port=redis_server.port)
    for peer in (a0, a1, b0):
        peer.command("sub room")
    wait_until(lambda: subscribers(client, "room") == 3, what="3 workers subscribed to room")

    b0.command("pub room hello from b")
    for peer in (a0, a1, b0):
        assert peer.messages("room", 1) == [(b0.id, "hello from b")]
    a1.command("pub room and from a")
    for peer in (a0, a1, b0):
        assert peer.messages("room", 1) == [(a1.id, "and from a")]

    # direct messages, between hosts and between the shards of one host
    a0.send(f"send {b0.id} psst")
    assert a0.expect("SENT ") == "SENT True"
    assert b0.expect("DM ") == f"DM {a0.id} " + json.dumps("psst")
    b0.send(f"send {a1.id} back")
    assert b0.expect("SENT ") == "SENT True"
    assert a1.expect("DM ") == f"DM {b0.id} " + json.dumps("back")
    # no such session on a live worker, on an unknown worker, not an id at all
    for nobody in (f"{b0.id}999", "b/1.1", "nonsense"):
        a0.send(f"send {nobody} lost")
        assert a0.expect("SENT ") == "SENT False"

    # a worker with no subscriber left unsubscribes from Redis
    a1.command("unsub room")
    wait_until(lambda: subscribers(client, "room") == 2, what="a's shard leaving room")
    b0.command("pub room after")
    assert a0.messages("room", 1) == [(b0.id, "after")]
    assert not any(line.startswith("MSG room") for line in a1.lines)
    client.close()


def test_who_spans_hosts_and_forgets_a_killed_host(
    serve: Callable[..., ServerProcess], redis_server: RedisServer, peers: list[BusPeer]
) -> None:
    env = {WHO_TTL_ENV: "1"}
    host_a = start_host(serve, redis_server, "a", env=env)
    host_b = start_host(serve, redis_server, "b", env=env)
    a0, a1 = open_peers(host_a, peers, 2)
    b0, b1 = open_peers(host_b, peers, 2)
    for peer, name in ((a0, "alice"), (a1, "anna"), (b0, "bob"), (b1, "bert")):
        peer.command(f"name {name}")

    def listed() -> dict[str, list[Any]]:
        return {entry[0]: entry for entry in who(a0)}

    everyone = {a0.id, a1.id, b0.id, b1.id}
    names = {"alice", "anna", "bob", "bert"}
    wait_until(
        lambda: {entry[4] for entry in listed().values()} == names,
        what="who() listing both hosts, named",
    )
    assert set(listed()) == everyone
    entries = listed()
    for peer, name, host in ((a0, "alice", "a"), (a1, "anna", "a"), (b0, "bob", "b")):
        _id, shard, peer_address, _term, entry_name, entry_host = entries[peer.id]
        assert (shard, entry_name, entry_host) == (peer.shard, name, host)
        assert peer_address.startswith("127.0.0.1")
    assert {entry[0] for entry in who(b1)} == everyone

    # closing a session of another host, with a last line
    a0.send(f"close {b1.id} the end")
    assert a0.expect("CLOSED ") == "CLOSED True"
    assert b1.closed()
    assert "the end" in b1.lines
    wait_until(lambda: set(listed()) == everyone - {b1.id}, what="b1 gone from who()")

    # a host killed without a word: its entries expire (the TTL, 1 s here)
    host_b.stop(signal.SIGKILL)
    wait_until(lambda: set(listed()) == {a0.id, a1.id}, timeout=10, what="b's entries expiring")


def test_one_publisher_order_across_hosts(
    serve: Callable[..., ServerProcess], redis_server: RedisServer, peers: list[BusPeer]
) -> None:
    host_a = start_host(serve, redis_server, "a")
    host_b = start_host(serve, redis_server, "b", workers=1)
    a0, a1 = open_peers(host_a, peers, 2)
    (b0,) = open_peers(host_b, peers, 1)
    client = redis.Redis(port=redis_server.port)
    a0.command("sub numbers")
    a1.command("sub numbers")
    wait_until(lambda: subscribers(client, "numbers") == 2, what="a's shards subscribed")
    b0.command("pubn numbers 1000")
    expected = [(b0.id, n) for n in range(1000)]
    assert a0.messages("numbers", 1000) == expected
    assert a1.messages("numbers", 1000) == expected
    client.close()


def test_a_worker_killed_mid_stream(
    serve: Callable[..., ServerProcess], redis_server: RedisServer, peers: list[BusPeer]
) -> None:
    """The other shard goes on receiving in order; the dead worker's channels
    and who entries leave Redis; its replacement links and is listed."""
    env = {WHO_TTL_ENV: "1"}
    host_a = start_host(serve, redis_server, "a", env=env)
    host_b = start_host(serve, redis_server, "b", workers=1, env=env)
    a0, a1 = open_peers(host_a, peers, 2)
    (b0,) = open_peers(host_b, peers, 1)
    client = redis.Redis(port=redis_server.port)
    a0.command("sub numbers")
    a1.command("sub numbers")
    wait_until(lambda: subscribers(client, "numbers") == 2, what="a's shards subscribed")
    b0.send("pubn numbers 2000")
    a1.expect("MSG numbers ")  # the stream is flowing
    os.kill(a1.pid, signal.SIGKILL)
    assert a0.messages("numbers", 2000) == [(b0.id, n) for n in range(2000)]
    b0.expect("OK pubn")
    assert a1.closed()

    # Redis closed the dead worker's connections: its subscription went with them
    wait_until(lambda: subscribers(client, "numbers") == 1, what="the dead worker unsubscribed")
    host_a.wait_for_log(rf"shard {a1.shard}: worker (?!{a1.pid})\d+ started")
    wait_until(
        lambda: host_a.log_text().count("linked (worker a/") >= 3, what="the replacement linked"
    )
    newcomers = open_peers(host_a, peers, 2)
    (fresh,) = [peer for peer in newcomers if peer.shard == a1.shard]
    assert fresh.pid != a1.pid
    live = {a0.id, b0.id} | {peer.id for peer in newcomers}
    wait_until(
        lambda: {entry[0] for entry in who(b0)} == live,
        what="who() without the dead worker's session, with the new one",
    )
    assert host_a.proc.poll() is None
    client.close()


def test_a_slow_subscriber_drops_what_its_queue_cannot_hold(
    serve: Callable[..., ServerProcess], redis_server: RedisServer, peers: list[BusPeer]
) -> None:
    from workers.bus.api import QUEUE_LIMIT

    host_a = start_host(serve, redis_server, "a", workers=1)
    host_b = start_host(serve, redis_server, "b", workers=1)
    slow, fast = BusPeer(host_a.port), BusPeer(host_a.port)
    peers += [slow, fast]
    (b0,) = open_peers(host_b, peers, 1)
    client = redis.Redis(port=redis_server.port)
    slow.command("slowsub flood")
    fast.command("sub flood")
    wait_until(lambda: subscribers(client, "flood") == 1, what="a subscribed to flood")
    b0.command(f"pubn flood {QUEUE_LIMIT + 50}")
    # the reader that reads gets every message; the one that does not, its first QUEUE_LIMIT
    assert fast.messages("flood", QUEUE_LIMIT + 50) == [(b0.id, n) for n in range(QUEUE_LIMIT + 50)]

    def dropped() -> int:
        slow.send("dropped flood")
        return int(slow.expect("DROPPED ").split()[1])

    wait_until(lambda: dropped() == 50, what="50 messages dropped for the slow subscriber")
    client.close()


def test_redis_restarted_during_a_test(
    serve: Callable[..., ServerProcess], redis_server: RedisServer, peers: list[BusPeer]
) -> None:
    host_a = start_host(serve, redis_server, "a")
    host_b = start_host(serve, redis_server, "b", workers=1)
    a0, a1 = open_peers(host_a, peers, 2)
    (b0,) = open_peers(host_b, peers, 1)
    for peer in (a0, a1):
        peer.command("sub room")
    client = redis.Redis(port=redis_server.port)
    wait_until(lambda: subscribers(client, "room") == 2, what="a's shards subscribed")
    b0.command("pub room before")
    assert a0.messages("room", 1) == a1.messages("room", 1) == [(b0.id, "before")]
    client.close()

    redis_server.stop(signal.SIGTERM)
    unreachable = f"bus: redis at 127.0.0.1:{redis_server.port} unreachable"
    for server, workers in ((host_a, 2), (host_b, 1)):
        wait_until(
            lambda server=server, workers=workers: server.log_text().count(unreachable) >= workers,
            what="every worker noticing the outage",
        )
    b0.command("pub room while down")
    b0.command("pub room still down")
    redis_server.start()
    for server, workers in ((host_a, 2), (host_b, 1)):
        wait_until(
            lambda server=server, workers=workers: (
                server.log_text().count("bus: redis back after") >= workers
            ),
            timeout=20,
            what="every worker back",
        )

    client = redis.Redis(port=redis_server.port)
    wait_until(lambda: subscribers(client, "room") == 2, what="a's shards subscribed again")
    b0.command("pub room after")
    assert a0.messages("room", 1) == [(b0.id, "after")]
    assert a1.messages("room", 1) == [(b0.id, "after")]
    assert not any("down" in line for line in a0.lines + a1.lines)
    # who() was rewritten into the new Redis
    wait_until(lambda: {a0.id, a1.id, b0.id} <= {entry[0] for entry in who(b0)}, what="who")
    client.close()

    # the servers stayed up; the outage is two lines a worker, the loss counted
    assert host_a.proc.poll() is None and host_b.proc.poll() is None
    assert host_a.log_text().count(unreachable) == 2
    assert host_b.log_text().count(unreachable) == 1
    lost = host_b.wait_for_log(r"bus: redis back after [\d.]+ s; (\d+) messages lost")
    assert int(lost.group(1)) >= 2
    for server in (host_a, host_b):
        assert "Traceback" not in server.log_text()
    counted = status(host_b)["supervisor"]["bus"]
    assert counted["lost"] == int(lost.group(1)) and counted["outages"] == 1
    assert status(host_a)["supervisor"]["bus"]["outages"] == 2  # one a worker
    assert "lost in 1 outages of redis" in run_shardd("status", "--port", str(host_b.port)).stdout


def test_serving_starts_while_redis_is_down_and_links_when_it_is_up(
    serve: Callable[..., ServerProcess], tmp_path: Path, peers: list[BusPeer]
) -> None:
    redis_server = RedisServer(tmp_path)
    try:
        server = serve("--workers", "0", "--bus", redis_server.url, "--bus-host", "a", *SHELL)
        server.wait_for_log(f"bus: redis at 127.0.0.1:{redis_server.port} unreachable")
        (peer,) = open_peers(server, peers, 1)
        peer.command("sub room")
        peer.command("pub room alone")  # the local subscriber still hears it
        assert peer.messages("room", 1) == [(peer.id, "alone")]
        redis_server.start()
        server.wait_for_log("linked \\(worker a/", timeout=15)
        server.wait_for_log(r"bus: redis back after [\d.]+ s; 1 messages lost")
    finally:
        redis_server.close()


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (("--bus", "redis://127.0.0.1:0/0"), "bus: port must be 1 to 65535"),
        (("--bus", "redis:///0"), "bus: 'redis:///0' names no host"),
        (("--bus", "redis://127.0.0.1:6379/one"), "bus: database must be a number"),
        (("--bus", "redis://127.0.0.1:6379/0?x=1"), "bus: 'redis://127.0.0.1:6379/0?x=1': no"),
        (("--bus-host", "a/b"), "bus-host: 'a/b' must be 1 to 64 letters"),
    ],
)
def test_bad_bus_settings_are_one_line_and_exit_2(flags: tuple[str, ...], problem: str) -> None:
    result = run_shardd("serve", "--workers", "0", "--port", "0", *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"shardd: error: {problem}"), lines
