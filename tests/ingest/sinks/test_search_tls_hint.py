"""A TLS failure with the store names its cause: an https:// URL for a node that answers plain HTTP says so."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from ingest.errors import StoreError
from ingest.sinks.search_clients import make_client


@pytest.fixture
def plain_http_port() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_https_to_a_plain_http_node_says_to_use_http(plain_http_port: int, flavor: str) -> None:
    # An operator trial got "TLS with the store failed (TLS error); check store.ca_certs ..." for a URL typo.
    client = make_client(flavor, f"https://127.0.0.1:{plain_http_port}", timeout_secs=5)
    with pytest.raises(StoreError) as refused:
        client.health()
    assert "answers in plain HTTP; give the URL as http://" in str(refused.value)
    assert "WRONG_VERSION_NUMBER" in str(refused.value)
