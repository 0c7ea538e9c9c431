"""One client process of a ``shardd loadtest`` run: its share, in its own uvloop loop.

It talks to the parent over two pipes: msgpack messages up (progress
snapshots, "at barrier X", its sessions' records, the result or an error),
and one byte down: ``g`` releases the barrier it waits at, ``r`` asks for
its sessions' records (``--verify``).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import traceback
from typing import Any

import msgpack
import uvloop

from shardd.loadtest.hooks import Hooks
from shardd.loadtest.plan import Plan
from shardd.loadtest.results import Result
from workers.proctitle import set_title

SNAPSHOT_EVERY = 0.5
# what the parent writes down the pipe
GO = b"g"
RECORDS = b"r"


class PipeHooks(Hooks):
    """A client process's side of the pipes to the parent."""

    def __init__(self, up: int, down: int) -> None:
        super().__init__()
        self.up = up
        self.down = down
        self.packer = msgpack.Packer(use_bin_type=True)
        self._release: asyncio.Future[None] | None = None
        self._reporter: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(self.packer.pack(message))
        try:
            while data:
                data = data[os.write(self.up, data) :]
        except OSError:  # the parent is gone: nobody to report to, so stop
            self.interrupted.set()

    def attach(self, progress: bool) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.down, self._from_parent)
        loop.add_signal_handler(signal.SIGINT, self.interrupted.set)
        loop.add_signal_handler(signal.SIGTERM, self.interrupted.set)
        if progress:
            self._reporter = loop.create_task(self._report())

    def _from_parent(self) -> None:
        try:
            data = os.read(self.down, 64)
        except OSError:
            data = b""
        if not data:  # the parent is gone: stop, and pass every barrier
            asyncio.get_running_loop().remove_reader(self.down)
            self.interrupted.set()
            data = GO
        for byte in data:
            if byte == RECORDS[0]:
                self.send({"t": "records", "r": self.records() if self.records else []})
            elif self._release is not None and not self._release.done():
                self._release.set_result(None)

    async def barrier(self, name: str) -> None:
        self._release = asyncio.get_running_loop().create_future()
        self.send({"t": "barrier", "name": name})
        await self._release
        self._release = None

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY)  # the progress line's period
            if self.snapshot is not None:
                self.send({"t": "progress", "s": self.snapshot()})


def main(plan: Plan, index: int, up: int, down: int) -> int:
    """A client process: its share of the run, the result sent up the pipe."""
    set_title(f"loadtest client {index}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    hooks = PipeHooks(up, down)

    async def share() -> Result:
        hooks.attach(plan.progress)
        return await plan.scenario.run(
            plan.target.address[0], plan.target.port, **plan.share(index), hooks=hooks
        )

    try:
        result = uvloop.run(share())
    except BaseException:
        hooks.send({"t": "error", "text": traceback.format_exc()})
        return 1
    wire = result.to_wire()
    wire["interrupted"] = hooks.interrupted.is_set()
    hooks.send({"t": "result", "r": wire})
    return 0
