"""The supervisor's side of the control socket: what each operator command does.

The control socket (:mod:`shardd.control`) parses requests and replies; it
calls into the supervisor only through these handlers, as gunicorn's
``ctl/handlers.py`` does, so the socket code never touches the supervisor's
internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shardd import status
from shardd.control import Refused, Reply
from workers.plural import count

if TYPE_CHECKING:
    from shardd.supervisor import Supervisor


class SupervisorHandlers:
    """``status``, ``reload``, ``stop`` and ``workers`` on one supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def status(self, reply: Reply) -> None:
        sup = self.supervisor

        def answer() -> None:
            with status.gc_paused():
                reply(status.collect(sup))

        sup.request_status(answer)

    def reload(self, reply: Reply) -> None:
        def answer(ok: bool, message: str) -> None:
            reply({"ok": True, "message": message} if ok else {"ok": False, "error": message})

        self.supervisor.begin_reload(answer)

    def stop(self) -> dict[str, Any]:
        self.supervisor.begin_stop("graceful", "control request")
        return {"message": "graceful stop begun"}

    def workers(self, delta: int) -> dict[str, Any]:
        """Add or remove shards; Refused unless all of ``delta`` was done.

        A server keeps at least one shard, and can add only as many as its
        shared table has rows (and the process file descriptors) for: asking
        for more does what it can, and the operator is told, with a failure,
        how far it went.
        """
        sup = self.supervisor
        before = len(sup.active_shards())
        after, problem = sup.change_workers(delta)
        if problem is None:
            return {"workers": after}
        done = after - before
        verb = "add" if delta > 0 else "remove"
        raise Refused(
            f"cannot {verb} {count(abs(delta), 'shard')}: {problem}; "
            f"{abs(done)} {verb}{'ed' if delta > 0 else 'd'}, now {count(after, 'shard')}"
        )
