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


def test_a_misspelt_status_operator_warns_that_both_burst_rules_are_blind() -> None:
    # A newcomer's trial: %RESPONSE_COD% loaded, every line parsed without a status, and the scanner's and the
    # credential stuffing's 4xx bursts and the payment route's 5xx burst went unalerted, without a word.
    text = '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)%" %RESPONSE_COD% "%REQ(X-REQUEST-ID)%"'
    for format, json_format, key in (  # noqa: A001
        (text, None, "gateway.format"),
        (None, {"time": "%START_TIME%", "rid": "%REQ(X-REQUEST-ID)%", "http": {"status": "%RESPONSE_COD%"}},
         "gateway.json_format"),
    ):  # fmt: skip
        warnings = check_gateway_format(format, json_format, runtime_time=False)
        assert any(w.startswith(f"{key} has no %RESPONSE_CODE%") and "http_4xx_burst and http_5xx_burst" in w
                   for w in warnings), warnings  # fmt: skip
        assert any("%RESPONSE_COD% is no operator gatewatch knows (did you mean %RESPONSE_CODE%?)" in w
                   for w in warnings), warnings  # fmt: skip


def test_envoys_own_operators_are_no_typos() -> None:
    fmt = ('[%START_TIME%] %RESPONSE_CODE% "%REQ(X-REQUEST-ID)%" %UPSTREAM_HOST_NAME% %REQUEST_DURATION% '
           "%RESPONSE_TX_DURATION% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %CONNECTION_ID%")
    assert check_gateway_format(fmt, None, runtime_time=False) == []
