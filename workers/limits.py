"""The named bounds on what one client can make its worker hold or do.

One :class:`SessionLimits` is shared by every session of a server (the
operator's settings); a protocol reads it as ``self.limits``. Bounds that
belong to the telnet parser itself are the engine's (``sb_limit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.telnet.charsets import Charsets

#: Output a session may have waiting for its client before it is closed.
DEFAULT_MAX_OUTPUT_BUFFER = 2**20


@dataclass(frozen=True)
class SessionLimits:
    #: the charsets a client may choose (NEW-ENVIRON LANG, CHARSET)
    charsets: Charsets = field(default_factory=Charsets)
    #: bytes waiting in the transport past which the session is closed
    max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER
    #: characters kept of a TTYPE, TSPEED or XDISPLOC value (RFC 1091: 40)
    max_value_length: int = 256
    #: NEW-ENVIRON variables kept, and their names and values in bytes
    max_environ_vars: int = 64
    max_environ_bytes: int = 8192
    #: telnet parser steps per session per turn of the event loop: at most about
    #: 1 ms of a flood of commands here (0.7 ms of NAWS, 0.8 ms of NOP, measured);
    #: the rest of a chunk waits a turn
    parse_budget: int = 1024


DEFAULT_LIMITS = SessionLimits()
