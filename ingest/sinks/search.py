"""Elasticsearch and OpenSearch: daily indices that Kibana, OpenSearch Dashboards and a SIEM read.

Indices, one per UTC day, each under the template :mod:`schemas.templates` generates:

- ``<prefix>-events-YYYY.MM.DD``        dated by the event's ``@timestamp`` (event time)
- ``<prefix>-transactions-YYYY.MM.DD``  by the transaction's first record (its ``@timestamp``)
- ``<prefix>-alerts-YYYY.MM.DD``        by the alert's ``first_seen``
- ``<prefix>-deadletter-YYYY.MM.DD``    by *ingestion* time (wall clock, written as its ``@timestamp``):
  a record that failed to parse has no time worth trusting. So a batch retried across midnight
  UTC can leave a dead letter in two daily indices (same ``_id``).

Idempotence: every document goes as a bulk ``index`` action whose ``_id`` is
its deterministic id (event.id, transaction id, alert id, dead letter id), so
a re-sent batch overwrites itself and a grown alert replaces its earlier version.

Every item of every bulk response is checked:

- 2xx: stored;
- 401, and 403 other than a blocked index: gatewatch's credentials are refused or lack a
  privilege -> :class:`StoreAuthError` at once (retrying cannot help; the message says what to check);
- 429, 5xx, and refusals that are about the store rather than the document (a blocked or
  closed index, ...): re-sent with exponential backoff; still refused after
  ``max_attempts`` -> :class:`StoreUnavailableError`, and the caller retries the whole batch;
- any other 4xx (``mapper_parsing_exception``, ``document_parsing_exception``, ...): the
  document can never be stored as it is, so it goes to the dead-letter index with reason
  ``store_rejected``, the store's error and the document itself as JSON. Nothing is dropped:
  should the dead letter be refused too, ``write`` raises :class:`StoreError`.

Connection errors and timeouts raise :class:`StoreUnavailableError` at once.
``write`` returns only when every document is stored or dead-lettered; it never
refreshes (tests and tools call :meth:`SearchSink.refresh`).

Retention (``store.retention_days``): on connect the sink tries the cluster's
lifecycle API — ILM on Elasticsearch, ISM on OpenSearch — and, if it answers,
installs a delete-after-N-days policy (counted from index *creation*) and
attaches it to new indices. Otherwise (minimal distributions, or no
permission) the sink itself deletes this prefix's daily indices whose *date
suffix* is more than N days old and that were created more than N days ago:
on connect, then at most hourly from ``write``, or whenever
:meth:`SearchSink.apply_retention` is called. Indices are dated by event time;
the creation time keeps a replay of logs older than N days for N days from the
replay, as ILM / ISM do.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from ingest.errors import ConfigError, StoreAuthError, StoreError, StoreUnavailableError
from ingest.ecs import dead_letter_document, epoch, event_document, iso, transaction_document
from ingest.sinks.base import CURRENT_STREAMS, Batch, warn_of_older_streams
from ingest.sinks.search_clients import (
    DETAIL_MAX_CHARS,
    SearchClient,
    StoreRefusedError,
    StoreUnreachableError,
    is_content_rejection,
    make_client,
)
from ingest.settings import StoreSettings
from ingest.sinks.search_auth import store_auth
from schemas.templates import INDEX_KINDS, index_template, template_name

_log = logging.getLogger(__name__)

STORE_REJECTED = "store_rejected"
MAX_BULK_BYTES = 16 * 1024 * 1024  # well under http.max_content_length (100 MB)
RETENTION_CHECK_SECS = 3600.0
# Elasticsearch index-name rules, plus no '*' so our wildcard patterns stay ours.
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,200}$")
# Refusals that say nothing about the document: re-send it later instead of dead-lettering it.
# Only what check_bulk_items reads: a third of the response to parse.


class BulkAction(NamedTuple):
    """One bulk ``index`` action: ``source`` (a JSON document) stored as ``_id`` ``id`` in ``index``.

    A tuple, not a frozen dataclass: one is built per stored document, and this is 3x cheaper.
    """

    kind: str  # index kind: events, transactions, alerts, deadletter
    index: str  # type: ignore[assignment]  # the field shadows tuple.index(), which nothing here calls
    id: str
    source: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """A bulk item the store refused for its content (a 4xx other than 429 and store-side ones)."""

    action: BulkAction
    status: int
    error: Mapping[str, Any]


@dataclass(slots=True)
class BulkOutcome:
    """What one bulk response said about each action, sorted into three piles."""

    stored: int = 0
    retry: list[BulkAction] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    retry_reason: str = ""  # one example, for the error message when retries run out
    auth_refused: StoreRefusedError | None = None  # an item refused for gatewatch's credentials: stop, do not retry


def check_bulk_items(response: Mapping[str, Any], actions: Sequence[BulkAction]) -> BulkOutcome:
    """Sort every item of a bulk ``response`` to the ``actions`` sent: stored, to retry, rejected.

    Does not trust the top-level ``errors`` flag; a response whose item count
    differs from the actions sent raises :class:`StoreError` (nothing can be
    known about the missing ones).
    """
    items = response.get("items")
    if not isinstance(items, list) or len(items) != len(actions):
        count = len(items) if isinstance(items, list) else "no"
        raise StoreError(f"bulk response has {count} items for {len(actions)} actions")
    outcome = BulkOutcome()
    for action, item in zip(actions, items):
        result: Mapping[str, Any] = item.get("index") or next(iter(item.values()), {})
        status = result.get("status", 0)
        if 200 <= status < 300:
            outcome.stored += 1
            continue
        error = result.get("error") or {}
        if not isinstance(error, Mapping):
            error = {"type": "unknown", "reason": str(error)}
        refusal = StoreRefusedError(status, str(error.get("type", "")), str(error.get("reason", "")))
        if refusal.auth_failed:
            outcome.auth_refused = outcome.auth_refused or refusal
        if is_content_rejection(status, str(error.get("type", ""))):
            outcome.rejected.append(Rejection(action, status, error))
        else:
            outcome.retry.append(action)
            outcome.retry_reason = outcome.retry_reason or f"{status} {error.get('type', '')}".strip()
    return outcome


def describe_error(error: Mapping[str, Any]) -> str:
    """``type: reason; caused by type: reason`` for a bulk item's error, capped in length."""
    parts: list[str] = []
    current: Any = error
    while isinstance(current, Mapping) and len(parts) < 4:
        parts.append(f"{current.get('type', 'error')}: {current.get('reason', '')}".rstrip(": "))
        current = current.get("caused_by")
    return "; caused by ".join(parts)[:DETAIL_MAX_CHARS]


@lru_cache(maxsize=4096)
def _day_suffix(day: int) -> str:
    return time.strftime("%Y.%m.%d", time.gmtime(day * 86400))


def index_name(prefix: str, kind: str, ts: float) -> str:
    """The daily index for a document of ``kind`` dated ``ts`` (epoch seconds, UTC day)."""
    return f"{prefix}-{kind}-{_day_suffix(int(ts // 86400))}"


def expired_indices(created: Mapping[str, float], prefix: str, retention_days: int, now: float) -> list[str]:
    """The daily indices of ``prefix`` (``created``: name -> creation time) older than ``retention_days``
    by both their date and their creation.

    An index of day D goes once D + 1 day <= now - retention_days, i.e. D is
    before the UTC date of ``now - retention_days``, and once it was created
    ``retention_days`` ago: a replay of old logs lives as long from the replay
    as under ILM / ISM. Names that are not exactly ``<prefix>-<kind>-YYYY.MM.DD``
    are never touched.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(?:{'|'.join(INDEX_KINDS)})-(\d{{4}})\.(\d{{2}})\.(\d{{2}})$")
    cutoff = datetime.fromtimestamp(now, tz=timezone.utc).date() - timedelta(days=retention_days)
    expired = []
    for name, created_at in created.items():
        if created_at > now - retention_days * 86400:
            continue
        match = pattern.match(name)
        if match is None:
            continue
        try:
            day = date(*(int(part) for part in match.groups()))
        except ValueError:
            continue
        if day < cutoff:
            expired.append(name)
    return sorted(expired)


def _dumps(document: Mapping[str, Any]) -> bytes:
    body = _serialize(document)
    if len(body) > FLATTENED_LEAF_CHARS and any(_long_leaf(document.get(name)) for name in FLATTENED_FIELDS):
        body = _serialize({**document, **{name: _cut_leaves(document[name]) for name in FLATTENED_FIELDS
                                          if name in document}})  # fmt: skip
    return body


def _serialize(document: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(document, default=str)
    except TypeError:  # a detail dict with non-string keys: rare, and slower to serialize
        return orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS)


FLATTENED_FIELDS = ("labels", "details")
"""The documents' fields mapped ``flattened`` / ``flat_object`` (an event's labels, an alert's details)."""

FLATTENED_LEAF_CHARS = 4096
"""Longest string a flattened field's leaf is stored with. Each leaf is one indexed term, and Lucene refuses
a term over 32,766 bytes with the whole document: a Billing request for a 40 KB path from a foreign peer
left its gateway_bypass alert out of the alerts index (``store_rejected``), where reports and Kibana look.
4,096 characters of up to 4 UTF-8 bytes, with their key, stay below it; the alerts file keeps the whole value."""


def _long_leaf(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) > FLATTENED_LEAF_CHARS
    if isinstance(value, Mapping):
        return any(_long_leaf(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_long_leaf(item) for item in value)
    return False


def _cut_leaves(value: Any) -> Any:
    """``value`` with every string over :data:`FLATTENED_LEAF_CHARS` cut, saying how much was left out."""
    if isinstance(value, str):
        if len(value) <= FLATTENED_LEAF_CHARS:
            return value
        return f"{value[:FLATTENED_LEAF_CHARS]}... [{len(value) - FLATTENED_LEAF_CHARS} more characters]"
    if isinstance(value, Mapping):
        return {key: _cut_leaves(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cut_leaves(item) for item in value]
    return value


def rejection_dead_letter(rejection: Rejection, now: float) -> dict[str, Any]:
    """The dead-letter document for a refused one: reason ``store_rejected``, the error, the original."""
    action = rejection.action
    try:
        original = orjson.loads(action.source)
    except orjson.JSONDecodeError:
        original = {}
    dataset = original.get("event.dataset") or f"gatewatch.{INDEX_KINDS.get(action.kind, action.kind)}"
    letter_id = hashlib.blake2b(f"{STORE_REJECTED}\x1f{action.kind}\x1f{action.id}".encode(), digest_size=12)
    document: dict[str, Any] = {
        "id": letter_id.hexdigest(),
        "@timestamp": iso(now),
        "reason": STORE_REJECTED,
        "detail": describe_error(rejection.error),
        "dataset": str(dataset),
        "line": action.source.decode("utf-8", errors="backslashreplace"),
        "document_id": action.id,
        "target_index": action.index,
        "store_status": rejection.status,
        "error_type": str(rejection.error.get("type", "unknown")),
    }
    stream, offset = original.get("gatewatch.origin.stream"), original.get("gatewatch.origin.offset")
    if isinstance(stream, str) and isinstance(offset, int):
        document["stream"], document["offset"] = stream, offset
    return document


def _chunks(actions: Sequence[BulkAction], max_docs: int, max_bytes: int) -> Iterator[Sequence[BulkAction]]:
    start, size = 0, 0
    for end, action in enumerate(actions):
        weight = len(action.source) + len(action.index) + len(action.id) + 40
        if end > start and (end - start >= max_docs or size + weight > max_bytes):
            yield actions[start:end]
            start, size = end, 0
        size += weight
    if start < len(actions):
        yield actions[start:]


def bulk_body(actions: Iterable[BulkAction]) -> bytes:
    """The NDJSON bulk request body: an ``index`` line and the document for each action."""
    parts = []
    dumps = orjson.dumps
    for action in actions:
        parts.append(_action_head(action.index) + dumps(action.id) + b"}}")
        parts.append(action.source)
    parts.append(b"")
    return b"\n".join(parts)


@lru_cache(maxsize=1024)
def _action_head(index: str) -> bytes:
    # A bulk body names a handful of daily indices thousands of times over.
    return b'{"index":{"_index":' + orjson.dumps(index) + b',"_id":'


class SearchSink:
    """Writes batches to daily Elasticsearch / OpenSearch indices (see the module docstring).

    Counters for metrics: ``docs_written`` (acknowledged by the store, dead
    letters included), ``docs_rejected`` (refused for their content, each now
    a ``store_rejected`` dead letter), ``retries`` (documents re-sent after a
    429/5xx), ``last_bulk_secs`` (duration of the latest bulk request).

    ``write`` may run in several threads at once (``thread_safe``): the
    clients pool their connections, and the counters are updated under a lock.
    """

    thread_safe = True

    def __init__(
        self,
        client: SearchClient,
        index_prefix: str = "gatewatch",
        retention_days: int = 30,
        bulk_max_docs: int = 5000,
        *,
        max_attempts: int = 5,
        backoff_secs: float = 0.25,
        max_backoff_secs: float = 4.0,
        retry_after_secs: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not _PREFIX.match(index_prefix):
            raise ConfigError(
                f"store.index_prefix: {index_prefix!r} is not a valid index name start "
                "(lowercase letters, digits, '-', '_', '.'; e.g. gatewatch)"
            )
        self.client = client
        self.files: Mapping[str, str] = {}  # stream -> the path of the file it was read from (replay's files)
        self.prefix = index_prefix
        self.retention_days = retention_days
        self.bulk_max_docs = bulk_max_docs
        self.max_attempts = max_attempts
        self.backoff_secs = backoff_secs
        self.max_backoff_secs = max_backoff_secs
        self.retry_after_secs = retry_after_secs
        self.clock = clock
        self.sleep = sleep
        self.retention_policy: str | None = None  # "ilm" / "ism" once attached; None: the sink deletes
        self._retention_checked_at = float("-inf")
        self._counting = threading.Lock()
        self.docs_written = 0
        self.docs_rejected = 0
        self.retries = 0
        self.last_bulk_secs = 0.0
        self.where = client.flavor  # "<flavor> at <url>" once connected: for the credentials error

    @classmethod
    def connect(cls, kind: str, url: str, store_config: StoreSettings, timeout_secs: float = 30.0) -> SearchSink:
        """Check that the node answers, install the index templates and apply retention.

        ``store_config`` is a :class:`gatewatch.config.StoreConfig` (index_prefix,
        retention_days, bulk_max_docs). Raises :class:`StoreUnavailableError`
        when nothing answers at ``url``, :class:`StoreError` when it refuses.
        """
        url, auth = store_auth(store_config, url)
        client = make_client(kind, url, timeout_secs, auth)
        try:
            sink = cls(client, store_config.index_prefix, store_config.retention_days, store_config.bulk_max_docs)
            sink.where = f"{kind} at {url}"
            with sink._store_calls(f"connect to {kind} at {url}"):
                health = client.health()
            if health.get("status") == "red":
                _log.warning("search_cluster_red url=%s cluster=%s", url, health.get("cluster_name"))
            sink.install()
            sink.apply_retention()
        except BaseException:
            client.close()
            raise
        return sink

    def install(self) -> None:
        """Install the retention policy if the cluster has a lifecycle API, then the four index templates."""
        patterns = [f"{self.prefix}-{kind}-*" for kind in INDEX_KINDS]
        policy = f"{self.prefix}-retention"
        with self._store_calls("install retention policy"):
            try:  # the capability check: does the lifecycle API answer?
                self.client.put_retention_policy(policy, self.retention_days, patterns)
                self.retention_policy = "ilm" if self.client.flavor == "elasticsearch" else "ism"
            except StoreRefusedError as error:
                if not error.api_missing:  # there but refused (permissions?): say so, then delete ourselves
                    _log.warning("search_retention_policy_refused policy=%s error=%r", policy, str(error))
        with self._store_calls("install index templates"):
            for kind in INDEX_KINDS:
                body = index_template(kind, self.prefix, self.client.flavor)
                if self.retention_policy == "ilm":
                    body["template"]["settings"]["index"]["lifecycle"] = {"name": policy}
                self.client.put_index_template(template_name(kind, self.prefix), body)
        _log.info("search_templates_installed prefix=%s retention=%s days=%d",
                  self.prefix, self.retention_policy or "sink_deletes", self.retention_days)

    def name_files(self, files: Mapping[str, str]) -> None:
        """Name each dead letter's file by its stream (a replay's files), and warn when the events indices hold
        records an earlier release named by their file's path."""
        self.files = dict(files)
        stream = "gatewatch.origin.stream"
        query = {"bool": {"filter": [{"exists": {"field": stream}}],
                          "must_not": [{"regexp": {stream: {"value": CURRENT_STREAMS}}}]}}  # fmt: skip
        try:
            found = self.client.first_match(f"{self.prefix}-events-*", query)
        except StoreRefusedError as error:
            if error.status not in (401, 403):  # README's least privileges grant no read: nothing to look at then
                _log.warning("search_streams_unchecked error=%r", str(error)[:300])
            return
        except StoreUnreachableError:
            return  # the first write says so
        if found is not None:
            warn_of_older_streams(f"{self.where} ({self.prefix}-events-*)", str(found.get(stream)))

    def apply_retention(self, now: float | None = None) -> list[str]:
        """Delete this prefix's daily indices older than ``retention_days``; returns their names.

        A no-op when an ILM / ISM policy does it. ``now``: epoch seconds (default: wall clock).
        """
        now = self.clock() if now is None else now
        self._retention_checked_at = now
        if self.retention_policy is not None:
            return []
        with self._store_calls("apply retention"):
            created = self.client.list_indices(f"{self.prefix}-*")
            expired = expired_indices(created, self.prefix, self.retention_days, now)
            for start in range(0, len(expired), 50):  # keep the URL short
                self.client.delete_indices(expired[start:start + 50])
        if expired:
            _log.info("search_indices_expired prefix=%s count=%d first=%s", self.prefix, len(expired), expired[0])
        return expired

    def write(self, batch: Batch) -> None:
        """Store every document of ``batch``; returns once each is stored or dead-lettered."""
        now = self.clock()
        self.store(self._batch_actions(batch, now), now)
        if now - self._retention_checked_at >= RETENTION_CHECK_SECS:
            try:
                self.apply_retention(now)
            except StoreError as error:  # the batch is durable; retention can wait an hour
                _log.warning("search_retention_failed prefix=%s error=%r", self.prefix, str(error))

    def write_documents(self, kind: str, documents: Iterable[Mapping[str, Any]]) -> None:
        """Store ready-made documents of index ``kind`` (events, transactions, alerts, deadletter).

        They are dated and keyed like :meth:`write` does it, from their own
        fields (``@timestamp``, ``first_seen``; ``event.id`` or ``id``).
        """
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; one of {', '.join(INDEX_KINDS)}")
        now = self.clock()
        actions = []
        for doc in documents:
            if kind == "deadletter":
                doc = {"@timestamp": iso(now), **doc}
                ts = now
            else:
                ts = epoch(doc["first_seen" if kind == "alerts" else "@timestamp"])
            doc_id = doc["id"] if kind in ("alerts", "deadletter") else doc["event.id"]
            actions.append(BulkAction(kind, index_name(self.prefix, kind, ts), doc_id, _dumps(doc)))
        self.store(actions, now)

    def refresh(self) -> None:
        """Make everything written so far searchable (tests and tools; ``write`` never refreshes)."""
        with self._store_calls("refresh"):
            self.client.refresh(f"{self.prefix}-*")

    def close(self) -> None:
        self.client.close()

    # -- internals --------------------------------------------------------------------------

    def _batch_actions(self, batch: Batch, now: float) -> list[BulkAction]:
        p = self.prefix
        actions = [
            BulkAction("events", index_name(p, "events", e.ts), e.id, _dumps(event_document(e)))
            for e in batch.events
        ]
        actions += (
            BulkAction("transactions", index_name(p, "transactions", t.first_ts), t.id, _dumps(transaction_document(t)))
            for t in batch.transactions
        )
        actions += (
            BulkAction("alerts", index_name(p, "alerts", a.first_seen), a.id, _dumps(a.to_document()))
            for a in batch.alerts.values()
        )
        ingested, dead_index = iso(now), index_name(p, "deadletter", now)
        actions += (
            BulkAction("deadletter", dead_index, d.id,
                       _dumps({"@timestamp": ingested, **dead_letter_document(d, self.files.get(d.origin.stream))}))
            for d in batch.dead_letters
        )
        return actions

    def store(self, actions: Sequence[BulkAction], now: float | None = None) -> None:
        """Bulk-index ``actions``; dead-letter what the store refuses for its content."""
        now = self.clock() if now is None else now
        rejected: list[Rejection] = []
        for chunk in _chunks(actions, self.bulk_max_docs, MAX_BULK_BYTES):
            rejected += self._bulk(chunk)
        if not rejected:
            return
        with self._counting:
            self.docs_rejected += len(rejected)
        for rejection in rejected[:10]:  # the first few; every one is in the dead-letter index
            _log.warning("search_document_rejected index=%s id=%s status=%d of=%d error=%r", rejection.action.index,
                         rejection.action.id, rejection.status, len(rejected), describe_error(rejection.error)[:300])
        dead_index = index_name(self.prefix, "deadletter", now)
        letters = []
        for rejection in rejected:
            letter = rejection_dead_letter(rejection, now)
            letters.append(BulkAction("deadletter", dead_index, letter["id"], _dumps(letter)))
        refused = []
        for chunk in _chunks(letters, self.bulk_max_docs, MAX_BULK_BYTES):
            refused += self._bulk(chunk)
        if refused:
            raise StoreError(
                f"{len(refused)} store_rejected dead letters were refused too, first: "
                f"{describe_error(refused[0].error)}"
            )

    def _bulk(self, chunk: Sequence[BulkAction]) -> list[Rejection]:
        """Send ``chunk``, re-sending 429/5xx items with backoff; returns the content rejections."""
        pending, rejected, last_reason = chunk, [], ""
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(min(self.max_backoff_secs, self.backoff_secs * 2 ** (attempt - 1)))
                with self._counting:
                    self.retries += len(pending)
            started = time.perf_counter()
            try:
                response = self.client.bulk(bulk_body(pending))
            except StoreUnreachableError as error:
                raise StoreUnavailableError(f"bulk: store unreachable: {error}", self.retry_after_secs) from None
            except StoreRefusedError as error:  # the whole request: 429 / 5xx are worth another try
                if error.auth_failed:
                    raise self._auth_error("bulk", error) from None
                if not error.retryable:
                    raise StoreError(f"bulk request refused: {error}") from None
                last_reason = str(error)
                continue
            finally:
                self.last_bulk_secs = time.perf_counter() - started
            outcome = check_bulk_items(response, pending)
            if outcome.auth_refused is not None:
                raise self._auth_error("bulk", outcome.auth_refused)
            with self._counting:
                self.docs_written += outcome.stored
            rejected += outcome.rejected
            pending, last_reason = outcome.retry, outcome.retry_reason
            if not pending:
                return rejected
        raise StoreUnavailableError(
            f"{len(pending)} of {len(chunk)} documents still refused after {self.max_attempts} attempts "
            f"(last: {last_reason})",
            retry_after_secs=self.retry_after_secs,
        )

    @contextmanager
    def _store_calls(self, what: str) -> Iterator[None]:
        """Translate the adapters' errors: no answer or a transient refusal -> StoreUnavailableError."""
        try:
            yield
        except StoreUnreachableError as error:
            raise StoreUnavailableError(f"{what}: store unreachable: {error}", self.retry_after_secs) from None
        except StoreRefusedError as error:
            if error.auth_failed:
                raise self._auth_error(what, error) from None
            if error.retryable:
                raise StoreUnavailableError(f"{what}: store refused: {error}", self.retry_after_secs) from None
            raise StoreError(f"{what}: store refused: {error}") from None

    def _auth_error(self, what: str, error: StoreRefusedError) -> StoreAuthError:
        need = "accept gatewatch's credentials" if error.status == 401 else "grant gatewatch's user this"
        return StoreAuthError(
            f"{self.where} does not {need} ({what}: {error.status} {error.error_type}: {error.reason[:300]}); "
            "check store.username / store.password / store.api_key and the role's privileges (README: Credentials)"
        )
