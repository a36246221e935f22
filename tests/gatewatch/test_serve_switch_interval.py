"""Serve runs both stages with a longer interpreter-lock switch interval, and gives the caller's back when it
returns; one stage a process keeps the default."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import gatewatch.serve as serve_module
from gatewatch.serve import SWITCH_INTERVAL_SECS, serve


class _FakeService:
    seen: list[float] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run(self) -> int:
        self.seen.append(sys.getswitchinterval())
        return 0

    def request_stop(self, *args: Any) -> None:
        pass


def test_serve_runs_with_its_switch_interval_and_restores_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_module, "Service", _FakeService)
    _FakeService.seen = []
    before = sys.getswitchinterval()
    assert before != SWITCH_INTERVAL_SECS
    assert serve(None, "none", "127.0.0.1:0") == 0  # type: ignore[arg-type]
    assert _FakeService.seen == [pytest.approx(SWITCH_INTERVAL_SECS)]
    assert sys.getswitchinterval() == pytest.approx(before)


def test_one_stage_a_process_keeps_the_callers_switch_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_module, "Service", _FakeService)
    _FakeService.seen = []
    before = sys.getswitchinterval()
    for stages in ("ingest", "detect"):
        assert serve(None, "none", "127.0.0.1:0", stages=stages) == 0  # type: ignore[arg-type]
    assert _FakeService.seen == [pytest.approx(before)] * 2
