"""Logging for the supervisor and its workers: text or JSON lines, reopened on USR1.

Text lines put the level right after the time, in capitals and padded, so
that ERROR and WARNING lines stand out in a column of INFO; on a terminal,
errors are red and warnings yellow. JSON lines carry, besides ``time``,
``level``, ``pid``, ``logger`` and ``message``, every field a log call gave
as ``extra={...}`` (the access log's ``session``, ``peer``, ``reason``...).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson

log = logging.getLogger("shardd.logs")

_TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(process)d %(name)s: %(message)s"

# What every LogRecord has: the rest of its attributes came as extra={...}
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# the JSON line's own keys, which an extra field does not replace
_JSON_KEYS = frozenset({"time", "level", "pid", "logger", "message", "exception"})

_RED = "\x1b[1;31m"
_YELLOW = "\x1b[33m"
_RESET = "\x1b[0m"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call gave as ``extra={...}``."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class _SecondCache:
    """The time of a line to the second, formatted once a second, not once a line:
    a connection flood writes two access lines per connection."""

    def __init__(self, fmt: str, convert: Any) -> None:
        self._fmt = fmt
        self._convert = convert
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._fmt, self._convert(second))
            self._second = second
        return self._text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; extra fields at the top level."""

    def __init__(self) -> None:
        super().__init__()
        self._utc_second = _SecondCache("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": f"{self._utc_second(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            if key not in _JSON_KEYS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # orjson: half the time of json.dumps, for the same line
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL pid logger: message``; with ``colour``, errors red, warnings yellow."""

    def __init__(self, colour: bool = False) -> None:
        super().__init__(_TEXT_FORMAT)
        self.colour = colour
        self._local_second = _SecondCache(self.default_time_format, time.localtime)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # what logging.Formatter writes, with the second formatted once
        return f"{self._local_second(record.created)},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            line = super().format(record)
        else:
            # logging.Formatter.format for a line with no traceback, without its
            # indirections (usesTime, formatMessage, the style object): the same text
            record.message = record.getMessage()
            record.asctime = self.formatTime(record)
            line = _TEXT_FORMAT % record.__dict__
        if not self.colour or record.levelno < logging.WARNING:
            return line
        if record.levelno >= logging.ERROR:
            return f"{_RED}{line}{_RESET}"
        return f"{_YELLOW}{line}{_RESET}"


def _wants_colour(stream: Any) -> bool:
    # https://no-color.org: NO_COLOR set, to anything, turns colour off
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty()) and "NO_COLOR" not in os.environ


class _ReopenableFileHandler(logging.FileHandler):
    def reopen(self) -> None:
        """Open the path anew, then swap: if opening fails, the old file stays in use."""
        stream = self._open()
        self.acquire()
        try:
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.close()


def setup(level: str = "info", fmt: str = "text", path: str | None = None) -> None:
    """Configure the root logger (stderr, or ``path`` in append mode)."""
    handler: logging.Handler
    handler = (
        _ReopenableFileHandler(path, encoding="utf-8")
        if path
        else logging.StreamHandler(sys.stderr)
    )
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter(colour=not path and _wants_colour(sys.stderr))
    handler.setFormatter(formatter)
    # Neither format shows the caller's file and line, nor the thread: not
    # looking them up saves a fifth of each line's cost (logging's documented
    # optimisations), which at two access lines per connection shows
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def reopen() -> None:
    """Reopen log files (after logrotate moved them away): a worker's USR1."""
    reopen_files()


def reopen_files() -> bool:
    """Reopen log files; False if one could not be.

    A file that cannot be opened again (a server that dropped root, in a
    directory only root may create files in) is logged, to the file still
    open, and kept: losing the logs, or the process, would be worse.
    """
    reopened = True
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _ReopenableFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                reopened = False
                log.error(
                    "cannot reopen the log file %s: %s; still writing to the file it had open",
                    handler.baseFilename,
                    exc.strerror or exc,
                )
    return reopened
