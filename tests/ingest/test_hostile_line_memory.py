"""A long line costs memory in proportion to its length, whatever it holds.

A regex that saves a backtracking point per character of a value held ~600 bytes of state per
byte: one 1 MiB gateway line whose quoted header was full of escaped quotes (legal, inside
``max_line_bytes``) took ~1.2 GB while it was parsed or its dead letter redacted, enough to kill
a service in a container and to do it again from the same Kafka offset after each restart.
"""

from __future__ import annotations

import tracemalloc

import pytest

from gatewatch.config import GatewatchConfig
from gatewatch.demo.render import DEMO_TEXT_FORMAT
from gatewatch.topology import build_parsers, parse_records
from ingest.parsers.envoy_format import ENVOY_DEFAULT_FORMAT
from ingest.records import Dataset, Origin, RawRecord

DEMO_LINE = (
    'ACCESS [2026-03-02T09:00:00.960Z] "POST /v1/charges HTTP/2" 200 - 665 836 146 145 "203.0.113.77" '
    '"curl/8.5.0" "998b5ccd-d242-435d-bb99-b34905825407" "api.billing.example" "10.1.0.20:8080" '
    'billing_charges cluster_billing_default 203.0.113.77:47721 "-" TLSv1.3 "via_upstream" '
    "jti=b9f3aaf8-1223-43c2-aa5f-65e824a75010 sub=u-1925 org=org-7 exp=1772442891"
)
DEFAULT_LINE = (
    '[2026-03-02T09:00:00.960Z] "POST /v1/charges HTTP/2" 200 - 665 836 146 145 "203.0.113.77" '
    '"curl/8.5.0" "998b5ccd-d242-435d-bb99-b34905825407" "api.billing.example" "10.1.0.20:8080"'
)
PAYLOADS = {
    "escaped quotes": '\\"',
    "quotes": '"',
    "backslashes": "\\",
    "letters": "A",
}
LIMIT = 1 << 20


def peak_bytes(fmt: str, line: str) -> int:
    config = GatewatchConfig.model_validate({"gateway": {"format": fmt}})
    parsers = build_parsers(config)
    record = RawRecord(Origin(Dataset.GATEWAY, "s", 0), line.encode()[: LIMIT + 1])
    tracemalloc.start()
    try:
        parse_records(parsers, [record])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
@pytest.mark.parametrize(
    "fmt, line", [(DEMO_TEXT_FORMAT, DEMO_LINE), (ENVOY_DEFAULT_FORMAT, DEFAULT_LINE)], ids=["demo", "default"]
)
@pytest.mark.parametrize("size", [LIMIT // 2, 2 * LIMIT], ids=["inside the limit", "oversized"])
def test_a_long_quoted_header_costs_a_few_times_its_line(fmt: str, line: str, payload: str, size: int) -> None:
    hostile = line.replace('"curl/8.5.0"', '"' + payload * (size // len(payload)) + '"')
    assert peak_bytes(fmt, hostile) < 16 * min(len(hostile), LIMIT + 1)
