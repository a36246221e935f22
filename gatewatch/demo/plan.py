"""Planning helpers shared by the incident modules.

Each ``plan_*`` function of :mod:`~gatewatch.demo.http_incidents`,
:mod:`~gatewatch.demo.token_incidents` and :mod:`~gatewatch.demo.bypass_incidents`
places one incident on the timeline and returns an :class:`Incident`: what a
detector should (not) report, revocations to list, and a factory for the
incident's own traffic. Actors are named users and addresses outside the
background population (``u-9001``…, 198.51.100.200+, 192.0.2.x), so their
traffic is fully described by the incident and a look-alike can never be
spoiled by a background request.

Every incident's traffic source yields ``(true_time, emissions)`` in time
order; incidents are small (tens to hundreds of requests), so most build a
list and sort it, while the long-running ones (health checks, the reconciler)
stay lazy.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gatewatch.demo.builder import Builder, Emission, Outcome
from gatewatch.demo.scenario import Injection, LookAlike, Revocation
from gatewatch.demo.world import (
    GATEWAY_PODS,
    ROUTE_BY_NAME,
    TOKEN_LIFETIME_SECS,
    Token,
    User,
    World,
    route_path,
    uuid_like,
)

Source = Iterator[tuple[float, list[Emission]]]
SourceFactory = Callable[[Builder], Source]

BURST_ROUTE = "billing_charges"
RAMP_ROUTE = "billing_customers"
BLIP_ROUTE = "billing_invoices"
STUFFING_IP = "192.0.2.45"
REPLAY_IP = "192.0.2.66"
SCANNER_IP = "192.0.2.200"
ROGUE_PEER_IP = "10.9.9.9"
NO_REQUEST_ID_IP = "10.9.9.8"
SILENT_POD_IP = GATEWAY_PODS[1]  # the pod whose forwarded requests have no access-log line
MIN_SCENARIO_SECS = 600.0  # the longest incident (ramp) and look-alikes fit in 10 min


@dataclass(frozen=True)
class Incident:
    """One planned incident or look-alike: its expectations and its traffic."""

    injections: tuple[Injection, ...] = ()
    look_alikes: tuple[LookAlike, ...] = ()
    revocations: tuple[Revocation, ...] = ()
    source: SourceFactory | None = None


class Plan:
    """Shared state of planning: the world, the timeline and deterministic per-incident randomness."""

    def __init__(self, world: World, start: float, duration_secs: float, requests_per_sec: float) -> None:
        self.world = world
        self.start = start
        self.end = start + duration_secs
        self.duration = duration_secs
        self.rate = requests_per_sec

    def at(self, fraction: float, length_secs: float) -> float:
        """A start time ``fraction`` of the way along the run that leaves ``length_secs`` before its end.

        The first and last minute stay quiet: detectors' baselines warm up, and
        records of the last requests still fit in the run.
        """
        room = max(0.0, self.duration - 120.0 - length_secs)
        return self.start + 60.0 + fraction * room

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.world.seed}:incident:{name}")

    def token(self, user: User, label: str, iat: float) -> Token:
        """An explicit token of ``user`` issued at ``iat`` (incident actors hold these)."""
        digest = hashlib.blake2b(f"{self.world.seed}:{user.id}:{label}".encode(), digest_size=16).digest()
        return Token(uuid_like(digest), user.id, user.org, int(iat), int(iat + TOKEN_LIFETIME_SECS))

    def org(self, n: int) -> str:
        return self.world.orgs[(n - 1) % len(self.world.orgs)]


def times(rng: random.Random, t0: float, t1: float, mean_gap_secs: float) -> list[float]:
    """Poisson arrival times in ``[t0, t1)`` with the given mean gap."""
    out: list[float] = []
    t = t0
    while True:
        t += rng.expovariate(1.0 / mean_gap_secs)
        if t >= t1:
            return out
        out.append(t)


ACTOR_ROUTES = (ROUTE_BY_NAME["billing_invoices"], ROUTE_BY_NAME["billing_customers"],
                ROUTE_BY_NAME["billing_invoices_list"])  # fmt: skip


def own_request(
    b: Builder, rng: random.Random, world: World, user: User, t: float, token: Token | None,
    outcome: int = Outcome.OK, pod: str | None = None, gateway: bool = True,
) -> list[Emission]:  # fmt: skip
    """An ordinary read of the user's own org's data."""
    route = ACTOR_ROUTES[int(rng.random() * len(ACTOR_ROUTES))]
    if route.resource is None:
        return b.request(rng, t, user, route, route_path(route, None), user.org, token, outcome, gateway, pod)
    pool = world.resources[user.org][route.resource]
    rid = pool[int(rng.random() * len(pool))]
    return b.request(rng, t, user, route, route_path(route, rid), user.org, token, outcome, gateway, pod)


def sorted_source(build: Callable[[Builder], list[tuple[float, list[Emission]]]]) -> SourceFactory:
    """A source factory from a function building all of an incident's requests at once."""

    def factory(b: Builder) -> Source:
        items = build(b)
        items.sort(key=lambda item: item[0])
        return iter(items)

    return factory


