"""The operators' control socket: a Unix socket speaking msgpack.

Requests are maps with a ``cmd`` key (``status``, ``reload``, ``stop``,
``workers`` with ``delta``); every reply is a map with ``ok`` and either the
result or an ``error``. Only the owning uid and root may talk to it
(SO_PEERCRED), and the socket file is mode 0600. A bad request gets an error
reply; nothing a client sends can stop the supervisor.

The server side runs on the supervisor's selector and reaches the
supervisor only through :class:`ControlHandlers` (as gunicorn's
``ctl/handlers.py``): see :mod:`shardd.control_handlers`.

Whoever controls the socket's directory can put their own socket in its
place and answer ``shardd status`` and ``shardd stop`` for the server, so
the server refuses a directory, and any directory it would create on the way
to it, that another user owns or may write to, or that is a symlink; it
never changes the mode or owner of a directory it did not create.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

log = logging.getLogger("shardd.control")

MAX_REQUEST = 64 * 1024
MAX_REPLY = 512 * 2**20
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class _Directory:
    """A directory shardd creates for its control socket, or checks if it is there."""

    path: str
    mode: int  # what shardd creates it with
    private: bool = False  # no permission at all for group and others


def _default_base() -> _Directory:
    """The directory holding one directory per port, for this user."""
    runtime_directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime_directory:
        # systemd's RuntimeDirectory= (deploy/shardd.service: /run/shardd, the
        # service user's), where root's `shardd status --port` looks too
        return _Directory(runtime_directory, 0o700)
    if os.geteuid() == 0:
        # searchable, so that the user a server drops to can reach its own
        # directory below, as `shardd status --control` does
        return _Directory("/run/shardd", 0o755)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return _Directory(os.path.join(runtime, "shardd"), 0o700)
    # a name anyone can create first in /tmp: only a private one of ours will do
    return _Directory(f"/tmp/shardd-{os.geteuid()}", 0o700, private=True)


def default_path(port: int) -> str:
    """Where the server on ``port`` listens for operators: a directory per port."""
    return os.path.join(_default_base().path, str(port), "control.sock")


def _directories(path: str, default: bool) -> list[_Directory]:
    """The directories from the highest one shardd may create down to ``path``'s."""
    directory = os.path.dirname(os.path.abspath(path))
    base = _default_base()
    if default and os.path.dirname(directory) == base.path:
        return [base, _Directory(directory, 0o700)]
    chain = [_Directory(directory, 0o700)]
    while not os.path.lexists(chain[0].path):
        parent = os.path.dirname(chain[0].path)
        if parent == chain[0].path:
            break
        chain.insert(0, _Directory(parent, 0o700))
    if os.path.lexists(chain[0].path) and len(chain) > 1:
        chain.pop(0)  # the existing parent of the first one to create: not ours to judge
    return chain


class UnsafeDirectory(OSError):
    """The control socket's directory is not the server's own; ``str()`` says why."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"unsafe control directory: {problem}")


def _open_directories(chain: list[_Directory], owners: Collection[int]) -> tuple[int, list[str]]:
    """Create what is missing of ``chain``, top down, and check all of it.

    Returns a descriptor of the last directory and the paths shardd created.
    Each is created with its mode (nothing else can take its name then: the
    one above was checked first), then opened without following a symlink and
    checked again through that descriptor: what is checked is what is there.
    """
    top = os.path.dirname(chain[0].path)
    if top != chain[0].path:  # "/" has no parent
        mode = os.stat(top).st_mode
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise UnsafeDirectory(
                f"{top} is writable by group or others and not sticky "
                f"(mode {stat.S_IMODE(mode):04o}): another user could replace {chain[0].path}"
            )
    created: list[str] = []
    fd = -1
    try:
        for directory in chain:
            if fd >= 0:
                os.close(fd)
                fd = -1
            try:
                os.mkdir(directory.path, directory.mode)
                created.append(directory.path)
            except FileExistsError:
                pass
            # first by name, for a clear error where it cannot even be opened
            _check_directory(directory, os.lstat(directory.path), owners)
            fd = os.open(directory.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            if directory.path in created:
                os.fchmod(fd, directory.mode)  # ours: undo what the umask took away
            _check_directory(directory, os.fstat(fd), owners)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd, created


def _check_directory(directory: _Directory, st: os.stat_result, owners: Collection[int]) -> None:
    path = directory.path
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDirectory(f"{path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory")
    if st.st_uid not in owners:
        users = " or ".join(str(uid) for uid in sorted(set(owners)))
        raise UnsafeDirectory(
            f"{path} is owned by uid {st.st_uid}, not by the server's user (uid {users})"
        )
    mode = stat.S_IMODE(st.st_mode)
    if directory.private and mode & 0o077:
        raise UnsafeDirectory(
            f"{path} is open to group or others (mode {mode:04o}); "
            f"shardd needs it to be {directory.mode:04o}"
        )
    if mode & 0o022:
        raise UnsafeDirectory(f"{path} is writable by group or others (mode {mode:04o})")


class ControlError(RuntimeError):
    """No server answered, or it refused the request."""


class Refused(Exception):
    """Raised by a handler: the server will not do what was asked; ``str()`` says why.

    The client gets an error reply (``shardd`` prints it on stderr and exits 1).
    """


class ControlTimeout(ControlError):
    """The server took longer than the client's timeout to answer."""


Reply = Callable[[dict[str, Any]], None]


class ControlHandlers(Protocol):
    """What an operator may ask of the server; each returns (or passes) the reply's fields."""

    def status(self, reply: Reply) -> None:
        """Answer with the status fields, once workers have sent fresh reports."""

    def reload(self, reply: Reply) -> None:
        """Answer once the reload is done or has failed (the reply carries its own ``ok``)."""

    def stop(self) -> dict[str, Any]: ...

    def workers(self, delta: int) -> dict[str, Any]:
        """Add or remove shards; :class:`Refused` if not all of ``delta`` could be."""


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
        owners: Collection[int] = (),
    ) -> None:
        """``owners``: the uids the server runs as (besides this one: its --user)."""
        self.path = path
        self.own_directory = own_directory  # the per-port default: removed with the socket
        self.handlers = handlers
        self.selector = selector
        chain = _directories(path, own_directory)
        self.directory = chain[-1].path
        # kept open, so that a server that dropped root can still remove its
        # socket when it cannot search the directories above (a 0700 /run/shardd)
        self._dir_fd, created = _open_directories(chain, {os.geteuid(), *owners})
        # what the server's user gets (privileges.drop): the socket, and its
        # directory if it is shardd's; never a directory someone else made
        self.handed_over = [path]
        if own_directory or self.directory in created:
            self.handed_over.insert(0, self.directory)
        try:
            self._remove_stale()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old_umask)
        except BaseException:
            os.close(self._dir_fd)
            raise
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

        try:
            if cmd == "status":
                handlers.status(ok)
            elif cmd == "reload":
                handlers.reload(lambda answer: self._reply(client, answer))
            elif cmd == "stop":
                ok(handlers.stop())
            elif cmd == "workers":
                delta = request.get("delta")
                if not isinstance(delta, int) or isinstance(delta, bool) or not -64 <= delta <= 64:
                    raise Refused("delta must be a whole number from -64 to 64")
                ok(handlers.workers(delta))
            else:
                raise Refused(f"unknown command {cmd!r}")
        except Refused as exc:
            self._reply(client, {"ok": False, "error": str(exc)})

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
        os.close(self._dir_fd)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        try:
            os.unlink(os.path.basename(self.path), dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove the control socket %s: %s", self.path, exc.strerror)
        finally:
            os.close(self._dir_fd)
        if self.own_directory:
            # a server that dropped root cannot remove it from root's /run/shardd
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)


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
                raise ControlTimeout(f"shardd did not answer within {timeout:g}s") from None
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


def status(path: str, timeout: float = 10.0) -> dict[str, Any]:
    """The server's ``status`` reply, each connection a map (``shardd status --json``)."""
    from shardd.status import expand  # the supervisor's module: only status callers need it

    return expand(request(path, {"cmd": "status"}, timeout))
