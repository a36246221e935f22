"""How often serve's detect stage checkpoints: stretched by what saving costs, never by one wait."""

from __future__ import annotations

import pytest

from gatewatch.checkpoint import CHECKPOINT_MAX_TIME_SHARE, checkpoint_interval_secs

CONFIGURED_SECS = 1.0


def test_fast_saves_keep_the_configured_interval() -> None:
    assert checkpoint_interval_secs(CONFIGURED_SECS, 0.01, 0.02) == CONFIGURED_SECS


def test_a_big_state_that_makes_every_save_slow_stretches_the_interval() -> None:
    # 2 s per save at most 5% of the time: one save every 40 s.
    assert checkpoint_interval_secs(CONFIGURED_SECS, 2.0, 2.5) == pytest.approx(2.0 / CHECKPOINT_MAX_TIME_SHARE)


def test_one_save_that_waited_for_the_broker_does_not_stretch_it() -> None:
    # Measured after a broker restart: a save blocked 24 s; stretching on it put the next
    # checkpoint (and the detect group's commit) 8 minutes later.
    assert checkpoint_interval_secs(CONFIGURED_SECS, 0.03, 24.0) == CONFIGURED_SECS


def test_the_first_save_alone_does_not_stretch_it() -> None:
    assert checkpoint_interval_secs(CONFIGURED_SECS, 0.0, 24.0) == CONFIGURED_SECS
