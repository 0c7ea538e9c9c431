"""BaseServer and TelnetServer against the seed API (``server_base`` of telnetlib3 1.x).

Every test runs a real loopback listener (``loop.create_server``) and a real
socket client: ``RawClient`` sends exactly the bytes a test gives it,
``EngineClient`` is a telnet client (our engine in the client role) that answers
what the server asks. Waits are deadlines on conditions, never sleeps.
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import logging
import socket
import struct
import time
from typing import Any

import pytest
from conftest import async_wait_until
from server_peers import TIMEOUT, EngineClient, cmd, sb

from workers import server_base
from workers.server import TelnetServer
from workers.server_base import BaseServer
from workers.stream_reader import LineTooLong
from workers.telnet import options
from workers.telnet.telopt import (
    AYT,
    BINARY,
    DO,
    DONT,
    ECHO,
    ENV_USERVAR,
    ENV_VAR,
    LINEMODE,
    NAWS,
    NEW_ENVIRON,
    NOP,
    SGA,
    TM,
    TSPEED,
    TTYPE,
    WILL,
    WONT,
    XDISPLOC,
)

# Rounding slack for "not before connect_maxwait": the loop's timers may fire a
# clock tick early, and _when_connected is taken just before the timer is armed.
EARLY = 0.02


class Recording(BaseServer):
    """A BaseServer that records the negotiation callbacks it receives.

    ``requests`` are (verb, option) pairs sent with ``writer.iac`` from
    begin_negotiation; ``advance`` is what negotiation_should_advance answers
    (None: the base implementation).
    """

    requests: tuple[tuple[int, int], ...] = ()
    advance: bool | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.calls.append(("connection_made", transport))

    def begin_negotiation(self) -> None:
        super().begin_negotiation()
        self.calls.append(("begin_negotiation", self.reader, self.writer, self._transport))
        for verb, opt in self.requests:
            self.writer.iac(verb, opt)

    def begin_advanced_negotiation(self) -> None:
        super().begin_advanced_negotiation()
        self.calls.append(("begin_advanced_negotiation", self.rx_bytes))

    def negotiation_should_advance(self) -> bool:
        if self.advance is None:
            return super().negotiation_should_advance()
        return self.advance

    def check_negotiation(self, final: bool = False) -> bool:
        result = super().check_negotiation(final)
        self.calls.append(("check_negotiation", final, result, time.monotonic()))
        return result

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


class RecordingTelnetServer(TelnetServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks: list[bool] = []

    def check_negotiation(self, final: bool = False) -> bool:
        self.checks.append(final)
        return super().check_negotiation(final)


# --------------------------------------------------------------------- constructor


def test_init_signature_matches_seed():
    sig = inspect.signature(BaseServer.__init__)
    expected = [
        ("self", inspect.Parameter.empty),
        ("shell", None),
        ("log", None),
        ("loop", None),
        ("_waiter_connected", None),
        ("_waiter_closed", None),
        ("encoding", "utf8"),
        ("encoding_errors", "strict"),
        ("force_binary", False),
        ("connect_maxwait", 4.0),
        ("limit", None),
    ]
    assert [(p.name, p.default) for p in sig.parameters.values()] == expected
    kinds = {p.kind for p in sig.parameters.values()}
    assert kinds == {inspect.Parameter.POSITIONAL_OR_KEYWORD}


async def test_init_defaults():
    proto = BaseServer()
    assert proto.connect_maxwait == 4.0
    assert isinstance(proto.connect_maxwait, float)
    assert proto.shell is None
    assert proto.force_binary is False
    assert isinstance(proto.log, logging.Logger)
    assert proto.encoding(outgoing=True) == "utf8"
    assert proto.encoding(incoming=True) == "utf8"
    assert proto.rx_bytes == 0
    assert proto.tx_bytes == 0


async def test_init_positional_order():
    loop = asyncio.get_running_loop()
    log = logging.getLogger("test.positional")
    waiter_connected, waiter_closed = loop.create_future(), loop.create_future()

    async def shell(reader, writer):
        pass

    proto = BaseServer(
        shell, log, loop, waiter_connected, waiter_closed, "latin-1", "replace", True, 2.5, 64
    )
    assert proto.shell is shell
    assert proto.log is log
    assert proto._waiter_connected is waiter_connected
    assert proto._waiter_closed is waiter_closed
    assert proto.encoding(outgoing=True) == "latin-1"
    assert proto.force_binary is True
    assert proto.connect_maxwait == 2.5


async def test_init_loop_is_the_one_used():
    loop = asyncio.get_running_loop()
    proto = BaseServer(loop=loop)
    assert proto._waiter_connected.get_loop() is loop
    assert proto._waiter_closed.get_loop() is loop


async def test_given_waiters_are_the_ones_resolved(harness):
    loop = asyncio.get_running_loop()
    waiter_connected, waiter_closed = loop.create_future(), loop.create_future()
    port = await harness.listen(
        BaseServer, _waiter_connected=waiter_connected, _waiter_closed=waiter_closed
    )
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    assert await asyncio.wait_for(waiter_connected, TIMEOUT) is proto
    assert not waiter_closed.done()
    await client.aclose()
    assert await asyncio.wait_for(waiter_closed, TIMEOUT) is proto


async def test_log_is_used(harness):
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("test.server_base.log_is_used")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    handler = Collect()
    log.addHandler(handler)
    try:
        port = await harness.listen(BaseServer, log=log)
        client = await harness.raw_client(port)
        proto = await harness.protocol()
        assert proto.log is log
        client.writer.write_eof()
        await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)
        assert records, "the given logger received nothing"
        assert all(r.name == log.name for r in records)
    finally:
        log.removeHandler(handler)


async def test_connect_maxwait_attribute():
    assert BaseServer(connect_maxwait=0.25).connect_maxwait == 0.25
    assert TelnetServer(connect_maxwait=7.5).connect_maxwait == 7.5


async def test_shell_gets_the_protocols_reader_and_writer(harness):
    proto, run, _client = await harness.session()
    assert run.reader is proto.reader
    assert run.writer is proto.writer
    assert run.writer.protocol is proto


async def test_encoding_errors_replace_applies_to_reader_and_writer(harness):
    _proto, run, client = await harness.session(encoding="ascii", encoding_errors="replace")
    run.writer.write("caf\u00e9!")
    await client.expect(b"caf?!")
    client.send(b"caf\xe9\r\n")
    line = await asyncio.wait_for(run.reader.readline(), TIMEOUT)
    assert line == "caf\ufffd\r\n"


async def test_encoding_errors_strict_is_the_default(harness):
    _proto, run, client = await harness.session(encoding="ascii")
    with pytest.raises(UnicodeEncodeError):
        run.writer.write("caf\u00e9")
    client.send(b"caf\xe9\r\n")
    with pytest.raises(UnicodeDecodeError):
        await asyncio.wait_for(run.reader.readline(), TIMEOUT)


async def test_limit_is_the_readers_limit(harness):
    _proto, run, client = await harness.session(limit=16)
    client.send(b"x" * 40)
    with pytest.raises(LineTooLong):
        await asyncio.wait_for(run.reader.readline(), TIMEOUT)


async def test_limit_none_is_a_large_default(harness):
    _proto, run, client = await harness.session(limit=None)
    client.send(b"y" * 20000)
    client.send(b"\r\n")
    line = await asyncio.wait_for(run.reader.readline(), TIMEOUT)
    assert line == "y" * 20000 + "\r\n"


# ----------------------------------------------------------------- connection_made


async def test_connection_made_sets_attributes_and_begins_negotiation(harness):
    before = time.monotonic()
    port = await harness.listen(Recording)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    made = proto.named("connection_made")
    assert len(made) == 1
    transport = made[0][1]
    assert proto._transport is transport
    assert transport.get_extra_info("peername") == client.sockname
    after = time.monotonic()
    assert isinstance(proto._when_connected, float)
    assert before <= proto._when_connected <= after
    assert isinstance(proto._last_received, float)
    assert before <= proto._last_received <= after
    assert proto.reader is not None and proto.writer is not None
    assert hasattr(proto.reader, "readline") and hasattr(proto.writer, "write")
    begun = proto.named("begin_negotiation")
    assert len(begun) == 1
    # begin_negotiation runs with reader, writer and transport already set
    assert begun[0][1:] == (proto.reader, proto.writer, transport)


# ------------------------------------------------------------ advanced negotiation


class AskTwo(Recording):
    requests = ((DO, TTYPE), (WILL, ECHO))


async def _negotiating(harness, cls: type[Recording]):
    port = await harness.listen(cls, connect_maxwait=30.0)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE) + cmd(WILL, ECHO))
    return proto, client


async def test_advanced_negotiation_once_on_first_will(harness):
    proto, client = await _negotiating(harness, AskTwo)
    assert proto.negotiation_should_advance() is False
    assert proto.named("begin_advanced_negotiation") == []
    client.send(cmd(WILL, TTYPE))
    await async_wait_until(lambda: proto.rx_bytes == 3, TIMEOUT)
    assert proto.negotiation_should_advance() is True
    assert proto.named("begin_advanced_negotiation") == [("begin_advanced_negotiation", 3)]
    client.send(cmd(DO, ECHO))
    await async_wait_until(lambda: proto.rx_bytes == 6, TIMEOUT)
    assert len(proto.named("begin_advanced_negotiation")) == 1


async def test_advanced_negotiation_once_on_first_do(harness):
    proto, client = await _negotiating(harness, AskTwo)
    client.send(cmd(DO, ECHO))
    await async_wait_until(lambda: proto.rx_bytes == 3, TIMEOUT)
    assert proto.named("begin_advanced_negotiation") == [("begin_advanced_negotiation", 3)]
    client.send(cmd(WILL, TTYPE))
    await async_wait_until(lambda: proto.rx_bytes == 6, TIMEOUT)
    assert len(proto.named("begin_advanced_negotiation")) == 1


async def test_refusals_never_advance(harness):
    proto, client = await _negotiating(harness, AskTwo)
    client.send(cmd(WONT, TTYPE) + cmd(DONT, ECHO))
    await async_wait_until(lambda: proto.rx_bytes == 6, TIMEOUT)
    # both requests answered, so negotiation is complete, but nothing was acknowledged
    await asyncio.wait_for(asyncio.shield(proto._waiter_connected), TIMEOUT)
    assert proto.negotiation_should_advance() is False
    assert proto.named("begin_advanced_negotiation") == []


async def test_base_server_requests_nothing_so_never_advances(harness):
    port = await harness.listen(Recording)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    # an unsolicited offer is refused by a BaseServer (it accepts no options)
    client.send(cmd(WILL, NAWS) + cmd(DO, SGA))
    await async_wait_until(lambda: proto.rx_bytes == 6, TIMEOUT)
    assert proto.negotiation_should_advance() is False
    assert proto.named("begin_advanced_negotiation") == []


async def test_base_server_refuses_unsolicited_offers_promptly(harness):
    # A refusal produces no engine event; it must be sent all the same.
    port = await harness.listen(BaseServer)
    client = await harness.raw_client(port)
    await harness.protocol()
    client.send(cmd(WILL, NAWS) + cmd(DO, SGA))
    await client.expect(cmd(DONT, NAWS) + cmd(WONT, SGA), timeout=5.0)


async def test_subclass_that_should_not_advance_never_advances(harness):
    class Never(AskTwo):
        advance = False

    proto, client = await _negotiating(harness, Never)
    client.send(cmd(WILL, TTYPE) + cmd(DO, ECHO))
    await async_wait_until(lambda: proto.rx_bytes == 6, TIMEOUT)
    await asyncio.wait_for(asyncio.shield(proto._waiter_connected), TIMEOUT)
    client.send(cmd(WILL, NAWS))  # refused (not requested), not an acknowledgement
    await async_wait_until(lambda: proto.rx_bytes == 9, TIMEOUT)
    assert proto.named("begin_advanced_negotiation") == []


# --------------------------------------------------------------- check_negotiation


async def test_check_negotiation_called_on_commands_until_complete(harness):
    proto, client = await _negotiating(harness, AskTwo)
    checks = proto.named("check_negotiation")
    assert checks, "check_negotiation was not called at connect"
    assert all(final is False and result is False for _, final, result, _t in checks)
    assert not proto._waiter_connected.done()

    n = len(checks)
    client.send(cmd(WILL, TTYPE))
    await async_wait_until(lambda: len(proto.named("check_negotiation")) > n, TIMEOUT)
    assert proto.named("check_negotiation")[-1][1:3] == (False, False)
    assert not proto._waiter_connected.done()

    client.send(cmd(DO, ECHO))
    result = await asyncio.wait_for(asyncio.shield(proto._waiter_connected), TIMEOUT)
    assert result is proto
    assert proto.named("check_negotiation")[-1][1:3] == (False, True)

    # complete: further commands do not ask again
    n = len(proto.named("check_negotiation"))
    client.send(cmd(NOP) + cmd(WILL, NAWS) + cmd(NOP))
    await async_wait_until(lambda: proto.rx_bytes == 6 + 7, TIMEOUT)
    assert len(proto.named("check_negotiation")) == n
    assert all(not c[1] for c in proto.named("check_negotiation"))


async def test_check_negotiation_final_after_connect_maxwait(harness):
    maxwait = 0.4
    port = await harness.listen(AskTwo, connect_maxwait=maxwait, shell=harness.shell)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE) + cmd(WILL, ECHO))
    assert proto.connect_maxwait == maxwait
    result = await asyncio.wait_for(asyncio.shield(proto._waiter_connected), TIMEOUT)
    assert result is proto
    checks = proto.named("check_negotiation")
    finals = [c for c in checks if c[1]]
    assert len(finals) == 1
    assert checks[-1] is finals[0]
    assert finals[0][2] is False  # still unanswered
    assert finals[0][3] - proto._when_connected >= maxwait - EARLY
    run = await harness.shell_of(proto)
    assert run.started - proto._when_connected >= maxwait - EARLY


async def test_nothing_requested_connects_at_once(harness):
    port = await harness.listen(Recording, connect_maxwait=30.0, shell=harness.shell)
    await harness.raw_client(port)
    proto = await harness.protocol()
    run = await harness.shell_of(proto, timeout=5.0)
    assert proto._waiter_connected.result() is proto
    assert [c[1:3] for c in proto.named("check_negotiation")] == [(False, True)]
    assert run.started - proto._when_connected < 5.0


async def test_telnet_server_shell_waits_connect_maxwait_for_silent_client(harness):
    maxwait = 0.5
    port = await harness.listen(RecordingTelnetServer, shell=harness.shell, connect_maxwait=maxwait)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE))
    run = await harness.shell_of(proto)
    assert run.started - proto._when_connected >= maxwait - EARLY
    assert proto.checks[-1] is True
    assert proto.checks.count(True) == 1
    assert proto._waiter_connected.result() is proto


async def test_telnet_server_shell_starts_before_maxwait_for_prompt_client(harness):
    maxwait = 20.0
    port = await harness.listen(RecordingTelnetServer, shell=harness.shell, connect_maxwait=maxwait)
    await harness.engine_client(port)
    proto = await harness.protocol()
    run = await harness.shell_of(proto, timeout=maxwait / 2)
    assert run.started - proto._when_connected < maxwait / 2
    assert True not in proto.checks
    assert proto._waiter_connected.result() is proto


# -------------------------------------------------------------------- waiter_closed


async def test_waiter_closed_resolves_on_close(harness):
    port = await harness.listen(BaseServer)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await asyncio.wait_for(asyncio.shield(proto._waiter_connected), TIMEOUT)
    assert not proto._waiter_closed.done()
    await client.aclose()
    assert await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT) is proto


async def test_waiter_closed_resolves_when_server_closes(harness):
    proto, run, client = await harness.session()
    run.writer.close()
    assert await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT) is proto
    await client.read_to_eof()


# ------------------------------------------------------------------------- encoding


async def test_base_encoding_returns_the_given_encoding():
    proto = BaseServer(encoding="latin-1")
    for outgoing, incoming in ((True, False), (False, True), (True, True), (False, False)):
        assert proto.encoding(outgoing=outgoing, incoming=incoming) == "latin-1"


async def test_base_encoding_none_is_us_ascii():
    proto = BaseServer(encoding=None)
    assert proto.encoding(outgoing=True) == "US-ASCII"
    assert proto.encoding(incoming=True) == "US-ASCII"


async def test_base_encoding_is_what_reader_and_writer_use(harness):
    _proto, run, client = await harness.session(encoding="latin-1")
    run.writer.write("\u00e9t\u00e9")
    await client.expect(b"\xe9t\xe9")
    client.send(b"\xe0\r\n")
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "\u00e0\r\n"


async def test_encoding_none_session_is_ascii_text(harness):
    _proto, run, client = await harness.session(encoding=None)
    run.writer.write("plain")
    await client.expect(b"plain")
    with pytest.raises(UnicodeEncodeError):
        run.writer.write("\u00e9")


async def test_encoding_false_gives_bytes_reader_and_writer(harness):
    _proto, run, client = await harness.session(encoding=False)
    client.send(b"\xe9\x00abc")
    data = await asyncio.wait_for(run.reader.read(100), TIMEOUT)
    assert isinstance(data, bytes)
    assert data == b"\xe9\x00abc"
    with pytest.raises(TypeError):
        run.writer.write("text")
    run.writer.write(b"\xe9bytes")
    await client.expect(b"\xe9bytes")


async def test_telnet_server_us_ascii_before_binary(harness):
    port = await harness.listen(TelnetServer, connect_maxwait=30.0)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE))
    assert proto.encoding(outgoing=True) == "US-ASCII"
    assert proto.encoding(incoming=True) == "US-ASCII"
    assert proto.encoding(outgoing=True, incoming=True) == "US-ASCII"
    assert proto.writer.encoding == "US-ASCII"
    assert proto.reader.encoding == "US-ASCII"


async def _negotiated(harness, cls=TelnetServer, server_kwargs=None, **client_kwargs):
    port = await harness.listen(
        cls, shell=harness.shell, connect_maxwait=30.0, **(server_kwargs or {})
    )
    client = await harness.engine_client(port, **client_kwargs)
    proto = await harness.protocol()
    run = await harness.shell_of(proto)
    return proto, run, client


async def test_telnet_server_binary_in_one_direction_only(harness):
    # the client agrees to send binary (WILL BINARY) but not to receive it (DONT)
    proto, _run, _client = await _negotiated(
        harness, accept_remote={SGA, ECHO}, env={}, charset=None
    )
    assert proto.encoding(incoming=True) == "utf8"
    assert proto.encoding(outgoing=True) == "US-ASCII"
    assert proto.encoding(outgoing=True, incoming=True) == "US-ASCII"
    assert proto.reader.encoding == "utf8"
    assert proto.writer.encoding == "US-ASCII"


async def test_telnet_server_binary_both_ways_uses_default(harness):
    proto, run, client = await _negotiated(harness, env={}, charset=None)
    assert proto.encoding(outgoing=True) == "utf8"
    assert proto.encoding(incoming=True) == "utf8"
    run.writer.write("\u00e9\u20ac")
    await async_wait_until(lambda: "\u00e9\u20ac".encode() in client.inband, TIMEOUT)
    client.send("\u00fc\r\n".encode())
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "\u00fc\r\n"


async def test_telnet_server_lang_gives_the_codec(harness):
    proto, run, client = await _negotiated(harness, env={"LANG": "fr_FR.ISO-8859-1"}, charset=None)
    assert codecs.lookup(proto.encoding(outgoing=True)).name == "iso8859-1"
    assert codecs.lookup(proto.encoding(incoming=True)).name == "iso8859-1"
    run.writer.write("\u00e9l\u00e8ve")
    await async_wait_until(lambda: b"\xe9l\xe8ve" in client.inband, TIMEOUT)
    client.send(b"\xe7a\r\n")
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "\u00e7a\r\n"


async def test_telnet_server_charset_when_no_lang(harness):
    proto, run, client = await _negotiated(harness, env={"USER": "u"}, charset="CP437")
    assert codecs.lookup(proto.encoding(outgoing=True)).name == "cp437"
    assert codecs.lookup(proto.encoding(incoming=True)).name == "cp437"
    assert proto.get_extra_info("charset") == "CP437"
    run.writer.write("\u00e9")
    await async_wait_until(lambda: "\u00e9".encode("cp437") in client.inband, TIMEOUT)


async def test_telnet_server_lang_beats_charset(harness):
    proto, _run, _client = await _negotiated(
        harness, env={"LANG": "de_DE.ISO-8859-1@euro"}, charset="UTF-8"
    )
    assert proto.get_extra_info("charset") == "UTF-8"
    assert codecs.lookup(proto.encoding(outgoing=True)).name == "iso8859-1"
    assert codecs.lookup(proto.encoding(incoming=True)).name == "iso8859-1"


async def test_telnet_server_lang_without_codec_falls_back_to_charset(harness):
    proto, _run, _client = await _negotiated(harness, env={"LANG": "C"}, charset="CP437")
    assert codecs.lookup(proto.encoding(incoming=True)).name == "cp437"


async def test_telnet_server_force_binary_skips_binary_requirement(harness):
    proto, run, client = await _negotiated(
        harness,
        server_kwargs={"force_binary": True},
        accept_local=EngineClient.DEFAULT_LOCAL - {BINARY},
        accept_remote={SGA, ECHO},
        env={},
        charset=None,
    )
    assert proto.encoding(outgoing=True) == "utf8"
    assert proto.encoding(incoming=True) == "utf8"
    run.writer.write("\u00e9")
    await async_wait_until(lambda: "\u00e9".encode() in client.inband, TIMEOUT)


async def test_telnet_server_agreed_charset_needs_no_binary(harness):
    # a client that accepted CHARSET UTF-8 means UTF-8 both ways, BINARY or not
    proto, run, client = await _negotiated(
        harness,
        accept_local=EngineClient.DEFAULT_LOCAL - {BINARY},
        accept_remote={SGA, ECHO},
        env={},
        charset="UTF-8",
    )
    assert not proto._engine.local_enabled(BINARY) and not proto._engine.remote_enabled(BINARY)
    assert proto.encoding(outgoing=True) == proto.encoding(incoming=True) == "UTF-8"
    assert run.writer.encoding == run.reader.encoding == "UTF-8"
    run.writer.write("h\u00e9llo \u2713 \u65e5\u672c")
    await async_wait_until(
        lambda: "h\u00e9llo \u2713 \u65e5\u672c".encode() in client.inband, TIMEOUT
    )
    client.send("\u00fc\u2713\r\n".encode())
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "\u00fc\u2713\r\n"


async def test_telnet_server_lang_needs_no_binary(harness):
    proto, _run, _client = await _negotiated(
        harness,
        accept_local=EngineClient.DEFAULT_LOCAL - {BINARY},
        accept_remote={SGA, ECHO},
        env={"LANG": "en_US.UTF-8"},
        charset=None,
    )
    assert proto.encoding(outgoing=True) == proto.encoding(incoming=True) == "UTF-8"


async def test_telnet_server_stays_ascii_without_binary_or_a_charset(harness):
    proto, run, _client = await _negotiated(
        harness,
        accept_local=EngineClient.DEFAULT_LOCAL - {BINARY},
        accept_remote={SGA, ECHO},
        env={},
        charset=None,
    )
    assert proto.encoding(outgoing=True) == "US-ASCII"
    assert proto.encoding(incoming=True) == "US-ASCII"
    assert run.writer.encoding == run.reader.encoding == "US-ASCII"


# ------------------------------------------------------------------ duration, idle


async def test_duration_grows(harness):
    proto, _run, _client = await harness.session()
    first = proto.duration
    assert isinstance(first, float)
    assert first >= 0.0
    await async_wait_until(lambda: proto.duration > first + 0.05, TIMEOUT)
    second = proto.duration
    assert isinstance(second, float)
    assert second > first


async def test_idle_resets_on_each_received_chunk(harness):
    proto, run, client = await harness.session()
    assert isinstance(proto.idle, float)
    await async_wait_until(lambda: proto.idle > 0.1, TIMEOUT)
    client.send(b"ping")
    await async_wait_until(lambda: proto.rx_bytes == 4, TIMEOUT)
    idle = proto.idle
    assert isinstance(idle, float)
    assert 0.0 <= idle < 0.1
    assert abs(proto._last_received + idle - time.monotonic()) < 0.05
    # idle keeps growing, duration did not reset
    await async_wait_until(lambda: proto.idle > 0.1, TIMEOUT)
    assert proto.duration > proto.idle
    client.send(b"pong")
    await async_wait_until(lambda: proto.rx_bytes == 8, TIMEOUT)
    assert proto.idle < 0.1
    assert await asyncio.wait_for(run.reader.read(8), TIMEOUT) in ("pingpong", "ping")


# ------------------------------------------------------------------- get_extra_info


async def test_get_extra_info_transport_values_and_default(harness):
    proto, run, client = await harness.session()
    assert proto.get_extra_info("peername") == client.sockname
    assert proto.get_extra_info("sockname") == client.writer.get_extra_info("peername")
    assert proto.get_extra_info("no-such-key") is None
    sentinel = object()
    assert proto.get_extra_info("no-such-key", sentinel) is sentinel
    assert run.writer.get_extra_info("peername") == client.sockname


async def test_get_extra_info_protocol_values_before_transport(harness):
    class OwnSockname(BaseServer):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._extra["sockname"] = "protocol's own"

    port = await harness.listen(OwnSockname)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    assert proto.get_extra_info("sockname") == "protocol's own"
    assert proto.get_extra_info("peername") == client.sockname


async def test_telnet_server_extra_info_defaults_then_transport(harness):
    port = await harness.listen(TelnetServer, connect_maxwait=30.0, term="vt100", cols=90, rows=30)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    assert proto.get_extra_info("term") == "vt100"
    assert proto.get_extra_info("cols") == 90
    assert proto.get_extra_info("rows") == 30
    assert proto.get_extra_info("peername") == client.sockname
    assert proto.get_extra_info("ttype1", "none") == "none"


# ---------------------------------------------------------------------- eof_received


async def test_eof_received_closes_the_session(harness):
    seen: list[Any] = []

    async def shell(reader, writer):
        seen.append(await reader.read())

    port = await harness.listen(BaseServer, shell=shell)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await asyncio.wait_for(asyncio.shield(proto._waiter_connected), TIMEOUT)
    client.send(b"last words")
    client.writer.write_eof()  # shutdown(SHUT_WR), as nc -z or nc -N
    assert await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT) is proto
    assert proto._transport.is_closing()
    await client.read_to_eof()
    await async_wait_until(lambda: seen, TIMEOUT)
    assert seen == ["last words"]


async def test_eof_received_on_raw_socket(harness):
    port = await harness.listen(BaseServer)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        proto = await harness.protocol()
        sock.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)
        assert await asyncio.wait_for(loop.sock_recv(sock, 100), TIMEOUT) == b""
    finally:
        sock.close()


# ------------------------------------------------------------------- connection_lost


async def test_connection_lost_cancels_negotiation_timer(harness):
    port = await harness.listen(RecordingTelnetServer, connect_maxwait=30.0, shell=harness.shell)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE))
    timer = proto._check_later
    assert timer is not None and not timer.cancelled()
    await client.aclose()
    await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)
    assert timer.cancelled()
    assert True not in proto.checks
    assert id(proto) not in harness.shells


async def test_connection_lost_feeds_eof_to_the_reader(harness):
    proto, run, client = await harness.session()
    reading = asyncio.ensure_future(run.reader.read(10))
    await client.aclose()
    assert await asyncio.wait_for(reading, TIMEOUT) == ""
    assert run.reader.at_eof()
    await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)


async def test_connection_lost_sets_the_exception_on_the_reader(harness):
    proto, run, client = await harness.session()
    reading = asyncio.ensure_future(run.reader.readline())
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()  # RST
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reading, TIMEOUT)
    await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)
    with pytest.raises(ConnectionResetError):
        await run.reader.read(1)


async def test_connection_lost_cancels_blocked_shell_after_grace(harness, monkeypatch):
    grace = 0.3
    monkeypatch.setattr(server_base, "SHELL_GRACE_SECONDS", grace)
    blocker = asyncio.Event()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def shell(reader, writer):
        try:
            await blocker.wait()
            outcome.set_result("returned")
        except asyncio.CancelledError:
            outcome.set_result("cancelled")
            raise

    port = await harness.listen(BaseServer, shell=shell)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await async_wait_until(lambda: proto._shell_task is not None, TIMEOUT)
    await client.aclose()
    await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)
    closed_at = time.monotonic()
    assert not outcome.done(), "shell cancelled without a grace period"
    assert await asyncio.wait_for(asyncio.shield(outcome), TIMEOUT) == "cancelled"
    assert time.monotonic() - closed_at >= grace - EARLY
    assert proto._shell_task.cancelled()


async def test_connection_lost_lets_shell_finish_within_grace(harness, monkeypatch):
    monkeypatch.setattr(server_base, "SHELL_GRACE_SECONDS", 0.2)
    outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def shell(reader, writer):
        data = await reader.read()
        outcome.set_result(data)

    port = await harness.listen(BaseServer, shell=shell)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await async_wait_until(lambda: proto._shell_task is not None, TIMEOUT)
    client.send(b"bye")
    await async_wait_until(lambda: proto.rx_bytes == 3, TIMEOUT)
    await client.aclose()
    assert await asyncio.wait_for(outcome, TIMEOUT) == "bye"
    await asyncio.wait_for(asyncio.shield(proto._shell_task), TIMEOUT)
    assert not proto._shell_task.cancelled()


# ------------------------------------------------------------------ rx_bytes, tx_bytes


async def test_rx_bytes_and_tx_bytes_count_wire_bytes(harness):
    proto, run, client = await harness.session()
    assert (proto.rx_bytes, proto.tx_bytes) == (0, 0)
    client.send(b"a" * 100)
    client.send(cmd(NOP))
    await async_wait_until(lambda: proto.rx_bytes == 102, TIMEOUT)
    run.writer.write("hello")
    assert proto.tx_bytes == 5
    run.writer.write(b"\xff")  # doubled on the wire
    assert proto.tx_bytes == 7
    run.writer.iac(WILL, ECHO)
    assert proto.tx_bytes == 10
    await client.expect(b"hello\xff\xff" + cmd(WILL, ECHO))
    assert len(client.received) == proto.tx_bytes


async def test_tx_bytes_counts_negotiation(harness):
    port = await harness.listen(TelnetServer, connect_maxwait=30.0)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE))
    assert proto.tx_bytes == len(client.received) == 3


# ---------------------------------------------------------- TelnetServer, full client


async def test_telnet_server_extra_info_after_full_negotiation(harness):
    env = {
        "USER": "alice",
        "LANG": "en_US.UTF-8",
        "DISPLAY": "workstation:0.0",
        "EDITOR": "vi",
        "SHELL_LEVEL": "3",
    }
    proto, run, client = await _negotiated(
        harness,
        ttypes=["Xterm-256color", "xterm", "xterm"],
        env=env,
        charset="UTF-8",
        naws=(132, 43),
        tspeed="38400,19200",
        xdisploc="workstation:0",
    )
    info = run.writer.get_extra_info
    assert info("TERM") == "xterm-256color"  # the terminal type, in lower case
    assert info("term") == "xterm-256color"
    assert info("client_name") is None  # a terminal, not a MUD client
    assert info("mtts") is None
    assert info("cols") == 132
    assert info("rows") == 43
    assert info("charset") == "UTF-8"
    assert info("LANG") == "en_US.UTF-8"
    for name, value in env.items():
        assert info(name) == value, name
    assert info("ttype1") == "Xterm-256color"
    assert info("ttype2") == "xterm"
    assert info("ttype3") == "xterm"
    assert info("ttype4") is None
    assert info("tspeed") == "38400,19200"
    assert info("xdisploc") == "workstation:0"
    assert info("peername") == client.sockname
    assert proto.get_extra_info("cols") == 132
    assert proto._waiter_connected.result() is proto


async def test_telnet_server_asks_for_tspeed_xdisploc_only_when_offered(harness):
    _proto, run, client = await _negotiated(harness)
    assert run.writer.get_extra_info("tspeed") is None
    assert run.writer.get_extra_info("xdisploc") is None
    assert not [s for s in client.subnegotiations if s.option in (TSPEED, XDISPLOC)]


async def test_ttype_cycle_stops_on_repeat_of_previous(harness):
    _proto, run, client = await _negotiated(harness, ttypes=["ansi", "vt100", "vt100"])
    info = run.writer.get_extra_info
    assert [info(f"ttype{i}") for i in range(1, 5)] == ["ansi", "vt100", "vt100", None]
    assert client.ttype_requests == 3


async def test_ttype_cycle_stops_when_it_loops_to_the_first(harness):
    names = ["xterm-256color", "xterm", "vt220"]
    _proto, run, client = await _negotiated(harness, ttypes=lambda i: names[i % 3])
    info = run.writer.get_extra_info
    got = [info(f"ttype{i}") for i in range(1, 6)]
    assert got == ["xterm-256color", "xterm", "vt220", "xterm-256color", None]
    assert client.ttype_requests == 4


async def test_ttype_cycle_at_most_eight_rounds(harness):
    _proto, run, client = await _negotiated(harness, ttypes=lambda i: f"term-{i}")
    info = run.writer.get_extra_info
    assert [info(f"ttype{i}") for i in range(1, 9)] == [f"term-{i}" for i in range(8)]
    assert info("ttype9") is None
    assert client.ttype_requests == 8
    assert TelnetServer.TTYPE_LOOPMAX == 8


async def test_new_environ_send_subnegotiations_fit_256_bytes(harness):
    _proto, _run, client = await _negotiated(harness, env={"USER": "bob"})
    sends = [n for opt, n in client.sb_wire_lengths if opt == NEW_ENVIRON]
    assert sends, "no NEW-ENVIRON SEND received"
    assert max(sends) <= 256


def test_environ_send_builder_splits_at_256_bytes():
    names = [(ENV_USERVAR if i % 2 else ENV_VAR, f"VARIABLE_NUMBER_{i:03d}") for i in range(60)]
    payloads = options.build_environ_send(names)
    assert len(payloads) > 1
    for payload in payloads:
        assert len(sb(NEW_ENVIRON, payload)) <= 256
    # nothing lost or reordered by the split
    items = [item for p in payloads for item in options.parse_environ(p)[1]]
    assert [(kind, name) for kind, name, _v in items] == names


async def test_ayt_gets_a_visible_reply(harness):
    _proto, _run, client = await _negotiated(harness)
    before = len(client.inband)
    client.send_command(AYT)

    def visible() -> bool:
        reply = bytes(client.inband[before:])
        return any(33 <= b < 127 for b in reply)

    await async_wait_until(visible, TIMEOUT, "a visible reply to AYT")


async def test_naws_update_later_changes_cols_rows(harness):
    proto, run, client = await _negotiated(harness, naws=(80, 24))
    assert (run.writer.get_extra_info("cols"), run.writer.get_extra_info("rows")) == (80, 24)
    client.send_naws(200, 60)
    await async_wait_until(lambda: proto.get_extra_info("cols") == 200, TIMEOUT)
    assert proto.get_extra_info("rows") == 60
    client.send_naws(100, 50)
    await async_wait_until(lambda: proto.get_extra_info("rows") == 50, TIMEOUT)
    assert proto.get_extra_info("cols") == 100


async def test_charset_extra_info_is_encoding_when_not_negotiated(harness):
    proto, _run, _client = await _negotiated(harness, env={}, charset=None)
    assert proto.get_extra_info("charset") == proto.encoding(incoming=True) == "utf8"


async def test_environ_cannot_override_transport_or_protocol_keys(harness):
    # NEW-ENVIRON names are chosen by the client: they must not shadow what the
    # server knows itself (the peer's address, the window size from NAWS).
    proto, run, client = await _negotiated(
        harness,
        naws=(120, 40),
        env={"peername": "('10.9.8.7', 1)", "cols": "9999", "USER": "mallory"},
    )
    info = run.writer.get_extra_info
    assert info("USER") == "mallory"
    assert info("peername") == client.sockname
    assert info("cols") == 120
    assert proto.peer == "{}:{}".format(*client.sockname)


async def test_unsolicited_negotiation_after_connect_is_answered(harness):
    proto, run, client = await _negotiated(harness)
    run.writer.set_mode("character")
    await async_wait_until(lambda: proto._engine.local_enabled(SGA), TIMEOUT)
    marker = len(client.events)
    client.engine.request_remote(SGA, False)  # DONT SGA: the server stops
    client._flush()
    await async_wait_until(lambda: len(client.events) > marker, TIMEOUT)
    assert not proto._engine.local_enabled(SGA)


async def test_telnet_server_refuses_unknown_offer_promptly(harness):
    # A refusal has no event of its own; it must still be sent at once (a client
    # waiting in RFC 1143 WANTYES would otherwise hang on it).
    port = await harness.listen(TelnetServer, connect_maxwait=30.0)
    client = await harness.raw_client(port)
    await client.expect(cmd(DO, TTYPE))
    client.send(cmd(WILL, LINEMODE))
    await client.expect(cmd(DONT, LINEMODE), timeout=5.0)


async def test_telnet_server_answers_timing_mark(harness):
    port = await harness.listen(TelnetServer, connect_maxwait=30.0)
    client = await harness.raw_client(port)
    await client.expect(cmd(DO, TTYPE))
    client.send(cmd(DO, TM))
    await client.expect(cmd(WILL, TM), timeout=5.0)


async def test_malformed_subnegotiation_is_one_warning_naming_the_peer(harness, caplog):
    proto, run, client = await _negotiated(harness, naws=(120, 40))
    with caplog.at_level(logging.WARNING, logger="shardd.session"):
        client.engine.send_subnegotiation(NAWS, b"\x00\x50\x00")  # 3 bytes, not 4
        client._flush()
        client.send(b"still here\r\n")
        assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "still here\r\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{proto.peer}: bad NAWS subnegotiation"), warnings
    assert proto.get_extra_info("cols") == 120  # the bad update changed nothing
