"""The search sink against real Elasticsearch 9 and OpenSearch 2 nodes (services/up.sh).

Every test runs on both flavors under its own index prefix (``gwtest-<uuid8>``)
and deletes its indices and templates afterwards. The test plumbing (counts,
fetches, cleanup) talks plain REST through httpx, so it does not lean on the
client adapters it is testing.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import orjson
import pytest

from detectors.alerts import AlertBook
from detectors.base import Finding, Severity
from detectors.sample import T0, app_event, gateway_event, transaction
from gatewatch.config import StoreConfig
from gatewatch.errors import StoreUnavailableError
from ingest.ecs import dead_letter_document, event_document, transaction_document
from ingest.records import Dataset, DeadLetter, Event, Origin, record_id
from ingest.sinks.base import Batch
from ingest.sinks.search import SearchSink, make_client
from schemas.templates import INDEX_KINDS

DAY = 86400.0


class Node:
    """A REST view of one node, scoped to one test's index prefix."""

    def __init__(self, flavor: str, url: str, prefix: str) -> None:
        self.flavor, self.url, self.prefix = flavor, url, prefix
        self.http = httpx.Client(base_url=url, timeout=30.0)

    def count(self, kind: str) -> int:
        response = self.http.get(f"/{self.prefix}-{kind}-*/_count")
        response.raise_for_status()
        return response.json()["count"]

    def search(self, kind: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.http.post(f"/{self.prefix}-{kind}-*/_search", json={"query": query, "size": 100})
        response.raise_for_status()
        return response.json()["hits"]["hits"]

    def source(self, kind: str, doc_id: str) -> dict[str, Any]:
        (hit,) = self.search(kind, {"ids": {"values": [doc_id]}})
        return hit["_source"]

    def indices(self) -> list[str]:
        response = self.http.get(f"/_cat/indices/{self.prefix}-*", params={"format": "json", "h": "index"})
        response.raise_for_status()
        return sorted(row["index"] for row in response.json())

    def cleanup(self) -> None:
        names = self.indices()
        if names:
            self.http.delete("/" + ",".join(names)).raise_for_status()
        for kind in INDEX_KINDS:
            self.http.delete(f"/_index_template/{self.prefix}-{kind}")
        self.http.close()


@pytest.fixture(params=["elasticsearch", "opensearch"])
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    url = request.getfixturevalue(f"{request.param}_url")
    node = Node(request.param, url, f"gwtest-{uuid.uuid4().hex[:8]}")
    yield node
    node.cleanup()


def connect(node: Node, retention_days: int = 3650, bulk_max_docs: int = 5000) -> SearchSink:
    # Sample events are dated 2026-01-01: a long retention keeps their indices alive.
    config = StoreConfig(index_prefix=node.prefix, retention_days=retention_days, bulk_max_docs=bulk_max_docs)
    return SearchSink.connect(node.flavor, node.url, config)


@pytest.fixture
def sink(node: Node) -> Iterator[SearchSink]:
    sink = connect(node)
    yield sink
    sink.close()


def sample_batch() -> Batch:
    gateway = gateway_event(
        1, request_id="req-1", method="POST", path="/v1/invoices", protocol="HTTP/1.1", status=201,
        source_ip="203.0.113.9", duration_ms=12.5, response_flags=("URX",), labels=(("x_tenant", "acme"),),
        token_exp=T0 + 3600,
    )
    app = app_event(1.2, request_id="req-1", status=201, source_ip="10.0.0.5", message="invoice created")
    book = AlertBook()
    alert = book.add(Finding("http_4xx_burst", Severity.MEDIUM, "ip", "203.0.113.9", T0 + 1, "many 4xx",
                             ("req-1",), "auth_failures", {"count": 20, "statuses": {"401": 20}, "peer": None}))
    letter = DeadLetter(Origin(Dataset.GATEWAY, "/var/log/envoy.log", 41), "invalid_utf8", "byte 4", b"GET \xff")
    return Batch(events=[gateway, app], transactions=[transaction("req-1", (gateway,), (app,))],
                 alerts={alert.id: alert}, dead_letters=[letter])


def counts(node: Node) -> dict[str, int]:
    return {kind: node.count(kind) for kind in INDEX_KINDS}


def test_templates_are_installed_and_new_indices_are_green(node: Node, sink: SearchSink) -> None:
    response = node.http.get(f"/_index_template/{node.prefix}-alerts")
    response.raise_for_status()
    (template,) = response.json()["index_templates"]
    assert template["index_template"]["index_patterns"] == [f"{node.prefix}-alerts-*"]
    sink.write(sample_batch())
    mapping = node.http.get(f"/{node.prefix}-alerts-*/_mapping").json()
    (index_mapping,) = mapping.values()
    flattened = "flattened" if node.flavor == "elasticsearch" else "flat_object"
    assert index_mapping["mappings"]["properties"]["details"]["type"] == flattened
    health = node.http.get(f"/_cluster/health/{node.prefix}-*", params={"level": "indices"}).json()
    assert {name: i["status"] for name, i in health["indices"].items()} == {
        f"{node.prefix}-{kind}-{day}": "green"
        for kind, day in [("events", "2026.01.01"), ("transactions", "2026.01.01"), ("alerts", "2026.01.01"),
                          ("deadletter", time.strftime("%Y.%m.%d", time.gmtime()))]
    }


def test_batch_is_stored_and_a_second_write_changes_nothing(node: Node, sink: SearchSink) -> None:
    batch = sample_batch()
    sink.write(batch)
    sink.refresh()
    assert counts(node) == {"events": 2, "transactions": 1, "alerts": 1, "deadletter": 1}

    gateway, app = batch.events
    assert node.source("events", gateway.id) == orjson.loads(orjson.dumps(event_document(gateway)))
    (txn,) = batch.transactions
    assert node.source("transactions", txn.id) == transaction_document(txn)
    (alert,) = batch.alerts.values()
    assert node.source("alerts", alert.id) == alert.to_document()
    (letter,) = batch.dead_letters
    stored_letter = node.source("deadletter", letter.id)
    assert {k: v for k, v in stored_letter.items() if k != "@timestamp"} == dead_letter_document(letter)
    # the mapping does its job: ip ranges, numbers, flattened labels and details, text
    assert len(node.search("events", {"term": {"source.ip": "203.0.113.0/24"}})) == 1
    assert len(node.search("events", {"range": {"http.response.status_code": {"gte": 200, "lt": 300}}})) == 2
    assert len(node.search("events", {"term": {"labels.x_tenant": "acme"}})) == 1
    assert len(node.search("events", {"match": {"message": "created"}})) == 1
    assert len(node.search("alerts", {"term": {"details.statuses.401": "20"}})) == 1

    sink.write(batch)
    sink.refresh()
    assert counts(node) == {"events": 2, "transactions": 1, "alerts": 1, "deadletter": 1}
    assert (sink.docs_written, sink.docs_rejected, sink.retries) == (10, 0, 0)


def test_a_grown_alert_replaces_the_old_one(node: Node, sink: SearchSink) -> None:
    book = AlertBook()
    first = book.add(Finding("token_replay", Severity.HIGH, "token", "jti-9", T0 + 5, "replayed", ("r1",)))
    sink.write(Batch(alerts={first.id: first}))
    grown = book.add(Finding("token_replay", Severity.CRITICAL, "token", "jti-9", T0 + 65, "replayed", ("r2",)))
    assert grown.id == first.id and grown.count == 2
    sink.write(Batch(alerts={grown.id: grown}))
    sink.refresh()
    assert node.count("alerts") == 1
    stored = node.source("alerts", first.id)
    assert (stored["count"], stored["severity"], stored["request_ids"]) == (2, "critical", ["r1", "r2"])
    assert stored["last_seen"] == "2026-01-01T00:01:05.000Z"


def test_a_document_the_mapping_refuses_is_dead_lettered(node: Node, sink: SearchSink) -> None:
    good = gateway_event(2, request_id="req-2", status=200)
    bad = {**event_document(gateway_event(3, request_id="req-3")), "http.response.status_code": "abc"}
    odd_ip = event_document(gateway_event(4, request_id="req-4", source_ip="unknown"))  # from a client's XFF
    sink.write_documents("events", [event_document(good), bad, odd_ip])
    sink.refresh()
    assert node.count("events") == 2  # the unparsable ip is kept (ignore_malformed), the bad status is not
    (hit,) = node.search("deadletter", {"term": {"reason": "store_rejected"}})
    letter = hit["_source"]
    assert letter["error_type"] in ("mapper_parsing_exception", "document_parsing_exception")
    assert "http.response.status_code" in letter["detail"]
    assert letter["document_id"] == bad["event.id"]
    assert letter["target_index"] == f"{node.prefix}-events-2026.01.01"
    assert letter["store_status"] == 400
    assert orjson.loads(letter["line"]) == bad
    assert (letter["stream"], letter["offset"]) == (bad["gatewatch.origin.stream"], bad["gatewatch.origin.offset"])
    assert (sink.docs_written, sink.docs_rejected) == (3, 1)
    # sending it again overwrites the same dead letter
    sink.write_documents("events", [bad])
    sink.refresh()
    assert node.count("deadletter") == 1


def test_a_flattened_value_over_the_term_limit_is_cut_not_the_document_refused(node: Node, sink: SearchSink) -> None:
    # Lucene refuses a term over 32,766 bytes, and with it the whole document: an alert for a request with a
    # 40 KB path was a store_rejected dead letter, missing from the alerts index reports and Kibana read.
    path = "/v1/" + "a" * 40_000
    finding = Finding("gateway_bypass", Severity.HIGH, "source.ip", "10.9.9.9", T0, "untrusted peer", ("r1",),
                      reason="untrusted_peer", details={"path": path, "peer": {"ua": "\U0001f600" * 9000}})  # fmt: skip
    alert = AlertBook().add(finding)
    event = gateway_event(1, request_id="r1", labels={"req.referer": "x" * 40_000, "req.via": "short"})
    sink.write(Batch(events=[event], alerts={alert.id: alert}))
    sink.refresh()
    assert counts(node) == {"events": 1, "transactions": 0, "alerts": 1, "deadletter": 0}
    details = node.source("alerts", alert.id)["details"]
    assert details["path"].startswith(path[:4096]) and details["path"].endswith("... [35908 more characters]")
    assert details["peer"]["ua"] == "\U0001f600" * 4096 + "... [4904 more characters]"
    labels = node.source("events", event.id)["labels"]
    assert labels["req.via"] == "short" and len(labels["req.referer"]) == 4096 + len("... [35904 more characters]")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_a_closed_port_is_store_unavailable(flavor: str) -> None:
    url = closed_port_url()
    with pytest.raises(StoreUnavailableError, match="unreachable") as caught:
        SearchSink.connect(flavor, url, StoreConfig(index_prefix="gwtest-closed"))
    assert caught.value.retry_after_secs > 0
    sink = SearchSink(make_client(flavor, url, timeout_secs=2.0), "gwtest-closed")
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        sink.write(sample_batch())
    sink.close()


def test_retention_deletes_indices_old_by_date_and_by_creation(node: Node) -> None:
    sink = connect(node, retention_days=30)
    try:
        if sink.retention_policy is not None:
            pytest.skip(f"this cluster deletes indices itself ({sink.retention_policy})")
        now = time.time()
        days = {"old": -40, "recent": -1, "ahead": 5}  # an event's date, in days from now
        noon = "%Y-%m-%dT12:00:00.000Z"
        sink.write_documents("events", [
            {**event_document(gateway_event(0, request_id=name)),
             "@timestamp": time.strftime(noon, time.gmtime(now + day * DAY))}
            for name, day in days.items()
        ])  # fmt: skip
        node.http.put(f"/{node.prefix}-notes", json={"settings": {"number_of_replicas": 0}}).raise_for_status()
        index = {name: f"{node.prefix}-events-{time.strftime('%Y.%m.%d', time.gmtime(now + day * DAY))}"
                 for name, day in days.items()}  # fmt: skip
        assert node.indices() == sorted([*index.values(), f"{node.prefix}-notes"])
        # Logs 40 days old, replayed now: kept, as ILM / ISM would keep them, for 30 days from now.
        assert sink.apply_retention(now) == []
        assert sink.apply_retention(now + 31 * DAY) == sorted([index["old"], index["recent"]])
        assert node.indices() == sorted([index["ahead"], f"{node.prefix}-notes"])
        assert sink.apply_retention(now + 31 * DAY) == []
    finally:
        sink.close()


def test_bulk_is_split_by_bulk_max_docs(node: Node) -> None:
    sink = connect(node, bulk_max_docs=7)
    try:
        events = [gateway_event(i * 0.01, request_id=f"r{i}", status=200) for i in range(50)]
        sink.write(Batch(events=events))
        sink.refresh()
        assert node.count("events") == 50
        assert sink.docs_written == 50
        assert sink.last_bulk_secs > 0
    finally:
        sink.close()


def test_an_analyst_reads_the_indices_as_dataframes(node: Node, sink: SearchSink) -> None:
    from gatewatch.notebook import open_store

    batch = sample_batch()
    sink.write(batch)
    sink.refresh()
    store = open_store(f"{node.flavor}:{node.url}", index_prefix=node.prefix)
    events = store.events()
    assert sorted(events["event.id"]) == sorted(e.id for e in batch.events)
    assert list(store.events(query={"term": {"source.ip": "203.0.113.9"}})["http.response.status_code"]) == [201]
    alerts = store.alerts()
    assert list(alerts["entity.value"]) == ["203.0.113.9"] and list(alerts["count"]) == [1]
    assert list(store.dead_letters()["reason"]) == ["invalid_utf8"]
    assert store.transactions(start="2027-01-01T00:00:00Z").empty
    paged = store.query("events", page_size=1)
    assert len(paged) == 2


def test_a_store_an_earlier_release_wrote_is_named_when_a_replay_opens_it(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade trial: files replayed into indices an earlier release wrote (records named by their path) were
    stored again beside them under new ids, and nothing said so."""

    def read_from(stream: str, ts: float) -> Event:
        origin = Origin(Dataset.GATEWAY, stream, 7)
        return msgspec.structs.replace(gateway_event(ts), origin=origin, id=record_id(origin))

    sink = connect(node)
    sink.write(Batch(events=[read_from(s, n) for n, s in enumerate(("gw-gateway/0", "file:0123456789abcdef",
                                                                      "http:batch-1", "follow:app"))]))  # fmt: skip
    sink.close()
    node.http.post(f"/{node.prefix}-*/_refresh").raise_for_status()
    with caplog.at_level("WARNING", logger="ingest.sinks.base"):
        connect(node).name_files({"file:0123456789abcdef": "/logs/a.log"})
    assert not ours(caplog)  # Kafka partitions, files, HTTP batches and serve's follow as this release names them
    sink = connect(node)
    sink.write(Batch(events=[read_from("/var/log/envoy/access.log", 4)]))
    sink.close()
    node.http.post(f"/{node.prefix}-*/_refresh").raise_for_status()  # as an earlier release's store long since is
    with caplog.at_level("WARNING", logger="ingest.sinks.base"):
        connect(node).close()  # serve, which reads no files, does not look
        assert not ours(caplog)
        connect(node).name_files({})
    (message,) = ours(caplog)
    assert "store_written_by_older_release" in message and "/var/log/envoy/access.log" in message


def ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What gatewatch logged (the OpenSearch client logs its own warnings)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith(("ingest", "gatewatch"))]
