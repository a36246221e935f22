"""What the demo tests share: one generated run's plan and records, and time parsing.

Imported as ``demo_runs`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from datetime import datetime
from typing import Any

from gatewatch.demo import Scenario

# Small but complete: 30 min at 10 req/s (~55k records) holds every incident at full size.
RUN = {"seed": 7, "duration_secs": 1800.0, "requests_per_sec": 10.0}


@dataclass(frozen=True)
class Run:
    plan: Scenario
    records: list[tuple[str, dict[str, Any]]]

    @cached_property
    def gateway(self) -> list[dict[str, Any]]:
        return [r for kind, r in self.records if kind == "gateway"]

    @cached_property
    def app(self) -> list[dict[str, Any]]:
        return [r for kind, r in self.records if kind == "app"]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()
