"""The reader a shell gets: ``read``, ``readline``, ``readexactly``, ``readuntil``.

It holds in-band data only (the engine has already removed telnet sequences)
and decodes it when the session has an encoding. ``readline`` understands every
line ending real clients send: CR LF, CR NUL, a lone CR and a lone LF.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable
from typing import Any, cast

DEFAULT_LIMIT = 2**16

# Codecs whose decoders keep no state between chunks: bytes.decode (in C) does
# what the incremental decoder (Python frames per call) would.
_STATELESS = frozenset({"ascii", "latin-1", "iso8859-1", "iso8859-15", "cp437", "cp1252"})
_NEVER, _ALWAYS, _ASCII_END = 0, 1, 2


class LineTooLong(ValueError):
    """``readline`` found no line end within ``limit``; the partial line was dropped."""


class TelnetReader:
    """Buffered reader of one session's in-band data, as ``str`` or ``bytes``.

    ``encoding=None`` gives a bytes reader. ``pause``/``resume`` are called to
    stop and restart reading from the transport when the buffer passes
    ``2 * limit`` and falls back under ``limit``.
    """

    __slots__ = (
        "_buf",
        "_cr",
        "_cr_pending",
        "_decode_error",
        "_decoder",
        "_direct",
        "_discarding",
        "_empty",
        "_eof",
        "_errors",
        "_exception",
        "_lf",
        "_limit",
        "_loop",
        "_nul",
        "_partial",
        "_pause",
        "_paused",
        "_resume",
        "_waiter",
        "encoding",
    )

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        encoding: str | None = None,
        encoding_errors: str = "strict",
        pause: Callable[[], Any] | None = None,
        resume: Callable[[], Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._loop = loop
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._eof = False
        self._exception: BaseException | None = None
        self._decode_error: UnicodeDecodeError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._cr_pending = False  # a line ended on a CR that closed the buffer
        self._discarding = False  # dropping the rest of a line that was too long
        self._errors = encoding_errors
        self._decoder: codecs.IncrementalDecoder | None = None
        self._direct = _NEVER  # when a chunk may skip the incremental decoder
        self._partial = False  # the incremental decoder holds part of a character
        self.encoding: str | None = None
        self._empty: str | bytes = b""
        self._cr: Any = b"\r"
        self._lf: Any = b"\n"
        self._nul: Any = b"\x00"
        self._buf: Any = b""
        self.set_encoding(encoding)

    # ------------------------------------------------------------ the feeding side

    def set_encoding(self, encoding: str | None) -> None:
        """Decode what arrives from now on with ``encoding`` (``None``: bytes)."""
        if encoding == self.encoding:
            return
        if encoding is None:
            if self.encoding is not None:
                raise ValueError("a text reader cannot become a bytes reader")
            return
        decoder = codecs.getincrementaldecoder(encoding)(self._errors)
        if self._decoder is not None:
            # carry an unfinished multibyte sequence over to the new codec; in it,
            # those bytes may be whole characters, or not valid at all
            pending = self._decoder.getstate()[0]
            if pending:
                try:
                    carried = decoder.decode(pending)
                except UnicodeDecodeError as exc:
                    self._decode_error = exc  # the shell hears of it on its next read
                    carried = pending.decode(encoding, "replace")
                    decoder.reset()
                if carried:
                    self._buf += carried
                    self._wake()
        else:
            self._buf = self._buf.decode(encoding, "replace")
            self._empty, self._cr, self._lf, self._nul = "", "\r", "\n", "\x00"
        self._decoder = decoder
        self.encoding = encoding
        name = codecs.lookup(encoding).name
        # UTF-8: a chunk ending in an ASCII byte ends on a character boundary
        self._direct = _ALWAYS if name in _STATELESS else _ASCII_END if name == "utf-8" else _NEVER
        self._partial = bool(decoder.getstate()[0])

    def feed_data(self, raw: bytes) -> None:
        """Take in-band bytes from the protocol; wakes a waiting read."""
        decoder = self._decoder
        data: Any = raw  # str once decoded
        if decoder is not None:
            try:
                direct = self._direct
                if direct and not self._partial and raw and (direct == _ALWAYS or raw[-1] < 0x80):
                    # the encoding is set whenever the decoder is
                    data = raw.decode(self.encoding, self._errors)  # type: ignore[arg-type]
                else:
                    data = decoder.decode(raw)
                    self._partial = direct == _ASCII_END and bool(decoder.getstate()[0])
            except UnicodeDecodeError as exc:
                # Keep the text (with replacement characters) and tell the shell
                # once, on its next read, rather than losing the input. The
                # failed call left the decoder's state untouched, so a character
                # split across chunks survives.
                self._decode_error = exc
                replacing = codecs.getincrementaldecoder(cast(str, self.encoding))("replace")
                replacing.setstate(decoder.getstate())
                data = replacing.decode(raw)
                decoder.setstate(replacing.getstate())
                self._partial = bool(decoder.getstate()[0])
        if self._cr_pending:
            self._cr_pending = False
            if data[:1] in (self._lf, self._nul):
                data = data[1:]
        if self._discarding:
            data = self._skip_rest_of_line(data)
        if not data:
            return
        buf = self._buf
        self._buf = buf + data if buf else data
        waiter = self._waiter
        if waiter is not None:  # _wake, inlined: once per received chunk
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if not self._paused and self._pause is not None and len(self._buf) > 2 * self._limit:
            self._paused = True
            self._pause()

    def _skip_rest_of_line(self, data: Any) -> Any:
        cr, lf = data.find(self._cr), data.find(self._lf)
        ends = [k for k in (cr, lf) if k >= 0]
        if not ends:
            return self._empty
        self._discarding = False
        end = min(ends)
        if end == cr:
            following = data[end + 1 : end + 2]
            if following in (self._lf, self._nul):
                return data[end + 2 :]
            if not following:
                self._cr_pending = True
        return data[end + 1 :]

    def feed_eof(self) -> None:
        if self._decoder is not None and not self._eof:
            try:
                tail = self._decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                # a character cut off by the end of the stream
                self._decode_error = exc
                tail = "\ufffd"
            if tail:
                self._buf = self._buf + tail if self._buf else tail
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        self._exception = exc
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(exc)

    def exception(self) -> BaseException | None:
        return self._exception

    def at_eof(self) -> bool:
        """True when the peer has closed and the buffer is empty."""
        return self._eof and not self._buf

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _consumed(self) -> None:
        if self._paused and len(self._buf) <= self._limit:
            self._paused = False
            if self._resume is not None:
                self._resume()

    def _new_waiter(self, func_name: str) -> asyncio.Future[None]:
        if self._waiter is not None:
            raise RuntimeError(f"{func_name}() called while another coroutine is already reading")
        if self._paused:
            # the shell wants more than is buffered: reading must go on
            self._paused = False
            if self._resume is not None:
                self._resume()
        loop = self._loop or asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        return waiter

    async def _wait_for_data(self, func_name: str) -> None:
        try:
            await self._new_waiter(func_name)
        finally:
            self._waiter = None

    def _check_errors(self) -> None:
        if self._exception is not None:
            raise self._exception
        if self._decode_error is not None:
            exc, self._decode_error = self._decode_error, None
            raise exc

    # ------------------------------------------------------------- the shell side

    async def read(self, n: int = -1) -> Any:
        """Up to ``n`` characters (or bytes); ``n < 0`` reads until EOF."""
        if self._exception is not None or self._decode_error is not None:
            self._check_errors()
        if n == 0:
            return self._empty
        if n < 0:
            while not self._eof:
                await self._wait_for_data("read")
                self._check_errors()
            data, self._buf = self._buf, self._empty
            self._consumed()
            return data
        if not self._buf:
            if self._eof:
                return self._empty
            # awaited here rather than through _wait_for_data: an idle session
            # then holds one suspended frame fewer, and a read costs one call less
            try:
                await self._new_waiter("read")
            finally:
                self._waiter = None
            if self._exception is not None or self._decode_error is not None:
                self._check_errors()
        buf = self._buf
        if n >= len(buf):
            self._buf = self._empty
            data = buf
        else:
            data = buf[:n]
            self._buf = buf[n:]
        if self._paused:
            self._consumed()
        return data

    async def readline(self) -> Any:
        """One line, with its line end: CR LF, LF or CR (a CR NUL is returned as CR).

        At EOF, what remains (possibly empty). A line longer than ``limit``
        raises :class:`LineTooLong` and is dropped so memory stays bounded.
        """
        self._check_errors()
        scanned = 0
        cr, lf = self._cr, self._lf
        while True:
            buf = self._buf
            i = buf.find(cr, scanned)
            j = buf.find(lf, scanned, i if i >= 0 else len(buf))
            if j >= 0:
                line, self._buf = buf[: j + 1], buf[j + 1 :]
                self._check_line_length(line)
                break
            if i >= 0:
                following = buf[i + 1 : i + 2]
                if following == lf:
                    line, self._buf = buf[: i + 2], buf[i + 2 :]
                elif following == self._nul:
                    line, self._buf = buf[: i + 1], buf[i + 2 :]
                else:
                    line, self._buf = buf[: i + 1], buf[i + 1 :]
                    if not following:
                        self._cr_pending = True
                self._check_line_length(line)
                break
            if self._eof:
                line, self._buf = buf, self._empty
                break
            if len(buf) >= self._limit:
                self._buf = self._empty
                self._discarding = True  # the rest of this line is dropped as it comes
                self._consumed()
                raise LineTooLong(
                    f"line longer than the {self._limit} limit without a line end, dropped"
                )
            scanned = len(buf)
            await self._wait_for_data("readline")
            self._check_errors()
        self._consumed()
        return line

    def _check_line_length(self, line: Any) -> None:
        if len(line) > self._limit + 2:  # the limit is for the text, not its line end
            self._consumed()
            raise LineTooLong(f"line of {len(line)} longer than the {self._limit} limit, dropped")

    async def readexactly(self, n: int) -> Any:
        """Exactly ``n`` characters (or bytes); IncompleteReadError if EOF comes first."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        self._check_errors()
        while len(self._buf) < n:
            if self._eof:
                partial, self._buf = self._buf, self._empty
                raise asyncio.IncompleteReadError(_as_bytes(partial), n)
            await self._wait_for_data("readexactly")
            self._check_errors()
        buf = self._buf
        data, self._buf = buf[:n], buf[n:]
        self._consumed()
        return data

    async def readuntil(self, separator: Any = None) -> Any:
        """Data up to and including ``separator`` (default a newline)."""
        if separator is None:
            separator = self._lf
        if isinstance(separator, str) is isinstance(self._empty, bytes):
            raise TypeError(f"separator must be {type(self._empty).__name__}")
        if not separator:
            raise ValueError("separator should be at least one-byte string")
        self._check_errors()
        scanned = 0
        while True:
            buf = self._buf
            i = buf.find(separator, scanned)
            if i >= 0:
                end = i + len(separator)
                data, self._buf = buf[:end], buf[end:]
                self._consumed()
                return data
            if len(buf) > self._limit:
                raise asyncio.LimitOverrunError(
                    "separator is not found, and chunk exceed the limit", len(buf)
                )
            if self._eof:
                self._buf = self._empty
                raise asyncio.IncompleteReadError(_as_bytes(buf), None)
            scanned = max(0, len(buf) - len(separator) + 1)
            await self._wait_for_data("readuntil")
            self._check_errors()

    def __aiter__(self) -> TelnetReader:
        return self

    async def __anext__(self) -> Any:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    def __repr__(self) -> str:
        state = ["eof"] if self._eof else []
        if self._paused:
            state.append("paused")
        return f"<TelnetReader encoding={self.encoding!r} buffered={len(self._buf)} {state}>"


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
