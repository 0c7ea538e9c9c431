"""MSDP (``workers/telnet/msdp.py``): the codec both ways, bounds, and the server state."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.telnet import msdp
from workers.telnet.msdp import (
    ARRAY_CLOSE,
    ARRAY_OPEN,
    MAX_DEPTH,
    MAX_PAYLOAD,
    TABLE_CLOSE,
    TABLE_OPEN,
    VAL,
    VAR,
    MSDPError,
    MSDPServer,
    MSDPValue,
)

PROPERTY_SETTINGS = settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)

# text as MSDP carries it: anything UTF-8 can encode but NUL and the six MSDP bytes
texts = st.text(
    st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\x00\x01\x02\x03\x04\x05\x06"
    ),
    max_size=12,
)
names = texts.filter(bool)
values: st.SearchStrategy[MSDPValue] = st.recursive(
    texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=12,
)


def b(*parts: int | str) -> bytes:
    """A payload from MSDP bytes and text."""
    return b"".join(p.encode() if isinstance(p, str) else bytes((p,)) for p in parts)


@PROPERTY_SETTINGS
@given(variables=st.lists(st.tuples(names, values), max_size=5))
def test_round_trip(variables: list[tuple[str, MSDPValue]]) -> None:
    assert msdp.decode(msdp.encode(variables)) == variables


@PROPERTY_SETTINGS
@given(variables=st.dictionaries(names, values, max_size=5))
def test_round_trip_of_a_mapping(variables: dict[str, MSDPValue]) -> None:
    assert msdp.decode_dict(msdp.encode(variables)) == variables


def test_the_specifications_examples() -> None:
    room = b(
        VAR, "ROOM", VAL, TABLE_OPEN,
        VAR, "VNUM", VAL, "6008",
        VAR, "NAME", VAL, "The forest clearing",
        VAR, "EXITS", VAL, TABLE_OPEN,
        VAR, "n", VAL, "6011",
        VAR, "e", VAL, "6007",
        TABLE_CLOSE,
        TABLE_CLOSE,
    )  # fmt: skip
    value = {"VNUM": "6008", "NAME": "The forest clearing", "EXITS": {"n": "6011", "e": "6007"}}
    assert msdp.decode(room) == [("ROOM", value)]
    assert msdp.encode({"ROOM": value}) == room
    reportable = b(
        VAR, "REPORTABLE_VARIABLES", VAL, ARRAY_OPEN,
        VAL, "HEALTH", VAL, "HEALTH_MAX", VAL, "MANA",
        ARRAY_CLOSE,
    )  # fmt: skip
    assert msdp.decode(reportable) == [("REPORTABLE_VARIABLES", ["HEALTH", "HEALTH_MAX", "MANA"])]
    assert msdp.encode({"REPORTABLE_VARIABLES": ["HEALTH", "HEALTH_MAX", "MANA"]}) == reportable
    # a command's arguments as clients send them: several VALs in a row
    report = b(VAR, "REPORT", VAL, "HEALTH", VAL, "MANA")
    assert msdp.decode(report) == [("REPORT", ["HEALTH", "MANA"])]
    assert msdp.encode_command("REPORT", "HEALTH", "MANA") == report
    # the same variable twice, and empty values
    assert msdp.decode(b(VAR, "REPORT", VAL, "A", VAR, "REPORT", VAL)) == [
        ("REPORT", "A"),
        ("REPORT", ""),
    ]
    assert msdp.decode(b(VAR, "E", VAL, ARRAY_OPEN, VAL, ARRAY_CLOSE)) == [("E", [""])]


def test_encode_numbers_and_refusals() -> None:
    assert msdp.encode({"HEALTH": 100, "AFK": True, "L": (1, "x")}) == b(
        VAR, "HEALTH", VAL, "100", VAR, "AFK", VAL, "1",
        VAR, "L", VAL, ARRAY_OPEN, VAL, "1", VAL, "x", ARRAY_CLOSE,
    )  # fmt: skip
    with pytest.raises(ValueError):
        msdp.encode({"": "x"})
    with pytest.raises(ValueError):
        msdp.encode({"A": "x\x01y"})
    with pytest.raises(TypeError):
        msdp.encode({"A": 1.5})  # type: ignore[dict-item]
    # U+00FF is two UTF-8 bytes, neither of them IAC
    assert msdp.decode(msdp.encode({"\xff": "\xff"})) == [("\xff", "\xff")]


def nested(levels: int) -> bytes:
    return b(VAR, "X", VAL, *([ARRAY_OPEN, VAL] * levels), "deep", *([ARRAY_CLOSE] * levels))


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b("junk"), "expected VAR"),
        (b(VAL, "x"), "expected VAR"),
        (b(VAR, VAL, "x"), "without a name"),
        (b(VAR, "X"), "without a value"),
        (b(VAR, "X", VAR, "Y", VAL, "1"), "without a value"),
        (b(VAR, "X", VAL, TABLE_OPEN, VAR, "A", VAL, "1"), "got the end"),
        (b(VAR, "X", VAL, TABLE_OPEN, VAL, "1", TABLE_CLOSE), "expected VAR"),
        (b(VAR, "X", VAL, ARRAY_OPEN, "1", ARRAY_CLOSE), "expected VAL in an array"),
        (b(VAR, "X", VAL, ARRAY_OPEN, VAL, "1"), "got the end"),
        (b(VAR, "X", VAL, "1", ARRAY_CLOSE), "expected VAR"),
        (b(VAR, "X", VAL, TABLE_OPEN, TABLE_CLOSE, "1"), "expected VAR"),
        (b(VAR, "X", VAL, "a\x00b"), "byte 0"),
        (b(VAR, "X", VAL) + b"\xff", "byte 255"),
        (b(VAR, "X", VAL) + b"\xc3", "not UTF-8"),
        (nested(MAX_DEPTH + 1), "deeper"),
        (nested(2500), "deeper"),  # 7.5 KB, under MAX_PAYLOAD
        (b(VAR, "X", VAL) + b"x" * MAX_PAYLOAD, "over"),
    ],
)
def test_malformed_payloads_raise_one_line_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(MSDPError) as caught:
        msdp.decode(payload)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_depth_bound_is_exact() -> None:
    value = msdp.decode(nested(MAX_DEPTH))[0][1]
    for _ in range(MAX_DEPTH):
        assert isinstance(value, list)
        value = value[0]
    assert value == "deep"


# bytes biased toward the MSDP codes, so that structure is common
_msdp_bytes = st.lists(
    st.one_of(st.sampled_from([VAR, VAL, TABLE_OPEN, TABLE_CLOSE, ARRAY_OPEN, ARRAY_CLOSE]),
              st.integers(0x41, 0x43), st.integers(0, 255)),
    max_size=80,
).map(bytes)  # fmt: skip


@PROPERTY_SETTINGS
@given(payload=_msdp_bytes)
def test_anything_decodes_or_raises_msdp_error(payload: bytes) -> None:
    try:
        pairs = msdp.decode(payload)
    except MSDPError:
        return
    # what decodes encodes back to something that decodes the same
    assert msdp.decode(msdp.encode(pairs)) == pairs


# ------------------------------------------------------------------- MSDPServer

VALUES: dict[str, msdp.Encodable] = {"HEALTH": 90, "MANA": "12", "ROOM": {"VNUM": "1"}}


def server(**kwargs: object) -> MSDPServer:
    return MSDPServer(
        ["HEALTH", "MANA", "ROOM", "NONE"], VALUES.get, sendable=["SERVER_ID"], **kwargs
    )  # type: ignore[arg-type]


def ask(state: MSDPServer, command: str, *args: str) -> list[tuple[str, MSDPValue]]:
    """The decoded replies to one command."""
    result = state.receive(msdp.encode_command(command, *args))
    assert result.variables == []
    return [pair for reply in result.replies for pair in msdp.decode(reply)]


def test_list() -> None:
    state = server()
    assert ask(state, "LIST", "COMMANDS") == [
        ("COMMANDS", ["LIST", "REPORT", "RESET", "SEND", "UNREPORT"])
    ]
    assert ask(state, "LIST", "REPORTABLE_VARIABLES") == [
        ("REPORTABLE_VARIABLES", ["HEALTH", "MANA", "NONE", "ROOM"])
    ]
    assert ask(state, "LIST", "SENDABLE_VARIABLES") == [
        ("SENDABLE_VARIABLES", ["HEALTH", "MANA", "NONE", "ROOM", "SERVER_ID"])
    ]
    assert ask(state, "LIST", "REPORTED_VARIABLES") == [("REPORTED_VARIABLES", [])]
    assert ask(state, "LIST", "LISTS")[0][0] == "LISTS"
    assert ask(state, "LIST", "NO_SUCH_LIST") == []
    # several lists in one request, and a command name in lower case
    replies = state.receive(msdp.encode_command("list", "COMMANDS", "REPORTED_VARIABLES")).replies
    assert len(replies) == 2


def test_send_report_unreport_reset() -> None:
    state = server()
    # SEND answers known variables that have a value, in one payload
    assert ask(state, "SEND", "HEALTH", "ROOM", "NONE", "UNKNOWN") == [
        ("HEALTH", "90"),
        ("ROOM", {"VNUM": "1"}),
    ]
    assert state.reported == {}
    # REPORT sends the values now and remembers the variables
    assert ask(state, "REPORT", "HEALTH", "MANA", "SERVER_ID") == [("HEALTH", "90"), ("MANA", "12")]
    assert list(state.reported) == ["HEALTH", "MANA"]
    assert ask(state, "REPORT", "HEALTH") == []  # already reported
    changed = state.changed(["MANA", "ROOM"])
    assert changed is not None and msdp.decode(changed) == [("MANA", "12")]
    assert state.changed(["ROOM"]) is None
    assert ask(state, "LIST", "REPORTED_VARIABLES") == [("REPORTED_VARIABLES", ["HEALTH", "MANA"])]
    assert ask(state, "UNREPORT", "MANA") == []
    assert list(state.reported) == ["HEALTH"]
    assert ask(state, "RESET", "SOMETHING_ELSE") == []
    assert list(state.reported) == ["HEALTH"]
    assert ask(state, "RESET", "REPORTED_VARIABLES") == []
    assert state.reported == {}


def test_reported_variables_are_bounded() -> None:
    many = [f"V{i}" for i in range(100)]
    state = MSDPServer(many, lambda name: name, max_reported=10)
    ask(state, "REPORT", *many)
    ask(state, "REPORT", "V99")
    assert list(state.reported) == many[:10]


def test_other_variables_are_handed_on() -> None:
    state = server()
    result = state.receive(
        msdp.encode([("CLIENT_NAME", "Mudlet"), ("SEND", "HEALTH"), ("CLIENT_VERSION", "4")])
    )
    assert result.variables == [("CLIENT_NAME", "Mudlet"), ("CLIENT_VERSION", "4")]
    assert [msdp.decode(r) for r in result.replies] == [[("HEALTH", "90")]]


@PROPERTY_SETTINGS
@given(payloads=st.lists(_msdp_bytes | st.lists(
    st.tuples(st.sampled_from(["LIST", "SEND", "REPORT", "UNREPORT", "RESET", "X"]),
              st.lists(st.sampled_from(["HEALTH", "MANA", "ROOM", "NONE", "REPORTED_VARIABLES",
                                        "COMMANDS", "Q"]), max_size=4)),
    max_size=3).map(lambda cmds: b"".join(msdp.encode_command(c, *a) for c, a in cmds)),
    max_size=6))  # fmt: skip
def test_server_state_stays_within_its_bounds(payloads: list[bytes]) -> None:
    state = server(max_reported=2)
    for payload in payloads:
        try:
            result = state.receive(payload)
        except MSDPError:
            continue
        for reply in result.replies:
            msdp.decode(reply)
        assert len(state.reported) <= 2
        assert set(state.reported) <= state.reportable
