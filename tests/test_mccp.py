"""MCCP2/MCCP3 (``workers/telnet/mccp.py``): round trips, bombs, broken streams, memory,
and the engine handing a session's compressed stream over to a Decompressor."""

from __future__ import annotations

import gc
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.telnet import mccp
from workers.telnet.engine import DATA, HELD, Subnegotiation, TelnetEngine, escape
from workers.telnet.mccp import Compressor, Decompressor, MCCPError
from workers.telnet.telopt import IAC, MCCP2, MCCP3, NOP

PROPERTY_SETTINGS = settings(
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def inflate_all(decompressor: Decompressor, chunks: list[bytes]) -> tuple[bytes, bytes]:
    """Feed ``chunks`` as a server would: drain ``pending`` before the next one."""
    plain, rest = [], []
    for chunk in chunks:
        if decompressor.finished:
            rest.append(chunk)
            continue
        out, after = decompressor.decompress(chunk)
        plain.append(out)
        rest.append(after)
        while decompressor.pending:
            assert len(out) <= decompressor.max_output
            out, after = decompressor.decompress(b"")
            plain.append(out)
            rest.append(after)
        assert len(out) <= decompressor.max_output
    return b"".join(plain), b"".join(rest)


writes = st.lists(
    st.binary(max_size=300) | st.sampled_from([b"look\r\n", b"\0" * 5000]), max_size=8
)


@PROPERTY_SETTINGS
@given(
    chunks=writes,
    finish=st.booleans(),
    after=st.binary(max_size=20),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    max_output=st.integers(1, 2000),
)
def test_round_trip_split_anywhere(
    chunks: list[bytes], finish: bool, after: bytes, cuts: list[int], max_output: int
) -> None:
    compressor = Compressor()
    stream = b"".join(compressor.compress(chunk) for chunk in chunks)
    if finish:
        stream += compressor.end() + after
    decompressor = Decompressor(max_output)
    plain, rest = inflate_all(decompressor, split(stream, cuts))
    assert plain == b"".join(chunks)
    assert decompressor.finished == finish
    assert rest == (after if finish else b"")
    assert decompressor.bytes_out == len(plain)


@PROPERTY_SETTINGS
@given(chunks=writes)
def test_each_write_is_flushed_whole(chunks: list[bytes]) -> None:
    """What compress() returns inflates to all it was given: nothing waits in zlib."""
    compressor = Compressor()
    decompressor = Decompressor(max_output=1 << 20)
    for chunk in chunks:
        assert decompressor.decompress(compressor.compress(chunk)) == (chunk, b"")


def test_compressor_speaks_the_zlib_format() -> None:
    compressor = Compressor()
    assert compressor.compress(b"") == b""
    stream = compressor.compress(b"hello\r\n") + compressor.end()
    # RFC 1950: CM 8 (deflate), CINFO 4 (a 4 KiB window), a header check
    assert stream[0] == 0x48 and (stream[0] << 8 | stream[1]) % 31 == 0
    assert zlib.decompress(stream) == b"hello\r\n"  # zlib format, with its Adler-32
    with pytest.raises(zlib.error):
        zlib.decompress(stream, wbits=-15)  # not raw deflate
    assert compressor.end() == b""
    with pytest.raises(RuntimeError):
        compressor.compress(b"more")
    assert compressor.bytes_in == 7 and compressor.bytes_out == len(stream)
    assert mccp.START_MCCP2 == b"\xff\xfa\x56\xff\xf0"
    assert mccp.START_MCCP3 == b"\xff\xfa\x57\xff\xf0"


def test_decompressor_after_the_end_passes_bytes_through() -> None:
    compressor = Compressor()
    stream = compressor.compress(b"n\r\n") + compressor.end()
    decompressor = Decompressor()
    assert decompressor.decompress(stream[:1]) == (b"", b"")  # half a header
    assert decompressor.decompress(stream[1:] + b"\xff\xf1plain") == (b"n\r\n", b"\xff\xf1plain")
    assert decompressor.finished and not decompressor.pending
    assert decompressor.decompress(b"more") == (b"", b"more")


# ------------------------------------------------------------- bombs and garbage

BOMB_SIZE = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """16 MiB of zeros as one zlib stream: about 16 KiB."""
    return zlib.compress(bytes(BOMB_SIZE), 9)


def test_a_bomb_never_yields_more_than_the_bound_per_call(bomb: bytes) -> None:
    decompressor = Decompressor(max_output=64 * 1024, max_ratio=None)
    total, calls = 0, 0
    out, rest = decompressor.decompress(bomb)
    while True:
        calls += 1
        assert len(out) <= 64 * 1024
        total += len(out)
        if not decompressor.pending:
            break
        out, rest = decompressor.decompress(b"")
    assert total == BOMB_SIZE and decompressor.finished and rest == b""
    assert calls >= BOMB_SIZE // (64 * 1024)


def test_a_bomb_is_refused_by_the_ratio_guard(bomb: bytes) -> None:
    decompressor = Decompressor()
    total = 0
    with pytest.raises(MCCPError, match="inflates over 100 times"):
        out, _rest = decompressor.decompress(bomb)
        while True:
            total += len(out)
            out, _rest = decompressor.decompress(b"")
    limit = max(mccp.INFLATE_RATIO_GRACE, mccp.MAX_INFLATE_RATIO * len(bomb))
    assert total <= limit + mccp.MAX_INFLATE_CHUNK


def test_typed_input_is_far_from_the_ratio_guard() -> None:
    """A client flushing each command, as MCCP3 clients do, compresses about 2:1."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 12, 5)  # telnetlib3's MCCP3 settings
    decompressor = Decompressor()
    for _ in range(20_000):
        command = compressor.compress(b"kill goblin\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert decompressor.decompress(command) == (b"kill goblin\r\n", b"")
    assert decompressor.bytes_out < 10 * decompressor.bytes_in


def test_pending_input_has_a_backstop(bomb: bytes) -> None:
    decompressor = Decompressor(max_output=1024, max_ratio=None, max_pending=len(bomb) + 100)
    decompressor.decompress(bomb)
    assert decompressor.pending
    with pytest.raises(MCCPError, match="waiting"):
        decompressor.decompress(bytes(200))


def zlib_header(cmf: int, flags: int = 0) -> bytes:
    """Two header bytes with a correct check (RFC 1950, 2.2)."""
    return bytes((cmf, flags + (31 - (cmf << 8 | flags) % 31) % 31))


@pytest.mark.parametrize(
    "stream, reason",
    [
        (b"\x78\x9c\xff\xff\xff\xff", "broken compressed stream"),
        (b"hello", "not a zlib header"),
        (zlib.compress(b"x")[2:], "not a zlib header"),  # raw deflate
        (b"\x1f\x8b\x08\x00", "not a zlib header"),  # gzip
        (zlib_header(0x88), "window size code 8"),  # a 64 KiB window
        (zlib_header(0x79), "compression method 9"),
        (zlib_header(0x78, 0x20), "preset dictionary"),
    ],
)
def test_broken_streams_raise_mccp_error(stream: bytes, reason: str) -> None:
    with pytest.raises(MCCPError, match=reason):
        Decompressor().decompress(stream)


@PROPERTY_SETTINGS
@given(
    garbage=st.binary(max_size=200),
    prefix=st.sampled_from([b"", b"\x78\x9c", b"\x48\x89", zlib.compress(b"look\r\n" * 9)[:-6]]),
    max_output=st.integers(1, 100),
)
def test_garbage_raises_mccp_error_and_nothing_else(
    garbage: bytes, prefix: bytes, max_output: int
) -> None:
    decompressor = Decompressor(max_output)
    try:
        inflate_all(decompressor, [prefix + garbage])
    except MCCPError as exc:
        assert "\n" not in str(exc)


@PROPERTY_SETTINGS
@given(data=st.binary(min_size=1, max_size=400), flip=st.integers(0), bit=st.integers(0, 7))
def test_a_corrupted_stream_raises_mccp_error_or_inflates(data: bytes, flip: int, bit: int) -> None:
    compressor = Compressor()
    stream = bytearray(compressor.compress(data) + compressor.end())
    stream[flip % len(stream)] ^= 1 << bit
    try:
        inflate_all(Decompressor(64), [bytes(stream)])
    except MCCPError:
        pass


# ---------------------------------------------------------------- memory per stream


def memory_per_stream(make: object, count: int = 200) -> float:
    """Bytes each of ``count`` objects made by ``make()`` holds, by tracemalloc
    (zlib allocates through Python's raw allocator, which tracemalloc sees)."""
    assert callable(make)
    gc.collect()
    tracemalloc.start()
    try:
        objects = [make() for _ in range(count)]
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del objects
    return current / count


def test_a_compressed_stream_costs_under_48_kib() -> None:
    """38 KiB with zlib 1.2.13; the bound leaves room for other zlib builds."""

    def make() -> Compressor:
        compressor = Compressor()
        compressor.compress(b"Welcome!\r\n" * 500)
        return compressor

    per_stream = memory_per_stream(make)
    assert per_stream < 48 * 1024
    assert mccp.deflate_memory() == 32 * 1024  # zlib's figure, without its ~6 KiB of state
    default = memory_per_stream(lambda: zlib.compressobj(6, zlib.DEFLATED, 15, 8), 50)
    assert default > 6 * per_stream  # zlib's defaults: about 262 KiB


@pytest.mark.parametrize("client_wbits, most", [(9, 12), (12, 16), (15, 48)])
def test_an_inflated_stream_costs_its_window(client_wbits: int, most: int) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, client_wbits, 5)
    stream = compressor.compress(b"look\r\n" * 2000) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def make() -> Decompressor:
        decompressor = Decompressor()
        assert decompressor.decompress(stream)[0] == b"look\r\n" * 2000
        return decompressor

    assert memory_per_stream(make) < most * 1024


# -------------------------------------------------- the engine hands the stream over


class CompressedInput:
    """How a session drives the engine and a Decompressor together, sans-I/O:
    the server for MCCP3 (its client's input), the client role for MCCP2."""

    def __init__(self, role: str, option: int, max_output: int) -> None:
        self.engine = TelnetEngine(role, stop_after_sb={option})
        self.option = option
        self.max_output = max_output
        self.decompressor: Decompressor | None = None
        self.inband: list[bytes] = []

    def receive(self, data: bytes) -> None:
        while True:
            if self.decompressor is None:
                self.inband.append(self.engine.receive(data))
                events = self.engine.take_events()
                if Subnegotiation(self.option, b"") not in events:
                    return
                # the compressed stream starts right after IAC SB <option> IAC SE
                self.decompressor = Decompressor(self.max_output)
                data = self.engine.take_held()
                continue
            plain, rest = self.decompressor.decompress(data)
            self.inband.append(self.engine.receive(plain))
            if self.decompressor.finished:
                self.decompressor = None
                data = rest
            elif self.decompressor.pending:
                data = b""
            else:
                return


@PROPERTY_SETTINGS
@given(
    side=st.sampled_from(
        [("server", MCCP3, mccp.START_MCCP3), ("client", MCCP2, mccp.START_MCCP2)]
    ),
    before=st.binary(max_size=50),
    middle=st.lists(st.binary(max_size=200), max_size=5),
    after=st.binary(max_size=50),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    max_output=st.integers(1, 500),
)
def test_a_session_inflates_exactly_the_compressed_part(
    side: tuple[str, int, bytes],
    before: bytes,
    middle: list[bytes],
    after: bytes,
    cuts: list[int],
    max_output: int,
) -> None:
    role, option, start = side
    compressor = Compressor()
    nop = bytes((IAC, NOP))
    wire = (
        escape(before)
        + nop
        + start
        + b"".join(compressor.compress(escape(chunk) + nop) for chunk in middle)
        + compressor.end()
        + escape(after)
    )
    session = CompressedInput(role, option, max_output)
    for chunk in split(wire, cuts):
        session.receive(chunk)
    assert b"".join(session.inband) == before + b"".join(middle) + after
    assert session.decompressor is None


def test_without_the_hook_the_marker_is_an_ordinary_subnegotiation() -> None:
    engine = TelnetEngine("server")
    assert engine.receive(b"a" + mccp.START_MCCP3 + b"b") == b"ab"
    assert engine.take_events() == [Subnegotiation(MCCP3, b"")]
    assert engine.take_held() == b""
    # with it, parsing stops after the marker, even at the end of a chunk
    engine = TelnetEngine("server", stop_after_sb={MCCP3})
    assert engine.receive(b"a" + mccp.START_MCCP3) == b"a"
    assert engine.parser_state == HELD
    assert engine.take_held() == b""
    assert engine.parser_state == DATA
    assert engine.receive(b"b" + mccp.START_MCCP3 + b"\x78\xff") == b"b"
    assert engine.take_held() == b"\x78\xff"
