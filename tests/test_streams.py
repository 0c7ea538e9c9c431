"""The reader and writer a shell gets (``TelnetReader``, ``TelnetWriter``).

Where the chunking of input is the point (line ends split across chunks, limits,
decode errors) the reader is fed directly with ``feed_data``; everything else goes
through a real ``BaseServer`` session on loopback with a socket client.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from conftest import async_wait_until
from server_peers import TIMEOUT, cmd

from workers.stream_reader import DEFAULT_LIMIT, LineTooLong, TelnetReader
from workers.telnet.telopt import DO, DONT, ECHO, GA, NOP, SGA, WILL, WONT


def text_reader(**kwargs) -> TelnetReader:
    kwargs.setdefault("encoding", "utf8")
    return TelnetReader(**kwargs)


async def until_waiting(reader: TelnetReader, task: asyncio.Task) -> None:
    """Let ``task`` run until it finishes or blocks waiting for data."""
    await async_wait_until(
        lambda: task.done() or (reader._waiter is not None and not reader._waiter.done()),
        TIMEOUT,
        "reader to block or finish",
    )


# ============================================================================ reader


# ------------------------------------------------------------------------- read(n)


async def test_read_n_returns_at_most_n():
    reader = text_reader()
    reader.feed_data(b"hello world")
    assert await reader.read(5) == "hello"
    assert await reader.read(100) == " world"


async def test_read_zero_returns_empty_without_waiting():
    reader = text_reader()
    assert await reader.read(0) == ""
    assert await TelnetReader().read(0) == b""


async def test_read_n_waits_for_data():
    reader = text_reader()
    task = asyncio.ensure_future(reader.read(10))
    await until_waiting(reader, task)
    assert not task.done()
    reader.feed_data(b"abc")
    assert await asyncio.wait_for(task, TIMEOUT) == "abc"


async def test_read_n_returns_empty_at_eof():
    reader = text_reader()
    reader.feed_data(b"x")
    reader.feed_eof()
    assert await reader.read(10) == "x"
    assert await reader.read(10) == ""
    assert reader.at_eof()


async def test_read_n_through_a_session(harness):
    _proto, run, client = await harness.session()
    client.send(b"0123456789")
    got = ""
    while len(got) < 10:
        part = await asyncio.wait_for(run.reader.read(3), TIMEOUT)
        assert 0 < len(part) <= 3
        got += part
    assert got == "0123456789"


# ------------------------------------------------------------------------ read(-1)


async def test_read_all_waits_for_eof():
    reader = text_reader()
    task = asyncio.ensure_future(reader.read(-1))
    reader.feed_data(b"one ")
    await until_waiting(reader, task)
    reader.feed_data(b"two")
    await until_waiting(reader, task)
    assert not task.done()
    reader.feed_eof()
    assert await asyncio.wait_for(task, TIMEOUT) == "one two"


async def test_read_all_through_a_session_until_client_eof(harness):
    _proto, run, client = await harness.session()
    client.send(b"first ")
    client.send(b"second ")
    client.send(b"x" * 100000)
    client.writer.write_eof()
    data = await asyncio.wait_for(run.reader.read(), TIMEOUT)
    assert data == "first second " + "x" * 100000
    assert await run.reader.read() == ""


# ------------------------------------------------------------------------ readline


@pytest.mark.parametrize(
    ("wire", "lines"),
    [
        (b"crlf\r\n", ["crlf\r\n"]),
        (b"crnul\r\x00", ["crnul\r"]),
        (b"lonecr\rnext\r\n", ["lonecr\r", "next\r\n"]),
        (b"lonelf\nnext\n", ["lonelf\n", "next\n"]),
        (
            b"a\r\nb\r\x00c\rd\ne\n\rf\r\n",
            ["a\r\n", "b\r", "c\r", "d\n", "e\n", "\r", "f\r\n"],
        ),
        (b"\r\n\r\n", ["\r\n", "\r\n"]),
    ],
)
async def test_readline_line_ends_in_one_chunk(wire, lines):
    for encoding in ("utf8", None):
        reader = TelnetReader(encoding=encoding)
        reader.feed_data(wire)
        reader.feed_eof()
        got = []
        while line := await reader.readline():
            got.append(line)
        expected = lines if encoding else [x.encode() for x in lines]
        assert got == expected, encoding


@pytest.mark.parametrize("follower", [b"\n", b"\x00"])
async def test_readline_cr_at_chunk_end_then_lf_or_nul(follower):
    reader = text_reader()
    reader.feed_data(b"first\r")
    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == "first\r"
    reader.feed_data(follower + b"second\r\n")
    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == "second\r\n"
    reader.feed_eof()
    assert await reader.readline() == ""


@pytest.mark.parametrize("follower", [b"\n", b"\x00"])
async def test_readline_cr_at_chunk_end_follower_alone(follower):
    reader = text_reader()
    reader.feed_data(b"first\r")
    assert await reader.readline() == "first\r"
    task = asyncio.ensure_future(reader.readline())
    reader.feed_data(follower)  # the rest of the line end, nothing else
    await until_waiting(reader, task)
    assert not task.done(), f"an extra line {task.result()!r} was produced"
    reader.feed_data(b"second\n")
    assert await asyncio.wait_for(task, TIMEOUT) == "second\n"


async def test_readline_cr_at_chunk_end_then_text():
    reader = text_reader()
    reader.feed_data(b"first\r")
    assert await reader.readline() == "first\r"
    reader.feed_data(b"second\r\n")
    assert await reader.readline() == "second\r\n"


async def test_readline_waits_across_chunks():
    reader = text_reader()
    task = asyncio.ensure_future(reader.readline())
    reader.feed_data(b"par")
    await until_waiting(reader, task)
    reader.feed_data(b"tial")
    await until_waiting(reader, task)
    assert not task.done()
    reader.feed_data(b" line\r\nrest")
    assert await asyncio.wait_for(task, TIMEOUT) == "partial line\r\n"
    assert await reader.read(10) == "rest"


async def test_readline_at_eof_returns_the_rest_then_empty():
    reader = text_reader()
    reader.feed_data(b"no line end")
    reader.feed_eof()
    assert await reader.readline() == "no line end"
    assert await reader.readline() == ""


async def test_readline_line_ends_through_a_session(harness):
    _proto, run, client = await harness.session()
    client.send(b"one\r\ntwo\r\x00three\rfour\nfive")
    client.writer.write_eof()
    lines = []
    while line := await asyncio.wait_for(run.reader.readline(), TIMEOUT):
        lines.append(line)
    assert lines == ["one\r\n", "two\r", "three\r", "four\n", "five"]


async def test_readline_bytes_session(harness):
    _proto, run, client = await harness.session(encoding=False)
    client.send(b"bin\r\n\xe9\r\x00")
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == b"bin\r\n"
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == b"\xe9\r"


# -------------------------------------------------------------------- readexactly


async def test_readexactly_across_chunks():
    reader = text_reader()
    task = asyncio.ensure_future(reader.readexactly(6))
    reader.feed_data(b"abc")
    await until_waiting(reader, task)
    assert not task.done()
    reader.feed_data(b"defgh")
    assert await asyncio.wait_for(task, TIMEOUT) == "abcdef"
    assert await reader.read(10) == "gh"


async def test_readexactly_incomplete_at_eof():
    reader = TelnetReader()
    reader.feed_data(b"abc")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await reader.readexactly(5)
    assert info.value.partial == b"abc"
    assert info.value.expected == 5


async def test_readexactly_incomplete_text_partial_is_bytes():
    reader = text_reader()
    reader.feed_data("d\u00e9j".encode())
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await reader.readexactly(4)
    assert info.value.partial == "d\u00e9j".encode()


async def test_readexactly_through_a_session(harness):
    _proto, run, client = await harness.session(encoding=False)
    client.send(b"12")
    client.send(b"345678")
    assert await asyncio.wait_for(run.reader.readexactly(4), TIMEOUT) == b"1234"
    assert await asyncio.wait_for(run.reader.readexactly(4), TIMEOUT) == b"5678"
    client.send(b"9")
    client.writer.write_eof()
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await asyncio.wait_for(run.reader.readexactly(3), TIMEOUT)
    assert info.value.partial == b"9"


async def test_readexactly_negative_is_an_error():
    with pytest.raises(ValueError):
        await text_reader().readexactly(-1)


# ----------------------------------------------------------------------- readuntil


async def test_readuntil_default_separator_is_newline():
    reader = text_reader()
    reader.feed_data(b"abc\r\ndef")
    assert await reader.readuntil() == "abc\r\n"


async def test_readuntil_separator_split_across_chunks():
    reader = text_reader()
    task = asyncio.ensure_future(reader.readuntil("END"))
    reader.feed_data(b"dataEN")
    await until_waiting(reader, task)
    assert not task.done()
    reader.feed_data(b"Dmore")
    assert await asyncio.wait_for(task, TIMEOUT) == "dataEND"
    assert await reader.read(10) == "more"


async def test_readuntil_limit_overrun_keeps_the_data():
    reader = text_reader(limit=10)
    reader.feed_data(b"x" * 25)
    with pytest.raises(asyncio.LimitOverrunError):
        await reader.readuntil(";")
    assert await reader.read(100) == "x" * 25


async def test_readuntil_limit_overrun_while_waiting():
    reader = TelnetReader(limit=10)
    task = asyncio.ensure_future(reader.readuntil(b";"))
    reader.feed_data(b"y" * 6)
    await until_waiting(reader, task)
    reader.feed_data(b"y" * 6)
    with pytest.raises(asyncio.LimitOverrunError):
        await asyncio.wait_for(task, TIMEOUT)


async def test_readuntil_incomplete_at_eof():
    reader = TelnetReader()
    reader.feed_data(b"partial")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await reader.readuntil(b";")
    assert info.value.partial == b"partial"
    assert info.value.expected is None


async def test_readuntil_separator_type_and_emptiness():
    with pytest.raises(TypeError):
        await text_reader().readuntil(b";")
    with pytest.raises(TypeError):
        await TelnetReader().readuntil(";")
    with pytest.raises(ValueError):
        await text_reader().readuntil("")


async def test_readuntil_through_a_session(harness):
    _proto, run, client = await harness.session()
    client.send(b"key=value;next")
    assert await asyncio.wait_for(run.reader.readuntil(";"), TIMEOUT) == "key=value;"


# ------------------------------------------------------------------------ async for


async def test_async_for_yields_lines_until_eof():
    reader = text_reader()
    reader.feed_data(b"a\r\nb\nc\r\x00d")
    reader.feed_eof()
    assert [line async for line in reader] == ["a\r\n", "b\n", "c\r", "d"]


async def test_async_for_through_a_session(harness):
    _proto, run, client = await harness.session()
    client.send(b"look\r\n")
    client.send(b"north\r\nquit\r\n")
    seen = []

    async def consume():
        async for line in run.reader:
            seen.append(line)
            if line.strip() == "quit":
                break

    await asyncio.wait_for(consume(), TIMEOUT)
    assert seen == ["look\r\n", "north\r\n", "quit\r\n"]


# ---------------------------------------------------------------------- LineTooLong


def test_line_too_long_is_a_value_error():
    assert issubclass(LineTooLong, ValueError)


async def test_line_too_long_streamed_then_next_line_reads():
    limit = 100
    reader = text_reader(limit=limit)
    task = asyncio.ensure_future(reader.readline())
    reader.feed_data(b"x" * 60)
    await until_waiting(reader, task)
    reader.feed_data(b"x" * 60)
    with pytest.raises(LineTooLong):
        await asyncio.wait_for(task, TIMEOUT)
    assert len(reader._buf) < limit
    # the rest of the overlong line, then a good one
    reader.feed_data(b"x" * 60 + b"\r\nnext\r\n")
    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == "next\r\n"


async def test_line_too_long_arriving_in_one_chunk():
    reader = text_reader(limit=100)
    reader.feed_data(b"x" * 300 + b"\r\nnext\r\n")
    with pytest.raises(LineTooLong):
        await reader.readline()
    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == "next\r\n"


async def test_line_too_long_memory_stays_bounded():
    limit, chunk = 200, 50
    reader = text_reader(limit=limit)
    errors = 0
    largest = 0

    async def keep_reading():
        nonlocal errors
        while True:
            try:
                line = await reader.readline()
            except LineTooLong:
                errors += 1
                continue
            return line

    task = asyncio.ensure_future(keep_reading())
    for _ in range(200):  # 50 times the limit, no line end
        reader.feed_data(b"z" * chunk)
        await until_waiting(reader, task)
        largest = max(largest, len(reader._buf))
    assert errors >= 1
    assert largest <= limit + chunk
    reader.feed_data(b"\r\nfine\r\n")
    await asyncio.wait_for(task, TIMEOUT)  # the reader is still usable
    assert len(reader._buf) <= len("fine\r\n")


async def test_line_too_long_through_a_session(harness):
    limit = 1024
    _proto, run, client = await harness.session(limit=limit)
    client.send(b"w" * (limit * 4))
    with pytest.raises(LineTooLong):
        await asyncio.wait_for(run.reader.readline(), TIMEOUT)
    client.send(b"\r\nafter\r\n")
    # the tail of the overlong line is dropped too: the next line is the next one
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "after\r\n"


# ------------------------------------------------------------------- pause / resume


async def test_reader_pauses_transport_past_twice_limit_and_resumes(harness):
    limit = 1024
    proto, run, client = await harness.session(limit=limit, encoding=False)
    transport = proto._transport
    total = 4 * 2**20  # far more than one recv() of the transport
    client.send(b"p" * total)
    await async_wait_until(lambda: not transport.is_reading(), TIMEOUT, "reading paused")
    assert len(run.reader._buf) > 2 * limit
    assert proto.rx_bytes < total  # the rest waits in the kernel
    got = bytearray()
    while len(got) < total:
        got += await asyncio.wait_for(run.reader.read(65536), TIMEOUT)
    assert got == b"p" * total
    await async_wait_until(transport.is_reading, TIMEOUT, "reading resumed")
    assert proto.rx_bytes == total


async def test_reader_pause_resume_callbacks():
    events = []
    reader = TelnetReader(
        limit=10, pause=lambda: events.append("pause"), resume=lambda: events.append("resume")
    )
    reader.feed_data(b"a" * 20)
    assert events == []
    reader.feed_data(b"a")
    assert events == ["pause"]
    reader.feed_data(b"a" * 100)
    assert events == ["pause"]
    await reader.read(100)
    assert events == ["pause"]  # 21 left, above the limit
    await reader.read(11)
    assert events == ["pause", "resume"]


# ------------------------------------------------------------------- decode errors


async def test_decode_error_raised_once_then_replaced_data_readable():
    reader = text_reader()
    reader.feed_data(b"caf\xe9\r\nok\r\n")
    with pytest.raises(UnicodeDecodeError):
        await reader.readline()
    assert await reader.readline() == "caf\ufffd\r\n"
    assert await reader.readline() == "ok\r\n"


async def test_decode_error_wakes_a_waiting_read():
    reader = text_reader()
    task = asyncio.ensure_future(reader.read(100))
    await until_waiting(reader, task)
    reader.feed_data(b"\xff")
    with pytest.raises(UnicodeDecodeError):
        await asyncio.wait_for(task, TIMEOUT)
    assert await reader.read(100) == "\ufffd"


async def test_decode_error_keeps_a_character_split_across_chunks():
    reader = text_reader()
    reader.feed_data(b"ab\xc3")  # first byte of an e-acute
    reader.feed_data(b"\xa9\xff\r\n")  # its second byte, then a bad byte
    with pytest.raises(UnicodeDecodeError):
        await reader.readline()
    assert await reader.readline() == "ab\u00e9\ufffd\r\n"


async def test_multibyte_split_across_chunks_decodes():
    reader = text_reader()
    euro = "\u20ac".encode()
    reader.feed_data(b"price " + euro[:1])
    reader.feed_data(euro[1:2])
    reader.feed_data(euro[2:] + b"5\r\n")
    assert await reader.readline() == "price \u20ac5\r\n"


async def test_truncated_character_at_eof_is_not_silently_lost():
    reader = text_reader()
    reader.feed_data(b"abc\xc3")
    reader.feed_eof()
    with pytest.raises(UnicodeDecodeError):
        await reader.read()
    assert await reader.read() == "abc\ufffd"


async def test_decode_error_through_a_session(harness):
    _proto, run, client = await harness.session()
    client.send(b"caf\xe9\r\nok\r\n")
    with pytest.raises(UnicodeDecodeError):
        await asyncio.wait_for(run.reader.readline(), TIMEOUT)
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "caf\ufffd\r\n"
    assert await asyncio.wait_for(run.reader.readline(), TIMEOUT) == "ok\r\n"


async def test_default_limit():
    assert DEFAULT_LIMIT == 2**16
    reader = text_reader()
    reader.feed_data(b"q" * (DEFAULT_LIMIT - 10) + b"\n")
    assert len(await reader.readline()) == DEFAULT_LIMIT - 9


# ============================================================================ writer


async def test_write_str_and_bytes(harness):
    _proto, run, client = await harness.session()
    run.writer.write("text \u00e9 ")
    run.writer.write(b"bytes")
    await client.expect("text \u00e9 bytes".encode())
    assert bytes(client.received) == "text \u00e9 bytes".encode()


async def test_writelines(harness):
    _proto, run, client = await harness.session()
    run.writer.writelines(["one\r\n", b"two\r\n", "three\r\n"])
    await client.expect(b"one\r\ntwo\r\nthree\r\n")


async def test_write_doubles_iac(harness):
    _proto, run, client = await harness.session(encoding="latin-1")
    run.writer.write(b"a\xffb\xff\xff")
    run.writer.write("\u00ff|")  # U+00FF is byte 255 in latin-1
    await client.expect(b"|")
    assert bytes(client.received) == b"a\xff\xffb\xff\xff\xff\xff\xff\xff|"


async def test_writelines_doubles_iac(harness):
    _proto, run, client = await harness.session(encoding=False)
    run.writer.writelines([b"\xff", b"x\xff"])
    await client.expect(b"x\xff\xff")
    assert bytes(client.received) == b"\xff\xffx\xff\xff"


async def test_bytes_writer_refuses_str(harness):
    _proto, run, _client = await harness.session(encoding=False)
    with pytest.raises(TypeError):
        run.writer.write("text")
    with pytest.raises(TypeError):
        run.writer.writelines(["text"])


async def test_drain_returns_at_once_when_not_paused(harness):
    _proto, run, client = await harness.session()
    run.writer.write("x")
    await asyncio.wait_for(run.writer.drain(), TIMEOUT)
    await client.expect(b"x")


async def test_drain_waits_for_a_slow_client(harness):
    proto, run, client = await harness.session(encoding=False)
    block = b"d" * 65536
    written = 0
    # Write until drain() really blocks: the kernel buffers on both ends (which
    # grow by autotuning) are full and the client is not reading.
    for _ in range(4096):  # at most 256 MiB: far beyond any socket buffer
        while not proto.writing_paused:
            run.writer.write(block)
            written += len(block)
        drain = asyncio.ensure_future(run.writer.drain())
        done, _ = await asyncio.wait({drain}, timeout=0.3)
        if not done:
            break
    assert not drain.done(), "drain never waited for the client to read"
    assert proto.writing_paused
    await client.expect_len(written, timeout=60)
    await asyncio.wait_for(drain, TIMEOUT)
    assert len(client.received) == written


async def test_drain_after_connection_lost_raises(harness):
    proto, run, client = await harness.session()
    await client.aclose()
    await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)
    with pytest.raises(ConnectionResetError):
        await run.writer.drain()


async def test_close_is_closing_wait_closed(harness):
    proto, run, client = await harness.session()
    writer = run.writer
    assert not writer.is_closing()
    writer.write("bye\r\n")
    writer.close()
    assert writer.is_closing()
    await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
    assert proto._waiter_closed.done()
    assert await client.read_to_eof() == b"bye\r\n"
    await asyncio.wait_for(writer.wait_closed(), TIMEOUT)  # again: returns at once


async def test_wait_closed_waits_for_the_client_to_close(harness):
    _proto, run, client = await harness.session()
    waiting = asyncio.ensure_future(run.writer.wait_closed())
    done, _ = await asyncio.wait({waiting}, timeout=0.1)
    assert not done
    await client.aclose()
    await asyncio.wait_for(waiting, TIMEOUT)
    assert run.writer.is_closing()


async def test_wait_closed_cancelled_does_not_cancel_the_session(harness):
    proto, run, _client = await harness.session()
    waiting = asyncio.ensure_future(run.writer.wait_closed())
    await asyncio.wait({waiting}, timeout=0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not proto._waiter_closed.cancelled()
    run.writer.close()
    await asyncio.wait_for(run.writer.wait_closed(), TIMEOUT)


async def test_echo_only_when_will_echo_is_on(harness):
    proto, run, client = await harness.session()
    writer = run.writer
    writer.echo("not echoed")
    writer.write("|")
    assert writer.iac(WILL, ECHO) is True
    writer.echo("still not")  # asked, not yet agreed
    end = await client.expect(b"|" + cmd(WILL, ECHO))
    client.send(cmd(DO, ECHO))
    await async_wait_until(lambda: proto.rx_bytes == 3, TIMEOUT)
    writer.echo("echoed")
    writer.write("|")
    await client.expect(b"echoed|", since=end)
    assert bytes(client.received) == b"|" + cmd(WILL, ECHO) + b"echoed|"
    # the client withdraws: no more echo
    client.send(cmd(DONT, ECHO))
    end = await client.expect(cmd(WONT, ECHO))
    writer.echo("gone")
    writer.write("!")
    await client.expect(b"!", since=end)
    assert bytes(client.received[end:]) == b"!"


async def test_send_ga_unless_sga(harness):
    proto, run, client = await harness.session()
    writer = run.writer
    assert writer.send_ga() is True
    end = await client.expect(cmd(GA))
    assert writer.iac(WILL, SGA) is True
    end = await client.expect(cmd(WILL, SGA), since=end)
    assert writer.send_ga() is True  # SGA asked for, not on yet
    end = await client.expect(cmd(GA), since=end)
    client.send(cmd(DO, SGA))
    await async_wait_until(lambda: proto.rx_bytes == 3, TIMEOUT)
    sent = proto.tx_bytes
    assert writer.send_ga() is False
    assert proto.tx_bytes == sent
    writer.write("|")
    await client.expect(b"|", since=end)
    assert bytes(client.received[end:]) == b"|"


async def test_iac_goes_through_rfc1143(harness):
    proto, run, client = await harness.session()
    writer = run.writer
    assert writer.iac(WILL, ECHO) is True
    end = await client.expect(cmd(WILL, ECHO))
    sent = proto.tx_bytes
    assert writer.iac(WILL, ECHO) is False  # already being negotiated
    assert proto.tx_bytes == sent
    client.send(cmd(DO, ECHO))
    await async_wait_until(lambda: proto.rx_bytes == 3, TIMEOUT)
    assert writer.iac(WILL, ECHO) is False  # enabled: a second WILL sends nothing
    assert proto.tx_bytes == sent
    writer.write("|")
    await client.expect(b"|", since=end)
    assert bytes(client.received) == cmd(WILL, ECHO) + b"|"
    # turning it off does go out, once
    assert writer.iac(WONT, ECHO) is True
    assert writer.iac(WONT, ECHO) is False
    end = await client.expect(cmd(WONT, ECHO), since=end)
    assert writer.iac(DO, SGA) is True
    assert writer.iac(DO, SGA) is False
    await client.expect(cmd(DO, SGA), since=end)


async def test_iac_plain_command(harness):
    _proto, run, client = await harness.session()
    assert run.writer.iac(NOP) is True
    assert run.writer.iac(GA) is True
    await client.expect(cmd(NOP) + cmd(GA))
    with pytest.raises(ValueError):
        run.writer.iac(WILL)


async def test_writer_get_extra_info(harness):
    _proto, run, client = await harness.session()
    assert run.writer.get_extra_info("peername") == client.sockname
    assert run.writer.get_extra_info("sockname") == client.writer.get_extra_info("peername")
    assert run.writer.get_extra_info("nope") is None
    assert run.writer.get_extra_info("nope", 42) == 42


async def test_shell_sees_reset_as_exception(harness):
    proto, run, client = await harness.session()
    reading = asyncio.ensure_future(run.reader.read(10))
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reading, TIMEOUT)
    await asyncio.wait_for(asyncio.shield(proto._waiter_closed), TIMEOUT)
    run.writer.write("after reset")  # a write after the loss is a no-op, not an error
