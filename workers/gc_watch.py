"""The cyclic garbage collector in a worker: when it runs, and how long it pauses.

A full collection looks at every object the collector tracks, so its pause
grows with the sessions a worker holds (135 ms at 18 000 echo sessions here)
and stalls every one of them. Python starts one whenever the objects that
lived long enough to reach the oldest generation have grown by a quarter
since the last: that is, while sessions pile up, a full collection every
25 % more of them, although none of them is garbage (measured: 8 full
collections while 18 000 sessions connected, then none in 40 s of churn).

A closed session is garbage only for the collector (telnetlib3's API makes
its futures resolve to the protocol itself: a cycle), so full collections
are still needed, but for the sessions that ended. :class:`GcPolicy` turns
Python's own full collections off and runs one when a quarter of the live
sessions (at least ``MIN_ENDED``) have ended since the last, or every
``MAX_INTERVAL`` seconds for whatever else a shell leaves behind. Young
generations are collected as before: at Python's thresholds they look at a
few thousand objects (a larger first threshold, 10 000, made the middle
generation's collections take 28 ms, measured). What the worker inherited
from the supervisor is frozen out of every collection.

Every collection's pause is measured (``gc.callbacks``) and reported with the
worker's counters, so ``shardd status`` shows the longest one.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

MIN_ENDED = 1000
MAX_INTERVAL = 600.0
CHECK_EVERY = 1.0
_NEVER = 2**31 - 1  # gen1 collections before Python considers a full one


class GcPolicy:
    """Full collections for ended sessions, not added ones; every pause counted."""

    def __init__(self, counters: Counter[str], live: Callable[[], int]) -> None:
        self.counters = counters
        self.live = live  # how many sessions are live now
        self._started = 0.0
        self._saved: tuple[int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ended_at_full = 0
        self._last_full = 0.0

    def install(self, manage: bool = True) -> None:
        """Measure collections; with ``manage``, also decide when full ones run."""
        gc.callbacks.append(self._callback)
        if not manage:
            return
        gc.freeze()  # what came with the fork: modules, codecs, settings
        self._saved = gc.get_threshold()
        t0, t1, _t2 = self._saved
        gc.set_threshold(t0, t1, _NEVER)
        self._last_full = time.monotonic()
        self._ended_at_full = self.counters["sessions_ended"]
        self._schedule()

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(CHECK_EVERY, self._check)

    def _check(self) -> None:
        ended = self.counters["sessions_ended"] - self._ended_at_full
        due = ended >= max(MIN_ENDED, self.live() // 4)
        if due or time.monotonic() - self._last_full >= MAX_INTERVAL:
            gc.collect()
            self._ended_at_full = self.counters["sessions_ended"]
            self._last_full = time.monotonic()
        self._schedule()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause_us = int((time.perf_counter() - self._started) * 1e6)
        counters = self.counters
        counters[f"gc_collections_{info['generation']}"] += 1
        if pause_us > counters["gc_max_pause_us"]:
            counters["gc_max_pause_us"] = pause_us
