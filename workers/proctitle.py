"""Process titles: what ``ps`` and ``top`` show for each shardd process.

``shardd: supervisor 127.0.0.1:6023``, ``shardd: worker shard 2
127.0.0.1:6023``, ``shardd: single process 127.0.0.1:6023``, ``shardd:
loadtest client 1``: an operator sees which process is which (and which
server it belongs to) without reading pids out of ``shardd status``.
setproctitle rewrites the process's argv area, so ``/proc/PID/cmdline``
says the same.
"""

from __future__ import annotations

from setproctitle import setproctitle


def set_title(role: str) -> None:
    """Title this process ``shardd: <role>``."""
    setproctitle(f"shardd: {role}")


def address(host: str, port: int) -> str:
    """``host:port`` as titles show it, IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
