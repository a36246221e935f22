"""Open the store a ``--store`` URL names: ``duckdb:PATH``, ``elasticsearch:URL``, ``opensearch:URL`` or ``none``."""

from __future__ import annotations

from pathlib import Path
from gatewatch.config import GatewatchConfig
from gatewatch.errors import ConfigError
from ingest.sinks.base import Sink
from ingest.sinks.search_auth import redact_url

STORE_KINDS = ("duckdb", "elasticsearch", "opensearch", "none")


def open_store(url: str, config: GatewatchConfig) -> Sink | None:
    """The sink for ``url``, or None for ``none``."""
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

        return DuckDBSink(Path(target), config.store.duckdb_memory_limit)
    from ingest.sinks.search import SearchSink

    return SearchSink.connect(kind, target, config.store)
