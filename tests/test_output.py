"""Output: what a session writes in one loop turn goes out in one write.

Segments are counted on the client's socket (TCP_INFO ``tcpi_data_segs_in``):
on loopback each write of the server's is one segment. Real loopback sockets,
the ``harness`` fixture; waits are deadlines on conditions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import async_wait_until
from server_peers import TIMEOUT, EngineClient, cmd

from workers.server import TelnetServer
from workers.server_base import QUEUE_FLUSH_AT
from workers.telnet.telopt import AYT, NOP


async def _session(harness: Any) -> tuple[Any, Any, EngineClient]:
    port = await harness.listen(TelnetServer, shell=harness.shell, connect_maxwait=30.0)
    peer = await harness.engine_client(port)
    proto = await harness.protocol()
    run = await harness.shell_of(proto)
    # what the server sent while negotiating has arrived: an AYT round trip
    before = len(peer.inband)
    peer.send_command(AYT)
    await async_wait_until(lambda: b"[Yes]" in peer.inband[before:], TIMEOUT, "AYT answered")
    return proto, run, peer


async def test_what_a_shell_writes_in_one_turn_goes_out_in_one_segment(harness) -> None:
    _proto, run, peer = await _session(harness)
    segments = peer.data_segments_in()
    before = len(peer.inband)
    for word in ("You", " see", " a", " \xff", " room.", "\r\n", "> "):
        run.writer.write(word.encode("latin-1"))
    await async_wait_until(lambda: peer.inband.endswith(b"> "), TIMEOUT)
    assert bytes(peer.inband[before:]) == b"You see a \xff room.\r\n> "
    assert peer.data_segments_in() - segments == 1


async def test_commands_after_writes_keep_their_order_and_segment(harness) -> None:
    _proto, run, peer = await _session(harness)
    segments = peer.data_segments_in()
    run.writer.write("Password: ")
    run.writer.iac(NOP)
    await async_wait_until(lambda: peer.wire.endswith(cmd(NOP)), TIMEOUT)
    assert peer.wire.endswith(b"Password: " + cmd(NOP))
    assert peer.data_segments_in() - segments == 1


async def test_what_was_written_goes_out_before_close(harness) -> None:
    port = await harness.listen(TelnetServer, shell=harness.shell, connect_maxwait=0.2)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    run = await harness.shell_of(proto)
    run.writer.write("Goodbye.\r\n")
    run.writer.close()
    data = await client.read_to_eof()
    assert data.endswith(b"Goodbye.\r\n")


async def test_a_turn_that_writes_much_writes_at_once(harness) -> None:
    proto, run, peer = await _session(harness)
    run.writer.write(b"x" * 10)
    assert proto._queued is not None  # held for the turn's end
    run.writer.write(b"y" * QUEUE_FLUSH_AT)
    assert proto._queued is None  # written now: drain() sees the transport's buffer
    await async_wait_until(lambda: len(peer.inband) >= 10 + QUEUE_FLUSH_AT, TIMEOUT)
    await asyncio.wait_for(run.writer.drain(), TIMEOUT)


async def test_one_large_write_is_not_held_for_the_turn(harness) -> None:
    proto, run, peer = await _session(harness)
    run.writer.write(b"z" * QUEUE_FLUSH_AT)
    assert proto._queued is None
    await async_wait_until(lambda: len(peer.inband) >= QUEUE_FLUSH_AT, TIMEOUT)
