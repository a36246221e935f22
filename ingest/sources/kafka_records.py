"""Kafka's record batches (format v2) read in one loop, straight into the records a consumer hands over.

serve reads one Kafka record per log line (Fluent Bit writes a line a
record), and kafka-python reads each one in Python: ``DefaultRecordBatch``'s
``__next__`` calls ``decode_varint`` six or more times, reads the batch's
header fields through properties, and builds a ``DefaultRecord`` whose every
field is a property again, read a dozen times by the fetcher, whose loop
(``PartitionRecords._unpack_records``) then builds a ``ConsumerRecord`` of it
(a named tuple of 13 fields, a Python ``__new__``) after two calls to
deserializers that are not there. serve's ingest poll took 9-10 us of its
~64 a record (bench/README, session 13), the fetcher's loop ~1.3 us of the
~2.7 left in session 17.

:func:`read_batch` reads the same records with the one- and two-byte varints
(a log line's length, attributes, deltas up to 8,191, key and value sizes,
header count) decoded in line, the header fields read once a batch, and
each record built as a :class:`Record`, a Struct with the fields of both.
:func:`unpack_records` is the fetcher's loop for what serve reads (no
deserializers, no CRC check, uncommitted reads): it hands the records of
:func:`read_batch` over as they are, keeping the fetcher's position,
counts and end of partition data as the library's loop keeps them; any
other consumer, and a batch in the formats before v2, take the library's
own loop.

It follows the format (Kafka's ``DefaultRecord``): a record is its length
(varint), attributes (int8), timestamp delta (varlong), offset delta (varint),
key and value (varint length, -1 for null), and headers (a varint count, then
each key as a varint-length string and value as varint-length bytes). A record
that does not fit raises ``CorruptRecordError`` as kafka-python does, with the
records before it handed over first.

:func:`install` (from :mod:`ingest.sources.kafka_client`, on import) makes
``DefaultRecordBatch.__iter__`` return :func:`read_batch` and
``PartitionRecords._unpack_records`` :func:`unpack_records`; a control batch
(transaction markers, which the fetcher reads with ``next()``) keeps the
library's own reading. ``tests/ingest/sources/test_kafka_records.py`` reads
batches built by kafka-python's own builder both ways and compares every field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import msgspec
from kafka.consumer.fetcher import Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

_LOG_APPEND_TIME = DefaultRecordBatch.LOG_APPEND_TIME


class Record(msgspec.Struct, gc=False):
    """One record of a batch: the fields of kafka-python's ``ConsumerRecord``, and the ``DefaultRecord``'s its
    fetcher reads (``size_in_bytes``, ``checksum``, ``validate_crc``), as plain attributes.

    A Struct: built in C, one a record (a slots class's Python ``__init__`` cost 230 ns, this 70; the
    ``ConsumerRecord`` named tuple, through a Python ``__new__``, ~5x as much). Read from a batch
    outside :func:`unpack_records` (the library's loop builds its own ``ConsumerRecord`` of it) it
    names no topic: ``""``, partition -1.
    """

    topic: str
    partition: int
    leader_epoch: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    serialized_key_size: int
    serialized_value_size: int
    serialized_header_size: int
    size_in_bytes: int
    checksum: ClassVar[None] = None  # format v2 checks the batch, not the record

    def validate_crc(self) -> bool:
        return True


class _Position:
    """Where :func:`read_batch` keeps the fetcher's position and counts when no fetcher reads with it."""

    def __init__(self) -> None:
        self.next_fetch_offset = self.records_read = self.bytes_read = 0


def read_batch(batch: Any, fetched: Any = None, topic: str = "", partition: int = -1) -> Iterator[Record]:
    """The records of a ``DefaultRecordBatch`` (not a control batch), decompressed first if need be.

    ``fetched``: the fetcher's ``PartitionRecords`` reading them, whose ``next_fetch_offset``
    is the offset after each record before it is handed over, and whose ``records_read``
    and ``bytes_read`` count them (once the batch is read, or left).
    """
    batch._maybe_uncompress()
    # As bytes, a key or value is one copy (a slice), not two (a bytearray slice, then bytes of it).
    buffer, pos = bytes(batch._buffer), batch._pos
    base_offset = batch.base_offset
    timestamp_type = batch.timestamp_type
    first_timestamp = batch.first_timestamp
    fixed_timestamp = batch.max_timestamp if timestamp_type == _LOG_APPEND_TIME else None
    leader_epoch = batch.leader_epoch
    if fetched is None:
        fetched = _Position()
    records = size_read = 0
    try:
        for _ in range(batch._num_records - batch._next_record_index):
            # A varint below 0x80 is one byte, zigzag-encoded: (b >> 1) ^ -(b & 1); two bytes are the low
            # seven bits, then the next byte's seven above them. A log line's length and its value's size
            # (64 to 8,191 bytes) take two, and so do time and offset deltas past 63 within a batch.
            # Written out for each field, not a helper (a call per varint is what this module saves) nor a
            # loop (measured slower); longer varints take kafka-python's decode_varint.
            b = buffer[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:
                b = (b & 0x7F) | buffer[pos + 1] << 7
                length, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                length, pos = decode_varint(buffer, pos)
            start = pos
            if buffer[pos] < 0x80:  # attributes: unused by the format so far
                pos += 1
            else:
                _, pos = decode_varint(buffer, pos)
            b = buffer[pos]
            if b < 0x80:
                timestamp_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:
                b = (b & 0x7F) | buffer[pos + 1] << 7
                timestamp_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                timestamp_delta, pos = decode_varint(buffer, pos)
            b = buffer[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:
                b = (b & 0x7F) | buffer[pos + 1] << 7
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                offset_delta, pos = decode_varint(buffer, pos)
            b = buffer[pos]
            if b < 0x80:
                size, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:
                b = (b & 0x7F) | buffer[pos + 1] << 7
                size, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                size, pos = decode_varint(buffer, pos)
            key = None
            if size >= 0:
                key = buffer[pos : pos + size]
                pos += size
            b = buffer[pos]
            if b < 0x80:
                size, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:
                b = (b & 0x7F) | buffer[pos + 1] << 7
                size, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                size, pos = decode_varint(buffer, pos)
            value = None
            if size >= 0:
                value = buffer[pos : pos + size]
                pos += size
            headers: list[tuple[str, bytes | None]] = []
            header_size = -1
            if buffer[pos] == 0:  # no headers: most records
                pos += 1
            else:
                pos = _read_headers(buffer, pos, headers)
                header_size = _headers_size(headers)
            if pos - start != length:
                raise CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record payload, "
                    f"but instead read {pos - start}"
                )
            batch._pos = pos
            batch._next_record_index += 1
            timestamp = first_timestamp + timestamp_delta if fixed_timestamp is None else fixed_timestamp
            offset = base_offset + offset_delta
            records += 1
            size_read += length
            fetched.next_fetch_offset = offset + 1
            yield Record(
                topic, partition, leader_epoch, offset, timestamp, timestamp_type, key, value, headers,
                -1 if key is None else len(key), -1 if value is None else len(value), header_size, length,
            )  # fmt: skip
    except (ValueError, IndexError) as error:
        raise CorruptRecordError(f"Found invalid record structure: {error!r}") from None
    finally:  # also when the fetcher leaves the batch part read
        fetched.records_read += records
        fetched.bytes_read += size_read
    if pos != len(buffer):
        raise CorruptRecordError(f"{len(buffer) - pos} unconsumed bytes after all records consumed")


def _read_headers(buffer: bytes, pos: int, headers: list[tuple[str, bytes | None]]) -> int:
    count, pos = decode_varint(buffer, pos)
    if count < 0:
        raise CorruptRecordError(f"Found invalid number of record headers {count}")
    for _ in range(count):
        size, pos = decode_varint(buffer, pos)
        if size < 0:
            raise CorruptRecordError(f"Invalid negative header key size {size}")
        name = buffer[pos : pos + size].decode("utf-8")
        pos += size
        size, pos = decode_varint(buffer, pos)
        value = None
        if size >= 0:
            value = buffer[pos : pos + size]
            pos += size
        headers.append((name, value))
    return pos


def _headers_size(headers: list[tuple[str, bytes | None]]) -> int:
    """``ConsumerRecord.serialized_header_size``, as the library's fetcher counts it."""
    if not headers:
        return -1
    return sum(len(name.encode("utf-8")) + (0 if value is None else len(value)) for name, value in headers)


def unpack_records(
    fetched: Any, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
) -> Iterator[Any]:
    """Replaces ``PartitionRecords._unpack_records``: the consumer's records of one partition's fetched data.

    serve's consumers (no deserializers, no CRC check, uncommitted reads) take
    :func:`read_batch`'s records as they are; any other consumer the library's loop.
    """
    if (
        fetched.check_crcs
        or key_deserializer is not None
        or value_deserializer is not None
        or fetched.isolation_level != IsolationLevel.READ_UNCOMMITTED
    ):
        return unpack_records.library_unpack(fetched, tp, records, key_deserializer, value_deserializer)  # type: ignore[attr-defined,no-any-return]
    return _unpack(fetched, tp, records)


def _unpack(fetched: Any, tp: Any, records: Any) -> Iterator[Any]:
    # The library's loop for such a consumer, without its per-record work: a control batch is
    # skipped, the offset after the last batch is where the next fetch starts, then the data is drained.
    last_batch = None
    batch = records.next_batch()
    while batch is not None:
        if batch.magic != 2:  # before v2 (brokers before 0.11), or a damaged magic byte: the library's loop from here
            yield from unpack_records.library_unpack(fetched, tp, _Rest(batch, records), None, None)  # type: ignore[attr-defined]
            return
        last_batch = batch
        fetched.leader_epoch = batch.leader_epoch
        if batch.is_control_batch:
            fetched.next_fetch_offset = batch.next_offset
        else:
            yield from read_batch(batch, fetched, tp.topic, tp.partition)
        batch = records.next_batch()
    if last_batch is not None:
        fetched.next_fetch_offset = last_batch.next_offset
    fetched.drain()


class _Rest:
    """A partition's fetched data from ``batch`` on, for the library's loop (which only calls ``next_batch``)."""

    def __init__(self, batch: Any, records: Any) -> None:
        self._first, self._records = batch, records

    def next_batch(self) -> Any:
        if self._first is not None:
            batch, self._first = self._first, None
            return batch
        return self._records.next_batch()


def install() -> None:
    """Make kafka-python read batches with :func:`read_batch` and fetched data with :func:`unpack_records`.

    A control batch keeps the library's own reading. Once is enough.
    """
    partition_records = Fetcher.PartitionRecords
    library_unpack = partition_records.__dict__["_unpack_records"]
    if library_unpack is not unpack_records:
        unpack_records.library_unpack = library_unpack  # type: ignore[attr-defined]
        partition_records._unpack_records = unpack_records
    library_iter = DefaultRecordBatch.__iter__
    if getattr(library_iter, "reads_with", None) is read_batch:
        return

    def __iter__(batch: Any) -> Iterator[Any]:
        if batch.is_control_batch:
            return library_iter(batch)  # type: ignore[no-any-return]
        return read_batch(batch)

    __iter__.reads_with = read_batch  # type: ignore[attr-defined]
    __iter__.library_iter = library_iter  # type: ignore[attr-defined]
    DefaultRecordBatch.__iter__ = __iter__
