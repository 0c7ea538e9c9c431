"""What every closed session adds to its worker's counters: bytes and duration.

A session shorter than a report interval is never reported on its own, so
the supervisor cannot add closed sessions up itself: each worker keeps the
totals, exact, in the counters its reports carry (``workers.ipc`` REPORT),
and the supervisor serves them as Prometheus counters and a histogram
(:mod:`shardd.metrics`).
"""

from __future__ import annotations

from collections import Counter

from workers.server_base import BaseServer

#: Upper bounds, in seconds, of the duration histogram's buckets: a telnet
#: session lasts from a probe's second to a player's day.
DURATION_BUCKETS = (1, 10, 60, 300, 1800, 3600, 14400, 86400)

#: the counter names, for the supervisor to read them by
CLOSED_RX = "closed_rx_bytes"
CLOSED_TX = "closed_tx_bytes"
DURATION_COUNT = "duration_count"
DURATION_SUM_MS = "duration_sum_ms"  # counters are whole numbers
DURATION_LE = tuple(f"duration_le_{bound}" for bound in DURATION_BUCKETS)


def count_closed(counters: Counter[str], protocol: BaseServer) -> None:
    """Add a session that has just closed to ``counters``.

    The buckets are cumulative, as Prometheus's are: a 5 s session counts in
    every bucket from ``duration_le_10`` up (at most 8 increments a close).
    """
    counters[CLOSED_RX] += protocol.rx_bytes
    counters[CLOSED_TX] += protocol.tx_bytes
    duration = protocol.duration
    counters[DURATION_COUNT] += 1
    counters[DURATION_SUM_MS] += round(duration * 1000)
    for bound, name in zip(DURATION_BUCKETS, DURATION_LE, strict=True):
        if duration <= bound:
            counters[name] += 1
