"""The typed line kept by the server (workers/input_line.py), fed as a peer sends it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.input_line import InputLine, is_printable

# what a client may send in character mode: text, line ends, edits, escapes
KEYS = st.text(
    alphabet=st.sampled_from(list("ab \u00e9\u65e5\r\n\x00\x7f\x08\x15\x1b[OA~\x03\t\x9b")),
    max_size=200,
)


def feed_all(keys: str, cuts: list[int], limit: int = 1024) -> tuple[list[str], str, str]:
    line = InputLine(limit)
    lines: list[str] = []
    echo = []
    start = 0
    for cut in [*sorted(cuts), len(keys)]:
        got, shown = line.feed(keys[start:cut])
        lines += got
        echo.append(shown)
        start = max(start, cut)
    return lines, "".join(echo), line.text


@given(KEYS, st.lists(st.integers(0, 200), max_size=10))
def test_how_the_keys_are_split_changes_nothing(keys: str, cuts: list[int]) -> None:
    cuts = [min(cut, len(keys)) for cut in cuts]
    assert feed_all(keys, cuts) == feed_all(keys, [])


@given(KEYS, st.integers(1, 20))
def test_a_line_holds_only_printable_characters_within_the_limit(keys: str, limit: int) -> None:
    lines, _echo, text = feed_all(keys, [], limit)
    for line in [*lines, text]:
        assert len(line) <= limit
        assert all(is_printable(char) for char in line)


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))))
def test_printable_lines_come_back_as_typed_with_any_line_end(texts: list[str]) -> None:
    ends = ["\r\n", "\r\x00", "\n", "\r"]
    keys = "".join(text + ends[i % 4] for i, text in enumerate(texts))
    lines, echo, text = feed_all(keys, [])
    assert lines == texts
    assert text == ""
    assert echo == "".join(text + "\r\n" for text in texts)


def test_editing_keys() -> None:
    line = InputLine()
    assert line.feed("helx\x7fl") == ([], "helx\b \bl")
    assert line.feed("o\x1b[D\x1bOA!") == ([], "o!")  # arrow keys dropped whole
    assert line.text == "hello!"
    assert line.feed("\x15") == ([], "\b \b" * 6)  # ^U: the whole line
    assert line.feed("say hi\r") == (["say hi"], "say hi\r\n")
    assert line.feed("\x00next\n") == (["next"], "next\r\n")  # CR NUL across two reads
    assert line.feed("\x7f") == ([], "")  # nothing to erase


def test_keys_past_the_limit_are_dropped_until_the_line_ends() -> None:
    line = InputLine(limit=3)
    assert line.feed("abcdef\rxy\r") == (["abc", "xy"], "abc\r\nxy\r\n")
