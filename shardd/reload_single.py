"""Reloading a single process (``shardd serve --workers 0``) in place: HUP or ``shardd reload``.

A supervised server reloads by forking new workers (a rolling restart). One
process cannot fork a fresh copy of itself and keep its sessions, so it
reloads what it can where it stands:

- the settings, read again as at start (``--config`` and the flags, through
  the same functions of :mod:`shardd.cli` and :mod:`shardd.config`);
- the shell's module (``--shell module:callable``), imported again as a
  fresh module: sessions opened from now on run the new shell, those
  already open keep the one they started with, its code and its globals;
- the TLS certificate and key, read again (handshakes from now on use them);
- the limits and timeouts that can change while serving (admission limits,
  idle and graceful timeouts, the options new sessions are built with, the
  log level).

What cannot change without a restart (the address, ports, users, files,
the MUD options offered, ...) keeps its old value, and the log says which
settings were changed and need a restart. Anything that fails (a bad
config file, a shell that cannot be imported, a certificate that cannot be
loaded) is one ERROR line, and every old setting stays.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass

from shardd.config import ConfigError, ServeConfig
from workers.loader import OWN_PACKAGES
from workers.serving import Server, SessionOptions
from workers.tls import TlsListener

log = logging.getLogger("shardd")

#: settings a running process cannot change: where and how it listens, who
#: it runs as, its files, what it offers clients at negotiation (MSSP's
#: variables and MUD options are one table every session reads), and what
#: only a supervisor uses
NEEDS_RESTART = (
    "host",
    "port",
    "tls_port",
    "workers",
    "backlog",
    "share_port",
    "user",
    "group",
    "pidfile",
    "control",
    "log_format",
    "log_file",
    "offer",
    "compression",
    "mssp",
    "stats_interval",
    "worker_timeout",
)


class ReloadError(RuntimeError):
    """The reload did nothing; ``str()`` is the one line saying why."""


@dataclass(frozen=True)
class SettingsSource:
    """How the process built its settings at start, to do it again."""

    #: defaults, the --config file, the flags: checked (ConfigError)
    settings: Callable[[], ServeConfig]
    #: the sessions' options, the shell imported (ConfigError)
    session_options: Callable[[ServeConfig], SessionOptions]
    #: the certificate and key loaded, or None without TLS (ConfigError)
    tls_context: Callable[[ServeConfig], ssl.SSLContext | None]


def reload(server: Server, current: ServeConfig, source: SettingsSource) -> ServeConfig:
    """Reload ``server`` in place; the settings now in effect.

    ReloadError (after logging it at ERROR) if anything failed: then nothing
    changed.
    """
    try:
        new = source.settings()
        reimported = _reimport_shell(new.shell)
        opts = source.session_options(new)
        context = source.tls_context(new) if server.tls is not None else None
    except ConfigError as exc:
        log.error("reload failed, the old settings stay: %s", exc)
        raise ReloadError(f"reload failed, the old settings stay: {exc}") from None
    keys = [f.name for f in dataclasses.fields(ServeConfig)]
    changed = [key for key in keys if getattr(new, key) != getattr(current, key)]
    restart = [key for key in changed if key in NEEDS_RESTART]
    # what needs a restart keeps its old value: the next reload compares
    # against what is in effect, and says again what still needs one
    effective = dataclasses.replace(new, **{key: getattr(current, key) for key in restart})
    opts = dataclasses.replace(opts, mud=server.sessions.opts.mud)
    tls = None
    if server.tls is not None and context is not None:
        tls = TlsListener(server.tls.sock, context, effective.tls_handshake_timeout)
    server.reconfigure(opts, effective.server_settings(), tls)
    if effective.log_level != current.log_level:
        logging.getLogger().setLevel(effective.log_level.upper())
    done = ["settings re-read"]
    if reimported:
        done.append(f"shell module {reimported} re-imported")
    if tls is not None:
        done.append(f"TLS certificate re-read from {effective.certfile}")
    applied = [_flag(key) for key in changed if key not in NEEDS_RESTART]
    done.append("changed: " + (", ".join(applied) if applied else "nothing"))
    message = "; ".join(done)
    if restart:
        message += "; need a restart to change: " + ", ".join(_flag(key) for key in restart)
    log.info("reload: %s", message)
    return effective


def _flag(key: str) -> str:
    return key.replace("_", "-")


def _reimport_shell(spec: str) -> str | None:
    """Import the module ``--shell module:callable`` names afresh; its name, or
    None if there is nothing to re-import (a built-in shell, shardd's own
    modules, or one never imported: the build imports it anyway).

    A fresh module object, not ``importlib.reload`` in place: reload would
    run the new code in the old module's namespace, under the feet of the
    sessions already running the old shell (its globals would change under
    them). They keep the old module, its code and its globals; sessions
    opened from now on get the new one.

    ConfigError("shell") if it fails: the old module stays, and the old
    settings with it.
    """
    module_name, sep, _attr = spec.partition(":")
    if not sep or module_name.split(".")[0] in OWN_PACKAGES:
        return None
    old = sys.modules.get(module_name)
    if old is None:
        return None
    importlib.invalidate_caches()  # a file added since the last import is found
    del sys.modules[module_name]
    try:
        importlib.import_module(module_name)
    except Exception as exc:  # the operator's module: whatever it raises, one line
        sys.modules[module_name] = old
        raise ConfigError(
            "shell", f"re-importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    return module_name
