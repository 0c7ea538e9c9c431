"""What the hostile scenario's summary shows: its table, and the server's workers.

The parent process reads the workers from the control socket before and
after the run (:func:`watch_workers` is the scenario's ``watch_workers``):
a worker restarted in between is a failure.
"""

from __future__ import annotations

from typing import Any

from shardd.loadtest.latencies import format_ms
from shardd.loadtest.scenario import Rows, Worker

SERVER = "server"
RESTART = "worker restart"
NO_STATUS = "no status after the run"


def _restarts(before: list[Worker], after: list[Worker]) -> int:
    """Restarts per shard: what its counter says, or 1 if only its pid changed.

    A pid that changed without the counter (a worker died and is not yet
    reaped, or its shard has no worker listed) is one restart; the counter
    and the pid together are the same restart, counted once.
    """
    now = {w["shard"]: w for w in after}  # the last listed: the newest worker
    total = 0
    for old in before:
        new = now.get(old["shard"])
        grown = 0 if new is None else new["restarts"] - old["restarts"]
        changed = new is None or new["pid"] != old["pid"]
        total += max(grown, 1 if changed else 0)
    return total


def _rss(workers: list[Worker]) -> int:
    return sum(w.get("rss_bytes") or 0 for w in workers)


def _brief(workers: list[Worker]) -> list[dict[str, Any]]:
    keys = ("shard", "pid", "state", "restarts", "rss_bytes")
    return [{k: w.get(k) for k in keys} for w in workers]


def watch_workers(
    summary: dict[str, Any], before: list[Worker], after: list[Worker] | None
) -> None:
    """The workers' restarts (failures) and memory, into the summary."""
    failures = summary["failures"]
    phase = summary["failures_by_phase"].setdefault(SERVER, {})
    if after is None:
        failures[NO_STATUS] = phase[NO_STATUS] = 1
        restarts = None
    else:
        restarts = _restarts(before, after)
        if restarts:
            failures[RESTART] = phase[RESTART] = restarts
    if not phase:
        del summary["failures_by_phase"][SERVER]
    summary["workers"] = {
        "restarts": restarts,
        "rss_before_bytes": _rss(before),
        "rss_after_bytes": None if after is None else _rss(after),
        "before": _brief(before),
        "after": None if after is None else _brief(after),
    }


def _by_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) or "-"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def rows(s: dict[str, Any]) -> Rows:
    rtt = s["bystander_rtt_ms"]
    table = [
        ("seed, kinds", f"{s['seed']}, {','.join(s['kinds'])}"),
        (
            "sessions",
            f"{s['sessions_run']} of {s['sessions']}, {s['concurrency']} at once: "
            + _by_kind(s["sessions_by_kind"]),
        ),
        (
            "inputs",
            f"{s['inputs']} sent of {s['inputs_planned']} planned "
            f"(--inputs {s['inputs_limit']}), {_mib(s['bytes_sent'])}",
        ),
        ("", _by_kind(s["inputs_by_kind"])),
        ("survived", f"{s['survived']} probed sessions: {_by_kind(s['survived_by_kind'])}"),
        (
            "ended unexpectedly",
            f"{s['ended_unexpectedly']}: {_by_kind(s['ended_unexpectedly_by_kind'])}",
        ),
        ("unresponsive", f"{s['unresponsive']}: {_by_kind(s['unresponsive_by_kind'])}"),
        (
            "bystanders",
            f"{s['bystanders']}, {s['bystander_probes']} probes, round trip ms "
            + (
                "-" if rtt["max"] is None else format_ms({k: rtt[k] for k in ("p50", "p99", "max")})
            ),
        ),
        ("elapsed", f"{s['elapsed']:.3f} s (--duration {s['duration']:g})"),
    ]
    workers = s.get("workers")
    if workers:
        after = workers["after"]
        table += [
            ("worker restarts", "-" if workers["restarts"] is None else f"{workers['restarts']}"),
            (
                "worker pids",
                " ".join(str(w["pid"]) for w in workers["before"])
                + " -> "
                + ("?" if after is None else " ".join(str(w["pid"]) for w in after)),
            ),
            (
                "worker rss",
                f"{_mib(workers['rss_before_bytes'])} before, "
                + ("?" if after is None else f"{_mib(workers['rss_after_bytes'])} after"),
            ),
        ]
    return table
