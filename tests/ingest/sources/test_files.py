"""Files source: plain and gzip, a file named by its first line, byte offsets as origins, oversized lines bounded."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.errors import SourceError
from ingest.records import Dataset, record_id
from ingest.sources.files import FileSource, read_lines
from ingest.sources.fingerprint import head_fingerprint
from ingest.sources.revocations import load_revocations, shared_revocations
from ingest.sources.tail import Follower


@pytest.mark.parametrize("compress", [False, True])
def test_lines_and_origins(tmp_path: Path, compress: bool) -> None:
    data = b"first\r\nsecond\n\nlast-without-newline"
    path = tmp_path / "a.log"
    path.write_bytes(gzip.compress(data) if compress else data)
    records = list(read_lines(path, Dataset.APP, max_line_bytes=100))
    assert [r.line for r in records] == [b"first", b"second", b"", b"last-without-newline"]
    assert [r.origin.offset for r in records] == [0, 7, 14, 15]  # where each line starts, gunzipped
    assert {r.origin.stream for r in records} == {"file:" + str(head_fingerprint(b"first\r\n"))}


def test_every_name_of_a_file_gives_its_records_the_same_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids derive from the stream name: a file replayed again under another name is stored once, not twice.

    Renamed by logrotate, then compressed, or grown since: the lines it had keep their ids.
    """
    path = tmp_path / "logs" / "gateway.log"
    path.parent.mkdir()
    path.write_bytes(b"first\nsecond\n")
    (tmp_path / "current.log").symlink_to(path)
    (tmp_path / "logs" / "gateway.log.1.gz").write_bytes(gzip.compress(b"first\nsecond\nthird\n"))
    monkeypatch.chdir(tmp_path)
    names = [path, Path("logs/gateway.log"), Path("logs/../logs/./gateway.log"), Path("current.log"),
             Path("logs/gateway.log.1.gz")]  # fmt: skip
    ids = {tuple(record_id(r.origin) for r in read_lines(name, Dataset.GATEWAY, 100))[:2] for name in names}
    assert len(ids) == 1 and len(next(iter(ids))) == 2
    assert len({FileSource(name, Dataset.GATEWAY, 100).stream for name in names}) == 1


def test_a_new_file_at_an_old_name_gives_new_ids(tmp_path: Path) -> None:
    """logrotate's create: the next day's access.log is other lines at the same offsets, not records seen before."""
    path = tmp_path / "access.log"
    path.write_bytes(b"monday 1\nmonday 2\n")
    monday = {record_id(r.origin) for r in read_lines(path, Dataset.GATEWAY, 100)}
    path.write_bytes(b"tuesday 1\ntuesday 2\n")
    tuesday = {record_id(r.origin) for r in read_lines(path, Dataset.GATEWAY, 100)}
    assert len(monday) == len(tuesday) == 2 and not monday & tuesday


@pytest.mark.parametrize("compress", [False, True])
def test_replay_names_a_files_records_as_follow_does(tmp_path: Path, compress: bool) -> None:
    """A file first followed by serve and then replayed (or the other way round) is stored once."""
    data = b"first\r\nsecond\n\n" + b"x" * 300 + b"\nlast\n"
    path = tmp_path / ("a.log.gz" if compress else "a.log")
    path.write_bytes(gzip.compress(data) if compress else data)
    follower = Follower({Dataset.APP: [str(path)]}, tmp_path / "positions.json", 100)
    followed = follower.poll(100)
    follower.close()
    replayed = list(read_lines(path, Dataset.APP, 100))
    assert [(r.origin, r.line) for r in replayed] == [(r.origin, r.line) for r in followed]
    assert len(replayed) == 5


def test_oversized_line_is_cut_to_its_head_and_the_next_line_survives(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"x" * 5_000_000 + b"\nnext\n")
    first, second = read_lines(path, Dataset.GATEWAY, max_line_bytes=1000)
    assert len(first.line) == 1001 and second.line == b"next" and second.origin.offset == 5_000_001


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open log file"):
        list(read_lines(tmp_path / "nope.log", Dataset.APP, 100))


def test_revocation_list(tmp_path: Path) -> None:
    path = tmp_path / "revoked.csv"
    path.write_text("jti,revoked_at\nj1,2026-01-01T00:00:00Z\nj2,1767225700\nj1,2026-01-01T00:01:00Z\n")
    assert load_revocations(path) == {"j1": 1_767_225_600.0, "j2": 1_767_225_700.0}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,when\nj1,x\n")
    with pytest.raises(SourceError, match="jti,revoked_at"):
        load_revocations(bad)
    worse = tmp_path / "worse.csv"
    worse.write_text("jti,revoked_at\nj1,yesterday\n")
    with pytest.raises(SourceError, match=":2: revoked_at"):
        load_revocations(worse)


def test_a_revocation_list_saved_by_excel_or_powershell_reads(tmp_path: Path) -> None:
    path = tmp_path / "revoked.csv"
    path.write_bytes("\ufeffjti, revoked_at\r\nj1, 2026-01-01T00:00:00Z\r\n".encode())  # a BOM, spaces, CRLF
    assert load_revocations(path) == {"j1": 1_767_225_600.0}


def test_the_revocation_list_is_read_once_a_process_until_the_file_changes(tmp_path: Path) -> None:
    """Every task serve runs makes the rules' context: one copy of a big list, not one a task."""
    path = tmp_path / "revoked.csv"
    path.write_text("jti,revoked_at\nj1,1767225600\n")
    first = shared_revocations(path)
    assert shared_revocations(path) is first and first == {"j1": 1_767_225_600.0}
    path.write_text("jti,revoked_at\nj1,1767225600\nj2,1767225700\n")
    assert shared_revocations(path) == {"j1": 1_767_225_600.0, "j2": 1_767_225_700.0}
    replaced = tmp_path / "new.csv"  # an editor's save: same size, a new file moved over the old
    replaced.write_text("jti,revoked_at\nj1,1767225600\nj3,1767225700\n")
    replaced.replace(path)
    assert shared_revocations(path) == {"j1": 1_767_225_600.0, "j3": 1_767_225_700.0}
    path.unlink()
    with pytest.raises(SourceError, match="cannot read the revocation list"):
        shared_revocations(path)


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    block=st.integers(1, 64),
    limit=st.integers(1, 30),
    final_newline=st.booleans(),
)
def test_block_reading_matches_line_splitting(data: list[bytes], block: int, limit: int, final_newline: bool) -> None:
    import io

    from ingest.sources import files

    raw = b"\n".join(data) + (b"\n" if final_newline and data else b"")
    expected = [line[:limit] if len(line) >= limit else line.removesuffix(b"\r") for line in raw.split(b"\n")]
    if raw.endswith(b"\n") or not raw:
        expected.pop()
    original = files._BLOCK_BYTES
    files._BLOCK_BYTES = block
    try:
        got = list(files._bounded_lines(files._chunks(io.BytesIO(raw), Path("a.log")), limit))
        assert [line for _, line in got] == expected
        assert [start for start, _ in got] == [sum(len(line) + 1 for line in data[:n]) for n in range(len(got))]
    finally:
        files._BLOCK_BYTES = original


@pytest.mark.parametrize("unwrap", [None, "cri"])
@pytest.mark.parametrize("compress", [False, True])
def test_a_utf8_bom_at_the_start_of_a_file_is_not_part_of_its_first_line(
    tmp_path: Path, compress: bool, unwrap: str | None
) -> None:
    # Editors on Windows and PowerShell's Out-File write one: the first line must still parse.
    lines = [b"first", b"second \xef\xbb\xbf"]  # a BOM elsewhere is the line's own bytes
    if unwrap == "cri":
        lines = [b"2026-03-02T09:00:00.000000000Z stdout F " + line for line in lines]
    data = b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n"
    path = tmp_path / "a.log"
    path.write_bytes(gzip.compress(data) if compress else data)
    records = list(read_lines(path, Dataset.APP, max_line_bytes=100, unwrap=unwrap))
    assert [r.line for r in records] == [b"first", b"second \xef\xbb\xbf"]


def test_a_followed_file_starting_with_a_bom_gives_its_first_line_without_it(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"\xef\xbb\xbffirst\nsecond\n")
    follower = Follower({Dataset.APP: [str(path)]}, tmp_path / "positions.json", 100)
    try:
        assert [r.line for r in follower.poll()] == [b"first", b"second"]
    finally:
        follower.close()
