"""gatewatch against Elasticsearch with security on: TLS, least-privilege users, refusals that stop.

The node (``secure_elasticsearch.py``) requires TLS with a client certificate,
authenticates users from its file realm and creates API keys (its ``.security``
index gets the analysis parts the test distribution leaves out from a small
plugin the fixture builds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewatch.config import load_config, parse_config
from gatewatch.errors import StoreAuthError, StoreError, StoreUnavailableError
from gatewatch.replay import replay
from ingest.sinks.base import Batch
from ingest.sinks.search import SearchSink
from secure_elasticsearch import PREFIX, REPO, WRITER_ROLE, SecureNode, start_secure_node
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


def _replay_cli(node: SecureNode, tmp_path: Path, store: dict[str, object], env: dict[str, str]) -> tuple[int, str]:
    """``gatewatch -v replay --store elasticsearch:URL`` over the secret-laden traffic; (exit code, all output)."""
    files = write_traffic(tmp_path)
    config = json.loads(files["config"].read_text())
    config["store"] = {"ca_certs": str(node.ca), "client_cert": str(node.client_cert),
                       "client_key": str(node.client_key), **store}  # fmt: skip
    files["config"].write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "gatewatch.cli", "-v", "replay", "--config", str(files["config"]),
         "--gateway", str(files["gateway"]), "--app", str(files["app"]),
         "--alerts-out", str(tmp_path / "alerts.ndjson"),
         "--store", f"elasticsearch:{node.url}"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _api_key(node: SecureNode, name: str) -> dict[str, str]:
    """A new API key limited to the privileges gatewatch needs (``encoded`` is what gatewatch is given)."""
    body = {"name": name, "role_descriptors": {"gatewatch_writer": WRITER_ROLE}}
    return node.request("POST", "/_security/api_key", body)  # type: ignore[no-any-return]


def test_replay_with_an_api_key_stores_everything_and_never_shows_it(node: SecureNode, tmp_path: Path) -> None:
    created = _api_key(node, "gatewatch-replay")
    key, secret_part = created["encoded"], created["api_key"]
    prefix = f"{PREFIX}-key"
    store = {"index_prefix": prefix, "api_key": key}
    code, output = _replay_cli(node, tmp_path, store, {})
    assert code == 0, output[-3000:]
    node.request("POST", f"/{prefix}-*/_refresh")
    counts = {kind: node.request("GET", f"/{prefix}-{kind}-*/_count")["count"]
              for kind in ("events", "transactions", "alerts", "deadletter")}  # fmt: skip
    lines = sum(len((tmp_path / name).read_bytes().splitlines()) for name in ("gateway.log", "app.log"))
    assert counts["events"] + counts["deadletter"] == lines and counts["transactions"] > 0 and counts["alerts"] > 0
    assert key not in output and secret_part not in output

    # The same key, invalidated: the run stops at connect with one line, still without the key.
    node.request("DELETE", "/_security/api_key", {"ids": [created["id"]]})
    again = tmp_path / "again"
    again.mkdir()
    code, output = _replay_cli(node, again, store, {})
    assert code == 2, output[-3000:]
    assert "does not accept gatewatch's credentials" in output and "Traceback" not in output
    assert key not in output and secret_part not in output


@pytest.mark.parametrize("given", ["env", "file"])
def test_api_key_from_env_or_file(
    node: SecureNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    key = _api_key(node, f"gatewatch-{given}")["encoded"]
    if given == "env":
        monkeypatch.setenv("GW_TEST_STORE_API_KEY", key)
        source: dict[str, object] = {"api_key_env": "GW_TEST_STORE_API_KEY"}
    else:
        (tmp_path / "api-key").write_text(key + "\n")
        source = {"api_key_file": str(tmp_path / "api-key")}
    prefix = f"{PREFIX}-key{given}"
    sink = SearchSink.connect("elasticsearch", node.url, store_config(node, tmp_path, index_prefix=prefix, **source))
    try:
        sink.write_documents("deadletter", [{"id": f"d-{i}", "reason": "test"} for i in range(3)])
    finally:
        sink.close()
    node.request("POST", f"/{prefix}-*/_refresh")
    assert node.request("GET", f"/{prefix}-deadletter-*/_count")["count"] == 3
