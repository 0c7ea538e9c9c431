"""The supervisor <-> worker channel: every message type, its framing and its checks.

One socketpair per worker carries a stream of msgpack maps, each with a ``t``
(type) key. Both sides import this module, so a message is defined once.
The supervisor validates every frame it reads: a worker is never trusted to be
well-formed, and a bad frame must not take the supervisor down.

Sessions are reported as deltas: ``open`` when accepted, ``close`` when gone,
and each ``report`` carries only the sessions whose counters or attributes
changed since the previous one. Timestamps are CLOCK_MONOTONIC, which is one
clock for every process on the machine, so the supervisor derives duration
and idle time itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

# A frame larger than this is an error, not a big message.
MAX_FRAME = 4 * 2**20
# Sessions looked at per loop iteration when reporting: bounds how long one
# report step holds the worker's loop (about 1-2 ms on this machine class).
REPORT_BATCH = 200

# Worker -> supervisor
HELLO = "hello"  # pid, shard: the worker is serving its shard
HEARTBEAT = "heartbeat"  # time: sent from inside the worker's event loop
OPEN = "open"  # sessions: [[id, peer, connected_at], ...] first seen since the last report
CLOSE = "close"  # id
# time, accepted, counters: {name: count} of the worker's events (refused:<reason>,
# protocol_errors, output_overflow, idle_timeout, mccp3_broken, gmcp_dropped,
# shell_errors; closed sessions' bytes and duration buckets, workers/session_totals.py),
# sessions:
# [SESSION_FIELDS...], last: bool, reply: bool
REPORT = "report"
STOPPING = "stopping"  # sessions: how many are left as the worker winds down

# Supervisor -> worker
STOP = "stop"  # graceful: stop accepting, goodbye, close sessions, exit
# timeout: stop accepting; keep sessions until they end or this many seconds
# have passed (the reload timeout; 0: no limit), then goodbye
DRAIN = "drain"
STATUS = "status"  # send a report now (reply=True on its last frame)
PLAYERS = "players"  # sessions: live sessions of every worker (MSSP PLAYERS), every second

# The message bus (workers/bus/local.py <-> shardd/bus_relay.py). The same
# shapes both ways; ``src`` is the pid of the worker a request came from (0
# where it goes without saying). ``p`` is a message as the publisher's hub
# packed it, relayed as bytes, never unpacked by the supervisor.
BUS_SUB = "bus_sub"  # ch: the worker's first subscriber of ch arrived
BUS_UNSUB = "bus_unsub"  # ch: its last left
BUS_PUB = "bus_pub"  # ch, sender, p: for every other worker with subscribers of ch
BUS_SEND = "bus_send"  # to, sender, p, req, src: to one session; answered by bus_ack
BUS_CLOSE = "bus_close"  # to, msg, req, src: close one session; answered by bus_ack
BUS_ACK = "bus_ack"  # req, src, ok: whether the session of a send or close was live
BUS_WHO = "bus_who"  # req, src, name (optional): list your sessions (those so called)
# req, src, sessions: [[id, shard, peer, term, name, host], ...] (at most
# WHO_BATCH), last: the worker's (or, to the asker, every worker's) last batch
BUS_WHO_REPLY = "bus_who_reply"
BUS_KINDS = frozenset(
    {BUS_SUB, BUS_UNSUB, BUS_PUB, BUS_SEND, BUS_CLOSE, BUS_ACK, BUS_WHO, BUS_WHO_REPLY}
)
#: sessions in one bus_who_reply frame: 1000 entries of at most ~700 bytes stay
#: well under MAX_FRAME
WHO_BATCH = 1000
#: longest session id, and longest last line of a session closed through the bus
MAX_SESSION_ID = 300
MAX_CLOSE_MESSAGE = 1024

# The order of a session's values inside a report.
SESSION_FIELDS = (
    "id",
    "rx_bytes",
    "tx_bytes",
    "last_received",
    "state",
    "term",
    "client_name",
    "mtts",
    "cols",
    "rows",
    "encoding",
    "protocol_errors",
    "tls",
)
# More counters than this in one report is not a worker's report. A worker
# reports about 40 kinds (12 of them closed sessions' bytes and duration
# buckets); a report over the bound gets its worker killed, so the bound
# leaves room for the kinds features add.
MAX_COUNTERS = 128

_NUMBER = (int, float)
_NONE = type(None)
_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    HELLO: {"pid": (int,), "shard": (int,)},
    HEARTBEAT: {"time": _NUMBER},
    OPEN: {"sessions": (list,)},
    CLOSE: {"id": (int,)},
    REPORT: {
        "time": _NUMBER,
        "accepted": (int,),
        "counters": (dict,),
        "sessions": (list,),
        "last": (bool,),
        "reply": (bool,),
    },
    STOPPING: {"sessions": (int,)},
    STOP: {},
    DRAIN: {"timeout": _NUMBER},
    STATUS: {},
    PLAYERS: {"sessions": (int,)},
    BUS_SUB: {"ch": (str,)},
    BUS_UNSUB: {"ch": (str,)},
    BUS_PUB: {"ch": (str,), "sender": (str, _NONE), "p": (bytes,)},
    BUS_SEND: {"to": (str,), "sender": (str, _NONE), "p": (bytes,), "req": (int,), "src": (int,)},
    BUS_CLOSE: {"to": (str,), "msg": (str,), "req": (int,), "src": (int,)},
    BUS_ACK: {"req": (int,), "src": (int,), "ok": (bool,)},
    BUS_WHO: {"req": (int,), "src": (int,), "name": (str, _NONE)},
    BUS_WHO_REPLY: {"req": (int,), "src": (int,), "sessions": (list,), "last": (bool,)},
}
_SESSION_TYPES: tuple[tuple[type, ...], ...] = (
    (int,),
    (int,),
    (int,),
    _NUMBER,
    (str,),  # state
    (str,),  # term
    (str,),  # client_name, "" when not a MUD client
    (int, _NONE),  # mtts, None without MTTS
    (int,),
    (int,),
    (str,),
    (int,),
    (str,),
)


class FrameError(ValueError):
    """A frame that is not a valid message; says what is wrong with it."""


def pack(kind: str, **fields: Any) -> bytes:
    fields["t"] = kind
    frame: bytes = msgpack.packb(fields, use_bin_type=True)
    return frame


def check(message: Any) -> dict[str, Any]:
    """Return ``message`` if it is a valid message, else raise FrameError."""
    if not isinstance(message, dict):
        raise FrameError(f"frame is a {type(message).__name__}, not a map")
    kind = message.get("t")
    schema = _SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise FrameError(f"unknown message type {kind!r}")
    for name, types in schema.items():
        value = message.get(name)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise FrameError(f"{kind}: field {name!r} is {value!r}")
    if kind == REPORT:
        _check_counters(message["counters"])
        for entry in message["sessions"]:
            _check_session(entry)
    elif kind == OPEN:
        for entry in message["sessions"]:
            _check_opened(entry)
    elif kind in BUS_KINDS:
        _check_bus(kind, message)
    return message


def _check_bus(kind: str, message: dict[str, Any]) -> None:
    from workers.bus.api import MAX_CHANNEL, MAX_MESSAGE, MAX_NAME

    if len(message.get("ch", "")) > MAX_CHANNEL:
        raise FrameError(f"{kind}: channel name longer than {MAX_CHANNEL}")
    if len(message.get("p", b"")) > MAX_MESSAGE:
        raise FrameError(f"{kind}: message larger than {MAX_MESSAGE} bytes")
    if (
        len(message.get("to", "")) > MAX_SESSION_ID
        or len(message.get("sender") or "") > MAX_SESSION_ID
    ):
        raise FrameError(f"{kind}: session id longer than {MAX_SESSION_ID}")
    if len(message.get("name") or "") > MAX_NAME:
        raise FrameError(f"{kind}: name longer than {MAX_NAME}")
    if len(message.get("msg", "")) > MAX_CLOSE_MESSAGE:
        raise FrameError(f"{kind}: closing line longer than {MAX_CLOSE_MESSAGE}")
    if kind == BUS_WHO_REPLY:
        sessions = message["sessions"]
        if len(sessions) > WHO_BATCH:
            raise FrameError(f"{kind}: more than {WHO_BATCH} sessions in one frame")
        for entry in sessions:
            if (
                not isinstance(entry, list)
                or len(entry) != 6
                or type(entry[1]) is not int
                or not all(isinstance(entry[n], str) for n in (0, 2, 3, 4, 5))
                or len(entry[4]) > MAX_NAME
                or any(len(entry[n]) > MAX_SESSION_ID for n in (0, 2, 3, 5))
            ):
                raise FrameError(f"{kind}: session entry {entry!r:.80} is not a session")


def _check_counters(counters: dict[Any, Any]) -> None:
    if len(counters) > MAX_COUNTERS or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in counters.items()
    ):
        raise FrameError(f"report: counters {counters!r:.80} are not names and counts")


def _check_opened(entry: Any) -> None:
    if (
        not isinstance(entry, list)
        or len(entry) != 3
        or type(entry[0]) is not int
        or not isinstance(entry[1], str)
        or not isinstance(entry[2], _NUMBER)
        or isinstance(entry[2], bool)
    ):
        raise FrameError(f"open: session entry {entry!r:.80} is not [id, peer, connected_at]")


def _check_session(entry: Any) -> None:
    if not isinstance(entry, list) or len(entry) != len(SESSION_FIELDS):
        raise FrameError(f"report: session entry {entry!r:.80} has the wrong shape")
    for name, value, types in zip(SESSION_FIELDS, entry, _SESSION_TYPES, strict=True):
        if not isinstance(value, types) or isinstance(value, bool):
            raise FrameError(f"report: session field {name!r} is {value!r:.40}")


class Decoder:
    """Frames in, checked messages out; bounded by MAX_FRAME."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_frame, strict_map_key=True)
        self._last = b""

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """Yield every complete message in ``data``; FrameError on the first bad one."""
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise FrameError(f"frame larger than {MAX_FRAME} bytes") from None
        self._last = data[:32]
        while True:
            try:
                message = next(self._unpacker)
            except StopIteration:
                return
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
                detail = f": {exc}" if str(exc) else ""
                raise FrameError(
                    f"undecodable frame ({type(exc).__name__}{detail}) in {self._last!r}"
                ) from None
            yield check(message)
