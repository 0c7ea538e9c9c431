"""How a scenario reports to, and waits for, whatever runs it; lanes and closing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from shardd.loadtest.target import CLOSE_GRACE


class Hooks:
    """How a scenario reports to, and waits for, whatever runs it.

    The defaults suit a scenario run on its own in the caller's loop: barriers
    pass at once and nothing is reported. The command line's client
    processes replace them to keep several processes in step.
    """

    def __init__(self) -> None:
        self.interrupted = asyncio.Event()
        #: live counters for a progress line, set by the running scenario
        self.snapshot: Callable[[], dict[str, int]] | None = None
        #: what the client knows of each live session (``verify.Record``), for
        #: ``--verify``; set by a scenario with a verify barrier
        self.records: Callable[[], list[list[Any]]] | None = None

    async def barrier(self, name: str) -> None:
        """Return once every process running this scenario has reached ``name``."""
        return None

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if interrupted."""
        if self.interrupted.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await self.interrupted.wait()
        except TimeoutError:
            pass


async def lanes(count: int, width: int, job: Callable[[], Awaitable[None]], hooks: Hooks) -> int:
    """Run ``job`` ``count`` times, ``width`` at once; how many were started."""
    started = 0

    async def lane() -> None:
        nonlocal started
        while started < count and not hooks.interrupted.is_set():
            started += 1
            await job()

    await asyncio.gather(*(lane() for _ in range(min(width, count))))
    return started


class Closable(Protocol):
    """A client session as :func:`close_all` sees it."""

    @property
    def closed(self) -> asyncio.Future[None]: ...

    def close(self) -> None: ...


async def close_all(protocols: Iterable[Closable]) -> None:
    """Close sessions and wait for them to be gone; bounded by CLOSE_GRACE."""
    waiting = []
    for proto in protocols:
        proto.close()
        if not proto.closed.done():
            waiting.append(proto.closed)
    if waiting:
        await asyncio.wait(waiting, timeout=CLOSE_GRACE + 1)
