"""Latency samples in a fixed-size histogram that merges across processes."""

from __future__ import annotations

import math
from typing import Any

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0))

_log = math.log  # add() runs once per round trip
_PER_E = 200.0  # buckets per factor e: 0.5% wide


class Latencies:
    """Latency samples in log-spaced buckets 0.5% wide.

    Memory stays fixed however long a run lasts, processes' samples merge
    exactly (counts add up), and a percentile is within 0.25% of the sample
    it stands for; min and max are exact.
    """

    __slots__ = ("buckets", "count", "max", "min")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.min = math.inf
        self.max = 0.0

    def add(self, seconds: float) -> None:
        index = int(_log(seconds * 1e6) * _PER_E) if seconds > 1e-6 else 0
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def __len__(self) -> int:
        return self.count

    def merge(self, other: Latencies) -> Latencies:
        buckets = self.buckets
        for index, n in other.buckets.items():
            buckets[index] = buckets.get(index, 0) + n
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile in seconds (nearest rank), None without samples."""
        if not self.count:
            return None
        if q >= 100:
            return self.max
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                value = math.exp((index + 0.5) / _PER_E) / 1e6
                return min(max(value, self.min), self.max)
        return self.max

    def summary_ms(self) -> dict[str, float | None]:
        result: dict[str, float | None] = {}
        for name, q in PERCENTILES:
            value = self.percentile(q)
            result[name] = None if value is None else round(value * 1000, 3)
        return result

    def to_wire(self) -> list[Any]:
        return [
            self.count,
            self.min if self.count else None,
            self.max,
            [[i, n] for i, n in self.buckets.items()],
        ]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Latencies:
        lat = cls()
        lat.count, low, lat.max, pairs = wire
        lat.min = math.inf if low is None else low
        lat.buckets = {int(i): int(n) for i, n in pairs}
        return lat


def format_ms(values: dict[str, float | None]) -> str:
    """A :meth:`Latencies.summary_ms` on one line for people; "-" without samples."""
    if values.get("max") is None:
        return "-"
    return "  ".join(f"{k} {v:.3f}" for k, v in values.items() if v is not None)
