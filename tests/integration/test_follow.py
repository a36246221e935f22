"""``gatewatch serve --follow`` against real Kafka: files written, rotated and a kill -9 in the middle.

The gateway log is rotated by rename, the app log by copytruncate (both rotated
files stay matched by the globs), and serve is killed while lines arrive and
started again. Every line must be stored exactly once, under the id of the file
fingerprint and byte offset it was written at.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import duckdb
import orjson
from test_serve import REPO, Line, Serve, Topics, build_traffic, topics, wait_for  # noqa: F401 (topics: a fixture)

from ingest.records import Dataset, Origin, record_id


class LogFile:
    """A log file written line by line, knowing the id each line will get (fingerprint of its first line, offset)."""

    def __init__(self, path: Path, dataset: Dataset) -> None:
        self.path, self.dataset = path, dataset
        self.ids: Counter[str] = Counter()
        self.ends: dict[str, int] = {}  # fingerprint -> bytes written under it
        self._fingerprint: str | None = None
        self._offset = 0

    def write(self, lines: list[bytes]) -> None:
        with self.path.open("ab") as handle:
            for line in lines:
                if self._fingerprint is None:
                    assert line, "a file starting with an empty line shares its fingerprint with any other such file"
                    self._fingerprint = hashlib.blake2b((line + b"\n")[:256], digest_size=8).hexdigest()
                self.ids[record_id(Origin(self.dataset, f"file:{self._fingerprint}", self._offset))] += 1
                handle.write(line + b"\n")
                self._offset += len(line) + 1
                self.ends[self._fingerprint] = self._offset

    def rotate_by_rename(self) -> None:
        os.rename(self.path, self.path.with_name(self.path.name + ".1"))
        self._fingerprint, self._offset = None, 0

    def rotate_by_copytruncate(self) -> None:
        shutil.copyfile(self.path, self.path.with_name(self.path.name + ".1"))
        with self.path.open("r+b") as handle:
            handle.truncate(0)
        self._fingerprint, self._offset = None, 0


class FollowServe(Serve):
    """``gatewatch serve --follow`` as a subprocess."""

    def __init__(
        self, config: Path, store: Path, log: Path, follow: list[str], positions: Path, instance_id: str
    ) -> None:
        """``instance_id``: a static member, so a restart after kill -9 gets the partitions back at once."""
        from test_serve import _free_port

        self.port = _free_port()
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config), "--store", f"duckdb:{store}",
                 "--listen", f"127.0.0.1:{self.port}", "--follow", *follow, "--follow-positions", str(positions),
                 "--instance-id", instance_id],
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        Serve.started.append(self)
        wait_for(lambda: self.get("/healthz")[0] == 200, 30, "serve to answer /healthz", self)

    def followed(self) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.get("/metrics")[1].splitlines()
            if line.startswith('component_received_events_total{component="file"')
        )


def _stored_ids(store: Path) -> Counter[str]:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute("SELECT id FROM events UNION ALL SELECT id FROM dead_letters").fetchall()
    return Counter(row[0] for row in rows)


def test_rotations_and_a_kill_lose_and_duplicate_nothing(topics: Topics, tmp_path: Path) -> None:
    lines: dict[str, list[bytes]] = {"gateway": [], "app": []}
    for line in build_traffic(300, tails=False):
        lines[line.side].append(line.value)
    logs = {side: LogFile(tmp_path / f"{side}.log", dataset) for side, dataset in (("gateway", Dataset.GATEWAY),
                                                                                   ("app", Dataset.APP))}
    follow = [f"gateway={tmp_path}/gateway.log*", f"app={tmp_path}/app.log*"]
    positions, store, config = tmp_path / "positions.json", tmp_path / "store.duckdb", topics.config(tmp_path)
    quarter = {side: len(own) // 4 for side, own in lines.items()}

    def part(side: str, n: int) -> list[bytes]:
        return lines[side][n * quarter[side] : (n + 1) * quarter[side] if n < 3 else None]

    for side, log in logs.items():
        log.write(part(side, 0))
    member = f"follow-{uuid.uuid4().hex[:8]}"
    first = FollowServe(config, store, tmp_path / "serve-1.log", follow, positions, member)
    wait_for(lambda: first.followed() >= sum(quarter.values()), 30, "the first quarter", first)
    logs["gateway"].write(part("gateway", 1)[:20])  # written just before the rotation
    logs["gateway"].rotate_by_rename()
    logs["app"].write(part("app", 1))
    logs["app"].rotate_by_copytruncate()
    logs["gateway"].write(part("gateway", 1)[20:])
    wait_for(lambda: first.followed() >= 2 * sum(quarter.values()), 30, "the second quarter", first)
    for side, log in logs.items():
        log.write(part(side, 2))
    first.kill()  # the third quarter may be produced but its positions not saved, or not even read
    for side, log in logs.items():
        log.write(part(side, 3))

    second = FollowServe(config, store, tmp_path / "serve-2.log", follow, positions, member)
    total = sum(len(own) for own in lines.values())
    ends = logs["gateway"].ends | logs["app"].ends

    def all_read() -> bool:
        saved = orjson.loads(positions.read_bytes()) if positions.exists() else {}
        return all(saved.get(fingerprint) == end for fingerprint, end in ends.items())

    wait_for(all_read, 60, "every file to be read to its end", second)
    wait_for(topics.all_committed, 60, "everything to be ingested", second)
    assert second.stop() == 0, second.output()
    expected = logs["gateway"].ids + logs["app"].ids
    assert sum(expected.values()) == total
    assert _stored_ids(store) == expected
