"""What a reload (HUP, ``shardd reload``) re-reads, keeps, and reports.

A reload reads ``--config`` again, merged with the flags the server was
started with (they still win), checks in a probe that the shell and protocol
import (:mod:`shardd.shell_probe`), and then starts a new worker per shard,
one shard at a time; each old worker drains (its sessions go on until they
end or ``--reload-timeout`` passes). Settings that only a restart can change
are named in the log and keep their value. The supervisor drives the steps
(``Supervisor.begin_reload``); this module holds what they share.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shardd.config import ServeConfig
from shardd.shell_probe import ShellProbe

log = logging.getLogger("shardd.supervisor")

#: settings bound into the supervisor's sockets, files or process: a reload
#: names them when they changed and keeps the running value (``workers``: the
#: count at start; ``shardd workers +N`` changes it live)
RESTART_ONLY = (
    "host",
    "port",
    "tls_port",
    "workers",
    "backlog",
    "share_port",
    "user",
    "group",
    "control",
    "pidfile",
    "log_format",
    "log_file",
    "metrics",  # its socket is bound once, before privileges drop
    # old and new workers drain side by side: on two backends they would be
    # two buses, and their players could not reach each other
    "bus",
)

#: how a reload's outcome is told to whoever asked (ok, the one line)
Answer = Callable[[bool, str], None]


def keep_restart_only(running: ServeConfig, fresh: ServeConfig, source: str | None) -> list[str]:
    """Give ``fresh`` ``running``'s value of every restart-only setting; the
    lines that say which ones differed."""
    lines = []
    where = f" in {source}" if source else ""
    for name in RESTART_ONLY:
        before, after = getattr(running, name), getattr(fresh, name)
        if before != after:
            key = name.replace("_", "-")
            lines.append(
                f"reload: {key} changed {_show(before)} -> {_show(after)}{where}; "
                f"it needs a restart, keeping {_show(before)}"
            )
            setattr(fresh, name, before)
    return lines


def _show(value: object) -> str:
    return "unset" if value is None else str(value)


@dataclass
class Reload:
    """One reload under way: its new settings, then the shards still to roll."""

    cfg: ServeConfig
    tls_context: ssl.SSLContext | None
    probe: ShellProbe | None
    answers: list[Answer] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    rolling: bool = False  # the probe passed: new workers are starting
    rolled: int = 0  # shards whose new worker serves

    def finish(self, ok: bool, message: str) -> None:
        for answer in self.answers:
            answer(ok, message)
        self.answers.clear()
