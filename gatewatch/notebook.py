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

from dataclasses import dataclass
from typing import Any

import pandas as pd

from gatewatch.errors import ConfigError

KINDS = ("events", "transactions", "alerts", "dead_letters")
_DUCKDB_TIME = {"events": "ts", "transactions": "first_ts", "alerts": "first_seen", "dead_letters": None}
_INDEX = {"events": "events", "transactions": "transactions", "alerts": "alerts", "dead_letters": "deadletter"}
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

    def query(self, kind: str, **kwargs: Any) -> pd.DataFrame:
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
    """A gatewatch DuckDB file, opened read-only (a running replay may hold the write lock)."""

    path: str

    def query(self, kind: str, where: str | None = None, start: str | None = None, end: str | None = None,
              limit: int = 100_000) -> pd.DataFrame:  # fmt: skip
        """Rows of ``kind`` matching a SQL condition and a time range, oldest first."""
        import duckdb

        _check(kind)
        conditions, parameters = [], []
        if where:
            conditions.append(f"({where})")
        time_column = _DUCKDB_TIME[kind]
        if time_column is not None:
            for bound, operator in ((start, ">="), (end, "<")):
                if bound is not None:
                    conditions.append(f"{time_column} {operator} ?::TIMESTAMPTZ")
                    parameters.append(bound)
        sql = f"SELECT * FROM {kind}"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += f" ORDER BY {time_column or 'id'} LIMIT {int(limit)}"
        with duckdb.connect(self.path, read_only=True) as connection:
            return connection.execute(sql, parameters).df()


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
              end: str | None = None, limit: int = 100_000, page_size: int = 5_000) -> pd.DataFrame:  # fmt: skip
        """Documents of ``kind`` matching a query DSL clause and an @timestamp range, oldest first."""
        _check(kind)
        filters: list[dict[str, Any]] = [query] if query else []
        if start is not None or end is not None:
            bounds = {key: value for key, value in (("gte", start), ("lt", end)) if value is not None}
            filters.append({"range": {"@timestamp": bounds}})
        body: dict[str, Any] = {
            "query": {"bool": {"filter": filters}} if filters else {"match_all": {}},
            "sort": [{"@timestamp": "asc"}, {_ID_FIELD[kind]: "asc"}],
        }
        documents: list[dict[str, Any]] = []
        index = f"{self.index_prefix}-{_INDEX[kind]}-*"
        while len(documents) < limit:
            body["size"] = min(page_size, limit - len(documents))
            hits = self._client.search(index=index, body=body, ignore_unavailable=True)["hits"]["hits"]
            documents.extend(hit["_source"] for hit in hits)
            if len(hits) < body["size"]:
                break
            body["search_after"] = hits[-1]["sort"]
        return pd.json_normalize(documents) if documents else pd.DataFrame()


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"{kind!r} is not one of {', '.join(KINDS)}")
