"""Telnet command and option codes (RFC 854, 855 and the option RFCs)."""

from __future__ import annotations

# Commands (RFC 854).
SE = 240
NOP = 241
DM = 242
BRK = 243
IP = 244
AO = 245
AYT = 246
EC = 247
EL = 248
GA = 249
SB = 250
WILL = 251
WONT = 252
DO = 253
DONT = 254
IAC = 255
EOR_CMD = 239  # RFC 885 end-of-record marker, sent as IAC EOR

IAC_BYTE = b"\xff"
IAC_IAC = b"\xff\xff"

# Options.
BINARY = 0  # RFC 856
ECHO = 1  # RFC 857
SGA = 3  # RFC 858
STATUS = 5  # RFC 859
TM = 6  # RFC 860 timing mark
TTYPE = 24  # RFC 1091
EOR = 25  # RFC 885
NAWS = 31  # RFC 1073
TSPEED = 32  # RFC 1079
LFLOW = 33  # RFC 1372
LINEMODE = 34  # RFC 1184
XDISPLOC = 35  # RFC 1096
NEW_ENVIRON = 39  # RFC 1572
CHARSET = 42  # RFC 2066
MSDP = 69
MSSP = 70
MCCP2 = 86  # MUD Client Compression Protocol v2: server output
MCCP3 = 87  # MCCP v3: client input
GMCP = 201

# Subnegotiation verbs shared by TTYPE, TSPEED, XDISPLOC, NEW_ENVIRON.
IS = 0
SEND = 1
INFO = 2  # NEW_ENVIRON only

# NEW_ENVIRON type bytes (RFC 1572).
ENV_VAR = 0
ENV_VALUE = 1
ENV_ESC = 2
ENV_USERVAR = 3

# CHARSET verbs (RFC 2066).
CHARSET_REQUEST = 1
CHARSET_ACCEPTED = 2
CHARSET_REJECTED = 3
CHARSET_TTABLE_IS = 4
CHARSET_TTABLE_REJECTED = 5

COMMAND_NAMES: dict[int, str] = {
    SE: "SE",
    NOP: "NOP",
    DM: "DM",
    BRK: "BRK",
    IP: "IP",
    AO: "AO",
    AYT: "AYT",
    EC: "EC",
    EL: "EL",
    GA: "GA",
    SB: "SB",
    WILL: "WILL",
    WONT: "WONT",
    DO: "DO",
    DONT: "DONT",
    IAC: "IAC",
    EOR_CMD: "EOR",
}

OPTION_NAMES: dict[int, str] = {
    BINARY: "BINARY",
    ECHO: "ECHO",
    SGA: "SGA",
    STATUS: "STATUS",
    TM: "TIMING-MARK",
    TTYPE: "TTYPE",
    EOR: "EOR",
    NAWS: "NAWS",
    TSPEED: "TSPEED",
    LFLOW: "LFLOW",
    LINEMODE: "LINEMODE",
    XDISPLOC: "XDISPLOC",
    NEW_ENVIRON: "NEW-ENVIRON",
    CHARSET: "CHARSET",
    MSDP: "MSDP",
    MSSP: "MSSP",
    MCCP2: "MCCP2",
    MCCP3: "MCCP3",
    GMCP: "GMCP",
}


def name_command(cmd: int) -> str:
    return COMMAND_NAMES.get(cmd, f"CMD-{cmd}")


def name_option(opt: int) -> str:
    return OPTION_NAMES.get(opt, f"OPT-{opt}")
