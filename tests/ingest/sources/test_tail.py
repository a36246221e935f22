"""Following files on real disk: appends, rotation by rename and copytruncate, .gz rotations, restarts.

Every test writes numbered lines and checks that what the follower hands out,
over all polls and restarts, is each line exactly once (by text and by origin).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ingest.records import Dataset, RawRecord
from ingest.sources.files import read_lines
from ingest.sources.tail import Follower, unwrap_container_line


def _lines(first: int, last: int) -> bytes:
    return b"".join(b"line %06d of the access log\n" % n for n in range(first, last + 1))


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


_OPEN: list[Follower] = []


@pytest.fixture(autouse=True)
def _close_followers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _follower(tmp_path: Path, pattern: str = "access.log*", max_line_bytes: int = 65536) -> Follower:
    follower = Follower({Dataset.GATEWAY: [str(tmp_path / pattern)]}, tmp_path / "positions.json", max_line_bytes)
    _OPEN.append(follower)
    return follower


def _texts(records: list[RawRecord]) -> Counter[bytes]:
    return Counter(record.line for record in records)


def _expected(first: int, last: int) -> Counter[bytes]:
    return Counter(_lines(first, last).splitlines())


def test_appends_are_read_once_and_a_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(_lines(1, 3) + b"line 000004 of the")
    follower = _follower(tmp_path)
    got = follower.poll()
    assert _texts(got) == _expected(1, 3)
    _append(log, b" access log\n" + _lines(5, 5))
    got += follower.poll()
    assert follower.poll() == []
    assert _texts(got) == _expected(1, 5)
    assert len({(r.origin.stream, r.origin.offset) for r in got}) == 5


def test_rotation_by_rename_reads_the_old_file_to_its_end_and_the_new_one_from_0(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(_lines(1, 10))
    follower = _follower(tmp_path)
    got = follower.poll()
    _append(log, _lines(11, 12))
    os.rename(log, tmp_path / "access.log.1")
    _append(tmp_path / "access.log.1", _lines(13, 14))  # Envoy writes on until it reopens
    log.write_bytes(_lines(15, 20))
    got += follower.poll()
    got += follower.poll()
    _append(log, _lines(21, 22))
    got += follower.poll()
    assert _texts(got) == _expected(1, 22)


def test_copytruncate_loses_and_duplicates_nothing_when_the_copy_is_followed(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(_lines(1, 10))
    follower = _follower(tmp_path)
    got = follower.poll()
    _append(log, _lines(11, 13))  # written after the last poll, before the copy
    shutil.copyfile(log, tmp_path / "access.log.1")
    with log.open("r+b") as handle:
        handle.truncate(0)
    _append(log, _lines(14, 16))
    got += follower.poll()
    got += follower.poll()
    assert _texts(got) == _expected(1, 16)


def test_a_rotated_file_compressed_later_is_not_read_again_and_an_unseen_gz_is_read_once(tmp_path: Path) -> None:
    old = tmp_path / "access.log.1"
    old.write_bytes(_lines(1, 10))
    (tmp_path / "access.log.2.gz").write_bytes(gzip.compress(_lines(100, 105)))
    follower = _follower(tmp_path)
    got = follower.poll()
    got += follower.poll()
    (tmp_path / "access.log.1.gz").write_bytes(gzip.compress(old.read_bytes()))
    old.unlink()
    got += follower.poll()
    got += follower.poll()
    assert _texts(got) == _expected(1, 10) + _expected(100, 105)


def test_a_restart_resumes_at_the_committed_position(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(_lines(1, 10))
    first = _follower(tmp_path)
    got = first.poll(max_records=4)
    first.commit()
    uncommitted = first.poll(max_records=3)  # handed out, but the process dies before they are durable
    first.close()
    _append(log, _lines(11, 12))
    second = _follower(tmp_path)
    again = second.poll()
    second.commit()
    assert _texts(got + again) == _expected(1, 12)
    # The lines that were not committed come again, with the same origins: their ids overwrite themselves.
    assert {(r.origin.stream, r.origin.offset) for r in uncommitted} <= {(r.origin.stream, r.origin.offset) for r in again}
    second.close()
    third = _follower(tmp_path)
    assert third.poll() == []


def test_container_runtime_wrappers_are_removed_and_partial_lines_joined(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    log.write_bytes(
        b"2026-03-02T09:00:00.000000001Z stdout F whole line\n"
        b"2026-03-02T09:00:00.000000002Z stdout P first half, \n"
        b"2026-03-02T09:00:00.000000003Z stdout F second half\n"
        b'{"log":"docker line\\n","stream":"stdout","time":"2026-03-02T09:00:00Z"}\n'
        b'{"log":"docker piece, ","stream":"stdout","time":"2026-03-02T09:00:00Z"}\n'
        b'{"log":"the rest\\n","stream":"stdout","time":"2026-03-02T09:00:00Z"}\n'
        b"a plain line\n"
    )
    got = _follower(tmp_path, "envoy.log").poll()
    assert [r.line for r in got] == [b"whole line", b"first half, second half", b"docker line",
                                     b"docker piece, the rest", b"a plain line"]  # fmt: skip
    assert unwrap_container_line(b"2026-03-02T09:00:00Z stderr P x") == (b"x", False)


@pytest.mark.parametrize("unwrap", ["message", "log", "docker", "cri"])
def test_the_configured_unwrap_is_applied_as_replay_applies_it(tmp_path: Path, unwrap: str) -> None:
    # gateway.unwrap: message was ignored: every line went to the parser in its shipper's record, a dead letter,
    # and each app line became a gateway_bypass alert.
    inner = [b'[2026-03-02T09:00:00.000Z] "GET /v1/invoices HTTP/1.1" 200 - 0 1 2 1 "198.51.100.1" "curl/8" "rid-1"',
             b'{"ts": "2026-03-02T09:00:01Z", "request_id": "rid-2", "note": "\\"quoted\\""}', b"x" * 3000]
    log = tmp_path / "shipped.log"
    log.write_bytes(b"".join(_wrapped(unwrap, line) + b"\n" for line in inner) + b"not wrapped at all\n")
    follower = Follower({Dataset.GATEWAY: [str(log)]}, tmp_path / "positions.json", 1000,
                        unwraps={Dataset.GATEWAY: unwrap})  # fmt: skip
    _OPEN.append(follower)
    got = follower.poll()
    replayed = list(read_lines(log, Dataset.GATEWAY, 1000, unwrap))
    assert [r.line for r in got] == [r.line for r in replayed]
    assert [r.line for r in got][:2] == inner[:2]
    assert len(got[2].line) > 1000  # oversized, as replay hands it to the parser
    assert [r.created for r in got] == [r.created for r in replayed]  # the runtime's time, with docker and cri


def _wrapped(unwrap: str, line: bytes) -> bytes:
    if unwrap == "cri":
        return b"2026-03-02T09:00:00.000000001Z stdout F " + line
    if unwrap == "docker":
        return orjson.dumps({"log": line.decode() + "\n", "stream": "stdout", "time": "2026-03-02T09:00:00Z"})
    return orjson.dumps({"host": "edge-1", unwrap: line.decode(), "source_type": "file"})


def test_a_line_longer_than_max_line_bytes_is_cut_without_being_held_whole(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"x" * 3_000_000)  # no newline yet
    follower = _follower(tmp_path, max_line_bytes=1000)
    got = []
    for _ in range(4):
        got += follower.poll()
    _append(log, b"tail of it\n" + _lines(1, 1))
    got += follower.poll()
    assert [len(r.line) for r in got] == [1001, len(_lines(1, 1)) - 1]


def test_a_fifo_matched_by_the_glob_is_skipped_not_opened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A red-team trial: mkfifo access.log.1 blocked the pipeline thread in open(), then crashed serve on seek.
    (tmp_path / "access.log").write_bytes(_lines(1, 3))
    os.mkfifo(tmp_path / "access.log.1")
    follower = _follower(tmp_path)
    with caplog.at_level("WARNING"):
        assert _texts(follower.poll()) == _expected(1, 3)
        follower.poll()
    assert [r.getMessage() for r in caplog.records if "follow_skipped" in r.getMessage()] == [
        f"follow_skipped path={tmp_path / 'access.log.1'} reason=not_a_regular_file"]


def test_a_deleted_files_last_line_without_newline_is_handed_out_and_the_file_let_go(tmp_path: Path) -> None:
    # A red-team trial: the unfinished last line of a rotated-away file was neither stored nor dead-lettered,
    # and its descriptor stayed open (the disk space of the deleted file never freed).
    log = tmp_path / "access.log"
    log.write_bytes(_lines(1, 2) + b"line 000003 cut")
    follower = _follower(tmp_path)
    assert _texts(follower.poll()) == _expected(1, 2)
    log.unlink()
    assert [record.line for record in follower.poll()] == [b"line 000003 cut"]
    assert follower._open == {}
    assert follower.poll() == []


def test_a_renamed_files_unfinished_last_line_is_handed_out_once_its_writer_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It waited for its newline as long as the rotated file existed: held back from the store for days.
    import ingest.sources.tail

    log = tmp_path / "access.log"
    log.write_bytes(_lines(1, 2) + b"line 000003 of the")
    follower = _follower(tmp_path)
    assert _texts(follower.poll()) == _expected(1, 2)
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(_lines(10, 10))
    assert _texts(follower.poll()) == _expected(10, 10)  # within the wait: the writer may finish the line
    _append(tmp_path / "access.log.1", b" access log\n" + b"line 000004 cut")
    assert _texts(follower.poll()) == _expected(3, 3)
    monkeypatch.setattr(ingest.sources.tail, "ROTATE_WAIT_SECS", 0.0)
    assert [record.line for record in follower.poll()] == [b"line 000004 cut"]
    assert follower.poll() == [] and follower.poll() == []  # reopened at its end by the glob: nothing again


def test_a_glob_that_matches_no_file_is_said_once_not_at_every_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A newcomer's trial: --follow 'gateway=logs/acess.log*' read nothing, said nothing, and serve was ready.
    follower = _follower(tmp_path, pattern="acess.log*")
    _append(tmp_path / "access.log", _lines(0, 3))
    with caplog.at_level("WARNING", logger="ingest.sources.tail"):
        for _ in range(3):
            assert follower.poll() == []
    said = [r.getMessage() for r in caplog.records if "follow_no_file" in r.getMessage()]
    assert len(said) == 1 and "acess.log*" in said[0] and "dataset=envoy.access" in said[0]
