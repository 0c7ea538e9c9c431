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
settings were changed and need a restart, in the lines a supervisor's
reload writes (:mod:`shardd.reloading`). Anything that fails (a bad
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
from shardd.reloading import keep_restart_only
from workers.loader import OWN_PACKAGES
from workers.serving import Server, SessionOptions
from workers.tls import TlsListener

log = logging.getLogger("shardd")

#: besides what a supervisor's reload keeps too (reloading.RESTART_ONLY): what
#: the process's Server built once at start, where a supervisor's new workers
#: build theirs afresh: the MUD options offered and MSSP's variables (one
#: table every session reads), the PROXY header stage and the access log
SINGLE_RESTART_ONLY = (
    "offer",
    "compression",
    "mssp",
    "proxy_protocol",
    "trusted_proxies",
    "proxy_header_timeout",
    "access_log",
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


def reload(
    server: Server, current: ServeConfig, source: SettingsSource, path: str | None = None
) -> ServeConfig:
    """Reload ``server`` in place; the settings now in effect. ``path``: the
    --config file, for the log.

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
    # what needs a restart keeps its old value, and the log says so, line by
    # line as a supervisor's reload does: the next reload compares against
    # what is in effect, and says it again
    lines = keep_restart_only(current, new, path)
    where = f" in {path}" if path else ""
    for key in SINGLE_RESTART_ONLY:
        before, after = getattr(current, key), getattr(new, key)
        if before != after:
            lines.append(
                f"reload: {_flag(key)} changed {before} -> {after}{where}; a single process "
                f"needs a restart for it, keeping {before}"
            )
            setattr(new, key, before)
    for line in lines:
        log.warning("%s", line)
    keys = [f.name for f in dataclasses.fields(ServeConfig)]
    changed = [key for key in keys if getattr(new, key) != getattr(current, key)]
    opts = dataclasses.replace(opts, mud=server.sessions.opts.mud)
    tls = None
    if server.tls is not None and context is not None:
        tls = TlsListener(server.tls.sock, context, new.tls_handshake_timeout)
    server.reconfigure(opts, new.server_settings(), tls)
    if new.log_level != current.log_level:
        logging.getLogger().setLevel(new.log_level.upper())
    done = ["settings re-read"]
    if reimported:
        done.append(f"shell module {reimported} imported afresh")
    if tls is not None:
        done.append(f"TLS certificate re-read from {new.certfile}")
    done.append("changed: " + (", ".join(_flag(key) for key in changed) or "nothing"))
    if lines:
        done.append(f"{len(lines)} kept until a restart (above)")
    log.info("reload: %s", "; ".join(done))
    return new


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
