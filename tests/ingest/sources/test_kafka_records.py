"""Kafka record batches read by ingest.sources.kafka_records give what kafka-python's own reading gives.

Batches are built by kafka-python's own builder, so the bytes are the library's
idea of the format; each is read both ways and every field compared, and so is
what each reading hands over before it refuses a damaged batch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

import ingest.sources.kafka_client  # noqa: F401  (installs the reading, as serve's imports do)
from ingest.sources import kafka_records
from ingest.sources.kafka_records import Record, read_batch

LIBRARY_ITER = DefaultRecordBatch.__iter__.library_iter  # type: ignore[attr-defined]
FIELDS = ("size_in_bytes", "offset", "timestamp", "timestamp_type", "key", "value", "headers", "checksum")
CODECS = {"none": 0, "gzip": DefaultRecordBatch.CODEC_GZIP, "zstd": DefaultRecordBatch.CODEC_ZSTD}

# Short and long values (a varint length of one byte or more), None, header lists, offsets with gaps.
BYTES = st.one_of(st.none(), st.binary(max_size=8), st.binary(min_size=60, max_size=300))
RECORDS = st.lists(
    st.tuples(
        st.integers(0, 5_000),  # the gap to the previous offset
        st.integers(-(10**6), 10**10),  # timestamp ms after the batch's first
        BYTES,
        BYTES,
        st.lists(st.tuples(st.text(max_size=12), BYTES), max_size=3),
    ),
    min_size=1,
    max_size=40,
)


def build(records: list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
          codec: int = 0, log_append_time: bool = False) -> bytes:  # fmt: skip
    builder = DefaultRecordBatchBuilder(2, codec, False, -1, -1, -1, 10**8)
    offset, first = 0, 1_772_442_698_000
    for gap, ts, key, value, headers in records:
        offset += gap
        builder.append(offset, first + ts, key, value, headers)
    data = bytearray(builder.build())
    if log_append_time:  # the broker's clock: every record takes the batch's max timestamp (no CRC is checked)
        (attributes,) = struct.unpack_from(">h", data, DefaultRecordBatch.ATTRIBUTES_OFFSET)
        struct.pack_into(">h", data, DefaultRecordBatch.ATTRIBUTES_OFFSET, attributes | 0x08)
    return bytes(data)


def library_reading(batch: DefaultRecordBatch) -> Iterator[object]:
    # The library's __iter__ returns the batch, whose __iter__ is now ours: step its __next__ instead.
    records = LIBRARY_ITER(batch)
    while True:
        try:
            yield records.__next__()
        except StopIteration:
            return


def read_both(data: bytes) -> tuple[tuple[list[tuple], type | None], tuple[list[tuple], type | None]]:
    """Each reading's records (as field tuples) until the end or an error, and the error's type."""
    results = []
    for read in (library_reading, read_batch):
        rows: list[tuple] = []
        error = None
        try:
            for record in read(DefaultRecordBatch(data)):
                rows.append(tuple(getattr(record, name) for name in FIELDS))
        except Exception as raised:  # noqa: BLE001 - which error is the point
            error = type(raised)
        results.append((rows, error))
    return results[0], results[1]


@settings(max_examples=300, deadline=None)
@given(records=RECORDS, codec=st.sampled_from(sorted(CODECS.values())), log_append_time=st.booleans())
def test_every_field_of_every_record_is_the_library_s(records: list, codec: int, log_append_time: bool) -> None:
    library, ours = read_both(build(records, codec, log_append_time))
    assert library[1] is None and ours[1] is None
    assert ours[0] == library[0]
    assert len(ours[0]) == len(records)


@settings(max_examples=400, deadline=None)
@given(records=RECORDS, data=st.data())
def test_a_damaged_batch_gives_the_same_records_then_the_same_refusal(records: list, data: st.DataObject) -> None:
    batch = bytearray(build(records))
    header = DefaultRecordBatch.HEADER_STRUCT.size
    if data.draw(st.booleans(), label="truncate"):
        batch = batch[: data.draw(st.integers(header, len(batch) - 1), label="cut at")]
    else:
        for _ in range(data.draw(st.integers(1, 3), label="bytes changed")):
            batch[data.draw(st.integers(header, len(batch) - 1), label="at")] = data.draw(st.integers(0, 255))
    library, ours = read_both(bytes(batch))
    assert ours == library
    assert ours[1] in (None, CorruptRecordError)


@pytest.mark.parametrize("size", [31, 32, 63, 64, 4_095, 4_096, 8_191, 8_192])
def test_varints_at_the_edges_of_one_two_and_three_bytes_read_as_the_library_reads_them(size: int) -> None:
    # A zigzag varint holds 63 in one byte, 8,191 in two: the value's size, the record's length (a
    # little more), the time and offset deltas (the same sizes as gaps) each cross those edges here.
    records = [(0, 0, None, b"x" * size, []), (size, size, b"k", b"y" * (size // 2), []), (1, 10**9, None, None, [])]
    library, ours = read_both(build(records))
    assert library[1] is None and ours == library
    assert [row[5] for row in ours[0]] == [b"x" * size, b"y" * (size // 2), None]


def test_the_fetcher_s_loop_reads_with_it_and_a_control_batch_keeps_the_library_s_reading() -> None:
    data = build([(0, 0, None, b'{"ts": 1}', [])])
    assert type(next(iter(DefaultRecordBatch(data)))) is Record
    control = bytearray(data)
    struct.pack_into(">h", control, DefaultRecordBatch.ATTRIBUTES_OFFSET, 0x20)
    assert iter(DefaultRecordBatch(bytes(control))) is not None
    assert type(iter(DefaultRecordBatch(bytes(control)))) is DefaultRecordBatch  # the library's: itself


def test_installing_twice_changes_nothing() -> None:
    installed = DefaultRecordBatch.__iter__
    kafka_records.install()
    assert DefaultRecordBatch.__iter__ is installed


@pytest.mark.parametrize("codec", CODECS, ids=CODECS)
def test_a_compressed_batch_of_log_lines_reads_the_same(codec: str) -> None:
    lines = [(1, n, None, b'{"request_id": "%d"}' % n + b"x" * 500, []) for n in range(200)]
    library, ours = read_both(build(lines, CODECS[codec]))
    assert ours == library and len(ours[0]) == 200


# The fetcher's loop (PartitionRecords._unpack_records): what a consumer's poll hands over.

CONSUMER_FIELDS = ConsumerRecord._fields
LIBRARY_UNPACK = kafka_records.unpack_records.library_unpack  # type: ignore[attr-defined]
TP = TopicPartition("gateway", 3)


@contextmanager
def library_loop() -> Iterator[None]:
    """kafka-python's own fetcher loop and batch reading, for the time of the block."""
    ours = Fetcher.PartitionRecords._unpack_records, DefaultRecordBatch.__iter__
    Fetcher.PartitionRecords._unpack_records, DefaultRecordBatch.__iter__ = LIBRARY_UNPACK, LIBRARY_ITER
    try:
        yield
    finally:
        Fetcher.PartitionRecords._unpack_records, DefaultRecordBatch.__iter__ = ours


def control(batch: bytes) -> bytes:
    data = bytearray(batch)
    (attributes,) = struct.unpack_from(">h", data, DefaultRecordBatch.ATTRIBUTES_OFFSET)
    struct.pack_into(">h", data, DefaultRecordBatch.ATTRIBUTES_OFFSET, attributes | 0x20)
    return bytes(data)


def rebase(batch: bytes, base_offset: int) -> bytes:
    return struct.pack(">q", base_offset) + batch[8:]


def fetch(data: bytes, fetch_offset: int, takes: list[int | None], **settings: object) -> tuple[list[object], ...]:
    """What each ``take`` of a partition's fetched ``data`` gives (or raises), with the position after it."""
    drained: list[object] = []
    part = Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(data), on_drain=drained.append, **settings)
    steps: list[object] = []
    for n in takes:
        try:
            records = part.take(n)
        except Exception as raised:  # noqa: BLE001 - which error is the point
            steps.append(type(raised))
            break
        steps.append([tuple(getattr(r, name) for name in CONSUMER_FIELDS) for r in records])
        steps.append((part.next_fetch_offset, part.leader_epoch, bool(part)))
    return steps, [part.records_read, part.bytes_read, len(drained)]


BATCHES = st.lists(st.tuples(RECORDS, st.booleans(), st.sampled_from(sorted(CODECS.values()))), min_size=1, max_size=4)


def partition_data(batches: list[tuple[list, bool, int]]) -> bytes:
    """Batches one after the other at rising offsets, as a fetch response holds them; some are control batches."""
    data, base = b"", 0
    for records, is_control, codec in batches:
        batch = rebase(build(records, codec), base)
        data += control(batch) if is_control else batch
        base += sum(gap for gap, *_ in records) + 1
    return data


@settings(max_examples=300, deadline=None)
@given(batches=BATCHES, skip=st.integers(0, 30), takes=st.lists(st.one_of(st.none(), st.integers(1, 40)), max_size=8))
def test_a_poll_hands_over_what_the_library_s_loop_does(batches: list, skip: int, takes: list[int | None]) -> None:
    data = partition_data(batches)
    takes = [*takes, None, None]  # and the rest, then past the end
    ours = fetch(data, skip, takes, check_crcs=False)
    with library_loop():
        library = fetch(data, skip, takes, check_crcs=False)
    assert ours == library


@settings(max_examples=300, deadline=None)
@given(batches=BATCHES, data=st.data())
def test_damaged_data_hands_over_the_same_records_then_the_same_refusal(batches: list, data: st.DataObject) -> None:
    fetched = bytearray(partition_data(batches))
    if data.draw(st.booleans(), label="truncate"):
        fetched = fetched[: data.draw(st.integers(1, len(fetched) - 1), label="cut at")]
    else:
        for _ in range(data.draw(st.integers(1, 3), label="bytes changed")):
            fetched[data.draw(st.integers(0, len(fetched) - 1), label="at")] = data.draw(st.integers(0, 255))
    takes = data.draw(st.lists(st.one_of(st.none(), st.integers(1, 40)), max_size=4), label="takes") + [None, None]
    ours = fetch(bytes(fetched), 0, takes, check_crcs=False)
    with library_loop():
        library = fetch(bytes(fetched), 0, takes, check_crcs=False)
    assert ours == library


@pytest.mark.parametrize("is_control", [False, True])
def test_a_damaged_magic_byte_is_read_as_the_library_reads_it(is_control: bool) -> None:
    # Found by the property test above: with a magic byte past 2 the library neither takes the batch's
    # leader epoch nor skips it as a control batch; our loop did both.
    batch = bytearray(rebase(build([(0, 0, None, b"v", []), (1, 5, b"k", None, [])]), 7))
    batch[16] = 3  # the magic byte: after the base offset (8 bytes), the length (4) and the leader epoch (4)
    after = partition_data([([(0, 0, None, b"w", [])], False, 0)])
    data = bytes(control(bytes(batch)) if is_control else batch) + after
    ours = fetch(data, 0, [None, None], check_crcs=False)
    with library_loop():
        library = fetch(data, 0, [None, None], check_crcs=False)
    assert ours == library


def test_a_format_before_v2_is_read_by_the_library_s_loop_from_that_batch_on() -> None:
    legacy = LegacyRecordBatchBuilder(1, 0, 10**6)
    for offset in range(3, 6):
        legacy.append(offset, 1_772_442_698_000 + offset, b"k", b"old %d" % offset)
    data = build([(0, 0, None, b"new 0", []), (1, 5, None, b"new 1", [])]) + bytes(legacy.build())
    ours = fetch(data, 0, [None, None], check_crcs=False)
    with library_loop():
        assert ours == fetch(data, 0, [None, None], check_crcs=False)
    assert [row[7] for row in ours[0][0]] == [b"new 0", b"new 1", b"old 3", b"old 4", b"old 5"]  # type: ignore[index]


class _Text:
    def deserialize(self, topic: str, headers: object, data: bytes) -> str:
        return data.decode()


@pytest.mark.parametrize("settings_", [{"check_crcs": True}, {"isolation_level": IsolationLevel.READ_COMMITTED},
                                       {"key_deserializer": _Text()}])  # fmt: skip
def test_any_other_consumer_takes_the_library_s_loop(settings_: dict) -> None:
    data = build([(0, 0, b"key", b"value", [("h", b"v")])])
    part = Fetcher.PartitionRecords(0, TP, MemoryRecords(data), **settings_)
    assert part.record_iterator is not None
    (record,) = part.take()
    assert type(record) is ConsumerRecord
    assert record.key == ("key" if "key_deserializer" in settings_ else b"key")


def test_serve_s_consumer_gets_gatewatch_s_records() -> None:
    part = Fetcher.PartitionRecords(0, TP, MemoryRecords(build([(0, 0, None, b"{}", [])])), check_crcs=False)
    (record,) = part.take()
    assert type(record) is Record and (record.topic, record.partition) == ("gateway", 3)
