"""MCCP2 (option 86) and MCCP3 (option 87): zlib compression of a telnet stream.

MCCP2 compresses the server's output: once the client agreed (``IAC DO
MCCP2``), the server sends ``IAC SB MCCP2 IAC SE`` and everything after it,
telnet commands included, is one zlib stream (RFC 1950: the zlib format with
its header and Adler-32, not raw deflate, RFC 1951) until the server ends it
(Z_FINISH) and goes on in plain telnet. MCCP3 is the same for the client's
input: after the client's ``IAC SB MCCP3 IAC SE`` its bytes are a zlib stream
until it ends it. IACs are escaped before compression; the compressed bytes
are sent as they are.

Specifications: the MCCP page of Mudhalla (https://tintin.mudhalla.net/protocols/mccp/),
MCCP2 and MCCP3; RFC 1950 (zlib format), RFC 1951 (deflate).

Sans-I/O: a :class:`Compressor` turns plain bytes into compressed bytes, a
:class:`Decompressor` compressed bytes into plain ones, and neither touches a
socket.

Memory per stream (zlib 1.2.13, level 6, 200-byte writes each flushed;
tracemalloc over 1 000 streams; zlib's own figure is
``(1 << (wbits + 2)) + (1 << (memLevel + 9))`` bytes plus about 6 KiB):

==========================  ==========  ===========  ================
deflate wbits / memLevel    per stream  ratio, MUD   ratio, prose
==========================  ==========  ===========  ================
15 / 8 (zlib's default)     262 KiB     6.05         2.00
13 / 6                       70 KiB     5.64         1.82
12 / 5 (``Compressor``)      38 KiB     4.92         1.72
11 / 4                       22 KiB     3.98         1.60
10 / 3                       14 KiB     3.06         1.51
==========================  ==========  ===========  ================

"MUD" is 80 KB of synthetic game output (rooms with ANSI colour, combat,
chat, a prompt after each write), "prose" 45 KB of this project's documents.
With a 4 KiB window, game output shrinks by 80 % where zlib's default
shrinks it by 83 % (prose: 42 % against 50 %), for a seventh of the memory,
so that is the default (``DEFAULT_WBITS``, ``DEFAULT_MEM_LEVEL``; a test
holds it under 48 KiB); an idle session without MCCP costs about 6 KiB. The
level changes the time per write, not the memory.

Inflating takes about 7 KiB of state plus the window the client's stream
declares in its zlib header (up to 32 KiB): :class:`Decompressor` reads the
header first and sizes its window to it, so a client's 4 KiB stream costs
about 11 KiB and none costs more than about 40 KiB.

A client's compressed input is bounded against decompression bombs: each
:meth:`Decompressor.decompress` call yields at most ``max_output`` bytes and
keeps the rest of its input for the next call (``pending``), and a stream
inflating to more than ``max_ratio`` times its compressed size (past the
first ``ratio_grace`` bytes) is refused. A broken stream raises
:class:`MCCPError`.
"""

from __future__ import annotations

import zlib

from workers.telnet.telopt import IAC, MCCP2, MCCP3, SB, SE

#: What the server sends right before its first compressed byte.
START_MCCP2 = bytes((IAC, SB, MCCP2, IAC, SE))
#: What the client sends right before its first compressed byte.
START_MCCP3 = bytes((IAC, SB, MCCP3, IAC, SE))

#: zlib's compression level (1 fastest .. 9 smallest): its default.
DEFAULT_LEVEL = 6
#: log2 of the deflate window: 4 KiB (zlib's default is 15, 32 KiB).
DEFAULT_WBITS = 12
#: zlib's memLevel, the size of its hash tables (1 .. 9, zlib's default 8).
DEFAULT_MEM_LEVEL = 5

#: Plain bytes one :meth:`Decompressor.decompress` call yields at most.
MAX_INFLATE_CHUNK = 64 * 1024
#: Output per input byte past which a client's stream is a bomb.
MAX_INFLATE_RATIO = 100
#: Output before the ratio applies: short streams compress far better.
INFLATE_RATIO_GRACE = 1024 * 1024
#: Compressed input held for later calls, past which the stream is refused:
#: the caller stops reading while ``pending``, so this is a backstop.
MAX_PENDING_INPUT = 1024 * 1024


class MCCPError(ValueError):
    """A compressed stream that cannot be inflated, or a bomb; one-line reason."""


def deflate_memory(wbits: int = DEFAULT_WBITS, mem_level: int = DEFAULT_MEM_LEVEL) -> int:
    """zlib's own estimate of a deflate stream's memory, in bytes (zconf.h)."""
    return (1 << (wbits + 2)) + (1 << (mem_level + 9))


class Compressor:
    """The server's side of MCCP2: plain bytes in, one zlib stream out.

    Each :meth:`compress` call ends with a sync flush, so what it returns can
    be sent at once and the client inflates all of it. :meth:`end` finishes
    the stream; the connection then goes on uncompressed.
    """

    __slots__ = ("_zobj", "bytes_in", "bytes_out", "finished")

    def __init__(
        self,
        level: int = DEFAULT_LEVEL,
        wbits: int = DEFAULT_WBITS,
        mem_level: int = DEFAULT_MEM_LEVEL,
    ) -> None:
        if not 9 <= wbits <= 15:
            raise ValueError("MCCP needs a zlib stream: wbits from 9 to 15")
        # positive wbits: the zlib format (RFC 1950), as MCCP asks
        self._zobj = zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level)
        self.finished = False
        #: plain bytes compressed, and compressed bytes produced, so far
        self.bytes_in = 0
        self.bytes_out = 0

    def compress(self, data: bytes | bytearray) -> bytes:
        """``data`` compressed and flushed (Z_SYNC_FLUSH); b"" for b""."""
        if self.finished:
            raise RuntimeError("the compressed stream has ended")
        if not data:
            return b""
        zobj = self._zobj
        out = zobj.compress(data) + zobj.flush(zlib.Z_SYNC_FLUSH)
        self.bytes_in += len(data)
        self.bytes_out += len(out)
        return out

    def end(self) -> bytes:
        """The end of the stream (Z_FINISH); what is sent after it is plain."""
        if self.finished:
            return b""
        self.finished = True
        out = self._zobj.flush(zlib.Z_FINISH)
        self.bytes_out += len(out)
        return out


class Decompressor:
    """The server's side of MCCP3: the client's zlib stream in, plain bytes out.

    :meth:`decompress` returns ``(plain, rest)``: ``rest`` is what came after
    the end of the stream (the client's Z_FINISH), plain telnet again, and
    ``finished`` is then true. At most ``max_output`` plain bytes come out of
    one call; while ``pending``, input is waiting and ``decompress(b"")``
    goes on with it (the caller stops reading from the client meanwhile).
    """

    __slots__ = (
        "_full",
        "_header",
        "_zobj",
        "bytes_in",
        "bytes_out",
        "finished",
        "max_output",
        "max_pending",
        "max_ratio",
        "ratio_grace",
    )

    def __init__(
        self,
        max_output: int = MAX_INFLATE_CHUNK,
        *,
        max_ratio: int | None = MAX_INFLATE_RATIO,
        ratio_grace: int = INFLATE_RATIO_GRACE,
        max_pending: int = MAX_PENDING_INPUT,
    ) -> None:
        if max_output < 1:
            raise ValueError("max_output must be positive")
        self.max_output = max_output
        self.max_ratio = max_ratio
        self.ratio_grace = ratio_grace
        self.max_pending = max_pending
        # created once the zlib header says how large a window the stream needs
        self._zobj: zlib._Decompress | None = None
        self._header = b""
        self._full = False  # the last call stopped at max_output
        self.finished = False
        #: compressed bytes taken, and plain bytes given, so far
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def pending(self) -> bool:
        """Input is waiting (or may be): call ``decompress(b"")`` before reading more."""
        if self.finished:
            return False
        return self._full or bool(self._zobj is not None and self._zobj.unconsumed_tail)

    def decompress(self, data: bytes) -> tuple[bytes, bytes]:
        """(plain bytes, bytes after the end of the stream) from ``data``.

        Raises :class:`MCCPError` for a stream zlib cannot inflate, one that
        inflates more than ``max_ratio`` times its size, or more than
        ``max_pending`` compressed bytes waiting.
        """
        if self.finished:
            return b"", data
        self.bytes_in += len(data)
        zobj = self._zobj
        if zobj is None:
            data = self._header + data
            if len(data) < 2:
                self._header = data
                return b"", b""
            self._header = b""
            zobj = self._zobj = zlib.decompressobj(_window_bits(data[0], data[1]))
        else:
            tail = zobj.unconsumed_tail
            if tail:
                if len(tail) + len(data) > self.max_pending:
                    raise MCCPError(
                        f"over {self.max_pending} compressed bytes waiting to be inflated"
                    )
                data = tail + data if data else tail
        try:
            plain = zobj.decompress(data, self.max_output)
        except zlib.error as exc:
            raise MCCPError(f"broken compressed stream: {exc}") from None
        self._full = len(plain) == self.max_output
        self.bytes_out += len(plain)
        if (
            self.max_ratio is not None
            and self.bytes_out > self.ratio_grace
            and self.bytes_out > self.max_ratio * self.bytes_in
        ):
            raise MCCPError(
                f"compressed stream inflates over {self.max_ratio} times: "
                f"{self.bytes_in} bytes gave {self.bytes_out}"
            )
        if zobj.eof:
            self.finished = True
            self._full = False
            return plain, zobj.unused_data
        return plain, b""


def _window_bits(cmf: int, flg: int) -> int:
    """The window a zlib stream declares in its header (RFC 1950, 2.2), as wbits."""
    if (cmf << 8 | flg) % 31:
        raise MCCPError("broken compressed stream: not a zlib header")
    if cmf & 0x0F != zlib.DEFLATED:
        raise MCCPError(f"broken compressed stream: compression method {cmf & 0x0F}")
    if flg & 0x20:
        raise MCCPError("broken compressed stream: a preset dictionary")
    cinfo = cmf >> 4
    if cinfo > 7:
        raise MCCPError(f"broken compressed stream: window size code {cinfo}")
    # zlib writes 8 (256 bytes) for a 9 it was asked for; 9 inflates both
    return max(cinfo + 8, 9)
