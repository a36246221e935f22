"""Files source: plain and gzip, line numbers as origins, oversized lines kept bounded."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.errors import SourceError
from ingest.records import Dataset, record_id
from ingest.sources.files import FileSource, read_lines
from ingest.sources.revocations import load_revocations, shared_revocations


@pytest.mark.parametrize("compress", [False, True])
def test_lines_and_origins(tmp_path: Path, compress: bool) -> None:
    data = b"first\r\nsecond\n\nlast-without-newline"
    path = tmp_path / "a.log"
    path.write_bytes(gzip.compress(data) if compress else data)
    records = list(read_lines(path, Dataset.APP, max_line_bytes=100))
    assert [r.line for r in records] == [b"first", b"second", b"", b"last-without-newline"]
    assert [r.origin.offset for r in records] == [1, 2, 3, 4]
    assert {r.origin.stream for r in records} == {str(path.resolve())}


def test_every_name_of_a_file_gives_its_records_the_same_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids derive from the stream name: a file replayed again under another name is stored once, not twice."""
    path = tmp_path / "logs" / "gateway.log"
    path.parent.mkdir()
    path.write_bytes(b"first\nsecond\n")
    (tmp_path / "current.log").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    names = [path, Path("logs/gateway.log"), Path("logs/../logs/./gateway.log"), Path("current.log")]
    ids = {tuple(record_id(r.origin) for r in read_lines(name, Dataset.GATEWAY, 100)) for name in names}
    assert len(ids) == 1 and len(next(iter(ids))) == 2
    assert {FileSource(name, Dataset.GATEWAY, 100).stream for name in names} == {str(path.resolve())}


def test_oversized_line_is_cut_to_its_head_and_the_next_line_survives(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"x" * 5_000_000 + b"\nnext\n")
    first, second = read_lines(path, Dataset.GATEWAY, max_line_bytes=1000)
    assert len(first.line) == 1001 and second.line == b"next" and second.origin.offset == 2


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
        assert list(files._bounded_lines(files._chunks(io.BytesIO(raw), Path("a.log")), limit)) == expected
    finally:
        files._BLOCK_BYTES = original
