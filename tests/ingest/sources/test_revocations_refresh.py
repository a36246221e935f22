"""A running serve reads its revocation list again when the file changes, in place, never losing a revocation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gatewatch.config import parse_config
from gatewatch.topology import Pipeline
from ingest.sources import revocations
from ingest.sources.revocations import REFRESH_SECS, refresh_shared_revocations, shared_revocations


@pytest.fixture(autouse=True)
def _fresh_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocations, "_last_refresh", float("-inf"))


def test_a_changed_list_is_read_again_in_place(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "revoked.csv"
    path.write_text("jti,revoked_at\nj1,1767225600\n")
    held = shared_revocations(path)  # what every task's rules hold
    assert refresh_shared_revocations(1000.0) == []  # unchanged: nothing read
    path.write_text("jti,revoked_at\nj2,1767225700\n")
    assert refresh_shared_revocations(1000.0 + REFRESH_SECS / 2) == []  # too soon to look
    assert refresh_shared_revocations(1000.0 + REFRESH_SECS) == [path]
    assert held == {"j2": 1_767_225_700.0}  # the same mapping, brought up to date
    # Half-written: the list stays as it was, with a warning, until the file reads again.
    path.write_text("jti,revoked_at\nj3,not a time\n")
    with caplog.at_level(logging.WARNING, logger="ingest.sources.revocations"):
        assert refresh_shared_revocations(1000.0 + 2 * REFRESH_SECS) == []
    assert held == {"j2": 1_767_225_700.0}
    assert "revocations_unreadable" in caplog.text and "kept=1" in caplog.text
    path.write_text("jti,revoked_at\nj2,1767225700\nj3,1767225800\n")
    assert refresh_shared_revocations(1000.0 + 3 * REFRESH_SECS) == [path]
    assert held == {"j2": 1_767_225_700.0, "j3": 1_767_225_800.0}


def test_a_list_empty_at_the_start_is_watched(tmp_path: Path) -> None:
    (tmp_path / "revoked.csv").write_text("jti,revoked_at\n")  # nothing revoked yet, but a list to watch
    watched = Pipeline(parse_config({"tokens": {"revoked": "revoked.csv"}}, base_dir=tmp_path))
    unwatched = Pipeline(parse_config({}))
    def arrival_rules(pipeline: Pipeline) -> set[str]:
        return {rule for rules in pipeline.detectors._arrival.values() for rule, _ in rules}

    assert "token_revoked_used" in arrival_rules(watched)
    assert "token_revoked_used" not in arrival_rules(unwatched)
