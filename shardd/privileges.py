"""Dropping root after the sockets are bound (port 23 needs root to bind)."""

from __future__ import annotations

import grp
import logging
import os
import pwd

log = logging.getLogger("shardd.privileges")


def uid_of(user: str | None) -> int:
    """The uid the server runs as once ``drop`` has run."""
    return pwd.getpwnam(user).pw_uid if user else os.getuid()


def drop(user: str | None, group: str | None, owned_paths: list[str]) -> None:
    """Become ``user``/``group``; hand them ``owned_paths`` first. No-op if neither is set."""
    if user is None and group is None:
        return
    uid = uid_of(user)
    gid = (
        grp.getgrnam(group).gr_gid
        if group
        else (pwd.getpwnam(user).pw_gid if user else os.getgid())
    )
    for path in owned_paths:
        try:
            os.chown(path, uid, gid)
        except OSError as exc:
            log.warning("cannot hand %s to uid %d: %s", path, uid, exc.strerror)
    if os.getuid() != 0:
        if uid != os.getuid() or gid != os.getgid():
            raise PermissionError(f"only root can switch to user {user} / group {group}")
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    log.info("running as uid %d, gid %d", uid, gid)
