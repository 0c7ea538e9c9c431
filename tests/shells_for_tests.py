"""Shells for the end-to-end tests: they tell the client what the server saw.

Run by a real ``shardd serve`` subprocess (``--shell tests.shells_for_tests:report``);
the server is started from the project root, so ``tests`` imports from there.
"""

from __future__ import annotations

import json
from typing import Any

from workers.shells import welcome

#: the ``get_extra_info`` keys ``report`` sends back
REPORTED_KEYS = (
    "TERM", "term", "cols", "rows", "charset", "LANG", "USER", "DISPLAY",
    "COLUMNS", "LINES", "ttype1", "ttype2", "tspeed", "xdisploc",
)
REPORT_PREFIX = "REPORT "


def session_report(reader: Any, writer: Any) -> dict[str, Any]:
    """What this session's server side knows about its client."""
    report = {key: writer.get_extra_info(key) for key in REPORTED_KEYS}
    report["writer_encoding"] = writer.encoding
    report["reader_encoding"] = reader.encoding
    return report


async def report(reader: Any, writer: Any) -> None:
    """One line ``REPORT {json}``, then the ``welcome`` shell."""
    line = REPORT_PREFIX + json.dumps(session_report(reader, writer), default=str) + "\r\n"
    writer.write(line if writer.encoding is not None else line.encode("ascii"))
    await welcome(reader, writer)
