"""The metrics endpoint's HTTP server, on the supervisor's selector.

The supervisor runs no threads and no event loop (it forks workers), so
prometheus_client's ``start_http_server`` (a thread) is out: this is a
listening socket registered in the supervisor's selector, and a small
HTTP/1.x responder. One request per connection, ``Connection: close``;
what a peer sends is judged by :class:`shardd.http_request.RequestHead`. A
scrape is answered once the figures are fresh (``refresh``: the supervisor
asks its workers for a report, as for ``shardd status``), and the loop goes
on meanwhile.

Everything a peer can make it hold is bounded: ``MAX_CONNECTIONS``
connections at once (past it a newcomer gets a 503 and is closed), a
request head of ``http_request.MAX_HEAD`` bytes, ``READ_TIMEOUT`` to send
it and ``WRITE_TIMEOUT`` to read the answer (written as the socket becomes
writable, never waited on). Problems are logged through a rate-limited
:class:`~workers.log_limits.WarningLimiter`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from shardd.http_request import Answer, RequestHead, response
from workers.log_limits import WarningLimiter

log = logging.getLogger("shardd.metrics")

MAX_CONNECTIONS = 16
READ_TIMEOUT = 10.0  # from the connection to the end of its request head
WRITE_TIMEOUT = 10.0  # from the answer to its last byte sent
ACCEPTS_PER_EVENT = 64  # so that a flood of connections cannot hold the loop
_RECV = 8 * 1024


class _Connection:
    def __init__(self, sock: socket.socket, host: str, now: float) -> None:
        self.sock = sock
        self.host = host
        self.head = RequestHead()
        self.outbox = memoryview(b"")
        self.deadline = now + READ_TIMEOUT
        self.answered = False


def _at_once(then: Callable[[], None]) -> None:
    then()


class MetricsServer:
    """Serves ``render()`` at ``/metrics`` from ``selector``'s loop."""

    def __init__(
        self,
        sock: socket.socket,
        selector: selectors.BaseSelector,
        render: Callable[[], bytes],
        content_type: str,
        *,
        refresh: Callable[[Callable[[], None]], None] | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """``refresh(then)``: calls ``then`` once the figures ``render`` reads are
        fresh (the supervisor asks its workers for a report first); default: at once."""
        self.sock = sock
        self.refresh = refresh or _at_once
        self.selector = selector
        self.render = render
        self.content_type = content_type
        self.max_connections = max_connections
        self.connections: dict[socket.socket, _Connection] = {}
        self.warnings = WarningLimiter()
        self.scrapes = 0
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, self._accept)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _accept(self, _key: Any, _mask: int) -> None:
        now = time.monotonic()
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: try again on the next event
                self.warnings.warning(log, "*", "metrics: cannot accept: %s", exc)
                return
            conn.setblocking(False)
            host = str(addr[0]) if isinstance(addr, tuple) else "?"
            if len(self.connections) >= self.max_connections:
                self.warnings.warning(
                    log,
                    host,
                    "metrics: %s refused: %d scrape connections already open",
                    host,
                    len(self.connections),
                )
                try:
                    conn.send(response(Answer(503)))
                except OSError:
                    pass
                conn.close()
                continue
            connection = _Connection(conn, host, now)
            self.connections[conn] = connection
            self.selector.register(conn, selectors.EVENT_READ, self._io(connection))

    def _io(self, connection: _Connection) -> Callable[[Any, int], None]:
        def on_event(_key: Any, mask: int) -> None:
            if mask & selectors.EVENT_READ:
                self._read(connection)
            if mask & selectors.EVENT_WRITE and connection.sock in self.connections:
                self._write(connection)

        return on_event

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if connection.answered and connection.outbox:
                # the client is done sending, not reading: finish the answer
                self.selector.modify(connection.sock, selectors.EVENT_WRITE, self._io(connection))
            else:
                self._close(connection)
            return
        if connection.answered:
            return  # what follows a request (a body, a second request) is not read
        answer = connection.head.feed(data)
        if answer is not None:
            self._answer(connection, answer)

    def _answer(self, connection: _Connection, answer: Answer) -> None:
        connection.answered = True
        connection.deadline = time.monotonic() + WRITE_TIMEOUT
        if answer.status == 200:
            self.scrapes += 1
            self.refresh(lambda: self._respond(connection, answer))
            return
        level = logging.WARNING if answer.status in (400, 431) else logging.INFO
        self.warnings.warning(
            log,
            connection.host,
            "metrics: %s: %d (%s)",
            connection.host,
            answer.status,
            answer.problem,
            level=level,
        )
        self._respond(connection, answer)

    def _respond(self, connection: _Connection, answer: Answer) -> None:
        if connection.sock not in self.connections:
            return  # gone while the figures were refreshed
        body = b""
        if answer.status == 200:
            try:
                body = self.render()
            except Exception:
                log.exception("metrics: building the answer failed")
                answer = Answer(503, problem="building the answer failed")
        connection.outbox = memoryview(response(answer, body, self.content_type))
        self._write(connection)
        if connection.sock in self.connections and connection.outbox:
            self.selector.modify(
                connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self._io(connection)
            )

    def _write(self, connection: _Connection) -> None:
        try:
            while connection.outbox:
                sent = connection.sock.send(connection.outbox)
                connection.outbox = connection.outbox[sent:]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._close(connection)

    def expire(self, now: float) -> None:
        """Close connections past their deadline (called from the supervisor's timers)."""
        self.warnings.flush_if_over(now)
        for connection in [c for c in self.connections.values() if now >= c.deadline]:
            what = "to send its answer" if connection.answered else "to send a request"
            self.warnings.warning(
                log,
                connection.host,
                "metrics: %s: closed after waiting %.0fs %s",
                connection.host,
                WRITE_TIMEOUT if connection.answered else READ_TIMEOUT,
                what,
                level=logging.INFO,
            )
            self._close(connection)

    def _close(self, connection: _Connection) -> None:
        if self.connections.pop(connection.sock, None) is None:
            return
        try:
            self.selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        connection.sock.close()

    def close(self) -> None:
        for connection in list(self.connections.values()):
            self._close(connection)
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()

    def close_in_child(self) -> None:
        """In a fresh worker: close the inherited sockets (the selector is the parent's)."""
        for connection in self.connections.values():
            connection.sock.close()
        self.sock.close()
