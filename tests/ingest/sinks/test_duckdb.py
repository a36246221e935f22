"""The embedded store: idempotent writes, lists that survive DuckDB's type sampling."""

from __future__ import annotations

import gc
from pathlib import Path

import duckdb
import pytest

from detectors.alerts import AlertBook
from detectors.base import Finding, Severity
from detectors.sample import app_event, gateway_event, transaction
from ingest.errors import StoreError
from ingest.records import Dataset, DeadLetter, Origin, Transaction
from ingest.sinks.base import Batch
from ingest.sinks.duckdb import ROW_GROUP_ROWS, DuckDBSink


def test_a_rare_non_empty_list_among_thousands_of_empty_ones(tmp_path: Path) -> None:
    # DuckDB types a frame's list column from a sample of rows; all-empty samples used to fail the batch.
    events = [gateway_event(float(i), request_id=f"r{i}", status=200) for i in range(5000)]
    events[4321] = gateway_event(1.0, request_id="retried", status=503, response_flags=("UF", "URX"))
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=events))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    rows = con.execute("select response_flags, count(*) from events group by 1 order by 2").fetchall()
    assert rows == [(["UF", "URX"], 1), ([], 4999)]


def test_writes_are_idempotent_and_alerts_upsert(tmp_path: Path) -> None:
    gw = gateway_event(1.0, request_id="r1", status=200, source_ip="203.0.113.7")
    app = app_event(1.2, request_id="r1", status=200)
    book = AlertBook()
    finding = Finding("gateway_bypass", Severity.HIGH, "source.ip", "10.9.9.9", gw.ts, "s", ("r1",))
    first = book.add(finding)
    grown = book.add(finding)
    sink = DuckDBSink(tmp_path / "s.duckdb")
    batch = Batch(events=[gw, app], transactions=[transaction("r1", (gw,), (app,))], alerts={first.id: first})
    sink.write(batch)
    sink.write(batch)
    sink.write(Batch(alerts={grown.id: grown}))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("select count(*) from events").fetchone() == (2,)
    assert con.execute("select kind, event_ids from transactions").fetchall() == [("joined", [gw.id, app.id])]
    assert con.execute("select count, request_ids from alerts").fetchall() == [(2, ["r1"])]


def test_every_field_reads_back_as_written_whatever_the_batch_holds(tmp_path: Path) -> None:
    # Columns are typed from their values: a batch where a number column is all NULL, one where
    # it mixes NULL and values past int32, and one row of every kind of value must all read back.
    full = gateway_event(
        0.25, request_id="r1", status=503, bytes_received=2**40, bytes_sent=0, duration_ms=12.5,
        token_exp=1_772_445_600.5, response_flags=("UF",), labels=(("req.x-tenant", "t1"),), user_id="u-1",
    )  # fmt: skip
    bare = app_event(1.0, request_id="r2")
    other = app_event(2.0, request_id="r3", status=200)
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=[bare]))
    sink.write(Batch(events=[full, other]))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    rows = con.execute(
        "select request_id, status, bytes_received, bytes_sent, duration_ms, epoch(ts), epoch(token_exp),"
        " response_flags, labels, user_id, dataset, stream_offset from events order by ts"
    ).fetchall()
    assert rows == [
        ("r1", 503, 2**40, 0, 12.5, full.ts, 1_772_445_600.5, ["UF"], '{"req.x-tenant":"t1"}', "u-1",
         "envoy.access", full.origin.offset),
        ("r2", None, None, None, None, bare.ts, None, [], None, None, "billing.app", bare.origin.offset),
        ("r3", 200, None, None, None, other.ts, None, [], None, None, "billing.app", other.origin.offset),
    ]  # fmt: skip


def test_one_count_past_int32_among_thousands_of_small_ones(tmp_path: Path) -> None:
    # DuckDB types an object column from a sample of its rows: a sample of small counts made it INTEGER.
    events = [gateway_event(float(i), request_id=f"r{i}", bytes_sent=i, status=200) for i in range(5000)]
    events[4321] = gateway_event(1.0, request_id="big", bytes_sent=2**31, status=None, bytes_received=2**62)
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=events))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("select bytes_sent, bytes_received, status from events where request_id = 'big'").fetchall() == [
        (2**31, 2**62, None)
    ]
    assert con.execute("select sum(bytes_sent), count(status) from events").fetchone() == (
        sum(range(5000)) - 4321 + 2**31, 4999
    )


def test_a_batch_with_some_rows_already_stored_adds_only_the_new_ones(tmp_path: Path) -> None:
    # A batch is inserted plainly first; a key already stored sends the whole batch down the
    # conflict-aware path. Neither a stored row nor a new one may be lost or written twice.
    old = [gateway_event(float(i), request_id=f"r{i}", status=200) for i in range(3)]
    new = [gateway_event(float(i), request_id=f"r{i}", status=200) for i in range(3, 6)]
    letter = DeadLetter(Origin(Dataset.GATEWAY, "gw.log", 99), "truncated", "no newline", b"GET /")
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=old, transactions=[transaction("r0", (old[0],))], dead_letters=[letter]))
    sink.write(Batch(
        events=[*new, *old], transactions=[transaction("r0", (old[0],)), transaction("r3", (new[0],))],
        dead_letters=[letter],
    ))  # fmt: skip
    sink.write(Batch(events=[new[0], new[0]]))  # the same record twice in one batch
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("select request_id, count(*) from events group by 1 order by 1").fetchall() == [
        (f"r{i}", 1) for i in range(6)
    ]
    assert con.execute("select request_id from transactions order by 1").fetchall() == [("r0",), ("r3",)]
    assert con.execute("select count(*) from dead_letters").fetchone() == (1,)


def test_a_record_that_finds_its_id_taken_by_another_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store keeps one record an id. A record read again matches it; one with another content under that
    id (two files of a log that begin with the same fixed line) is not stored, and that must be seen."""
    import msgspec

    stored = [gateway_event(float(i), request_id=f"r{i}", status=200) for i in range(3)]
    letter = DeadLetter(Origin(Dataset.GATEWAY, "gw.log", 99), "truncated", "no newline", b"GET /")
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=stored, dead_letters=[letter]))
    with caplog.at_level("WARNING", logger="ingest.sinks.duckdb"):
        sink.write(Batch(events=stored, dead_letters=[letter]))  # read again: nothing to say
        assert caplog.messages == []
        other = msgspec.structs.replace(stored[1], request_id="another", ts=stored[1].ts + 7)
        other_letter = DeadLetter(letter.origin, "truncated", "no newline", b"POST /")
        sink.write(Batch(events=[other, gateway_event(9.0, request_id="r9")], dead_letters=[other_letter]))
    sink.close()
    assert [m.split(" store=")[0] for m in caplog.messages] == ["ids_taken table=events records=1",
                                                                "ids_taken table=dead_letters records=1"]  # fmt: skip
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("select count(*) from events").fetchone() == (4,)  # r9 stored, "another" not


def test_a_failed_write_leaves_nothing_of_its_batch(tmp_path: Path) -> None:
    stored = gateway_event(1.0, request_id="r1", status=200)
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=[stored]))
    # A constraint the dead letter breaks: the statement after the events insert fails.
    sink.connection.execute(
        "DROP TABLE dead_letters; CREATE TABLE dead_letters (id VARCHAR PRIMARY KEY, reason VARCHAR,"
        " detail VARCHAR, dataset VARCHAR, stream VARCHAR, stream_offset BIGINT, line VARCHAR CHECK (line IS NULL))"
    )
    letter = DeadLetter(Origin(Dataset.GATEWAY, "gw.log", 7), "truncated", "no newline", b"GET /")
    with pytest.raises(StoreError):
        sink.write(Batch(events=[stored, gateway_event(2.0, request_id="r2")], dead_letters=[letter]))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("select request_id from events").fetchall() == [("r1",)]


def test_batches_of_whole_row_groups_are_stored_once_however_often_they_come(tmp_path: Path) -> None:
    # A batch of at least one row group goes straight into the file instead of the write-ahead
    # log; a re-read (the same batch again, an overlapping one, a second process) adds nothing twice.
    count = 2 * ROW_GROUP_ROWS + 100
    events = [gateway_event(float(i), request_id=f"r{i}", status=200) for i in range(2 * count)]
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=events[:count]))
    sink.write(Batch(events=events[:count]))
    sink.write(Batch(events=events[count // 2 :]))
    sink.close()
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=events))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("select count(*) from events").fetchone() == (len(events),)
    assert {id for (id,) in con.execute("select id from events").fetchall()} == {e.id for e in events}


def test_a_failed_write_of_whole_row_groups_leaves_nothing_of_its_batch(tmp_path: Path) -> None:
    # The rows DuckDB already wrote to the file for a large batch are dropped with its transaction.
    events = [gateway_event(float(i), request_id=f"r{i}", status=200) for i in range(2 * ROW_GROUP_ROWS)]
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(events=events[:10]))
    sink.connection.execute(
        "DROP TABLE dead_letters; CREATE TABLE dead_letters (id VARCHAR PRIMARY KEY, reason VARCHAR,"
        " detail VARCHAR, dataset VARCHAR, stream VARCHAR, stream_offset BIGINT, line VARCHAR CHECK (line IS NULL))"
    )
    letter = DeadLetter(Origin(Dataset.GATEWAY, "gw.log", 7), "truncated", "no newline", b"GET /")
    with pytest.raises(StoreError):
        sink.write(Batch(events=events[10:], dead_letters=[letter]))
    sink.write(Batch(events=events[10:20]))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("select count(*) from events").fetchone() == (20,)


def test_a_transaction_row_says_what_the_transaction_properties_say(tmp_path: Path) -> None:
    # The sink writes Transaction's properties out over one walk of its events: every shape must
    # store what the properties (the analyst's definition) return.
    gw = gateway_event(5.0, request_id="r", status=503, source_ip="", method="GET", path="/a")
    retry = gateway_event(4.0, request_id="r", status=None, source_ip="203.0.113.9", route_name="api")
    app = app_event(6.0, request_id="r", status=201, source_ip="10.0.0.2", user_id="u-1", org_id="o-1")
    later = app_event(3.0, request_id="r", status=None, token_jti="j", token_sub="s", path="/b")
    again = app_event(7.0, request_id="r", status=500)
    shapes = [
        transaction("r", (gw,), ()), transaction("r", (), (app,)), transaction("r", (gw, retry), (app, later)),
        transaction("r", (retry, gw), (later,)), transaction("r", (gw,), (later, app)), transaction("r", (), (later,)),
        transaction("r", (retry,), (app, again, later)),
    ]  # fmt: skip
    _assert_rows_say_what_the_properties_say(tmp_path, shapes)


def test_a_one_attempt_one_app_line_transaction_row_says_what_the_properties_say(tmp_path: Path) -> None:
    # Most requests have one gateway attempt and one app line: the sink writes those without the
    # properties' loops, so every value a pair can hold (empty addresses, an app line logged first,
    # a None on either side) must still store what the properties return.
    pairs = [
        (gateway_event(5.0, request_id="a", status=200, source_ip="203.0.113.9", method="GET", path="/a"),
         app_event(6.0, request_id="a", status=200, source_ip="10.0.0.2", user_id="u-1", org_id="o-1")),
        (gateway_event(5.0, request_id="b", status=503, source_ip=""),
         app_event(4.0, request_id="b", status=None, source_ip="", token_jti="j", token_sub="s", path="/b")),
        (gateway_event(5.0, request_id="c", status=None, source_ip=None, route_name="api"),
         app_event(5.0, request_id="c", status=201, source_ip="10.0.0.3", method="POST")),
        (gateway_event(7.0, request_id="d", status=200, source_ip="", user_id="u-2", org_id="o-2", token_jti="k",
                       token_sub="t", method="PUT", path="/d", route_name="r"),
         app_event(2.0, request_id="d", status=500, source_ip=None, user_id="u-3")),
    ]  # fmt: skip
    shapes = [transaction(gw.request_id or "", (gw,), (app,)) for gw, app in pairs]
    _assert_rows_say_what_the_properties_say(tmp_path, shapes)


def _assert_rows_say_what_the_properties_say(tmp_path: Path, shapes: list[Transaction]) -> None:
    """Store ``shapes``; each stored row holds what its :class:`Transaction` properties return."""
    sink = DuckDBSink(tmp_path / "s.duckdb")
    sink.write(Batch(transactions=shapes))
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    stored = {row[0]: row[1:] for row in con.execute(
        "select id, kind, epoch(first_ts), epoch(last_ts), gateway_attempts, app_records, client_ip, method, path,"
        " route_name, user_id, org_id, token_jti, token_sub, gateway_status, app_status, event_ids from transactions"
    ).fetchall()}  # fmt: skip
    assert len(stored) == len(shapes)
    for txn in shapes:
        events = txn.gateway + txn.app
        assert stored[txn.id] == (
            txn.kind, txn.first_ts, txn.last_ts, len(txn.gateway), len(txn.app), txn.client_ip,
            *(txn.first(name) for name in ("method", "path", "route_name", "user_id", "org_id", "token_jti",
                                           "token_sub")),
            txn.gateway_status, txn.app_status, [e.id for e in events],
        )  # fmt: skip


def test_a_write_leaves_garbage_collection_as_it_found_it(tmp_path: Path) -> None:
    # A write must not change the caller's choice: collection on stays on (even when framing
    # fails), off stays off. (The sink once paused collection while framing a batch.)
    sink = DuckDBSink(tmp_path / "s.duckdb")
    gw = gateway_event(1.0, request_id="r1", status=200)
    app = app_event(1.2, request_id="r1", status=200)
    was = gc.isenabled()
    try:
        gc.enable()
        sink.write(Batch(events=[gw], transactions=[transaction("r1", (gw,), (app,))]))
        assert gc.isenabled()
        with pytest.raises(AttributeError):
            sink.write(Batch(events=[object()]))  # type: ignore[list-item]
        assert gc.isenabled()
        gc.disable()
        sink.write(Batch(events=[app]))
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
        sink.close()


def test_the_store_caps_duckdbs_memory_as_the_config_says(tmp_path: Path) -> None:
    # A soak: DuckDB's default limit is 80% of RAM, and it keeps written blocks cached up to it: serve's RSS
    # grew ~420 MB an hour at 375 records/s.
    from gatewatch.config import parse_config
    from gatewatch.stores import open_store

    def limit(sink: object) -> str:
        return sink.connection.execute("SELECT current_setting('memory_limit')").fetchone()[0]  # type: ignore[attr-defined]

    default = DuckDBSink(tmp_path / "a.duckdb")
    configured = open_store(f"duckdb:{tmp_path / 'b.duckdb'}", parse_config({"store": {"duckdb_memory_limit": "300MB"}}))
    try:
        assert limit(default) == "488.2 MiB" and limit(configured) == "286.1 MiB"
    finally:
        default.close()
        configured.close()  # type: ignore[union-attr]


def test_a_store_an_earlier_release_wrote_is_named_when_a_replay_opens_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An upgrade trial: replaying files into a store an earlier release wrote (records named by their path) stored
    # every event and transaction again under new ids, and said nothing.
    import msgspec

    from ingest.records import Event, record_id

    def read_from(stream: str, ts: float) -> Event:
        origin = Origin(Dataset.GATEWAY, stream, 7)
        return msgspec.structs.replace(gateway_event(ts), origin=origin, id=record_id(origin))

    path = tmp_path / "store.duckdb"
    sink = DuckDBSink(path)
    sink.write(Batch(events=[read_from(s, n) for n, s in enumerate(("gw-gateway/3", "file:0123456789abcdef",
                                                                      "http:batch-1", "follow:gateway"))]))  # fmt: skip
    sink.name_files({"file:0123456789abcdef": "/var/log/envoy/access.log"})
    sink.write(Batch(events=[read_from("envoy/access.log", 4)]))  # as an earlier release named a file's records
    sink.close()
    assert not [r for r in caplog.records if r.name.startswith("ingest")]  # serve does not look: no scan at its start
    sink = DuckDBSink(path)
    sink.name_files({"file:0123456789abcdef": "/var/log/envoy/access.log"})
    sink.close()
    (message,) = [r.getMessage() for r in caplog.records if r.name.startswith("ingest")]
    assert message.startswith("store_written_by_older_release") and "stream=envoy/access.log" in message
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("select * from files").fetchall() == [("file:0123456789abcdef", "/var/log/envoy/access.log")]
    con.close()


def test_dead_letters_are_written_by_name_into_a_table_with_a_column_more(tmp_path: Path) -> None:
    # A second review: builds of this round added dead_letters.file at each open; by position, 7 values met 8
    # columns and every dead letter (replay or serve) failed the batch.
    path = tmp_path / "store.duckdb"
    DuckDBSink(path).close()
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE dead_letters ADD COLUMN file VARCHAR")
    con.close()
    sink = DuckDBSink(path)
    sink.write(Batch(dead_letters=[DeadLetter(Origin(Dataset.GATEWAY, "file:00", 0), "truncated", "cut", b"GET /")]))
    sink.close()
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("select reason, file from dead_letters").fetchall() == [("truncated", None)]
    con.close()
