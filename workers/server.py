"""TelnetServer: negotiates terminal type, window size, environment, charset, binary."""

from __future__ import annotations

import functools
from typing import Any

from workers.server_base import BaseServer
from workers.telnet import options
from workers.telnet.charsets import Charsets
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
    ECHO,
    ENV_USERVAR,
    ENV_VAR,
    EOR,
    IS,
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


class TelnetServer(BaseServer):
    """Telnet server protocol negotiating what real clients support."""

    TTYPE_LOOPMAX = 8

    __slots__ = (
        "_awaiting",
        "_charset",
        "_environ",
        "_environ_replies_due",
        "_lang_charset",
        "_naws_seen",
        "_ttypes",
    )

    accept_local = frozenset({SGA, ECHO, BINARY, EOR, STATUS, TM})
    accept_remote = frozenset(
        {TTYPE, NAWS, NEW_ENVIRON, CHARSET, BINARY, TSPEED, XDISPLOC, EOR, SGA}
    )

    def __init__(
        self, *args: Any, term: str = "unknown", cols: int = 80, rows: int = 25, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # 'term' is TERM in lower case, derived when asked for
        self._extra.update({"TERM": term.upper(), "cols": cols, "rows": rows})
        self._ttypes: list[str] = []
        self._awaiting = 0  # bits of _AWAITING
        self._environ_replies_due = 0
        self._charset: str | None = None
        # What the client sent by NEW-ENVIRON, kept apart so that it can never
        # override what the server knows itself (peername, cols, ...).
        self._environ: dict[str, str] = {}
        self._lang_charset: str | None = None  # from LANG, once allowed
        self._naws_seen = False

    # ------------------------------------------------------------ negotiation

    def begin_negotiation(self) -> None:
        super().begin_negotiation()
        self._engine.request_remote(TTYPE)

    def begin_advanced_negotiation(self) -> None:
        super().begin_advanced_negotiation()
        engine = self._engine
        engine.request_local(SGA)
        engine.request_local(ECHO)
        engine.request_local(BINARY)
        engine.request_remote(BINARY)
        engine.request_remote(NAWS)
        engine.request_remote(NEW_ENVIRON)
        engine.request_remote(CHARSET)

    def check_negotiation(self, final: bool = False) -> bool:
        parent = super().check_negotiation(final)
        if not parent or self._awaiting:
            return False
        # A client that agreed to TTYPE will also be asked for the rest: wait
        # until advanced negotiation has at least been sent.
        return self._advanced or not self._acknowledged

    def encoding(self, outgoing: bool = False, incoming: bool = False) -> str:
        """Encoding for the direction(s) indicated.

        US-ASCII unless BINARY is on in every direction asked about (or
        ``force_binary``); then LANG from NEW-ENVIRON, the negotiated CHARSET,
        or the encoding given to the initializer, in that order.
        """
        engine = self._engine
        if not self.force_binary and (
            (outgoing and not engine.local_enabled(BINARY))
            or (incoming and not engine.remote_enabled(BINARY))
        ):
            return "US-ASCII"
        if self._lang_charset:
            return self._lang_charset
        if self._charset:
            return self._charset
        return super().encoding(outgoing, incoming)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The protocol's own values, then the transport's, then NEW-ENVIRON variables."""
        # the protocol's own values first: status reports read three per session
        value = self._extra.get(name, _MISSING)
        if value is not _MISSING:
            return value
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

    # ----------------------------------------------------------------- events

    def on_option_enabled(self, option: int, local: bool) -> None:
        if option == BINARY:
            self._update_codecs()
        elif local:
            return
        elif option == TTYPE:
            self._request_value(TTYPE, "ttype")
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

    def _request_value(self, option: int, key: str) -> None:
        self._engine.send_subnegotiation(option, options.send_request())
        self._await(key)

    def on_option_disabled(self, option: int, local: bool, refused: bool) -> None:
        if option == BINARY:
            self._update_codecs()
        if not local:
            for key, opt in (
                ("ttype", TTYPE),
                ("tspeed", TSPEED),
                ("xdisploc", XDISPLOC),
                ("naws", NAWS),
                ("charset", CHARSET),
                ("environ", NEW_ENVIRON),
            ):
                if opt == option:
                    self._received_reply(key)

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

    def _on_ttype(self, payload: bytes) -> None:
        if not self._awaiting & _AWAITING["ttype"]:
            # the cycle is over (or was never asked for): keeping more would let
            # a client grow the list without bound
            raise ValueError("TTYPE IS that was not asked for")
        value = options.parse_is(payload)[: self.limits.max_value_length]
        if self._ttypes and value == self._ttypes[-1]:
            value = self._ttypes[-1]  # the usual end of a cycle: keep one copy
        self._ttypes.append(value)
        n = len(self._ttypes)
        if n == 1 and "TERM" not in self._environ:
            self._set_term(value)
        repeated = n > 1 and value in (self._ttypes[0], self._ttypes[-2])
        if repeated or n >= self.TTYPE_LOOPMAX:
            self._received_reply("ttype")
        else:
            self._engine.send_subnegotiation(TTYPE, options.send_request())

    def _set_term(self, value: str) -> None:
        self._extra["TERM"] = value

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
            if not self._environ_replies_due:
                self._received_reply("environ")
        kept = self._environ
        limits = self.limits
        size = sum(len(name) + len(value) for name, value in kept.items())
        dropped = 0
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
            if name == "TERM" and value:
                self._set_term(value)
            elif name in ("COLUMNS", "LINES") and value.isdigit() and not self._naws_seen:
                self._extra["cols" if name == "COLUMNS" else "rows"] = int(value)
            elif name == "LANG":
                self._choose_lang(value)
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
    }
