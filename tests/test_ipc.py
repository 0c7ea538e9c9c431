"""The supervisor checks every session entry a worker reports (workers/ipc.py)."""

from __future__ import annotations

import pytest

from workers import ipc

# id, rx, tx, last_received, state, term, client_name, mtts, cols, rows, encoding, errors, tls
GOOD = [7, 10, 20, 1.5, "shell", "xterm-256color", "TinTin++", 271, 80, 24, "UTF-8", 0, ""]


def _report(entry: list[object]) -> dict[str, object]:
    frame = ipc.pack(
        ipc.REPORT, time=1.0, accepted=1, counters={}, sessions=[entry], last=True, reply=False
    )
    (message,) = ipc.Decoder().feed(frame)
    return message


def test_a_session_names_its_client_and_mtts_or_none() -> None:
    assert len(GOOD) == len(ipc.SESSION_FIELDS)
    assert _report(GOOD)["sessions"] == [GOOD]
    terminal = [*GOOD[:6], "", None, *GOOD[8:]]  # not a MUD client
    assert _report(terminal)["sessions"] == [terminal]


@pytest.mark.parametrize(
    ("field", "value"),
    [("client_name", None), ("client_name", 5), ("mtts", "271"), ("mtts", True), ("mtts", 1.5)],
)
def test_a_malformed_client_field_is_a_bad_frame(field: str, value: object) -> None:
    entry = list(GOOD)
    entry[ipc.SESSION_FIELDS.index(field)] = value
    with pytest.raises(ipc.FrameError, match=field):
        _report(entry)


def test_an_entry_of_the_old_length_is_a_bad_frame() -> None:
    with pytest.raises(ipc.FrameError, match="wrong shape"):
        _report(GOOD[:6] + GOOD[8:])


def test_the_players_message_carries_a_whole_count() -> None:
    (message,) = ipc.Decoder().feed(ipc.pack(ipc.PLAYERS, sessions=42))
    assert message == {"t": ipc.PLAYERS, "sessions": 42}
    for bad in ("42", 4.2, True, None):
        with pytest.raises(ipc.FrameError):
            list(ipc.Decoder().feed(ipc.pack(ipc.PLAYERS, sessions=bad)))
