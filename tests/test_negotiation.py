"""TelnetServer's negotiation rules and the writer's calls, over real loopback sockets.

When the shell starts (the options that describe the client settled, or the
client shown not to answer them), which encoding a session gets, who the
client is (MTTS, MNES), the modes a shell chooses (line, character, hidden
input), marked prompts, and output written in one loop turn going out in one
segment. ``RawClient`` sends exactly what a test scripts (a client as
TinTin++ behaves), ``EngineClient`` answers as a terminal would. Waits are
deadlines on conditions, never sleeps; servers wait ``connect_maxwait`` 30 s,
so a shell that waited on an unanswered option would miss every deadline.
"""

from __future__ import annotations

import logging
from typing import Any

from conftest import async_wait_until
from server_peers import TIMEOUT, EngineClient, RawClient, cmd, sb

from workers.limits import SessionLimits
from workers.server import TelnetServer
from workers.shells import LineEditor
from workers.telnet import options
from workers.telnet.charsets import Charsets
from workers.telnet.engine import WANTYES
from workers.telnet.mtts import Mtts
from workers.telnet.telopt import (
    AYT,
    BINARY,
    CHARSET,
    CHARSET_REQUEST,
    DO,
    DONT,
    ECHO,
    EOR,
    EOR_CMD,
    GA,
    IAC,
    NAWS,
    NEW_ENVIRON,
    SEND,
    SGA,
    TM,
    TTYPE,
    WILL,
    WONT,
)

MAXWAIT = 30.0
TTYPE_SEND = sb(TTYPE, bytes((SEND,)))
# a terminal that agrees to EOR, as MUD clients do
WITH_EOR = EngineClient.DEFAULT_REMOTE | {EOR}


async def _session(harness: Any, **client: Any) -> tuple[Any, Any, EngineClient]:
    """A TelnetServer, an EngineClient, and the harness's shell once it started."""
    port = await harness.listen(TelnetServer, shell=harness.shell, connect_maxwait=MAXWAIT)
    peer = await harness.engine_client(port, **client)
    proto = await harness.protocol()
    run = await harness.shell_of(proto)
    return proto, run, peer


async def _quiet(peer: EngineClient) -> None:
    """Wait until what the server sent so far has arrived: an AYT round trip."""
    before = len(peer.inband)
    peer.send_command(AYT)
    await async_wait_until(lambda: b"[Yes]" in peer.inband[before:], TIMEOUT, "AYT answered")


def _started_early(proto: Any, run: Any) -> None:
    assert run.started - proto._when_connected < TIMEOUT < MAXWAIT


# ----------------------------------------------------------- when the shell starts


async def _tintin_opening(harness: Any) -> tuple[Any, RawClient, int]:
    """A client as TinTin++ 2.02 answers, up to the server's charset and environment
    requests: DONT BINARY to WILL BINARY, and no answer ever to DO BINARY."""
    port = await harness.listen(TelnetServer, shell=harness.shell, connect_maxwait=MAXWAIT)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE))
    client.send(cmd(WILL, TTYPE))
    await client.expect(cmd(DO, TM))  # the server's batch ends with its timing mark
    asked = client.received.count(TTYPE_SEND)
    names = ["TINTIN++", "xterm-256color", "MTTS 271", "MTTS 271"]
    client.send(
        cmd(DO, EOR)
        + cmd(DONT, BINARY)
        + cmd(WILL, NAWS)
        + sb(NAWS, options.build_naws(100, 30))
        + cmd(WILL, NEW_ENVIRON)
        + cmd(WILL, CHARSET)
        + cmd(WONT, TM)
        + b"".join(sb(TTYPE, options.build_is(names[min(i, 3)])) for i in range(asked))
    )
    await client.expect(bytes((IAC, 250, CHARSET, CHARSET_REQUEST)))
    await client.expect(bytes((IAC, 250, NEW_ENVIRON, SEND)))
    return proto, client, asked


async def test_shell_starts_though_the_client_never_answers_do_binary(harness) -> None:
    proto, client, asked = await _tintin_opening(harness)
    assert asked == TelnetServer.TTYPE_PIPELINE  # the cycle's SENDs went at once
    env = {"CHARSET": "UTF-8", "CLIENT_NAME": "TinTin++", "MTTS": "783"}
    client.send(sb(CHARSET, b"\x02UTF-8") + sb(NEW_ENVIRON, options.build_environ_is(env)))
    run = await harness.shell_of(proto)
    _started_early(proto, run)
    assert proto._engine.remote_state(BINARY) == WANTYES  # never answered
    info = run.writer.get_extra_info
    assert info("client_name") == "TinTin++"
    assert info("TERM") == "xterm-256color"
    assert info("mtts") == Mtts(271)
    assert info("cols") == 100
    assert run.writer.encoding == run.reader.encoding == "UTF-8"


async def test_a_subnegotiation_never_answered_is_given_up_after_two_marks(harness, caplog):
    with caplog.at_level(logging.DEBUG, logger="shardd.session"):
        proto, run, peer = await _session(harness, ignore={NEW_ENVIRON})
    _started_early(proto, run)
    marks = peer.wire.count(cmd(DO, TM))
    assert 2 <= marks <= TelnetServer.MAX_MARKS, marks
    assert any("no reply to environ" in r.getMessage() for r in caplog.records)


async def _no_timing_mark_answers(harness: Any, charset: bytes) -> tuple[Any, RawClient]:
    """A client that answers everything but DO BINARY, WILL EOR and DO TIMING-MARK."""
    port = await harness.listen(TelnetServer, shell=harness.shell, connect_maxwait=MAXWAIT)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    await client.expect(cmd(DO, TTYPE))
    client.send(cmd(WILL, TTYPE))
    await client.expect(cmd(DO, TM))
    asked = client.received.count(TTYPE_SEND)
    client.send(
        cmd(DO, BINARY)  # to WILL BINARY; DO BINARY goes unanswered
        + cmd(WILL, NAWS)
        + sb(NAWS, options.build_naws(90, 20))
        + cmd(WONT, NEW_ENVIRON)
        + cmd(WILL, CHARSET)
    )
    await client.expect(bytes((IAC, 250, CHARSET, CHARSET_REQUEST)))
    client.send(sb(CHARSET, charset) + sb(TTYPE, options.build_is("XTERM")) * asked)
    return proto, client


async def test_without_a_charset_the_shell_waits_for_binary(harness) -> None:
    proto, client = await _no_timing_mark_answers(harness, b"\x03")  # CHARSET REJECTED
    # everything else has been read: the last TTYPE reply is in
    await async_wait_until(lambda: proto.get_extra_info("ttype2") == "XTERM", TIMEOUT)
    assert not proto._waiter_connected.done()
    assert proto.check_negotiation() is False  # BINARY decides the encoding still
    client.send(cmd(WILL, BINARY))
    run = await harness.shell_of(proto)
    _started_early(proto, run)
    assert run.writer.encoding == run.reader.encoding == "utf8"


async def test_with_a_charset_binary_and_eor_settle_in_the_background(harness) -> None:
    proto, _client = await _no_timing_mark_answers(harness, b"\x02UTF-8")  # ACCEPTED
    run = await harness.shell_of(proto)
    _started_early(proto, run)
    engine = proto._engine
    assert engine.remote_state(BINARY) == WANTYES and engine.local_state(EOR) == WANTYES
    assert run.writer.encoding == run.reader.encoding == "UTF-8"


async def test_a_silent_client_gets_nothing_but_do_ttype(harness) -> None:
    port = await harness.listen(TelnetServer, shell=harness.shell, connect_maxwait=0.3)
    client = await harness.raw_client(port)
    proto = await harness.protocol()
    run = await harness.shell_of(proto)
    assert run.started - proto._when_connected >= 0.3 - 0.02
    run.writer.set_mode("character")  # nc would show the claims as junk: none sent
    run.writer.write("hello")
    await client.expect(b"hello")
    assert bytes(client.received) == cmd(DO, TTYPE) + b"hello"


# ------------------------------------------------------------- who the client is


async def test_mtts_alone_makes_the_session_utf8(harness) -> None:
    _proto, run, peer = await _session(
        harness,
        ttypes=["TINTIN++", "xterm-256color", "MTTS 271"],
        accept_local=EngineClient.DEFAULT_LOCAL - {BINARY},
        accept_remote={SGA, ECHO},
        env={},
        charset=None,
    )
    info = run.writer.get_extra_info
    assert (info("client_name"), info("TERM"), info("mtts")) == (
        "TINTIN++",
        "xterm-256color",
        Mtts.ANSI | Mtts.VT100 | Mtts.UTF8 | Mtts.COLORS_256 | Mtts.TRUECOLOR,
    )
    assert [info(f"ttype{i}") for i in range(1, 5)] == [
        "TINTIN++",
        "xterm-256color",
        "MTTS 271",
        None,
    ]
    assert peer.ttype_requests == TelnetServer.TTYPE_PIPELINE  # one round trip
    assert run.writer.encoding == run.reader.encoding == "UTF-8"


async def test_mnes_variables_name_the_client(harness) -> None:
    env = {
        "CLIENT_NAME": "Mudlet",
        "CHARSET": "UTF-8",
        "MTTS": "2825",
        "TERMINAL_TYPE": "ANSI-TRUECOLOR",
    }
    _proto, run, _peer = await _session(
        harness, ttypes=["XTERM"], accept_local=EngineClient.DEFAULT_LOCAL - {BINARY}, env=env
    )
    info = run.writer.get_extra_info
    assert info("client_name") == "Mudlet"
    assert info("mtts") == 2825
    assert info("TERM") == "ansi-truecolor"  # TERMINAL_TYPE, over what TTYPE said
    assert run.writer.encoding == "UTF-8"


async def test_environ_term_wins_and_term_is_lower_case(harness) -> None:
    _proto, run, _peer = await _session(harness, ttypes=["VT100"], env={"TERM": "Screen-256Color"})
    assert run.writer.get_extra_info("TERM") == "screen-256color"
    assert run.writer.get_extra_info("ttype1") == "VT100"


async def test_a_client_cannot_pose_as_client_name_or_mtts(harness) -> None:
    _proto, run, _peer = await _session(
        harness, ttypes=["XTERM"], env={"client_name": "evil", "mtts": "4"}
    )
    assert run.writer.get_extra_info("client_name") is None
    assert run.writer.get_extra_info("mtts") is None
    assert run.writer.get_extra_info("USER") is None


class Utf8Only(TelnetServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = SessionLimits(charsets=Charsets(["utf-8"]))


async def test_environ_charset_off_the_list_is_refused(harness, caplog) -> None:
    port = await harness.listen(Utf8Only, shell=harness.shell, connect_maxwait=MAXWAIT)
    with caplog.at_level(logging.WARNING, logger="shardd.session"):
        await harness.engine_client(
            port,
            accept_local=EngineClient.DEFAULT_LOCAL - {BINARY},
            accept_remote={SGA, ECHO},
            env={"CHARSET": "KOI8-R"},
            charset=None,
        )
        proto = await harness.protocol()
        run = await harness.shell_of(proto)
    assert run.writer.encoding == run.reader.encoding == "US-ASCII"
    refusal = "refused charset 'KOI8-R' of NEW-ENVIRON CHARSET"
    assert any(refusal in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------- modes


async def test_line_mode_by_default_claims_nothing(harness) -> None:
    proto, run, peer = await _session(harness)
    assert run.writer.mode == "line"
    engine = proto._engine
    assert not engine.local_enabled(ECHO) and not engine.local_enabled(SGA)
    # a client asking the server to echo or to go ahead is refused, in line mode
    peer.engine.request_remote(ECHO)
    peer.engine.request_remote(SGA)
    peer._flush()
    await _quiet(peer)
    assert not engine.local_enabled(ECHO) and not engine.local_enabled(SGA)
    assert not peer.engine.remote_enabled(ECHO) and not peer.engine.remote_enabled(SGA)
    assert cmd(WILL, ECHO) not in peer.wire and cmd(WILL, SGA) not in peer.wire
    before = len(peer.inband)
    run.writer.echo("typed")  # the client echoes in line mode, not the server
    run.writer.write("!")
    await async_wait_until(lambda: b"!" in peer.inband[before:], TIMEOUT)
    assert bytes(peer.inband[before:]) == b"!"


async def test_character_mode_claims_sga_and_echo_and_line_mode_withdraws_them(harness):
    proto, run, peer = await _session(harness)
    engine = proto._engine
    writer = run.writer
    writer.set_mode("character")
    assert writer.mode == "character"
    await async_wait_until(
        lambda: engine.local_enabled(SGA) and engine.local_enabled(ECHO), TIMEOUT
    )
    before = len(peer.inband)
    writer.echo("k")
    await async_wait_until(lambda: b"k" in peer.inband[before:], TIMEOUT)
    writer.set_mode("line")
    # WONT sent; the server's side is off once the client has agreed (DONT)
    claimed = (SGA, ECHO)
    await async_wait_until(lambda: not any(map(peer.engine.remote_enabled, claimed)), TIMEOUT)
    await async_wait_until(lambda: not any(map(engine.local_state, claimed)), TIMEOUT)


async def test_hide_input_claims_echo_and_echoes_nothing(harness) -> None:
    proto, run, peer = await _session(harness)
    engine = proto._engine
    writer = run.writer
    writer.hide_input()  # a password prompt, in line mode
    assert writer.input_hidden and writer.mode == "line"
    await async_wait_until(lambda: engine.local_enabled(ECHO), TIMEOUT)
    assert not engine.local_enabled(SGA)  # the client still edits and sends lines
    writer.show_input()
    await async_wait_until(lambda: not engine.local_enabled(ECHO), TIMEOUT)
    # in character mode, hiding stops the server's own echo; ECHO stays claimed
    writer.set_mode("character")
    await async_wait_until(lambda: engine.local_enabled(ECHO), TIMEOUT)
    writer.hide_input()
    before = len(peer.inband)
    writer.echo("secret")
    writer.show_input()
    writer.echo("shown")
    await async_wait_until(lambda: b"shown" in peer.inband[before:], TIMEOUT)
    assert bytes(peer.inband[before:]) == b"shown"
    assert engine.local_enabled(ECHO)


async def test_writes_before_a_mode_change_keep_their_order(harness) -> None:
    proto, run, peer = await _session(harness)
    await _quiet(peer)
    segments = peer.data_segments_in()
    run.writer.write("Password: ")
    run.writer.hide_input()
    await async_wait_until(lambda: proto._engine.local_enabled(ECHO), TIMEOUT)
    assert peer.inband.endswith(b"Password: ")
    assert peer.wire.endswith(b"Password: " + cmd(WILL, ECHO))  # in the order written
    assert peer.data_segments_in() - segments == 1  # and in one segment


# ----------------------------------------------------------------- prompts


async def test_end_prompt_is_eor_when_the_client_agreed(harness) -> None:
    proto, run, peer = await _session(harness, accept_remote=WITH_EOR)
    await async_wait_until(lambda: proto._engine.local_enabled(EOR), TIMEOUT)
    await _quiet(peer)
    segments = peer.data_segments_in()
    run.writer.write("> ")
    run.writer.end_prompt()
    await async_wait_until(lambda: peer.commands_seen(EOR_CMD), TIMEOUT)
    assert peer.inband.endswith(b"> ")
    assert peer.data_segments_in() - segments == 1


async def test_end_prompt_is_ga_without_eor_and_nothing_with_sga(harness) -> None:
    proto, run, peer = await _session(harness)  # refuses EOR
    assert not proto._engine.local_enabled(EOR)
    run.writer.write("> ")
    run.writer.end_prompt()
    await async_wait_until(lambda: peer.commands_seen(GA) == 1, TIMEOUT)
    run.writer.set_mode("character")  # SGA: no GA, and no EOR to say it instead
    await async_wait_until(lambda: proto._engine.local_enabled(SGA), TIMEOUT)
    run.writer.write("> ")
    run.writer.end_prompt()
    await _quiet(peer)
    assert peer.commands_seen(GA) == 1


# ------------------------------------------- coalesced output, in character mode


async def character_mode_lines(reader: Any, writer: Any) -> None:
    """A shell in character mode that answers each line, as a BBS does."""
    writer.set_mode("character")
    editor = LineEditor(reader, writer)
    while True:
        line = await editor.readline()
        if line is None:
            return
        writer.write(f"You said: {line}\r\n> ")
        writer.end_prompt()
        await writer.drain()


async def test_a_line_received_in_one_segment_is_echoed_in_one(harness) -> None:
    port = await harness.listen(TelnetServer, shell=character_mode_lines, connect_maxwait=MAXWAIT)
    peer = await harness.engine_client(port)
    proto = await harness.protocol()
    await async_wait_until(lambda: proto._engine.local_enabled(ECHO), TIMEOUT)
    await _quiet(peer)
    segments = peer.data_segments_in()
    before = len(peer.inband)
    peer.send(b"hello world\r\n")  # one write: one segment
    await async_wait_until(lambda: peer.inband.endswith(b"> "), TIMEOUT)
    assert bytes(peer.inband[before:]) == b"hello world\r\nYou said: hello world\r\n> "
    assert peer.data_segments_in() - segments == 1  # the 12 echoes, the answer, the prompt
