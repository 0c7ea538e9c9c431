"""GMCP payloads (``workers/telnet/gmcp.py``): round trips, bounds, malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.telnet import gmcp
from workers.telnet.gmcp import MAX_DEPTH, MAX_PACKAGE_LENGTH, MAX_PAYLOAD, GMCPError

PROPERTY_SETTINGS = settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)

packages = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}(\.[A-Za-z0-9_-]{1,10}){0,3}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (a scalar is 0)."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@PROPERTY_SETTINGS
@given(package=packages, data=json_values)
def test_round_trip(package: str, data: object) -> None:
    payload = gmcp.encode(package, data)
    assert gmcp.decode(payload) == (package, data)


def test_the_wire_format() -> None:
    assert gmcp.encode("Core.Hello", {"client": "Mudlet", "version": "4.17"}) == (
        b'Core.Hello {"client":"Mudlet","version":"4.17"}'
    )
    assert gmcp.encode("Char.Name", "Frodo \u2713") == 'Char.Name "Frodo \u2713"'.encode()
    # no data: no space (the specification)
    assert gmcp.encode("Core.Ping") == b"Core.Ping"
    assert gmcp.decode(b"Core.Ping") == ("Core.Ping", None)
    assert gmcp.decode(b"Core.Ping ") == ("Core.Ping", None)
    assert gmcp.decode(b'Core.Supports.Set [ "Char 1", "Room 1" ] ') == (
        "Core.Supports.Set",
        ["Char 1", "Room 1"],
    )
    # MSDP over GMCP uses a package of one word
    assert gmcp.decode(b'MSDP {"LIST":"COMMANDS"}') == ("MSDP", {"LIST": "COMMANDS"})


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"Char.Vitals {\xff}", "not UTF-8"),
        (b"Char.Vitals {hp: 1}", "bad JSON"),
        (b"Char.Vitals [1, 2", "bad JSON"),
        (b"Char.Vitals NaN", "NaN is not JSON"),
        (b"Char.Vitals [Infinity]", "Infinity is not JSON"),
        (b"Char.Vitals " + b"9" * 5000, "bad JSON"),  # over the int digits limit
        (b"Char.Vitals " + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "deeper"),
        (b"Char.Vitals " + b"[" * 8000, "deeper"),
        (b"Char.Vitals " + b'{"a":' * 1000, "deeper"),
        (b"", "bad GMCP package name"),
        (b".Char", "bad GMCP package name"),
        (b"Char.", "bad GMCP package name"),
        (b"Char..Vitals 1", "bad GMCP package name"),
        (b"1Char 1", "bad GMCP package name"),
        (b"Char/Vitals 1", "bad GMCP package name"),
        (b"Ch\xc3\xa4r 1", "bad GMCP package name"),
        (b"C" * (MAX_PACKAGE_LENGTH + 1), "longer than"),
        (b"A " + b" " * MAX_PAYLOAD, "over"),
    ],
)
def test_malformed_payloads_raise_one_line_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(GMCPError) as caught:
        gmcp.decode(payload)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message and len(message) < 200


def test_depth_bound_is_exact_and_ignores_brackets_in_strings() -> None:
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth(gmcp.decode(f"A {deepest}".encode())[1]) == MAX_DEPTH
    with pytest.raises(GMCPError):
        gmcp.decode(f"A [{deepest}]".encode())
    brackets = '"' + "[{" * 4000 + '\\"[' + '"'
    assert gmcp.decode(f"A [{brackets}]".encode()) == ("A", [json.loads(brackets)])


def test_encode_refuses_what_json_or_gmcp_cannot_carry() -> None:
    with pytest.raises(GMCPError):
        gmcp.encode("bad name", 1)
    with pytest.raises(ValueError):
        gmcp.encode("A", float("nan"))
    with pytest.raises(TypeError):
        gmcp.encode("A", {1, 2})


# text that looks like JSON: brackets, quotes and escapes nest and unbalance often
_jsonish = st.text(alphabet='[]{}",:\\ 1a', max_size=200)


@PROPERTY_SETTINGS
@given(body=_jsonish)
def test_depth_check_never_refuses_valid_shallow_json(body: str) -> None:
    """The pre-check agrees with json.loads: valid JSON within the bound is decoded,
    and nothing deeper than the bound is ever returned."""
    try:
        expected = json.loads(body)
    except ValueError:
        expected = None
    try:
        _package, data = gmcp.decode(b"A " + body.encode())
    except GMCPError:
        assert expected is None or depth(expected) > MAX_DEPTH
    else:
        assert depth(data) <= MAX_DEPTH
        if body.strip():
            assert data == expected


@PROPERTY_SETTINGS
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.tuples(packages, _jsonish).map(lambda pb: f"{pb[0]} {pb[1]}".encode()),
        st.integers(0, 9000).map(lambda n: b"A " + b"[" * n),
    )
)
def test_anything_decodes_or_raises_gmcp_error(payload: bytes) -> None:
    try:
        package, _data = gmcp.decode(payload)
    except GMCPError:
        return
    gmcp.check_package(package)
