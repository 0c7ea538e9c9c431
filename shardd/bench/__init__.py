"""``shardd bench``: shardd against its anchors, in one run, on loopback.

Every contender (:mod:`~shardd.bench.contenders`) is started as its own
process and driven by the same load-test client (:mod:`shardd.loadtest`)
from this process, in the scenarios the load-test scenarios offer the bench
(:mod:`~shardd.bench.measure`). The report (:mod:`~shardd.bench.report`)
gives each figure's median over the rounds (:mod:`~shardd.bench.run`), plus
every contender's ratio to every anchor. Absolute figures drift with the
machine; the ratios of one run are what to compare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardd.bench.contenders import CONTENDERS
    from shardd.bench.measure import SCENARIOS

__all__ = ["CONTENDERS", "SCENARIOS"]


def __getattr__(name: str) -> Any:
    # Imported on first use, not here: ``python -m shardd.bench.anchors`` runs
    # this file first, and an anchor is to stay a bare echo server.
    if name == "CONTENDERS":
        from shardd.bench.contenders import CONTENDERS

        return CONTENDERS
    if name == "SCENARIOS":
        from shardd.bench.measure import SCENARIOS

        return SCENARIOS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
