"""Sans-I/O telnet engine: bytes in, in-band data and events out, bytes to send out.

No sockets, no asyncio. The server protocol and the load-test client drive the
same object; tests feed it bytes directly.

Design points:

- A received chunk holding no IAC byte while the parser is between sequences
  is returned as is: one ``in`` test, no copy, no Python loop over its bytes.
  Chunks with IACs are cut with ``bytes.find``.
- Option negotiation follows the Q method of RFC 1143 for both sides of every
  option, so negotiation never loops and an option that is enabled or pending
  is never requested again.
- Everything the peer can make us hold is bounded: a subnegotiation larger
  than ``sb_limit`` is discarded (and reported), and nothing else is buffered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from workers.telnet.telopt import (
    DO,
    DONT,
    IAC,
    IAC_BYTE,
    IAC_IAC,
    SB,
    SE,
    TM,
    WILL,
    WONT,
    name_command,
    name_option,
)

DEFAULT_SB_LIMIT = 8192

# Parser states. ``parser_state == DATA`` (between sequences) is public: a
# caller may then hand a chunk without IAC straight on, as receive() would.
DATA = 0
_IAC = 1  # saw IAC between sequences
_OPT = 2  # saw IAC WILL/WONT/DO/DONT, want the option byte
_SB_OPT = 3  # saw IAC SB, want the option byte
_SB = 4  # inside a subnegotiation
_SB_IAC = 5  # inside a subnegotiation, saw IAC
HELD = 6  # between sequences, with received bytes held back for the next receive()

# RFC 1143 option states, one per side of each option.
NO = 0
YES = 1
WANTNO = 2
WANTYES = 3

# Bytes that may follow IAC as a two-byte command (RFC 854 and RFC 885's EOR).
_COMMANDS = frozenset(range(239, 250))


@dataclass(slots=True)
class Command:
    """A two-byte command such as IAC AYT, IAC GA or IAC EOR."""

    cmd: int

    def __str__(self) -> str:
        return f"IAC {name_command(self.cmd)}"


@dataclass(slots=True)
class OptionEnabled:
    """An option is now on. ``local`` means we perform it (we said WILL)."""

    option: int
    local: bool


@dataclass(slots=True)
class OptionDisabled:
    """An option is now off. ``refused`` when it was our request that was declined."""

    option: int
    local: bool
    refused: bool = False


@dataclass(slots=True)
class Subnegotiation:
    """A complete IAC SB <option> <payload> IAC SE, payload unescaped."""

    option: int
    payload: bytes


@dataclass(slots=True)
class ProtocolError:
    """Malformed input that was discarded; the stream goes on."""

    reason: str


Event = Command | OptionEnabled | OptionDisabled | Subnegotiation | ProtocolError


def escape(data: bytes) -> bytes:
    """Double every IAC so ``data`` travels as in-band data."""
    return data.replace(IAC_BYTE, IAC_IAC)


# One empty set for every engine that stops after no subnegotiation.
_NO_OPTIONS: frozenset[int] = frozenset()

# Added to a WANTNO or WANTYES state: the opposite request is queued (RFC 1143).
_QUEUED = 4


# Accept sets made by allow(), each kept once: sessions whose shells ask for the
# same options (character mode: SGA and ECHO) share one set. Bounded, since a
# shell may ask for any option.
_ACCEPT_SETS: dict[frozenset[int], frozenset[int]] = {}
_ACCEPT_SETS_MAX = 256


class _Side:
    """RFC 1143 state for one side of every option: ours (WILL) or the peer's (DO).

    ``state`` maps an option to NO/YES/WANTNO/WANTYES, plus _QUEUED. ``accept``
    is shared between sessions, also once one changes it (``_ACCEPT_SETS``): a
    server holds thousands of engines, and a set per side per session cost more
    than everything else.
    """

    __slots__ = ("accept", "state")

    def __init__(self, accept: Iterable[int]) -> None:
        self.state: dict[int, int] = {}
        self.accept: frozenset[int] = accept if isinstance(accept, frozenset) else frozenset(accept)

    def allow(self, opt: int, allowed: bool = True) -> None:
        if (opt in self.accept) != allowed:
            changed = self.accept | {opt} if allowed else self.accept - {opt}
            shared = _ACCEPT_SETS.get(changed)
            if shared is None:
                shared = changed
                if len(_ACCEPT_SETS) < _ACCEPT_SETS_MAX:
                    _ACCEPT_SETS[changed] = changed
            self.accept = shared


class TelnetEngine:
    """One telnet connection's protocol state, in either role.

    ``accept_local``: options we agree to perform when the peer asks (DO X).
    ``accept_remote``: options we let the peer perform when it offers (WILL X).
    Everything else is refused politely, once per request.
    """

    __slots__ = (
        "_held",
        "_local",
        "_opt_verb",
        "_out",
        "_remote",
        "_sb",
        "_sb_opt",
        "_sb_overflow",
        "budget",
        "events",
        "heard",
        "parser_state",
        "role",
        "sb_limit",
        "stop_after_sb",
    )

    def __init__(
        self,
        role: str = "server",
        *,
        accept_local: Iterable[int] = (),
        accept_remote: Iterable[int] = (),
        sb_limit: int = DEFAULT_SB_LIMIT,
        budget: int | None = None,
        stop_after_sb: Iterable[int] = _NO_OPTIONS,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        if sb_limit < 1:
            raise ValueError("sb_limit must be positive")
        self.role = role
        self.sb_limit = sb_limit
        #: parser steps (a find, or one byte of a sequence) per receive(); the
        #: rest waits, parser_state HELD, for the next call. None: no limit.
        self.budget = budget
        #: options whose subnegotiation ends parsing: what follows it is held
        #: unparsed for take_held() (a compressed stream starts there: MCCP)
        self.stop_after_sb = (
            stop_after_sb if isinstance(stop_after_sb, frozenset) else frozenset(stop_after_sb)
        )
        self._held = b""
        #: the peer has sent a telnet command: it speaks telnet (nc does not)
        self.heard = False
        self.events: list[Event] = []
        self._out = bytearray()
        self._local = _Side(accept_local)
        self._remote = _Side(accept_remote)
        self.parser_state = DATA
        self._opt_verb = 0
        self._sb = bytearray()
        self._sb_opt = 0
        self._sb_overflow = False

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes) -> bytes:
        """Parse received bytes; return the in-band data they carry.

        Events are appended to ``self.events`` and replies to the output
        buffer (see :meth:`data_to_send`). With a ``budget``, parsing stops at
        the first sequence boundary past it: ``parser_state`` is then HELD, and
        the next call (``receive(b"")`` to go on) starts with the held bytes.
        Parsing also stops, HELD, right after a subnegotiation of an option in
        ``stop_after_sb``: the caller takes the rest with :meth:`take_held`.
        """
        if self.parser_state == DATA and IAC_BYTE not in data:
            return data
        return self._receive_sequences(data)

    def _receive_sequences(self, data: bytes) -> bytes:
        if self.parser_state == HELD:
            data = self._held + data if data else self._held
            self._held = b""
            self.parser_state = DATA
        inband: list[bytes] = []
        pos = 0
        end = len(data)
        # every step takes at least one byte, so end + 1 steps is no limit
        steps = self.budget or end + 1
        while pos < end:
            state = self.parser_state
            if steps <= 0 and state == DATA:
                # the budget is spent: keep the rest, from a sequence boundary
                self._held = data[pos:]
                self.parser_state = HELD
                break
            steps -= 1
            if state == DATA:
                i = data.find(IAC_BYTE, pos)
                if i < 0:
                    inband.append(data[pos:])
                    break
                if data[i + 1 : i + 2] == IAC_BYTE:
                    # escaped 0xFF data, by far the commonest IAC in binary streams
                    inband.append(data[pos : i + 1])
                    pos = i + 2
                    continue
                if i > pos:
                    inband.append(data[pos:i])
                pos = i + 1
                self.parser_state = _IAC
            elif state == _SB:
                i = data.find(IAC_BYTE, pos)
                stop = end if i < 0 else i
                self._sb_append(data, pos, stop)
                if i < 0:
                    break
                pos = i + 1
                self.parser_state = _SB_IAC
            else:
                byte = data[pos]
                pos += 1
                if state == _IAC:
                    if byte == IAC:
                        inband.append(IAC_BYTE)
                        self.parser_state = DATA
                    else:
                        self._after_iac(byte)
                elif state == _OPT:
                    self.parser_state = DATA
                    self._negotiate(self._opt_verb, byte)
                elif state == _SB_OPT:
                    self._sb_opt = byte
                    self._sb.clear()
                    self._sb_overflow = False
                    self.parser_state = _SB
                else:  # _SB_IAC
                    self._after_sb_iac(byte)
                    if byte == SE and self._sb_opt in self.stop_after_sb:
                        # what follows is not telnet yet (MCCP): leave it unparsed
                        self._held = data[pos:]
                        self.parser_state = HELD
                        break
        return b"".join(inband)

    def take_held(self) -> bytes:
        """The received bytes held back unparsed, now the caller's to handle.

        After a subnegotiation of a ``stop_after_sb`` option they are the
        start of a compressed stream; the next :meth:`receive` parses from
        scratch, between sequences.
        """
        held = self._held
        self._held = b""
        if self.parser_state == HELD:
            self.parser_state = DATA
        return held

    def _after_iac(self, byte: int) -> None:
        self.heard = True
        if byte in (WILL, WONT, DO, DONT):
            self._opt_verb = byte
            self.parser_state = _OPT
        elif byte == SB:
            self.parser_state = _SB_OPT
        elif byte in _COMMANDS:
            self.parser_state = DATA
            self.events.append(Command(byte))
        else:
            self.parser_state = DATA
            self.events.append(ProtocolError(f"IAC followed by non-command byte {byte}"))

    def _after_sb_iac(self, byte: int) -> None:
        if byte == IAC:
            self._sb_append(IAC_BYTE, 0, 1)
            self.parser_state = _SB
        elif byte == SE:
            self.parser_state = DATA
            opt = self._sb_opt
            if self._sb_overflow:
                self.events.append(
                    ProtocolError(
                        f"subnegotiation {name_option(opt)} longer than {self.sb_limit} "
                        "bytes, discarded"
                    )
                )
            else:
                self.events.append(Subnegotiation(opt, bytes(self._sb)))
            self._sb.clear()
        else:
            # RFC 855 allows nothing but IAC IAC and IAC SE inside SB. Peers that
            # forget IAC SE go on with a command: end the SB there and honour it.
            self.events.append(
                ProtocolError(
                    f"subnegotiation {name_option(self._sb_opt)} cut by IAC "
                    f"{name_command(byte)}, discarded"
                )
            )
            self._sb.clear()
            self._after_iac(byte)

    def _sb_append(self, data: bytes, start: int, stop: int) -> None:
        if self._sb_overflow or start >= stop:
            return
        if len(self._sb) + (stop - start) > self.sb_limit:
            self._sb_overflow = True
            self._sb.clear()
            return
        self._sb += data[start:stop]

    # ---------------------------------------------------- RFC 1143 negotiation

    def _negotiate(self, verb: int, opt: int) -> None:
        if opt == TM and verb in (WILL, WONT) and self._remote.state.get(TM, NO) & 3 == WANTYES:
            # the answer to our DO TIMING-MARK: the mark itself, after which TM
            # is back to NO so another mark can be asked for
            self._remote.state.pop(TM, None)
            event = OptionEnabled(TM, False) if verb == WILL else OptionDisabled(TM, False, True)
            self.events.append(event)
            return
        if verb in (WILL, WONT):
            self._received(self._remote, opt, verb == WILL, DO, DONT, local=False)
        elif opt == TM and verb == DO:
            # RFC 860: a timing mark is a one-shot question, never a state.
            self._send_negotiation(WILL if TM in self._local.accept else WONT, TM)
        else:
            self._received(self._local, opt, verb == DO, WILL, WONT, local=True)

    def _received(
        self, side: _Side, opt: int, positive: bool, yes: int, no: int, *, local: bool
    ) -> None:
        """Apply a received WILL/WONT (peer side) or DO/DONT (our side)."""
        raw = side.state.get(opt, NO)
        state, queued = raw & 3, raw & _QUEUED
        states = side.state
        events = self.events
        if positive:
            if state == NO:
                if opt in side.accept:
                    states[opt] = YES
                    self._send_negotiation(yes, opt)
                    events.append(OptionEnabled(opt, local))
                else:
                    self._send_negotiation(no, opt)
            elif state == WANTNO:
                # The peer answered our refusal with consent: RFC 1143 calls it an
                # error, and the option ends up as if the peer had said no.
                if queued:
                    states[opt] = YES  # it never stopped being on
                else:
                    states[opt] = NO
                    events.append(OptionDisabled(opt, local))
            elif state == WANTYES:
                if queued:
                    states[opt] = WANTNO
                    self._send_negotiation(no, opt)
                else:
                    states[opt] = YES
                    events.append(OptionEnabled(opt, local))
            # YES: already on, nothing to answer (this is what stops loops).
        else:
            if state == YES:
                states[opt] = NO
                self._send_negotiation(no, opt)
                events.append(OptionDisabled(opt, local))
            elif state == WANTNO:
                if queued:
                    states[opt] = WANTYES
                    self._send_negotiation(yes, opt)
                else:
                    states[opt] = NO
                    events.append(OptionDisabled(opt, local))
            elif state == WANTYES:
                states[opt] = NO
                events.append(OptionDisabled(opt, local, refused=True))
            # NO: already off, nothing to answer.

    def _request(self, side: _Side, opt: int, enable: bool, yes: int, no: int) -> bool:
        """Ask to turn an option on or off; return whether anything changed."""
        raw = side.state.get(opt, NO)
        state, queued = raw & 3, raw & _QUEUED
        if enable:
            if state == NO:
                side.allow(opt)
                side.state[opt] = WANTYES
                self._send_negotiation(yes, opt)
                return True
            if state == WANTNO and not queued:
                side.state[opt] = WANTNO | _QUEUED
                return True
            if state == WANTYES and queued:
                side.state[opt] = WANTYES
                return True
            return False  # on, or already on its way
        if state == YES:
            side.state[opt] = WANTNO
            self._send_negotiation(no, opt)
            return True
        if state == WANTYES and not queued:
            side.state[opt] = WANTYES | _QUEUED
            return True
        if state == WANTNO and queued:
            side.state[opt] = WANTNO
            return True
        return False

    def request_local(self, opt: int, enable: bool = True) -> bool:
        """Offer (WILL) or withdraw (WONT) an option we perform."""
        return self._request(self._local, opt, enable, WILL, WONT)

    def request_remote(self, opt: int, enable: bool = True) -> bool:
        """Ask the peer to perform (DO) or stop (DONT) an option."""
        return self._request(self._remote, opt, enable, DO, DONT)

    def request_timing_mark(self) -> bool:
        """Send DO TIMING-MARK unless one is unanswered; return whether it was sent.

        The peer answers (WILL or WONT, RFC 860) once it has processed all it
        received before: an OptionEnabled or OptionDisabled(TM, local=False)
        event. Unlike ``request_remote(TM)``, it leaves the accept set alone.
        """
        if self._remote.state.get(TM, NO) != NO:
            return False
        self._remote.state[TM] = WANTYES
        self._send_negotiation(DO, TM)
        return True

    def local_enabled(self, opt: int) -> bool:
        return self._local.state.get(opt, NO) == YES

    def remote_enabled(self, opt: int) -> bool:
        return self._remote.state.get(opt, NO) == YES

    def local_state(self, opt: int) -> int:
        """NO, YES, WANTNO or WANTYES for an option we perform."""
        return self._local.state.get(opt, NO) & 3

    def remote_state(self, opt: int) -> int:
        """NO, YES, WANTNO or WANTYES for an option the peer performs."""
        return self._remote.state.get(opt, NO) & 3

    def has_pending(self) -> bool:
        """Whether a request of ours is still unanswered."""
        return any(s & 3 >= WANTNO for s in self._local.state.values()) or any(
            s & 3 >= WANTNO for s in self._remote.state.values()
        )

    def pending(self) -> list[tuple[bool, int]]:
        """Options with a request of ours still unanswered, as (local, option)."""
        found = [(True, o) for o, s in self._local.state.items() if s & 3 >= WANTNO]
        found += [(False, o) for o, s in self._remote.state.items() if s & 3 >= WANTNO]
        return found

    def accept_local(self, opt: int, accept: bool = True) -> None:
        """Change whether a peer's DO for ``opt`` is agreed to."""
        self._local.allow(opt, accept)

    def accept_remote(self, opt: int, accept: bool = True) -> None:
        """Change whether a peer's WILL for ``opt`` is agreed to."""
        self._remote.allow(opt, accept)

    # ----------------------------------------------------------------- output

    def _send_negotiation(self, verb: int, opt: int) -> None:
        self._out += bytes((IAC, verb, opt))

    def send_command(self, cmd: int) -> None:
        """Queue a two-byte command such as GA, NOP or AYT."""
        if cmd in (IAC, SB, WILL, WONT, DO, DONT):
            raise ValueError(f"{name_command(cmd)} is not a two-byte command")
        self._out += bytes((IAC, cmd))

    def send_subnegotiation(self, opt: int, payload: bytes) -> None:
        """Queue IAC SB <opt> <payload, IACs doubled> IAC SE."""
        self._out += bytes((IAC, SB, opt))
        self._out += escape(payload)
        self._out += bytes((IAC, SE))

    def data_to_send(self) -> bytes:
        """Take everything queued for the peer (replies, requests, commands)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def take_events(self) -> list[Event]:
        events = self.events
        self.events = []
        return events

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished subnegotiation (at most ``sb_limit``)."""
        return len(self._sb)
