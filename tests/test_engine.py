"""Tests for the sans-I/O telnet engine (``workers/engine.py``).

Covers RFC 854/855 framing, RFC 1143 option negotiation on both sides, the
bounds on what a peer can make us buffer, the no-copy fast path, and property
tests comparing the engine with a byte-at-a-time reference parser over random
streams cut at random points.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.telnet.engine import (
    DATA,
    DEFAULT_SB_LIMIT,
    HELD,
    NO,
    WANTNO,
    WANTYES,
    YES,
    Command,
    OptionDisabled,
    OptionEnabled,
    ProtocolError,
    Subnegotiation,
    TelnetEngine,
    escape,
)
from workers.telnet.telopt import (
    AO,
    AYT,
    BINARY,
    BRK,
    DM,
    DO,
    DONT,
    EC,
    ECHO,
    EL,
    EOR_CMD,
    GA,
    IAC,
    IAC_BYTE,
    IAC_IAC,
    IP,
    NAWS,
    NEW_ENVIRON,
    NOP,
    SB,
    SE,
    SGA,
    TM,
    TTYPE,
    WILL,
    WONT,
)

UNKNOWN = 200  # an option nobody accepts

PROPERTY_SETTINGS = settings(
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def iac(*codes: int) -> bytes:
    return bytes((IAC, *codes))


def sb(opt: int, payload: bytes) -> bytes:
    """A well-formed subnegotiation on the wire."""
    return iac(SB, opt) + escape(payload) + iac(SE)


def errors(events: list) -> list[ProtocolError]:
    return [e for e in events if isinstance(e, ProtocolError)]


def non_errors(events: list) -> list:
    return [e for e in events if not isinstance(e, ProtocolError)]


# ===================================================================== RFC 854 / 855

ALL_COMMANDS = [NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, EOR_CMD]


@pytest.mark.parametrize("cmd", ALL_COMMANDS)
def test_command_alone_yields_event_and_no_data(cmd: int) -> None:
    engine = TelnetEngine()
    assert engine.receive(iac(cmd)) == b""
    assert engine.take_events() == [Command(cmd)]
    assert engine.data_to_send() == b""
    assert engine.buffered == 0


@pytest.mark.parametrize("cmd", ALL_COMMANDS)
def test_command_between_data_is_removed_from_data(cmd: int) -> None:
    engine = TelnetEngine()
    assert engine.receive(b"ab" + iac(cmd) + b"cd") == b"abcd"
    assert engine.take_events() == [Command(cmd)]
    assert engine.data_to_send() == b""


@pytest.mark.parametrize("cmd", ALL_COMMANDS)
def test_command_split_after_iac(cmd: int) -> None:
    engine = TelnetEngine()
    assert engine.receive(b"ab" + IAC_BYTE) == b"ab"
    assert engine.events == []
    assert engine.receive(bytes((cmd,)) + b"cd") == b"cd"
    assert engine.take_events() == [Command(cmd)]


def test_se_outside_subnegotiation_is_a_plain_command() -> None:
    engine = TelnetEngine()
    assert engine.receive(b"x" + iac(SE) + b"y") == b"xy"
    assert engine.take_events() == [Command(SE)]


def test_all_commands_in_one_chunk_keep_order() -> None:
    engine = TelnetEngine()
    wire = b"".join(bytes((ord("a") + i,)) + iac(c) for i, c in enumerate(ALL_COMMANDS))
    assert engine.receive(wire) == bytes(ord("a") + i for i in range(len(ALL_COMMANDS)))
    assert engine.take_events() == [Command(c) for c in ALL_COMMANDS]


def test_command_str_names_it() -> None:
    assert str(Command(AYT)) == "IAC AYT"
    assert str(Command(EOR_CMD)) == "IAC EOR"


def test_iac_iac_received_is_one_data_byte() -> None:
    engine = TelnetEngine()
    assert engine.receive(IAC_IAC) == IAC_BYTE
    assert engine.receive(b"a" + IAC_IAC + b"b" + IAC_IAC * 2) == b"a\xffb\xff\xff"
    assert engine.events == []
    assert engine.data_to_send() == b""


def test_iac_iac_split_between_chunks() -> None:
    engine = TelnetEngine()
    assert engine.receive(b"a" + IAC_BYTE) == b"a"
    assert engine.receive(IAC_BYTE + b"b") == b"\xffb"
    assert engine.events == []


def test_escape_doubles_every_iac() -> None:
    assert escape(b"") == b""
    assert escape(b"abc") == b"abc"
    assert escape(IAC_BYTE) == IAC_IAC
    assert escape(b"a\xff\xffb\xff") == b"a\xff\xff\xff\xffb\xff\xff"


@given(st.binary(max_size=300))
@settings(deadline=None, max_examples=300)
def test_escape_round_trips_through_receive(data: bytes) -> None:
    engine = TelnetEngine()
    wire = escape(data)
    assert wire.count(IAC_BYTE) == 2 * data.count(IAC_BYTE)
    assert engine.receive(wire) == data
    assert engine.events == []


def test_subnegotiation_with_doubled_iac_has_single_iac_in_payload() -> None:
    engine = TelnetEngine()
    wire = iac(SB, NAWS) + b"\x00\x50" + IAC_IAC + b"\x00\x18" + iac(SE)
    assert engine.receive(b"<" + wire + b">") == b"<>"
    assert engine.take_events() == [Subnegotiation(NAWS, b"\x00\x50\xff\x00\x18")]
    assert engine.buffered == 0
    assert engine.data_to_send() == b""


def test_subnegotiation_split_at_every_point() -> None:
    wire = b"a" + iac(SB, TTYPE) + b"\x00X" + IAC_IAC + IAC_IAC + b"Y" + iac(SE) + b"z"
    for cut in range(len(wire) + 1):
        engine = TelnetEngine()
        data = engine.receive(wire[:cut]) + engine.receive(wire[cut:])
        assert data == b"az", cut
        assert engine.take_events() == [Subnegotiation(TTYPE, b"\x00X\xff\xffY")], cut


def test_empty_subnegotiation() -> None:
    engine = TelnetEngine()
    assert engine.receive(iac(SB, 42, IAC, SE)) == b""
    assert engine.take_events() == [Subnegotiation(42, b"")]


def test_subnegotiation_payload_may_hold_any_byte() -> None:
    payload = bytes(range(256))
    engine = TelnetEngine()
    assert engine.receive(sb(NEW_ENVIRON, payload)) == b""
    assert engine.take_events() == [Subnegotiation(NEW_ENVIRON, payload)]


def test_send_subnegotiation_escapes_and_round_trips() -> None:
    sender, receiver = TelnetEngine("client"), TelnetEngine("server")
    sender.send_subnegotiation(NAWS, b"\x00\xff\xff\x10")
    wire = sender.data_to_send()
    assert wire == iac(SB, NAWS) + b"\x00\xff\xff\xff\xff\x10" + iac(SE)
    assert sender.data_to_send() == b""
    assert receiver.receive(wire) == b""
    assert receiver.take_events() == [Subnegotiation(NAWS, b"\x00\xff\xff\x10")]


@pytest.mark.parametrize("cmd", [*ALL_COMMANDS, SE])
def test_send_command_queues_two_bytes(cmd: int) -> None:
    engine = TelnetEngine()
    assert not engine.has_output
    engine.send_command(cmd)
    assert engine.has_output
    assert engine.data_to_send() == iac(cmd)
    assert not engine.has_output


@pytest.mark.parametrize("cmd", [IAC, SB, WILL, WONT, DO, DONT])
def test_send_command_rejects_non_two_byte_commands(cmd: int) -> None:
    engine = TelnetEngine()
    with pytest.raises(ValueError):
        engine.send_command(cmd)
    assert engine.data_to_send() == b""


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError):
        TelnetEngine("peer")
    with pytest.raises(ValueError):
        TelnetEngine(sb_limit=0)
    assert TelnetEngine("client").role == "client"
    assert TelnetEngine().sb_limit == DEFAULT_SB_LIMIT


def test_take_events_drains() -> None:
    engine = TelnetEngine()
    engine.receive(iac(NOP))
    assert engine.take_events() == [Command(NOP)]
    assert engine.take_events() == []
    assert engine.events == []


# ========================================================================== RFC 1143


@dataclass(frozen=True)
class Side:
    """One side of an option seen from our engine, with the verbs it uses."""

    local: bool
    ask_on: int  # what we send to enable (WILL for local, DO for remote)
    ask_off: int
    peer_on: int  # what the peer sends to enable (DO for local, WILL for remote)
    peer_off: int

    def make(self, accept: tuple[int, ...] = (), **kw: object) -> TelnetEngine:
        key = "accept_local" if self.local else "accept_remote"
        return TelnetEngine(**{key: accept}, **kw)  # type: ignore[arg-type]

    def request(self, engine: TelnetEngine, opt: int, enable: bool = True) -> bool:
        method = engine.request_local if self.local else engine.request_remote
        return method(opt, enable)

    def state(self, engine: TelnetEngine, opt: int) -> int:
        return engine.local_state(opt) if self.local else engine.remote_state(opt)

    def enabled(self, engine: TelnetEngine, opt: int) -> bool:
        return engine.local_enabled(opt) if self.local else engine.remote_enabled(opt)

    def other_state(self, engine: TelnetEngine, opt: int) -> int:
        return engine.remote_state(opt) if self.local else engine.local_state(opt)


LOCAL = Side(local=True, ask_on=WILL, ask_off=WONT, peer_on=DO, peer_off=DONT)
REMOTE = Side(local=False, ask_on=DO, ask_off=DONT, peer_on=WILL, peer_off=WONT)
SIDES = pytest.mark.parametrize("side", [LOCAL, REMOTE], ids=["local", "remote"])

OPT = SGA


def enabled_engine(side: Side, opt: int = OPT) -> TelnetEngine:
    """An engine whose side of ``opt`` is YES after a clean exchange."""
    engine = side.make()
    assert side.request(engine, opt)
    engine.receive(iac(side.peer_on, opt))
    assert side.state(engine, opt) == YES
    engine.data_to_send()
    engine.take_events()
    return engine


@SIDES
def test_request_from_no_sends_exactly_once(side: Side) -> None:
    engine = side.make()
    assert side.state(engine, OPT) == NO
    assert side.request(engine, OPT) is True
    assert engine.data_to_send() == iac(side.ask_on, OPT)
    assert side.state(engine, OPT) == WANTYES
    assert engine.pending() == [(side.local, OPT)]
    # Asking again while the answer is outstanding sends nothing.
    assert side.request(engine, OPT) is False
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == WANTYES
    assert engine.events == []
    # The other side of the same option is untouched.
    assert side.other_state(engine, OPT) == NO


@SIDES
def test_agreement_moves_to_yes_with_event(side: Side) -> None:
    engine = side.make()
    side.request(engine, OPT)
    engine.data_to_send()
    assert engine.receive(iac(side.peer_on, OPT)) == b""
    assert engine.take_events() == [OptionEnabled(OPT, side.local)]
    assert engine.data_to_send() == b""  # an answer is not answered
    assert side.state(engine, OPT) == YES
    assert side.enabled(engine, OPT)
    assert engine.pending() == []


@SIDES
def test_request_while_yes_sends_nothing(side: Side) -> None:
    engine = enabled_engine(side)
    assert side.request(engine, OPT) is False
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == YES
    assert engine.events == []


@SIDES
def test_refusal_gives_refused_disabled_event(side: Side) -> None:
    engine = side.make()
    side.request(engine, OPT)
    engine.data_to_send()
    engine.receive(iac(side.peer_off, OPT))
    assert engine.take_events() == [OptionDisabled(OPT, side.local, refused=True)]
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == NO
    assert not side.enabled(engine, OPT)
    assert engine.pending() == []
    # The refusal is final: asking again sends the request once more.
    assert side.request(engine, OPT) is True
    assert engine.data_to_send() == iac(side.ask_on, OPT)


@SIDES
def test_unsolicited_request_for_accepted_option_answered_once(side: Side) -> None:
    engine = side.make(accept=(OPT,))
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == iac(side.ask_on, OPT)
    assert engine.take_events() == [OptionEnabled(OPT, side.local)]
    assert side.state(engine, OPT) == YES
    # The same request again while YES: no answer, so two engines cannot loop.
    for _ in range(3):
        engine.receive(iac(side.peer_on, OPT))
        assert engine.data_to_send() == b""
        assert engine.events == []
    assert side.state(engine, OPT) == YES


@SIDES
def test_unsolicited_request_for_unknown_option_refused_politely(side: Side) -> None:
    engine = side.make(accept=(OPT,))
    engine.receive(iac(side.peer_on, UNKNOWN))
    # DO X -> WONT X; WILL X -> DONT X.
    assert engine.data_to_send() == iac(side.ask_off, UNKNOWN)
    assert engine.events == []
    assert side.state(engine, UNKNOWN) == NO
    # The peer's acknowledgement of the refusal is not answered.
    engine.receive(iac(side.peer_off, UNKNOWN))
    assert engine.data_to_send() == b""
    assert engine.events == []


@SIDES
def test_each_unknown_request_gets_one_refusal(side: Side) -> None:
    engine = side.make()
    engine.receive(iac(side.peer_on, UNKNOWN) * 3)
    assert engine.data_to_send() == iac(side.ask_off, UNKNOWN) * 3
    assert engine.events == []


@SIDES
def test_peer_disabling_when_already_off_is_ignored(side: Side) -> None:
    engine = side.make(accept=(OPT,))
    engine.receive(iac(side.peer_off, OPT))
    assert engine.data_to_send() == b""
    assert engine.events == []
    assert side.state(engine, OPT) == NO


@SIDES
def test_disable_from_yes_then_peer_confirms(side: Side) -> None:
    engine = enabled_engine(side)
    assert side.request(engine, OPT, False) is True
    assert engine.data_to_send() == iac(side.ask_off, OPT)
    assert side.state(engine, OPT) == WANTNO
    assert engine.pending() == [(side.local, OPT)]
    assert engine.events == []
    # A second disable while WANTNO sends nothing.
    assert side.request(engine, OPT, False) is False
    assert engine.data_to_send() == b""
    engine.receive(iac(side.peer_off, OPT))
    assert engine.take_events() == [OptionDisabled(OPT, side.local, refused=False)]
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == NO
    assert engine.pending() == []


@SIDES
def test_disable_when_off_sends_nothing(side: Side) -> None:
    engine = side.make()
    assert side.request(engine, OPT, False) is False
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == NO


@SIDES
def test_peer_disables_from_yes_is_acknowledged_once(side: Side) -> None:
    engine = enabled_engine(side)
    engine.receive(iac(side.peer_off, OPT))
    assert engine.data_to_send() == iac(side.ask_off, OPT)
    assert engine.take_events() == [OptionDisabled(OPT, side.local, refused=False)]
    assert side.state(engine, OPT) == NO
    engine.receive(iac(side.peer_off, OPT))
    assert engine.data_to_send() == b""
    assert engine.events == []


@SIDES
def test_enable_queued_behind_disable(side: Side) -> None:
    """WANTNO + enable request = OPPOSITE queued; the peer's confirmation re-asks."""
    engine = enabled_engine(side)
    side.request(engine, OPT, False)
    assert engine.data_to_send() == iac(side.ask_off, OPT)
    assert side.request(engine, OPT, True) is True  # queued
    assert engine.data_to_send() == b""  # nothing sent while the first is unanswered
    assert side.state(engine, OPT) == WANTNO
    assert side.request(engine, OPT, True) is False  # already queued
    assert engine.data_to_send() == b""
    engine.receive(iac(side.peer_off, OPT))
    assert engine.data_to_send() == iac(side.ask_on, OPT)
    assert side.state(engine, OPT) == WANTYES
    assert engine.pending() == [(side.local, OPT)]
    engine.take_events()
    engine.receive(iac(side.peer_on, OPT))
    assert engine.take_events() == [OptionEnabled(OPT, side.local)]
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == YES


@SIDES
def test_disable_queued_behind_enable(side: Side) -> None:
    """WANTYES + disable request = OPPOSITE queued; the peer's consent is withdrawn."""
    engine = side.make()
    side.request(engine, OPT, True)
    assert engine.data_to_send() == iac(side.ask_on, OPT)
    assert side.request(engine, OPT, False) is True
    assert engine.data_to_send() == b""
    assert side.request(engine, OPT, False) is False
    assert side.state(engine, OPT) == WANTYES
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == iac(side.ask_off, OPT)
    assert side.state(engine, OPT) == WANTNO
    engine.take_events()
    engine.receive(iac(side.peer_off, OPT))
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == NO
    assert engine.pending() == []
    assert [e for e in engine.take_events() if isinstance(e, OptionEnabled)] == []


@SIDES
def test_queued_disable_with_refusal_ends_off(side: Side) -> None:
    engine = side.make()
    side.request(engine, OPT, True)
    side.request(engine, OPT, False)
    engine.data_to_send()
    engine.receive(iac(side.peer_off, OPT))
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == NO
    assert engine.pending() == []
    # The queued disable went with the refusal: a new request and the peer's
    # consent end in YES, not in a withdrawal.
    engine.take_events()
    assert side.request(engine, OPT) is True
    assert engine.data_to_send() == iac(side.ask_on, OPT)
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == YES
    assert engine.take_events() == [OptionEnabled(OPT, side.local)]


@SIDES
def test_cancel_queued_enable(side: Side) -> None:
    engine = enabled_engine(side)
    side.request(engine, OPT, False)
    side.request(engine, OPT, True)  # queue
    assert side.request(engine, OPT, False) is True  # unqueue
    engine.data_to_send()
    engine.receive(iac(side.peer_off, OPT))
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == NO
    assert engine.take_events() == [OptionDisabled(OPT, side.local)]


@SIDES
def test_cancel_queued_disable(side: Side) -> None:
    engine = side.make()
    side.request(engine, OPT, True)
    side.request(engine, OPT, False)  # queue
    assert side.request(engine, OPT, True) is True  # unqueue
    engine.data_to_send()
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == YES
    assert engine.take_events() == [OptionEnabled(OPT, side.local)]


@SIDES
def test_consent_to_our_disable_is_taken_as_no(side: Side) -> None:
    """RFC 1143: WANTNO answered by the positive verb is an error; the option ends off."""
    engine = enabled_engine(side)
    side.request(engine, OPT, False)
    engine.data_to_send()
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == NO
    assert engine.take_events() == [OptionDisabled(OPT, side.local)]


@SIDES
def test_consent_to_our_disable_with_queued_enable_stays_on(side: Side) -> None:
    engine = enabled_engine(side)
    side.request(engine, OPT, False)
    side.request(engine, OPT, True)
    engine.data_to_send()
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == b""
    assert side.state(engine, OPT) == YES
    assert engine.pending() == []


@SIDES
def test_requesting_an_option_accepts_it_afterwards(side: Side) -> None:
    engine = enabled_engine(side)  # requested, so the option is acceptable
    engine.receive(iac(side.peer_off, OPT))
    engine.data_to_send()
    engine.take_events()
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == iac(side.ask_on, OPT)
    assert side.state(engine, OPT) == YES


@SIDES
def test_accept_setters_change_answers(side: Side) -> None:
    engine = side.make()
    setter = engine.accept_local if side.local else engine.accept_remote
    setter(OPT)
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == iac(side.ask_on, OPT)
    engine.receive(iac(side.peer_off, OPT))
    engine.data_to_send()
    setter(OPT, False)
    engine.take_events()
    engine.receive(iac(side.peer_on, OPT))
    assert engine.data_to_send() == iac(side.ask_off, OPT)
    assert side.state(engine, OPT) == NO
    assert engine.events == []


def test_sides_are_independent() -> None:
    engine = TelnetEngine(accept_local={ECHO}, accept_remote={NAWS})
    engine.receive(iac(DO, ECHO) + iac(WILL, NAWS) + iac(WILL, ECHO) + iac(DO, NAWS))
    assert engine.data_to_send() == iac(WILL, ECHO) + iac(DO, NAWS) + iac(DONT, ECHO) + iac(
        WONT, NAWS
    )
    assert engine.take_events() == [OptionEnabled(ECHO, True), OptionEnabled(NAWS, False)]
    assert engine.local_enabled(ECHO) and not engine.remote_enabled(ECHO)
    assert engine.remote_enabled(NAWS) and not engine.local_enabled(NAWS)


def test_pending_lists_both_sides() -> None:
    engine = TelnetEngine()
    engine.request_local(ECHO)
    engine.request_remote(NAWS)
    assert sorted(engine.pending()) == [(False, NAWS), (True, ECHO)]
    engine.receive(iac(DO, ECHO))
    assert engine.pending() == [(False, NAWS)]
    engine.receive(iac(WONT, NAWS))
    assert engine.pending() == []


def test_do_timing_mark_answered_will_when_accepted() -> None:
    engine = TelnetEngine(accept_local={TM})
    for _ in range(3):  # every DO TM is a new question, answered every time
        assert engine.receive(b"a" + iac(DO, TM) + b"b") == b"ab"
        assert engine.data_to_send() == iac(WILL, TM)
        assert engine.events == []
        assert engine.local_state(TM) == NO
        assert engine.pending() == []


def test_do_timing_mark_answered_wont_otherwise() -> None:
    engine = TelnetEngine(accept_local={ECHO})
    for _ in range(2):
        engine.receive(iac(DO, TM))
        assert engine.data_to_send() == iac(WONT, TM)
        assert engine.events == []
        assert engine.local_state(TM) == NO


def test_dont_timing_mark_is_ignored() -> None:
    engine = TelnetEngine(accept_local={TM})
    engine.receive(iac(DONT, TM))
    assert engine.data_to_send() == b""
    assert engine.events == []
    assert engine.local_state(TM) == NO


# ------------------------------------------------------------------- back to back


def pump(a: TelnetEngine, b: TelnetEngine, max_rounds: int = 20) -> int:
    """Forward each engine's output to the other until both are quiet.

    Returns the number of rounds that carried bytes; fails if it never gets quiet.
    """
    for rounds in range(max_rounds + 1):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return rounds
        assert b.receive(out_a) == b""
        assert a.receive(out_b) == b""
    raise AssertionError(f"negotiation still running after {max_rounds} rounds")


def assert_agree(server: TelnetEngine, client: TelnetEngine, opts: range | list[int]) -> None:
    for opt in opts:
        assert server.local_state(opt) in (NO, YES), opt
        assert server.remote_state(opt) in (NO, YES), opt
        assert server.local_state(opt) == client.remote_state(opt), opt
        assert server.remote_state(opt) == client.local_state(opt), opt
    assert server.pending() == []
    assert client.pending() == []


def test_back_to_back_like_real_server_and_client() -> None:
    server = TelnetEngine(
        "server",
        accept_local={SGA, ECHO, BINARY, 25, 5, TM},
        accept_remote={TTYPE, NAWS, NEW_ENVIRON, 42, BINARY, 32, 35, 25, SGA},
    )
    client = TelnetEngine(
        "client",
        accept_local={TTYPE, NAWS, NEW_ENVIRON, 42, BINARY, 32, 35},
        accept_remote={BINARY, SGA, ECHO},
    )
    server.request_remote(TTYPE)
    for opt in (SGA, ECHO, BINARY):
        server.request_local(opt)
    for opt in (BINARY, NAWS, NEW_ENVIRON, 42, UNKNOWN):
        server.request_remote(opt)
    client.request_local(NAWS)  # simultaneous with the server's DO NAWS
    client.request_remote(UNKNOWN + 1)  # refused by the server
    rounds = pump(server, client)
    assert rounds <= 3
    assert_agree(server, client, range(256))
    for opt in (SGA, ECHO, BINARY):
        assert server.local_enabled(opt) and client.remote_enabled(opt)
    for opt in (TTYPE, BINARY, NAWS, NEW_ENVIRON, 42):
        assert server.remote_enabled(opt) and client.local_enabled(opt)
    assert not server.remote_enabled(UNKNOWN)
    assert not client.remote_enabled(UNKNOWN + 1)
    assert OptionDisabled(UNKNOWN, False, refused=True) in server.take_events()
    assert OptionDisabled(UNKNOWN + 1, False, refused=True) in client.take_events()
    # Turning an option off and on again converges too.
    server.request_local(ECHO, False)
    server.request_local(ECHO, True)
    client.request_local(NAWS, False)
    assert pump(server, client) <= 4
    assert_agree(server, client, range(256))
    assert server.local_enabled(ECHO)
    assert not client.local_enabled(NAWS)


def test_back_to_back_simultaneous_requests() -> None:
    """Both ends ask for the same thing at once; neither accepts anything up front."""
    server, client = TelnetEngine("server"), TelnetEngine("client")
    server.request_local(ECHO)
    client.request_remote(ECHO)
    server.request_remote(NAWS)
    client.request_local(NAWS)
    # A request crossing the matching request is taken as the answer to it.
    assert pump(server, client) == 1
    assert_agree(server, client, range(256))
    assert server.local_enabled(ECHO) and client.remote_enabled(ECHO)
    assert server.remote_enabled(NAWS) and client.local_enabled(NAWS)
    # The same side offered by both ends is refused by both: nothing accepted.
    server.request_local(SGA)
    client.request_local(SGA)
    assert pump(server, client) <= 2
    assert_agree(server, client, range(256))
    assert not server.local_enabled(SGA) and not client.local_enabled(SGA)


NEG_OPTS = [BINARY, ECHO, SGA, TTYPE, NAWS, UNKNOWN]

_request_op = st.tuples(
    st.just("request"),
    st.sampled_from(["server", "client"]),
    st.booleans(),  # local side?
    st.sampled_from(NEG_OPTS),
    st.booleans(),  # enable?
)
_deliver_op = st.tuples(
    st.just("deliver"),
    st.sampled_from(["server", "client"]),  # which engine's output goes across
    st.integers(1, 12),  # how many bytes of what is in flight
)
_accept_sets = st.frozensets(st.sampled_from(NEG_OPTS), max_size=len(NEG_OPTS))


@given(
    ops=st.lists(st.one_of(_request_op, _deliver_op), max_size=40),
    accepts=st.tuples(_accept_sets, _accept_sets, _accept_sets, _accept_sets),
)
@settings(deadline=None, max_examples=300)
def test_back_to_back_random_requests_converge(
    ops: list[tuple], accepts: tuple[frozenset[int], ...]
) -> None:
    engines = {
        "server": TelnetEngine("server", accept_local=accepts[0], accept_remote=accepts[1]),
        "client": TelnetEngine("client", accept_local=accepts[2], accept_remote=accepts[3]),
    }
    other = {"server": "client", "client": "server"}
    in_flight = {"server": bytearray(), "client": bytearray()}  # keyed by sender
    sent = 0
    for op in ops:
        for name, engine in engines.items():
            in_flight[name] += engine.data_to_send()
        if op[0] == "request":
            _, name, local, opt, enable = op
            engine = engines[name]
            (engine.request_local if local else engine.request_remote)(opt, enable)
        else:
            _, name, count = op
            chunk = bytes(in_flight[name][:count])
            del in_flight[name][:count]
            sent += len(chunk)
            assert engines[other[name]].receive(chunk) == b""
    for name, engine in engines.items():
        in_flight[name] += engine.data_to_send()
    # Deliver everything in flight, then let the engines talk until quiet.
    for name in engines:
        assert engines[other[name]].receive(bytes(in_flight[name])) == b""
    rounds = pump(engines["server"], engines["client"], max_rounds=10)
    assert rounds <= 4
    assert_agree(engines["server"], engines["client"], NEG_OPTS)
    # The events each engine reported add up to the state it ends in.
    for engine in engines.values():
        on: set[tuple[bool, int]] = set()
        for event in engine.take_events():
            assert not isinstance(event, (ProtocolError, Command, Subnegotiation))
            if isinstance(event, OptionEnabled):
                on.add((event.local, event.option))
            else:
                on.discard((event.local, event.option))
        for opt in NEG_OPTS:
            assert ((True, opt) in on) == engine.local_enabled(opt)
            assert ((False, opt) in on) == engine.remote_enabled(opt)


# ============================================================================ bounded


def test_oversized_subnegotiation_discarded_and_stream_continues() -> None:
    engine = TelnetEngine(sb_limit=8)
    wire = b"a" + iac(SB, TTYPE) + b"0123456789" + iac(SE) + b"b" + iac(NOP) + b"c"
    assert engine.receive(wire) == b"abc"
    events = engine.take_events()
    assert len(events) == 2
    assert isinstance(events[0], ProtocolError)
    assert "TTYPE" in events[0].reason
    assert events[1] == Command(NOP)
    assert engine.buffered == 0
    # The next subnegotiation is fine again.
    engine.receive(sb(TTYPE, b"\x00vt100"))
    assert engine.take_events() == [Subnegotiation(TTYPE, b"\x00vt100")]


def test_subnegotiation_of_exactly_sb_limit_is_kept() -> None:
    engine = TelnetEngine(sb_limit=8)
    engine.receive(sb(TTYPE, b"01234567"))
    assert engine.take_events() == [Subnegotiation(TTYPE, b"01234567")]
    engine.receive(sb(TTYPE, b"012345678"))
    assert [type(e) for e in engine.take_events()] == [ProtocolError]


def test_sb_limit_counts_unescaped_bytes() -> None:
    engine = TelnetEngine(sb_limit=4)
    engine.receive(sb(NAWS, b"\xff" * 4))  # 8 bytes on the wire, 4 of payload
    assert engine.take_events() == [Subnegotiation(NAWS, b"\xff" * 4)]
    engine.receive(sb(NAWS, b"\xff" * 5))
    assert [type(e) for e in engine.take_events()] == [ProtocolError]


def test_oversized_subnegotiation_byte_at_a_time() -> None:
    engine = TelnetEngine(sb_limit=16)
    wire = iac(SB, NEW_ENVIRON) + escape(bytes(range(256)) * 2) + iac(SE) + b"ok"
    data = b""
    for byte in wire:
        data += engine.receive(bytes((byte,)))
        assert engine.buffered <= 16
    assert data == b"ok"
    assert [type(e) for e in engine.take_events()] == [ProtocolError]


@pytest.mark.parametrize("chunk_size", [1 << 16, 4 << 20])
def test_unterminated_megabyte_subnegotiation_stays_bounded(chunk_size: int) -> None:
    engine = TelnetEngine()
    assert engine.receive(b"hi" + iac(SB, TTYPE)) == b"hi"
    blob = bytes(range(255)) * (chunk_size // 255 + 1)  # no IAC in it
    total = 0
    while total < 4 << 20:
        assert engine.receive(blob[:chunk_size]) == b""
        total += chunk_size
        assert engine.buffered <= engine.sb_limit
    assert engine.events == []
    assert engine.receive(iac(SE) + b"after" + IAC_IAC) == b"after\xff"
    events = engine.take_events()
    assert [type(e) for e in events] == [ProtocolError]
    assert engine.buffered == 0


def test_unterminated_subnegotiation_with_escaped_iacs_stays_bounded() -> None:
    engine = TelnetEngine(sb_limit=100)
    engine.receive(iac(SB, 42))
    for _ in range(2000):
        engine.receive(IAC_IAC * 50 + b"x" * 50)
        assert engine.buffered <= 100
    engine.receive(iac(SE))
    assert [type(e) for e in engine.take_events()] == [ProtocolError]
    assert engine.buffered == 0


@pytest.mark.parametrize("byte", range(239))
def test_iac_with_non_command_byte_is_an_error_and_dropped(byte: int) -> None:
    engine = TelnetEngine()
    assert engine.receive(b"a" + iac(byte) + b"c") == b"ac"
    events = engine.take_events()
    assert len(events) == 1
    assert isinstance(events[0], ProtocolError)
    assert str(byte) in events[0].reason
    assert engine.data_to_send() == b""
    # The stream goes on normally.
    assert engine.receive(b"d" + iac(AYT) + b"e") == b"de"
    assert engine.take_events() == [Command(AYT)]


def test_iac_non_command_split_across_chunks() -> None:
    engine = TelnetEngine()
    assert engine.receive(b"a" + IAC_BYTE) == b"a"
    assert engine.receive(b"bc") == b"c"
    assert [type(e) for e in engine.take_events()] == [ProtocolError]


@pytest.mark.parametrize("cmd", ALL_COMMANDS)
def test_command_inside_subnegotiation_ends_it(cmd: int) -> None:
    engine = TelnetEngine()
    assert engine.receive(iac(SB, TTYPE) + b"\x00xterm" + iac(cmd) + b"data") == b"data"
    events = engine.take_events()
    assert len(events) == 2
    assert isinstance(events[0], ProtocolError)
    assert events[1] == Command(cmd)
    assert engine.buffered == 0
    # A later IAC SE is just a command now, not the end of a subnegotiation.
    assert engine.receive(iac(SE)) == b""
    assert engine.take_events() == [Command(SE)]


def test_negotiation_inside_subnegotiation_ends_it_and_is_processed() -> None:
    engine = TelnetEngine(accept_local={ECHO})
    assert engine.receive(iac(SB, TTYPE) + b"junk" + iac(DO, ECHO) + b"x") == b"x"
    events = engine.take_events()
    assert [type(e) for e in events] == [ProtocolError, OptionEnabled]
    assert events[1] == OptionEnabled(ECHO, True)
    assert engine.data_to_send() == iac(WILL, ECHO)


def test_subnegotiation_inside_subnegotiation_starts_a_new_one() -> None:
    engine = TelnetEngine()
    assert engine.receive(iac(SB, TTYPE) + b"junk" + sb(NAWS, b"\x00\x50\x00\x18")) == b""
    events = engine.take_events()
    assert [type(e) for e in events] == [ProtocolError, Subnegotiation]
    assert events[1] == Subnegotiation(NAWS, b"\x00\x50\x00\x18")


def test_non_command_inside_subnegotiation() -> None:
    engine = TelnetEngine()
    assert engine.receive(iac(SB, TTYPE) + b"junk" + iac(ord("z")) + b"ok") == b"ok"
    events = engine.take_events()
    assert [type(e) for e in events] == [ProtocolError, ProtocolError]


def test_overflowed_subnegotiation_cut_by_command() -> None:
    engine = TelnetEngine(sb_limit=4)
    assert engine.receive(iac(SB, TTYPE) + b"0123456789" + iac(GA) + b"z") == b"z"
    events = engine.take_events()
    assert [type(e) for e in events] == [ProtocolError, Command]
    assert engine.buffered == 0
    engine.receive(sb(TTYPE, b"ok"))
    assert engine.take_events() == [Subnegotiation(TTYPE, b"ok")]


def test_lone_iac_at_end_of_chunk_is_held() -> None:
    engine = TelnetEngine()
    assert engine.receive(IAC_BYTE) == b""
    assert engine.events == []
    assert engine.buffered == 0
    assert engine.receive(bytes((NOP,))) == b""
    assert engine.take_events() == [Command(NOP)]


# ========================================================================== fast path


def test_fast_path_returns_same_object() -> None:
    engine = TelnetEngine()
    data = bytes(range(255)) * 4
    assert engine.receive(data) is data
    # After complete sequences the parser is between sequences again.
    engine.receive(iac(NOP) + sb(TTYPE, b"x") + iac(WILL, ECHO) + IAC_IAC)
    data2 = b"hello, world\r\n" * 10
    assert engine.receive(data2) is data2
    empty = b""
    assert engine.receive(empty) is empty


@given(st.binary(max_size=500).map(lambda b: b.replace(IAC_BYTE, b"")))
@settings(deadline=None, max_examples=300)
def test_fast_path_property(data: bytes) -> None:
    engine = TelnetEngine()
    assert engine.receive(data) is data
    assert engine.events == []


def test_no_fast_path_in_the_middle_of_a_sequence() -> None:
    engine = TelnetEngine()
    engine.receive(IAC_BYTE)
    assert engine.receive(bytes((NOP,)) + b"abc") == b"abc"
    engine.receive(iac(WILL))
    assert engine.receive(bytes((UNKNOWN,)) + b"abc") == b"abc"
    engine.receive(iac(SB))
    assert engine.receive(bytes((TTYPE,)) + b"abc") == b""
    assert engine.buffered == 3
    assert engine.receive(b"def") == b""
    assert engine.buffered == 6
    assert engine.receive(iac(SE) + b"ghi") == b"ghi"
    assert engine.take_events()[-1] == Subnegotiation(TTYPE, b"abcdef")


# ==================================================== reference parser and properties

ERROR = "protocol-error"  # events compared without the error's wording


def reference_parse(stream: bytes, sb_limit: int) -> tuple[bytes, list[tuple], str]:
    """Byte-at-a-time telnet parser implementing the engine's documented rules.

    Returns the in-band data, the parsed items in order (("cmd", c), ("neg", verb,
    opt), ("sb", opt, payload), ("error",)) and the final state ("data" when the
    stream ends between sequences).
    """
    data = bytearray()
    items: list[tuple] = []
    state = "data"
    verb = sb_opt = 0
    payload = bytearray()

    def after_iac(byte: int) -> str:
        nonlocal verb
        if byte in (WILL, WONT, DO, DONT):
            verb = byte
            return "opt"
        if byte == SB:
            return "sb_opt"
        if 239 <= byte <= 249:
            items.append(("cmd", byte))
        else:
            items.append(("error",))
        return "data"

    for byte in stream:
        if state == "data":
            if byte == IAC:
                state = "iac"
            else:
                data.append(byte)
        elif state == "iac":
            if byte == IAC:
                data.append(IAC)
                state = "data"
            else:
                state = after_iac(byte)
        elif state == "opt":
            items.append(("neg", verb, byte))
            state = "data"
        elif state == "sb_opt":
            sb_opt = byte
            payload = bytearray()
            state = "sb"
        elif state == "sb":
            if byte == IAC:
                state = "sb_iac"
            else:
                payload.append(byte)
        else:  # sb_iac
            if byte == IAC:
                payload.append(IAC)
                state = "sb"
            elif byte == SE:
                if len(payload) > sb_limit:
                    items.append(("error",))
                else:
                    items.append(("sb", sb_opt, bytes(payload)))
                state = "data"
            else:
                items.append(("error",))
                state = after_iac(byte)
    return bytes(data), items, state


def make_engine(sb_limit: int) -> TelnetEngine:
    """The engine every property test uses: some options accepted, some pending."""
    engine = TelnetEngine(
        "server",
        accept_local={ECHO, SGA, TM, BINARY},
        accept_remote={NAWS, TTYPE, BINARY},
        sb_limit=sb_limit,
    )
    engine.request_local(ECHO)
    engine.request_remote(TTYPE)
    engine.request_local(BINARY)
    engine.request_local(BINARY, False)  # WANTYES with a queued disable
    engine.request_remote(NEW_ENVIRON)
    engine.data_to_send()
    return engine


def expected_from_reference(items: list[tuple], engine_factory: Callable[[], TelnetEngine]):
    """Events and replies the reference's parse implies.

    Negotiations are replayed one clean three-byte sequence at a time into a
    fresh engine: this checks the engine's parser, not its (separately tested)
    RFC 1143 state machine.
    """
    replay = engine_factory()
    events: list = []
    for item in items:
        if item[0] == "cmd":
            events.append(Command(item[1]))
        elif item[0] == "sb":
            events.append(Subnegotiation(item[1], item[2]))
        elif item[0] == "error":
            events.append(ERROR)
        else:
            assert replay.receive(iac(item[1], item[2])) == b""
            events.extend(replay.take_events())
    return events, replay.data_to_send()


def normalized(events: list) -> list:
    return [ERROR if isinstance(e, ProtocolError) else e for e in events]


OPTION_BYTES = st.one_of(
    st.sampled_from([BINARY, ECHO, SGA, TM, TTYPE, NAWS, NEW_ENVIRON, UNKNOWN, SE, IAC]),
    st.integers(0, 255),
)
VERBS = st.sampled_from([WILL, WONT, DO, DONT])
PAYLOADS = st.binary(max_size=24)

SEGMENTS = st.one_of(
    st.binary(max_size=16),  # random bytes, stray IACs included
    st.binary(max_size=16).map(lambda b: b.replace(IAC_BYTE, b"")),  # plain data
    st.just(IAC_IAC),
    st.integers(239, 249).map(lambda c: iac(c)),  # commands
    st.tuples(VERBS, OPTION_BYTES).map(lambda t: iac(*t)),  # negotiations
    st.tuples(OPTION_BYTES, PAYLOADS).map(lambda t: sb(*t)),  # well-formed SB
    st.tuples(OPTION_BYTES, PAYLOADS).map(lambda t: iac(SB, t[0]) + t[1]),  # raw/unterminated
    st.integers(0, 238).map(lambda b: iac(b)),  # IAC + non-command
    st.sampled_from([IAC_BYTE, iac(SB), iac(WILL), iac(DO), iac(SE), iac(SB, TTYPE)]),
)
STREAMS = st.lists(SEGMENTS, max_size=30).map(b"".join)
SB_LIMITS = st.sampled_from([1, 4, 16, DEFAULT_SB_LIMIT])


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def run_chunks(engine: TelnetEngine, chunks: list[bytes]) -> tuple[bytes, list, bytes]:
    """Feed ``chunks``, checking the bound after each; return data, events, replies."""
    data = []
    for chunk in chunks:
        data.append(engine.receive(chunk))
        assert engine.buffered <= engine.sb_limit
    return b"".join(data), engine.take_events(), engine.data_to_send()


def cut_points(stream: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(stream)), max_size=12)


@given(stream=STREAMS, sb_limit=SB_LIMITS, data=st.data())
@PROPERTY_SETTINGS
def test_engine_matches_reference_for_any_split(stream: bytes, sb_limit: int, data) -> None:
    chunks = split(stream, data.draw(cut_points(stream), label="cuts"))
    ref_data, items, _ = reference_parse(stream, sb_limit)
    ref_events, ref_out = expected_from_reference(items, lambda: make_engine(sb_limit))

    engine = make_engine(sb_limit)
    inband, events, out = run_chunks(engine, chunks)
    assert inband == ref_data
    assert normalized(events) == ref_events
    assert out == ref_out


@given(stream=STREAMS, sb_limit=SB_LIMITS, data=st.data())
@PROPERTY_SETTINGS
def test_fast_path_whenever_between_sequences(stream: bytes, sb_limit: int, data) -> None:
    """Every chunk without IAC that starts between sequences comes back as itself."""
    chunks = split(stream, data.draw(cut_points(stream), label="cuts"))
    engine = make_engine(sb_limit)
    fed = 0
    for chunk in chunks:
        _, _, state = reference_parse(stream[:fed], sb_limit)
        result = engine.receive(chunk)
        if state == "data" and IAC_BYTE not in chunk:
            assert result is chunk
        fed += len(chunk)
        assert engine.buffered <= sb_limit


@given(stream=STREAMS, sb_limit=SB_LIMITS, data=st.data())
@PROPERTY_SETTINGS
def test_split_does_not_change_replies_or_events(stream: bytes, sb_limit: int, data) -> None:
    whole = run_chunks(make_engine(sb_limit), [stream])
    cut = run_chunks(make_engine(sb_limit), split(stream, data.draw(cut_points(stream))))
    single = run_chunks(make_engine(sb_limit), [bytes((b,)) for b in stream])
    for inband, events, out in (cut, single):
        assert inband == whole[0]
        assert out == whole[2]
        assert non_errors(events) == non_errors(whole[1])
        assert len(errors(events)) == len(errors(whole[1]))


@given(stream=STREAMS, sb_limit=SB_LIMITS, budget=st.integers(1, 12), data=st.data())
@PROPERTY_SETTINGS
def test_budget_holds_back_and_loses_nothing(stream: bytes, sb_limit: int, budget: int, data):
    """With a budget, each receive() stops at a sequence boundary once it is spent; going
    on with receive(b"") gives the same data, events and replies, in the same order."""
    whole = run_chunks(make_engine(sb_limit), [stream])
    engine = make_engine(sb_limit)
    engine.budget = budget
    inband = []
    for chunk in split(stream, data.draw(cut_points(stream))):
        inband.append(engine.receive(chunk))
        for _turn in range(len(stream) + 1):
            if engine.parser_state != HELD:
                break
            assert len(engine._held) < len(stream) + 1
            inband.append(engine.receive(b""))
        assert engine.parser_state != HELD
    assert b"".join(inband) == whole[0]
    assert normalized(engine.take_events()) == normalized(whole[1])
    assert engine.data_to_send() == whole[2]


def test_budget_counts_steps_not_calls() -> None:
    engine = TelnetEngine(budget=10)
    nops = iac(NOP) * 20  # two steps each: find the IAC, read the command
    assert engine.receive(b"a" + nops + b"b") == b"a"
    assert engine.parser_state == HELD
    assert len(engine.take_events()) == 5
    assert engine.receive(b"c") == b""  # held bytes first, then the new ones, in order
    assert len(engine.take_events()) == 5
    assert engine.receive(b"") + engine.receive(b"") == b""
    assert len(engine.take_events()) == 10
    assert engine.receive(b"") == b"bc"
    assert engine.take_events() == [] and engine.parser_state == DATA


@given(stream=st.binary(max_size=2000), data=st.data())
@settings(deadline=None, max_examples=300)
def test_arbitrary_bytes_never_raise(stream: bytes, data) -> None:
    chunks = split(stream, data.draw(cut_points(stream)))
    engine = make_engine(16)
    inband, events, _ = run_chunks(engine, chunks)
    ref_data, items, _ = reference_parse(stream, 16)
    assert inband == ref_data
    assert normalized(events) == expected_from_reference(items, lambda: make_engine(16))[0]


@given(
    payload=st.binary(min_size=0, max_size=200),
    sb_limit=st.integers(1, 64),
    data=st.data(),
)
@settings(deadline=None, max_examples=300)
def test_subnegotiation_bound_property(payload: bytes, sb_limit: int, data) -> None:
    stream = b"<" + sb(TTYPE, payload) + b">" + iac(NOP)
    engine = TelnetEngine(sb_limit=sb_limit)
    inband, events, out = run_chunks(engine, split(stream, data.draw(cut_points(stream))))
    assert inband == b"<>"
    assert out == b""
    if len(payload) <= sb_limit:
        assert events == [Subnegotiation(TTYPE, payload), Command(NOP)]
    else:
        assert [type(e) for e in events] == [ProtocolError, Command]
    assert engine.buffered == 0


def test_timing_mark_can_be_asked_for_again() -> None:
    """RFC 860: each DO TM is answered by one mark; TM never stays enabled."""
    server = TelnetEngine("server")
    client = TelnetEngine("client", accept_local={TM})
    for _round in range(3):
        assert server.request_remote(TM)
        client.receive(server.data_to_send())
        assert client.data_to_send() == bytes((IAC, WILL, TM))
        server.receive(bytes((IAC, WILL, TM)))
        assert server.take_events() == [OptionEnabled(TM, False)]
        assert not server.remote_enabled(TM)
        assert server.pending() == []


def test_request_timing_mark_one_at_a_time_and_accept_set_untouched() -> None:
    server = TelnetEngine(accept_remote={TTYPE})
    accept = server._remote.accept
    assert server.request_timing_mark()
    assert server.data_to_send() == iac(DO, TM)
    assert not server.request_timing_mark()  # one unanswered at a time
    assert server.data_to_send() == b""
    assert server._remote.accept is accept  # no set of its own for this session
    for answer, event in (
        (WONT, OptionDisabled(TM, False, True)),
        (WILL, OptionEnabled(TM, False)),
    ):
        server.receive(iac(answer, TM))
        assert server.take_events() == [event]
        assert server.data_to_send() == b""  # a mark is not answered
        assert server.remote_state(TM) == NO
        assert server.request_timing_mark()  # and the next may go
        server.data_to_send()


def test_an_unasked_will_timing_mark_is_refused_not_a_mark() -> None:
    server = TelnetEngine()
    server.receive(iac(WILL, TM))
    assert server.take_events() == []
    assert server.data_to_send() == iac(DONT, TM)


def test_heard_once_the_peer_sends_a_telnet_command() -> None:
    engine = TelnetEngine()
    engine.receive(b"plain text, and an escaped " + IAC_IAC + b" byte")
    assert not engine.heard  # nc could send this
    engine.receive(iac(NOP))
    assert engine.heard
    engine = TelnetEngine()
    engine.receive(iac(WONT, TTYPE))
    assert engine.heard


def test_accept_sets_changed_alike_are_shared() -> None:
    first, second = TelnetEngine(accept_local={BINARY}), TelnetEngine(accept_local={BINARY})
    for engine in (first, second):
        engine.accept_local(SGA)
        engine.accept_local(ECHO)
    assert first._local.accept == {BINARY, SGA, ECHO}
    assert first._local.accept is second._local.accept
