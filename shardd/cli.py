"""The ``shardd`` command line: serve, status, reload, stop, workers."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, NoReturn

import orjson

from shardd import control, logs
from shardd.config import ConfigError, ConfigSource, ServeConfig, parse_mssp_flags
from shardd.status import gc_paused
from workers.plural import count

USAGE_ERROR = 2
# How long `shardd reload` waits for every shard's new worker to serve.
RELOAD_WAIT = 60.0

# flag -> (metavar or None for a switch, help)
_SERVE_FLAGS: dict[str, tuple[str | None, str]] = {
    "host": ("ADDRESS", "address to listen on (default 127.0.0.1)"),
    "port": ("PORT", "TCP port (default 6023; 0 picks a free one)"),
    "tls_port": (
        "PORT",
        "also serve the same shells over TLS (telnets) on this port; 0 picks a free one",
    ),
    "certfile": ("PATH", "TLS certificate chain, PEM (with the key, unless --keyfile)"),
    "keyfile": ("PATH", "TLS private key, PEM, unencrypted (re-read with the certificate on HUP)"),
    "tls_handshake_timeout": (
        "SECONDS",
        "close a TLS connection whose handshake is not done within this (default 10)",
    ),
    "proxy_protocol": (
        None,
        "every connection (plain and TLS port) opens with a PROXY header (v1 or v2) "
        "from a trusted proxy, naming the client",
    ),
    "trusted_proxies": (
        "CIDR,...",
        "the proxies allowed to connect with --proxy-protocol (default 127.0.0.0/8,::1/128)",
    ),
    "proxy_header_timeout": (
        "SECONDS",
        "close a connection whose PROXY header is not complete within this (default 5)",
    ),
    "workers": (
        "N",
        "worker processes, one shard each (default: CPU count); "
        "0 serves in this process without a supervisor",
    ),
    "shell": (
        "SHELL",
        "echo, welcome, talker, or module:callable, an async shell(reader, writer)"
        " (default welcome)",
    ),
    "protocol": (
        "MODULE:CLASS",
        "protocol class, a BaseServer subclass (default workers.server:TelnetServer)",
    ),
    "encoding": ("CODEC", "session encoding, or 'false' for bytes (default utf8)"),
    "encoding_errors": ("HANDLER", "codec error handler (default strict)"),
    "force_binary": (None, "decode with the encoding even where BINARY was not negotiated"),
    "connect_maxwait": (
        "SECONDS",
        "longest wait for negotiation before the shell starts (default 4)",
    ),
    "limit": ("BYTES", "reader buffer limit and longest line (default 65536)"),
    "charsets": (
        "NAME,...",
        "charsets a client may choose, by NEW-ENVIRON LANG or CHARSET "
        "(default: UTF-8, ASCII, the ISO-8859 family, the DOS and Windows code pages, "
        "KOI8, Big5, GBK/GB18030, EUC-KR, Shift_JIS, EUC-JP and the like)",
    ),
    "offer": (
        "NAME,...",
        "MUD options offered: gmcp, msdp, mssp, mccp2, mccp3, or none "
        "(default gmcp,msdp,mssp, and mccp2,mccp3 with --compression)",
    ),
    "compression": (
        None,
        "offer MCCP2 and MCCP3 (zlib; about 38 KiB more per compressed session), never over TLS",
    ),
    "mssp": (
        "NAME=VALUE",
        "an MSSP variable for MUD crawlers (NAME, CONTACT, WEBSITE, ...); repeat the flag "
        "for more; PLAYERS, UPTIME, PORT and SSL are the server's",
    ),
    "max_sessions": (
        "N",
        "sessions in all workers together; 0: as many as file descriptors allow, "
        "keeping a reserve (default 0)",
    ),
    "max_sessions_per_ip": (
        "N",
        "sessions from one address in all workers together; 0: no limit (default 20)",
    ),
    "max_connect_rate_per_ip": (
        "N",
        "new connections per second from one address; 0: no limit (default 10)",
    ),
    "idle_timeout": (
        "SECONDS",
        "close a session whose client sends nothing for this long; 0: never (default 3600)",
    ),
    "max_output_buffer": (
        "BYTES",
        "output waiting for one client past which its session is closed (default 1048576)",
    ),
    "graceful_timeout": ("SECONDS", "how long a stop waits for sessions (default 10)"),
    "reload_timeout": (
        "SECONDS",
        "how long sessions on an old worker may go on after a reload (or a shard removed) "
        "before it says goodbye; 0: until they end (default 86400)",
    ),
    "worker_timeout": ("SECONDS", "a worker silent this long is killed and replaced (default 30)"),
    "stats_interval": (
        "SECONDS",
        "how often workers report session statistics; 0: only when status asks (default 1)",
    ),
    "backlog": ("N", "listen backlog per shard (default 4096)"),
    "share_port": (
        None,
        "listen even if another process serves the port already (the kernel then "
        "splits new clients between both); without it, shardd refuses to start",
    ),
    "pidfile": ("PATH", "write the supervisor's pid here"),
    "user": ("USER", "switch to this user after binding"),
    "group": ("GROUP", "switch to this group after binding"),
    "control": ("PATH", "control socket (default derived from the port)"),
    "log_level": ("LEVEL", "debug, info, warning or error (default info)"),
    "log_format": ("FORMAT", "text or json (default text)"),
    "log_file": ("PATH", "log to this file (reopened on SIGUSR1) instead of stderr"),
    "access_log": (
        "on|off",
        "a line (logger shardd.access) when each session opens and closes (default on)",
    ),
    "metrics": (
        "HOST:PORT",
        "serve Prometheus metrics at http://HOST:PORT/metrics ([::1]:9100 for IPv6; default off)",
    ),
    "bus": (
        "local|redis://HOST:PORT/DB",
        "the message bus between sessions of every worker: local, through the supervisor "
        "(default), or Redis pub/sub, across hosts",
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _add_target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--port", type=int, default=6023, help="the port the server was started with (default 6023)"
    )
    target.add_argument("--control", metavar="PATH", help="the server's control socket")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shardd", description="A multiprocess, sharded telnet server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the telnet server")
    serve.add_argument(
        "--config",
        metavar="FILE.toml",
        help="settings file with the same keys as these flags (flags win)",
    )
    for name, (metavar, text) in _SERVE_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if metavar is None:
            serve.add_argument(flag, action="store_const", const=True, default=None, help=text)
        elif name == "mssp":
            serve.add_argument(flag, metavar=metavar, action="append", default=None, help=text)
        else:
            serve.add_argument(flag, metavar=metavar, default=None, help=text)

    status = commands.add_parser("status", help="show workers and sessions")
    _add_target(status)
    status.add_argument("--json", action="store_true", help="every field, every session")
    status.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until interrupted"
    )
    for name, text in (
        ("reload", "re-read the settings and start new workers, one shard at a time"),
        ("stop", "graceful stop"),
    ):
        _add_target(commands.add_parser(name, help=text))
    workers = commands.add_parser("workers", help="add or remove shards: +N or -N")
    _add_target(workers)
    workers.add_argument("delta", help="+N or -N")
    from shardd.bench import cli as bench_cli
    from shardd.loadtest import cli as loadtest_cli

    loadtest_cli.add_arguments(commands.add_parser("loadtest", help=loadtest_cli.HELP))
    bench_cli.add_arguments(commands.add_parser("bench", help=bench_cli.HELP))
    return parser


# ------------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in _SERVE_FLAGS}
    if flags["mssp"] is not None:
        flags["mssp"] = parse_mssp_flags(flags["mssp"])
    source = ConfigSource(args.config, flags)
    cfg = source.load()
    started = time.time()
    if cfg.workers == 0:
        from shardd.session_options import session_options

        opts = session_options(cfg, started)
    else:
        # the supervisor never imports the shell itself (shardd/session_options.py)
        from shardd.shell_probe import ShellProbe

        probe = ShellProbe(cfg, started)
        probe.wait()
        if probe.error is not None:
            raise probe.error
    tls_context = _tls_context(cfg)
    logs.setup(cfg.log_level, cfg.log_format, cfg.log_file)
    if cfg.workers == 0:
        from shardd.reload_single import SettingsSource

        # a single process reloads in place, building its settings as here
        reloading = SettingsSource(
            source.load, lambda cfg: session_options(cfg, started), _tls_context
        )
        return _serve_single(cfg, opts, tls_context, reloading, source.path)
    return _serve_supervised(cfg, source, started, tls_context)


def _tls_context(cfg: ServeConfig) -> Any:  # ssl.SSLContext | None
    """The certificate and key, loaded: ConfigError naming the file that is wrong."""
    if cfg.tls_port is None or cfg.certfile is None:
        return None
    from workers.tls import TlsError, load_context

    try:
        return load_context(cfg.certfile, cfg.keyfile)
    except TlsError as exc:
        raise ConfigError(exc.key, str(exc)) from None


def _serve_single(
    cfg: ServeConfig,
    opts: Any,
    tls_context: Any,
    source: Any,
    config_path: str | None,
) -> int:
    from shardd import single_process
    from shardd.listeners import bind, check_unserved
    from workers.tls import TlsListener

    tls = None
    port = cfg.port
    share = cfg.share_port
    try:
        if not share:
            check_unserved(cfg.host, port)
        sock = bind(cfg.host, port, reuse_port=share, backlog=cfg.backlog)
        if tls_context is not None and cfg.tls_port is not None:
            port = cfg.tls_port
            if not share:
                check_unserved(cfg.host, port)
            tls_sock = bind(cfg.host, port, reuse_port=share, backlog=cfg.backlog)
            tls = TlsListener(tls_sock, tls_context, cfg.tls_handshake_timeout)
    except OSError as exc:
        print(f"shardd: cannot listen on {cfg.host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    process = single_process.SingleProcess(cfg, opts, sock, tls, source, config_path)
    try:
        process.bind_control()
    except OSError as exc:
        process.close_sockets()
        print(
            f"shardd: cannot start: {exc.strerror or exc}"
            + (f": {exc.filename}" if getattr(exc, "filename", None) else ""),
            file=sys.stderr,
        )
        return 1
    process.run()
    return 0


def _serve_supervised(
    cfg: ServeConfig, source: ConfigSource, started: float, tls_context: Any
) -> int:
    from shardd import pidfile, privileges
    from shardd.supervisor import Supervisor

    supervisor = Supervisor(cfg, tls_context, source=source, started=started)
    try:
        supervisor.bind_shards()
    except OSError as exc:
        print(
            f"shardd: cannot listen on {cfg.host}:{supervisor.binding}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    try:
        supervisor.bind_metrics()
    except OSError as exc:
        print(
            f"shardd: cannot listen for metrics on {cfg.metrics}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    try:
        supervisor.bind_control()
        if cfg.pidfile:
            pidfile.write(cfg.pidfile)
        control_files = supervisor.control.handed_over if supervisor.control else []
        privileges.drop(
            cfg.user, cfg.group, [p for p in (*control_files, cfg.pidfile, cfg.log_file) if p]
        )
        _warn_unreadable_certificate(cfg)
    except OSError as exc:
        print(
            f"shardd: cannot start: {exc.strerror or exc}"
            + (f": {exc.filename}" if getattr(exc, "filename", None) else ""),
            file=sys.stderr,
        )
        return 1
    try:
        return supervisor.run()
    finally:
        if cfg.pidfile:
            pidfile.remove(cfg.pidfile)


def _warn_unreadable_certificate(cfg: ServeConfig) -> None:
    """HUP re-reads the certificate as the user the server runs as: say so now if it cannot."""
    for path in (cfg.certfile, cfg.keyfile):
        if cfg.tls_port is not None and path and not os.access(path, os.R_OK):
            logging.getLogger("shardd").warning(
                "%s cannot be read as user %s: a reload (HUP) will keep the current certificate",
                path,
                cfg.user or os.getuid(),
            )


# ---------------------------------------------------------------- operator


def _control_path(args: argparse.Namespace) -> str:
    return args.control or control.default_path(args.port)


def _status(args: argparse.Namespace) -> int:
    from shardd import status_view

    if args.watch is not None and not 0.1 <= args.watch <= 3600:
        raise ConfigError("watch", "must be between 0.1 and 3600 seconds")
    path = _control_path(args)
    while True:
        with gc_paused():  # 100 000 sessions are 100 000 maps: no cycles, just time
            reply = control.status(path)
            reply.pop("ok", None)
            if args.json:
                option = 0 if args.watch else orjson.OPT_INDENT_2
                sys.stdout.buffer.write(orjson.dumps(reply, option=option) + b"\n")
                sys.stdout.flush()
            else:
                if args.watch and sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")
                print(status_view.render(reply), flush=True)
            del reply
        if args.watch is None:
            return 0
        time.sleep(args.watch)  # the operator asked for a refresh period


def _simple(args: argparse.Namespace, payload: dict[str, Any]) -> int:
    reply = control.request(_control_path(args), payload)
    message = reply.get("message") or count(int(reply.get("workers") or 0), "shard")
    print(f"shardd: {message}")
    return 0


def _reload(args: argparse.Namespace) -> int:
    """Ask for a reload; the answer comes once every shard's new worker serves."""
    try:
        reply = control.request(_control_path(args), {"cmd": "reload"}, timeout=RELOAD_WAIT)
    except control.ControlTimeout:
        raise control.ControlError(
            f"reload: no answer within {RELOAD_WAIT:g}s (RELOAD_WAIT); it may still be "
            "under way: see `shardd status` and the server's log"
        ) from None
    print(f"shardd: {reply.get('message')}")
    return 0


def _workers(args: argparse.Namespace) -> int:
    text = args.delta
    if not text or text[0] not in "+-" or not text[1:].isdigit():
        raise ConfigError("workers", f"give +N or -N, not {text!r}")
    return _simple(args, {"cmd": "workers", "delta": int(text)})


def _version() -> str:
    """The installed distribution's version (pyproject.toml), as pip sees it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shardd")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        # like git and gunicorn: no command is a usage error, and the help says
        # which commands there are (on stderr, exit 2, as argparse's errors)
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "status":
            return _status(args)
        if args.command == "reload":
            return _reload(args)
        if args.command == "stop":
            return _simple(args, {"cmd": "stop"})
        if args.command == "workers":
            return _workers(args)
        if args.command == "loadtest":
            from shardd.loadtest import cli as loadtest_cli

            return loadtest_cli.run(args)
        if args.command == "bench":
            from shardd.bench import cli as bench_cli

            return bench_cli.run(args)
    except ConfigError as exc:
        print(f"shardd: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except control.ControlError as exc:
        print(f"shardd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `shardd status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
