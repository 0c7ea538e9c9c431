"""Logging for the supervisor and its workers: text or JSON lines, reopened on USR1."""

from __future__ import annotations

import json
import logging
import sys
import time

log = logging.getLogger("shardd.logs")

_TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


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
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
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
