"""A ``--shell`` module whose import keeps every worker from ever serving.

It stands for any broken shell or protocol module that passes the check at
start but whose workers die before they say hello (a file that changed on
disk in between, say): the first import, the supervisor's probe, succeeds and
leaves the file ``$SHARDD_TEST_PROBED`` behind; every import after it (each
worker's, after its fork) exits with status 3 at once. Only ``shardd serve
--shell tests.shell_that_breaks_workers:shell`` imports it.
"""

from __future__ import annotations

import os
from typing import Any

BROKEN_WORKER_STATUS = 3
MARKER = "SHARDD_TEST_PROBED"

_marker = os.environ[MARKER]
if os.path.exists(_marker):
    os._exit(BROKEN_WORKER_STATUS)
with open(_marker, "w"):
    pass


async def shell(reader: Any, writer: Any) -> None:
    """Never runs: no worker lives long enough to accept a session."""
    writer.close()
