"""The supervisor's side of the control socket: what each operator command does.

The control socket (:mod:`shardd.control`) parses requests and replies; it
calls into the supervisor only through these handlers, as gunicorn's
``ctl/handlers.py`` does, so the socket code never touches the supervisor's
internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shardd import status
from shardd.control import Reply

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
        return {"workers": self.supervisor.change_workers(delta)}
