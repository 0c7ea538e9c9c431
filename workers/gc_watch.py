"""The cyclic garbage collector in a worker: its pauses measured.

A full collection looks at every object the collector tracks, so its pause
grows with the sessions a worker holds (about 110 ms for 18 000 welcome
sessions here) and stalls every one of them. Each collection's pause is
measured (``gc.callbacks``) and reported with the worker's counters, so
``shardd status`` shows the longest one.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from typing import Any


class GcWatch:
    """Counts a worker's collections by generation, and its longest pause."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause_us = int((time.perf_counter() - self._started) * 1e6)
        counters = self.counters
        counters[f"gc_collections_{info['generation']}"] += 1
        if pause_us > counters["gc_max_pause_us"]:
            counters["gc_max_pause_us"] = pause_us
