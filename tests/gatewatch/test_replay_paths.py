"""Replaying a file again under another name (relative, absolute, a symlink) stores nothing twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.replay import replay
from gatewatch.topology import Pipeline
from ingest.testing import MemorySink


def test_a_file_replayed_under_another_name_is_stored_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_demo(tmp_path / "logs", seed=5, duration_secs=600.0, requests_per_sec=2.0)
    config = load_config(files.config_yaml)
    (tmp_path / "app-current.log").symlink_to(files.app_log)
    monkeypatch.chdir(tmp_path)
    buffered = watch_the_reorder_buffer(monkeypatch)
    sink = MemorySink()
    first = replay(config, [files.gateway_log], [files.app_log], [sink])
    stored = (set(sink.events), set(sink.dead_letters), set(sink.transactions), set(sink.alerts))
    peak = max(buffered)
    buffered.clear()
    again = replay(config, [Path(os.path.relpath(files.gateway_log))], [Path("app-current.log")], [sink])
    assert (set(sink.events), set(sink.dead_letters), set(sink.transactions), set(sink.alerts)) == stored
    assert again == first
    # The replay opens each input under its records' stream name; under another, its clock never moved and the
    # reorder buffer held every record to the end.
    assert max(buffered) == peak


def watch_the_reorder_buffer(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The reorder buffer's length at each :meth:`Pipeline.process`, collected into the list returned."""
    lengths: list[int] = []
    process = Pipeline.process

    def counted(self: Pipeline) -> None:
        lengths.append(len(self.order))
        process(self)

    monkeypatch.setattr(Pipeline, "process", counted)
    return lengths
