"""``--verify``: does the server's ``status`` agree with what the clients saw?

At a scenario's verify barrier every client process holds its sessions and
sends nothing more. Each one lists, per session, what it knows for certain:
its address (the server's ``peer``), the bytes it sent and received, and the
terminal type and window size it announced. The parent compares that with
``status --json`` and asks again, every :data:`ROUND_EVERY`, until every
session agrees or the settle interval has passed: a worker reports every
``--stats-interval``, so agreement may take a moment, but it must come.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.telnet.client import TelnetClientSession

#: a session as its client saw it: [peer, rx_bytes, tx_bytes, term, cols, rows]
Record = list[Any]

ROUND_EVERY = 0.5
#: disagreements shown in the summary, the first few
EXAMPLES = 5
# in the summary's failures: a run whose server miscounts does not pass
DISAGREE = "status disagrees"
UNREADABLE = "status unreadable"


class CountedSession:
    """A load-test session that counts its bytes on the wire, telnet commands
    included, as the server counts them, and can say what it knows of itself."""

    __slots__ = ("rx", "tx")

    transport: asyncio.Transport
    telnet: TelnetClientSession
    rx: int
    tx: int

    def write(self, data: bytes) -> None:
        self.tx += len(data)
        self.transport.write(data)

    def record(self) -> Record:
        """What this session knows of itself, for ``--verify``."""
        term = self.telnet.terminal
        sockname = self.transport.get_extra_info("sockname")
        return record(sockname, self.rx, self.tx, term.term, term.cols, term.rows)


def record(peer: tuple[Any, ...], rx: int, tx: int, term: str, cols: int, rows: int) -> Record:
    """One session's record; ``peer`` is the client socket's own address."""
    host, port = peer[0], peer[1]
    return [f"{host}:{port}", rx, tx, term.lower(), cols, rows]


@dataclass
class Verification:
    """The latest comparison, and how long agreement took."""

    settle: float
    sessions: int = 0
    disagree: int = 0
    rounds: int = 0
    seconds: float = 0.0
    #: which field disagreed, how often (``missing``: not in status at all)
    fields: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def compare(self, records: Iterable[Record], connections: Sequence[dict[str, Any]]) -> None:
        """Compare every record with the server's connection of the same peer."""
        by_peer = {c["peer"]: c for c in connections}
        self.rounds += 1
        self.sessions = self.disagree = 0
        self.fields = Counter()
        self.examples = []
        for peer, rx, tx, term, cols, rows in records:
            self.sessions += 1
            conn = by_peer.get(peer)
            if conn is None:
                wrong = {"missing": (None, peer)}
            else:
                wrong = {
                    name: (conn[name], want)
                    for name, want in (
                        # the server's bytes in are the client's bytes out
                        ("rx_bytes", tx),
                        ("tx_bytes", rx),
                        ("term", term),
                        ("cols", cols),
                        ("rows", rows),
                        ("state", "shell"),
                    )
                    if conn[name] != want
                }
            if wrong:
                self.disagree += 1
                self.fields.update(wrong.keys())
                if len(self.examples) < EXAMPLES:
                    self.examples.append(
                        {
                            "peer": peer,
                            **{k: {"server": s, "client": c} for k, (s, c) in wrong.items()},
                        }
                    )

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "disagree": self.disagree,
            "fields": dict(self.fields),
            "examples": self.examples,
            "rounds": self.rounds,
            "seconds": round(self.seconds, 3),
            "settle": self.settle,
            "error": self.error,
        }


def rows(verify: dict[str, Any]) -> list[tuple[str, str]]:
    """The verification's lines in the summary table."""
    if verify["error"]:
        return [("status check", f"not done: {verify['error']}")]
    line = (
        f"{verify['sessions'] - verify['disagree']} of {verify['sessions']} sessions agree "
        f"with the server's status"
    )
    if verify["disagree"]:
        fields = ", ".join(f"{k} {n}" for k, n in sorted(verify["fields"].items()))
        line += f"; {verify['disagree']} disagree after {verify['settle']:g} s ({fields})"
    else:
        line += f" (after {verify['seconds']:.1f} s, {verify['rounds']} rounds)"
    return [("status check", line)]
