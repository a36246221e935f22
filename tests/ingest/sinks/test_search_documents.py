"""The search sink without a server: index naming and dating, bulk item handling, retention.

Bulk responses are built as dicts and fed to ``check_bulk_items``; the sink's
retry loop runs against ``ScriptedClient``, an in-process stand-in for the
per-flavor client adapter that answers from a script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from detectors.alerts import AlertBook
from detectors.base import Finding, Severity
from detectors.sample import T0, app_event, gateway_event, transaction
from gatewatch.errors import ConfigError, StoreError, StoreUnavailableError
from ingest.ecs import event_document
from ingest.records import Dataset, DeadLetter, Origin
from ingest.sinks import search, search_clients
from ingest.sinks.base import Batch
from ingest.sinks.search import (
    BulkAction,
    Rejection,
    SearchSink,
    bulk_body,
    check_bulk_items,
    describe_error,
    expired_indices,
    index_name,
    is_content_rejection,
    rejection_dead_letter,
)

DAY = 86400.0
NOW = T0 + 10 * DAY + 3600  # 2026-01-11T01:00:00Z


def action(n: int, kind: str = "events") -> BulkAction:
    return BulkAction(kind, f"gw-{kind}-2026.01.01", f"id-{n}", orjson.dumps({"n": n}))


def item(status: int, error: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = {"_index": "gw-events-2026.01.01", "status": status}
    if error is not None:
        result["error"] = error
    return {"index": result}


MAPPER = {"type": "mapper_parsing_exception", "reason": "failed to parse field [status] of type [long]",
          "caused_by": {"type": "illegal_argument_exception", "reason": 'For input string: "abc"'}}


# -- naming and dating ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (T0, "gw-events-2026.01.01"),
        (T0 - 0.001, "gw-events-2025.12.31"),
        (T0 + DAY - 0.001, "gw-events-2026.01.01"),
        (T0 + 59 * DAY, "gw-events-2026.03.01"),
    ],
)
def test_index_name_is_the_utc_day(ts: float, expected: str) -> None:
    assert index_name("gw", "events", ts) == expected


def test_batch_documents_are_dated_and_keyed_per_kind() -> None:
    sink = SearchSink(ScriptedClient(), "gw", clock=lambda: NOW)
    late = gateway_event(DAY - 1, request_id="r1", status=200)  # 2026-01-01T23:59:59
    early_app = app_event(DAY + 5, request_id="r1", status=200)  # next day
    txn = transaction("r1", (late,), (early_app,))
    book = AlertBook()
    alert = book.add(Finding("token_replay", Severity.HIGH, "token", "jti-1", T0 + 2 * DAY, "replayed"))
    letter = DeadLetter(Origin(Dataset.APP, "app.log", 3), "invalid_json", "line 1", b"{oops")
    batch = Batch(events=[late, early_app], transactions=[txn], alerts={alert.id: alert}, dead_letters=[letter])
    actions = sink._batch_actions(batch, NOW)
    assert [(a.kind, a.index, a.id) for a in actions] == [
        ("events", "gw-events-2026.01.01", late.id),
        ("events", "gw-events-2026.01.02", early_app.id),
        ("transactions", "gw-transactions-2026.01.01", txn.id),  # by its first record
        ("alerts", "gw-alerts-2026.01.03", alert.id),  # by first_seen
        ("deadletter", "gw-deadletter-2026.01.11", letter.id),  # by ingestion (wall clock)
    ]
    assert orjson.loads(actions[0].source) == event_document(late)
    assert orjson.loads(actions[-1].source)["@timestamp"] == "2026-01-11T01:00:00.000Z"


def test_bulk_body_is_ndjson_of_index_actions() -> None:
    lines = bulk_body([action(1), action(2)]).split(b"\n")
    assert lines[-1] == b""
    assert [orjson.loads(line) for line in lines[:-1]] == [
        {"index": {"_index": "gw-events-2026.01.01", "_id": "id-1"}}, {"n": 1},
        {"index": {"_index": "gw-events-2026.01.01", "_id": "id-2"}}, {"n": 2},
    ]


def test_chunks_by_docs_and_by_bytes() -> None:
    actions = [action(n) for n in range(7)]
    assert [len(c) for c in search._chunks(actions, 3, 1 << 20)] == [3, 3, 1]
    big = [BulkAction("events", "i", str(n), b"x" * 1000) for n in range(5)]
    assert [len(c) for c in search._chunks(big, 100, 2500)] == [2, 2, 1]
    assert [len(c) for c in search._chunks(big[:1], 100, 10)] == [1]  # one oversized doc still goes
    assert list(search._chunks([], 10, 10)) == []


# -- per-item handling ---------------------------------------------------------------------


def test_all_items_stored() -> None:
    outcome = check_bulk_items({"errors": False, "items": [item(201), item(200)]}, [action(1), action(2)])
    assert (outcome.stored, outcome.retry, outcome.rejected) == (2, [], [])


def test_items_are_sorted_into_stored_retry_and_rejected() -> None:
    actions = [action(n) for n in range(8)]
    response = {
        "errors": True,
        "items": [
            item(201),
            item(429, {"type": "es_rejected_execution_exception", "reason": "queue full"}),
            item(400, MAPPER),
            item(503, {"type": "unavailable_shards_exception", "reason": "primary not active"}),
            item(403, {"type": "cluster_block_exception", "reason": "read-only"}),
            item(400, {"type": "document_parsing_exception", "reason": "bad"}),
            item(404, {"type": "index_not_found_exception", "reason": "no such index"}),
            item(200),
        ],
    }
    outcome = check_bulk_items(response, actions)
    assert outcome.stored == 2
    assert [a.id for a in outcome.retry] == ["id-1", "id-3", "id-4", "id-6"]
    assert [(r.action.id, r.status, r.error["type"]) for r in outcome.rejected] == [
        ("id-2", 400, "mapper_parsing_exception"),
        ("id-5", 400, "document_parsing_exception"),
    ]
    assert outcome.retry_reason == "429 es_rejected_execution_exception"


def test_errors_flag_is_not_trusted() -> None:
    outcome = check_bulk_items({"errors": False, "items": [item(400, MAPPER)]}, [action(1)])
    assert len(outcome.rejected) == 1


def test_item_without_status_or_with_a_string_error_is_not_lost() -> None:
    outcome = check_bulk_items({"items": [{"index": {}}, item(400, "bad value")]}, [action(1), action(2)])
    assert [a.id for a in outcome.retry] == ["id-1"]
    assert outcome.rejected[0].error == {"type": "unknown", "reason": "bad value"}


@pytest.mark.parametrize("response", [{"items": [item(201)]}, {"errors": False}, {"items": "x"}])
def test_item_count_mismatch_raises(response: dict[str, Any]) -> None:
    with pytest.raises(StoreError, match="items for 2 actions"):
        check_bulk_items(response, [action(1), action(2)])


@pytest.mark.parametrize(
    ("status", "error_type", "content"),
    [(400, "mapper_parsing_exception", True), (413, "", True), (400, "cluster_block_exception", False),
     (401, "security_exception", False), (429, "", False), (500, "", False), (409, "", False)],
)
def test_is_content_rejection(status: int, error_type: str, content: bool) -> None:
    assert is_content_rejection(status, error_type) is content


def test_describe_error_follows_the_cause_chain() -> None:
    assert describe_error(MAPPER) == (
        "mapper_parsing_exception: failed to parse field [status] of type [long]; "
        'caused by illegal_argument_exception: For input string: "abc"'
    )
    assert len(describe_error({"type": "x", "reason": "y" * 10_000})) == search.DETAIL_MAX_CHARS


def test_rejection_dead_letter_keeps_the_document_and_the_error() -> None:
    event = gateway_event(1, request_id="r1", status=200)
    source = orjson.dumps(event_document(event))
    rejection = Rejection(BulkAction("events", "gw-events-2026.01.01", event.id, source), 400, MAPPER)
    letter = rejection_dead_letter(rejection, NOW)
    assert letter["reason"] == "store_rejected"
    assert letter["detail"].startswith("mapper_parsing_exception: failed to parse field [status]")
    assert letter["error_type"] == "mapper_parsing_exception"
    assert letter["store_status"] == 400
    assert orjson.loads(letter["line"]) == event_document(event)
    assert (letter["dataset"], letter["stream"], letter["offset"]) == ("envoy.access", event.origin.stream,
                                                                      event.origin.offset)
    assert (letter["document_id"], letter["target_index"]) == (event.id, "gw-events-2026.01.01")
    assert letter["@timestamp"] == "2026-01-11T01:00:00.000Z"
    assert rejection_dead_letter(rejection, NOW + DAY)["id"] == letter["id"]  # deterministic
    alert_letter = rejection_dead_letter(Rejection(action(1, "alerts"), 400, MAPPER), NOW)
    assert alert_letter["dataset"] == "gatewatch.alert"
    assert "stream" not in alert_letter and "offset" not in alert_letter
    assert alert_letter["id"] != rejection_dead_letter(Rejection(action(1), 400, MAPPER), NOW)["id"]


# -- retention -----------------------------------------------------------------------------


def test_expired_indices_by_date_suffix() -> None:
    names = [
        # now - 30 days = 2025-12-12T01:00: a day that ended by then goes
        "gw-events-2025.12.10",
        "gw-deadletter-2025.12.11",  # ended 2025-12-12T00:00 -> goes
        "gw-alerts-2025.12.12",  # ends 2025-12-13T00:00 -> stays
        "gw-events-2026.01.11",
        "gw-test-events-2020.01.01",  # another prefix
        "gw-events-2020.13.40",  # not a date
        "gw-metrics-2020.01.01",  # not our kind
        "gw-events-2020.01.01-restored",
        "other-events-2020.01.01",
    ]
    created_long_ago = dict.fromkeys(names, NOW - 400 * 86400)
    assert expired_indices(created_long_ago, "gw", 30, NOW) == ["gw-deadletter-2025.12.11", "gw-events-2025.12.10"]
    assert expired_indices(created_long_ago, "gw", 1, NOW) == [
        "gw-alerts-2025.12.12", "gw-deadletter-2025.12.11", "gw-events-2025.12.10"]


def test_an_index_of_old_logs_replayed_lately_lives_retention_days_from_its_creation() -> None:
    # An analyst replays last quarter's logs to hunt in them: the next connect must not delete them.
    created = {"gw-events-2025.09.01": NOW - 29.9 * 86400, "gw-alerts-2025.09.01": NOW - 30 * 86400}
    assert expired_indices(created, "gw", 30, NOW) == ["gw-alerts-2025.09.01"]


# -- the sink against a scripted client ----------------------------------------------------


class ScriptedClient:
    """Answers bulk requests from ``script``: each entry is a list of item statuses, or an exception."""

    flavor = "elasticsearch"

    def __init__(self, script: Sequence[Any] = (), lifecycle: Any = False, indices: Sequence[str] = ()) -> None:
        self.script = list(script)
        self.lifecycle = lifecycle
        self.indices = list(indices)
        self.sent: list[list[dict[str, Any]]] = []
        self.templates: dict[str, Mapping[str, Any]] = {}
        self.deleted: list[str] = []

    def bulk(self, body: bytes) -> Mapping[str, Any]:
        lines = [orjson.loads(line) for line in body.splitlines()]
        pairs = zip(lines[::2], lines[1::2])
        docs = [{"_index": h["index"]["_index"], "_id": h["index"]["_id"], **d} for h, d in pairs]
        self.sent.append(docs)
        answer = self.script.pop(0) if self.script else None
        if isinstance(answer, Exception):
            raise answer
        statuses = answer or [201] * len(docs)
        return {"errors": True, "items": [item(s, MAPPER if s == 400 else {"type": "x"} if s >= 300 else None)
                                          for s in statuses]}

    def health(self) -> Mapping[str, Any]:
        return {"status": "green"}

    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        self.templates[name] = body

    def put_retention_policy(self, name: str, days: int, patterns: list[str]) -> None:
        if isinstance(self.lifecycle, Exception):
            raise self.lifecycle
        if not self.lifecycle:
            raise search.StoreRefusedError(400, "", f"no handler found for uri [/_ilm/policy/{name}] and method [PUT]")

    def list_indices(self, pattern: str) -> dict[str, float]:
        return dict.fromkeys(self.indices, NOW - 400 * 86400)  # every index made long ago

    def delete_indices(self, names: Sequence[str]) -> None:
        self.deleted += names

    def refresh(self, pattern: str) -> None:
        pass

    def close(self) -> None:
        pass


def scripted_sink(client: ScriptedClient, **kwargs: Any) -> tuple[SearchSink, list[float]]:
    sleeps: list[float] = []
    sink = SearchSink(client, "gw", retention_days=30, clock=lambda: NOW, sleep=sleeps.append, **kwargs)
    return sink, sleeps


def test_retryable_items_are_resent_with_backoff() -> None:
    client = ScriptedClient([[201, 429, 503], [429, 201], [201]])
    sink, sleeps = scripted_sink(client)
    sink.store([action(1), action(2), action(3)])
    assert [[d["_id"] for d in request] for request in client.sent] == [
        ["id-1", "id-2", "id-3"], ["id-2", "id-3"], ["id-2"]]
    assert sleeps == [0.25, 0.5]
    assert (sink.docs_written, sink.retries, sink.docs_rejected) == (3, 3, 0)


def test_retries_run_out_into_store_unavailable() -> None:
    client = ScriptedClient([[429, 201]] + [[429]] * 10)
    sink, sleeps = scripted_sink(client, max_attempts=5, max_backoff_secs=1.0)
    with pytest.raises(StoreUnavailableError, match="1 of 2 documents still refused after 5 attempts") as caught:
        sink.store([action(1), action(2)])
    assert caught.value.retry_after_secs == 5.0
    assert sleeps == [0.25, 0.5, 1.0, 1.0]
    assert len(client.sent) == 5


def test_whole_request_refusal_is_retried_or_raised() -> None:
    client = ScriptedClient([search.StoreRefusedError(429, "circuit_breaking_exception", "too big"), [201]])
    sink, _ = scripted_sink(client)
    sink.store([action(1)])
    assert sink.docs_written == 1 and len(client.sent) == 2
    client = ScriptedClient([search.StoreRefusedError(400, "parse_exception", "malformed bulk")])
    sink, _ = scripted_sink(client)
    with pytest.raises(StoreError, match="bulk request refused: 400 parse_exception"):
        sink.store([action(1)])


def test_unreachable_store_raises_at_once() -> None:
    client = ScriptedClient([search.StoreUnreachableError("Connection refused")])
    sink, sleeps = scripted_sink(client)
    with pytest.raises(StoreUnavailableError, match="Connection refused"):
        sink.store([action(1)])
    assert sleeps == []


def test_rejected_documents_become_store_rejected_dead_letters() -> None:
    client = ScriptedClient([[201, 400, 201]])
    sink, _ = scripted_sink(client)
    sink.store([action(1), action(2), action(3)])
    (letter,) = client.sent[1]
    assert letter["_index"] == "gw-deadletter-2026.01.11"
    assert letter["reason"] == "store_rejected"
    assert letter["document_id"] == "id-2"
    assert orjson.loads(letter["line"]) == {"n": 2}
    assert (sink.docs_written, sink.docs_rejected) == (3, 1)


def test_a_refused_dead_letter_raises() -> None:
    client = ScriptedClient([[400], [400]])
    sink, _ = scripted_sink(client)
    with pytest.raises(StoreError, match="dead letters were refused too"):
        sink.store([action(1)])


def test_install_with_a_lifecycle_api_attaches_the_policy() -> None:
    client = ScriptedClient(lifecycle=True, indices=["gw-events-2000.01.01"])
    sink, _ = scripted_sink(client)
    sink.install()
    assert sink.retention_policy == "ilm"
    assert set(client.templates) == {"gw-events", "gw-transactions", "gw-alerts", "gw-deadletter"}
    settings = client.templates["gw-events"]["template"]["settings"]["index"]
    assert settings["lifecycle"] == {"name": "gw-retention"}
    assert sink.apply_retention(NOW) == [] and client.deleted == []


def test_install_without_a_lifecycle_api_deletes_by_date() -> None:
    client = ScriptedClient(indices=["gw-events-2000.01.01", "gw-events-2026.01.10", "gw-other"])
    sink, _ = scripted_sink(client)
    sink.install()
    assert sink.retention_policy is None
    assert "lifecycle" not in client.templates["gw-alerts"]["template"]["settings"]["index"]
    assert sink.apply_retention(NOW) == ["gw-events-2000.01.01"]
    assert client.deleted == ["gw-events-2000.01.01"]


def test_a_refused_lifecycle_policy_falls_back_to_deleting(caplog: pytest.LogCaptureFixture) -> None:
    client = ScriptedClient(lifecycle=search.StoreRefusedError(403, "security_exception", "no manage_ilm privilege"))
    sink, _ = scripted_sink(client)
    sink.install()
    assert sink.retention_policy is None
    assert "search_retention_policy_refused" in caplog.text


def test_write_applies_retention_at_most_hourly() -> None:
    now = [NOW]
    client = ScriptedClient(indices=["gw-events-2000.01.01"])
    sink = SearchSink(client, "gw", clock=lambda: now[0], sleep=lambda s: None)
    sink.write(Batch())
    sink.write(Batch())
    assert client.deleted == ["gw-events-2000.01.01"]
    now[0] += search.RETENTION_CHECK_SECS
    sink.write(Batch())
    assert client.deleted == ["gw-events-2000.01.01"] * 2


def test_write_documents_keys_and_dates_raw_documents() -> None:
    client = ScriptedClient()
    sink, _ = scripted_sink(client)
    sink.write_documents("events", [{"@timestamp": "2026-01-02T03:04:05.000Z", "event.id": "e1"}])
    sink.write_documents("alerts", [{"id": "a1", "@timestamp": "2026-01-05T00:00:00.000Z",
                                     "first_seen": "2026-01-05T00:00:00.000Z"}])
    sink.write_documents("deadletter", [{"id": "d1", "reason": "invalid_json"}])
    assert [(d["_index"], d["_id"]) for request in client.sent for d in request] == [
        ("gw-events-2026.01.02", "e1"), ("gw-alerts-2026.01.05", "a1"), ("gw-deadletter-2026.01.11", "d1")]
    with pytest.raises(ValueError, match="unknown index kind"):
        sink.write_documents("logs", [])


@pytest.mark.parametrize("prefix", ["", "GW", "gw*", "-gw", "gw,other", "gw events"])
def test_invalid_prefix_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError, match="store.index_prefix"):
        SearchSink(ScriptedClient(), prefix)


def test_unknown_store_kind() -> None:
    with pytest.raises(ConfigError, match="not one of elasticsearch, opensearch"):
        search_clients.make_client("solr", "http://127.0.0.1:1")


# -- lifecycle capability checks of the two adapters ---------------------------------------


class StubISM:
    """The ``plugins.index_management`` namespace of an opensearch-py client."""

    def __init__(self, current: Any) -> None:
        self.current = current
        self.put: tuple[str, dict[str, Any], dict[str, Any]] | None = None

    def get_policy(self, policy: str) -> Any:
        if isinstance(self.current, Exception):
            raise self.current
        return self.current

    def put_policy(self, policy: str, body: dict[str, Any], params: dict[str, Any]) -> None:
        self.put = (policy, body, params)


def opensearch_adapter(ism: StubISM) -> Any:
    from types import SimpleNamespace

    adapter = object.__new__(search_clients._OpenSearchClient)
    adapter._os = SimpleNamespace(plugins=SimpleNamespace(index_management=ism))
    return adapter


def test_ism_missing_means_the_sink_deletes() -> None:
    from opensearchpy.exceptions import RequestError

    text = "no handler found for uri [/_plugins/_ism/policies/gw-retention] and method [GET]"
    ism = StubISM(RequestError(400, text, {"error": text}))
    with pytest.raises(search.StoreRefusedError) as caught:
        opensearch_adapter(ism).put_retention_policy("gw-retention", 30, ["gw-events-*"])
    assert caught.value.api_missing
    assert ism.put is None


def test_ism_policy_is_created_then_updated_with_its_version() -> None:
    from opensearchpy.exceptions import NotFoundError

    not_found = {"error": {"type": "status_exception", "reason": "Policy not found"}, "status": 404}
    ism = StubISM(NotFoundError(404, "status_exception", not_found))
    opensearch_adapter(ism).put_retention_policy("gw-retention", 30, ["gw-events-*"])
    assert ism.put is not None
    name, body, params = ism.put
    assert (name, params) == ("gw-retention", {})
    assert body["policy"]["ism_template"] == [{"index_patterns": ["gw-events-*"], "priority": 100}]
    assert body["policy"]["states"][0]["transitions"][0]["conditions"] == {"min_index_age": "30d"}
    ism = StubISM({"_id": "gw-retention", "_seq_no": 7, "_primary_term": 2, "policy": {}})
    opensearch_adapter(ism).put_retention_policy("gw-retention", 30, ["gw-events-*"])
    assert ism.put is not None and ism.put[2] == {"if_seq_no": 7, "if_primary_term": 2}


def test_ilm_missing_means_the_sink_deletes() -> None:
    from types import SimpleNamespace

    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import BadRequestError

    text = "no handler found for uri [/_ilm/policy/gw-retention] and method [PUT]"
    meta = ApiResponseMeta(400, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "127.0.0.1", 9200))

    def put_lifecycle(name: str, policy: dict[str, Any]) -> None:
        raise BadRequestError(text, meta, {"error": text})

    adapter = object.__new__(search_clients._ElasticsearchClient)
    adapter._es = SimpleNamespace(ilm=SimpleNamespace(put_lifecycle=put_lifecycle))
    with pytest.raises(search.StoreRefusedError) as caught:
        adapter.put_retention_policy("gw-retention", 30, ["gw-events-*"])
    assert caught.value.api_missing and caught.value.status == 400


@pytest.mark.parametrize("url", ["127.0.0.1:9200", "localhost", "ftp://host:21"])
def test_store_url_needs_a_scheme(url: str) -> None:
    with pytest.raises(ConfigError, match="needs an http:// or https:// URL"):
        search_clients.make_client("opensearch", url)


def test_documents_with_odd_values_still_serialize() -> None:
    assert orjson.loads(search._dumps({"details": {401: 3, "at": Severity.HIGH}, "t": (1, 2)})) == {
        "details": {"401": 3, "at": "high"}, "t": [1, 2]}
