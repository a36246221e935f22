"""FileSource hands out a file's records block by block: the same records, in the same order, as read_lines."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.records import Dataset, Origin, RawRecord
from ingest.sources import files
from ingest.sources.files import FileSource, read_lines


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    block_bytes=st.integers(1, 80),
    polls=st.lists(st.integers(1, 7), min_size=1, max_size=5),
)
def test_polls_hand_out_every_line_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], block_bytes: int, polls: list[int]
) -> None:
    content = b"\n".join(lines)
    # A file that starts with gzip's magic bytes is read as gzip (by content, not name): not a plain file.
    assume(not content.startswith(b"\x1f\x8b"))
    path = tmp_path_factory.mktemp("blocks") / "a.log"
    path.write_bytes(content)
    original = files._BLOCK_BYTES
    files._BLOCK_BYTES = block_bytes
    try:
        expected = list(read_lines(path, Dataset.APP, 20))
        source = FileSource(path, Dataset.APP, 20)
        got: list[RawRecord] = []
        for n in range(1000):
            chunk = source.poll(0.0, polls[n % len(polls)])
            assert len(chunk) <= polls[n % len(polls)]
            assert source.at_end == (chunk == [])  # at the end only once a poll found nothing
            if not chunk:
                break
            got += chunk
        source.close()
    finally:
        files._BLOCK_BYTES = original
    assert got == expected
    starts = [0]  # each line's byte offset in the file, cut lines included
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    assert [r.origin.offset for r in got] == starts[: len(got)]


def test_origins_and_records_compare_and_hash_by_value() -> None:
    # Not frozen (cheaper to build), but still usable as dict keys, by value.
    first = RawRecord(Origin(Dataset.GATEWAY, "gw.log", 7), b"line")
    again = RawRecord(Origin(Dataset.GATEWAY, "gw.log", 7), b"line")
    assert first == again and hash(first) == hash(again) and {first.origin: 1}[again.origin] == 1
    assert Origin(Dataset.GATEWAY, "gw.log", 8) != first.origin
