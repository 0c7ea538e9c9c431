"""What ``shardd status`` answers: the supervisor's view of its workers and sessions.

Built from what workers reported over their channels (every session's
counters and attributes, as ``workers.ipc`` defines them) plus what the
supervisor reads itself: each worker's CPU and memory (psutil) and each
shard's accept queue (TCP_INFO). The field names are those of
``shardd status --json``; :mod:`shardd.status_view` renders them for people.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psutil

from shardd import listeners
from workers import ipc
from workers.telnet.mtts import flag_names

if TYPE_CHECKING:
    from shardd.supervisor import Supervisor, WorkerHandle


def collect(sup: Supervisor) -> dict[str, Any]:
    """The whole picture, in the field names ``shardd status --json`` shows."""
    now = time.monotonic()
    workers = []
    connections = []
    for handle in sorted(sup.workers.values(), key=lambda h: (h.shard, h.started_at)):
        shard = sup.shard(handle.shard)
        cpu = rss = None
        if handle.process is not None:
            try:
                with handle.process.oneshot():
                    cpu = handle.process.cpu_percent(None)
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
                "cpu_percent": cpu,
                "rss_bytes": rss,
                "last_report_age": None
                if handle.last_report is None
                else round(now - handle.last_report, 3),
                **events(handle.counters),
            }
        )
        for session_id, (peer, connected_at, entry) in handle.sessions.items():
            connections.append(_connection(handle, session_id, peer, connected_at, entry, now))
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
        },
        "workers": workers,
        "connections": connections,
    }


def _connection(
    handle: WorkerHandle,
    session_id: int,
    peer: str,
    connected_at: float,
    entry: list[Any] | None,
    now: float,
) -> dict[str, Any]:
    if entry is None:  # announced, not yet reported
        entry = [session_id, 0, 0, connected_at, "negotiating", "", "", None, 0, 0, "", 0, ""]
    fields = dict(zip(ipc.SESSION_FIELDS, entry, strict=True))
    mtts = fields["mtts"]
    return {
        "shard": handle.shard,
        "worker_pid": handle.pid,
        "id": session_id,
        "peer": peer,
        "duration": round(max(0.0, now - connected_at), 3),
        "idle": round(max(0.0, now - fields["last_received"]), 3),
        "rx_bytes": fields["rx_bytes"],
        "tx_bytes": fields["tx_bytes"],
        "term": fields["term"],
        "client_name": fields["client_name"],
        "mtts": mtts,
        "mtts_flags": [] if mtts is None else flag_names(mtts),
        "cols": fields["cols"],
        "rows": fields["rows"],
        "encoding": fields["encoding"],
        "state": fields["state"],
        "protocol_errors": fields["protocol_errors"],
        "tls": fields["tls"],
    }


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
        "gmcp_dropped": counters.get("gmcp_dropped", 0),
        "tls_handshake_failures": {
            why: counters[f"tls_handshake_{why}"]
            for why in ("error", "timeout")
            if counters.get(f"tls_handshake_{why}")
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
    total["gc_max_pause_us"] = max(
        [
            sup.past_max_pause_us,
            *(h.counters.get("gc_max_pause_us", 0) for h in sup.workers.values()),
        ]
    )
    return total
