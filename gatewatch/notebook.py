"""For analysts: any gatewatch store as pandas DataFrames, from a notebook.

    from gatewatch.notebook import open_store
    store = open_store("duckdb:out/demo/gatewatch.duckdb")          # or elasticsearch:URL / opensearch:URL
    store.alerts()                                                   # every alert, oldest first
    store.transactions(where="kind = 'app_only'")                    # DuckDB: a SQL condition
    es = open_store("elasticsearch:http://127.0.0.1:9200")
    es.events(query={"term": {"source.ip": "10.9.9.9"}}, start="2026-03-02T09:00:00Z")

DuckDB columns are the snake_case event fields; search stores return the ECS
documents (dotted columns such as ``http.response.status_code``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from gatewatch.errors import ConfigError, StoreError
from ingest.escape import visible
from schemas import load_schema

KINDS = ("events", "transactions", "alerts", "dead_letters")
_DUCKDB_TIME = {"events": "ts", "transactions": "first_ts", "alerts": "first_seen", "dead_letters": None}
_INDEX = {"events": "events", "transactions": "transactions", "alerts": "alerts", "dead_letters": "deadletter"}
_PIT_KEEP_ALIVE = "2m"
_ID_FIELD = {"events": "event.id", "transactions": "event.id", "alerts": "id", "dead_letters": "id"}


def open_store(url: str, index_prefix: str = "gatewatch") -> DuckDBStore | SearchStore:
    """The store at ``url``: ``duckdb:PATH``, ``elasticsearch:URL`` or ``opensearch:URL``."""
    kind, _, target = url.partition(":")
    if kind == "duckdb" and target:
        return DuckDBStore(target)
    if kind in ("elasticsearch", "opensearch") and target:
        return SearchStore(kind, target, index_prefix)
    raise ConfigError(f"{url!r} is not duckdb:PATH, elasticsearch:URL or opensearch:URL")


class _Tables:
    """One accessor per kind of record; each store implements ``query``."""

    def query(self, kind: str, *args: Any, **kwargs: Any) -> pd.DataFrame:  # each store has its own filters
        raise NotImplementedError

    def events(self, **kwargs: Any) -> pd.DataFrame:
        return self.query("events", **kwargs)

    def transactions(self, **kwargs: Any) -> pd.DataFrame:
        return self.query("transactions", **kwargs)

    def alerts(self, **kwargs: Any) -> pd.DataFrame:
        return self.query("alerts", **kwargs)

    def dead_letters(self, **kwargs: Any) -> pd.DataFrame:
        return self.query("dead_letters", **kwargs)


@dataclass
class DuckDBStore(_Tables):
    """A gatewatch DuckDB file, opened read-only for each query.

    DuckDB lets no other process open a file that one is writing: while a replay or
    ``serve --store duckdb:`` runs, a query fails with a :class:`StoreError` that says so.
    Times are UTC: a ``start``/``end`` without an offset is read as UTC, and time columns
    come back in UTC, whatever the notebook's time zone.
    """

    path: str

    def query(self, kind: str, where: str | None = None, start: str | None = None, end: str | None = None,
              limit: int | None = 100_000, columns: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
        """Rows of ``kind`` matching a SQL condition and a time range, oldest first (``limit=None``: all)."""
        import duckdb

        _check(kind)
        conditions, parameters = [], []
        if where:
            conditions.append(f"({where})")
        time_column = _DUCKDB_TIME[kind]
        if time_column is None and (start is not None or end is not None):
            raise ConfigError(f"{kind} in a DuckDB store carry no time (a line that did not parse has none to "
                              f"trust): select them with where=, e.g. where=\"reason = 'format_mismatch'\"")  # fmt: skip
        if time_column is not None:
            # On the time rounded to the millisecond as the search documents carry it, so both kinds of store
            # cut a range at the same record; the plain comparison beside it lets DuckDB skip row groups.
            rounded = f"round_even(epoch_us({time_column}) / 1e6 * 1000, 0)"
            for bound, operator, slack in ((start, ">=", "-"), (end, "<", "+")):
                if bound is not None:
                    conditions.append(f"{time_column} {operator} ?::TIMESTAMPTZ {slack} INTERVAL 1 millisecond")
                    conditions.append(f"{rounded} {operator} epoch_ms(?::TIMESTAMPTZ)")
                    parameters += [time_bound(bound)] * 2
        selected = ", ".join(f'"{column}"' for column in columns) if columns else "*"
        sql = f"SELECT {selected} FROM {kind}"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        # The id breaks ties between equal times, so a limit always cuts at the same row.
        sql += f" ORDER BY {time_column + ', ' if time_column else ''}id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            with duckdb.connect(self.path, read_only=True) as connection:
                connection.execute("SET TimeZone = 'UTC'")  # else DuckDB reads and shows times in the local zone
                return connection.execute(sql, parameters).df()
        except duckdb.Error as error:
            if "Could not set lock on file" in str(error):
                raise StoreError(
                    f"DuckDB store {self.path} is open for writing in another process (a replay or serve): DuckDB "
                    "lets no other process read it meanwhile. Query it once that process ends, or store to "
                    "Elasticsearch / OpenSearch to hunt while it runs"
                ) from None
            raise StoreError(f"cannot read {kind} from DuckDB store {self.path}: {_one_line(error)}") from None


@dataclass
class SearchStore(_Tables):
    """gatewatch's daily indices on Elasticsearch or OpenSearch."""

    flavor: str
    url: str
    index_prefix: str = "gatewatch"

    def __post_init__(self) -> None:
        if self.flavor == "elasticsearch":
            from elasticsearch import Elasticsearch

            self._client: Any = Elasticsearch(self.url)
        else:
            from opensearchpy import OpenSearch

            self._client = OpenSearch(self.url)

    def query(self, kind: str, query: dict[str, Any] | None = None, start: str | None = None,
              end: str | None = None, limit: int | None = 100_000, page_size: int = 5_000,
              columns: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
        """Documents of ``kind`` matching a query DSL clause and an @timestamp range, oldest first.

        Pages with ``search_after`` inside a point in time, sorted by time and then
        the document's unique id: every page sees the same snapshot, and documents
        sharing a timestamp are neither skipped nor repeated at a page boundary.
        ``columns`` limits the fields returned; ``limit=None`` reads every match.
        """
        _check(kind)
        filters: list[dict[str, Any]] = [query] if query else []
        if start is not None or end is not None:
            bounds = {key: time_bound(value) for key, value in (("gte", start), ("lt", end)) if value is not None}
            filters.append({"range": {"@timestamp": bounds}})
        body: dict[str, Any] = {
            "query": {"bool": {"filter": filters}} if filters else {"match_all": {}},
            "sort": [{"@timestamp": "asc"}, {_ID_FIELD[kind]: "asc"}],
            "track_total_hits": False,
        }
        if columns is not None:
            body["_source"] = columns
        documents: list[dict[str, Any]] = []
        pit_id = self._open_pit(f"{self.index_prefix}-{_INDEX[kind]}-*")
        if pit_id is None:
            return pd.DataFrame()
        try:
            while limit is None or len(documents) < limit:
                body["size"] = page_size if limit is None else min(page_size, limit - len(documents))
                body["pit"] = {"id": pit_id, "keep_alive": _PIT_KEEP_ALIVE}
                response = self._call(lambda: self._client.search(body=body))
                pit_id = response.get("pit_id", pit_id)  # a node may hand back a new id
                hits = response["hits"]["hits"]
                documents.extend(hit["_source"] for hit in hits)
                if len(hits) < body["size"]:
                    break
                body["search_after"] = hits[-1]["sort"]
        finally:
            self._close_pit(pit_id)
        if not documents:
            return pd.DataFrame()
        frame = pd.json_normalize(documents)
        for column in _DATE_FIELDS[kind] & set(frame.columns):  # ISO text in the documents: times, as DuckDB's are
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601").astype("datetime64[ms, UTC]")
        return frame

    def _open_pit(self, index: str) -> str | None:
        """A point in time over ``index``, or None when no index matches it."""
        if self.flavor == "elasticsearch":
            opened = self._call(lambda: self._client.open_point_in_time(
                index=index, keep_alive=_PIT_KEEP_ALIVE, ignore_unavailable=True))  # fmt: skip
            return str(opened["id"]) if opened.get("id") else None
        if not self._call(lambda: self._client.indices.get(index=index, allow_no_indices=True)):
            return None
        opened = self._call(lambda: self._client.create_pit(index=index, params={"keep_alive": _PIT_KEEP_ALIVE}))
        return str(opened["pit_id"])

    def _close_pit(self, pit_id: str) -> None:
        try:
            if self.flavor == "elasticsearch":
                self._client.close_point_in_time(id=pit_id)
            else:
                self._client.delete_pit(body={"pit_id": [pit_id]})
        except Exception:  # noqa: BLE001 - an unclosed point in time expires by itself after its keep-alive
            pass

    def _call(self, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except Exception as error:  # noqa: BLE001 - either client's transport or API error, reported in one line
            raise StoreError(f"{self.flavor} at {self.url}: {type(error).__name__}: {_one_line(error)}"[:500]) from None


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` to display, its log text drawn as the report and the terminal draw it: control and
    bidi characters as escapes (``\\x1b``, ``\\u202e``: a client's U+202E would reverse the text after it
    on screen). Query ``frame`` itself: the copy's text is no longer the stored text."""
    shown = frame.copy()
    for column, dtype in frame.dtypes.items():
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            shown[column] = frame[column].map(_shown, na_action="ignore").astype(dtype)
    return shown.rename(index=_shown, columns=_shown)


def _shown(value: Any) -> Any:
    return visible(value) if isinstance(value, str) else value


_NOW = re.compile(r"now(?:([+-])([0-9]{1,9})([smhdw]))?")  # Elasticsearch's date math, its common part
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def time_bound(value: Any) -> str:
    """A ``start`` / ``end`` as ISO 8601 UTC text at whole milliseconds (a finer one rounded up: stored times
    are milliseconds), for either store: text (``now``, ``now-1h``, ``today`` too), a date, a datetime, a
    ``pd.Timestamp`` or a ``numpy.datetime64``; without an offset, UTC."""
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if not isinstance(value, (str, date)):  # a number would be epoch milliseconds to one store, refused by another
        raise ConfigError(f"start/end {value!r}: give a time as ISO 8601 text, a datetime or a pd.Timestamp")
    text = value.strip() if isinstance(value, str) else ""
    if text.startswith("now") and not _NOW.fullmatch(text):  # "now-1M" is a month to a search store, not a minute
        raise ConfigError(f"start/end {value!r}: date math here is now, now-N or now+N with s, m, h, d or w (a month: "
                          "pd.Timestamp.now(tz='UTC') - pd.DateOffset(months=1))")  # fmt: skip
    try:
        if (now := _NOW.fullmatch(text)) is not None:
            sign, count, unit = now.groups()
            shift = pd.Timedelta(**{_UNITS[unit]: int(count) * (-1 if sign == "-" else 1)}) if unit else pd.Timedelta(0)
            moment = pd.Timestamp.now(tz="UTC") + shift
        elif text.lower() == "today":
            moment = pd.Timestamp.now(tz="UTC").normalize()
        else:
            moment = pd.Timestamp(value)
    except (ValueError, OverflowError) as error:
        raise ConfigError(f"start/end {value!r} is not a time: {error}") from None
    if pd.isna(moment):
        raise ConfigError(f"start/end {value!r} is not a time")
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    try:
        rounded = moment.ceil("ms")
    except (OverflowError, ValueError):  # pd.Timestamp.max: no whole millisecond above it
        rounded = moment.floor("ms")
    if rounded.year > 9999:  # past what the search stores read: the last instant they do, which DuckDB reads alike
        return "9999-12-31T23:59:59.999Z"
    return rounded.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _date_fields(schema: str) -> frozenset[str]:
    properties = load_schema(schema)["properties"]
    return frozenset(name for name, spec in properties.items() if spec.get("format") == "date-time")


_DATE_FIELDS = {kind: _date_fields(schema) for kind, schema in (
    ("events", "event"), ("transactions", "transaction"), ("alerts", "alert"), ("dead_letters", "dead_letter"))}


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"{kind!r} is not one of {', '.join(KINDS)}")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
