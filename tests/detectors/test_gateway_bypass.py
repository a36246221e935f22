"""gateway_bypass edges: trust by address only, one count per request, no double reports."""

from __future__ import annotations

from typing import Any

from detectors.alerts import AlertBook
from detectors.base import DetectorContext, Example, Finding
from detectors.gateway_bypass import GatewayBypass
from detectors.sample import T0, app_event, gateway_event, transaction
from detectors.trust import TrustPolicy
from ingest.records import Event, Transaction
from tests.detectors.test_examples import EXAMPLE_CONTEXT, run_example

GATEWAY_ID = "spiffe://billing.example/ns/edge/sa/ambassador"
# no identities: the gateway and internal callers are known by address only
BY_ADDRESS = DetectorContext(
    trust=TrustPolicy.build(gateway_networks=["10.0.0.0/24"], internal_callers=["10.3.0.0/16"])
)


def feed(
    records: list[Event | Transaction], context: DetectorContext = EXAMPLE_CONTEXT, **config: Any
) -> list[Finding]:
    detector = GatewayBypass(GatewayBypass.Config(**config), context)
    return run_example(detector, Example("test", tuple(records), frozenset()))


def served(ts: float, rid: str | None = "r-1", **fields: Any) -> Event:
    return app_event(ts, request_id=rid, method="GET", path="/v1/invoices", status=200, **fields)


def summary(findings: list[Finding]) -> list[tuple[str | None, str, str, tuple[str, ...]]]:
    return [(f.reason, f.entity_type, f.entity_value, f.request_ids) for f in findings]


def test_untrusted_peer_by_address_when_no_identity_is_logged() -> None:
    assert feed([served(10, source_ip="10.0.0.7")], BY_ADDRESS) == []
    assert summary(feed([served(10, source_ip="192.168.4.4")], BY_ADDRESS)) == [
        ("untrusted_peer", "source.ip", "192.168.4.4", ("r-1",))
    ]


def test_an_ipv4_mapped_peer_is_judged_by_its_ipv4_networks() -> None:
    """A store written before addresses were stored in one form holds ``::ffff:10.0.0.7`` as logged."""
    assert feed([served(10, source_ip="::ffff:10.0.0.7"), served(11, "r-2", source_ip="::ffff:10.3.1.1")],
                BY_ADDRESS) == []  # fmt: skip
    assert summary(feed([served(10, source_ip="::ffff:192.168.4.4")], BY_ADDRESS))[0][0] == "untrusted_peer"


def test_identity_decides_over_a_gateway_address() -> None:
    # a pod inside the gateway network presenting another workload's identity is not the gateway
    rogue = served(10, source_ip="10.0.0.7", peer_identity="spiffe://billing.example/ns/dev/sa/debug")
    assert summary(feed([rogue])) == [("untrusted_peer", "source.ip", "10.0.0.7", ("r-1",))]


def test_identity_only_peer_is_the_entity() -> None:
    debug = "spiffe://billing.example/ns/dev/sa/debug"
    findings = feed([served(10, peer_identity=debug)])
    assert summary(findings) == [("untrusted_peer", "peer.identity", debug, ("r-1",))]
    assert findings[0].severity == "high"


def test_a_request_counts_once_per_peer_however_many_lines_it_writes() -> None:
    lines = [served(10 + i * 0.1, source_ip="10.9.9.9") for i in range(5)]
    book = AlertBook()
    alerts = {a.id: a for f in feed(lines) for a in [book.add(f)]}
    assert [a.count for a in alerts.values()] == [1]
    # the same request id from a second untrusted peer is a second alert
    book = AlertBook()
    alerts = {a.id: a for f in feed([*lines, served(11, source_ip="10.9.9.10")]) for a in [book.add(f)]}
    assert sorted((a.entity_value, a.count) for a in alerts.values()) == [("10.9.9.10", 1), ("10.9.9.9", 1)]


def test_no_request_id_only_from_a_non_gateway_peer() -> None:
    findings = feed([served(10, rid=None, source_ip="10.9.9.9")])
    assert summary(findings) == [("no_request_id", "source.ip", "10.9.9.9", ())]
    # Envoy always sets x-request-id: a gateway peer's line without one is a logging gap
    assert feed([served(10, rid=None, source_ip="10.0.0.5", peer_identity=GATEWAY_ID)]) == []
    # peer not logged at all: the app itself is the entity
    assert summary(feed([served(10, rid=None)])) == [("no_request_id", "event.dataset", "billing.app", ())]


def test_lines_without_request_context_are_not_served_requests() -> None:
    quiet = app_event(10, level="info", message="cache warmed", source_ip="10.9.9.9")
    assert feed([quiet, transaction("r-1", app=(app_event(10, request_id="r-1", message="job ran"),))]) == []
    # a status alone is enough
    assert len(feed([app_event(10, request_id="r-1", status=500, source_ip="10.9.9.9")])) == 1


def test_app_only_transaction_from_untrusted_peer_is_reported_once() -> None:
    line = served(10, source_ip="10.9.9.9")
    assert [f.reason for f in feed([line, transaction("r-1", app=(line,))])] == ["untrusted_peer"]


def test_app_only_transaction_with_unlogged_peer_has_no_gateway_record() -> None:
    line = served(10)
    findings = feed([line, transaction("r-1", app=(line,))])
    assert summary(findings) == [("no_gateway_record", "event.dataset", "billing.app", ("r-1",))]


def test_app_only_transaction_with_gateway_peer_by_address() -> None:
    line = served(10, source_ip="10.0.0.5")
    findings = feed([line, transaction("r-1", app=(line,))], BY_ADDRESS)
    assert summary(findings) == [("no_gateway_record", "source.ip", "10.0.0.5", ("r-1",))]
    assert findings[0].ts == T0 + 10


def test_allowlisted_and_internal_are_skipped_on_both_paths() -> None:
    probe = app_event(10, request_id="r-1", method="GET", path="/readyz?full=1", status=200, source_ip="10.0.0.5")
    assert feed([probe, transaction("r-1", app=(probe,))], BY_ADDRESS) == []
    internal = served(10, source_ip="10.3.4.5")
    assert feed([internal, transaction("r-1", app=(internal,))], BY_ADDRESS) == []


def test_joined_and_gateway_only_are_quiet() -> None:
    edge = gateway_event(10, request_id="r-1", source_ip="203.0.113.7", status=200)
    proxied = served(10.05, source_ip="10.0.0.5")
    refused = gateway_event(11, request_id="r-2", source_ip="203.0.113.7", status=401)
    records = [edge, proxied, transaction("r-1", (edge,), (proxied,)), refused, transaction("r-2", (refused,))]
    assert feed(records, BY_ADDRESS) == []


def test_deterministic() -> None:
    records: list[Event | Transaction] = []
    for i in range(30):
        line = served(10 + i, rid=f"r-{i}" if i % 5 else None, source_ip=f"10.{i % 2}.0.{i % 7}")
        records.append(line)
        if line.request_id:
            records.append(transaction(line.request_id, app=(line,)))
    first, second = feed(records, BY_ADDRESS), feed(records, BY_ADDRESS)
    assert first == second
    assert {f.reason for f in first} == {"untrusted_peer", "no_request_id", "no_gateway_record"}


def test_without_trust_config_peers_are_not_judged_but_missing_gateway_records_are() -> None:
    from detectors.base import DetectorContext
    from detectors.gateway_bypass import GatewayBypass
    from detectors.sample import app_event, transaction
    from detectors.trust import TrustPolicy

    detector = GatewayBypass(GatewayBypass.Config(), DetectorContext(trust=TrustPolicy.build()))
    served = app_event(10, request_id="r-9", method="GET", path="/v1/invoices", status=200, source_ip="10.0.0.5")
    assert list(detector.observe_arrival(served)) == []
    (finding,) = detector.observe_transaction(transaction("r-9", app=(served,)))
    assert finding.reason == "no_gateway_record"


def test_a_peer_address_verdict_is_remembered_within_bounds(monkeypatch: Any) -> None:
    monkeypatch.setattr("detectors.trust.VERDICTS_REMEMBERED", 8)
    policy = TrustPolicy.build(gateway_networks=["10.0.0.0/24", "fd00::/64"], internal_callers=["10.9.0.0/16"])
    peers = {"10.0.0.10": True, "fd00::1": True, "10.0.1.10": False, "not-an-ip": False, "10.9.3.4": False}
    for _ in range(3):  # asked again and again, past the bound: the verdicts stay right
        for n in range(20):
            address = f"192.0.2.{n}"
            assert not policy.peer_is_gateway(app_event(T0, source_ip=address))
        for address, expected in peers.items():
            assert policy.peer_is_gateway(app_event(T0, source_ip=address)) is expected
            assert policy.is_internal_caller(app_event(T0, source_ip=address)) is (address == "10.9.3.4")
        assert len(policy._in_gateway_networks) <= 8 and len(policy._in_internal_networks) <= 8
    assert policy == TrustPolicy.build(gateway_networks=["10.0.0.0/24", "fd00::/64"], internal_callers=["10.9.0.0/16"])


def test_a_join_window_raised_for_clock_skew_widens_the_reused_id_slack() -> None:
    """A detection audit: with ``correlate.join_window_secs: 90`` (the README says the window covers clock skew), a
    Billing line 45 s after its gateway line was joined and still raised no_gateway_record, "its id was reused"."""
    edge = gateway_event(0, request_id="r-1", source_ip="198.51.100.5", status=200, duration_ms=20.0)
    skewed = transaction("r-1", (edge,), (served(45, source_ip="10.0.0.10"),))
    assert summary(feed([skewed], BY_ADDRESS)) == [("no_gateway_record", "source.ip", "10.0.0.10", ("r-1",))]
    wide = DetectorContext(trust=BY_ADDRESS.trust, join_window_secs=90.0)
    assert feed([skewed], wide) == []
    reused = transaction("r-1", (edge,), (served(95, source_ip="10.0.0.10"),))  # past even that window
    assert summary(feed([reused], wide)) == [("no_gateway_record", "source.ip", "10.0.0.10", ("r-1",))]


def test_the_merged_spans_find_the_lines_each_span_would() -> None:
    """The spans are merged and searched (a request id held open has thousands of attempts): the same lines come out
    as checking each line against each span, edges included."""
    import random

    from detectors.gateway_bypass import _outside_attempts

    rng = random.Random(7)
    for _ in range(2000):
        attempts = [gateway_event(rng.choice([0, 10, 30, rng.uniform(0, 300)]), request_id="r",
                                  duration_ms=rng.choice([0.0, 5.0, 40_000.0])) for _ in range(rng.randint(1, 6))]
        app = [app_event(rng.choice([-30, 40, 60, rng.uniform(-100, 400)]), request_id="r")
               for _ in range(rng.randint(1, 6))]  # fmt: skip
        slack = rng.choice([30.0, 90.0])
        spans = [(a.ts - slack, a.ts + a.duration_ms / 1000 + slack) for a in attempts]  # type: ignore[operator]
        assert _outside_attempts(app, attempts, slack) == [e for e in app if not any(s <= e.ts <= t for s, t in spans)]
