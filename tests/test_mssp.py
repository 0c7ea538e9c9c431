"""MSSP (``workers/telnet/mssp.py``): the codec both ways and the server's answer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.telnet import mssp
from workers.telnet.mssp import VAL, VAR, MSSPError

PROPERTY_SETTINGS = settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)

texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\x01\x02"), max_size=12
)


@PROPERTY_SETTINGS
@given(variables=st.dictionaries(texts.filter(str.strip), st.lists(texts, min_size=1, max_size=4)))
def test_round_trip(variables: dict[str, list[str]]) -> None:
    assert mssp.decode(mssp.encode(variables)) == variables


def test_the_specifications_example() -> None:
    payload = b"\x01PORT\x0280\x0223\x023000\x01CREATED\x021996"
    assert mssp.decode(payload) == {"PORT": ["80", "23", "3000"], "CREATED": ["1996"]}
    assert mssp.encode({"PORT": [80, 23, 3000], "CREATED": 1996}) == payload
    # a variable sent twice keeps both values, in order
    assert mssp.decode(b"\x01PORT\x0223\x01PORT\x024000") == {"PORT": ["23", "4000"]}
    assert mssp.decode(b"") == {}
    assert mssp.decode(b"\x01NAME\x02") == {"NAME": [""]}
    assert mssp.encode({"ANSI": True, "PAY TO PLAY": False}) == b"\x01ANSI\x021\x01PAY TO PLAY\x020"


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"NAME\x02x", "before the first"),
        (b"\x02x", "before the first"),
        (b"\x01\x02x", "without a name"),
        (b"\x01NAME", "without a value"),
        (b"\x01NAME\x01PLAYERS\x021", "without a value"),
        (b"\x01NAME\x02a\x00b", "byte 0"),
        (b"\x01NAME\x02\xff", "byte 255"),
        (b"\x01NAME\x02\xc3", "not UTF-8"),
    ],
)
def test_malformed_payloads_raise(payload: bytes, reason: str) -> None:
    with pytest.raises(MSSPError, match=reason):
        mssp.decode(payload)


@PROPERTY_SETTINGS
@given(
    payload=st.lists(
        st.one_of(st.sampled_from([VAR, VAL]), st.integers(0x41, 0x43), st.integers(0, 255)),
        max_size=60,
    ).map(bytes)
)
def test_anything_decodes_or_raises_mssp_error(payload: bytes) -> None:
    try:
        variables = mssp.decode(payload)
    except MSSPError:
        return
    assert mssp.decode(mssp.encode(variables)) == variables


def test_encode_refuses_what_mssp_cannot_carry() -> None:
    for bad in ({"": "x"}, {" ": "x"}, {"A": "x\x01"}, {"A\x02": "x"}, {"A": []}, {"A": 1.5}):
        with pytest.raises(MSSPError):
            mssp.encode(bad)  # type: ignore[arg-type]


def test_server_answer_puts_live_values_and_settings_together() -> None:
    now = 1_800_000_000.0
    settings = {"NAME": "Tower of Entropy", "CONTACT": "admin@example.org", "PORT": [4000]}
    answer = mssp.server_answer(
        settings,
        players=42,
        uptime=3600.5,
        ports=[2323, 23],
        tls_port=992,
        protocols={"GMCP": True, "MCCP": False},
        now=now,
    )
    variables = mssp.decode(answer)
    assert list(variables)[:3] == ["NAME", "PLAYERS", "UPTIME"]
    assert variables["NAME"] == ["Tower of Entropy"]
    assert variables["PLAYERS"] == ["42"]
    # UPTIME is the Unix time of the start, not a duration
    assert variables["UPTIME"] == [str(int(now - 3600.5))]
    assert variables["CODEBASE"] == ["shardd"]
    assert variables["PORT"] == ["4000"]  # the operator's (public) port wins
    assert variables["SSL"] == variables["TLS"] == ["992"]
    assert variables["GMCP"] == ["1"] and variables["MCCP"] == ["0"]
    assert variables["CONTACT"] == ["admin@example.org"]


def test_server_status_defaults_and_live_values_win() -> None:
    status = mssp.server_status({"PLAYERS": 7}, players=3, uptime=0, ports=[23], now=100.0)
    assert status == {
        "NAME": "shardd",
        "PLAYERS": 3,
        "UPTIME": 100,
        "CODEBASE": "shardd",
        "PORT": [23],
    }
    assert "SSL" not in mssp.server_status({}, players=0, uptime=0, tls_port=None)


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({"PLAYERS": 3}, "live value"),
        ({"UPTIME": 3}, "live value"),
        ({"name": "x"}, "upper case"),
        ({"NAME": 1.5}, "float"),
        ({"NAME": {"a": 1}}, "dict"),
        ({"NAME": []}, "without a value"),
        ({"NAME": "a\x01b"}, "NUL"),
        ({"": "x"}, "empty"),
        ({1: "x"}, "not text"),
    ],
)
def test_check_settings(settings: dict[object, object], reason: str) -> None:
    with pytest.raises(MSSPError, match=reason):
        mssp.check_settings(settings)  # type: ignore[arg-type]


def test_check_settings_accepts_official_variables() -> None:
    mssp.check_settings(
        {
            mssp.NAME: "Tower",
            mssp.CRAWL_DELAY: -1,
            mssp.MINIMUM_AGE: 13,
            mssp.CHARSET: ["ASCII", "UTF-8"],
            mssp.XTERM_256_COLORS: True,
            mssp.GENRE: "Fantasy",
        }
    )
    assert {mssp.NAME, mssp.CRAWL_DELAY, mssp.SSL, mssp.HIRING_CODERS} <= mssp.OFFICIAL
