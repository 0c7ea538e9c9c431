"""Whether a new connection is served: the server's admission check.

Checked in this order, each refusal counted by its reason and answered with
one line before the connection is closed:

- ``rate``: more than ``max_connect_rate_per_ip`` connections from the
  address in the current second, in every worker together;
- ``fds``: accepting would leave fewer than ``fd_reserve`` file descriptors
  free in this worker, so that at the limit a newcomer still gets a line
  instead of a silent close;
- ``full``: ``max_sessions`` sessions in every worker together;
- ``per_ip``: ``max_sessions_per_ip`` sessions from the address, in every
  worker together.

The counts across workers are in shared memory (:mod:`workers.peer_table`).
Lines about refusals (INFO) are rate-limited like protocol warnings; a server at
its own limit (``fds``, ``full``) also warns that it is.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workers.arrival import Arrival, Refusal
from workers.log_limits import PROTOCOL_WARNINGS
from workers.peer_table import PeerCounts
from workers.plural import count

if TYPE_CHECKING:
    from workers.serving import Server

log = logging.getLogger("shardd.admission")

SERVER_FULL = "The server is full; please try again later.\r\n"
TOO_MANY_SESSIONS = "Too many sessions from your address; close one and try again.\r\n"
TOO_FAST = "Too many connections from your address; wait a moment and try again.\r\n"
_SERVER = "(this server)"  # the limiter's key for warnings not about one peer


@dataclass(frozen=True)
class AdmissionLimits:
    #: sessions in every worker together; 0: as many as file descriptors allow
    max_sessions: int = 0
    #: sessions from one address in every worker together; 0: no limit
    max_sessions_per_ip: int = 20
    #: connections from one address per second, in every worker; 0: no limit
    max_connect_rate_per_ip: int = 10
    #: file descriptors a worker keeps free, to refuse with a line at its limit
    fd_reserve: int = 32


class Admission:
    """The admission check of one server (``Server.admit``)."""

    def __init__(self, server: Server, counts: PeerCounts, limits: AdmissionLimits) -> None:
        self.server = server
        self.counts = counts
        self.limits = limits
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        # what the worker holds besides its connections: sockets, pipes, logs
        self.base_fds = _open_fds()

    def __call__(self, arrival: Arrival) -> Refusal | None:
        limits = self.limits
        counts = self.counts
        host = arrival.host
        if limits.max_connect_rate_per_ip:
            # CLOCK_MONOTONIC is one clock for every process: the seconds agree
            recent = counts.connected(host, int(time.monotonic()))
            if recent > limits.max_connect_rate_per_ip:
                return self._refuse(arrival, "rate", TOO_FAST, f"{recent} connections this second")
        in_use = self.base_fds + len(self.server.sessions.live) + self.server.arriving
        if in_use + limits.fd_reserve >= self.fd_limit:
            self._at_limit(f"{in_use} of {self.fd_limit} file descriptors in use")
            return self._refuse(arrival, "fds", SERVER_FULL, "no file descriptors to spare")
        if limits.max_sessions and counts.sessions() >= limits.max_sessions:
            self._at_limit(f"{count(limits.max_sessions, 'session')}, the --max-sessions limit")
            return self._refuse(arrival, "full", SERVER_FULL, "the server is full")
        if limits.max_sessions_per_ip:
            held = counts.host_sessions(host)
            if held >= limits.max_sessions_per_ip:
                why = f"{count(held, 'session')} from this address"
                return self._refuse(arrival, "per_ip", TOO_MANY_SESSIONS, why)
        counts.add_session(host)
        return None

    def release(self, host: str) -> None:
        """A connection this check let in has ended."""
        self.counts.remove_session(host)

    def _refuse(self, arrival: Arrival, reason: str, line: str, why: str) -> Refusal:
        # INFO: turning a client away is the limits doing their job; a server
        # at its own limit is the operator's business, and _at_limit warns
        peername = arrival.peername
        PROTOCOL_WARNINGS.warning(
            log,
            arrival.host,
            "%s: refused: %s",
            arrival.peer,
            why,
            level=logging.INFO,
            extra={
                "event": "refused",
                "reason": reason,
                "peer": arrival.host,
                "peer_port": peername[1] if isinstance(peername, tuple) else None,
                "shard": self.server.sessions.shared_extra.get("shard"),
            },
        )
        return Refusal(reason, line)

    def _at_limit(self, what: str) -> None:
        PROTOCOL_WARNINGS.warning(log, _SERVER, "at the limit: %s; refusing newcomers", what)


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16
