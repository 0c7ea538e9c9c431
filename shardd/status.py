"""What ``shardd status`` answers: the supervisor's view of its workers and sessions.

Built from what workers reported over their channels (every session's
counters and attributes, as ``workers.ipc`` defines them) plus what the
supervisor reads itself: each worker's CPU and memory (psutil) and each
shard's accept queue (TCP_INFO). The field names are those of
``shardd status --json``; :mod:`shardd.status_view` renders them for people.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import psutil

from shardd import listeners
from workers import ipc
from workers.bus import hub as bus
from workers.bus.backends import backend_label
from workers.telnet.mtts import flag_names

if TYPE_CHECKING:
    from shardd.supervisor import Supervisor, WorkerHandle


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: building or reading 100 000 rows
    would otherwise run a dozen collections, half the work, for no garbage."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def collect(sup: Supervisor) -> dict[str, Any]:
    """The whole picture, in the field names ``shardd status --json`` shows.

    Connections go as rows (see CONNECTION_FIELDS): at 100 000 sessions, maps
    would double the reply and the time to pack and unpack it.
    """
    now = time.monotonic()
    workers = []
    connections: list[list[Any]] = []
    for handle in sorted(sup.workers.values(), key=lambda h: (h.shard, h.started_at)):
        shard = sup.shard(handle.shard)
        rss = None
        if handle.process is not None:
            try:
                rss = handle.process.memory_info().rss
            except psutil.Error:
                pass
        workers.append(
            {
                "shard": handle.shard,
                "pid": handle.pid,
                "state": handle.state,
                "restarts": shard.restarts if shard is not None else 0,
                "connections": len(handle.sessions),
                "accepted": handle.accepted,
                "accept_queue": listeners.accept_queue(shard.sock) if shard else None,
                "tls_accept_queue": listeners.accept_queue(shard.tls_sock)
                if shard and shard.tls_sock
                else None,
                "cpu_percent": handle.cpu_percent,
                "rss_bytes": rss,
                "last_report_age": None
                if handle.last_report is None
                else round(now - handle.last_report, 3),
                # draining: seconds until the reload timeout closes its sessions
                "drain_left": None
                if handle.drain_until is None
                else round(max(0.0, handle.drain_until - now), 1),
                **events(handle.counters),
                # bytes the supervisor holds for it, not yet written to its channel
                "outbox_bytes": len(handle.outbox),
            }
        )
        connections += _connections(handle, now)
    return {
        "supervisor": {
            "pid": os.getpid(),
            "uptime": round(now - sup.started, 3),
            "listen": [f"{sup.cfg.host}:{sup.port}"],
            "listen_tls": [] if sup.tls_port is None else [f"{sup.cfg.host}:{sup.tls_port}"],
            "workers": len(sup.active_shards()),
            "control": sup.control.path if sup.control else None,
            "stopping": sup.stopping,
            # every worker's since the start, those that are gone included
            **events(_totals(sup)),
            # the relay between workers (the local backend), shardd/bus_relay.py
            "bus_relay": {"backend": backend_label(sup.cfg.bus), **sup.bus_relay.snapshot()},
        },
        "workers": workers,
        "connection_fields": CONNECTION_FIELDS,
        "connections": connections,
    }


#: a session's values in a status reply, in this order (``connections`` is a
#: list of such rows on the wire; :func:`expand` turns them into maps)
CONNECTION_FIELDS = (
    "shard",
    "worker_pid",
    "id",
    "peer",
    "duration",
    "idle",
    "rx_bytes",
    "tx_bytes",
    "term",
    "client_name",
    "mtts",
    "mtts_flags",
    "cols",
    "rows",
    "encoding",
    "state",
    "protocol_errors",
    "tls",
)


def _connections(handle: WorkerHandle, now: float) -> list[list[Any]]:
    """One worker's sessions as CONNECTION_FIELDS rows."""
    return session_rows(handle.shard, handle.pid, handle.sessions, now)


def session_rows(
    shard: int, pid: int, sessions: Mapping[int, list[Any]], now: float
) -> list[list[Any]]:
    """One process's sessions (id -> [peer, connected_at, entry or None]) as
    CONNECTION_FIELDS rows: a worker's as reported, or a single process's own.

    The hot part of a status request at 100 000 sessions: one list per
    session, built from the entry as reported, without a map in between.
    """
    rows: list[list[Any]] = []
    append = rows.append
    for session_id, (peer, connected_at, entry) in sessions.items():
        if entry is None:  # announced, not yet reported
            entry = _negotiating(session_id, connected_at)
        (
            _id,
            rx,
            tx,
            last_received,
            state,
            term,
            client,
            mtts,
            cols,
            lines,
            encoding,
            errors,
            tls,
        ) = entry
        append(
            [
                shard,
                pid,
                session_id,
                peer,
                round(max(0.0, now - connected_at), 3),
                round(max(0.0, now - last_received), 3),
                rx,
                tx,
                term,
                client,
                mtts,
                [] if mtts is None else _flag_names(mtts),
                cols,
                lines,
                encoding,
                state,
                errors,
                tls,
            ]
        )
    return rows


def _negotiating(session_id: int, connected_at: float) -> list[Any]:
    values: dict[str, Any] = {
        "id": session_id,
        "rx_bytes": 0,
        "tx_bytes": 0,
        "last_received": connected_at,
        "state": "negotiating",
        "term": "",
        "client_name": "",
        "mtts": None,
        "cols": 0,
        "rows": 0,
        "encoding": "",
        "protocol_errors": 0,
        "tls": "",
    }
    return [values[name] for name in ipc.SESSION_FIELDS]


@functools.lru_cache(maxsize=256)
def _flag_names(mtts: int) -> list[str]:
    return flag_names(mtts)


def expand(reply: dict[str, Any]) -> dict[str, Any]:
    """A status reply with each connection as a map of CONNECTION_FIELDS, in place."""
    fields = reply.pop("connection_fields", CONNECTION_FIELDS)
    reply["connections"] = [dict(zip(fields, row, strict=True)) for row in reply["connections"]]
    return reply


def events(counters: Mapping[str, int]) -> dict[str, Any]:
    """A worker's counters as status shows them: refusals by reason, then each event."""
    refused = {k.split(":", 1)[1]: n for k, n in counters.items() if k.startswith("refused:")}
    return {
        "refused": refused,
        "protocol_errors": counters.get("protocol_errors", 0),
        "closed_by_server": {
            reason: counters[reason]
            for reason in ("output_overflow", "idle_timeout", "mccp3_broken")
            if counters.get(reason)
        },
        "shell_errors": counters.get("shell_errors", 0),
        # times the channel to the supervisor filled up: it is behind on reports
        "ipc_pauses": counters.get("ipc_pauses", 0),
        "gmcp_dropped": counters.get("gmcp_dropped", 0),
        "tls_handshake_failures": {
            why: counters[f"tls_handshake_{why}"]
            for why in ("error", "timeout")
            if counters.get(f"tls_handshake_{why}")
        },
        "proxy_header_failures": {
            why: counters[f"proxy_{why}"]
            for why in ("untrusted", "bad_header", "timeout")
            if counters.get(f"proxy_{why}")
        },
        "bus": {
            "in": counters.get(bus.IN, 0),
            "out": counters.get(bus.OUT, 0),
            "delivered": counters.get(bus.DELIVERED, 0),
            "dropped": counters.get(bus.DROPPED, 0),
            "undeliverable": counters.get(bus.UNDELIVERABLE, 0),
            "subscriptions": counters.get(bus.SUBSCRIPTIONS, 0),
        },
        "gc": {
            "collections": [counters.get(f"gc_collections_{g}", 0) for g in range(3)],
            "max_pause_ms": round(counters.get("gc_max_pause_us", 0) / 1000, 1),
        },
    }


def _totals(sup: Supervisor) -> Counter[str]:
    """Every worker's counters since the start, those gone included; the longest
    pause is the longest of any, not a sum."""
    total: Counter[str] = Counter(sup.past_counters)
    for handle in sup.workers.values():
        total.update(handle.counters)
    # a gauge: what live workers hold now
    total[bus.SUBSCRIPTIONS] = sum(
        h.counters.get(bus.SUBSCRIPTIONS, 0) for h in sup.workers.values()
    )
    total["gc_max_pause_us"] = max(
        [
            sup.past_max_pause_us,
            *(h.counters.get("gc_max_pause_us", 0) for h in sup.workers.values()),
        ]
    )
    return total
