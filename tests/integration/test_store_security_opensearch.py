"""gatewatch against OpenSearch with its security plugin: TLS, a least-privilege user, refusals that stop.

The node (``secure_opensearch.py``) serves HTTPS only, with certificates the
fixture makes, and authenticates users of its internal database with basic auth.
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
from ingest.sinks.search import SearchSink
from secure_opensearch import PREFIX, REPO, SecureOpenSearch, start_secure_opensearch
from tests.test_redaction_sweep import PAN, PASSWORD, SECRETS, write_traffic


@pytest.fixture(scope="module")
def node() -> Iterator[SecureOpenSearch]:
    started = start_secure_opensearch()
    try:
        yield started
    finally:
        started.stop()


def store_config(node: SecureOpenSearch, **store: object) -> object:
    return parse_config({"store": {"index_prefix": PREFIX, "ca_certs": str(node.ca), **store}}).store


def test_least_privilege_user_over_tls_stores_redacted_records(
    node: SecureOpenSearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_TEST_STORE_PASSWORD", node.passwords["gw_writer"])
    files = write_traffic(tmp_path)
    prefix = f"{PREFIX}-lp"
    store = store_config(node, username="gw_writer", password_env="GW_TEST_STORE_PASSWORD", index_prefix=prefix)
    sink = SearchSink.connect("opensearch", node.url, store)
    try:
        stats = replay(load_config(files["config"]), [files["gateway"]], [files["app"]], [sink])
    finally:
        sink.close()
    node.request("POST", f"/{prefix}-*/_refresh")
    hits = node.request("POST", f"/{prefix}-*/_search?size=1000", {"query": {"match_all": {}}})["hits"]["hits"]
    by_kind: dict[str, int] = {}
    for hit in hits:
        kind = hit["_index"].removeprefix(f"{prefix}-").split("-")[0]
        by_kind[kind] = by_kind.get(kind, 0) + 1
    assert by_kind["events"] == stats.events and by_kind["deadletter"] == stats.dead_letters
    assert by_kind["transactions"] == stats.transactions and by_kind["alerts"] > 0
    text = json.dumps(hits)
    assert [secret for secret in SECRETS if secret in text] == []
    assert "last4=1111" in text and PAN not in text and PASSWORD not in text


def test_wrong_password_stops_at_connect_with_one_line(node: SecureOpenSearch) -> None:
    store = store_config(node, username="gw_writer", password="not-the-password")
    with pytest.raises(StoreAuthError, match="does not accept gatewatch's credentials") as caught:
        SearchSink.connect("opensearch", node.url, store, timeout_secs=10)
    assert "not-the-password" not in str(caught.value) and "\n" not in str(caught.value)


def test_user_that_may_not_write_stops_on_the_first_bulk(node: SecureOpenSearch) -> None:
    store = store_config(node, username="gw_reader", password=node.passwords["gw_reader"], index_prefix=f"{PREFIX}-ro")
    sink = SearchSink.connect("opensearch", node.url, store)  # health, templates and listing are allowed
    try:
        with pytest.raises(StoreAuthError, match="does not grant gatewatch's user this"):
            sink.write_documents("deadletter", [{"id": "d-1", "reason": "test"}])
    finally:
        sink.close()
    assert node.request("GET", f"/{PREFIX}-ro-*/_count")["count"] == 0


def test_certificate_not_verified_without_the_ca_is_a_setting_to_fix(node: SecureOpenSearch) -> None:
    store = store_config(node, username="gw_writer", password=node.passwords["gw_writer"]).model_copy(
        update={"ca_certs": None}
    )
    with pytest.raises(StoreError) as caught:
        SearchSink.connect("opensearch", node.url, store, timeout_secs=10)
    assert not isinstance(caught.value, StoreUnavailableError) and "store.ca_certs" in str(caught.value)
    assert node.passwords["gw_writer"] not in str(caught.value)


@pytest.mark.parametrize("password_ok", [True, False])
def test_replay_command_with_the_password_from_a_file(
    node: SecureOpenSearch, tmp_path: Path, password_ok: bool
) -> None:
    files = write_traffic(tmp_path)
    password = node.passwords["gw_writer"] if password_ok else "Wrong-password-123"
    (tmp_path / "password").write_text(password + "\n")
    config = json.loads(files["config"].read_text())
    config["store"] = {"index_prefix": f"{PREFIX}-cli", "ca_certs": str(node.ca), "username": "gw_writer",
                       "password_file": "password"}  # fmt: skip
    files["config"].write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "gatewatch.cli", "-v", "replay", "--config", str(files["config"]),
         "--gateway", str(files["gateway"]), "--app", str(files["app"]),
         "--alerts-out", str(tmp_path / "alerts.ndjson"),
         "--store", f"opensearch:{node.url}"],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert password not in output
    if password_ok:
        assert done.returncode == 0, output[-3000:]
        node.request("POST", f"/{PREFIX}-cli-*/_refresh")
        assert node.request("GET", f"/{PREFIX}-cli-events-*/_count")["count"] > 0
    else:
        assert done.returncode == 2 and "does not accept gatewatch's credentials" in output, output[-3000:]
        assert "Traceback" not in output
