"""What one ``shardd bench`` run measures, and how much of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from shardd.bench.contenders import CONTENDERS
from shardd.bench.measure import SCENARIOS


@dataclass
class Settings:
    rounds: int = 3
    duration: float = 5.0
    sessions: int = 100
    connect_sessions: int = 2000
    connect_concurrency: int = 20
    idle_sessions: int = 5000
    idle_hold: float = 2.0
    contenders: list[str] = field(default_factory=lambda: list(CONTENDERS))
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
