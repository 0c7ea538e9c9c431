"""The metrics endpoint's request parser (sans-I/O): answers, bounds, any split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardd.http_request import MAX_HEAD, REASONS, Answer, RequestHead, response

SCRAPE = (
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n"
    b"Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\n"
    b"User-Agent: Prometheus/2.42.0\r\n\r\n"
)


def answer_of(*chunks: bytes) -> Answer | None:
    head = RequestHead()
    answer = None
    for chunk in chunks:
        answer = head.feed(chunk)
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "status", "head_only"),
    [
        (SCRAPE, 200, False),
        (b"HEAD /metrics HTTP/1.0\r\n\r\n", 200, True),
        (b"GET /metrics?x=1 HTTP/1.1\n\n", 200, False),  # bare LF ends lines too
        (b"\r\nGET /metrics HTTP/1.1\r\n\r\n", 200, False),  # an empty line first is ignored
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, False),
        (b"GET / HTTP/1.1\r\n\r\n", 404, False),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", 404, False),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 400, False),
        (b"GET /metrics\r\n\r\n", 400, False),  # HTTP/0.9
        (b"GET  /metrics HTTP/1.1\r\n\r\n", 400, False),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", 400, False),  # TLS to a plain port
        (b"GET /m\xc3\xa9trics HTTP/1.1\r\n\r\n", 400, False),
    ],
)
def test_answers(request_bytes: bytes, status: int, head_only: bool) -> None:
    answer = answer_of(request_bytes)
    assert answer is not None
    assert (answer.status, answer.head_only) == (status, head_only)


def test_waits_for_the_end_of_the_head() -> None:
    head = RequestHead()
    assert head.feed(b"GET /metrics HTTP/1.1\r\nHost: x\r\n") is None
    answer = head.feed(b"\r\n")
    assert answer == Answer(200)
    assert head.feed(b"more") is answer  # decided once


def test_a_bad_request_line_is_answered_at_once() -> None:
    answer = answer_of(b"garbage garbage\r\n")  # no end of head yet
    assert answer is not None and answer.status == 400


def test_a_head_over_the_bound_is_refused() -> None:
    headers = b"".join(b"X-Filler-%04d: %s\r\n" % (i, b"a" * 60) for i in range(200))
    answer = answer_of(b"GET /metrics HTTP/1.1\r\n", headers, b"\r\n")
    assert answer is not None and answer.status == 431
    # a request line alone over the bound, with no end in sight
    answer = answer_of(b"GET /" + b"a" * (MAX_HEAD + 10))
    assert answer is not None and answer.status == 431


def test_a_head_of_exactly_the_bound_is_served() -> None:
    line = b"GET /metrics HTTP/1.1\r\n"
    filler = b"X: " + b"a" * (MAX_HEAD - len(line) - 7) + b"\r\n"
    request = line + filler + b"\r\n"
    assert len(request) == MAX_HEAD
    assert answer_of(request) == Answer(200)
    over = line + b"X: a" + filler[3:] + b"\r\n"
    answer = answer_of(over)
    assert answer is not None and answer.status == 431


@given(st.lists(st.integers(min_value=0, max_value=len(SCRAPE)), max_size=12))
def test_any_split_of_a_scrape_gives_the_same_answer(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [SCRAPE[a:b] for a, b in zip([0, *points], [*points, len(SCRAPE)], strict=True)]
    assert answer_of(*chunks) == Answer(200)


@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_any_bytes_give_a_known_answer_or_need_more(chunks: list[bytes]) -> None:
    head = RequestHead()
    answers = {head.feed(chunk) for chunk in chunks}
    answers.discard(None)
    assert len(answers) <= 1
    for answer in answers:
        assert answer is not None and answer.status in REASONS
    if sum(map(len, chunks)) > MAX_HEAD:
        assert head.answer is not None  # never holds more than the bound


@given(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"get"]),
    st.sampled_from([b"/metrics", b"/", b"/metrics/", b"/metrics?a=b"]),
    st.lists(st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b), max_size=5),
)
def test_headers_never_change_the_answer(method: bytes, path: bytes, headers: list[bytes]) -> None:
    bare = answer_of(method + b" " + path + b" HTTP/1.1\r\n\r\n")
    request = method + b" " + path + b" HTTP/1.1\r\n"
    request += b"".join(b"X-" + h.replace(b"\r", b"") + b"\r\n" for h in headers) + b"\r\n"
    assert answer_of(request) == bare


def test_response_says_its_length_and_closes() -> None:
    full = response(Answer(200), b"a 1\n", "text/plain; version=0.0.4")
    head, _, body = full.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 4" in head and b"Connection: close" in head
    assert body == b"a 1\n"
    head_only = response(Answer(200, head_only=True), b"a 1\n")
    assert head_only.endswith(b"Content-Length: 4\r\nConnection: close\r\n\r\n")
    refused = response(Answer(405))
    assert b"Allow: GET, HEAD" in refused and refused.endswith(b"405 Method Not Allowed\n")
