"""token_replay edges: lifetime boundaries, late transactions, eviction, NAT, caps, determinism."""

from __future__ import annotations

from detectors.base import DetectorContext, Example, Finding
from detectors.sample import T0, app_event, gateway_event, transaction
from detectors.token_replay import TokenReplay
from detectors.trust import TrustPolicy
from ingest.records import Event, Transaction
from tests.detectors.test_examples import EXAMPLE_CONTEXT, run_example

EXP = T0 + 600  # token_exp of the tokens below, unless a test says otherwise


def use(rid: str, ts: float, client: str, jti: str = "jti-1", exp: float | None = EXP) -> Transaction:
    return transaction(
        rid, gateway=(gateway_event(ts, request_id=rid, source_ip=client, status=200, token_jti=jti, token_exp=exp),)
    )


def feed(records: list[Event | Transaction], detector: TokenReplay | None = None) -> list[Finding]:
    detector = detector or TokenReplay(TokenReplay.Config(), EXAMPLE_CONTEXT)
    return run_example(detector, Example("test", tuple(records), frozenset()))


def test_second_address_fires_once_with_details() -> None:
    findings = feed([use("r-1", 10, "203.0.113.7"), use("r-2", 20, "198.51.100.23"), use("r-3", 30, "198.51.100.23")])
    assert len(findings) == 1
    f = findings[0]
    assert (f.rule, f.severity, f.entity_type, f.entity_value, f.ts) == (
        "token_replay", "high", "token.jti", "jti-1", T0 + 20,
    )  # fmt: skip
    assert f.request_ids == ("r-1", "r-2")
    assert f.details["addresses"] == ["203.0.113.7", "198.51.100.23"]
    assert f.details["first_seen"] == {
        "203.0.113.7": "2026-01-01T00:00:10.000Z",
        "198.51.100.23": "2026-01-01T00:00:20.000Z",
    }
    assert f.details["distinct_addresses"] == 2
    assert f.details["addresses_truncated"] is False


def test_each_new_address_beyond_threshold_fires() -> None:
    detector = TokenReplay(TokenReplay.Config(min_distinct_addresses=3), EXAMPLE_CONTEXT)
    clients = ["203.0.113.1", "203.0.113.2", "203.0.113.2", "203.0.113.1", "203.0.113.3", "203.0.113.4"]
    findings = feed([use(f"r-{i}", 10 + i, c) for i, c in enumerate(clients)], detector)
    assert [f.details["new_address"] for f in findings] == ["203.0.113.3", "203.0.113.4"]
    assert [f.details["distinct_addresses"] for f in findings] == [3, 4]


def test_nat_many_tokens_one_address_is_quiet() -> None:
    assert feed([use(f"r-{i}", 10 + i, "198.51.100.1", jti=f"jti-{i}") for i in range(50)]) == []


def test_use_exactly_at_exp_plus_skew_counts_and_just_after_does_not() -> None:
    at_boundary = feed([use("r-1", 10, "203.0.113.7"), use("r-2", EXP + 30 - T0, "198.51.100.23")])
    assert [f.entity_value for f in at_boundary] == ["jti-1"]
    past = feed([use("r-1", 10, "203.0.113.7"), use("r-2", EXP + 30.001 - T0, "198.51.100.23")])
    assert past == []


def test_unknown_exp_uses_default_lifetime_from_first_use() -> None:
    inside = feed([use("r-1", 0, "203.0.113.7", exp=None), use("r-2", 3600, "198.51.100.23", exp=None)])
    assert len(inside) == 1
    # after the default lifetime the token's window starts over at that use
    after = feed([use("r-1", 0, "203.0.113.7", exp=None), use("r-2", 3600.5, "198.51.100.23", exp=None)])
    assert after == []


def test_transaction_arriving_after_the_watermark_passed_exp_still_counts() -> None:
    # The correlator emits a transaction a join window after its records, so the
    # watermark may be past exp + skew when a use made before exp arrives.
    detector = TokenReplay(TokenReplay.Config(), EXAMPLE_CONTEXT)
    assert list(detector.observe_transaction(use("r-1", 590, "203.0.113.7"))) == []
    assert list(detector.advance(EXP + 30 + 100)) == []
    findings = list(detector.observe_transaction(use("r-2", 595, "198.51.100.23")))
    assert [f.entity_value for f in findings] == ["jti-1"]


def test_a_long_request_begun_before_exp_or_a_wide_join_window_is_still_judged() -> None:
    """A detection audit: a 200 s export from a second address, begun 10 s before exp, closed after the token was
    forgotten (exp + skew + 120 s); so did any use near exp under ``correlate.join_window_secs: 200``."""
    detector = TokenReplay(TokenReplay.Config(), EXAMPLE_CONTEXT)
    assert list(detector.observe_transaction(use("r-1", 500, "203.0.113.7"))) == []
    export = transaction("r-2", gateway=(gateway_event(590, request_id="r-2", source_ip="198.51.100.23", status=200,
                                                       token_jti="jti-1", token_exp=EXP, duration_ms=200_000.0),))
    assert list(detector.advance(590 + 200 + 30 + T0)) == []  # the watermark at the export's close
    assert [f.entity_value for f in detector.observe_transaction(export)] == ["jti-1"]

    wide = TokenReplay(TokenReplay.Config(), DetectorContext(trust=EXAMPLE_CONTEXT.trust, join_window_secs=200.0))
    assert list(wide.observe_transaction(use("r-1", 500, "203.0.113.7"))) == []
    assert list(wide.advance(EXP + 30 + 600 + 1)) == []  # past the allowance, not past the join window on top
    assert [f.entity_value for f in wide.observe_transaction(use("r-2", 595, "198.51.100.23"))] == ["jti-1"]


def test_eviction_after_lifetime_keeps_state_bounded() -> None:
    detector = TokenReplay(TokenReplay.Config(), EXAMPLE_CONTEXT)
    for i in range(1000):
        detector.observe_transaction(use(f"r-{i}", i * 0.1, "198.51.100.1", jti=f"jti-{i}", exp=T0 + 300))
    assert len(detector._tokens) == 1000
    # kept through exp + skew + join window + late-transaction allowance (300 + 30 + 30 + 600) ...
    detector.advance(T0 + 960)
    assert len(detector._tokens) == 1000
    # ... and gone after it, heap included
    detector.advance(T0 + 961)
    assert len(detector._tokens) == 0
    assert detector._expiry == []


def test_max_tracked_tokens_caps_state() -> None:
    detector = TokenReplay(TokenReplay.Config(max_tracked_tokens=10), EXAMPLE_CONTEXT)
    for i in range(25):
        detector.observe_transaction(use(f"r-{i}", i, "198.51.100.1", jti=f"jti-{i}", exp=T0 + 600 + i))
    assert len(detector._tokens) == 10
    assert set(detector._tokens) == {f"jti-{i}" for i in range(15, 25)}  # the latest-expiring survive


def test_past_the_address_cap_reuses_do_not_grow_the_alert_and_new_addresses_still_count() -> None:
    """A detection audit: past the cap every use of an address not kept counted as a new one (17 addresses and 5
    reuses made count 21). The first fix refused every new address past the cap, so a later wave of new addresses,
    in a later alert window, raised nothing. The oldest address now makes room for the newest."""
    detector = TokenReplay(TokenReplay.Config(max_addresses_per_token=3), EXAMPLE_CONTEXT)
    addresses = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.4", "203.0.113.4"]
    findings = feed([use(f"r-{i}", 10 + i, address) for i, address in enumerate(addresses)], detector)
    assert [f.details["distinct_addresses"] for f in findings] == [2, 3, 4]
    assert [f.details["addresses_truncated"] for f in findings] == [False, False, True]  # at the cap, none dropped
    assert findings[-1].details["addresses"] == ["203.0.113.2", "203.0.113.3", "203.0.113.4"]
    assert "4 distinct client addresses within its lifetime (…, 203.0.113.2" in findings[-1].summary
    exp = T0 + 3000
    later_wave = [use(f"w-{i}", 700 + i, f"198.51.100.{i}", exp=exp) for i in range(5)]  # the next alert window
    findings = feed([*(use(f"r-{i}", 10 + i, a, exp=exp) for i, a in enumerate(addresses)), *later_wave],
                    TokenReplay(TokenReplay.Config(max_addresses_per_token=3), EXAMPLE_CONTEXT))  # fmt: skip
    assert [f.ts for f in findings][3:] == [T0 + 700 + i for i in range(5)]


def test_app_only_peer_counts_unless_it_is_the_gateway_by_network() -> None:
    context = DetectorContext(trust=TrustPolicy.build(gateway_networks=["10.0.0.0/24"]))

    def app_only(rid: str, ts: float, peer: str) -> Transaction:
        return transaction(rid, app=(app_event(ts, request_id=rid, status=200, source_ip=peer, token_jti="jti-1"),))

    def detector() -> TokenReplay:
        return TokenReplay(TokenReplay.Config(), context)

    assert feed([use("r-1", 10, "203.0.113.7"), app_only("r-2", 20, "10.0.0.9")], detector()) == []
    loud = feed([use("r-1", 10, "203.0.113.7"), app_only("r-2", 20, "10.8.0.9")], detector())
    assert [f.details["new_address"] for f in loud] == ["10.8.0.9"]


def test_without_trust_an_app_peer_is_no_client() -> None:
    """With no gateway identity or network configured the app's peers are, most likely, the gateway's replicas:
    two of them made every token whose gateway lines were missing (or dead letters) look replayed."""
    def app_only(rid: str, ts: float, peer: str) -> Transaction:
        return transaction(rid, app=(app_event(ts, request_id=rid, status=200, source_ip=peer, token_jti="jti-1"),))

    untrusting = TokenReplay(TokenReplay.Config(), DetectorContext(trust=TrustPolicy.build()))
    assert feed([app_only("r-1", 10, "10.0.0.10"), app_only("r-2", 20, "10.0.0.11")], untrusting) == []
    untrusting = TokenReplay(TokenReplay.Config(), DetectorContext(trust=TrustPolicy.build()))
    assert len(feed([use("r-1", 10, "203.0.113.7"), use("r-2", 20, "198.51.100.9")], untrusting)) == 1


def test_joined_transaction_uses_the_gateway_client_not_the_app_peer() -> None:
    def joined(rid: str, ts: float, client: str) -> Transaction:
        return transaction(
            rid,
            gateway=(gateway_event(ts, request_id=rid, source_ip=client, token_jti="jti-1", token_exp=EXP),),
            app=(app_event(ts + 0.1, request_id=rid, source_ip="10.9.9.9", token_jti="jti-1"),),
        )

    assert feed([joined("r-1", 10, "203.0.113.7"), joined("r-2", 20, "203.0.113.7")]) == []


def test_deterministic() -> None:
    records: list[Event | Transaction] = [
        use(f"r-{i}", 10 + i, f"203.0.113.{i % 3}", jti=f"jti-{i % 4}") for i in range(40)
    ]
    first, second = feed(records), feed(records)
    assert first == second
    assert len(first) == 8  # each of 4 tokens sees 3 addresses: fires at the 2nd and 3rd


def test_a_known_client_is_judged_by_its_request_s_first_record_not_its_first_listed() -> None:
    """A request whose app line is inside the token's lifetime and gateway line past it is still inside."""
    end = 3600  # default lifetime from the first use at 0
    straddling = transaction(
        "r-2",
        gateway=(gateway_event(end + 0.5, request_id="r-2", source_ip="203.0.113.7", token_jti="jti-1"),),
        app=(app_event(end - 0.5, request_id="r-2", token_jti="jti-1"),),
    )
    detector = TokenReplay(TokenReplay.Config(), EXAMPLE_CONTEXT)
    assert list(detector.observe_transaction(use("r-1", 0, "203.0.113.7", exp=None))) == []
    assert list(detector.observe_transaction(straddling)) == []
    # still the first use's window: a second address within it alerts, listing the first use
    (finding,) = detector.observe_transaction(use("r-3", end - 0.2, "198.51.100.23", exp=None))
    assert finding.details["first_seen"]["203.0.113.7"] == "2026-01-01T00:00:00.000Z"


def test_every_attempt_under_one_request_id_is_judged() -> None:
    """A flood trial: a client setting its own X-Request-Id sent its own token, then a stolen one under the same id
    within the join window; only the first attempt's token was judged, so the stolen one never was."""
    victim = use("r-1", 10, "198.51.100.7", jti="jti-stolen")
    thief = {"request_id": "r-x", "source_ip": "192.0.2.66", "status": 200, "token_exp": EXP}
    shared = transaction("r-x", gateway=(gateway_event(60, token_jti="jti-own", **thief),
                                         gateway_event(61, token_jti="jti-stolen", **thief)))  # fmt: skip
    (finding,) = feed([victim, shared])
    assert (finding.entity_value, finding.ts, finding.details["new_address"]) == ("jti-stolen", T0 + 61, "192.0.2.66")
    assert TokenReplay(TokenReplay.Config(), EXAMPLE_CONTEXT).partition_keys(shared) == ("jti-own", "jti-stolen")
