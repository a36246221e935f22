"""Seeded gateway + Billing traffic with injected attacks and benign look-alikes.

:func:`generate` yields ``("gateway" | "app", record)`` in *delivery order*:
gateway records in ``START_TIME`` order; app records in the order Billing's
log shipper delivered them, which is time order except for ~2% of lines that
arrive 2-60 s late (out of order in the file). Billing's clock runs 2.5 s
ahead of the gateway's.

How it stays fast and memory-bounded: every traffic source (the background,
the ramp, each incident) yields requests in start-time order; a heap merge
takes the next request; its records, written at or after its start, wait in
a small heap keyed by delivery time until no later request can precede them.
The heap holds a few seconds of traffic plus the late lines (~2% × 60 s).
All randomness is ``random.Random`` seeded per source: the same arguments
give the same records, and an incident's requests never shift another
source's random stream (only the 5xx burst, which changes the outcomes of
background requests on its route, alters the background from its start on).
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect
from collections.abc import Callable, Iterator
from functools import lru_cache
from itertools import accumulate
from operator import itemgetter
from typing import Any

from gatewatch.demo.builder import APP, Builder, Emission, Outcome
from gatewatch.demo.bypass_incidents import (
    plan_late_delivery,
    plan_no_gateway_record,
    plan_no_request_id,
    plan_probes,
    plan_reconciler,
    plan_untrusted_peer,
)
from gatewatch.demo.http_incidents import (
    plan_blip,
    plan_credential_stuffing,
    plan_error_burst,
    plan_nat,
    plan_not_found_client,
    plan_ramp,
    plan_scanner,
)
from gatewatch.demo.plan import MIN_SCENARIO_SECS, Incident, Plan, Source
from gatewatch.demo.scenario import Injection, Scenario
from gatewatch.demo.token_incidents import (
    plan_cross_org,
    plan_cross_org_denied,
    plan_decoy_revocations,
    plan_expired_accepted,
    plan_expired_within_skew,
    plan_replay,
    plan_retry,
    plan_revoked_after_use,
    plan_revoked_used,
)
from gatewatch.demo.world import DEFAULT_START, ROUTE_BY_NAME, ROUTES, Route, User, World, route_path
from gatewatch.errors import ConfigError

LATE_FRACTION = 0.02
MAX_LATE_SECS = 60.0
# Normal outcome rates per request, on every route.
CLIENT_ERROR_RATE = 0.01
SERVER_ERROR_RATE = 0.005
RETRY_RATE = 0.004
_ID_PREFIX = {"invoices": "in", "customers": "cus", "charges": "ch"}


@lru_cache(maxsize=4)
def _world(seed: int, start: float) -> World:
    return World(seed, start)


def scenario(
    seed: int = 7,
    start: float = DEFAULT_START,
    duration_secs: float = 1800.0,
    requests_per_sec: float = 50.0,
    attacks: bool = True,
) -> Scenario:
    """The plan of the run :func:`generate` makes with the same arguments: injections, look-alikes, revocations.

    Needs ``duration_secs >= 600`` for incidents and look-alikes to fit; a shorter
    run (``attacks=False`` only) is background traffic, probes and the reconciler.
    """
    if not (requests_per_sec > 0 and duration_secs > 0):  # NaN too
        raise ConfigError(
            f"demo: --rate and --minutes must be positive (got {requests_per_sec:g} req/s, {duration_secs:g} s)"
        )
    if attacks and duration_secs < MIN_SCENARIO_SECS:
        raise ConfigError(f"demo: the attacks need --minutes {MIN_SCENARIO_SECS / 60:g} or more")
    world = _world(seed, start)
    p = Plan(world, start, duration_secs, requests_per_sec)
    parts: list[Incident] = [plan_probes(p), plan_reconciler(p)]
    ramp = error_burst = None
    if duration_secs >= MIN_SCENARIO_SECS:
        ramp_incident, ramp = plan_ramp(p)
        parts += [
            ramp_incident,
            plan_blip(p),
            plan_not_found_client(p),
            plan_nat(p),
            plan_retry(p),
            plan_expired_within_skew(p),
            plan_revoked_after_use(p),
            plan_decoy_revocations(p),
            plan_cross_org_denied(p),
            plan_late_delivery(p, attacks),
        ]
    if attacks:
        burst_incident, error_burst = plan_error_burst(p)
        parts += [
            burst_incident,
            plan_credential_stuffing(p),
            plan_scanner(p),
            plan_replay(p),
            plan_expired_accepted(p),
            plan_revoked_used(p),
            plan_cross_org(p),
            plan_untrusted_peer(p),
            plan_no_request_id(p),
            plan_no_gateway_record(p),
        ]
    injections = sorted((i for part in parts for i in part.injections), key=lambda i: (i.start, i.rule))
    look_alikes = sorted((a for part in parts for a in part.look_alikes), key=lambda a: (a.rule, a.entity_value))
    revocations = sorted((r for part in parts for r in part.revocations), key=lambda r: (r.revoked_at, r.jti))
    return Scenario(
        seed=seed,
        start=start,
        duration_secs=duration_secs,
        requests_per_sec=requests_per_sec,
        attacks=attacks,
        injections=tuple(injections),
        look_alikes=tuple(look_alikes),
        revocations=tuple(revocations),
        world=world,
        sources=tuple(part.source for part in parts if part.source is not None),
        error_burst=error_burst,
        ramp=ramp,
    )


def injections(
    seed: int = 7,
    start: float = DEFAULT_START,
    duration_secs: float = 1800.0,
    requests_per_sec: float = 50.0,
    attacks: bool = True,
) -> tuple[Injection, ...]:
    """What :func:`generate` with the same arguments injects (see :class:`Scenario` for the rest)."""
    return scenario(seed, start, duration_secs, requests_per_sec, attacks).injections


def generate(
    seed: int = 7,
    start: float = DEFAULT_START,
    duration_secs: float = 1800.0,
    requests_per_sec: float = 50.0,
    attacks: bool = True,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("gateway" | "app", record)`` pairs in delivery order; the same arguments give the same records.

    Gateway records are dicts keyed by Envoy command operators (see
    :data:`~gatewatch.demo.render.GATEWAY_OPERATORS`); app records are Billing's
    JSON objects. Records are fresh dicts: the caller may keep or change them.
    """
    return run(scenario(seed, start, duration_secs, requests_per_sec, attacks))


def run(plan: Scenario) -> Iterator[tuple[str, dict[str, Any]]]:
    """The records of ``plan`` in delivery order (see :func:`generate`)."""
    builder = Builder()
    sources: list[Source] = [_background(plan, builder)]
    if plan.ramp is not None:
        sources.append(_ramp(plan, builder))
    sources += [factory(builder) for factory in plan.sources]
    delivery = random.Random(f"{plan.seed}:delivery")
    late = delivery.random
    pending: list[tuple[float, int, str, dict[str, Any]]] = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    for start, emissions in heapq.merge(*sources, key=itemgetter(0)):
        # Every record still to come is written at or after ``start``.
        while pending and pending[0][0] <= start:
            _, _, kind, record = pop(pending)
            yield kind, record
        for key, kind, record in emissions:
            if kind == APP and late() < LATE_FRACTION:
                # The shipper delivers this line late: after lines written up to 60 s after it.
                key += 2.0 + late() * (MAX_LATE_SECS - 2.0)
            seq += 1
            push(pending, (key, seq, kind, record))
    while pending:
        _, _, kind, record = pop(pending)
        yield kind, record


def _background(plan: Scenario, b: Builder) -> Source:
    world: World = plan.world
    rng = random.Random(f"{plan.seed}:background")
    return _traffic(plan, b, world, rng, plan.requests_per_sec, ROUTES)


def _ramp(plan: Scenario, b: Builder) -> Source:
    """Extra requests on the ramp route: (m(t) - 1) × its normal rate, m rising 1 → 5 then holding."""
    assert plan.ramp is not None
    name, start, ramp_secs, hold_secs = plan.ramp
    route = ROUTE_BY_NAME[name]
    base_rate = plan.requests_per_sec * route.weight
    world: World = plan.world
    rng = random.Random(f"{plan.seed}:ramp")

    def accept(t: float) -> float:
        if t < start or t >= start + ramp_secs + hold_secs:
            return 0.0
        return min(1.0, (t - start) / ramp_secs)  # of the 4 × base_rate extra

    return _traffic(plan, b, world, rng, 4.0 * base_rate, (route,), accept, start, start + ramp_secs + hold_secs)


def _traffic(
    plan: Scenario,
    b: Builder,
    world: World,
    rng: random.Random,
    rate: float,
    routes: tuple[Route, ...],
    accept: Callable[[float], float] | None = None,
    t0: float | None = None,
    t1: float | None = None,
) -> Source:
    """Poisson arrivals at ``rate``, each kept with probability ``accept(t)`` (thinning), over the routes."""
    users = world.users
    n_users = len(users)
    cumulative = list(accumulate(r.weight for r in routes))
    total = cumulative[-1]
    expovariate, rand = rng.expovariate, rng.random
    burst_route, burst_start, burst_end, burst_p = plan.error_burst or ("", 0.0, 0.0, 0.0)
    t = plan.start if t0 is None else t0
    end = plan.end if t1 is None else t1
    while True:
        t += expovariate(rate)
        if t >= end:
            return
        if accept is not None and rand() >= accept(t):
            continue
        # Skewed activity: a few heavy users, a long tail.
        user = users[int(n_users * rand() ** 2)]
        route = routes[bisect(cumulative, rand() * total)] if len(routes) > 1 else routes[0]
        p5xx = burst_p if route.name == burst_route and burst_start <= t < burst_end else SERVER_ERROR_RATE
        yield t, _request(b, rng, world, t, user, route, p5xx)


def _request(
    b: Builder, rng: random.Random, world: World, t: float, user: User, route: Route, p5xx: float
) -> list[Emission]:
    """One background request with the normal mix of outcomes (5xx at ``p5xx``)."""
    r = rng.random()
    outcome = Outcome.OK
    if r < p5xx:
        x = r / p5xx
        if p5xx > 0.1:  # the burst: the payment processor is down
            outcome = Outcome.APP_UNAVAILABLE if x < 0.6 else Outcome.GW_CONNECT_FAILURE
        else:
            outcome = Outcome.APP_ERROR if x < 0.5 else Outcome.GW_CONNECT_FAILURE if x < 0.8 else Outcome.GW_TIMEOUT
    elif r < p5xx + CLIENT_ERROR_RATE:
        x = (r - p5xx) / CLIENT_ERROR_RATE
        if x < 0.35:
            outcome = Outcome.GW_TOKEN_EXPIRED  # the client sent its previous, expired token
        elif x < 0.65:
            outcome = Outcome.APP_NOT_FOUND if route.resource else Outcome.APP_INVALID
        elif x < 0.8:
            outcome = Outcome.APP_INVALID
        elif x < 0.9:
            outcome = Outcome.GW_RATE_LIMITED
        else:
            outcome = Outcome.GW_EXT_AUTHZ_DENIED
    elif r < p5xx + CLIENT_ERROR_RATE + RETRY_RATE:
        outcome = Outcome.RETRIED_OK
    index = world.token_index(user, t)
    token = world.token(user, index - 1 if outcome == Outcome.GW_TOKEN_EXPIRED else index)
    org: str | None = user.org
    if route.resource is None:
        path = route_path(route, None, "open" if rng.random() < 0.7 else "paid")
    elif outcome == Outcome.APP_NOT_FOUND:
        path, org = route_path(route, f"{_ID_PREFIX[route.resource]}_{rng.getrandbits(56):014x}"), None
    else:
        pool = world.resources[user.org][route.resource]
        path = route_path(route, pool[int(rng.random() * len(pool))])
    return b.request(rng, t, user, route, path, org, token, outcome)
