"""Which backend carries a worker's bus beyond its process (``--bus``).

``make_backend`` is the one place that maps the ``bus`` setting to a backend:
``local`` relays through the supervisor (none without one, ``--workers 0``:
the hub alone is the bus); ``redis://HOST:PORT/DB`` uses Redis pub/sub, its
module imported only when asked for, so that redis-py is never loaded by a
server that does not use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.bus.api import Backend

if TYPE_CHECKING:
    from workers.bus.hub import BusHub
    from workers.channel import SupervisorChannel

LOCAL = "local"
REDIS_SCHEME = "redis://"


def backend_label(spec: str) -> str:
    """The backend's name for status and metrics (never the URL: it may hold a password)."""
    return "redis" if spec.startswith(REDIS_SCHEME) else LOCAL


def valid_spec(spec: str) -> bool:
    """Whether ``spec`` names a backend: ``local`` or a ``redis://`` URL."""
    return spec == LOCAL or (spec.startswith(REDIS_SCHEME) and len(spec) > len(REDIS_SCHEME))


def make_backend(spec: str, hub: BusHub, channel: SupervisorChannel | None) -> Backend | None:
    """The backend ``spec`` names for ``hub``; None when the hub alone is the bus.

    ``channel``: the worker's channel to its supervisor; None in development
    mode (``--workers 0``). Sets ``hub.backend_name``; a backend that spans
    hosts may set ``hub.prefix`` too (before any session opens).
    """
    if spec.startswith(REDIS_SCHEME):
        from workers.bus import redis_backend  # type: ignore[attr-defined,unused-ignore]

        backend: Backend = redis_backend.make(spec, hub, channel)
        hub.backend_name = "redis"
        return backend
    if spec != LOCAL:
        raise ValueError(f"bus: {spec!r} is neither 'local' nor a redis:// URL")
    if channel is None:
        hub.backend_name = "none"
        return None
    from workers.bus.local import LocalBackend

    hub.backend_name = LOCAL
    return LocalBackend(hub, channel)
