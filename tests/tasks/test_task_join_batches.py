"""The JOIN task hands its pipeline's stages batches (a release a second at a time, a tick's transactions):
every message it sends must be byte for byte what it sent handling one event at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.config import load_config
from gatewatch.demo.files import DemoFiles, write_demo
from gatewatch.tasks import join
from gatewatch.tasks.local import LocalRun
from gatewatch.topology import Pipeline
from ingest.records import Dataset, Event
from ingest.sources.files import read_lines


class _OneByOneJoin(join._JoinPipeline):
    """The JOIN pipeline as it was: each released event processed (and routed on) alone."""

    _process_second = Pipeline._process_second  # not overridden: the pipeline then releases one by one

    def _process_released(self, events: list[Event]) -> None:  # finish()'s last release
        for event in events:
            self.order.clock = event.ts  # as the order's release() sets it, event by event
            self._process_event(event)


def _messages(files: DemoFiles, partitions: int) -> dict[tuple[str, int], list[bytes]]:
    config = load_config(files.config_yaml)
    records = {str(path): list(read_lines(path, dataset, 65536))
               for path, dataset in ((files.gateway_log, Dataset.GATEWAY), (files.app_log, Dataset.APP))}  # fmt: skip
    run = LocalRun(config, partitions, seed=partitions, poll_records=200, restarts=3)
    run.run_records(records)
    assert run.result.alerts, "the demo raises alerts"
    return {key: log for key, log in run.logs.items() if key[0] != "requests"}


@pytest.mark.parametrize("partitions", [1, 3])
def test_join_batches_send_what_one_event_at_a_time_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    files = write_demo(tmp_path, seed=11, duration_secs=600.0, requests_per_sec=8.0)  # stream names: one place
    batched = _messages(files, partitions)
    monkeypatch.setattr(join, "_JoinPipeline", _OneByOneJoin)
    one_by_one = _messages(files, partitions)
    assert sum(map(len, batched.values())) > partitions
    assert batched == one_by_one
