"""What every scenario's result shares: failures, sources, the wire form, merging.

A run split over several client processes sends each process's result up a
pipe (:meth:`Result.to_wire`) and the parent merges them (each scenario's
``merge``): counts add up, latency histograms merge bucket by bucket.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import Field, fields
from typing import Any, ClassVar, Self

from shardd.loadtest.latencies import Latencies


class Result(ABC):
    """What every scenario's result has: failures by kind and phase, sources.

    Every subclass is a dataclass; its fields are what crosses the pipe.
    """

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    failures: Counter[str]
    failures_by_phase: dict[str, Counter[str]]
    sources: Counter[str]

    @abstractmethod
    def merge(self, other: Self) -> Self:
        """Add another process's share of the same run to this one."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """The result as plain JSON-able values, for ``--json`` and the table."""

    def _common(self, phase: str = "", added: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The fields every summary ends with; ``added``: failures only the merged
        result can see (lines some player never heard), counted in ``phase``."""
        failures = Counter(self.failures)
        by_phase = {p: Counter(k) for p, k in self.failures_by_phase.items()}
        for kind, count in (added or {}).items():
            if count > 0:
                failures[kind] += count
                by_phase.setdefault(phase, Counter())[kind] += count
        return {
            "failures": dict(failures),
            "failures_total": sum(failures.values()),
            "failures_by_phase": {p: dict(k) for p, k in by_phase.items() if k},
            "sources": dict(self.sources),
        }

    @property
    def failures_total(self) -> int:
        return sum(self.failures.values())

    def to_wire(self) -> dict[str, Any]:
        """A plain structure for the pipe between client processes."""
        wire: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Latencies):
                value = {"latencies": value.to_wire()}
            elif f.name == "failures_by_phase":
                value = {p: dict(k) for p, k in value.items()}
            elif isinstance(value, Counter):
                value = dict(value)
            wire[f.name] = value
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for name, value in wire.items():
            if isinstance(value, dict) and set(value) == {"latencies"}:
                value = Latencies.from_wire(value["latencies"])
            elif name == "failures_by_phase":
                value = {p: Counter(k) for p, k in value.items()}
            elif name in ("failures", "sources"):
                value = Counter(value)
            values[name] = value
        return cls(**values)

    def _merge_common(self, other: Result) -> None:
        self.failures.update(other.failures)
        for phase, kinds in other.failures_by_phase.items():
            self.failures_by_phase.setdefault(phase, Counter()).update(kinds)
        self.sources.update(other.sources)


class ServerMemory:
    """A result that also carries the server's resident memory.

    A scenario run in one process reads it itself; a run split over several
    has the parent read it while every process holds its sessions, and set
    it on the merged result.
    """

    pids: list[int] | None
    rss_before: int | None
    rss_holding: int | None
