"""HTTP-level incidents: a 5xx burst, credential stuffing, a path scanner; and their look-alikes."""

from __future__ import annotations

from gatewatch.demo.builder import Builder, Emission, Outcome
from gatewatch.demo.plan import (
    BLIP_ROUTE,
    BURST_ROUTE,
    RAMP_ROUTE,
    SCANNER_IP,
    STUFFING_IP,
    Incident,
    Plan,
    own_request,
    sorted_source,
    times,
)
from gatewatch.demo.scenario import Injection, LookAlike
from gatewatch.demo.world import NAT_IP, ROUTE_BY_NAME, User, route_path

ErrorBurst = tuple[str, float, float, float]  # (route name, start, end, 5xx probability)
Ramp = tuple[str, float, float, float]  # (route name, start, ramp-up secs, hold secs)


def plan_error_burst(p: Plan) -> tuple[Incident, ErrorBurst]:
    """A payment-processor outage: ~40% of one route's requests fail for 3 minutes.

    The background traffic applies the returned burst; this incident only tops
    the route up to 3 req/s, so the burst stays unmistakable at low rates.
    """
    start = p.at(0.40, 180.0)
    end = start + 180.0
    route = ROUTE_BY_NAME[BURST_ROUTE]
    top_up = max(0.0, 3.0 - p.rate * route.weight)
    world = p.world

    def build(b: Builder) -> list[tuple[float, list[Emission]]]:
        rng = p.rng("error_burst")
        out = []
        for t in times(rng, start, end, 1.0 / top_up):
            user = world.users[int(rng.random() * len(world.users))]
            r = rng.random()
            outcome = Outcome.OK if r >= 0.4 else Outcome.APP_UNAVAILABLE if r < 0.25 else Outcome.GW_CONNECT_FAILURE
            token = world.token_at(user, t)
            out.append((t, b.request(rng, t, user, route, route_path(route, None), user.org, token, outcome)))
        return out

    injection = Injection(
        "http_5xx_burst", "route", BURST_ROUTE, start, end,
        f"{BURST_ROUTE}: the payment processor fails and ~40% of charges end in 5xx for 3 min "
        "(Billing 503s and gateway 503 UF)",
    )  # fmt: skip
    incident = Incident((injection,), source=sorted_source(build) if top_up > 0 else None)
    return incident, (BURST_ROUTE, start, end, 0.4)


def plan_ramp(p: Plan) -> tuple[Incident, Ramp]:
    """A batch sync ramps one route's traffic ×5 over 10 min; its error rate does not move.

    The extra requests are background traffic (same error mix), made by the traffic module.
    """
    ramp = min(600.0, p.duration / 3)
    hold = min(120.0, p.duration / 10)
    start = p.at(0.45, ramp + hold)
    look = LookAlike(
        "http_5xx_burst", "route", RAMP_ROUTE, start, start + ramp + hold,
        f"{RAMP_ROUTE} traffic ramps ×5 over {ramp:g} s and holds {hold:g} s; its error rate stays ~0.5%",
    )  # fmt: skip
    return Incident(look_alikes=(look,)), (RAMP_ROUTE, start, ramp, hold)


def plan_blip(p: Plan) -> Incident:
    t0 = p.at(0.15, 5.0)
    route = ROUTE_BY_NAME[BLIP_ROUTE]
    world = p.world

    def build(b: Builder) -> list[tuple[float, list[Emission]]]:
        rng = p.rng("blip")
        out = []
        for i in range(3):
            t = t0 + i * 0.6 + rng.random() * 0.2
            user = world.users[int(rng.random() * len(world.users))]
            pool = world.resources[user.org]["invoices"]
            path = route_path(route, pool[int(rng.random() * len(pool))])
            token = world.token_at(user, t)
            out.append((t, b.request(rng, t, user, route, path, user.org, token, Outcome.GW_CONNECT_FAILURE)))
        return out

    look = LookAlike("http_5xx_burst", "route", BLIP_ROUTE, t0, t0 + 2.0,
                     f"an isolated blip: 3 gateway 503 UF on {BLIP_ROUTE} within 2 s")  # fmt: skip
    return Incident(look_alikes=(look,), source=sorted_source(build))


def plan_credential_stuffing(p: Plan) -> Incident:
    """One address tries 80 stolen or forged tokens in 40 s; the gateway refuses each with 401."""
    start = p.at(0.55, 40.0)
    route = ROUTE_BY_NAME["billing_invoices_list"]
    bot = User(-1, "u-unknown", "org-unknown", STUFFING_IP, "python-requests/2.31.0", "HTTP/1.1", "TLSv1.2", 0.0)

    def build(b: Builder) -> list[tuple[float, list[Emission]]]:
        rng = p.rng("stuffing")
        out = []
        for i in range(80):
            t = start + i * 0.5 + rng.random() * 0.3
            path = "/v1/invoices?limit=100&status=open"
            out.append((t, b.request(rng, t, bot, route, path, None, None, Outcome.GW_TOKEN_INVALID)))
        return out

    return Incident(
        (
            Injection("http_4xx_burst", "source.ip", STUFFING_IP, start, start + 40.0,
                      "credential stuffing: 80 requests with stolen or forged tokens in 40 s, all 401 "
                      "jwt_authn_access_denied{Jwt_verification_fails}", reason="auth_failures"),
            Injection("behaviour_outlier", "source.ip", STUFFING_IP, start, start + 40.0,
                      "the credential-stuffing client is also unlike its peers (all 401, no valid token)",
                      required=False),
        ),  # fmt: skip
        source=sorted_source(build),
    )


def plan_not_found_client(p: Plan) -> Incident:
    """A client whose integration GETs a deleted invoice every few minutes."""
    world = p.world
    user = world.actor(9101, p.org(15), "198.51.100.210", "billing-sdk-node/2.9.3 node/20.11.1")
    route = ROUTE_BY_NAME["billing_invoices"]

    def build(b: Builder) -> list[tuple[float, list[Emission]]]:
        rng = p.rng("not_found_client")
        out = []
        for t in times(rng, p.start + 5.0, p.end - 30.0, 25.0):
            out.append((t, own_request(b, rng, world, user, t, world.token_at(user, t))))
        t = p.start + 90.0
        while t < p.end - 60.0:
            path = route_path(route, f"in_{rng.getrandbits(56):014x}")
            token = world.token_at(user, t)
            out.append((t, b.request(rng, t, user, route, path, None, token, Outcome.APP_NOT_FOUND)))
            t += 180.0 + rng.random() * 120.0
        return out

    desc = "an integration that GETs a deleted invoice every 3-5 min (one 404 each time)"
    return Incident(
        look_alikes=(
            LookAlike("http_4xx_burst", "source.ip", user.ip, p.start, p.end, desc),
            LookAlike("http_4xx_burst", "token.sub", user.id, p.start, p.end, desc),
        ),
        source=sorted_source(build),
    )


def plan_nat(p: Plan) -> Incident:
    """The corporate NAT is part of the background traffic; it only needs naming.

    Only for the rules whose alerts name an address: token_replay names a token, so a NAT user's
    token alerting would be a row of its own, "UNEXPLAINED", which fails the demo as well."""
    desc = "corporate NAT: many users of one org, each with their own tokens, behind one address"
    return Incident(
        look_alikes=tuple(
            LookAlike(rule, "source.ip", NAT_IP, p.start, p.end, desc)
            for rule in ("http_4xx_burst", "behaviour_outlier")
        )
    )


_SCANNER_WORDS = (
    "/.env", "/.env.bak", "/.git/config", "/.git/HEAD", "/.svn/entries", "/.DS_Store", "/.htaccess",
    "/.aws/credentials", "/.ssh/id_rsa", "/id_rsa", "/web.config", "/config.json", "/config.php.bak",
    "/wp-login.php", "/wp-admin/", "/xmlrpc.php", "/admin", "/admin/login", "/administrator/",
    "/phpmyadmin/", "/pma/", "/server-status", "/server-info", "/actuator", "/actuator/env",
    "/actuator/health", "/actuator/heapdump", "/api", "/api/v1", "/api/v1/users", "/api/v2/users",
    "/api/swagger", "/swagger.json", "/swagger-ui.html", "/openapi.json", "/v2/api-docs", "/v3/api-docs",
    "/graphql", "/graphiql", "/console", "/debug/pprof/", "/debug/vars", "/metrics", "/login",
    "/robots.txt", "/sitemap.xml", "/favicon.ico", "/.well-known/security.txt", "/cgi-bin/test.cgi",
    "/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/solr/admin/info/system", "/jenkins/login",
    "/manager/html", "/owa/auth/logon.aspx", "/Autodiscover/Autodiscover.xml", "/remote/login", "/v1/admin",
    "/v1/users", "/v1/internal/reconcile", "/v1/export", "/v1/debug", "/v1/reports", "/v2/invoices",
    "/v3/invoices", "/backup", "/dump.sql",
)  # fmt: skip


def scanner_paths(count: int = 150) -> list[str]:
    """The scanner's crawl: common probe paths, backup names, then invoice id enumeration."""
    paths = list(_SCANNER_WORDS)
    for name in ("backup", "db", "site", "billing", "www", "data"):
        for ext in (".zip", ".tar.gz", ".sql"):
            paths.append(f"/{name}{ext}")
    for prefix in ("/api/", "/api/v1/", "/internal/"):
        for word in ("users", "admin", "config", "keys", "tokens", "accounts", "debug", "export"):
            paths.append(f"{prefix}{word}")
    paths = list(dict.fromkeys(paths))
    n = 1
    while len(paths) < count:
        # The gateway routes these (Billing's invoice prefix) and refuses them: no token.
        paths.append(f"/v1/invoices/{n}")
        n += 1
    return paths[:count]


def plan_scanner(p: Plan) -> Incident:
    """A scanner crawls ~150 distinct paths in 5 minutes; almost all end in 404 (or 401)."""
    start = p.at(0.10, 300.0)
    paths = scanner_paths()
    scanner = User(-1, "u-unknown", "org-unknown", SCANNER_IP, "Mozilla/5.0 zgrab/0.x", "HTTP/1.1", "TLSv1.2", 0.0)
    routed = ROUTE_BY_NAME["billing_invoices"]

    def build(b: Builder) -> list[tuple[float, list[Emission]]]:
        rng = p.rng("scanner")
        order = list(paths)
        rng.shuffle(order)
        out = []
        for i, path in enumerate(order):
            t = start + i * (300.0 / len(order)) + rng.random() * 1.5
            outcome = Outcome.GW_TOKEN_MISSING if path.startswith("/v1/invoices/") else Outcome.GW_NO_ROUTE
            out.append((t, b.request(rng, t, scanner, routed, path, None, None, outcome)))
        return out

    routed_count = sum(1 for path in paths if path.startswith("/v1/invoices/"))
    return Incident(
        (
            Injection("behaviour_outlier", "source.ip", SCANNER_IP, start, start + 300.0,
                      f"a scanner crawls {len(paths)} distinct paths in 5 min: {len(paths) - routed_count} "
                      f"unrouted (404 NR), {routed_count} invoice ids without a token (401)"),
            Injection("http_4xx_burst", "source.ip", SCANNER_IP, start, start + 300.0,
                      "the scanner's 404s may also count as a 4xx burst (about 30 per minute)",
                      reason="not_found", required=False),
        ),  # fmt: skip
        source=sorted_source(build),
    )
