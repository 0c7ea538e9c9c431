"""MTTS: who a client is, from the values of its TTYPE cycle (workers/telnet/mtts.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.telnet import mtts
from workers.telnet.mtts import Identity, Mtts


def test_parse_mtts() -> None:
    assert mtts.parse_mtts("MTTS 271") == 271
    assert mtts.parse_mtts("mtts 0") == 0
    assert mtts.parse_mtts(" MTTS 2825 ") == 2825
    for value in ("MTTS", "MTTS -1", "MTTS 1.5", "MTTS x", "XTERM", "MTTS 99999999999", ""):
        assert mtts.parse_mtts(value) is None, value
    assert mtts.parse_mtts(f"MTTS {mtts.MTTS_MAX}") == mtts.MTTS_MAX
    assert mtts.parse_mtts(f"MTTS {mtts.MTTS_MAX + 1}") is None


def test_flags() -> None:
    flags = Mtts(271)
    assert Mtts.UTF8 in flags and Mtts.TRUECOLOR in flags and Mtts.SCREEN_READER not in flags
    assert mtts.flag_names(271) == ["ANSI", "VT100", "UTF-8", "256 colors", "truecolor"]
    assert mtts.flag_names(0) == []
    # bits MTTS does not define yet are kept, by value
    assert mtts.flag_names(4096 | 64 | 2048) == ["screen reader", "TLS", "4096"]
    assert int(Mtts(4096 | 1)) == 4097


def test_identify_mtts_client() -> None:
    assert mtts.identify(["TINTIN++", "xterm-256color", "MTTS 271"]) == Identity(
        "TINTIN++", "xterm-256color", 271
    )
    assert mtts.identify(["MUDLET", "ANSI-TRUECOLOR", "MTTS 2825", "MTTS 2825"]) == Identity(
        "MUDLET", "ansi-truecolor", 2825
    )


def test_identify_client_that_predates_mtts() -> None:
    assert mtts.identify(["TINYFUGUE", "ANSI-ATTR", "ANSI", "ANSI"]) == Identity(
        "TINYFUGUE", "ansi-attr", None
    )
    assert mtts.identify(["TINYFUGUE", "TINYFUGUE"]) == Identity("TINYFUGUE", None, None)


def test_identify_terminal() -> None:
    assert mtts.identify(["XTERM-256COLOR", "XTERM-256COLOR"]) == Identity(None, "xterm-256color")
    assert mtts.identify(["xterm-256color", "xterm", "vt220"]) == Identity(None, "xterm-256color")
    assert mtts.identify([]) == Identity()


def test_cycle_ended() -> None:
    assert not mtts.cycle_ended([])
    assert not mtts.cycle_ended(["XTERM"])
    assert mtts.cycle_ended(["XTERM", "XTERM"])  # repeats the previous
    assert not mtts.cycle_ended(["TINTIN++", "xterm"])
    assert mtts.cycle_ended(["TINTIN++", "xterm", "MTTS 271"])  # MTTS is the last word
    assert not mtts.cycle_ended(["A", "B", "C"])
    assert mtts.cycle_ended(["A", "B", "C", "A"])  # back to the first


_names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ+-0123456789 ", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(_names, max_size=10))
def test_identify_never_fails_and_terminal_is_lower_case(values: list[str]) -> None:
    identity = mtts.identify(values)
    assert identity.terminal is None or identity.terminal == identity.terminal.lower()
    assert identity.mtts is None or 0 <= identity.mtts <= mtts.MTTS_MAX
    if identity.client_name is None and values:
        assert identity.terminal == values[0].lower()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        _names.filter(lambda v: mtts.parse_mtts(v) is None), min_size=1, max_size=8, unique=True
    )
)
def test_a_cycle_ends_when_a_type_comes_again(values: list[str]) -> None:
    assert not any(mtts.cycle_ended(values[:n]) for n in range(1, len(values) + 1))
    assert mtts.cycle_ended([*values, values[-1]])
    assert mtts.cycle_ended([*values, values[0]])
