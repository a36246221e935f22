"""The keyed hop's slim rows: what the keyed rules read crosses, nothing else; the older ``keyed`` v1 is still read."""

from __future__ import annotations

import msgspec
import pytest

from detectors.sample import app_event, gateway_event
from gatewatch.errors import WireError
from gatewatch.tasks.join import keyed_rows
from gatewatch.tasks.keyed import keyed_items
from gatewatch.wire import (
    KeyedMessage, KeyedRow, KeyedRowsMessage, KeyedTxn, decode_keyed_message, encode_keyed, keyed_event,
)  # fmt: skip
from ingest.codec import encode, pack_events
from ingest.records import Event

# Every field set, so that a field dropped or misplaced on either side shows.
FULL = gateway_event(
    3.25, request_id="r-1", method="POST", path="/v1/pay", protocol="HTTP/2", status=503,
    response_flags=("UF",), response_code_details="upstream_reset", bytes_received=10, bytes_sent=20,
    duration_ms=1.5, upstream_service_time_ms=1.0, upstream_host="10.0.0.9:8080", upstream_cluster="billing",
    route_name="pay", authority="api.example.com", user_agent="curl/8", forwarded_for="198.51.100.7",
    source_ip="198.51.100.7", peer_identity="spiffe://cluster.local/ns/a/sa/b", tls_version="TLSv1.3",
    user_id="u-1", org_id="o-1", action="pay", outcome="failure", level="error", message="boom", token_jti="j-1",
    token_sub="s-1", token_org="o-1", token_exp=1_767_229_200.0, token_iat=1_767_225_600.0,
    labels=(("k", "v"),), created=1_767_225_603.5,
)  # fmt: skip
KEYED_FIELDS = set(KeyedRow.__struct_fields__) - {"stream", "offset"}


def _projected(event: Event) -> Event:
    """``event`` with every field a KeyedRow does not carry back at its default."""
    defaults = {f.name: f.default for f in msgspec.structs.fields(Event) if f.name not in KEYED_FIELDS | {"origin"}}
    return msgspec.structs.replace(event, **defaults)


def test_a_keyed_row_carries_exactly_the_keyed_fields() -> None:
    streams, rows = keyed_rows([FULL])
    message = KeyedRowsMessage("gw-requests/0", 1, None, streams, rows, [1], [], [])  # type: ignore[arg-type]
    back = decode_keyed_message(encode_keyed(message))
    assert type(back) is KeyedRowsMessage
    event = keyed_event(back.events[0], back.streams[back.events[0].stream])
    assert event == _projected(FULL) and event.origin == FULL.origin
    assert event.token_exp == FULL.token_exp and event.peer_identity == FULL.peer_identity


def test_both_keyed_kinds_give_the_same_items() -> None:
    events = [gateway_event(i, request_id=f"r-{i}", status=401, source_ip="192.0.2.1") for i in range(3)]
    txn_events = [gateway_event(5, request_id="t", token_jti="j1", source_ip="192.0.2.2"),
                  app_event(5.1, request_id="t", token_jti="j1")]  # fmt: skip
    txns = [KeyedTxn("t", 1_767_225_640.5, 256, 1, 1)]
    streams, rows = keyed_rows(events + txn_events)
    new = KeyedRowsMessage("gw-requests/1", 7, None, streams, rows[:3], [1, 3, 2], txns, rows[3:])  # type: ignore[arg-type]
    old = KeyedMessage("gw-requests/1", 7, None, pack_events(events), [1, 3, 2], txns, pack_events(txn_events))
    got_new = keyed_items(decode_keyed_message(encode_keyed(new)))
    got_old = keyed_items(decode_keyed_message(encode_keyed(old)))
    assert got_new == got_old  # these events carry only keyed fields: the projection changes nothing
    assert [t.id for t, _, _ in got_new[1]] == [t.id for t, _, _ in got_old[1]]


def test_a_stream_index_out_of_range_is_undecodable() -> None:
    _, rows = keyed_rows([gateway_event(1, request_id="r")])
    bad = encode("keyed_rows", 1, ("gw-requests/0", 1, None, [], rows, [1], [], []))
    with pytest.raises(WireError) as error:
        keyed_items(decode_keyed_message(bad))
    assert error.value.reason == "undecodable"
