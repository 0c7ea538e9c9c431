"""What travels through Redis for the bus: names of keys and channels, envelopes.

Pure code (no I/O), shared by every worker on every host that uses one
Redis: the names are the wire format between them.

- A bus channel ``C`` is the Redis channel ``shardd:bus:ch:C``; a worker's
  inbox (direct messages and closes for its sessions) is
  ``shardd:bus:inbox:<host>/<pid>``. The two never collide, whatever a shell
  names its channel.
- A worker's live sessions are the hash ``shardd:who:<host>/<pid>``: field
  session id, value the msgpack of ``[shard, peer, term, name]``.
- Every message is the msgpack of an envelope
  ``[origin worker, kind, target, sender, body]``: kind ``p`` a publication
  (target: the bus channel, body: the packed payload), ``m`` a direct
  message (target: the session id, body: the packed payload), ``c`` a close
  (target: the session id, body: the last line, str).

Another host's envelope is data from the network: :func:`unpack_envelope`
refuses (returns None for) anything that is not one of these shapes, and
never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from workers.bus.api import MAX_CHANNEL, MAX_MESSAGE, MAX_NAME, SessionInfo

PREFIX = "shardd:"
CHANNEL_PREFIX = PREFIX + "bus:ch:"
INBOX_PREFIX = PREFIX + "bus:inbox:"
WHO_PREFIX = PREFIX + "who:"

PUBLICATION = "p"
DIRECT = "m"
CLOSE = "c"
_KINDS = frozenset((PUBLICATION, DIRECT, CLOSE))

#: longest worker id or session id accepted from Redis (host, pid, number)
MAX_ID = 200
#: longest peer or terminal name accepted from another host's who entry
MAX_FIELD = 256
#: an envelope larger than this is refused unread: the payload's bound plus
#: room for the ids and the msgpack framing
MAX_ENVELOPE = MAX_MESSAGE + 4 * MAX_ID + MAX_CHANNEL * 4 + 64


@dataclass(frozen=True, slots=True)
class Envelope:
    origin: str
    kind: str
    target: str
    sender: str | None
    body: bytes | str


def channel_key(channel: str) -> str:
    return CHANNEL_PREFIX + channel


def inbox_key(worker: str) -> str:
    return INBOX_PREFIX + worker


def who_key(worker: str) -> str:
    return WHO_PREFIX + worker


def worker_of(session_id: str) -> str | None:
    """``host/pid`` of a session id ``host/pid.n``; None if it has no host part."""
    worker, dot, number = session_id.rpartition(".")
    if not dot or "/" not in worker or not number.isdigit():
        return None
    return worker


def pack_envelope(
    origin: str, kind: str, target: str, sender: str | None, body: bytes | str
) -> bytes:
    packed: bytes = msgpack.packb([origin, kind, target, sender, body], use_bin_type=True)
    return packed


def unpack_envelope(data: bytes) -> Envelope | None:
    """The envelope in ``data``, or None if ``data`` is not a well-formed one."""
    if len(data) > MAX_ENVELOPE:
        return None
    try:
        value = msgpack.unpackb(
            data, raw=False, use_list=True, max_bin_len=MAX_MESSAGE, max_str_len=MAX_ENVELOPE
        )
    except Exception:  # msgpack raises many kinds on bad input; all mean "refused"
        return None
    if not isinstance(value, list) or len(value) != 5:
        return None
    return _checked(*value)


def _checked(origin: Any, kind: Any, target: Any, sender: Any, body: Any) -> Envelope | None:
    if not (isinstance(origin, str) and 0 < len(origin) <= MAX_ID):
        return None
    if not isinstance(kind, str) or kind not in _KINDS or not isinstance(target, str):
        return None
    if sender is not None and not (isinstance(sender, str) and len(sender) <= MAX_ID):
        return None
    if kind == PUBLICATION:
        well_formed = 0 < len(target) <= MAX_CHANNEL and isinstance(body, bytes)
    elif kind == DIRECT:
        well_formed = 0 < len(target) <= MAX_ID and isinstance(body, bytes)
    else:
        well_formed = 0 < len(target) <= MAX_ID and isinstance(body, str)
    return Envelope(origin, kind, target, sender, body) if well_formed else None


def pack_who_entry(info: SessionInfo) -> bytes:
    packed: bytes = msgpack.packb([info.shard, info.peer, info.term, info.name], use_bin_type=True)
    return packed


def unpack_who_entry(worker: str, session_id: Any, data: Any) -> SessionInfo | None:
    """One field of another worker's who hash, or None if it is malformed."""
    if isinstance(session_id, bytes):
        try:
            session_id = session_id.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_ID:
        return None
    if not isinstance(data, bytes) or len(data) > 4 * MAX_FIELD:
        return None
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception:
        return None
    if not isinstance(value, list) or len(value) != 4:
        return None
    shard, peer, term, name = value
    if not (isinstance(shard, int) and not isinstance(shard, bool)):
        return None
    for text, limit in ((peer, MAX_FIELD), (term, MAX_FIELD), (name, MAX_NAME)):
        if not isinstance(text, str) or len(text) > limit:
            return None
    host = worker.rpartition("/")[0]
    return SessionInfo(id=session_id, shard=shard, peer=peer, term=term, name=name, host=host)
