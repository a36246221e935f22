"""A damaged gzip file: the lines before the damage are records, the cut line a dead letter, the replay goes on."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import orjson
import pytest

from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.replay import replay
from ingest.errors import SourceError
from ingest.parsers import build_app_parser
from ingest.records import Dataset, DeadLetter, RawRecord
from ingest.sources.files import FileSource, read_lines
from ingest.testing import MemorySink

# Lines of different lengths, so a cut lands inside one.
LINES = [
    orjson.dumps({"ts": f"2026-03-02T09:00:{n % 60:02d}Z", "request_id": f"r-{n}", "msg": "x" * (n % 97)})
    for n in range(2000)
]
DATA = b"\n".join(LINES) + b"\n"


def decodable_prefix(compressed: bytes) -> bytes:
    """All that zlib decodes of a truncated gzip stream (it returns what it has instead of raising)."""
    return zlib.decompressobj(wbits=31).decompress(compressed)


def expected_records(decoded: bytes) -> tuple[list[bytes], bytes]:
    *whole, partial = decoded.split(b"\n")
    assert whole and partial, "the damage must cut a line"
    return whole, partial


def line_starts(lines: list[bytes]) -> list[int]:
    """The byte offset of each of ``lines`` in the file they were split from."""
    starts, at = [], 0
    for line in lines:
        starts.append(at)
        at += len(line) + 1
    return starts


def assert_read_to_the_damage(records: list[RawRecord], whole: list[bytes], partial: bytes) -> None:
    assert [r.line for r in records] == [*whole, partial]
    assert [r.origin.offset for r in records] == line_starts([*whole, partial])
    letter = build_app_parser({})(records[-1])
    assert isinstance(letter, DeadLetter) and letter.reason == "truncated"


def test_a_truncated_gzip_yields_its_whole_lines_then_the_cut_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compressed = gzip.compress(DATA)
    cut = compressed[: len(compressed) * 2 // 3]
    path = tmp_path / "app.log.gz"
    path.write_bytes(cut)
    with caplog.at_level(logging.WARNING, logger="ingest.sources.files"):
        records = list(read_lines(path, Dataset.APP, 65536))
    whole, partial = expected_records(decodable_prefix(cut))
    assert len(whole) > 1000
    assert_read_to_the_damage(records, whole, partial)
    (warning,) = caplog.messages
    assert warning.startswith(f"gzip_damaged path={path} ") and "end-of-stream marker" in warning


def test_a_truncated_container_log_is_unwrapped_up_to_the_damage(tmp_path: Path) -> None:
    wrapped = b"".join(b"2026-03-02T09:00:00.000000001Z stdout F " + line + b"\n" for line in LINES)
    compressed = gzip.compress(wrapped)
    cut = compressed[: len(compressed) // 2]
    path = tmp_path / "app.log.gz"
    path.write_bytes(cut)
    records = list(read_lines(path, Dataset.APP, 65536, unwrap="cri"))
    raw_lines = decodable_prefix(cut).split(b"\n")
    assert [r.line for r in records[:-1]] == LINES[: len(raw_lines) - 1]
    assert [r.origin.offset for r in records] == line_starts(raw_lines)  # the wrapped lines' offsets
    assert isinstance(build_app_parser({})(records[-1]), DeadLetter)


def test_a_bad_crc_keeps_every_line_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    compressed = bytearray(gzip.compress(DATA))
    compressed[-8] ^= 0xFF  # the trailer's CRC-32: the data itself decodes whole
    path = tmp_path / "app.log.gz"
    path.write_bytes(compressed)
    with caplog.at_level(logging.WARNING, logger="ingest.sources.files"):
        records = list(read_lines(path, Dataset.APP, 65536))
    assert [r.line for r in records] == LINES
    assert "CRC check failed" in caplog.text


def broken_member(before: bytes, after: bytes) -> bytes:
    """A gzip member that decodes to ``before``, then meets corrupt deflate data (zlib.error) where ``after`` starts."""
    compressor = zlib.compressobj(wbits=31)
    head = bytearray(compressor.compress(before) + compressor.flush(zlib.Z_FULL_FLUSH))
    assert head[-4:] == b"\x00\x00\xff\xff"  # a full flush ends with an empty stored block
    head[-1] = 0  # its length check (NLEN) no longer the complement of its length
    return bytes(head) + compressor.compress(after) + compressor.flush()


def test_damage_inside_a_member_keeps_the_members_before_it_and_all_it_decoded(tmp_path: Path) -> None:
    """Python's gzip drops what the read that meets corrupt deflate data decoded: that stretch is read again."""
    first = b"".join(line + b"\n" for line in LINES[:300])
    cut = len(DATA) * 2 // 3
    damaged = broken_member(DATA[len(first) : cut], DATA[cut:])
    with pytest.raises(zlib.error):
        decodable_prefix(damaged)
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(first) + damaged + gzip.compress(b"never reached\n"))
    records = list(read_lines(path, Dataset.APP, 65536))
    whole, partial = expected_records(DATA[:cut])
    # zlib drops what the failing call decoded, even a read of one byte: the cut line may lose its last byte.
    assert partial.startswith(records[-1].line) and len(records[-1].line) >= len(partial) - 1
    assert_read_to_the_damage(records, whole, records[-1].line)


def test_a_gzip_header_and_nothing_else_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gz"
    path.write_bytes(b"\x1f\x8b")
    assert list(read_lines(path, Dataset.APP, 100)) == []


def test_a_replay_with_a_truncated_file_stores_the_other_files_events(tmp_path: Path) -> None:
    files = write_demo(tmp_path / "logs", seed=3, duration_secs=60.0, requests_per_sec=4.0, attacks=False)
    compressed = gzip.compress(files.app_log.read_bytes())
    truncated = tmp_path / "app.log.gz"
    truncated.write_bytes(compressed[: len(compressed) // 2])
    sink = MemorySink()
    stats = replay(load_config(files.config_yaml), [files.gateway_log], [truncated], [sink])
    gateway_lines = len(files.gateway_log.read_bytes().splitlines())
    decoded = decodable_prefix(truncated.read_bytes()).split(b"\n")
    app_lines = len(decoded)  # the whole ones and the cut one
    stored = [*sink.events.values(), *sink.dead_letters.values()]
    by_dataset = {dataset: sum(1 for s in stored if s.origin.dataset == dataset) for dataset in Dataset}
    assert by_dataset[Dataset.GATEWAY] == gateway_lines and by_dataset[Dataset.APP] == app_lines
    assert stats.records_in == gateway_lines + app_lines
    cut = max((d for d in sink.dead_letters.values() if d.origin.dataset == Dataset.APP), key=lambda d: d.origin.offset)
    assert (cut.origin.offset, cut.reason) == (line_starts(decoded)[-1], "truncated")


def test_a_missing_file_is_still_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open log file"):
        FileSource(tmp_path / "missing.log.gz", Dataset.APP, 100)
