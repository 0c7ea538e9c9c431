"""The chat scenario: players in rooms of a talker, each saying a line at a fixed rate.

``--sessions`` players (see :mod:`~shardd.loadtest.talker_players`) log in
to a talker (``shardd serve --shell talker``) and join rooms of
``--room-size``. Once every client process has its players in their rooms,
each player says one line every ``1 / --rate`` seconds for ``--duration``,
the players' first lines spread evenly over the first period (not all at
once). A line is ``say m<seq>/<total>``: its sequence number among the
player's lines and how many it will say, so every member knows when it
has heard a sender's last line.

The sender notes when it wrote each line; each member notes when the line
arrived (``[ROOM] NAME says: m<seq>/<total>``). The parent merges them per
message: its delivery latency is the last member's receive time minus the
send time (CLOCK_MONOTONIC, one clock for all processes). After the last
line, players wait until each has heard every other member's last line,
or ``--drain`` seconds. A message some member of the room (as it was when
the lines started) never heard is lost, and a failure; so is a player the
server drops. Messages of one sender that arrive out of order, twice, or
in the wrong room are counted too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardd.config import ConfigError
from shardd.loadtest.hooks import Hooks
from shardd.loadtest.latencies import Latencies, format_ms
from shardd.loadtest.results import Result
from shardd.loadtest.scenario import (
    BenchCase,
    BenchSettings,
    Param,
    Rows,
    Scenario,
    concurrency_param,
    duration_param,
    number,
    setup_rounds,
    whole,
)
from shardd.loadtest.sessions import check_positive
from shardd.loadtest.talker_players import (
    SEQ_BITS,
    Player,
    Players,
    leave,
    log_in,
    message_id,
)
from shardd.loadtest.target import CLOSE_GRACE, Target, rotation

_now = time.monotonic

#: the kind a lost message counts as among the failures
LOST = "message lost"
#: after every player's join is confirmed, before the first line: a join the
#: talker confirmed may still be on its way to the other workers
JOIN_SETTLE = 0.5
#: a player's lines a second, at most: below the talker's own allowance (5 a
#: second, a burst of 10: workers/talker.py), as a load test measures delivery,
#: not the limit; a line refused all the same counts as "talking too fast"
MAX_RATE = 4.0
#: the bench's configuration: small enough for its time budget
BENCH_SESSIONS = 200
BENCH_ROOM_SIZE = 20
BENCH_RATE = 1.0


@dataclass
class ChatResult(Result):
    """The chat scenario: what was said, what was heard, merged per message by ``summary``."""

    sessions: int
    room_size: int
    rate: float
    duration: float
    drain: float
    #: the run's indexes of the players that were in their rooms when the lines started
    members: list[int] = field(default_factory=list)
    #: [message id, send time] of every line said
    sent: list[list[float]] = field(default_factory=list)
    #: [message id, members that heard it, the last one's receive time]
    receipts: list[list[float]] = field(default_factory=list)
    out_of_order: int = 0
    stray: int = 0
    #: waiting for the last lines after the sending phase, the longest of the processes
    drained: float = 0.0
    login: Latencies = field(default_factory=Latencies, repr=False)
    failures: Counter[str] = field(default_factory=Counter)
    failures_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)

    def merge(self, other: ChatResult) -> ChatResult:
        # every process has the run's --sessions: each takes its own indexes of it
        self.members += other.members
        self.sent += other.sent
        self.receipts += other.receipts
        self.out_of_order += other.out_of_order
        self.stray += other.stray
        self.duration = max(self.duration, other.duration)
        self.drained = max(self.drained, other.drained)
        self.login.merge(other.login)
        self._merge_common(other)
        return self

    def summary(self) -> dict[str, Any]:
        per_room = Counter(m // self.room_size for m in self.members)
        heard: dict[int, list[float]] = {}
        for key, count, at in self.receipts:
            known = heard.get(int(key))
            if known is None:
                heard[int(key)] = [count, at]
            else:
                known[0] += count
                known[1] = max(known[1], at)
        latency = Latencies()
        expected = receipts = delivered = lost = duplicates = 0
        # where the losses were: a room that lost a member's subscription loses
        # every line after; a queue that overflowed loses a few here and there
        lost_rooms: set[int] = set()
        for key, sent_at in self.sent:
            sender = int(key) >> SEQ_BITS
            others = per_room[sender // self.room_size] - 1
            count, last = heard.pop(int(key), (0, 0.0))
            expected += others
            receipts += int(count)
            if count >= others:
                delivered += 1
                duplicates += int(count) - others
                if others:
                    latency.add(max(last - sent_at, 0.0))
            else:
                lost += 1
                lost_rooms.add(sender // self.room_size)
        # heard, yet said by nobody of the run: a process's sends are missing
        stray = self.stray + sum(int(c) for c, _at in heard.values())
        sent = len(self.sent)
        return {
            "scenario": "chat",
            "sessions": self.sessions,
            "room_size": self.room_size,
            "rate": self.rate,
            "ready": len(self.members),
            "rooms": len(per_room),
            "duration": round(self.duration, 3),
            "drained": round(self.drained, 3),
            "sent": sent,
            "expected_receipts": expected,
            "receipts": receipts,
            "receipts_per_s": round(receipts / self.duration, 1) if self.duration else 0.0,
            "delivered": delivered,
            "lost": lost,
            "lost_pct": round(100 * lost / sent, 3) if sent else 0.0,
            "rooms_with_losses": len(lost_rooms),
            "duplicates": duplicates,
            "out_of_order": self.out_of_order,
            "stray": stray,
            "latency_ms": latency.summary_ms(),
            "login_ms": self.login.summary_ms(),
            **self._common("delivery", {LOST: lost}),
        }


def room_members(index: int, sessions: int, room_size: int) -> int:
    """How many players the run puts in the room of player ``index``."""
    first = index // room_size * room_size
    return min(sessions, first + room_size) - first


def lines_of(index: int, sessions: int, rate: float, duration: float) -> tuple[float, int]:
    """Player ``index``'s first line (seconds after the start) and how many it says."""
    offset = index / sessions / rate
    return offset, max(1, math.ceil((duration - offset) * rate - 1e-9))


async def chat(
    host: str,
    port: int,
    *,
    sessions: int = 200,
    room_size: int = 20,
    rate: float = 1.0,
    duration: float = 10.0,
    concurrency: int = 100,
    drain: float = 5.0,
    connect_timeout: float = 10.0,
    negotiation_timeout: float = 10.0,
    sources: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
    hooks: Hooks | None = None,
    tls: bool = False,
) -> ChatResult:
    """Players in rooms of ``room_size`` saying ``rate`` lines a second for ``duration``.

    ``share`` (index, count): this process's players are the run's numbers
    index, index + count, ... below ``sessions``.
    """
    target = Target.resolve(host, port, tls=tls)
    locals_ = [target.source(s) for s in sources]
    check_positive(
        sessions=sessions,
        room_size=room_size,
        rate=rate,
        duration=duration,
        concurrency=concurrency,
        drain=drain,
        connect_timeout=connect_timeout,
        negotiation_timeout=negotiation_timeout,
    )
    hooks = hooks or Hooks()
    players = Players(negotiation_timeout, room_size)
    tally = players.tally
    start, step = share
    mine = range(start, sessions, step)
    said: list[list[float]] = []
    hooks.snapshot = lambda: {
        "players": sum(1 for p in players.ready if not p.closing),
        "said": len(said),
        "heard": players.heard,
        "failures": sum(tally.failures.values()),
    }
    ready = await log_in(
        players,
        mine,
        concurrency,
        target,
        rotation(locals_, share),
        connect_timeout,
        negotiation_timeout,
        hooks,
    )
    members = [p.index for p in ready]
    await hooks.barrier("ready")
    await hooks.pause(JOIN_SETTLE)
    players.expect_senders = lambda p: room_members(p.index, sessions, room_size) - 1
    players.wait_for(p for p in ready if players.expect_senders(p) > 0)
    loop = players.loop
    began = loop.time()

    def say(player: Player, offset: float, seq: int, total: int) -> None:
        if player.closing or hooks.interrupted.is_set():
            return
        said.append([message_id(player.index, seq), _now()])
        player.write_line(f"say m{seq}/{total}")
        if seq + 1 < total:
            loop.call_at(began + offset + (seq + 1) / rate, say, player, offset, seq + 1, total)

    for player in ready:
        offset, total = lines_of(player.index, sessions, rate, duration)
        loop.call_at(began + offset, say, player, offset, 0, total)
    started = _now()
    await hooks.pause(duration)
    elapsed = _now() - started
    drained = 0.0
    if not hooks.interrupted.is_set():
        waited = _now()
        try:
            async with asyncio.timeout(drain):
                await players.all_heard.wait()
        except TimeoutError:
            pass
        drained = _now() - waited
    await hooks.barrier("heard")
    await leave(players)
    return ChatResult(
        sessions,
        room_size,
        rate,
        elapsed,
        drain,
        members=members,
        sent=said,
        receipts=[[k, c, t] for k, (c, t) in players.receipts.items()],
        out_of_order=players.out_of_order,
        stray=players.stray,
        drained=drained,
        login=players.login,
        failures=tally.failures,
        failures_by_phase=tally.failures_by_phase,
        sources=tally.sources,
    )


def _check(params: dict[str, Any]) -> None:
    if params["rate"] * params["duration"] < 1:
        raise ConfigError(
            "duration", "is shorter than one line at --rate: every player must say a line"
        )


def _rows(s: dict[str, Any]) -> Rows:
    return [
        (
            "players",
            f"{s['ready']} of {s['sessions']} in {s['rooms']} rooms of {s['room_size']}",
        ),
        ("login ms", format_ms(s["login_ms"])),
        (
            "said",
            f"{s['sent']} lines, {s['rate']:g}/s each for {s['duration']:.3f} s "
            f"(then {s['drained']:.3f} s for the last to arrive)",
        ),
        (
            "heard",
            f"{s['receipts']} of {s['expected_receipts']} expected ({s['receipts_per_s']:.1f}/s)",
        ),
        ("delivery ms", format_ms(s["latency_ms"])),
        (
            "delivered",
            f"{s['delivered']} to every member, {s['lost']} lost ({s['lost_pct']:g}%)"
            + (f" in {s['rooms_with_losses']} rooms" if s["lost"] else ""),
        ),
        (
            "order",
            f"{s['out_of_order']} out of order, {s['duplicates']} twice, {s['stray']} stray",
        ),
    ]


def _p99(summary: dict[str, Any]) -> float:
    value = summary["latency_ms"]["p99"]
    return math.nan if value is None else float(value)


def _about(s: BenchSettings) -> str:
    return (
        f"chat: {BENCH_SESSIONS} talker players in rooms of {BENCH_ROOM_SIZE}, "
        f"{BENCH_RATE:g} line/s each for {max(s.duration, 1 / BENCH_RATE):g}s, "
        "p99 delivery to the whole room"
    )


def _time_bound(p: dict[str, Any], procs: int, setup: float) -> float:
    # logins (a setup and a login's wait each), the lines, the drain, the close
    login = setup_rounds(p, procs) * 2 * setup
    return login + JOIN_SETTLE + float(p["duration"]) + float(p["drain"]) + CLOSE_GRACE


SCENARIO = Scenario(
    name="chat",
    help="talker players in rooms, each saying lines at a rate; delivery latency and losses",
    run=chat,
    result=ChatResult,
    params=(
        # not split: each process takes its own indexes of the run's players
        Param("sessions", 200, whole(1, 1_000_000), "players", "N", bounds_procs=True),
        Param("room_size", 20, whole(1, 100_000), "players in a room", "K"),
        Param(
            "rate",
            1.0,
            number(0.0, MAX_RATE, above=True),
            f"lines a second each player says (at most {MAX_RATE:g})",
            "R",
        ),
        concurrency_param(100),
        duration_param(10.0, "how long players say lines"),
        Param(
            "drain",
            5.0,
            number(0.0, 3600.0, above=True),
            "longest wait for the last lines after the players stop",
            "SECONDS",
        ),
    ),
    rows=_rows,
    in_flight=lambda p: p["sessions"],
    time_bound=_time_bound,
    check=_check,
    progress_rate="heard",
    bench=(
        BenchCase(
            "chat-p99",
            "ms",
            False,
            params=lambda s: {
                "sessions": BENCH_SESSIONS,
                "room_size": BENCH_ROOM_SIZE,
                "rate": BENCH_RATE,
                # every player says one line at least
                "duration": max(s.duration, 1 / BENCH_RATE),
            },
            figure=_p99,
            about=_about,
            show=lambda ms: f"{ms:.2f}",
            shell="talker",
        ),
    ),
)
