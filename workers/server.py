"""TelnetServer: negotiates terminal type, window size, environment, charset, binary, EOR,
and the MUD protocols (GMCP, MSDP, MSSP, MCCP2, MCCP3) the server offers."""

from __future__ import annotations

import functools
from typing import Any

from workers.server_base import BaseServer
from workers.telnet import gmcp, mtts, options
from workers.telnet.charsets import Charsets
from workers.telnet.engine import WANTYES
from workers.telnet.telopt import (
    AYT,
    BINARY,
    CHARSET,
    CHARSET_ACCEPTED,
    CHARSET_REJECTED,
    CHARSET_REQUEST,
    CHARSET_TTABLE_IS,
    CHARSET_TTABLE_REJECTED,
    DO,
    ENV_USERVAR,
    ENV_VAR,
    EOR,
    GMCP,
    IS,
    MCCP2,
    MCCP3,
    MSDP,
    MSSP,
    NAWS,
    NEW_ENVIRON,
    SEND,
    SGA,
    STATUS,
    TM,
    TSPEED,
    TTYPE,
    WILL,
    XDISPLOC,
    name_option,
)

# What NEW-ENVIRON SEND asks for; the two bare types at the end ask for every
# other variable the client is willing to export.
ENVIRON_REQUEST: list[tuple[int, str]] = [
    (ENV_VAR, "USER"),
    (ENV_USERVAR, "LANG"),
    (ENV_USERVAR, "TERM"),
    (ENV_USERVAR, "COLUMNS"),
    (ENV_USERVAR, "LINES"),
    (ENV_VAR, "DISPLAY"),
    (ENV_VAR, ""),
    (ENV_USERVAR, ""),
]

_ENVIRON_SEND = tuple(options.build_environ_send(ENVIRON_REQUEST))

# Charsets offered by CHARSET REQUEST, in order of preference (those allowed).
CHARSET_OFFER = ["UTF-8", "US-ASCII", "ISO-8859-1", "CP437"]


@functools.lru_cache(maxsize=16)
def _charset_request(charsets: Charsets) -> bytes | None:
    # one per allow-list, built once: a server has one
    offer = [name for name in CHARSET_OFFER if charsets.codec(name)]
    return options.build_charset_request(offer) if offer else None


_MISSING = object()

# Subnegotiation replies still owed to us, as bits of TelnetServer._awaiting.
_AWAITING = {"ttype": 1, "environ": 2, "charset": 4, "naws": 8, "tspeed": 16, "xdisploc": 32}

# The peer's options the shell waits for: they say who the client is, its window
# and its encoding. (BINARY too, while it can still change the encoding.)
_SETTLE_REMOTE = (TTYPE, NAWS, NEW_ENVIRON, CHARSET)

# Values only the protocol sets: a client's NEW-ENVIRON variable of the same
# name must not stand in for them.
_OWN_KEYS = frozenset({"client_name", "mtts"})

# NEW-ENVIRON variables that say who the client is (MNES, the MUD convention)
_IDENTITY_VARS = frozenset({"TERM", "TERMINAL_TYPE", "CLIENT_NAME", "MTTS"})

# get_extra_info's MUD keys: whether each is on now
_MUD_KEYS = frozenset({"gmcp", "msdp", "mssp", "mccp2", "mccp3"})
_MUD_LOCAL = {"gmcp": GMCP, "msdp": MSDP, "mssp": MSSP}
# the order options are offered in: before the timing mark, then after it.
# MCCP last: a client may answer WILL MCCP3 with IAC SB MCCP3 IAC SE and
# compress only from the end of the segment it is reading (telnetlib3 does),
# sending its replies to whatever follows in that segment plain.
_MUD_FIRST = (GMCP, MSDP, MSSP)
_MUD_LAST = (MCCP2, MCCP3)
_STOP_AT_MCCP3 = frozenset({MCCP3})


class TelnetServer(BaseServer):
    """Telnet server protocol negotiating what real clients support.

    The shell starts once the options that describe the client are settled
    (terminal type cycle, window size, environment, charset, and BINARY while
    it can still change the encoding), or once the client has shown it will
    not answer them: requests are followed by a DO TIMING-MARK, which a
    client answers only after what it received before it (RFC 860). A
    request (DO, WILL) still unanswered then never will be (TinTin++ leaves
    DO BINARY so). Some clients answer subnegotiations after the commands of
    the same segment (as our own engine does), so a subnegotiation reply is
    given up only once two marks in a row came back without it. Other options
    (EOR, BINARY when a charset is agreed) settle in the background.

    The server claims neither ECHO nor SGA: clients stay in line mode until
    the shell asks for more (``writer.set_mode``, ``writer.hide_input``).
    """

    TTYPE_LOOPMAX = 8
    #: TTYPE SENDs asked at once: a MUD client's name, terminal type and MTTS
    #: (the end of its cycle) in one round trip; a terminal's repeated type too
    TTYPE_PIPELINE = 3
    #: DO TIMING-MARKs sent while negotiating, at most
    MAX_MARKS = 4

    __slots__ = (
        "_awaiting",
        "_charset",
        "_environ",
        "_environ_charset",
        "_environ_replies_due",
        "_lang_charset",
        "_mark_covers",
        "_mark_out",
        "_marks",
        "_mtts_charset",
        "_naws_seen",
        "_ttype_asked",
        "_ttype_done",
        "_ttype_term",
        "_ttypes",
        "_unanswered",
    )

    accept_local = frozenset({BINARY, EOR, STATUS, TM})
    accept_remote = frozenset(
        {TTYPE, NAWS, NEW_ENVIRON, CHARSET, BINARY, TSPEED, XDISPLOC, EOR, SGA}
    )

    def __init__(
        self, *args: Any, term: str = "unknown", cols: int = 80, rows: int = 25, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # TERM is the terminal type in lower case; 'term' is kept as its alias
        self._extra.update({"TERM": term.lower(), "cols": cols, "rows": rows})
        self._ttypes: list[str] = []
        self._ttype_asked = 0  # TTYPE SENDs not yet answered
        self._ttype_done = False
        self._ttype_term: str | None = None  # the terminal type the TTYPE cycle named
        self._awaiting = 0  # bits of _AWAITING
        self._environ_replies_due = 0
        self._charset: str | None = None
        # What the client sent by NEW-ENVIRON, kept apart so that it can never
        # override what the server knows itself (peername, cols, ...).
        self._environ: dict[str, str] = {}
        self._lang_charset: str | None = None  # from LANG, once allowed
        self._environ_charset: str | None = None  # from NEW-ENVIRON CHARSET, once allowed
        self._mtts_charset: str | None = None  # UTF-8, when MTTS says so and it is allowed
        self._naws_seen = False
        self._marks = 0  # DO TIMING-MARKs sent
        self._mark_out = False  # one of them is unanswered
        self._mark_covers = 0  # replies owed when it was sent, and not answered since
        self._unanswered = 0  # replies owed when the last mark came back, and not since

    # ------------------------------------------------------------ negotiation

    def begin_negotiation(self) -> None:
        super().begin_negotiation()
        engine = self._engine
        engine.request_remote(TTYPE)
        offer = self._mud_offer()
        for opt in offer:
            # a client may ask first (DO GMCP, DO MCCP2): agreed to as if offered
            engine.accept_local(opt)
        if MCCP3 in offer:
            # the client's IAC SB MCCP3 IAC SE: what follows is compressed, not telnet
            engine.stop_after_sb = _STOP_AT_MCCP3

    def _mud_offer(self) -> frozenset[int]:
        mud = self.mud
        return mud.tls_offer if self.get_extra_info("tls") else mud.plain_offer

    def begin_advanced_negotiation(self) -> None:
        super().begin_advanced_negotiation()
        engine = self._engine
        engine.request_local(EOR)  # to mark prompts (writer.end_prompt)
        engine.request_local(BINARY)
        engine.request_remote(BINARY)
        engine.request_remote(NAWS)
        engine.request_remote(NEW_ENVIRON)
        engine.request_remote(CHARSET)
        # in the same write as the mark; they settle in the background: the
        # shell never waits for them (_options_unsettled)
        offer = self._mud_offer()
        for opt in _MUD_FIRST:
            if opt in offer:
                engine.request_local(opt)
        # a shell that declares character mode (writer.starts_in) has it claimed
        # now, with the rest, rather than a round trip after it starts
        if getattr(self.shell, "telnet_mode", "line") == "character" and self.writer is not None:
            self.writer.set_mode("character", send=False)
        self._mark()
        for opt in _MUD_LAST:
            if opt in offer:
                engine.request_local(opt)

    def check_negotiation(self, final: bool = False) -> bool:
        parent = super().check_negotiation(final)
        if not self._advanced and self._acknowledged:
            return False
        if self._awaiting or (not parent and self._options_unsettled()):
            if not final:
                self._mark()
            return False
        return True

    def _options_unsettled(self) -> bool:
        """Whether a request that matters to the shell may still be answered."""
        if self._marks - self._mark_out:
            # a mark sent after every option request came back: the client
            # answered all of them it was going to
            return False
        engine = self._engine
        if any(engine.remote_state(opt) == WANTYES for opt in _SETTLE_REMOTE):
            return True
        return self._binary_matters() and WANTYES in (
            engine.local_state(BINARY),
            engine.remote_state(BINARY),
        )

    def _mark(self) -> None:
        """Follow what was asked so far with a DO TIMING-MARK, unless one is out."""
        if not self._advanced or self._mark_out or self._marks >= self.MAX_MARKS:
            return
        if self._engine.request_timing_mark():
            self._marks += 1
            self._mark_out = True
            self._mark_covers = self._awaiting

    def _mark_answered(self) -> None:
        self._mark_out = False
        still = self._mark_covers & self._awaiting
        given_up = still & self._unanswered
        self._unanswered = still & ~given_up
        self._mark_covers = 0
        if not given_up or self._waiter_connected.done():
            return
        self.log.debug(
            "%s: no reply to %s before the timing mark; going on without",
            self.peer,
            ", ".join(key for key, bit in _AWAITING.items() if given_up & bit),
        )
        self._awaiting &= ~given_up
        if given_up & _AWAITING["ttype"]:
            self._end_ttype_cycle()

    def _binary_matters(self) -> bool:
        """Whether BINARY can still change this session's encoding."""
        if self.default_encoding is False or self.force_binary or self._agreed_charset():
            return False
        return options.python_codec(super().encoding()) != "ascii"

    def _agreed_charset(self) -> str | None:
        """The charset the client asked for, one way or another, if allowed."""
        return self._lang_charset or self._charset or self._environ_charset or self._mtts_charset

    def encoding(self, outgoing: bool = False, incoming: bool = False) -> str:
        """Encoding for the direction(s) indicated.

        The charset the client agreed to, in both directions and without
        BINARY: LANG from NEW-ENVIRON, then the negotiated CHARSET, then
        NEW-ENVIRON CHARSET, then UTF-8 if MTTS says the client has it. Without
        one, the encoding given to the initializer once BINARY is on in every
        direction asked about (or with ``force_binary``), else US-ASCII.
        """
        agreed = self._agreed_charset()
        if agreed:
            return agreed
        engine = self._engine
        if not self.force_binary and (
            (outgoing and not engine.local_enabled(BINARY))
            or (incoming and not engine.remote_enabled(BINARY))
        ):
            return "US-ASCII"
        return super().encoding(outgoing, incoming)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The protocol's own values, then the transport's, then NEW-ENVIRON variables.

        Besides ``TERM`` (the terminal type, lower case), ``cols``, ``rows`` and
        ``charset``: ``gmcp``, ``msdp``, ``mssp`` (whether the client agreed),
        ``mccp2`` (our output is compressed now), ``mccp3`` (the client's
        input is), ``client_name`` (a MUD client's name, from its TTYPE cycle
        or NEW-ENVIRON CLIENT_NAME), ``mtts`` (its :class:`~workers.telnet.mtts.Mtts`
        flags) and ``ttype1``..``ttypeN`` (the TTYPE replies as sent).
        """
        # the protocol's own values first: status reports read several per session
        value = self._extra.get(name, _MISSING)
        if value is not _MISSING:
            return value
        if name in _OWN_KEYS:
            return default
        if name in _MUD_KEYS:
            if name == "mccp2":
                return self.compressing
            if name == "mccp3":
                return self.inflating
            return self._engine.local_enabled(_MUD_LOCAL[name])
        if name == "charset":
            return self.encoding(incoming=True)
        if name == "term":
            return str(self._extra.get("TERM", "unknown")).lower()
        if name.startswith("ttype") and name[5:].isdigit():
            # served from the list: in _extra they would double its size
            n = int(name[5:])
            return self._ttypes[n - 1] if 0 < n <= len(self._ttypes) else default
        value = super().get_extra_info(name, _MISSING)
        if value is _MISSING:
            return self._environ.get(name, default)
        return value

    def _update_codecs(self) -> None:
        if self.default_encoding is False or self.reader is None or self.writer is None:
            return
        incoming = self.encoding(incoming=True)
        outgoing = self.encoding(outgoing=True)
        if incoming != self.reader.encoding:
            self.reader.set_encoding(incoming)
        if outgoing != self.writer.encoding:
            self.writer.set_encoding(outgoing)

    # --------------------------------------------------------------- identity

    def _identify(self) -> None:
        """client_name, mtts and TERM once the TTYPE cycle is over."""
        identity = mtts.identify(self._ttypes)
        self._ttype_term = identity.terminal
        if identity.client_name and not self._environ.get("CLIENT_NAME"):
            self._extra["client_name"] = identity.client_name
        if identity.mtts is not None:
            self._set_mtts(identity.mtts)  # over NEW-ENVIRON MTTS: the convention's home
        self._update_term()

    def _environ_identity(self, names: set[str]) -> None:
        """NEW-ENVIRON variables that name the client (MNES), and TERM."""
        env = self._environ
        if "CLIENT_NAME" in names and env["CLIENT_NAME"]:
            self._extra["client_name"] = env["CLIENT_NAME"]
        if "MTTS" in names and "mtts" not in self._extra:
            bits = mtts.parse_mtts("MTTS " + env["MTTS"])
            if bits is not None:
                self._set_mtts(bits)
        if "TERM" in names or "TERMINAL_TYPE" in names:
            self._update_term()

    def _set_mtts(self, bits: int) -> None:
        self._extra["mtts"] = mtts.Mtts(bits)
        if bits & mtts.Mtts.UTF8 and self.limits.charsets.codec("UTF-8"):
            self._mtts_charset = "UTF-8"
            self._update_codecs()

    def _update_term(self) -> None:
        env = self._environ
        term = env.get("TERM") or env.get("TERMINAL_TYPE") or self._ttype_term
        if term:
            self._extra["TERM"] = term.lower()

    # ----------------------------------------------------------------- events

    def on_option_enabled(self, option: int, local: bool) -> None:
        if option == BINARY:
            self._update_codecs()
        elif local:
            if option == MCCP2:
                self.start_compressing()
            elif option == MSSP:
                self._send_mssp()
            return
        elif option == TM:
            self._mark_answered()
        elif option == TTYPE:
            self._ask_ttype(min(self.TTYPE_PIPELINE, self.TTYPE_LOOPMAX))
        elif option == NEW_ENVIRON:
            for payload in _ENVIRON_SEND:
                self._engine.send_subnegotiation(NEW_ENVIRON, payload)
                self._environ_replies_due += 1
            self._await("environ")
        elif option == CHARSET:
            request = _charset_request(self.limits.charsets)
            if request is None:  # the operator allows none of what we offer
                self._engine.request_remote(CHARSET, False)
            else:
                self._engine.send_subnegotiation(CHARSET, request)
                self._await("charset")
        elif option == NAWS:
            self._await("naws")
        elif option == TSPEED:
            self._request_value(TSPEED, "tspeed")
        elif option == XDISPLOC:
            self._request_value(XDISPLOC, "xdisploc")

    def _await(self, key: str) -> None:
        self._awaiting |= _AWAITING[key]

    def _received_reply(self, key: str) -> None:
        self._awaiting &= ~_AWAITING[key]
        self._replying(key)

    def _replying(self, key: str) -> None:
        """The client answers ``key``: marks sent before say nothing about what is asked next."""
        bit = _AWAITING[key]
        self._mark_covers &= ~bit
        self._unanswered &= ~bit

    def _request_value(self, option: int, key: str) -> None:
        self._engine.send_subnegotiation(option, options.send_request())
        self._await(key)

    def on_option_disabled(self, option: int, local: bool, refused: bool) -> None:
        if option == BINARY:
            self._update_codecs()
        if local:
            if option == MCCP2:
                self.stop_compressing()
            elif option == MSDP and self._mud is not None:
                self._mud.msdp.reset()
            return
        if option == TM:
            self._mark_answered()
        elif option == TTYPE:
            self._end_ttype_cycle()
        else:
            for key, opt in (
                ("tspeed", TSPEED),
                ("xdisploc", XDISPLOC),
                ("naws", NAWS),
                ("charset", CHARSET),
                ("environ", NEW_ENVIRON),
            ):
                if opt == option:
                    self._received_reply(key)

    # ------------------------------------------------------------ MUD protocols

    def _send_mssp(self) -> None:
        self._engine.send_subnegotiation(
            MSSP, self.mud.mssp_payload(tls=bool(self.get_extra_info("tls")))
        )

    def _on_gmcp(self, payload: bytes) -> None:
        if not self._engine.local_enabled(GMCP):
            raise ValueError("GMCP message without GMCP agreed")
        package, data = gmcp.decode(payload)
        try:
            delivered = self.mud_session().gmcp_received(payload, package, data)
        except Exception as exc:  # the shell's callback: a shell failure, not the client's
            self._shell_failed(exc)
            return
        if not delivered:
            self.counters["gmcp_dropped"] += 1

    def _on_msdp(self, payload: bytes) -> None:
        if not self._engine.local_enabled(MSDP):
            raise ValueError("MSDP data without MSDP agreed")
        session = self.mud_session()
        received = session.msdp.receive(payload)
        for reply in received.replies:
            self._engine.send_subnegotiation(MSDP, reply)
        callback = session.msdp_callback
        if callback is not None:
            try:
                for name, value in received.variables:
                    callback(name, value)
            except Exception as exc:  # the shell's callback: a shell failure, not the client's
                self._shell_failed(exc)

    def _on_mccp3(self, payload: bytes) -> None:
        # the engine stopped right after this: what follows is compressed only
        # if MCCP3 is on; refused, it is parsed as telnet from the next turn
        if not self._engine.local_enabled(MCCP3) or payload:
            raise ValueError("MCCP3 start without MCCP3 agreed")
        if self.inflating:
            raise ValueError("MCCP3 start inside a compressed stream")
        self.take_compressed_input()

    def on_command(self, cmd: int) -> None:
        if cmd == AYT:
            self._send(b"\r\n[Yes]\r\n")
        else:
            super().on_command(cmd)

    def on_subnegotiation(self, option: int, payload: bytes) -> None:
        handler = self._SB_HANDLERS.get(option)
        if handler is None:
            super().on_subnegotiation(option, payload)
            return
        try:
            handler(self, payload)
        except ValueError as exc:
            self.protocol_warning(
                "bad %s subnegotiation: %s (%r)", name_option(option), exc, payload[:64]
            )

    def _ask_ttype(self, count: int) -> None:
        for _ in range(count):
            self._engine.send_subnegotiation(TTYPE, options.send_request())
        self._ttype_asked += count
        self._await("ttype")

    def _on_ttype(self, payload: bytes) -> None:
        if not self._ttype_asked:
            # keeping more would let a client grow the list without bound
            raise ValueError("TTYPE IS that was not asked for")
        self._ttype_asked -= 1
        self._replying("ttype")
        value = options.parse_is(payload)[: self.limits.max_value_length]
        if self._ttype_done:
            return  # the answer to a SEND asked with others before the cycle ended
        ttypes = self._ttypes
        if ttypes and value == ttypes[-1]:
            value = ttypes[-1]  # the usual end of a cycle: keep one copy
        ttypes.append(value)
        if len(ttypes) == 1:
            # until the cycle says more (a MUD client sends its name first)
            self._ttype_term = value
            self._update_term()
        if mtts.cycle_ended(ttypes) or len(ttypes) >= self.TTYPE_LOOPMAX:
            self._end_ttype_cycle()
        elif not self._ttype_asked:
            self._ask_ttype(1)

    def _end_ttype_cycle(self) -> None:
        if self._ttype_done:
            return
        self._ttype_done = True
        self._received_reply("ttype")
        self._identify()

    def _on_naws(self, payload: bytes) -> None:
        cols, rows = options.parse_naws(payload)
        # 0 means "unknown" (RFC 1073): keep what we had
        if cols:
            self._extra["cols"] = cols
        if rows:
            self._extra["rows"] = rows
        self._naws_seen = True
        self._received_reply("naws")

    def _on_environ(self, payload: bytes) -> None:
        verb, items = options.parse_environ(payload)
        if verb == SEND:
            raise ValueError("a client may not ask the server for its environment")
        if verb == IS and self._environ_replies_due:
            self._environ_replies_due -= 1
            self._replying("environ")
            if not self._environ_replies_due:
                self._received_reply("environ")
        kept = self._environ
        limits = self.limits
        size = sum(len(name) + len(value) for name, value in kept.items())
        dropped = 0
        identity: set[str] = set()
        for _kind, name, value in items:
            if not name or value is None:
                continue
            grows = len(name) + len(value) - (len(name) + len(kept[name]) if name in kept else 0)
            if (name not in kept and len(kept) >= limits.max_environ_vars) or (
                size + grows > limits.max_environ_bytes
            ):
                dropped += 1
                continue
            kept[name] = value
            size += grows
            if name in _IDENTITY_VARS:
                identity.add(name)
            elif name in ("COLUMNS", "LINES") and value.isdigit() and not self._naws_seen:
                self._extra["cols" if name == "COLUMNS" else "rows"] = int(value)
            elif name == "LANG":
                self._choose_lang(value)
            elif name == "CHARSET":
                self._choose_environ_charset(value)
        if identity:
            self._environ_identity(identity)
        if dropped:
            self.protocol_warning(
                "NEW-ENVIRON: %d variables dropped, past %d variables or %d bytes",
                dropped,
                limits.max_environ_vars,
                limits.max_environ_bytes,
            )

    def _choose_lang(self, lang: str) -> None:
        charset = options.lang_charset(lang)
        if charset is None:
            return
        if self.limits.charsets.codec(charset) is None:
            self.protocol_warning("refused charset %r of NEW-ENVIRON LANG", charset[:64])
            return
        self._lang_charset = charset
        self._update_codecs()

    def _choose_environ_charset(self, charset: str) -> None:
        # MNES: MUD clients (TinTin++, Mudlet) name their charset this way
        if not charset:
            return
        if self.limits.charsets.codec(charset) is None:
            self.protocol_warning("refused charset %r of NEW-ENVIRON CHARSET", charset[:64])
            return
        self._environ_charset = charset
        self._update_codecs()

    def _on_charset(self, payload: bytes) -> None:
        verb, names = options.parse_charset(payload)
        if verb == CHARSET_ACCEPTED:
            if self.limits.charsets.codec(names[0]) is None:
                self._received_reply("charset")
                raise ValueError(f"client accepted charset {names[0][:64]!r}, which is refused")
            self._charset = names[0]
            self._extra["charset"] = names[0]
            self._received_reply("charset")
            self._update_codecs()
        elif verb == CHARSET_REJECTED:
            self._received_reply("charset")
        elif verb == CHARSET_REQUEST:
            chosen = self._choose_charset(names)
            self._engine.send_subnegotiation(CHARSET, options.build_charset_reply(chosen))
            if chosen is not None:
                self._charset = chosen
                self._extra["charset"] = chosen
                self._received_reply("charset")
                self._update_codecs()
        elif verb == CHARSET_TTABLE_IS:
            self._engine.send_subnegotiation(CHARSET, bytes((CHARSET_TTABLE_REJECTED,)))

    def _choose_charset(self, offered: list[str]) -> str | None:
        charsets = self.limits.charsets
        known = [(name, charsets.codec(name)) for name in offered]
        for name, codec in known:
            if codec == "utf-8":
                return name
        for name, codec in known:
            if codec is not None:
                return name
        return None

    def _on_value(self, key: str, payload: bytes) -> None:
        self._extra[key] = options.parse_is(payload)[: self.limits.max_value_length]
        self._received_reply(key)

    def _on_status(self, payload: bytes) -> None:
        if payload[:1] != bytes((SEND,)):
            raise ValueError("only STATUS SEND is expected from a client")
        engine = self._engine
        report = bytearray((IS,))
        for opt in range(256):
            if engine.local_enabled(opt):
                report += bytes((WILL, opt))
            if engine.remote_enabled(opt):
                report += bytes((DO, opt))
        engine.send_subnegotiation(STATUS, bytes(report))

    _SB_HANDLERS = {
        TTYPE: _on_ttype,
        NAWS: _on_naws,
        NEW_ENVIRON: _on_environ,
        CHARSET: _on_charset,
        TSPEED: lambda self, p: self._on_value("tspeed", p),
        XDISPLOC: lambda self, p: self._on_value("xdisploc", p),
        STATUS: _on_status,
        GMCP: _on_gmcp,
        MSDP: _on_msdp,
        MCCP3: _on_mccp3,
    }
