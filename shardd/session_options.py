"""A server's ``SessionOptions`` from its settings: where the operator's shell
and protocol modules are imported.

Under a supervisor this runs only in processes forked from it: each worker
imports the shell as it is on disk when the worker starts, and a short-lived
probe (:mod:`shardd.shell_probe`) checks it can, at start and before every
reload. The supervisor itself never imports an operator's module, so a
reload's new workers import the changed code afresh (docs/ARCHITECTURE.md,
"Reload").
"""

from __future__ import annotations

from shardd.config import ConfigError, ServeConfig
from workers import loader, shells
from workers.limits import SessionLimits
from workers.mud import MudOptions
from workers.server_base import BaseServer
from workers.serving import SessionOptions
from workers.telnet.charsets import Charsets


def session_options(cfg: ServeConfig, started: float) -> SessionOptions:
    """What every session is built with; ConfigError naming ``shell`` or ``protocol``.

    ``started``: the server's start (wall clock), MSSP's UPTIME.
    """
    try:
        shell = shells.resolve(cfg.shell)
    except ValueError as exc:
        raise ConfigError("shell", str(exc)) from None
    try:
        protocol = loader.load(cfg.protocol, {}, "protocol")
    except ValueError as exc:
        raise ConfigError("protocol", str(exc)) from None
    if not (isinstance(protocol, type) and issubclass(protocol, BaseServer)):
        raise ConfigError("protocol", f"{cfg.protocol} is not a BaseServer subclass")
    return SessionOptions(
        shell=shell,
        protocol=protocol,
        encoding=cfg.encoding,
        encoding_errors=cfg.encoding_errors,
        force_binary=cfg.force_binary,
        connect_maxwait=cfg.connect_maxwait,
        limit=cfg.limit,
        limits=SessionLimits(
            charsets=Charsets(cfg.charsets), max_output_buffer=cfg.max_output_buffer
        ),
        mud=MudOptions(
            offer=tuple(cfg.offer),
            compression=cfg.compression,
            mssp=dict(cfg.mssp),
            started=started,
        ),
        access_log=cfg.access_log,
    )
