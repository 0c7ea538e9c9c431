"""Our GMCP, MSDP and MSSP codecs against telnetlib3's (``telnetlib3.mud``), both ways.

telnetlib3 is a test peer only: its encoders and decoders are pure functions,
so payloads cross between the two implementations without a socket. (Its
MCCP lives inside its protocol classes, with no codec to call; the MCCP
codec is checked against zlib itself in test_mccp.py.)
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telnetlib3 import mud

from workers.telnet import gmcp, msdp, mssp

PROPERTY_SETTINGS = settings(
    deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)

packages = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}(\.[A-Za-z0-9_]{1,8}){0,3}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@PROPERTY_SETTINGS
@given(package=packages, data=json_values)
def test_gmcp_both_ways(package: str, data: Any) -> None:
    assert mud.gmcp_decode(gmcp.encode(package, data)) == (package, data)
    assert gmcp.decode(mud.gmcp_encode(package, data)) == (package, data)


def msdp_text(forbidden: str) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters=forbidden), max_size=10
    )


_msdp_texts = msdp_text("\x00\x01\x02\x03\x04\x05\x06")
msdp_values = st.recursive(
    _msdp_texts,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_msdp_texts.filter(bool), children, max_size=4)
    ),
    max_leaves=10,
)


@PROPERTY_SETTINGS
@given(variables=st.dictionaries(_msdp_texts.filter(bool), msdp_values, max_size=4))
def test_msdp_both_ways(variables: dict[str, Any]) -> None:
    assert mud.msdp_decode(msdp.encode(variables)) == variables
    assert msdp.decode_dict(mud.msdp_encode(variables)) == variables


def test_msdp_server_answers_telnetlib3s_requests() -> None:
    server = msdp.MSDPServer(["HEALTH", "MANA"], {"HEALTH": 90, "MANA": 5}.get)
    replies = server.receive(mud.msdp_encode({"LIST": "COMMANDS"})).replies
    assert [mud.msdp_decode(r) for r in replies] == [
        {"COMMANDS": ["LIST", "REPORT", "RESET", "SEND", "UNREPORT"]}
    ]
    replies = server.receive(mud.msdp_encode({"REPORT": ["HEALTH", "MANA"]})).replies
    assert [mud.msdp_decode(r) for r in replies] == [{"HEALTH": "90", "MANA": "5"}]


_mssp_texts = msdp_text("\x00\x01\x02")


@PROPERTY_SETTINGS
@given(
    variables=st.dictionaries(
        _mssp_texts.filter(str.strip), st.lists(_mssp_texts, min_size=1, max_size=3), max_size=5
    )
)
def test_mssp_both_ways(variables: dict[str, list[str]]) -> None:
    theirs = {name: values[0] if len(values) == 1 else values for name, values in variables.items()}
    assert mud.mssp_decode(mssp.encode(variables)) == theirs
    assert mssp.decode(mud.mssp_encode(theirs)) == variables  # type: ignore[arg-type]


def test_mssp_server_answer_read_by_telnetlib3() -> None:
    answer = mssp.server_answer(
        {"NAME": "Tower", "CRAWL DELAY": -1},
        players=12,
        uptime=60,
        ports=[23],
        tls_port=992,
        now=1000.0,
    )
    assert mud.mssp_decode(answer) == {
        "NAME": "Tower",
        "PLAYERS": "12",
        "UPTIME": "940",
        "CODEBASE": "shardd",
        "PORT": "23",
        "SSL": "992",
        "TLS": "992",
        "CRAWL DELAY": "-1",
    }
