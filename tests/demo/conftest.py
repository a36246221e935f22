"""Shared generated runs for the demo tests: made once per session, read by many tests."""

from __future__ import annotations

import pytest
from demo_runs import RUN, Run

from gatewatch.demo import generate, scenario


@pytest.fixture(scope="session")
def run() -> Run:
    return Run(scenario(**RUN), list(generate(**RUN)))


@pytest.fixture(scope="session")
def quiet_run() -> Run:
    args = {**RUN, "attacks": False}
    return Run(scenario(**args), list(generate(**args)))
