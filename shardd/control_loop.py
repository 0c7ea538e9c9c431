"""The control socket on an asyncio event loop (``shardd serve --workers 0``).

:class:`~shardd.control.ControlServer` is written for the supervisor's
select loop: it registers its sockets with a selector and is called back
with ``(key, mask)``. A single process has an event loop instead, so this
selector hands each registration to ``loop.add_reader``/``add_writer``: the
same server, with the same framing, peer checks and bounds, runs in both.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class LoopSelector(selectors.BaseSelector):
    """A selector whose registrations are the event loop's readers and writers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        if events & selectors.EVENT_READ:
            self._loop.add_reader(fd, data, key, selectors.EVENT_READ)
        if events & selectors.EVENT_WRITE:
            self._loop.add_writer(fd, data, key, selectors.EVENT_WRITE)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        key = self._keys.pop(fd)
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        raise RuntimeError("the event loop waits for these sockets, not this selector")

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return dict(self._keys)
