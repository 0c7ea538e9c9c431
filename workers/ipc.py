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
    return message


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
