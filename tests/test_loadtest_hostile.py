"""``shardd loadtest hostile``: its inputs, a pure function of the seed."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shardd.loadtest.hostile_inputs import (
    CODEC_ROUTES,
    CODECS,
    KINDS,
    MAX_INPUT_BYTES,
    MAX_SESSION_BYTES,
    RESYNC,
    Planned,
    attack,
    check_kinds,
    choose_codec,
    schedule,
)
from workers.server import TelnetServer
from workers.telnet import options
from workers.telnet.engine import DATA, Command, Subnegotiation, TelnetEngine
from workers.telnet.telopt import (
    AYT,
    CHARSET,
    CHARSET_ACCEPTED,
    CHARSET_REQUEST,
    DO,
    IAC,
    NEW_ENVIRON,
    TM,
    WILL,
)

PROBED = [k.name for k in KINDS.values() if k.probes]


def _server_engine() -> TelnetEngine:
    return TelnetEngine(
        "server",
        accept_local=TelnetServer.accept_local,
        accept_remote=TelnetServer.accept_remote,
    )


def _forced(kind: str, number: int, inputs: int | None = None) -> Any:
    """Session ``number``'s attack, of ``kind``, with ``inputs`` (default: its most)."""
    n = KINDS[kind].max_inputs if inputs is None else inputs
    return attack(number, Planned(number, kind, n), (kind,))


# ------------------------------------------------------------- the inputs


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_bounded_in_bytes(kind: str) -> None:
    for number in range(12):
        chunks = _forced(kind, number).chunks
        assert len(chunks) == KINDS[kind].max_inputs
        assert all(0 < len(c) <= MAX_INPUT_BYTES for c in chunks)
        assert sum(map(len, chunks)) <= MAX_SESSION_BYTES


@pytest.mark.parametrize("kind", PROBED)
def test_only_the_probe_is_answered_with_a_timing_mark(kind: str) -> None:
    """Whatever an attack leaves open, RESYNC and DO TM get the probe's answer, and only it."""
    for number in range(8):
        engine = _server_engine()
        for chunk in _forced(kind, number).chunks:
            engine.receive(chunk)
            assert not any(isinstance(e, Command) and e.cmd == AYT for e in engine.take_events())
            assert bytes((IAC, WILL, TM)) not in engine.data_to_send()
        engine.receive(RESYNC + bytes((IAC, DO, TM)))
        assert engine.parser_state == DATA
        assert engine.data_to_send().endswith(bytes((IAC, WILL, TM)))


def test_codec_routes_make_the_server_see_the_codec() -> None:
    for codec in CODECS:
        for route in CODEC_ROUTES:
            engine = _server_engine()
            engine.receive(choose_codec(codec, route, random.Random(0)))
            (sb,) = [e for e in engine.take_events() if isinstance(e, Subnegotiation)]
            if route == "lang":
                assert sb.option == NEW_ENVIRON
                _verb, items = options.parse_environ(sb.payload)
                (lang,) = [value for _kind, name, value in items if name == "LANG"]
                assert options.lang_encoding(str(lang)) == codec
            else:
                verb = CHARSET_ACCEPTED if route == "accepted" else CHARSET_REQUEST
                assert (sb.option, options.parse_charset(sb.payload)) == (CHARSET, (verb, [codec]))
                assert TelnetServer._choose_charset([codec]) == codec


def test_schedule_spends_the_inputs_the_same_way_every_time() -> None:
    kinds = tuple(KINDS)
    planned = list(schedule(7, 500, 3000, kinds))
    assert planned == list(schedule(7, 500, 3000, kinds))
    assert planned != list(schedule(8, 500, 3000, kinds))
    assert sum(p.inputs for p in planned) == 3000
    assert [p.number for p in planned] == list(range(len(planned)))
    assert all(p.inputs >= 1 for p in planned if KINDS[p.kind].max_inputs)
    # fewer inputs wanted than allowed: every session runs, with what it drew
    few = list(schedule(7, 5, 10**6, kinds))
    assert len(few) == 5 and sum(p.inputs for p in few) == sum(p.inputs for p in planned[:5])


def test_check_kinds() -> None:
    assert check_kinds("all") == tuple(KINDS)
    assert check_kinds("naws, sb") == ("sb", "naws")
    with pytest.raises(ValueError, match="unknown kind 'nosuch'"):
        check_kinds("sb,nosuch")
