"""Kafka's record batches (format v2) read in one loop: kafka-python's consumer, ~3 us a record cheaper.

serve reads one Kafka record per log line (Fluent Bit writes a line a
record), and kafka-python reads each one in Python: ``DefaultRecordBatch``'s
``__next__`` calls ``decode_varint`` six or more times, reads the batch's
header fields through properties, and builds a ``DefaultRecord`` whose every
field is a property again, read a dozen times by the fetcher. serve's ingest
poll took 9-10 us of its ~64 a record (bench/README, session 13).
:func:`read_batch` reads the same records with the one- and two-byte varints
(a log line's length, attributes, deltas up to 8,191, key and value sizes,
header count) decoded in line, the header
fields read once a batch, and each record built as a :class:`Record` of plain
slots.

It follows the format (Kafka's ``DefaultRecord``): a record is its length
(varint), attributes (int8), timestamp delta (varlong), offset delta (varint),
key and value (varint length, -1 for null), and headers (a varint count, then
each key as a varint-length string and value as varint-length bytes). A record
that does not fit raises ``CorruptRecordError`` as kafka-python does, with the
records before it handed over first.

:func:`install` (from :mod:`ingest.sources.kafka_client`, on import) makes
``DefaultRecordBatch.__iter__`` return :func:`read_batch`; a control batch
(transaction markers, which the fetcher reads with ``next()``) keeps the
library's own reading. ``tests/ingest/sources/test_kafka_records.py`` reads
batches built by kafka-python's own builder both ways and compares every field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import msgspec
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

_LOG_APPEND_TIME = DefaultRecordBatch.LOG_APPEND_TIME


class Record(msgspec.Struct, gc=False):
    """One record of a batch: what kafka-python's ``DefaultRecord`` offers, as plain attributes.

    A Struct: built in C, one a record (a slots class's Python ``__init__`` cost 230 ns, this 70).
    """

    size_in_bytes: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: ClassVar[None] = None  # format v2 checks the batch, not the record

    def validate_crc(self) -> bool:
        return True


def read_batch(batch: Any) -> Iterator[Record]:
    """The records of a ``DefaultRecordBatch`` (not a control batch), decompressed first if need be."""
    batch._maybe_uncompress()
    buffer, pos = batch._buffer, batch._pos
    base_offset = batch.base_offset
    timestamp_type = batch.timestamp_type
    first_timestamp = batch.first_timestamp
    fixed_timestamp = batch.max_timestamp if timestamp_type == _LOG_APPEND_TIME else None
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
                key = bytes(buffer[pos : pos + size])
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
                value = bytes(buffer[pos : pos + size])
                pos += size
            headers: list[tuple[str, bytes | None]] = []
            if buffer[pos] == 0:  # no headers: most records
                pos += 1
            else:
                pos = _read_headers(buffer, pos, headers)
            if pos - start != length:
                raise CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record payload, "
                    f"but instead read {pos - start}"
                )
            batch._pos = pos
            batch._next_record_index += 1
            timestamp = first_timestamp + timestamp_delta if fixed_timestamp is None else fixed_timestamp
            yield Record(length, base_offset + offset_delta, timestamp, timestamp_type, key, value, headers)
    except (ValueError, IndexError) as error:
        raise CorruptRecordError(f"Found invalid record structure: {error!r}") from None
    if pos != len(buffer):
        raise CorruptRecordError(f"{len(buffer) - pos} unconsumed bytes after all records consumed")


def _read_headers(buffer: bytearray, pos: int, headers: list[tuple[str, bytes | None]]) -> int:
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
            value = bytes(buffer[pos : pos + size])
            pos += size
        headers.append((name, value))
    return pos


def install() -> None:
    """Make kafka-python read every batch but a control one with :func:`read_batch`; once is enough."""
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
