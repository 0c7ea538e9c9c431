"""Shells for the end-to-end tests: they tell the client what the server saw.

A real ``shardd serve`` subprocess runs them (``--shell tests.shells_for_tests:report``);
it is started from the project root, so ``tests`` imports from there.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from workers.shells import LineEditor
from workers.telnet.telopt import ECHO, EOR, SGA

#: the ``get_extra_info`` keys ``report`` sends back
REPORTED_KEYS = (
    "TERM",
    "term",
    "cols",
    "rows",
    "charset",
    "LANG",
    "USER",
    "DISPLAY",
    "COLUMNS",
    "LINES",
    "ttype1",
    "ttype2",
    "ttype3",
    "client_name",
    "mtts",
    "CHARSET",
    "CLIENT_NAME",
    "MTTS",
    "tspeed",
    "xdisploc",
    "gmcp",
    "msdp",
    "mssp",
    "mccp2",
    "mccp3",
)
REPORT_PREFIX = "REPORT "


def session_report(reader: Any, writer: Any) -> dict[str, Any]:
    """What this session's server side knows about its client."""
    report = {key: writer.get_extra_info(key) for key in REPORTED_KEYS}
    report["writer_encoding"] = writer.encoding
    report["reader_encoding"] = reader.encoding
    # TLS sessions: marked, and their transport's SSL object (None on the plain port)
    report["tls"] = writer.get_extra_info("tls")
    ssl_object = writer.get_extra_info("ssl_object")
    report["tls_version"] = ssl_object.version() if ssl_object is not None else None
    cipher = writer.get_extra_info("cipher")
    report["cipher"] = cipher[0] if cipher else None
    engine = writer.protocol.engine
    report["server_echo"] = engine.local_enabled(ECHO)
    report["server_sga"] = engine.local_enabled(SGA)
    report["eor"] = engine.local_enabled(EOR)
    return report


def _write(writer: Any, text: str) -> None:
    writer.write(text if writer.encoding is not None else text.encode("utf-8"))


#: how long the ``wait`` line of ``report`` takes to bring its news: the pace of
#: the world the shell stands for, not a wait for the client
LATER_DELAY = 0.5


async def report(reader: Any, writer: Any) -> None:
    """``REPORT {json}`` now and whenever the line ``report`` is typed.

    The first report also says how long after connecting the shell started
    (``shell_started_after``); later ones hold the line before (``last_line``).
    Each report is also appended, a JSON line, to ``$SHARDD_REPORT_FILE`` if set.
    The line ``wait`` gets a prompt, then ``LATER_DELAY`` later the news ``A bird
    sings.`` and a prompt again, as a MUD's world goes on without its player: a
    client that knows where prompts end shows it on its own line. Any other
    line is answered ``You said: <line>``; ``quit`` ends the session. Every
    prompt is marked (``end_prompt``).
    """
    last_line: str | None = None

    def send_report(**extra: Any) -> None:
        seen = json.dumps({**session_report(reader, writer), **extra}, default=str)
        _write(writer, REPORT_PREFIX + seen + "\r\n")
        copy_to = os.environ.get("SHARDD_REPORT_FILE")
        if copy_to:  # for clients that wrap or redraw what they show
            with open(copy_to, "a") as copy:
                copy.write(seen + "\n")

    async def prompt() -> None:
        _write(writer, "> ")
        writer.end_prompt()
        await writer.drain()

    send_report(shell_started_after=writer.protocol.duration)
    editor = LineEditor(reader, writer)
    while True:
        await prompt()
        line = await editor.readline()
        if line is None:
            return
        if line.strip() == "report":
            send_report(last_line=last_line)
        elif line.strip() == "wait":
            await prompt()
            await asyncio.sleep(LATER_DELAY)
            _write(writer, "A bird sings.\r\n")
        elif line.strip() == "quit":
            _write(writer, "Goodbye.\r\n")
            await writer.drain()
            return
        else:
            _write(writer, f"You said: {line}\r\n")
        last_line = line


async def modes(reader: Any, writer: Any) -> None:
    """Character mode, then a hidden password, then line mode: what a BBS does.

    In character mode every key is answered ``[k]`` as it comes, until Enter;
    then ``Password:`` with the input hidden, answered ``Got N characters.``;
    then lines, answered ``You said: <line>`` until ``quit``.
    """
    writer.set_mode("character")
    _write(writer, "char mode> ")
    writer.end_prompt()
    while True:
        key = await reader.read(1)
        if not key:
            return
        if key in "\r\n":
            break
        _write(writer, f"[{key}]")
    writer.set_mode("line")
    writer.hide_input()
    _write(writer, "\r\nPassword: ")
    writer.end_prompt()
    editor = LineEditor(reader, writer)
    password = await editor.readline()
    if password is None:
        return
    writer.show_input()
    _write(writer, f"\r\nGot {len(password)} characters.\r\n")
    while True:
        _write(writer, "> ")
        writer.end_prompt()
        await writer.drain()
        line = await editor.readline()
        if line is None or line.strip() == "quit":
            return
        _write(writer, f"You said: {line}\r\n")


# Shells that misbehave on purpose, for the load-test tool's failure kinds
# (tests/test_loadtest.py).


async def upper_echo(reader: Any, writer: Any) -> None:
    """Echo, upper-cased: what comes back differs from what was sent."""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        writer.write(data.upper())
        await writer.drain()


async def half_echo(reader: Any, writer: Any) -> None:
    """Echo half of the first read (one byte at least), then end the session."""
    data = await reader.read(65536)
    if data:
        writer.write(data[: max(1, len(data) // 2)])
        await writer.drain()


async def close_at_once(reader: Any, writer: Any) -> None:
    """End the session as soon as it starts, having said nothing."""


async def silent(reader: Any, writer: Any) -> None:
    """Read everything and never answer."""
    while await reader.read(65536):
        pass


async def echo_once(reader: Any, writer: Any) -> None:
    """Echo the first read only; everything after it is read and dropped."""
    data = await reader.read(65536)
    writer.write(data)
    await writer.drain()
    while await reader.read(65536):
        pass


def plain_function_raises(reader: Any, writer: Any) -> None:
    """A shell that is not a coroutine function, and fails at once."""
    raise RuntimeError("the plain shell broke")


async def raises_after_banner(reader: Any, writer: Any) -> None:
    """Greets, reads one line, then fails: the session must still be closed."""
    _write(writer, "hello\r\n")
    await reader.readline()
    raise KeyError("missing-room")


async def spew(reader: Any, writer: Any) -> None:
    """Writes 256 MB as fast as it can and never drains: output only the client can take."""
    chunk = "x" * 65536 + "\r\n"
    for _ in range(4096):
        writer.write(chunk)
        await asyncio.sleep(0)  # let the loop run, still without waiting for the client


async def timed(reader: Any, writer: Any) -> None:
    """Records how long after connect it started (``tests/time_to_shell.py``), then
    reads until the client leaves. The record is a JSON line appended to the file
    named by ``$SHARDD_TIMED_SHELL_LOG``."""
    first = writer.get_extra_info("first_byte_at")
    record = {
        "after": writer.protocol.duration,
        "after_first_byte": None if first is None else time.monotonic() - first,
        "TERM": writer.get_extra_info("TERM"),
        "encoding": writer.encoding,
    }
    with open(os.environ["SHARDD_TIMED_SHELL_LOG"], "a") as log:
        log.write(json.dumps(record) + "\n")
    _write(writer, "shell started\r\n")
    while await reader.read(65536):
        pass


async def spin(reader: Any, writer: Any) -> None:
    """Keeps its worker's CPU busy until the client leaves (or 60 s): 50 ms of
    work, then one loop turn for everyone else, and again."""
    _write(writer, "spinning\r\n")
    loop = asyncio.get_running_loop()
    until = loop.time() + 60
    while not writer.protocol.closed and loop.time() < until:
        busy_until = time.perf_counter() + 0.05
        while time.perf_counter() < busy_until:
            pass
        await asyncio.sleep(0)


async def mud(reader: Any, writer: Any) -> None:
    """GMCP, MSDP and the MUD options seen: for tests/test_mud_server.py.

    Each GMCP message comes back as ``Echo.Reply`` {"package", "data"}; a line
    ``hp N`` sets MSDP HEALTH to N; ``options`` writes the MUD options that
    are on as a JSON line; ``big N`` writes N lines; other lines are echoed.
    """

    async def gmcp_echo() -> None:
        async for package, data in writer.gmcp_messages():
            writer.send_gmcp("Echo.Reply", {"package": package, "data": data})

    echo_task = asyncio.ensure_future(gmcp_echo())
    writer.msdp_update("HEALTH", "100")
    writer.msdp_update("ROOM", {"VNUM": "1", "NAME": "Start"})
    _write(writer, "mud ready\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            text = line.strip() if isinstance(line, str) else line.decode().strip()
            if text.startswith("hp "):
                writer.msdp_update("HEALTH", text[3:])
                _write(writer, f"health {text[3:]}\r\n")
            elif text == "options":
                seen = {
                    k: writer.get_extra_info(k) for k in ("gmcp", "msdp", "mssp", "mccp2", "mccp3")
                }
                _write(writer, "OPTIONS " + json.dumps(seen) + "\r\n")
            elif text.startswith("big "):
                for n in range(int(text[4:])):
                    _write(writer, f"line {n} of the big output, to compress\r\n")
                _write(writer, "big done\r\n")
            else:
                _write(writer, f"echo {text}\r\n")
    finally:
        echo_task.cancel()


async def mud_callback(reader: Any, writer: Any) -> None:
    """GMCP by callback: each message comes back as ``Echo.Callback``; MSDP
    variables that are not commands come back as GMCP ``Echo.MSDP``."""
    writer.on_gmcp(lambda package, data: writer.send_gmcp("Echo.Callback", [package, data]))
    writer.on_msdp(lambda name, value: writer.send_gmcp("Echo.MSDP", [name, value]))
    _write(writer, "mud ready\r\n")
    while await reader.read(65536):
        pass


async def mud_unread(reader: Any, writer: Any) -> None:
    """Reads no GMCP until the line ``count``: then says how many messages waited."""
    _write(writer, "mud ready\r\n")
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.strip() == "count":
            session = writer.protocol.mud_session()
            waiting = session.waiting
            _write(writer, f"COUNT {waiting} DROPPED {session.dropped}\r\n")


#: the ``get_extra_info`` keys ``addresses`` sends back: who the session is with
ADDRESS_KEYS = (
    "peername",
    "sockname",
    "tls",
    "proxy_version",
    "proxy_unique_id",
    "proxy_authority",
    "proxy_alpn",
    "proxy_ssl",
)


async def addresses(reader: Any, writer: Any) -> None:
    """``ADDRESSES {json}`` of the session's addresses and PROXY details, then
    ``You said: <line>`` for each line until the client leaves."""
    seen = {key: writer.get_extra_info(key) for key in ADDRESS_KEYS}
    seen["pid"] = os.getpid()
    for key in ("proxy_unique_id", "proxy_alpn"):
        if isinstance(seen[key], bytes):
            seen[key] = seen[key].decode("utf-8", "replace")
    _write(writer, "ADDRESSES " + json.dumps(seen, default=str) + "\r\n")
    editor = LineEditor(reader, writer)
    while (line := await editor.readline()) is not None:
        _write(writer, f"You said: {line}\r\n")
        await writer.drain()


async def bus(reader: Any, writer: Any) -> None:
    """The message bus, one command a line (tests/test_bus_serving.py).

    ``id`` -> ``ID <id> <shard> <pid>``; ``name N``; ``sub CH`` (then every
    message on CH comes as ``MSG <ch> <sender> <json data>``); ``slowsub CH``
    (joined, never read); ``dropped CH`` -> ``DROPPED <n>``
    for either; ``unsub CH``; ``pub CH TEXT``; ``pubn CH N`` (N
    numbered messages, 0 to N-1); ``send ID TEXT`` -> ``SENT True|False``
    (direct messages come as ``DM <sender> <json data>``); ``who`` ->
    ``WHO <json>``; ``close ID TEXT`` -> ``CLOSED True|False``; ``dropped CH``
    -> ``DROPPED <n>``; ``quit``. Each command is answered ``OK <command>``
    (or the line above) once done; a refused one ``ERR <why>``.
    """
    bus = writer.bus
    tasks: set[asyncio.Task[None]] = set()
    slow: dict[str, Any] = {}

    async def relay(subscription: Any, prefix: str) -> None:
        async for message in subscription:
            head = f"MSG {message.channel}" if prefix == "MSG" else "DM"
            _write(writer, f"{head} {message.sender} {json.dumps(message.data)}\r\n")

    def start(subscription: Any, prefix: str) -> None:
        task = asyncio.get_running_loop().create_task(relay(subscription, prefix))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    start(bus.inbox, "DM")
    editor = LineEditor(reader, writer)
    while (line := await editor.readline()) is not None:
        command, _, rest = line.strip().partition(" ")
        arg, _, text = rest.partition(" ")
        try:
            if command == "id":
                shard = writer.get_extra_info("shard") or 0
                _write(writer, f"ID {bus.id} {shard} {os.getpid()}\r\n")
                continue
            if command == "name":
                bus.name = rest
            elif command == "sub":
                slow[arg] = bus.subscribe(arg)
                start(slow[arg], "MSG")
            elif command == "slowsub":
                slow[arg] = bus.subscribe(arg)
            elif command == "unsub":
                bus.unsubscribe(arg)
            elif command == "pub":
                await bus.publish(arg, text)
            elif command == "pubn":
                for n in range(int(text)):
                    await bus.publish(arg, n)
            elif command == "send":
                _write(writer, f"SENT {await bus.send(arg, text)}\r\n")
                continue
            elif command == "who":
                found = [[s.id, s.shard, s.peer, s.term, s.name, s.host] for s in await bus.who()]
                _write(writer, f"WHO {json.dumps(found)}\r\n")
                continue
            elif command == "close":
                _write(writer, f"CLOSED {await bus.close_session(arg, text)}\r\n")
                continue
            elif command == "dropped":
                _write(writer, f"DROPPED {slow[arg].dropped}\r\n")
                continue
            elif command == "garbage":  # a frame the supervisor must refuse
                from workers import ipc

                frame = ipc.pack(ipc.BUS_PUB, ch="c" * 201, sender=None, p=b"")
                bus.hub.backend.channel.ipc.transport.write(frame)
            elif command == "quit":
                break
            else:
                _write(writer, f"ERR unknown command {command!r}\r\n")
                continue
        except ValueError as exc:  # BusError
            _write(writer, f"ERR {exc}\r\n")
            continue
        _write(writer, f"OK {command}\r\n")
        await writer.drain()
