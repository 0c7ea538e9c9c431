"""Hostile telnet input for the ``hostile`` scenario: a pure function of (seed, session).

No sockets, no clock: :func:`schedule` says which attack kind each session
of a run gets and how many inputs (chunks, one write each) it sends, and
:func:`attack` builds that session's bytes. Session ``g`` draws everything
from ``random.Random(seed * SPAN + g)``, so a seed gives the same inputs
however the run is split over client processes. The byte sequences are
built with the codes and subnegotiation codecs of :mod:`workers.telnet`.

Every kind's inputs are bounded: at most ``MAX_INPUT_BYTES`` each and
``MAX_SESSION_BYTES`` a session (each kind's ``max_inputs`` times its
largest input stays within it).
"""

from __future__ import annotations

import bz2
import codecs
import functools
import random
import string
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from workers.telnet import options
from workers.telnet.engine import escape
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
    DONT,
    ENV_ESC,
    ENV_USERVAR,
    ENV_VALUE,
    ENV_VAR,
    GMCP,
    IAC,
    IAC_BYTE,
    INFO,
    IS,
    LINEMODE,
    MSSP,
    NAWS,
    NEW_ENVIRON,
    NOP,
    SB,
    SE,
    SEND,
    STATUS,
    TM,
    TSPEED,
    TTYPE,
    WILL,
    WONT,
    XDISPLOC,
)

MAX_INPUT_BYTES = 16 << 10
MAX_SESSION_BYTES = 1 << 20
#: sessions a seed numbers apart: session g of seed s draws from Random(s * SPAN + g)
SPAN = 1 << 20

#: Python codecs a client may try to make its session use: bytes-to-bytes
#: codecs (bz2 and zlib decompress whatever arrives), text codecs that raise
#: on ordinary text or keep state, and names that resolve to nothing useful
CODECS = (
    "bz2",
    "zlib",
    "hex",
    "base64",
    "uu",
    "rot13",
    "quopri",
    "punycode",
    "utf-16",
    "utf-32",
    "utf-7",
    "idna",
    "utf-16-be",
    "utf-32-le",
    "utf-8-sig",
    "unicode_escape",
    "raw_unicode_escape",
    "undefined",
    "cp037",
    "iso2022_jp",
    "big5",
)
#: how a codec is chosen: NEW-ENVIRON LANG=x.<codec>, CHARSET ACCEPTED <codec>
#: after the server's request, or the client's own CHARSET REQUEST
CODEC_ROUTES = ("lang", "accepted", "request")

# Ends whatever sequence an attack left open, from any parser state: after
# it, the server's parser is between sequences (IAC NOP is a command, or
# data, or a subnegotiation's content or its cut; IAC SE ends an SB or is a
# command).
RESYNC = bytes((IAC, NOP, IAC, SE))

_ALNUM = string.ascii_letters + string.digits
_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "
_SB_OPTIONS = (TTYPE, NAWS, NEW_ENVIRON, CHARSET, TSPEED, XDISPLOC, STATUS, LINEMODE, GMCP, MSSP)
_BINARY_TOGGLES = tuple(bytes((IAC, verb, BINARY)) for verb in (WONT, DONT, WILL, DO))

Build = Callable[[random.Random, int], list[bytes]]


#: how a session of a kind ends (see :class:`Kind`)
PROBE, CLOSE, RESET, HOLD = "probe", "close", "reset", "hold"


@dataclass(frozen=True)
class Kind:
    """An attack kind: how its inputs are made and how its session behaves."""

    name: str
    help: str
    #: a session of this kind sends 1 to max_inputs inputs (0: none at all)
    max_inputs: int
    build: Build
    #: answer the server like a terminal until its shell speaks, before the
    #: attack: "always", "never", or "either" (drawn per session)
    negotiate: str = "either"
    #: the session reads what the server sends; if not, it stops reading
    #: once set up (or at once, if it does not negotiate)
    reads: bool = True
    #: after its inputs: PROBE checks the session survived (IAC DO
    #: TIMING-MARK), then sends EOF; CLOSE closes as soon as the server
    #: answers, while it is still writing; RESET resets (SO_LINGER 0) once
    #: some output waits unread; HOLD waits ``hold`` seconds. Only PROBE
    #: leaves a usable connection: for the others, the server ending the
    #: session is a legitimate outcome.
    ending: str = PROBE
    #: (low, high): seconds a HOLD session waits after its last input, drawn
    hold: tuple[float, float] = (0.0, 0.0)

    @property
    def probes(self) -> bool:
        return self.ending == PROBE


@dataclass(frozen=True)
class Planned:
    """One session of a run's schedule."""

    number: int
    kind: str
    inputs: int


@dataclass(frozen=True)
class Attack:
    """What one session sends and how it behaves."""

    number: int
    kind: Kind
    chunks: list[bytes]
    negotiate: bool
    hold: float


# ------------------------------------------------------------------- helpers


def _sb(option: int, payload: bytes) -> bytes:
    return bytes((IAC, SB, option)) + escape(payload) + bytes((IAC, SE))


def _neg(verb: int, option: int) -> bytes:
    return bytes((IAC, verb, option))


def _word(rng: random.Random, low: int, high: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choices(alphabet, k=rng.randint(low, high)))


def _junk_name(rng: random.Random) -> bytes:
    # no codec is named x-...: this is garbage, never a codec choice
    return b"x-" + _word(rng, 0, 22, _PRINTABLE).encode()


def _inband(data: bytes) -> bytes:
    """Bytes that reach the shell as they are: IACs doubled."""
    return escape(data)


def _line(rng: random.Random, low: int = 1, high: int = 60) -> bytes:
    # never "quit": that would end the welcome shell's session on purpose
    return f"w{_word(rng, low, high, _PRINTABLE)}\r\n".encode()


# --------------------------------------------------------------- the kinds


def _random(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(rng.randint(1, 4096)) for _ in range(n)]


def _iac(rng: random.Random, n: int) -> list[bytes]:
    # half the sessions repeat one byte that is no command (the review's 1 MB
    # of IAC 0x01), the others follow IAC with anything
    fixed = (0x01, rng.randrange(239))[rng.randrange(2)] if rng.random() < 0.5 else None
    chunks = []
    for _ in range(n):
        pairs = rng.randint(256, 2048)
        seq = bytearray(2 * pairs)
        seq[0::2] = IAC_BYTE * pairs
        seq[1::2] = bytes((fixed,)) * pairs if fixed is not None else rng.randbytes(pairs)
        chunks.append(bytes(seq))
    return chunks


def _sb_garbage(rng: random.Random, n: int) -> list[bytes]:
    chunks: list[bytes] = []
    while len(chunks) < n:
        room = n - len(chunks)
        option = rng.choice(_SB_OPTIONS) if rng.random() < 0.7 else rng.randrange(256)
        start = bytes((IAC, SB, option))
        variant = rng.randrange(4)
        if variant == 0 and room >= 3:
            # past the server's 8 KiB cap, over several inputs, then ended
            pieces = rng.randint(3, min(room, 8))
            for i in range(pieces):
                part = escape(rng.randbytes(4096))
                chunks.append(
                    (start if i == 0 else b"")
                    + part
                    + (b"" if i < pieces - 1 else bytes((IAC, SE)))
                )
        elif variant == 1:
            # never ended: the next input, or the probe, cuts it
            chunks.append(start + escape(rng.randbytes(rng.randint(0, 2048))))
        elif variant == 2:
            verb = rng.choice((WILL, WONT, DO, DONT))
            cut = (bytes((IAC, NOP)), _neg(verb, rng.randrange(256)), bytes((IAC, SB)))
            chunks.append(start + escape(rng.randbytes(rng.randint(0, 2048))) + rng.choice(cut))
        else:
            # IACs not doubled: whatever they turn out to be
            chunks.append(start + rng.randbytes(rng.randint(0, 4096)))
    return chunks


def _ttype(rng: random.Random, n: int) -> list[bytes]:
    serial = 0
    chunks = []
    for i in range(n):
        parts = [_neg(WILL, TTYPE)] if i == 0 else []
        for _ in range(rng.randint(1, 64)):
            if rng.random() < 0.8:
                # distinct values: a server that keeps each one grows with them
                serial += 1
                payload = options.build_is(f"{_word(rng, 1, 24)}-{serial}")
            else:
                payload = rng.choice(
                    (
                        b"",
                        bytes((SEND,)),
                        bytes((IS,)) + rng.randbytes(rng.randint(0, 100)),
                        bytes((rng.randrange(2, 256),)) + rng.randbytes(8),
                        options.build_is(_word(rng, 60, 100, _PRINTABLE)),
                    )
                )
            parts.append(_sb(TTYPE, payload))
        chunks.append(b"".join(parts))
    return chunks


def _environ_garbage(rng: random.Random) -> bytes:
    return rng.choice(
        (
            options.build_environ_send([(ENV_VAR, "USER"), (ENV_USERVAR, "")])[0],
            b"",
            bytes((IS,)) + _word(rng, 1, 40).encode(),
            bytes((IS, ENV_VAR)) + b"X" + bytes((ENV_ESC,)),
            bytes((IS, ENV_VALUE)) + _word(rng, 1, 40).encode(),
            bytes((IS, ENV_USERVAR, ENV_VALUE, ENV_VALUE, ENV_ESC, ENV_ESC)),
            bytes((rng.choice((IS, INFO)),)) + rng.randbytes(rng.randint(1, 400)),
            bytes((rng.randrange(3, 256),)) + rng.randbytes(16),
        )
    )


def _environ(rng: random.Random, n: int) -> list[bytes]:
    chunks = []
    for i in range(n):
        prefix = _neg(WILL, NEW_ENVIRON) if i == 0 else b""
        if rng.random() < 0.6:
            # many distinct variables, sometimes past the SB cap
            variables = {
                f"{_word(rng, 1, 8)}_{i}_{j}": _word(rng, 0, 16) for j in range(rng.randint(1, 200))
            }
            if rng.random() < 0.2:
                variables["LANG"] = "en_US." + _junk_name(rng).decode()
            payload = options.build_environ_is(variables, verb=rng.choice((IS, INFO)))
        else:
            payload = _environ_garbage(rng)
        chunks.append(prefix + _sb(NEW_ENVIRON, payload))
    return chunks


def _charset_payload(rng: random.Random) -> bytes:
    variant = rng.randrange(9)
    if variant == 0:
        sep = rng.choice((b";", b",", b" ", b"\x00", b"|"))
        names = [_junk_name(rng) for _ in range(rng.randint(0, 20))]
        if rng.random() < 0.2:
            names.append(b"UTF-8")
        return bytes((CHARSET_REQUEST,)) + sep + sep.join(names)
    if variant == 1:
        return bytes((CHARSET_REQUEST,)) + b"[TTABLE]" + rng.randbytes(rng.randint(0, 64))
    if variant == 2:
        return bytes((CHARSET_REQUEST,))
    if variant == 3:
        return bytes((CHARSET_ACCEPTED,)) + _junk_name(rng)
    if variant == 4:
        return bytes((CHARSET_ACCEPTED,))
    if variant == 5:
        return bytes((rng.choice((CHARSET_REJECTED, CHARSET_TTABLE_REJECTED)),))
    if variant == 6:
        return bytes((CHARSET_TTABLE_IS,)) + rng.randbytes(rng.randint(0, 200))
    if variant == 7:
        return bytes((rng.randrange(6, 256),)) + rng.randbytes(rng.randint(0, 32))
    return b""


def _charset(rng: random.Random, n: int) -> list[bytes]:
    chunks = []
    for i in range(n):
        parts = [_neg(WILL, CHARSET)] if i == 0 else []
        parts += [_sb(CHARSET, _charset_payload(rng)) for _ in range(rng.randint(1, 16))]
        chunks.append(b"".join(parts))
    return chunks


def choose_codec(codec: str, route: str, rng: random.Random) -> bytes:
    """The sequence by which a client asks for ``codec`` by ``route`` (see CODEC_ROUTES)."""
    if route == "lang":
        lang = f"{rng.choice(('en_US', 'C', 'de_DE'))}.{codec}"
        return _neg(WILL, NEW_ENVIRON) + _sb(NEW_ENVIRON, options.build_environ_is({"LANG": lang}))
    if route == "accepted":
        return _sb(CHARSET, options.build_charset_reply(codec))
    return _neg(WILL, CHARSET) + _sb(CHARSET, options.build_charset_request([codec]))


def _encoded(text: str, codec: str) -> bytes:
    """``text`` as a client speaking ``codec`` would send it, if the codec can."""
    # text codecs take str, bytes-to-bytes codecs (hex, bz2) bytes: try both
    encode: Callable[[str | bytes, str], object] = codecs.encode
    for value in (text, text.encode()):
        try:
            out = encode(value, codec)
        except Exception:  # each codec fails its own way: then the text as it is
            continue
        return out if isinstance(out, bytes) else str(out).encode("utf-8", "replace")
    return text.encode()


@functools.lru_cache(maxsize=32)
def _bomb(codec: str, power: int) -> bytes:
    """2**power zero bytes compressed: what a decompressing codec expands."""
    zeros = bytes(1 << power)
    return bz2.compress(zeros) if codec == "bz2" else zlib.compress(zeros, 9)


def _codec(rng: random.Random, n: int) -> list[bytes]:
    codec = rng.choice(CODECS)
    binary = _neg(WILL, BINARY) + _neg(DO, BINARY)
    chunks = [binary + choose_codec(codec, rng.choice(CODEC_ROUTES), rng) + _line(rng)]
    for _ in range(n - 1):
        variant = rng.randrange(5)
        if variant == 0:
            chunks.append(_line(rng))
        elif variant == 1:
            chunks.append(_inband(_encoded(_line(rng).decode(), codec)))
        elif variant == 2:
            chunks.append(_inband(rng.randbytes(rng.randint(1, 1024))))
        elif variant == 3 and codec in ("bz2", "zlib"):
            # expands to 16 MiB at most (zlib's 8 MiB fit in 8 KiB): a worker
            # that decompresses what arrives shows it, and the machine survives
            power = rng.randint(10, 24 if codec == "bz2" else 23)
            chunks.append(_inband(_bomb(codec, power)) + _line(rng))
        else:
            codec = rng.choice(CODECS)
            chunks.append(choose_codec(codec, rng.choice(CODEC_ROUTES), rng) + _line(rng))
    return chunks


def _naws(rng: random.Random, n: int) -> list[bytes]:
    chunks = []
    for i in range(n):
        parts = [_neg(WILL, NAWS)] if i == 0 else []
        updates = rng.randint(64, 288)
        sizes = rng.randbytes(4 * updates)
        for j in range(updates):
            payload = sizes[4 * j : 4 * j + 4]
            if rng.random() < 0.02:  # a malformed one now and then
                payload = payload[: rng.randrange(4)] if rng.random() < 0.5 else payload + b"\x00"
            parts.append(_sb(NAWS, payload))
        chunks.append(b"".join(parts))
    return chunks


def _partial_char(rng: random.Random) -> tuple[bytes, bytes]:
    """A multi-byte UTF-8 character cut in two (surrogates included: invalid UTF-8)."""
    low, high = rng.choice(((0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF)))
    encoded = chr(rng.randint(low, high)).encode("utf-8", "surrogatepass")
    cut = rng.randint(1, len(encoded) - 1)
    return encoded[:cut], encoded[cut:]


def _binary(rng: random.Random, n: int) -> list[bytes]:
    chunks = []
    for i in range(n):
        parts = [_neg(WILL, BINARY) + _neg(DO, BINARY)] if i == 0 else []
        for _ in range(rng.randint(1, 64)):
            head, tail = _partial_char(rng)
            parts.append(head)
            parts.append(b"".join(rng.choice(_BINARY_TOGGLES) for _ in range(rng.randint(1, 4))))
            parts.append(
                rng.choice(
                    (tail, b"", _inband(rng.randbytes(rng.randint(1, 8))), _line(rng, 1, 20))
                )
            )
        chunks.append(b"".join(parts))
    return chunks


def _output_wanted(rng: random.Random, n: int) -> list[bytes]:
    """Inputs the server answers at length: AYT and DO TIMING-MARK floods, text to echo."""
    chunks = []
    for _ in range(n):
        variant = rng.randrange(4)
        if variant == 0:
            chunks.append(bytes((IAC, AYT)) * rng.randint(512, 4096))
        elif variant == 1:
            chunks.append(_neg(DO, TM) * rng.randint(512, 4096))
        elif variant == 2:
            chunks.append(b"".join(_line(rng, 16, 120) for _ in range(rng.randint(8, 64))))
        else:
            # one long line: a shell echoing it writes once a character
            chunks.append(_word(rng, 1024, 8192, _PRINTABLE).encode())
    return chunks


def _nothing(rng: random.Random, n: int) -> list[bytes]:
    return []


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("random", "random bytes", 64, _random),
        Kind("iac", "IAC followed by random or invalid command bytes", 256, _iac),
        Kind("sb", "unterminated, cut and oversized (past 8 KiB) subnegotiations", 64, _sb_garbage),
        Kind("ttype", "many distinct and malformed TTYPE replies", 64, _ttype),
        Kind("environ", "many NEW-ENVIRON variables, malformed payloads", 64, _environ),
        Kind("charset", "malformed CHARSET requests and replies, unknown names", 64, _charset),
        Kind(
            "codec",
            "a Python codec chosen by LANG or CHARSET (bz2, hex, utf-16, ...), then text",
            32,
            _codec,
            negotiate="always",
        ),
        Kind("naws", "NAWS floods", 256, _naws),
        Kind("binary", "partial UTF-8 cut by BINARY toggles", 64, _binary, negotiate="always"),
        Kind(
            "close",
            "AYT, DO TIMING-MARK or text to echo, then a close while the server writes",
            64,
            _output_wanted,
            negotiate="always",
            ending=CLOSE,
        ),
        Kind(
            "reset",
            "AYT, DO TIMING-MARK or text to echo, output left unread, then a reset",
            64,
            _output_wanted,
            negotiate="always",
            reads=False,
            ending=RESET,
        ),
        Kind(
            "never-read",
            "AYT, DO TIMING-MARK or text to echo, reading nothing, for 0.5-2 s",
            64,
            _output_wanted,
            negotiate="never",
            reads=False,
            ending=HOLD,
            hold=(0.5, 2.0),
        ),
        Kind(
            "silent",
            "connects and never negotiates or sends, for 0.5-3 s",
            0,
            _nothing,
            negotiate="never",
            ending=HOLD,
            hold=(0.5, 3.0),
        ),
    )
}


def check_kinds(text: str) -> tuple[str, ...]:
    """Kind names from ``all`` or ``a,b,...``, in KINDS order; ValueError says why not."""
    if text.strip() == "all":
        return tuple(KINDS)
    names = [t.strip() for t in text.split(",")]
    unknown = [n for n in names if n not in KINDS]
    if unknown or not names:
        raise ValueError(f"unknown kind {unknown[0]!r}; kinds: all, {', '.join(KINDS)}")
    return tuple(k for k in KINDS if k in names)


# ---------------------------------------------------------------- the schedule


def _rng(seed: int, number: int) -> random.Random:
    return random.Random(seed * SPAN + number)


def _head(rng: random.Random, kinds: Sequence[str]) -> tuple[Kind, int]:
    """A session's kind and wanted inputs: its generator's first draws."""
    kind = KINDS[kinds[rng.randrange(len(kinds))]]
    return kind, rng.randint(1, kind.max_inputs) if kind.max_inputs else 0


def schedule(seed: int, sessions: int, inputs: int, kinds: Sequence[str]) -> Iterator[Planned]:
    """The run's sessions in order, each with its kind and its share of ``inputs``.

    Sessions take the inputs they draw until ``inputs`` are spent (the last
    one gets what is left); the sessions after that are not run.
    """
    left = inputs
    for number in range(min(sessions, SPAN)):
        if left <= 0:
            return
        kind, wanted = _head(_rng(seed, number), kinds)
        share = min(wanted, left)
        left -= share
        yield Planned(number, kind.name, share)


def _unprobed(chunks: list[bytes]) -> list[bytes]:
    """The chunks with every IAC AYT and DO TIMING-MARK defused.

    A probed session's probe is the only DO TIMING-MARK it sends, so a
    WILL or WONT TIMING-MARK that comes back answers the probe and nothing
    else. Done on the whole stream (a sequence may span two inputs), and
    length for length, so the inputs keep their sizes.
    """
    stream = b"".join(chunks)
    clean = stream.replace(bytes((IAC, AYT)), bytes((IAC, NOP))).replace(
        bytes((DO, TM)), bytes((DO, TM + 1))
    )
    if clean == stream:
        return chunks
    out = []
    pos = 0
    for chunk in chunks:
        out.append(clean[pos : pos + len(chunk)])
        pos += len(chunk)
    return out


def attack(seed: int, planned: Planned, kinds: Sequence[str]) -> Attack:
    """The bytes and behaviour of one scheduled session."""
    rng = _rng(seed, planned.number)
    kind, _wanted = _head(rng, kinds)
    negotiate = {"always": True, "never": False}.get(kind.negotiate)
    if negotiate is None:
        negotiate = rng.random() < 0.5
    chunks = kind.build(rng, planned.inputs)
    if kind.probes:
        chunks = _unprobed(chunks)
    hold = rng.uniform(*kind.hold) if kind.hold[1] else 0.0
    return Attack(planned.number, kind, chunks, negotiate, hold)
