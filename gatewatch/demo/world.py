"""The modeled deployment: gateway pods, Billing routes, orgs, users, client addresses, tokens.

Everything here is derived from the seed once, before any record is made, so
that any part of the generator (background traffic, an incident) can ask
"which token did user u hold at time t?" without shared mutable state: a
user's tokens follow a fixed schedule (one every :data:`TOKEN_LIFETIME_SECS`,
issued as the previous one expires, at a per-user phase), and their ``jti`` is
a hash of the seed, the user and the token's index.

Address plan (documentation ranges, never routable):

- clients: 203.0.113.0/24 and 198.51.100.1–199; 198.51.100.200–254 are kept
  for the named actors of incidents and look-alikes;
- attackers: 192.0.2.0/24;
- cluster: gateway pods 10.0.0.10–12, Billing 10.1.0.20, kubelet 10.2.0.1,
  Prometheus 10.2.0.7, the reconciler 10.3.0.5, rogue pods 10.9.9.x.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timezone

DEFAULT_START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()
"""2026-03-02T09:00:00Z, the default start of generated traffic."""

GATEWAY_PODS = ("10.0.0.10", "10.0.0.11", "10.0.0.12")
GATEWAY_IDENTITY = "spiffe://billing.example/ns/edge/sa/ambassador"
GATEWAY_NETWORK = "10.0.0.0/24"
BILLING_HOST = "10.1.0.20:8080"
BILLING_CLUSTER = "cluster_billing_default"
AUTHORITY = "api.billing.example"
KUBELET_IP = "10.2.0.1"
PROMETHEUS_IP = "10.2.0.7"
RECONCILER_IP = "10.3.0.5"
RECONCILER_IDENTITY = "spiffe://billing.example/ns/ops/sa/reconciler"
ALLOWLIST_PATHS = ("/healthz", "/readyz", "/livez", "/metrics")

TOKEN_LIFETIME_SECS = 900.0
APP_CLOCK_SKEW_SECS = 2.5
"""The Billing host's clock runs ahead of the gateway's by this much."""

NAT_IP = "203.0.113.77"
"""The corporate NAT: every user of :data:`NAT_ORG` comes from this address."""
NAT_ORG = "org-7"

USER_AGENTS = (
    "billing-sdk-python/3.4.1 CPython/3.11.8",
    "billing-sdk-python/3.2.0 CPython/3.10.12",
    "billing-sdk-node/2.9.3 node/20.11.1",
    "billing-sdk-go/1.14.0",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.3 Safari/605.1.15",
    "Zapier",
    "curl/8.5.0",
)


@dataclass(frozen=True, slots=True)
class Route:
    """One Ambassador Mapping in front of Billing."""

    name: str
    method: str
    action: str
    weight: float
    resource: str | None  # the org pool a path id is drawn from: "invoices", "customers", "charges"
    app_lines: int  # lines Billing writes per request (1: one summary line)


ROUTES: tuple[Route, ...] = (
    Route("billing_invoices", "GET", "invoice.read", 0.40, "invoices", 1),
    Route("billing_invoices_list", "GET", "invoice.list", 0.10, None, 1),
    Route("billing_charges", "POST", "charge.create", 0.20, None, 3),
    Route("billing_customers", "GET", "customer.read", 0.25, "customers", 1),
    Route("billing_refunds", "POST", "refund.create", 0.05, "charges", 2),
)
ROUTE_BY_NAME = {r.name: r for r in ROUTES}


def route_path(route: Route, resource_id: str | None, list_status: str = "open") -> str:
    """The request path of ``route`` for a resource id (or a list query)."""
    if route.name == "billing_invoices":
        return f"/v1/invoices/{resource_id}"
    if route.name == "billing_invoices_list":
        return f"/v1/invoices?limit=20&status={list_status}"
    if route.name == "billing_charges":
        return "/v1/charges"
    if route.name == "billing_customers":
        return f"/v1/customers/{resource_id}"
    return f"/v1/charges/{resource_id}/refunds"


def uuid_like(digest: bytes) -> str:
    """A version-4-shaped UUID string from 16 bytes."""
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[digest[8] & 3]}{h[17:20]}-{h[20:32]}"


def uuid_from_bits(bits: int) -> str:
    """A version-4-shaped UUID string from a 128-bit integer (cheap: no hashing)."""
    h = "%032x" % bits
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[bits & 3]}{h[17:20]}-{h[20:32]}"


@dataclass(frozen=True, slots=True)
class Token:
    """A JWT as Envoy's jwt_authn and Billing log it."""

    jti: str
    sub: str
    org: str
    iat: int
    exp: int

    def claims(self) -> dict[str, object]:
        return {"jti": self.jti, "sub": self.sub, "org": self.org, "exp": self.exp, "iat": self.iat}


@dataclass(frozen=True, slots=True)
class User:
    """A Billing API user: ``u-<n>`` of ``org-<m>``, always calling from one address."""

    index: int
    id: str
    org: str
    ip: str
    user_agent: str
    protocol: str
    tls_version: str
    phase_secs: float  # the user's token schedule starts this long before the traffic


class World:
    """Orgs, their resources and users, and the token schedule, all from ``seed``."""

    def __init__(self, seed: int, start: float, org_count: int = 120, user_count: int = 2400) -> None:
        self.seed = seed
        self.start = start
        rng = random.Random(f"{seed}:world")
        self.orgs = [f"org-{n}" for n in range(1, org_count + 1)]
        self.resources: dict[str, dict[str, list[str]]] = {}
        for org in self.orgs:
            self.resources[org] = {
                "invoices": [f"in_{rng.getrandbits(56):014x}" for _ in range(rng.randint(20, 60))],
                "customers": [f"cus_{rng.getrandbits(56):014x}" for _ in range(rng.randint(8, 25))],
                "charges": [f"ch_{rng.getrandbits(56):014x}" for _ in range(rng.randint(10, 30))],
            }
        self.resource_org = {rid: org for org, kinds in self.resources.items() for ids in kinds.values() for rid in ids}

        addresses = [f"203.0.113.{n}" for n in range(1, 255) if f"203.0.113.{n}" != NAT_IP]
        addresses += [f"198.51.100.{n}" for n in range(1, 200)]
        rng.shuffle(addresses)
        # Each org egresses from 1-4 addresses; the NAT org from exactly one, shared by many users.
        org_ips: dict[str, list[str]] = {}
        free = iter(addresses)
        for org in self.orgs:
            org_ips[org] = [NAT_IP] if org == NAT_ORG else [next(free) for _ in range(rng.randint(1, 3))]
        self.client_ips = sorted({ip for ips in org_ips.values() for ip in ips})

        users: list[User] = []
        nat_users = max(40, user_count // 30)
        for index in range(user_count):
            if index < nat_users:
                org = NAT_ORG
            else:
                # Skewed org sizes: a few big customers, a long tail.
                org = self.orgs[int(org_count * rng.random() ** 1.7)]
            ips = org_ips[org]
            users.append(self._user(rng, index, org, ips[index % len(ips)]))
        rng.shuffle(users)  # the traffic-weighted choice below must not favour the NAT org
        self.users = users
        self.org_users: dict[str, list[User]] = {}
        for user in users:
            self.org_users.setdefault(user.org, []).append(user)
        self._token_cache: dict[tuple[str, int], Token] = {}

    def _user(self, rng: random.Random, index: int, org: str, ip: str) -> User:
        agent = USER_AGENTS[rng.randrange(len(USER_AGENTS))]
        browser = agent.startswith("Mozilla")
        return User(
            index=index,
            id=f"u-{index + 1}",
            org=org,
            ip=ip,
            user_agent=agent,
            protocol="HTTP/2" if browser or rng.random() < 0.6 else "HTTP/1.1",
            tls_version="TLSv1.3" if rng.random() < 0.85 else "TLSv1.2",
            phase_secs=rng.random() * TOKEN_LIFETIME_SECS,
        )

    def actor(self, number: int, org: str, ip: str, agent: str = USER_AGENTS[0]) -> User:
        """A named user outside the background population (``u-<number>``), for incidents."""
        rng = random.Random(f"{self.seed}:actor:{number}")
        user = self._user(rng, number - 1, org, ip)
        return User(user.index, user.id, org, ip, agent, user.protocol, user.tls_version, user.phase_secs)

    def token_index(self, user: User, ts: float) -> int:
        """Which of ``user``'s scheduled tokens is current at ``ts``."""
        return int((ts - self.start + user.phase_secs) // TOKEN_LIFETIME_SECS)

    def token(self, user: User, index: int) -> Token:
        """``user``'s ``index``-th scheduled token (0 was issued at or before the start)."""
        key = (user.id, index)
        token = self._token_cache.get(key)
        if token is None:
            iat = int(self.start - user.phase_secs + index * TOKEN_LIFETIME_SECS)
            digest = hashlib.blake2b(f"{self.seed}:{user.id}:{index}".encode(), digest_size=16).digest()
            token = Token(uuid_like(digest), user.id, user.org, iat, iat + int(TOKEN_LIFETIME_SECS))
            if len(self._token_cache) > 200_000:
                self._token_cache.clear()
            self._token_cache[key] = token
        return token

    def token_at(self, user: User, ts: float) -> Token:
        return self.token(user, self.token_index(user, ts))

    def forged_jti(self, label: str) -> str:
        """A jti nobody issued (for decoy revocations and forged tokens)."""
        return uuid_like(hashlib.blake2b(f"{self.seed}:forged:{label}".encode(), digest_size=16).digest())


class Clock:
    """ISO 8601 text for epoch seconds, cached per second (the hot path formats every record)."""

    def __init__(self) -> None:
        self._prefix: dict[int, str] = {}

    def prefix(self, second: int) -> str:
        text = self._prefix.get(second)
        if text is None:
            if len(self._prefix) > 100_000:
                self._prefix.clear()
            text = self._prefix[second] = datetime.fromtimestamp(second, tz=timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S."
            )
        return text

    def millis(self, ts: float) -> str:
        """``2026-03-02T09:00:00.123Z``: Envoy's START_TIME."""
        second = int(ts)
        return f"{self.prefix(second)}{int((ts - second) * 1000):03d}Z"

    def micros(self, ts: float) -> str:
        """``2026-03-02T09:00:02.623451+00:00``: Python's isoformat, as Billing's logger writes."""
        second = int(ts)
        return f"{self.prefix(second)}{int((ts - second) * 1_000_000):06d}+00:00"


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds and ``Z`` (for reports and CSVs)."""
    return Clock().millis(ts)
