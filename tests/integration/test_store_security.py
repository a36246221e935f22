"""gatewatch against Elasticsearch with security on: TLS, least-privilege users, refusals that stop.

The node (``secure_elasticsearch.py``) requires TLS with a client certificate and
authenticates users from its file realm. Limit of the test distribution: it
lacks the ``analysis-common`` module the ``.security`` index needs, so API keys
cannot be *created* on it; an API key is still sent (and refused with 401).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewatch.config import load_config, parse_config
from gatewatch.errors import StoreAuthError, StoreError, StoreUnavailableError
from gatewatch.replay import replay
from ingest.sinks.base import Batch
from ingest.sinks.search import SearchSink
from secure_elasticsearch import PREFIX, SecureNode, start_secure_node
from tests.test_redaction_sweep import PAN, PASSWORD, SECRETS, write_traffic


@pytest.fixture(scope="module")
def node() -> Iterator[SecureNode]:
    started = start_secure_node()
    try:
        yield started
    finally:
        started.stop()


def store_config(node: SecureNode, tmp_path: Path, **store: object) -> object:
    settings = {"index_prefix": PREFIX, "ca_certs": str(node.ca), "client_cert": str(node.client_cert),
                "client_key": str(node.client_key), **store}  # fmt: skip
    return parse_config({"store": settings}).store


def test_least_privilege_user_over_tls_stores_redacted_records(
    node: SecureNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_TEST_STORE_PASSWORD", node.passwords["gw_writer"])
    files = write_traffic(tmp_path)
    config = load_config(files["config"])
    store = store_config(node, tmp_path, username="gw_writer", password_env="GW_TEST_STORE_PASSWORD")
    sink = SearchSink.connect("elasticsearch", node.url, store)
    try:
        stats = replay(config, [files["gateway"]], [files["app"]], [sink])
    finally:
        sink.close()
    node.request("POST", f"/{PREFIX}-*/_refresh")
    hits = node.request("POST", f"/{PREFIX}-*/_search?size=1000", {"query": {"match_all": {}}})["hits"]["hits"]
    kinds = {hit["_index"].split("-")[1] for hit in hits}
    assert kinds == {"events", "transactions", "alerts", "deadletter"}
    assert len([h for h in hits if "-events-" in h["_index"]]) == stats.events
    text = json.dumps(hits)
    assert [secret for secret in SECRETS if secret in text] == []
    assert "last4=1111" in text and "jti=tok-42" in text and PAN not in text and PASSWORD not in text


def test_wrong_password_stops_at_connect_with_one_line(node: SecureNode, tmp_path: Path) -> None:
    store = store_config(node, tmp_path, username="gw_writer", password="not-the-password")
    with pytest.raises(StoreAuthError, match="does not accept gatewatch's credentials") as caught:
        SearchSink.connect("elasticsearch", node.url, store, timeout_secs=10)
    assert "not-the-password" not in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_api_key_is_refused(node: SecureNode, tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("Z3c6bm90LWEta2V5\n")
    with pytest.raises(StoreAuthError, match="401"):
        SearchSink.connect("elasticsearch", node.url, store_config(node, tmp_path, api_key_file=str(key_file)))


def test_user_that_may_not_write_stops_on_the_first_bulk(node: SecureNode, tmp_path: Path) -> None:
    # Its own prefix: the retention pass at connect finds none of the writer's old indices to delete.
    store = store_config(node, tmp_path, username="gw_reader", password=node.passwords["gw_reader"],
                         index_prefix=f"{PREFIX}-ro")  # fmt: skip
    sink = SearchSink.connect("elasticsearch", node.url, store)  # health, templates and listing are allowed
    try:
        with pytest.raises(StoreAuthError, match="does not grant gatewatch's user this"):
            sink.write_documents("deadletter", [{"id": "d-1", "reason": "test"}])
    finally:
        sink.close()


@pytest.mark.parametrize("missing", ["ca_certs", "client_cert"])
def test_tls_needs_the_ca_and_the_client_certificate(node: SecureNode, tmp_path: Path, missing: str) -> None:
    store = store_config(node, tmp_path, username="gw_writer", password=node.passwords["gw_writer"])
    store = store.model_copy(update={missing: None, **({"client_key": None} if missing == "client_cert" else {})})
    with pytest.raises(StoreError) as caught:
        SearchSink.connect("elasticsearch", node.url, store, timeout_secs=10)
    assert node.passwords["gw_writer"] not in str(caught.value)
    if missing == "ca_certs":  # the node's certificate cannot be verified: a setting to fix, not an outage
        assert not isinstance(caught.value, StoreUnavailableError) and "store.ca_certs" in str(caught.value)


def test_nothing_is_written_without_credentials(node: SecureNode, tmp_path: Path) -> None:
    with pytest.raises(StoreAuthError):
        SearchSink.connect("elasticsearch", node.url, store_config(node, tmp_path)).write(Batch())
