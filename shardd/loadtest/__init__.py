"""The bundled load-test client: real telnet sessions on uvloop, loopback only.

Eight scenarios, each a coroutine running in the caller's event loop, in a
module of its own with its result and its registry entry:

- :mod:`~shardd.loadtest.connect`: session setups, ``concurrency`` of them in
  flight;
- :mod:`~shardd.loadtest.echo`: sessions keeping one ``size``-byte message
  each in flight against an echo shell;
- :mod:`~shardd.loadtest.idle`: sessions opened and held, and the server's
  memory for them;
- :mod:`~shardd.loadtest.storm`: sessions arriving at a fixed rate, each held
  a random time;
- :mod:`~shardd.loadtest.hostile`: randomised hostile telnet streams, and
  whether the server and well-behaved bystanders survive them;
- :mod:`~shardd.loadtest.flood`: echo bystanders' round trips alone, then
  while clients flood NAWS, AYT and NOP;
- :mod:`~shardd.loadtest.chat`: players of a talker in rooms, each saying
  lines at a rate, and how long each line takes to reach its whole room;
- :mod:`~shardd.loadtest.shout`: one shout to every player of a talker, and
  how long until the last one hears it.

Every session of the first four answers the server's negotiation like a
terminal client (:class:`~workers.telnet.client.TelnetClientSession`) and
counts as set up when the first in-band byte arrives from the server;
hostile sessions do so only when their attack needs the shell, flood's
flooders stop answering once they flood, and chat's and shout's players
(:mod:`~shardd.loadtest.talker_players`) are set up once the talker
confirms they are in their room.

:mod:`~shardd.loadtest.registry` lists the scenarios; the command line
(:mod:`~shardd.loadtest.cli`) and ``shardd bench`` take everything about a
scenario from its entry there.
"""
