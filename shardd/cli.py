"""The ``shardd`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from shardd.config import ConfigError, ServeConfig

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shardd", description="A multiprocess, sharded telnet server.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = ServeConfig()
    serve = commands.add_parser("serve", help="run the telnet server")
    serve.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    serve.add_argument("--port", default=d.port, help=f"TCP port (default {d.port})")
    serve.add_argument(
        "--workers", default=d.workers,
        help="worker processes; 0 serves in this process without a supervisor (default 0)",
    )
    serve.add_argument(
        "--shell", default=d.shell,
        help="echo, welcome, or module:callable, an async shell(reader, writer) (default welcome)",
    )
    serve.add_argument(
        "--encoding", default=d.encoding,
        help="session encoding, or 'false' for a bytes reader and writer (default utf8)",
    )
    serve.add_argument("--encoding-errors", default=d.encoding_errors,
                       help="codec error handler (default strict)")
    serve.add_argument("--force-binary", action="store_true",
                       help="decode with the encoding even where BINARY was not negotiated")
    serve.add_argument("--connect-maxwait", default=d.connect_maxwait, metavar="SECONDS",
                       help="longest wait for negotiation before the shell starts (default 4)")
    serve.add_argument("--limit", default=d.limit, metavar="BYTES",
                       help="reader buffer limit and longest line (default 65536)")
    serve.add_argument("--graceful-timeout", default=d.graceful_timeout, metavar="SECONDS",
                       help="how long a stop waits for sessions to close (default 10)")
    serve.add_argument("--backlog", default=d.backlog, help="listen backlog (default 4096)")
    serve.add_argument("--log-level", default=d.log_level, help="debug, info, warning or error")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from workers import shells
    from workers.serve import SessionOptions, bind, run_single_process

    cfg = ServeConfig(
        host=args.host, port=args.port, workers=args.workers, shell=args.shell,
        encoding=args.encoding, encoding_errors=args.encoding_errors,
        force_binary=args.force_binary, connect_maxwait=args.connect_maxwait,
        limit=args.limit, graceful_timeout=args.graceful_timeout, backlog=args.backlog,
        log_level=args.log_level,
    ).check()
    try:
        shell = shells.resolve(cfg.shell)
    except ValueError as exc:
        raise ConfigError("shell", str(exc)) from None
    if cfg.workers != 0:
        raise ConfigError("workers", "only 0 (a single process, no supervisor) is available yet")
    _setup_logging(cfg.log_level)
    log = logging.getLogger("shardd")
    try:
        sock = bind(cfg.host, cfg.port, backlog=cfg.backlog)
    except OSError as exc:
        print(f"shardd: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    log.info("serving telnet on %s:%s (pid %d, single process, shell %s)",
             host, port, os.getpid(), cfg.shell)
    opts = SessionOptions(
        shell=shell, encoding=cfg.encoding, encoding_errors=cfg.encoding_errors,
        force_binary=cfg.force_binary, connect_maxwait=cfg.connect_maxwait, limit=cfg.limit,
    )
    run_single_process(sock, opts, cfg.graceful_timeout)
    log.info("stopped")
    return 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
    except ConfigError as exc:
        print(f"shardd: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
