"""The servers shardd is measured against, each an echo on uvloop.

- ``protocol``: a bare ``asyncio.Protocol`` echo, the ceiling of Python here;
- ``streams``: a bare ``asyncio.start_server`` echo;
- ``telnetlib3``: telnetlib3's ``create_server`` with an echo shell (needs the
  ``bench`` extra). It is a benchmark anchor only: shardd's own code never
  imports telnetlib3.

``python -m shardd.bench.anchors KIND --port P`` serves on 127.0.0.1:P (0 picks a
free port) and prints ``listening on 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from typing import Protocol, cast

import uvloop


class _Listening(Protocol):
    """What serve() needs of asyncio's and telnetlib3's servers alike."""

    @property
    def sockets(self) -> tuple[socket.socket, ...] | None: ...

    def close(self) -> None: ...


class _ProtocolEcho(asyncio.Protocol):
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _streams_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _telnetlib3_server(host: str, port: int) -> _Listening:
    import telnetlib3  # the anchor itself, in its own process: see the module doc

    async def shell(reader: telnetlib3.TelnetReader, writer: telnetlib3.TelnetWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    return await telnetlib3.create_server(host=host, port=port, shell=shell)


async def serve(kind: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server: _Listening
    if kind == "protocol":
        server = await loop.create_server(_ProtocolEcho, host, port, backlog=4096)
    elif kind == "telnetlib3":
        server = await _telnetlib3_server(host, port)
    else:
        server = await asyncio.start_server(_streams_echo, host, port, backlog=4096)
    bound = (server.sockets or ())[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shardd.bench.anchors")
    parser.add_argument("kind", choices=("protocol", "streams", "telnetlib3"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.kind, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
