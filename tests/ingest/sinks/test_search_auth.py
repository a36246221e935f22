"""Store credentials: where they come from, that they are never printed, and that 401/403 stop at once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gatewatch.config import StoreConfig, load_config
from gatewatch.errors import ConfigError, StoreAuthError
from gatewatch.stores import open_store
from ingest.sinks import search
from ingest.sinks.base import Batch
from ingest.sinks.search_auth import StoreAuth, redact_url, split_userinfo, store_auth

from test_search_documents import ScriptedClient


def test_redact_url_hides_the_password_and_keeps_the_rest() -> None:
    assert redact_url("https://elastic:ch%40nge:me@es.local:9200/x") == "https://elastic:***@es.local:9200/x"
    assert redact_url("http://es:9200") == "http://es:9200"
    assert split_userinfo("https://gw:p%40ss@es:9200") == ("https://es:9200", "gw", "p@ss")


def test_credentials_from_env_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "password").write_text("s3cret-from-file\n")
    monkeypatch.setenv("GW_STORE_USER", "gatewatch")
    config = tmp_path / "gatewatch.yaml"
    config.write_text("store: {username_env: GW_STORE_USER, password_file: password, verify_certs: false}\n")
    url, auth = store_auth(load_config(config).store, "https://es:9200")  # the file is relative to the config
    assert (url, auth.username, auth.password) == ("https://es:9200", "gatewatch", "s3cret-from-file")
    assert auth.verify_certs is False
    assert "s3cret" not in repr(auth)
    assert auth.elasticsearch_kwargs()["basic_auth"] == ("gatewatch", "s3cret-from-file")

    monkeypatch.setenv("GW_STORE_KEY", "a2V5LWlkOmtleQ==")
    _, keyed = store_auth(StoreConfig(api_key_env="GW_STORE_KEY"), "http://es:9200")
    assert keyed.elasticsearch_kwargs()["api_key"] == "a2V5LWlkOmtleQ=="
    assert keyed.opensearch_kwargs()["headers"] == {"Authorization": "ApiKey a2V5LWlkOmtleQ=="}


def test_missing_sources_name_the_key_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"store.password_env: the environment variable GW_NOPE_X is not set"):
        store_auth(StoreConfig(username="u", password_env="GW_NOPE_X"), "http://es:9200")
    with pytest.raises(ConfigError, match=r"store.api_key_file: cannot read"):
        store_auth(StoreConfig(api_key_file=tmp_path / "absent"), "http://es:9200")
    with pytest.raises(ConfigError, match=r"store.ca_certs: .* is not a readable file"):
        search.make_client("elasticsearch", "https://es:9200", auth=StoreAuth(ca_certs=str(tmp_path / "ca.pem")))


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"password": "hunter2"}, "store.password needs store.username"),
        ({"username": "u", "password": "hunter2", "password_env": "X"}, "one way"),
        ({"api_key": "hunter2", "username": "u"}, "not both"),
        ({"client_key": "k.pem"}, "client_key needs store.client_cert"),
        ({"passwd": "hunter2"}, "store.passwd: unknown key"),
    ],
)
def test_bad_credential_settings_are_refused_without_echoing_them(store: dict[str, Any], message: str) -> None:
    from gatewatch.config import parse_config

    with pytest.raises(ConfigError, match=message) as caught:
        parse_config({"store": store})
    assert "hunter2" not in str(caught.value)


def test_url_credentials_still_work_but_warn_and_never_print(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        url, auth = store_auth(StoreConfig(), "https://gw:hunter2@es:9200")
    assert (url, auth.username, auth.password) == ("https://es:9200", "gw", "hunter2")
    assert "store_url_credentials" in caplog.text and "hunter2" not in caplog.text
    with pytest.raises(ConfigError) as caught:
        open_store("elastic:https://gw:hunter2@es:9200", load_config(None))
    assert "hunter2" not in str(caught.value)


def test_unreachable_store_error_carries_no_password() -> None:
    config = load_config(None)
    with pytest.raises(search.StoreUnavailableError) as caught:
        search.SearchSink.connect("elasticsearch", "http://gw:hunter2@127.0.0.1:1", config.store, timeout_secs=0.5)
    assert "hunter2" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)


class RefusingClient(ScriptedClient):
    def __init__(self, refusal: search.StoreRefusedError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refusal = refusal
        self.calls = 0

    def health(self) -> Mapping[str, Any]:
        self.calls += 1
        raise self.refusal


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_stop_with_one_clear_message_instead_of_retrying(status: int) -> None:
    client = RefusingClient(search.StoreRefusedError(status, "security_exception", "unable to authenticate user [gw]"))
    sink = search.SearchSink(client, "gw", sleep=lambda s: None)
    with pytest.raises(StoreAuthError, match=r"store.username / store.password / store.api_key") as caught:
        with sink._store_calls("connect"):
            client.health()
    assert client.calls == 1 and "\n" not in str(caught.value)


def test_bulk_refused_for_credentials_stops_at_once() -> None:
    sleeps: list[float] = []
    whole = ScriptedClient([search.StoreRefusedError(401, "security_exception", "missing authentication credentials")])
    with pytest.raises(StoreAuthError):
        search.SearchSink(whole, "gw", sleep=sleeps.append).write_documents("deadletter", [{"id": "d1"}])
    items = ScriptedClient([[403]])  # an item refused: "action [indices:data/write/bulk[s]] is unauthorized"
    with pytest.raises(StoreAuthError):
        search.SearchSink(items, "gw", sleep=sleeps.append).write_documents("deadletter", [{"id": "d1"}])
    assert sleeps == [] and len(whole.sent) == len(items.sent) == 1


def test_a_blocked_index_403_is_still_retried() -> None:
    client = ScriptedClient([search.StoreRefusedError(403, "cluster_block_exception", "index read-only"), None])
    sink = search.SearchSink(client, "gw", sleep=lambda s: None)
    sink.write(Batch())
    sink.write_documents("deadletter", [{"id": "d1"}])
    assert len(client.sent) == 2


def test_replay_against_an_unreachable_store_prints_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gatewatch.cli import main

    log = tmp_path / "app.log"
    log.write_text("")
    code = main(["replay", "--app", str(log), "--alerts-out", str(tmp_path / "a.ndjson"),
                 "--store", "elasticsearch:http://gw:hunter2@127.0.0.1:1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "hunter2" not in err and "127.0.0.1:1" in err
