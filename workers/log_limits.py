"""Warnings about clients, rate-limited so that no client can flood the log.

One malformed sequence used to be one WARNING line, so 1 MB of ``IAC 0x01``
pairs wrote 55 MB of log. Now, within each window of ``interval`` seconds,
a peer host gets its first ``per_host`` lines logged as they come, and the
whole process at most ``total`` lines (an attacker has many addresses); the
rest are counted, and when the window ends one summary line per host says
how many were held back (at most ``MAX_SUMMARY_LINES`` of them, then one line
for all other hosts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

PER_HOST = 5
TOTAL = 50
INTERVAL = 10.0
MAX_HOSTS = 4096  # hosts counted in one window; past it, they share one count
MAX_SUMMARY_LINES = 10
_OTHERS = "other peers"


class WarningLimiter:
    """Logs warnings about peers, at most so many per host and in all, per window."""

    def __init__(
        self,
        per_host: int = PER_HOST,
        total: int = TOTAL,
        interval: float = INTERVAL,
    ) -> None:
        self.per_host = per_host
        self.total = total
        self.interval = interval
        self._logged: dict[str, int] = {}  # host -> lines logged this window
        self._held: dict[str, int] = {}  # host -> lines held back this window
        self._held_level = logging.DEBUG  # the highest level held back this window
        self._logged_total = 0
        self._window_end = 0.0
        self._logger: logging.Logger | None = None
        self._flush_timer: asyncio.TimerHandle | None = None

    def warning(
        self,
        log: logging.Logger,
        host: str,
        msg: str,
        *args: Any,
        level: int = logging.WARNING,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """``log.log(level, msg, *args, extra=extra)`` unless ``host`` or the process
        is over its share. ``extra``: fields for JSON logs (``peer``, ``shard``...)."""
        now = time.monotonic()
        if now >= self._window_end:
            self.flush()
            self._window_end = now + self.interval
        logged = self._logged.get(host, 0)
        if logged < self.per_host and self._logged_total < self.total:
            if host in self._logged or len(self._logged) < MAX_HOSTS:
                self._logged[host] = logged + 1
            self._logged_total += 1
            log.log(level, msg, *args, extra=extra)
            return
        key = host if host in self._held or len(self._held) < MAX_HOSTS else _OTHERS
        self._held[key] = self._held.get(key, 0) + 1
        self._held_level = max(self._held_level, level)
        self._logger = log
        if self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the next warning after the window flushes
                return
            self._flush_timer = loop.call_at(
                loop.time() + (self._window_end - now), self._flush_on_time
            )

    def flush_if_over(self, now: float) -> None:
        """For a caller with no event loop (the supervisor), called every so
        often: log what was held back once its window is over."""
        if self._held and now >= self._window_end:
            self._flush_on_time()

    def _flush_on_time(self) -> None:
        self._flush_timer = None
        self.flush()
        self._window_end = 0.0

    def flush(self) -> None:
        """Log what was held back in this window, and start a new one."""
        held, self._held = self._held, {}
        # the summary is as loud as the loudest line it stands for: held-back
        # INFO lines (failed TLS handshakes) stay INFO, shell failures ERROR
        level, self._held_level = self._held_level, logging.DEBUG
        self._logged.clear()
        self._logged_total = 0
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        log = self._logger
        if not held or log is None:
            return
        ordered = sorted(held.items(), key=lambda item: -item[1])
        rest = ordered[MAX_SUMMARY_LINES:]
        for host, count in ordered[:MAX_SUMMARY_LINES]:
            log.log(
                level,
                "%s: %d more warnings about this peer in the last %.0fs, not logged",
                host,
                count,
                self.interval,
            )
        if rest:
            log.log(
                level,
                "%d more warnings about %d more peers in the last %.0fs, not logged",
                sum(count for _host, count in rest),
                len(rest),
                self.interval,
            )


#: The process's limiter: every session's protocol warnings go through it.
PROTOCOL_WARNINGS = WarningLimiter()
