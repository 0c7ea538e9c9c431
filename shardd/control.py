"""The operators' control socket: a Unix socket speaking msgpack.

Requests are maps with a ``cmd`` key (``status``, ``reload``, ``stop``,
``workers`` with ``delta``); every reply is a map with ``ok`` and either the
result or an ``error``. Only the owning uid and root may talk to it
(SO_PEERCRED), and the socket file is mode 0600. A bad request gets an error
reply; nothing a client sends can stop the supervisor.

The server side runs on the supervisor's selector and reaches the
supervisor only through :class:`ControlHandlers` (as gunicorn's
``ctl/handlers.py``): see :mod:`shardd.control_handlers`.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import stat
import struct
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

log = logging.getLogger("shardd.control")

MAX_REQUEST = 64 * 1024
MAX_REPLY = 512 * 2**20
_UCRED = struct.Struct("3i")


def default_path(port: int) -> str:
    """Where the server on ``port`` listens for operators: a directory per port."""
    if os.geteuid() == 0:
        base = "/run/shardd"
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = os.path.join(os.environ["XDG_RUNTIME_DIR"], "shardd")
    else:
        base = f"/tmp/shardd-{os.geteuid()}"
    return os.path.join(base, str(port), "control.sock")


class ControlError(RuntimeError):
    """No server answered, or it refused the request."""


Reply = Callable[[dict[str, Any]], None]


class ControlHandlers(Protocol):
    """What an operator may ask of the server; each returns (or passes) the reply's fields."""

    def status(self, reply: Reply) -> None:
        """Answer with the status fields, once workers have sent fresh reports."""

    def reload(self) -> dict[str, Any]: ...

    def stop(self) -> dict[str, Any]: ...

    def workers(self, delta: int) -> dict[str, Any]: ...


# ---------------------------------------------------------------- server side


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.replied = False


class ControlServer:
    """The listening control socket, served from the supervisor's select loop."""

    def __init__(
        self,
        path: str,
        handlers: ControlHandlers,
        selector: selectors.BaseSelector,
        *,
        own_directory: bool = False,
    ) -> None:
        self.path = path
        self.own_directory = own_directory  # the per-port default: removed with the socket
        self.handlers = handlers
        self.selector = selector
        directory = os.path.dirname(path) or "."
        # the parent must stay traversable for a server that drops root; the
        # directory itself and the socket are private
        base = os.path.dirname(directory) or "."
        os.makedirs(base, mode=0o755, exist_ok=True)
        if os.stat(base).st_uid == os.geteuid():
            os.chmod(base, 0o755)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        self.sock = sock
        self.clients: dict[socket.socket, _Client] = {}
        selector.register(sock, selectors.EVENT_READ, self.accept)

    def _remove_stale(self) -> None:
        """Remove a socket file left by a dead server; refuse if one is alive."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: a leftover
            return
        finally:
            probe.close()
        raise OSError(f"another shardd is already using the control socket {self.path}")

    def accept(self, _key: Any, _mask: int) -> None:
        try:
            conn, _addr = self.sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        uid = _peer_uid(conn)
        if uid is None or uid not in (0, os.geteuid()):
            log.warning("control: refused a client with uid %s", uid)
            conn.close()
            return
        client = _Client(conn)
        self.clients[conn] = client
        self.selector.register(conn, selectors.EVENT_READ, self._io(client))

    def _io(self, client: _Client) -> Any:
        def on_event(_key: Any, mask: int) -> None:
            if mask & selectors.EVENT_READ:
                self._read(client)
            if mask & selectors.EVENT_WRITE and client.sock in self.clients:
                self._write(client)

        return on_event

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        if client.replied:
            return
        client.inbox += data
        if len(client.inbox) > MAX_REQUEST:
            self._reply(client, {"ok": False, "error": "request too large"})
            return
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_REQUEST)
        unpacker.feed(bytes(client.inbox))
        try:
            request = next(unpacker)
        except StopIteration:
            return  # not complete yet
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            self._reply(client, {"ok": False, "error": f"undecodable request: {exc}"})
            return
        self._handle(client, request)

    def _handle(self, client: _Client, request: Any) -> None:
        client.replied = True  # one request per connection
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self._reply(client, {"ok": False, "error": "a request is a map with a 'cmd'"})
            return
        cmd = request["cmd"]
        handlers = self.handlers

        def ok(fields: dict[str, Any]) -> None:
            self._reply(client, {"ok": True, **fields})

        if cmd == "status":
            handlers.status(ok)
        elif cmd == "reload":
            ok(handlers.reload())
        elif cmd == "stop":
            ok(handlers.stop())
        elif cmd == "workers":
            delta = request.get("delta")
            if not isinstance(delta, int) or isinstance(delta, bool) or not -64 <= delta <= 64:
                self._reply(
                    client, {"ok": False, "error": "delta must be a whole number from -64 to 64"}
                )
                return
            ok(handlers.workers(delta))
        else:
            self._reply(client, {"ok": False, "error": f"unknown command {cmd!r}"})

    def _reply(self, client: _Client, reply: dict[str, Any]) -> None:
        if client.sock not in self.clients:
            return
        client.replied = True
        client.outbox += msgpack.packb(reply, use_bin_type=True)
        self.selector.modify(
            client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self._io(client)
        )
        self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)
            return
        del client.outbox[:sent]
        if not client.outbox:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        if self.clients.pop(client.sock, None) is None:
            return
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    def close_in_child(self) -> None:
        self.sock.close()
        for sock in self.clients:
            sock.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
            if self.own_directory:
                os.rmdir(self.directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.filename == self.path:
                log.warning("cannot remove the control socket %s: %s", self.path, exc.strerror)


def _peer_uid(conn: socket.socket) -> int | None:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    _pid, uid, _gid = _UCRED.unpack(raw)
    return int(uid)


# ---------------------------------------------------------------- client side


def request(path: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the server at ``path``; its reply, or ControlError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no shardd is running here (no control socket {path})") from None
        except ConnectionRefusedError:
            raise ControlError(f"no shardd answers on {path}") from None
        except PermissionError:
            raise ControlError(f"not allowed to use {path}") from None
        sock.sendall(msgpack.packb(payload, use_bin_type=True))
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_REPLY)
        while True:
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                raise ControlError(f"shardd did not answer within {timeout:g}s") from None
            if not data:
                raise ControlError("shardd closed the control connection without a reply")
            unpacker.feed(data)
            for reply in unpacker:
                if not isinstance(reply, dict):
                    raise ControlError("shardd sent a malformed reply")
                if not reply.get("ok"):
                    raise ControlError(str(reply.get("error", "request refused")))
                return reply
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
