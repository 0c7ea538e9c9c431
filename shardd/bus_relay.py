"""The local bus backend, the supervisor's side: relays bus frames between workers.

The relay keeps which workers have subscribers of which channel (``bus_sub``
and ``bus_unsub`` from each worker), and forwards:

- a ``bus_pub`` once to each *other* worker with subscribers of its channel
  (the publisher's own hub delivered to its local subscribers), packed once
  for all of them, in the order the publisher's frames were read: each
  worker's channel is one ordered stream, so one publisher's messages
  arrive in order everywhere;
- a ``bus_send`` or ``bus_close`` to the worker named by the pid in the
  session id (``"<pid>.<n>"``), and its ``bus_ack`` back to the asker (an
  unknown worker: ``ok`` False at once);
- a ``bus_who`` (with its ``name``, if it asks for one) to every other
  serving worker, their ``bus_who_reply``
  batches to the asker as they come, and a last, empty one once every worker
  finished, died, or ``WHO_WAIT`` passed.

Payloads are never unpacked here. A worker that goes is forgotten entirely
(:meth:`BusRelay.forget`): its channels, its pending questions and answers.
What cannot be written to a worker whose channel is full is dropped by the
supervisor's outbox (``shardd/supervisor.py``) and counted there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from workers import ipc

#: how long a who() waits for the other workers' answers, in seconds
WHO_WAIT = 1.0

#: write a frame to a worker (by pid); False if it was dropped
Send = Callable[[int, bytes], bool]


@dataclass
class _WhoWait:
    asker: int
    req: int
    deadline: float
    waiting: set[int] = field(default_factory=set)


class BusRelay:
    """Routes bus frames between workers; knows nothing of their sessions."""

    def __init__(self, send: Send, serving: Callable[[], Iterable[int]]) -> None:
        """``send``: writes a frame to a worker; ``serving``: the pids a who() asks."""
        self._send = send
        self._serving = serving
        #: channel -> pids of the workers with subscribers of it
        self.channels: dict[str, set[int]] = {}
        #: pid -> its channels (to forget a worker at once)
        self.by_worker: dict[int, set[str]] = {}
        self._who: dict[tuple[int, int], _WhoWait] = {}
        #: frames written to workers, by kind (bus_pub: one per worker reached)
        self.relayed = 0
        self.published = 0  # bus_pub frames received from workers
        self.dropped = 0  # frames the supervisor could not write (a worker's outbox full)
        #: sessions listed in who() answers relayed: what who() costs, O(sessions) a listing
        self.who_listed = 0

    def snapshot(self) -> dict[str, int]:
        """For status: what the relay holds and has done."""
        return {
            "channels": len(self.channels),
            "subscriptions": sum(len(pids) for pids in self.channels.values()),
            "workers": len(self.by_worker),
            "who_pending": len(self._who),
            "published": self.published,
            "relayed": self.relayed,
            "dropped": self.dropped,
            "who_listed": self.who_listed,
        }

    def _write(self, pid: int, frame: bytes) -> None:
        if self._send(pid, frame):
            self.relayed += 1
        else:
            self.dropped += 1

    def on_message(self, pid: int, message: dict[str, Any]) -> None:
        """A checked bus frame (``ipc.BUS_KINDS``) from the worker ``pid``."""
        kind = message["t"]
        if kind == ipc.BUS_PUB:
            self.published += 1
            pids = self.channels.get(message["ch"])
            if not pids:
                return
            frame = b""
            for target in pids:
                if target != pid:
                    frame = frame or ipc.pack(
                        ipc.BUS_PUB, ch=message["ch"], sender=message["sender"], p=message["p"]
                    )
                    self._write(target, frame)
        elif kind == ipc.BUS_SUB:
            self.channels.setdefault(message["ch"], set()).add(pid)
            self.by_worker.setdefault(pid, set()).add(message["ch"])
        elif kind == ipc.BUS_UNSUB:
            self._unsubscribe(pid, message["ch"])
            channels = self.by_worker.get(pid)
            if channels is not None:
                channels.discard(message["ch"])
                if not channels:
                    del self.by_worker[pid]
        elif kind in (ipc.BUS_SEND, ipc.BUS_CLOSE):
            owner = _pid_of(message["to"])
            if owner is None or owner == pid or owner not in self._serving_set():
                self._write(pid, ipc.pack(ipc.BUS_ACK, req=message["req"], src=0, ok=False))
                return
            fields = {k: v for k, v in message.items() if k != "t"}
            fields["src"] = pid
            self._write(owner, ipc.pack(kind, **fields))
        elif kind == ipc.BUS_ACK:
            self._write(
                message["src"], ipc.pack(ipc.BUS_ACK, req=message["req"], src=0, ok=message["ok"])
            )
        elif kind == ipc.BUS_WHO:
            self._ask_who(pid, message["req"], message.get("name"))
        elif kind == ipc.BUS_WHO_REPLY:
            self._who_reply(pid, message)

    def _serving_set(self) -> set[int]:
        return set(self._serving())

    def _unsubscribe(self, pid: int, channel: str) -> None:
        pids = self.channels.get(channel)
        if pids is None:
            return
        pids.discard(pid)
        if not pids:
            del self.channels[channel]

    # ------------------------------------------------------------------ who

    def _ask_who(self, asker: int, req: int, name: str | None = None) -> None:
        others = {pid for pid in self._serving() if pid != asker}
        wait = _WhoWait(asker, req, time.monotonic() + WHO_WAIT, others)
        self._who[(asker, req)] = wait
        named = {} if name is None else {"name": name}
        frame = ipc.pack(ipc.BUS_WHO, req=req, src=asker, **named)
        for pid in others:
            self._write(pid, frame)
        self._finish_if_done(wait)

    def _who_reply(self, pid: int, message: dict[str, Any]) -> None:
        wait = self._who.get((message["src"], message["req"]))
        if wait is None or pid not in wait.waiting:
            return  # late (past its deadline) or not asked
        if message["sessions"]:
            self.who_listed += len(message["sessions"])
            self._write(
                wait.asker,
                ipc.pack(
                    ipc.BUS_WHO_REPLY, req=wait.req, src=0, sessions=message["sessions"], last=False
                ),
            )
        if message["last"]:
            wait.waiting.discard(pid)
            self._finish_if_done(wait)

    def _finish_if_done(self, wait: _WhoWait, now: float | None = None) -> None:
        if wait.waiting and (now is None or now < wait.deadline):
            return
        self._who.pop((wait.asker, wait.req), None)
        self._write(
            wait.asker, ipc.pack(ipc.BUS_WHO_REPLY, req=wait.req, src=0, sessions=[], last=True)
        )

    def check_deadlines(self, now: float) -> None:
        """Answer the who() questions whose time is up with what came."""
        for wait in list(self._who.values()):
            self._finish_if_done(wait, now)

    # --------------------------------------------------------------- death

    def forget(self, pid: int) -> None:
        """The worker ``pid`` is gone: nothing of it stays."""
        for channel in self.by_worker.pop(pid, ()):
            self._unsubscribe(pid, channel)
        for key, wait in list(self._who.items()):
            if wait.asker == pid:
                del self._who[key]
            elif pid in wait.waiting:
                wait.waiting.discard(pid)
                self._finish_if_done(wait)


def _pid_of(session_id: str) -> int | None:
    """The worker pid in a local session id, ``"<pid>.<n>"``; None if it is not one."""
    head, dot, tail = session_id.partition(".")
    if not dot or not head.isdigit() or not tail.isdigit() or len(head) > 10:
        return None
    return int(head)
