"""Open the store a ``--store`` URL names: ``duckdb:PATH``, ``elasticsearch:URL``, ``opensearch:URL`` or ``none``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gatewatch.config import GatewatchConfig
from gatewatch.errors import ConfigError
from ingest.sinks.base import Sink
from ingest.sinks.search_auth import redact_url

if TYPE_CHECKING:
    from ingest.sinks.duckdb import DuckDBSink
    from ingest.sinks.search import SearchSink

STORE_KINDS = ("duckdb", "elasticsearch", "opensearch", "none")


def open_store(url: str, config: GatewatchConfig, files: Mapping[str, str] | None = None) -> Sink | None:
    """The sink for ``url``, or None for ``none``; ``files`` (stream -> path) names a dead letter's file."""
    kind, _, target = url.partition(":")
    if kind == "none" and not target:
        return None
    if kind not in STORE_KINDS or not target:
        raise ConfigError(
            f"store {redact_url(url)!r} is not one of duckdb:PATH, elasticsearch:URL, opensearch:URL or none "
            "(e.g. --store duckdb:gatewatch.duckdb)"
        )
    if kind == "duckdb":
        from ingest.sinks.duckdb import DuckDBSink

        sink: DuckDBSink | SearchSink = DuckDBSink(Path(target), config.store.duckdb_memory_limit)
    else:
        from ingest.sinks.search import SearchSink

        sink = SearchSink.connect(kind, target, config.store)
    if files:
        sink.name_files(files)
    return sink
