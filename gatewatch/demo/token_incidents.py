"""Token incidents: replay, expired-but-accepted, revoked-but-used, cross-org; and their look-alikes.

The actors hold explicit tokens (:meth:`Plan.token`) whose issue time the
incident chooses, so the attack lands inside (or just outside) the token's
lifetime whatever the seed. Times below are on the gateway's clock; Billing
logs them 2.5 s later.
"""

from __future__ import annotations

from dataclasses import replace

from gatewatch.demo.builder import Builder, Emission, Outcome
from gatewatch.demo.plan import REPLAY_IP, Incident, Plan, own_request, sorted_source, times
from gatewatch.demo.scenario import Injection, LookAlike, Revocation
from gatewatch.demo.world import ROUTE_BY_NAME, Token, User, route_path

Requests = list[tuple[float, list[Emission]]]


def _uses(b: Builder, p: Plan, rng_name: str, user: User, token: Token, t0: float, t1: float, gap_secs: float,
          out: Requests) -> None:  # fmt: skip
    """Ordinary requests of ``user`` with ``token`` in ``[t0, t1)``, clipped to the run."""
    rng = p.rng(rng_name)
    for t in times(rng, max(t0, p.start + 1.0), min(t1, p.end - 30.0), gap_secs):
        out.append((t, own_request(b, rng, p.world, user, t, token)))


def plan_replay(p: Plan) -> Incident:
    """A user's token, copied, is used from a foreign address while still valid."""
    victim = p.world.actor(9001, p.org(12), "198.51.100.201")
    start = p.at(0.30, 400.0)
    token = p.token(victim, "replayed", start - 200.0)
    attacker = replace(victim, ip=REPLAY_IP, user_agent="curl/8.5.0", protocol="HTTP/1.1")

    def build(b: Builder) -> Requests:
        out: Requests = []
        _uses(b, p, "replay:victim", victim, token, token.iat + 3.0, start + 400.0, 25.0, out)
        rng = p.rng("replay:attacker")
        t = start - 30.0  # the victim's own use just before the copy appears, whatever the seed
        out.append((t, own_request(b, rng, p.world, victim, t, token)))
        for i in range(10):
            t = start + i * 12.0 + rng.random() * 3.0
            out.append((t, own_request(b, rng, p.world, attacker, t, token)))
        return out

    injection = Injection(
        "token_replay", "token.jti", token.jti, start, start + 123.0,
        f"the token of {victim.id} (used from {victim.ip}) is replayed from {REPLAY_IP} within its lifetime",
    )  # fmt: skip
    return Incident((injection,), source=sorted_source(build))


def plan_retry(p: Plan) -> Incident:
    """Envoy retries a request, then the client re-sends it: one token, one address, several lines."""
    user = p.world.actor(9102, p.org(18), "198.51.100.211")
    t0 = p.at(0.35, 60.0)
    token = p.token(user, "retried", t0 - 300.0)

    def build(b: Builder) -> Requests:
        out: Requests = []
        _uses(b, p, "retry:user", user, token, t0 - 200.0, t0 + 200.0, 20.0, out)
        rng = p.rng("retry")
        out.append((t0, own_request(b, rng, p.world, user, t0, token, Outcome.RETRIED_OK)))
        out.append((t0 + 3.0, own_request(b, rng, p.world, user, t0 + 3.0, token, Outcome.GW_TIMEOUT)))
        out.append((t0 + 20.0, own_request(b, rng, p.world, user, t0 + 20.0, token)))
        return out

    look = LookAlike(
        "token_replay", "token.jti", token.jti, t0, t0 + 20.0,
        "one address, one token: an Envoy retry (503 UF then 200), a 504 and the client's re-send",
    )  # fmt: skip
    return Incident(look_alikes=(look,), source=sorted_source(build))


def plan_expired_accepted(p: Plan) -> Incident:
    """A client keeps its token 5 min past ``exp``; a gateway with 600 s of JWT clock skew lets it in."""
    user = p.world.actor(9002, p.org(23), "198.51.100.202")
    exp = p.at(0.55, 420.0)
    stale = p.token(user, "stale", exp - 900.0)
    fresh = p.token(user, "fresh", exp + 320.0)
    late = (exp + 300.0, exp + 304.5, exp + 317.0)

    def build(b: Builder) -> Requests:
        out: Requests = []
        _uses(b, p, "expired:before", user, stale, exp - 600.0, exp - 10.0, 40.0, out)
        rng = p.rng("expired")
        for t in late:
            out.append((t, own_request(b, rng, p.world, user, t, stale)))
        _uses(b, p, "expired:after", user, fresh, exp + 320.0, exp + 420.0, 30.0, out)
        return out

    injection = Injection(
        "token_expired_accepted", "token.jti", stale.jti, late[0], late[-1],
        f"{user.id}'s token is answered 200 five minutes after it expired (gateway JWT clock skew set to 600 s)",
    )  # fmt: skip
    return Incident((injection,), source=sorted_source(build))


def plan_expired_within_skew(p: Plan) -> Incident:
    """A token used 10 s after ``exp``: inside both Envoy's default 60 s and the detector's 30 s allowance."""
    user = p.world.actor(9103, p.org(31), "198.51.100.212")
    exp = p.at(0.66, 80.0)
    token = p.token(user, "edge", exp - 900.0)
    fresh = p.token(user, "fresh", exp + 12.0)

    def build(b: Builder) -> Requests:
        out: Requests = []
        _uses(b, p, "skew:before", user, token, exp - 300.0, exp - 20.0, 30.0, out)
        rng = p.rng("skew")
        out.append((exp + 10.0, own_request(b, rng, p.world, user, exp + 10.0, token)))
        _uses(b, p, "skew:after", user, fresh, exp + 12.0, exp + 80.0, 20.0, out)
        return out

    look = LookAlike(
        "token_expired_accepted", "token.jti", token.jti, exp + 10.0, exp + 10.0,
        "a token used 10 s after it expired (Billing logs it 12.5 s after: within the 30 s allowance)",
    )  # fmt: skip
    return Incident(look_alikes=(look,), source=sorted_source(build))


def plan_revoked_used(p: Plan) -> Incident:
    """An offboarded user's token is revoked; the still-running client keeps using it, and it works."""
    user = p.world.actor(9003, p.org(44), "198.51.100.203")
    revoked_at = p.at(0.47, 250.0)
    token = p.token(user, "revoked", revoked_at - 300.0)

    def build(b: Builder) -> Requests:
        out: Requests = []
        _uses(b, p, "revoked:before", user, token, revoked_at - 290.0, revoked_at - 20.0, 30.0, out)
        rng = p.rng("revoked")
        for i in range(5):
            t = revoked_at + 60.0 + i * 45.0
            out.append((t, own_request(b, rng, p.world, user, t, token)))
        return out

    injection = Injection(
        "token_revoked_used", "token.jti", token.jti, revoked_at + 60.0, revoked_at + 240.0,
        f"{user.id}'s token, revoked at offboarding, is used (and answered 200) 1-4 min later",
    )  # fmt: skip
    return Incident((injection,), revocations=(Revocation(token.jti, revoked_at),), source=sorted_source(build))


def plan_revoked_after_use(p: Plan) -> Incident:
    """A user logs out (the token is revoked) and continues with a new token: the old one never reappears."""
    user = p.world.actor(9104, p.org(52), "198.51.100.213")
    revoked_at = p.at(0.50, 200.0)
    token = p.token(user, "logged-out", revoked_at - 400.0)
    fresh = p.token(user, "fresh", revoked_at + 60.0)

    def build(b: Builder) -> Requests:
        out: Requests = []
        _uses(b, p, "logout:before", user, token, revoked_at - 390.0, revoked_at - 30.0, 30.0, out)
        _uses(b, p, "logout:after", user, fresh, revoked_at + 60.0, revoked_at + 200.0, 30.0, out)
        return out

    look = LookAlike(
        "token_revoked_used", "token.jti", token.jti, revoked_at - 390.0, revoked_at,
        "a token used only before its revocation (logout), then replaced by a new one",
    )  # fmt: skip
    return Incident(look_alikes=(look,), revocations=(Revocation(token.jti, revoked_at),),
                    source=sorted_source(build))  # fmt: skip


def plan_decoy_revocations(p: Plan, count: int = 20) -> Incident:
    """Revocations of the day before the run: tokens the traffic never carries."""
    rng = p.rng("decoys")
    rows = tuple(
        Revocation(p.world.forged_jti(f"decoy-{i}"), p.start - 86_400.0 + rng.random() * 86_000.0)
        for i in range(count)
    )
    return Incident(revocations=tuple(sorted(rows, key=lambda r: r.revoked_at)))


def plan_cross_org(p: Plan) -> Incident:
    """A user walks another org's customer ids and Billing serves them (an IDOR)."""
    user = p.world.actor(9004, p.org(21), "198.51.100.204")
    victim_org = p.org(35)
    start = p.at(0.70, 200.0)
    route = ROUTE_BY_NAME["billing_customers"]

    def build(b: Builder) -> Requests:
        out: Requests = []
        rng = p.rng("cross_org")
        for t in times(rng, max(p.start + 1.0, start - 120.0), start + 200.0, 20.0):
            out.append((t, own_request(b, rng, p.world, user, t, p.world.token_at(user, t))))
        pool = p.world.resources[victim_org]["customers"]
        for i in range(6):
            t = start + i * 15.0 + rng.random() * 5.0
            path = route_path(route, pool[i % len(pool)])
            out.append((t, b.request(rng, t, user, route, path, victim_org, p.world.token_at(user, t))))
        return out

    injection = Injection(
        "token_cross_org", "token.sub", user.id, start, start + 95.0,
        f"{user.id} of {user.org} reads 6 customers of {victim_org}, answered 200",
    )  # fmt: skip
    return Incident((injection,), source=sorted_source(build))


def plan_cross_org_denied(p: Plan) -> Incident:
    """The same attempt, refused: Billing answers 403."""
    user = p.world.actor(9105, p.org(40), "198.51.100.215")
    other_org = p.org(41)
    start = p.at(0.72, 120.0)
    route = ROUTE_BY_NAME["billing_invoices"]

    def build(b: Builder) -> Requests:
        out: Requests = []
        rng = p.rng("cross_org_denied")
        for t in times(rng, max(p.start + 1.0, start - 120.0), start + 120.0, 20.0):
            out.append((t, own_request(b, rng, p.world, user, t, p.world.token_at(user, t))))
        pool = p.world.resources[other_org]["invoices"]
        for i in range(2):
            t = start + i * 7.0
            path = route_path(route, pool[i])
            token = p.world.token_at(user, t)
            out.append((t, b.request(rng, t, user, route, path, other_org, token, Outcome.APP_FORBIDDEN)))
        return out

    look = LookAlike(
        "token_cross_org", "token.sub", user.id, start, start + 7.0,
        f"{user.id} of {user.org} asks for invoices of {other_org}; Billing answers 403",
    )  # fmt: skip
    return Incident(look_alikes=(look,), source=sorted_source(build))
