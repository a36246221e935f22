"""Elasticsearch and OpenSearch clients behind the same few calls, with errors in two kinds.

The official ``elasticsearch`` client refuses servers that are not Elasticsearch,
so OpenSearch gets ``opensearch-py``. Each adapter raises :class:`StoreUnreachableError`
(no answer) or :class:`StoreRefusedError` (an error status) and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
import os
import re
from typing import Any, Protocol, cast

import orjson

from ingest.errors import ConfigError, StoreAuthError, StoreError
from ingest.sinks.search_auth import StoreAuth, redact_url

FLAVORS = ("elasticsearch", "opensearch")
DETAIL_MAX_CHARS = 4096
_STORE_SIDE_STATUSES = frozenset({401, 403, 404, 408, 409, 429})
_STORE_SIDE_ERRORS = frozenset({"cluster_block_exception", "index_closed_exception", "index_not_found_exception"})
_BULK_FILTER = "errors,items.*.status,items.*.error"
def is_content_rejection(status: int, error_type: str) -> bool:
    """True when a bulk item's refusal is about the document itself, so re-sending cannot help."""
    return 400 <= status < 500 and status not in _STORE_SIDE_STATUSES and error_type not in _STORE_SIDE_ERRORS



class StoreUnreachableError(StoreError):
    """No answer: connection refused or reset, timeout, TLS failure."""


class StoreRefusedError(StoreError):
    """The server answered with an error status."""

    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(f"{status} {error_type}: {reason}"[:DETAIL_MAX_CHARS])
        self.status = status
        self.error_type = error_type
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return not is_content_rejection(self.status, self.error_type)

    @property
    def auth_failed(self) -> bool:
        """The store does not accept gatewatch's credentials, or they lack a privilege: retrying cannot help.

        A 403 for a blocked index (disk watermark, read-only) is the store's state, not ours: retried.
        """
        return self.status == 401 or (self.status == 403 and self.error_type not in _STORE_SIDE_ERRORS)

    @property
    def api_missing(self) -> bool:
        """The endpoint does not exist here (a plugin or module the distribution lacks)."""
        return "no handler found" in self.reason or self.status in (405, 410, 501)


def error_parts(body: Any) -> tuple[str, str]:
    error = body.get("error") if isinstance(body, Mapping) else body
    if isinstance(error, Mapping):
        return str(error.get("type", "")), str(error.get("reason", error))
    return "", str(error if error is not None else body)


def tls_failure(error: Exception) -> str:
    """The one line for a TLS handshake the store's certificate (or ours) failed: retrying cannot help."""
    cause: BaseException = error
    while (inner := cause.__cause__ or cause.__context__) is not None:  # the client's "TLS error" wraps ssl's own
        cause = inner
    detail = str(cause) if str(error) in ("TLS error", "") else str(error)
    if "WRONG_VERSION_NUMBER" in detail or "record layer failure" in detail:
        return f"TLS with the store failed ({detail}): the node answers in plain HTTP; give the URL as http://"
    return (
        f"TLS with the store failed ({detail}); check store.ca_certs, store.client_cert / store.client_key "
        "and store.verify_certs"
    )


class SearchClient(Protocol):
    """The calls the sink makes, identical for both flavors; raise ``StoreUnreachableError`` / ``StoreRefusedError``."""

    flavor: str

    def health(self) -> Mapping[str, Any]: ...
    def bulk(self, body: bytes) -> Mapping[str, Any]: ...
    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None: ...
    def put_retention_policy(self, name: str, days: int, patterns: list[str]) -> None: ...
    def list_indices(self, pattern: str) -> dict[str, float]:
        """Each index matching ``pattern``, with its creation time (epoch seconds)."""
        ...

    def delete_indices(self, names: Sequence[str]) -> None: ...
    def refresh(self, pattern: str) -> None: ...
    def first_match(self, pattern: str, query: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The source of one document of the indices matching ``pattern`` that matches ``query``, or None."""
        ...

    def close(self) -> None: ...


class _ElasticsearchClient:
    flavor = "elasticsearch"

    def __init__(self, url: str, timeout_secs: float, auth: StoreAuth) -> None:
        from elasticsearch import Elasticsearch
        from elasticsearch.serializer import OrjsonSerializer

        self._es = Elasticsearch(
            url, request_timeout=timeout_secs, max_retries=0, retry_on_timeout=False, serializer=OrjsonSerializer(),
            **auth.elasticsearch_kwargs(),
        )  # fmt: skip

    @contextmanager
    def _errors(self) -> Iterator[None]:
        from elastic_transport import TlsError, TransportError
        from elasticsearch import ApiError, UnsupportedProductError

        try:
            yield
        except UnsupportedProductError as error:
            raise StoreError(f"not an Elasticsearch server (use opensearch:URL for OpenSearch): {error}") from None
        except TlsError as error:
            raise StoreError(tls_failure(error)) from None
        except ApiError as error:
            raise StoreRefusedError(error.meta.status, *error_parts(error.body)) from None
        except TransportError as error:
            raise StoreUnreachableError(str(error)) from None

    def health(self) -> Mapping[str, Any]:
        with self._errors():
            return cast(Mapping[str, Any], self._es.cluster.health().body)

    def bulk(self, body: bytes) -> Mapping[str, Any]:
        with self._errors():  # bytes go out as they are: no second serialization
            # The client sends bytes as they are (its stubs know only a list of actions).
            return cast(Mapping[str, Any], self._es.bulk(operations=body, filter_path=_BULK_FILTER).body)  # type: ignore[arg-type]

    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        with self._errors():
            self._es.indices.put_index_template(name=name, body=dict(body))

    def put_retention_policy(self, name: str, days: int, patterns: list[str]) -> None:
        # ILM: attached by the templates' index.lifecycle.name (patterns unused)
        phases = {"hot": {"actions": {}}, "delete": {"min_age": f"{days}d", "actions": {"delete": {}}}}
        with self._errors():
            self._es.ilm.put_lifecycle(name=name, policy={"phases": phases})

    def list_indices(self, pattern: str) -> dict[str, float]:
        with self._errors():
            rows = self._es.cat.indices(
                index=pattern, h="index,creation.date", format="json", expand_wildcards="open,closed"
            )
        return _created(cast(list[dict[str, str]], rows.body))

    def delete_indices(self, names: Sequence[str]) -> None:
        with self._errors():
            self._es.indices.delete(index=",".join(names), ignore_unavailable=True)

    def refresh(self, pattern: str) -> None:
        with self._errors():
            self._es.indices.refresh(index=pattern)

    def first_match(self, pattern: str, query: Mapping[str, Any]) -> Mapping[str, Any] | None:
        with self._errors():
            hits = self._es.search(index=pattern, query=dict(query), size=1, ignore_unavailable=True,
                                   allow_no_indices=True).body["hits"]["hits"]  # fmt: skip
        return cast(Mapping[str, Any], hits[0]["_source"]) if hits else None

    def close(self) -> None:
        self._es.close()


class _OpenSearchClient:
    flavor = "opensearch"

    def __init__(self, url: str, timeout_secs: float, auth: StoreAuth) -> None:
        from opensearchpy import OpenSearch
        from opensearchpy.serializer import JSONSerializer

        class _OrjsonLoads(JSONSerializer):  # responses of thousands of bulk items: parse fast
            def loads(self, s: str) -> Any:
                return orjson.loads(s)

        self._os = OpenSearch(
            hosts=[url], timeout=timeout_secs, max_retries=0, retry_on_timeout=False, serializer=_OrjsonLoads(),
            **auth.opensearch_kwargs(),
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import SSLError, TransportError

        try:
            yield
        except SSLError as error:
            raise StoreError(tls_failure(error)) from None
        except OSConnectionError as error:
            raise StoreUnreachableError(str(error)) from None
        except TransportError as error:
            status = error.status_code if isinstance(error.status_code, int) else 0
            error_type, reason = error_parts(error.info)
            raise StoreRefusedError(status, error_type or str(error.error), reason) from None

    def health(self) -> Mapping[str, Any]:
        with self._errors():
            return cast(Mapping[str, Any], self._os.cluster.health())

    def bulk(self, body: bytes) -> Mapping[str, Any]:
        with self._errors():
            return cast(Mapping[str, Any], self._os.bulk(body=body, params={"filter_path": _BULK_FILTER}))

    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        with self._errors():
            self._os.indices.put_index_template(name=name, body=dict(body))

    def put_retention_policy(self, name: str, days: int, patterns: list[str]) -> None:
        # ISM: attached to new indices matching the policy's own ism_template
        ism = self._os.plugins.index_management
        hot = {"name": "hot", "actions": [],
               "transitions": [{"state_name": "delete", "conditions": {"min_index_age": f"{days}d"}}]}
        policy = {"policy": {
            "description": f"gatewatch: delete indices {days} days after creation",
            "default_state": "hot",
            "states": [hot, {"name": "delete", "actions": [{"delete": {}}], "transitions": []}],
            "ism_template": [{"index_patterns": patterns, "priority": 100}],
        }}
        params: dict[str, Any] = {}
        try:
            with self._errors():
                current = ism.get_policy(policy=name)
            # Replacing an ISM policy needs the version just read (optimistic concurrency).
            params = {"if_seq_no": current["_seq_no"], "if_primary_term": current["_primary_term"]}
        except StoreRefusedError as error:
            if error.status != 404 or error.api_missing:
                raise
        with self._errors():
            ism.put_policy(policy=name, body=policy, params=params)

    def list_indices(self, pattern: str) -> dict[str, float]:
        with self._errors():
            rows = self._os.cat.indices(index=pattern, params={"h": "index,creation.date", "format": "json",
                                                                "expand_wildcards": "open,closed"})
        return _created(rows)

    def delete_indices(self, names: Sequence[str]) -> None:
        with self._errors():
            self._os.indices.delete(index=",".join(names), params={"ignore_unavailable": "true"})

    def refresh(self, pattern: str) -> None:
        with self._errors():
            self._os.indices.refresh(index=pattern)

    def first_match(self, pattern: str, query: Mapping[str, Any]) -> Mapping[str, Any] | None:
        with self._errors():
            hits = self._os.search(index=pattern, body={"query": dict(query), "size": 1},
                                   params={"ignore_unavailable": "true", "allow_no_indices": "true"})["hits"]["hits"]
        return cast(Mapping[str, Any], hits[0]["_source"]) if hits else None

    def close(self) -> None:
        self._os.close()


def make_client(flavor: str, url: str, timeout_secs: float = 30.0, auth: StoreAuth | None = None) -> SearchClient:
    """The client adapter for ``flavor`` (``elasticsearch`` or ``opensearch``); connects lazily.

    ``url`` carries no credentials (see :func:`ingest.sinks.search_auth.store_auth`); ``auth`` does.
    """
    if not re.match(r"^https?://[^/:@]+", url):
        example = f"{flavor}:http://127.0.0.1:9200"
        raise ConfigError(f"store.url: {flavor}:{redact_url(url)} needs an http:// or https:// URL, e.g. {example}")
    auth = auth or StoreAuth()
    for name in ("ca_certs", "client_cert", "client_key"):
        path = getattr(auth, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"store.{name}: {path} is not a readable file")
    if flavor == "elasticsearch":
        return _ElasticsearchClient(url, timeout_secs, auth)
    if flavor == "opensearch":
        return _OpenSearchClient(url, timeout_secs, auth)
    raise ConfigError(f"store kind {flavor!r} is not one of {', '.join(FLAVORS)}")


def _created(rows: list[dict[str, str]]) -> dict[str, float]:
    """``_cat/indices`` rows (``index``, ``creation.date`` in epoch milliseconds) by name, in seconds."""
    return {row["index"]: int(row["creation.date"]) / 1000 for row in rows}
