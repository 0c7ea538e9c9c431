"""The human view of ``shardd status``: a workers table, then the sessions.

Past ``SESSION_ROWS`` sessions it summarises (counts per shard and state, the
longest and the most idle) instead of printing thousands of rows; ``--json``
always carries every session.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from workers.plural import count

SESSION_ROWS = 50
TOP = 5


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{count}B"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _session_rows(sessions: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(s["shard"]),
            str(s["id"]),
            s["peer"],
            _duration(s["duration"]),
            _duration(s["idle"]),
            _bytes(s["rx_bytes"]),
            _bytes(s["tx_bytes"]),
            s["term"] or "-",
            s.get("client_name") or "-",
            f"{s['cols']}x{s['rows']}" if s["cols"] else "-",
            s["encoding"] or "-",
            s.get("tls") or "-",
        ]
        for s in sessions
    ]


_SESSION_HEADERS = [
    "SHARD",
    "ID",
    "PEER",
    "DURATION",
    "IDLE",
    "IN",
    "OUT",
    "TERM",
    "CLIENT",
    "SIZE",
    "ENCODING",
    "TLS",
]


def _events(counts: dict[str, Any]) -> str:
    """Refusals by reason, protocol errors, sessions the server closed: what happened."""
    parts = []
    refused = counts.get("refused") or {}
    if refused:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(refused.items()))
        parts.append(f"refused {sum(refused.values())} ({reasons})")
    if counts.get("protocol_errors"):
        parts.append(count(counts["protocol_errors"], "protocol error"))
    closed = counts.get("closed_by_server") or {}
    if closed:
        parts.append("closed " + ", ".join(f"{n} for {why}" for why, n in sorted(closed.items())))
    tls = counts.get("tls_handshake_failures") or {}
    if tls:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(tls.items()))
        parts.append(count(sum(tls.values()), "TLS handshake") + f" failed ({reasons})")
    proxy = counts.get("proxy_header_failures") or {}
    if proxy:
        reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(proxy.items()))
        parts.append(f"{sum(proxy.values())} closed before a valid PROXY header ({reasons})")
    if counts.get("shell_errors"):
        parts.append(count(counts["shell_errors"], "shell error"))
    if counts.get("gmcp_dropped"):
        parts.append(count(counts["gmcp_dropped"], "GMCP message") + " dropped unread")
    gc = counts.get("gc") or {}
    if gc.get("max_pause_ms"):
        parts.append(f"longest GC pause {gc['max_pause_ms']} ms")
    return "; ".join(parts)


def _bus_lines(sup: dict[str, Any], workers: list[dict[str, Any]]) -> list[str]:
    """The message bus: each worker's messages, then the supervisor's relay."""
    relay = sup.get("bus_relay")
    if relay is None:
        return []
    lines = ["", f"message bus ({relay['backend']}):"]
    for w in workers:
        b = w.get("bus") or {}
        lines.append(
            f"  shard {w['shard']} (pid {w['pid']}): {b.get('out', 0)} out, {b.get('in', 0)} in, "
            f"{b.get('delivered', 0)} delivered, {b.get('dropped', 0)} dropped, "
            f"{b.get('subscriptions', 0)} subscriptions"
        )
    lines.append(
        f"  relay: {relay['channels']} channels, {relay['subscriptions']} worker subscriptions, "
        f"{relay['relayed']} frames relayed, {relay['dropped']} dropped (worker behind)"
    )
    return lines


def render(status: dict[str, Any]) -> str:
    sup = status["supervisor"]
    workers = status["workers"]
    sessions = status["connections"]
    lines = [
        f"shardd {'single process' if sup.get('single_process') else 'supervisor'} "
        f"{sup['pid']}, up {_duration(sup['uptime'])}, "
        f"listening on {', '.join(sup['listen'])}"
        + (f", TLS on {', '.join(sup['listen_tls'])}" if sup.get("listen_tls") else "")
        + f", {count(sup['workers'], 'shard')}"
        + (f" ({sup['stopping']} stop under way)" if sup.get("stopping") else ""),
        "",
    ]
    lines += _table(
        [
            "SHARD",
            "PID",
            "STATE",
            "RESTARTS",
            "SESSIONS",
            "ACCEPTED",
            "QUEUE",
            "CPU%",
            "RSS",
            "REPORT",
            "REFUSED",
            "ERRORS",
        ],
        [
            [
                str(w["shard"]),
                str(w["pid"]),
                w["state"],
                str(w["restarts"]),
                str(w["connections"]),
                str(w["accepted"]),
                "-" if w["accept_queue"] is None else str(w["accept_queue"]),
                "-" if w["cpu_percent"] is None else f"{w['cpu_percent']:.1f}",
                _bytes(w["rss_bytes"]),
                "-" if w["last_report_age"] is None else f"{w['last_report_age']:.1f}s ago",
                str(sum(w.get("refused", {}).values())),
                str(w.get("protocol_errors", 0)),
            ]
            for w in workers
        ],
    )
    happened = _events(sup)
    if happened:
        lines += ["", f"since the start: {happened}"]
    lines += _bus_lines(sup, workers)
    lines.append("")
    if not sessions:
        lines.append("no sessions")
    elif len(sessions) <= SESSION_ROWS:
        lines.append(count(len(sessions), "session"))
        lines += _table(
            _SESSION_HEADERS, _session_rows(sorted(sessions, key=lambda s: (s["shard"], s["id"])))
        )
    else:
        per_shard = Counter(s["shard"] for s in sessions)
        states = Counter(s.get("state", "?") for s in sessions)
        lines.append(
            count(len(sessions), "session")
            + ": "
            + ", ".join(f"shard {k}: {v}" for k, v in sorted(per_shard.items()))
            + "; "
            + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
        )
        lines.append(
            f"bytes in {_bytes(sum(s['rx_bytes'] for s in sessions))}, "
            f"out {_bytes(sum(s['tx_bytes'] for s in sessions))}"
        )
        lines.append("")
        lines.append(f"longest {TOP}:")
        lines += _table(
            _SESSION_HEADERS, _session_rows(sorted(sessions, key=lambda s: -s["duration"])[:TOP])
        )
        lines.append("")
        lines.append(f"most idle {TOP}:")
        lines += _table(
            _SESSION_HEADERS, _session_rows(sorted(sessions, key=lambda s: -s["idle"])[:TOP])
        )
        lines.append("")
        lines.append("(shardd status --json lists every session)")
    return "\n".join(lines)
