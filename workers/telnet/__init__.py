"""The telnet protocol, sans-I/O: bytes in, data, events and bytes to send out.

- ``engine``: the parser and RFC 1143 option state, in either role;
- ``telopt``: command and option codes, and their names;
- ``options``: subnegotiation payloads (TTYPE, NAWS, NEW-ENVIRON, CHARSET, ...);
- ``gmcp``, ``msdp``, ``mssp``: the MUD protocols' payloads (and MSDP's and
  MSSP's server side);
- ``mccp``: MCCP2/MCCP3 compression, a zlib stream either way;
- ``client``: the client role that answers a server as a terminal would.

Nothing here touches a socket or an event loop: the server protocol, the
load-test client and the tests all drive these objects directly. This is the
only place bytes from the network are parsed.
"""
