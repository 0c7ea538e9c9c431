"""A ``--shell`` module whose import keeps every worker from ever serving.

It stands for any broken shell or protocol module that the supervisor loads
fine but whose workers die before they say hello: importing it (which the
supervisor does, before it forks) makes every process forked afterwards exit
with status 3 at once. Only ``shardd serve --shell
tests.shell_that_breaks_workers:shell`` imports it.
"""

from __future__ import annotations

import os
from typing import Any

BROKEN_WORKER_STATUS = 3

os.register_at_fork(after_in_child=lambda: os._exit(BROKEN_WORKER_STATUS))


async def shell(reader: Any, writer: Any) -> None:
    """Never runs: no worker lives long enough to accept a session."""
    writer.close()
