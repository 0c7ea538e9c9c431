"""The supervisor's pidfile: written atomically, removed only if it is still ours."""

from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger("shardd.pidfile")


def write(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove(path: str) -> None:
    """Remove ``path`` if it holds this process's pid: a newer server may own it now."""
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove pidfile %s: %s", path, exc.strerror)
