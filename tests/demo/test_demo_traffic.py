"""The generator: deterministic, in delivery order, and every injection is really in the records."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import islice

import orjson
import pytest
from demo_runs import RUN, Run, epoch

from gatewatch.demo import GATEWAY_OPERATORS, RULES, generate, injections, scenario
from gatewatch.demo.plan import NO_REQUEST_ID_IP, ROGUE_PEER_IP, SCANNER_IP, SILENT_POD_IP, STUFFING_IP
from gatewatch.demo.render import JWT_EXP, JWT_JTI, JWT_SUB
from gatewatch.demo.world import (
    APP_CLOCK_SKEW_SECS,
    GATEWAY_IDENTITY,
    KUBELET_IP,
    NAT_IP,
    RECONCILER_IDENTITY,
    RECONCILER_IP,
)
from gatewatch.errors import ConfigError

RID = "REQ(X-REQUEST-ID)"
IP = "REQ(X-FORWARDED-FOR)"


def _injection(run: Run, rule: str, entity_type: str | None = None):
    found = [i for i in run.plan.expected(rule) if entity_type is None or i.entity_type == entity_type]
    assert len(found) == 1, found
    return found[0]


def _look_alike(run: Run, rule: str, entity_type: str):
    found = [a for a in run.plan.benign(rule) if a.entity_type == entity_type]
    assert found, f"no {rule} look-alike of type {entity_type}"
    return found


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_records() -> None:
    args = {"seed": 3, "duration_secs": 600.0, "requests_per_sec": 5.0}
    first = orjson.dumps(list(generate(**args)))
    assert first == orjson.dumps(list(generate(**args)))
    assert first != orjson.dumps(list(generate(**{**args, "seed": 4})))


def test_scenario_is_deterministic_and_matches_injections() -> None:
    assert scenario(seed=5) == scenario(seed=5)
    assert scenario(seed=5).injections == injections(seed=5)
    assert scenario(seed=5).injections != scenario(seed=6).injections


def test_generate_is_lazy() -> None:
    # A day at 1,000 req/s must not be built up front: the first records come at once.
    first = list(islice(generate(duration_secs=86_400.0, requests_per_sec=1000.0), 1000))
    assert len(first) == 1000


def test_too_short_for_attacks() -> None:
    with pytest.raises(ConfigError, match="--minutes 10"):
        scenario(duration_secs=300.0)
    assert list(islice(generate(duration_secs=60.0, attacks=False), 10))


# -- shape and order --------------------------------------------------------------------------------


def test_gateway_records_carry_every_operator(run: Run) -> None:
    for record in islice(run.gateway, 2000):
        assert tuple(record) == GATEWAY_OPERATORS
        assert record["START_TIME"].endswith("Z") and len(record["START_TIME"]) == 24


def test_gateway_stream_in_start_time_order(run: Run) -> None:
    times = [r["START_TIME"] for r in run.gateway]
    assert times == sorted(times)
    assert times[0] >= "2026-03-02T09:00:00.000Z"


def test_app_stream_out_of_order_only_by_late_delivery(run: Run) -> None:
    newest = float("-inf")
    late = 0
    for record in run.app:
        ts = epoch(record["ts"])
        if ts < newest:
            late += 1
            assert newest - ts <= 60.0, record
        newest = max(newest, ts)
    assert 0.01 <= late / len(run.app) <= 0.03


def test_app_clock_runs_ahead_of_the_gateway(run: Run) -> None:
    starts = {r[RID]: epoch(r["START_TIME"]) for r in run.gateway if r["RESPONSE_CODE"] == 200}
    checked = 0
    for record in islice(run.app, 5000):
        start = starts.get(record.get("request_id"))
        if start is None or "latency_ms" not in record:
            continue
        offset = epoch(record["ts"]) - start
        assert APP_CLOCK_SKEW_SECS <= offset <= APP_CLOCK_SKEW_SECS + record["latency_ms"] / 1000 + 0.1
        checked += 1
    assert checked > 1000


def test_normal_error_rates(quiet_run: Run) -> None:
    statuses = Counter(r["RESPONSE_CODE"] // 100 for r in quiet_run.gateway if r["ROUTE_NAME"])
    total = sum(statuses.values())
    assert 0.006 <= statuses[4] / total <= 0.02
    # 5xx include the first attempt of each Envoy retry.
    assert 0.003 <= statuses[5] / total <= 0.015


def test_gateway_rejections_reach_no_app(run: Run) -> None:
    app_ids = {r.get("request_id") for r in run.app}
    rejected = [r for r in run.gateway if r["RESPONSE_CODE_DETAILS"] and (
        r["RESPONSE_CODE_DETAILS"].startswith("jwt_authn_access_denied")
        or r["RESPONSE_FLAGS"] in ("RL", "UAEX", "NR"))]  # fmt: skip
    kinds = Counter((r["RESPONSE_CODE"], r["RESPONSE_FLAGS"]) for r in rejected)
    assert {(401, None), (429, "RL"), (403, "UAEX"), (404, "NR")} <= set(kinds)
    assert not [r for r in rejected if r[RID] in app_ids]
    assert all(r[JWT_JTI] is None for r in rejected if r["RESPONSE_CODE"] == 401)


def test_retries_and_multi_line_requests(run: Run) -> None:
    attempts = defaultdict(list)
    for record in run.gateway:
        attempts[record[RID]].append(record)
    retried = [a for a in attempts.values() if len(a) == 2]
    assert retried
    for first, second in retried:
        assert (first["RESPONSE_CODE"], first["RESPONSE_FLAGS"], second["RESPONSE_CODE"]) == (503, "UF", 200)
        assert first[JWT_JTI] == second[JWT_JTI]
    lines = Counter(r["request_id"] for r in run.app if "request_id" in r)
    assert {1, 2, 3} <= set(lines.values())
    assert max(lines.values()) == 3


def test_app_records_of_proxied_requests(run: Run) -> None:
    for record in islice((r for r in run.app if r["peer"]["spiffe_id"] == GATEWAY_IDENTITY), 3000):
        assert record["peer"]["ip"].startswith("10.0.0.")
        assert record["token"]["sub"] == record["user_id"]
        assert record["token"]["exp"] - record["token"]["iat"] == 900
        if "status" in record:
            assert record["outcome"] == ("success" if record["status"] < 400 else "failure")


def test_no_token_seen_from_two_addresses_but_the_replayed_one(run: Run) -> None:
    addresses = defaultdict(set)
    for record in run.gateway:
        if record[JWT_JTI]:
            addresses[record[JWT_JTI]].add(record[IP])
    shared = {jti for jti, ips in addresses.items() if len(ips) > 1}
    assert shared == {_injection(run, "token_replay").entity_value}


def test_nat_address_carries_many_users_each_with_own_tokens(run: Run) -> None:
    nat = [r for r in run.gateway if r[IP] == NAT_IP and r[JWT_SUB]]
    subs = defaultdict(set)
    for record in nat:
        subs[record[JWT_JTI]].add(record[JWT_SUB])
    assert len({r[JWT_SUB] for r in nat}) >= 20
    assert all(len(owners) == 1 for owners in subs.values())


# -- the plan -----------------------------------------------------------------------------------------


def test_every_rule_has_an_injection_and_a_look_alike(run: Run) -> None:
    by_rule = run.plan.by_rule()
    assert set(by_rule) == set(RULES)
    for rule, parts in by_rule.items():
        assert parts["expected"], rule
        assert parts["benign"], rule
    benign = {(a.rule, a.entity_type, a.entity_value) for a in run.plan.look_alikes}
    attacked = {(i.rule, i.entity_type, i.entity_value) for i in run.plan.injections}
    assert not benign & attacked
    for injection in run.plan.injections:
        assert run.plan.start <= injection.start <= injection.end <= run.plan.end


def test_without_attacks_only_look_alikes(quiet_run: Run) -> None:
    assert quiet_run.plan.injections == ()
    assert quiet_run.plan.look_alikes
    assert {a.entity_value for a in quiet_run.plan.benign("gateway_bypass")} >= {"10.0.0.10", "10.0.0.11"}


def test_alert_checks(run: Run) -> None:
    plan = run.plan
    alerts = [(i.rule, i.entity_type, i.entity_value) for i in plan.expected()]
    assert plan.missing(alerts) == [] and plan.unexpected(alerts) == []
    nat = ("behaviour_outlier", "source.ip", NAT_IP)
    assert plan.unexpected([*alerts, nat]) == [nat]
    assert [a.entity_value for a in plan.false_positives([nat])] == [NAT_IP]
    assert plan.missing(alerts[1:]) == [plan.expected()[0]]


# -- each injection is in the records --------------------------------------------------------------


def _window(records: list[dict], start: float, end: float) -> list[dict]:
    return [r for r in records if start <= epoch(r["START_TIME"]) < end]


def test_5xx_burst_and_its_look_alikes(run: Run) -> None:
    burst = _injection(run, "http_5xx_burst")
    routed = [r for r in _window(run.gateway, burst.start, burst.end) if r["ROUTE_NAME"] == burst.entity_value]
    errors = sum(1 for r in routed if r["RESPONSE_CODE"] >= 500)
    assert errors >= 60
    assert 0.3 <= errors / len(routed) <= 0.5

    ramp = _look_alike(run, "http_5xx_burst", "route")
    ramp = next(a for a in ramp if "ramps" in a.description)
    ramped = [r for r in run.gateway if r["ROUTE_NAME"] == ramp.entity_value]
    peak = _window(ramped, ramp.end - 120.0, ramp.end)
    before = _window(ramped, ramp.start - 600.0, ramp.start)
    assert len(peak) / 120.0 >= 4.0 * len(before) / 600.0
    during = _window(ramped, ramp.start, ramp.end)
    assert sum(1 for r in during if r["RESPONSE_CODE"] >= 500) / len(during) < 0.02

    blip = next(a for a in run.plan.benign("http_5xx_burst") if "blip" in a.description)
    blipped = _window(run.gateway, blip.start, blip.end + 1.0)
    assert sum(1 for r in blipped if r["ROUTE_NAME"] == blip.entity_value and r["RESPONSE_CODE"] == 503) >= 3


def test_credential_stuffing(run: Run) -> None:
    stuffing = _injection(run, "http_4xx_burst")
    assert stuffing.entity_value == STUFFING_IP
    hits = [r for r in run.gateway if r[IP] == STUFFING_IP]
    assert len(hits) == 80
    assert epoch(hits[-1]["START_TIME"]) - epoch(hits[0]["START_TIME"]) <= 41.0
    assert {r["RESPONSE_CODE_DETAILS"] for r in hits} == {"jwt_authn_access_denied{Jwt_verification_fails}"}
    benign = _look_alike(run, "http_4xx_burst", "source.ip")
    slow = [a for a in benign if "deleted invoice" in a.description][0]
    not_found = [epoch(r["START_TIME"]) for r in run.gateway
                 if r[IP] == slow.entity_value and r["RESPONSE_CODE"] == 404]  # fmt: skip
    assert len(not_found) >= 5
    assert min(b - a for a, b in zip(not_found, not_found[1:])) >= 170.0


def test_scanner(run: Run) -> None:
    scan = _injection(run, "behaviour_outlier")
    assert scan.entity_value == SCANNER_IP
    hits = [r for r in run.gateway if r[IP] == SCANNER_IP]
    assert len({r["REQ(X-ENVOY-ORIGINAL-PATH?:PATH)"] for r in hits}) >= 150
    assert epoch(hits[-1]["START_TIME"]) - epoch(hits[0]["START_TIME"]) <= 302.0
    assert sum(1 for r in hits if r["RESPONSE_CODE"] == 404) / len(hits) >= 0.7
    assert any(i.entity_value == SCANNER_IP and not i.required for i in run.plan.allowed("http_4xx_burst"))


def test_token_replay(run: Run) -> None:
    replay = _injection(run, "token_replay")
    uses = [r for r in run.gateway if r[JWT_JTI] == replay.entity_value]
    assert len({r[IP] for r in uses}) == 2
    assert all(r["RESPONSE_CODE"] == 200 and epoch(r["START_TIME"]) < r[JWT_EXP] for r in uses)
    retried = _look_alike(run, "token_replay", "token.jti")[0]
    uses = [r for r in run.gateway if r[JWT_JTI] == retried.entity_value]
    assert len({r[IP] for r in uses}) == 1
    assert len(uses) > len({r[RID] for r in uses})  # one request logged twice: Envoy's retry


def _app_uses(run: Run, jti: str) -> list[dict]:
    return [r for r in run.app if r.get("token", {}).get("jti") == jti and "status" in r]


def test_token_expired_accepted(run: Run) -> None:
    expired = _injection(run, "token_expired_accepted")
    late = [r for r in _app_uses(run, expired.entity_value) if epoch(r["ts"]) > r["token"]["exp"] + 30]
    assert late and all(r["status"] == 200 for r in late)
    assert min(epoch(r["ts"]) - r["token"]["exp"] for r in late) >= 295.0
    edge = _look_alike(run, "token_expired_accepted", "token.jti")[0]
    past = [epoch(r["ts"]) - r["token"]["exp"] for r in _app_uses(run, edge.entity_value)]
    assert max(past) > 0  # used after expiry
    assert max(past) <= 30.0  # but within the allowance


def test_token_revoked_used(run: Run) -> None:
    revoked = dict((r.jti, r.revoked_at) for r in run.plan.revocations)
    used = _injection(run, "token_revoked_used")
    after = [r for r in run.gateway if r[JWT_JTI] == used.entity_value
             and epoch(r["START_TIME"]) >= revoked[used.entity_value]]  # fmt: skip
    assert len(after) == 5 and all(r["RESPONSE_CODE"] == 200 for r in after)
    benign = _look_alike(run, "token_revoked_used", "token.jti")[0]
    uses = [r for r in run.gateway if r[JWT_JTI] == benign.entity_value]
    assert uses and all(epoch(r["START_TIME"]) < revoked[benign.entity_value] for r in uses)
    assert all(epoch(r["ts"]) < revoked[benign.entity_value] for r in _app_uses(run, benign.entity_value))
    assert len(revoked) >= 20


def test_token_cross_org(run: Run) -> None:
    crossing = _injection(run, "token_cross_org")
    served = [r for r in run.app if r.get("user_id") == crossing.entity_value and "status" in r
              and r.get("org_id") != r["token"]["org"]]  # fmt: skip
    assert len(served) == 6 and all(r["status"] == 200 for r in served)
    denied = _look_alike(run, "token_cross_org", "token.sub")[0]
    tried = [r for r in run.app if r.get("user_id") == denied.entity_value and "status" in r
             and r.get("org_id") not in (None, r["token"]["org"])]  # fmt: skip
    assert tried and all(r["status"] == 403 for r in tried)


def test_gateway_bypass(run: Run) -> None:
    gateway_ids = {r[RID] for r in run.gateway}
    by_reason = {i.reason: i for i in run.plan.expected("gateway_bypass")}
    assert set(by_reason) == {"untrusted_peer", "no_request_id", "no_gateway_record"}

    rogue = [r for r in run.app if r["peer"]["ip"] == ROGUE_PEER_IP]
    assert len(rogue) == 12
    assert all(r["peer"]["spiffe_id"] is None and r["request_id"] not in gateway_ids for r in rogue)

    anonymous = [r for r in run.app if r["peer"]["ip"] == NO_REQUEST_ID_IP]
    assert len(anonymous) == 6 and all("request_id" not in r for r in anonymous)

    silent = by_reason["no_gateway_record"]
    assert silent.entity_value == SILENT_POD_IP
    orphans = {r["request_id"] for r in run.app if r["peer"]["ip"] == SILENT_POD_IP
               and r["peer"]["spiffe_id"] == GATEWAY_IDENTITY and r["request_id"] not in gateway_ids}  # fmt: skip
    assert len(orphans) == 15

    probes = [r for r in run.app if r["peer"]["ip"] == KUBELET_IP]
    assert len(probes) >= RUN["duration_secs"] / 10 and all("request_id" not in r for r in probes)
    assert {r["path"] for r in probes} == {"/healthz", "/readyz"}
    internal = [r for r in run.app if r["peer"]["ip"] == RECONCILER_IP]
    assert internal and all(r["peer"]["spiffe_id"] == RECONCILER_IDENTITY and r["request_id"] for r in internal)
    # Every other proxied app line has its gateway line.
    proxied = {r["request_id"] for r in run.app if r["peer"]["spiffe_id"] == GATEWAY_IDENTITY}
    assert proxied - gateway_ids == orphans


def test_the_verdict_wants_each_bypass_alert_of_its_injected_reason(run: Run) -> None:
    """A detection audit: the demo's verdict matched rule and entity only, so a bypass alert of another reason
    counted as the injected one."""
    from gatewatch.demo.run import _verdict_table
    from ingest.alerts import Alert

    def alert(rule: str, entity_type: str, entity_value: str, reason: str | None) -> Alert:
        return Alert(f"{rule}:{entity_value}", rule, "high", entity_type, entity_value, 0.0, 0.0, 1, (), "", reason)

    plan = run.plan
    alerts = [alert(i.rule, i.entity_type, i.entity_value, i.reason) for i in plan.expected()]
    assert _verdict_table(plan, alerts).ok
    bypass = [i for i in plan.expected() if i.reason == "no_gateway_record"]
    assert bypass
    wrong = [alert(a.rule, a.entity_type, a.entity_value, "untrusted_peer" if a.reason == "no_gateway_record"
                   else a.reason) for a in alerts]  # fmt: skip
    assert not _verdict_table(plan, wrong).ok
