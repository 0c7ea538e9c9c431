"""Counts as an operator reads them: "1 session", "2 sessions", "0 shards".

One helper for every message, log line and status line that says how many
of something there are (it lives in ``workers/`` because both the workers'
log lines and the operator's commands use it, and ``workers`` imports
nothing from ``shardd``).
"""

from __future__ import annotations


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, the noun plural unless the number is exactly 1.

    ``plural`` for nouns that do not just take an "s" ("3 GMCP messages" does;
    "2 processes" needs ``plural="processes"``).
    """
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
