"""The partitioned tasks' messages and checkpoint bodies: typed round trips, poison refused, versions checked."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from detectors.base import Severity
from detectors.behaviour_outlier import FeatureRow
from detectors.sample import app_event, gateway_event
from gatewatch.errors import WireError
from gatewatch.wire import (
    AlertTaskState, EventsMessage, FindingRow, FindingsMessage, GatheredRows, IngestProgress, JoinState,
    KeyedMessage, KeyedState, KeyedTxn, decode_findings_message, decode_keyed_message, decode_requests_message,
    decode_task_state, encode_events, encode_findings, encode_ingest_progress, encode_keyed, encode_task_state,
)  # fmt: skip
from ingest.codec import encode, encode_event_state, encode_rows, encode_state, pack_events, unpack_events


class _Shell:
    """Runs a shell command when unpickled: what an attacker would write to an internal topic."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


EVENTS = [gateway_event(i, request_id=f"r-{i}", status=401, source_ip="192.0.2.1") for i in range(3)]
TXN_EVENTS = [gateway_event(5, request_id="t", token_jti="j1", source_ip="192.0.2.2"),
              app_event(5.1, request_id="t", token_jti="j1")]  # fmt: skip


def keyed_message() -> KeyedMessage:
    events, txn_events = EVENTS, TXN_EVENTS
    return KeyedMessage("gw-requests/1", 7, 1_767_225_604.0, pack_events(events), [1, 3, 2],
                        [KeyedTxn("t", 1_767_225_640.5, 256, 1, 1)], pack_events(txn_events))  # fmt: skip


def findings_message() -> FindingsMessage:
    row = FindingRow(1_767_225_605.0, "http_4xx_burst", Severity.MEDIUM, "source.ip", "192.0.2.1", 1_767_225_604.2,
                     "192.0.2.1 got 30 client errors", ("r-1", "r-2"), "auth_failures",
                     {"count": 30, "statuses": {"401": 30}}, None)  # fmt: skip
    feature = FeatureRow(1_767_225_600.0, "192.0.2.1", 40, 3, 30, 0, 4000, 40, 40, 1_767_225_650.0, ["r-1"])
    gathered = GatheredRows("behaviour_outlier", 1_767_225_900.0, msgspec.Raw(encode_state([feature])))
    return FindingsMessage("gw-keyed/0", 3, None, [row], [gathered], final=True)


def test_requests_messages_round_trip() -> None:
    events = [gateway_event(i, request_id=f"r-{i}") for i in range(3)]
    message = decode_requests_message(encode_events(1_700_000_000.5, "gw/0", encode_rows(events)))
    assert isinstance(message, EventsMessage) and message.stream == "gw/0" and len(message.events) == 3
    streams = {"gw/0": (10, 12, 1_767_225_600.5, 1_700_000_000.0), "app/3": (0, 0, None, None)}
    progress = decode_requests_message(encode_ingest_progress(1_700_000_001.0, streams))
    assert isinstance(progress, IngestProgress)
    assert {s: (p.position, p.end_offset, p.clock, p.last_wall) for s, p in progress.streams.items()} == streams


def test_keyed_and_findings_messages_round_trip() -> None:
    keyed = keyed_message()
    back = decode_keyed_message(encode_keyed(keyed))
    assert (back.source, back.seq, back.tick, back.event_masks, back.transactions, back.final) == (
        keyed.source, keyed.seq, keyed.tick, keyed.event_masks, keyed.transactions, False)
    assert unpack_events(back.events) == EVENTS
    assert unpack_events(back.txn_events) == TXN_EVENTS
    findings = findings_message()
    again = decode_findings_message(encode_findings(findings))
    assert again.findings == findings.findings and again.final
    assert msgspec.msgpack.decode(again.gathered[0].rows, type=list[FeatureRow]) == [
        msgspec.msgpack.decode(findings.gathered[0].rows, type=list[FeatureRow])[0]]


def test_task_states_round_trip() -> None:
    keyed = keyed_message()
    join = JoinState(12, msgspec.Raw(encode("pipeline", 1, [])), {"gw/0": 1.0}, {"gw/0": 2.0}, {}, {"keyed/0": 4},
                     {"keyed/0": 1_767_225_600.0}, False, ["gw/0", "app/0"])  # fmt: skip
    keyed_state = KeyedState(5, {"http_4xx_burst": msgspec.Raw(encode_state([[], 0.0]))}, 1_767_225_600.0,
                             encode_event_state(EVENTS), keyed.event_masks, keyed.transactions,
                             encode_event_state(TXN_EVENTS),
                             {"gw-requests/0": 9}, {"gw-requests/0": None}, [], 3, None)  # fmt: skip
    row = findings_message().findings[0]
    alert = AlertTaskState(8, msgspec.Raw(encode_state([[], [], 0.0])), {"version": 1}, None, [(row, "a1")],
                           findings_message().gathered, {"gw-keyed/0": 2}, {"gw-keyed/0": 5.0},
                           ["gw-keyed/0"])  # fmt: skip
    for state, version in ((join, 1), (keyed_state, 2), (alert, 1)):
        assert decode_task_state(encode_task_state(state))[0] == version
        back = decode_task_state(encode_task_state(state))[1]
        assert type(back) is type(state)
        assert encode_task_state(back) == encode_task_state(state)


POISON: list[Callable[[Path], bytes]] = [
    lambda tmp: pickle.dumps(_Shell(tmp / "ran")),
    lambda tmp: pickle.dumps(("keyed", 1, [_Shell(tmp / "ran")])),
    lambda tmp: encode("keyed", 1, (pickle.dumps(_Shell(tmp / "ran")),)),
]


@pytest.mark.parametrize("decoder", [decode_requests_message, decode_keyed_message, decode_findings_message,
                                     decode_task_state])  # fmt: skip
@pytest.mark.parametrize("poison", POISON)
def test_a_pickle_that_would_run_a_shell_decodes_to_wire_error_and_runs_nothing(
    tmp_path: Path, decoder: Callable[[bytes], object], poison: Callable[[Path], bytes]
) -> None:
    with pytest.raises(WireError) as error:
        decoder(poison(tmp_path))
    assert error.value.reason in {"undecodable", "unknown_kind"}
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("data", "decoder"),
    [
        (lambda: encode("progress", 1, (0.0, {"gw/0": (1, 1)})), decode_requests_message),  # serve's v1
        (lambda: encode("progress", 3, (0.0, {})), decode_requests_message),
        (lambda: encode("keyed", 2, encode_keyed(keyed_message())), decode_keyed_message),
        (lambda: encode("findings", 0, []), decode_findings_message),
        (lambda: encode("join_state", 2, []), decode_task_state),
        (lambda: encode("keyed_state", 3, []), decode_task_state),
        (lambda: encode("alert_state", 9, []), decode_task_state),
    ],
)
def test_an_unknown_version_is_refused(data: Callable[[], bytes], decoder: Callable[[bytes], object]) -> None:
    with pytest.raises(WireError) as error:
        decoder(data())
    assert error.value.reason == "unknown_version"


def test_out_of_range_values_do_not_decode() -> None:
    inf_tick = encode("keyed", 1, ("gw-requests/0", 1, float("inf"), pack_events([]), [], [], pack_events([])))
    negative_seq = encode("findings", 1, ("gw-keyed/0", -1, None, [], []))
    negative_mask = encode("keyed", 1, ("gw-requests/0", 1, None, pack_events([gateway_event(1)]), [-1], [],
                                        pack_events([])))  # fmt: skip
    for data, decoder in ((inf_tick, decode_keyed_message), (negative_seq, decode_findings_message),
                          (negative_mask, decode_keyed_message)):  # fmt: skip
        with pytest.raises(WireError) as error:
            decoder(data)
        assert error.value.reason == "undecodable"
