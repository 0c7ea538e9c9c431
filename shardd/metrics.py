"""What ``--metrics`` serves: the supervisor's view of its shards, for Prometheus.

Built at scrape time from what workers reported (their counters, and each
live session's bytes as last reported) and what the supervisor reads itself
(accept queues, RSS), through prometheus_client's exposition: a custom
collector yields metric families, ``generate_latest`` writes the text. One
endpoint, no per-process files: prometheus_client's multiprocess mode leaves
a file per process behind and slows scrapes as they pile up.

Counters stay monotonic across a worker's death: :class:`ShardTotals` keeps,
per shard, what every worker that is gone had counted, the bytes of the
sessions it still had included. Between a session's ``close`` message and
the next report (whose counters then hold its final bytes), its last
reported bytes are kept on its worker's handle (``unreported_rx``/``_tx``),
so the byte counters never dip meanwhile.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shardd import listeners
from workers import session_totals as totals
from workers.bus import hub as bus
from workers.bus.backends import backend_label

if TYPE_CHECKING:
    from shardd.supervisor import Shard, Supervisor, WorkerHandle

#: the classic text format, which generate_latest writes
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# keys of ShardTotals' counters that are not a worker's own counter names
ACCEPTED = "accepted"
RESTARTS = "restarts"
# counters that are each one metric, labelled by shard only
_SIMPLE = (
    ("protocol_errors", "shardd_protocol_errors", "Malformed telnet input, by shard."),
    ("shell_errors", "shardd_shell_errors", "Sessions whose shell raised an exception."),
    ("gmcp_dropped", "shardd_gmcp_dropped", "GMCP messages dropped unread (queue full)."),
    ("ipc_pauses", "shardd_ipc_pauses", "Times a worker's channel to the supervisor filled up."),
)
# counters with a reason: (prefix or names, metric, help)
_CLOSED_BY_SERVER = ("idle_timeout", "output_overflow", "mccp3_broken")
_TLS_FAILURES = ("error", "timeout")
#: the reasons and counts a metric with a ``reason`` label takes from a shard's counters
ReasonsOf = Callable[[Counter[str]], Iterable[tuple[str, int]]]


class ShardTotals:
    """Per shard, what workers that are gone counted: monotonic counters across deaths."""

    def __init__(self) -> None:
        self.past: dict[int, Counter[str]] = {}
        # restarts of shards removed (TTOU) whose index a later shard took, and
        # the Shard last seen at each index with its count then
        self._restarts_past: Counter[int] = Counter()
        self._seen: dict[int, tuple[Shard, int]] = {}

    def retire(self, handle: WorkerHandle) -> None:
        """``handle``'s worker is gone: keep its counts, its live sessions' bytes too."""
        past = self.past.setdefault(handle.shard, Counter())
        counters = dict(handle.counters)
        pause = counters.pop("gc_max_pause_us", 0)
        past.update(counters)
        past["gc_max_pause_us"] = max(past["gc_max_pause_us"], pause)
        past[ACCEPTED] += handle.accepted
        rx, tx = _live_bytes(handle)
        past[totals.CLOSED_RX] += rx
        past[totals.CLOSED_TX] += tx

    def restarts(self, shards: Iterable[Shard]) -> dict[int, int]:
        """Worker restarts per shard index, removed shards' included."""
        current = {shard.index: shard for shard in shards}
        for index, (shard, count) in list(self._seen.items()):
            if current.get(index) is not shard:
                self._restarts_past[index] += count
                del self._seen[index]
        for index, shard in current.items():
            self._seen[index] = (shard, shard.restarts)
        indexes = set(self._restarts_past) | set(self._seen)
        return {
            index: self._restarts_past[index] + (self._seen[index][1] if index in self._seen else 0)
            for index in indexes
        }


def _live_bytes(handle: WorkerHandle) -> tuple[int, int]:
    """Bytes of ``handle``'s sessions as last reported, with those closed since."""
    rx, tx = handle.unreported_rx, handle.unreported_tx
    for _peer, _at, entry in handle.sessions.values():
        if entry is not None:
            rx += entry[1]
            tx += entry[2]
    return rx, tx


class _Shard:
    """One shard's figures as a scrape adds them up: past workers plus live ones."""

    def __init__(self, past: Counter[str] | None) -> None:
        self.counters: Counter[str] = Counter(past or ())
        self.max_pause_us = self.counters.pop("gc_max_pause_us", 0)
        self.counters.pop(bus.SUBSCRIPTIONS, None)  # a gauge: of live workers only
        self.bus_subscriptions = 0
        self.sessions = 0
        self.rss = 0
        self.restarts = 0
        self.queue: dict[str, int] = {}

    def add(self, handle: WorkerHandle) -> None:
        counters = dict(handle.counters)
        self.max_pause_us = max(self.max_pause_us, counters.pop("gc_max_pause_us", 0))
        self.bus_subscriptions += counters.pop(bus.SUBSCRIPTIONS, 0)
        self.counters.update(counters)
        self.counters[ACCEPTED] += handle.accepted
        # from here on the "closed" byte counts hold the live sessions' bytes too
        rx, tx = _live_bytes(handle)
        self.counters[totals.CLOSED_RX] += rx
        self.counters[totals.CLOSED_TX] += tx
        self.sessions += len(handle.sessions)
        if handle.process is not None:
            try:
                self.rss += handle.process.memory_info().rss
            except psutil.Error:
                pass


class SupervisorCollector(Collector):
    """prometheus_client's collector interface over the supervisor's state."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        # the supervisor's start as Unix time (its own clock is monotonic)
        self.start_time = time.time() - (time.monotonic() - sup.started)
        #: how long the previous scrape took to build (the supervisor's loop waits on it)
        self.last_render = 0.0

    def _shards(self) -> dict[int, _Shard]:
        sup = self.sup
        shards = {index: _Shard(past) for index, past in sup.shard_totals.past.items()}
        for handle in sup.workers.values():
            shard = shards.get(handle.shard)
            if shard is None:
                shard = shards[handle.shard] = _Shard(None)
            shard.add(handle)
        for index, restarts in sup.shard_totals.restarts(sup.shards).items():
            shards.setdefault(index, _Shard(None)).restarts = restarts
        for s in sup.shards:
            shard = shards.setdefault(s.index, _Shard(None))
            shard.queue["plain"] = listeners.accept_queue(s.sock) or 0
            if s.tls_sock is not None:
                shard.queue["tls"] = listeners.accept_queue(s.tls_sock) or 0
        return dict(sorted(shards.items()))

    def collect(self) -> Iterator[Metric]:
        shards = self._shards()
        yield GaugeMetricFamily("shardd_up", "1 while the supervisor serves.", value=1)
        yield GaugeMetricFamily(
            "shardd_start_time_seconds",
            "When the supervisor started, in seconds since the Unix epoch.",
            value=self.start_time,
        )
        yield GaugeMetricFamily(
            "shardd_workers",
            "Shards being served (one worker each).",
            value=len(self.sup.active_shards()),
        )
        yield GaugeMetricFamily(
            "shardd_metrics_render_seconds",
            "Time the previous scrape of this endpoint took to build.",
            value=self.last_render,
        )
        yield _per_shard(
            GaugeMetricFamily(
                "shardd_sessions_current", "Live sessions, as last reported.", labels=["shard"]
            ),
            ((i, s.sessions) for i, s in shards.items()),
        )
        yield _counter("shardd_sessions", "Sessions accepted.", shards, ACCEPTED)
        yield _counter(
            "shardd_bytes_in",
            "Bytes received from clients (telnet layer, after TLS, before MCCP3 inflation).",
            shards,
            totals.CLOSED_RX,
        )
        yield _counter(
            "shardd_bytes_out",
            "Bytes sent to clients (telnet layer, before TLS and MCCP2 compression).",
            shards,
            totals.CLOSED_TX,
        )
        yield _histogram(shards)
        yield _by_reason(
            "shardd_connections_refused",
            "Connections refused by the admission limits, by reason.",
            shards,
            lambda counters: (
                (name.split(":", 1)[1], n)
                for name, n in counters.items()
                if name.startswith("refused:")
            ),
        )
        yield _by_reason(
            "shardd_sessions_closed_by_server",
            "Sessions the server closed, by reason.",
            shards,
            lambda counters: ((why, counters[why]) for why in _CLOSED_BY_SERVER if why in counters),
        )
        yield _by_reason(
            "shardd_tls_handshake_failures",
            "TLS handshakes that failed, by reason.",
            shards,
            lambda counters: (
                (why, counters[f"tls_handshake_{why}"])
                for why in _TLS_FAILURES
                if f"tls_handshake_{why}" in counters
            ),
        )
        for key, name, text in _SIMPLE:
            yield _counter(name, text, shards, key)
        yield _per_shard(
            CounterMetricFamily(
                "shardd_worker_restarts",
                "Workers of the shard that died and were replaced.",
                labels=["shard"],
            ),
            ((i, s.restarts) for i, s in shards.items()),
        )
        queue = GaugeMetricFamily(
            "shardd_accept_queue",
            "Connections waiting in the shard's accept queue (TCP_INFO), by listener.",
            labels=["shard", "listener"],
        )
        for index, shard in shards.items():
            for listener, depth in shard.queue.items():
                queue.add_metric([str(index), listener], depth)
        yield queue
        gc = CounterMetricFamily(
            "shardd_gc_collections",
            "Garbage collections in the shard's workers, by generation.",
            labels=["shard", "generation"],
        )
        for index, shard in shards.items():
            for generation in range(3):
                gc.add_metric(
                    [str(index), str(generation)], shard.counters[f"gc_collections_{generation}"]
                )
        yield gc
        yield _per_shard(
            GaugeMetricFamily(
                "shardd_gc_max_pause_seconds",
                "Longest garbage-collection pause in the shard's workers.",
                labels=["shard"],
            ),
            ((i, s.max_pause_us / 1e6) for i, s in shards.items()),
        )
        yield from _bus_metrics(self.sup, shards)
        yield _per_shard(
            GaugeMetricFamily(
                "shardd_worker_resident_memory_bytes",
                "Resident memory of the shard's workers.",
                labels=["shard"],
            ),
            ((i, s.rss) for i, s in shards.items()),
        )


_BUS_COUNTERS = (
    ("in", bus.IN, "Bus messages that reached the shard's workers from the backend."),
    ("out", bus.OUT, "Bus messages the shard's sessions published or sent."),
    ("delivered", bus.DELIVERED, "Bus messages put in a subscriber's queue."),
    ("dropped", bus.DROPPED, "Bus messages dropped for a subscriber's full queue."),
)


def _bus_metrics(sup: Supervisor, shards: dict[int, _Shard]) -> Iterator[Metric]:
    """The message bus: per shard and backend, and the supervisor's relay."""
    backend = backend_label(sup.cfg.bus)
    for name, key, text in _BUS_COUNTERS:
        family = CounterMetricFamily(
            f"shardd_bus_messages_{name}", text, labels=["shard", "backend"]
        )
        for index, shard in shards.items():
            family.add_metric([str(index), backend], shard.counters[key])
        yield family
    gauge = GaugeMetricFamily(
        "shardd_bus_subscriptions",
        "Live bus subscriptions in the shard's workers.",
        labels=["shard", "backend"],
    )
    for index, shard in shards.items():
        gauge.add_metric([str(index), backend], shard.bus_subscriptions)
    yield gauge
    relay = sup.bus_relay
    yield CounterMetricFamily(
        "shardd_bus_relayed",
        "Bus frames the supervisor wrote to workers (local backend).",
        value=relay.relayed,
    )
    yield CounterMetricFamily(
        "shardd_bus_relay_dropped",
        "Bus frames the supervisor dropped: the worker's channel held too much.",
        value=relay.dropped,
    )
    yield GaugeMetricFamily(
        "shardd_bus_channels",
        "Channels with subscribers in some worker.",
        value=len(relay.channels),
    )


def _per_shard(
    family: GaugeMetricFamily | CounterMetricFamily, values: Iterable[tuple[int, float]]
) -> Metric:
    for index, value in values:
        family.add_metric([str(index)], value)
    return family


def _counter(name: str, text: str, shards: dict[int, _Shard], key: str) -> Metric:
    family = CounterMetricFamily(name, text, labels=["shard"])
    return _per_shard(family, ((i, s.counters[key]) for i, s in shards.items()))


def _by_reason(name: str, text: str, shards: dict[int, _Shard], reasons: ReasonsOf) -> Metric:
    family = CounterMetricFamily(name, text, labels=["shard", "reason"])
    for index, shard in shards.items():
        for reason, count in sorted(reasons(shard.counters)):
            family.add_metric([str(index), reason], count)
    return family


def _histogram(shards: dict[int, _Shard]) -> Metric:
    family = HistogramMetricFamily(
        "shardd_session_duration_seconds", "Durations of closed sessions.", labels=["shard"]
    )
    for index, shard in shards.items():
        counters = shard.counters
        buckets: list[tuple[str, float]] = [
            (f"{bound:.1f}", counters[name])
            for bound, name in zip(totals.DURATION_BUCKETS, totals.DURATION_LE, strict=True)
        ]
        buckets.append(("+Inf", counters[totals.DURATION_COUNT]))
        family.add_metric([str(index)], buckets, counters[totals.DURATION_SUM_MS] / 1000)
    return family


class Exposition:
    """The registry holding the one collector; ``render`` is a scrape's body."""

    def __init__(self, sup: Supervisor) -> None:
        self.collector = SupervisorCollector(sup)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        began = time.perf_counter()
        body = generate_latest(self.registry)
        self.collector.last_render = time.perf_counter() - began
        return body
