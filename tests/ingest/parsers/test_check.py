"""The gateway format checked at load: the warnings a format that compiles can still earn."""

from __future__ import annotations

import pytest

from ingest.parsers.check import check_gateway_format

NO_REQUEST_ID_TEXT = '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)%" %RESPONSE_CODE% "%REQ(:AUTHORITY)%"'


def _request_id_warnings(format: str | None, json_format: dict[str, object] | None) -> list[str]:  # noqa: A002
    return [w for w in check_gateway_format(format, json_format, runtime_time=False) if "X-REQUEST-ID" in w]


@pytest.mark.parametrize(
    ("format", "json_format", "key"),
    [
        (NO_REQUEST_ID_TEXT, None, "gateway.format"),
        (None, {"time": "%START_TIME%", "id": "%REQ(X-TENANT-ID)%"}, "gateway.json_format"),
        (None, {"time": "%START_TIME%", "http": {"request_id": "%STREAM_ID%"}}, "gateway.json_format"),
    ],
)
def test_a_format_without_the_request_id_warns_that_every_request_will_be_a_bypass(
    format: str | None, json_format: dict[str, object] | None, key: str  # noqa: A002
) -> None:
    # Without the id no gateway line joins Billing's: every request Billing serves looks unseen by the gateway.
    [warning] = _request_id_warnings(format, json_format)
    assert warning.startswith(f"{key} has no %REQ(X-REQUEST-ID)%") and "gateway_bypass" in warning


@pytest.mark.parametrize(
    ("format", "json_format"),
    [
        (None, None),  # Envoy's default format
        (NO_REQUEST_ID_TEXT + ' "%REQ(X-REQUEST-ID)%"', None),
        (NO_REQUEST_ID_TEXT + ' "%REQUEST_HEADER(x-request-id)%"', None),
        (None, {"time": "%START_TIME%", "http": {"request_id": "%REQ(X-REQUEST-ID)%"}}),
    ],
)
def test_a_format_with_the_request_id_does_not_warn(
    format: str | None, json_format: dict[str, object] | None  # noqa: A002
) -> None:
    assert _request_id_warnings(format, json_format) == []
