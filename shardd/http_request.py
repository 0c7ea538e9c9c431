"""One HTTP/1.x request head, sans-I/O: bytes in, what to answer out.

The metrics endpoint answers one request per connection and closes it, so
all it needs of a request is its request line: the method (GET or HEAD), the
path (``/metrics``) and the version. Header lines are not parsed, only
skipped up to the blank line that ends the head, which is bounded
(``MAX_HEAD``). Whatever a peer sends, :meth:`RequestHead.feed` returns
None (more is needed) or an :class:`Answer`, and never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: a request head longer than this (request line and headers) is refused
MAX_HEAD = 8 * 1024
PATH = b"/metrics"
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/1\.([01])")
_END = re.compile(rb"\r?\n\r?\n")

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Answer:
    """What to answer: a status, and for a good request whether to leave the body out."""

    status: int
    head_only: bool = False
    #: what was wrong, for the log ("" for a good request)
    problem: str = ""


class RequestHead:
    """Fed a connection's bytes; decides the answer once the head is complete.

    A malformed request line is answered at once; otherwise the answer waits
    for the end of the head, so that a client that is still sending headers
    is not reset by a close before it reads the answer.
    """

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self.max_head = max_head
        self._buffer = bytearray()
        self._searched = 0  # the head's end is not before this offset
        self._verdict: Answer | None = None  # from the request line, once read
        self.answer: Answer | None = None

    def feed(self, data: bytes) -> Answer | None:
        """Take more bytes; return the answer once decided (then always the same one)."""
        if self.answer is not None:
            return self.answer
        room = self.max_head + 4 - len(self._buffer)  # + 4: the end of a full head
        self._buffer += data[: max(room, 0)]
        if self._verdict is None:
            self._verdict = self._request_line()
            if self._verdict is not None and self._verdict.status == 400:
                self.answer = self._verdict
                return self.answer
        if self._verdict is not None:
            end = _END.search(self._buffer, max(self._searched - 3, 0))
            if end is not None and end.end() <= self.max_head:
                self.answer = self._verdict
                return self.answer
        self._searched = len(self._buffer)
        if len(self._buffer) > self.max_head:
            self.answer = Answer(431, problem=f"request head over {self.max_head} bytes")
        return self.answer

    def _request_line(self) -> Answer | None:
        buffer = self._buffer
        # RFC 9112 2.2: empty lines before the request line are ignored
        start = 0
        while buffer.startswith(b"\r\n", start) or buffer.startswith(b"\n", start):
            start += 2 if buffer[start] == 13 else 1
        newline = buffer.find(b"\n", start)
        if newline < 0:
            return None
        line = bytes(buffer[start:newline]).removesuffix(b"\r")
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            return Answer(400, problem=f"not an HTTP/1.x request line: {line[:60]!r}")
        method, target = match.group(1), match.group(2)
        if method not in (b"GET", b"HEAD"):
            return Answer(405, problem=f"method {method[:20].decode('ascii')}")
        if target.split(b"?", 1)[0] != PATH:
            return Answer(404, problem=f"path {target[:60].decode('ascii')}")
        return Answer(200, head_only=method == b"HEAD")


def response(answer: Answer, body: bytes = b"", content_type: str = "text/plain") -> bytes:
    """The whole response to ``answer``: status line, headers, and ``body``
    unless a HEAD (its length still said); an error's body is its reason."""
    status = answer.status
    reason = REASONS.get(status, "Error")
    if status != 200:
        body = f"{status} {reason}\n".encode("ascii")
        content_type = "text/plain; charset=utf-8"
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if answer.head_only else head + body
