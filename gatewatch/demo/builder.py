"""Build the records of one request: the gateway's access-log line(s) and Billing's app lines.

A request is described by who sent it, where, with which token, and how it
ended (an :class:`Outcome`); :meth:`Builder.request` turns that into
*emissions*: ``(true_time, kind, record)`` triples, ``kind`` being
``"gateway"`` or ``"app"``. ``true_time`` is when the line was written by a
perfect clock; the app's own ``ts`` runs :data:`~gatewatch.demo.world.APP_CLOCK_SKEW_SECS`
ahead of it, which is what the pipeline has to cope with.

Randomness comes from the ``rng`` the caller passes, so every traffic source
owns its stream of random numbers and adding one incident does not change the
background traffic.
"""

from __future__ import annotations

import random
from typing import Any

from gatewatch.demo.render import JWT_EXP, JWT_IAT, JWT_JTI, JWT_ORG, JWT_SUB
from gatewatch.demo.world import (
    APP_CLOCK_SKEW_SECS,
    AUTHORITY,
    BILLING_CLUSTER,
    BILLING_HOST,
    GATEWAY_IDENTITY,
    GATEWAY_PODS,
    Clock,
    Route,
    Token,
    User,
    uuid_from_bits,
)

Emission = tuple[float, str, dict[str, Any]]
GATEWAY = "gateway"
APP = "app"


class Outcome:
    """How a request ended, and so which lines exist for it.

    Plain ints, not an Enum: the hot path compares and hashes them per request.
    """

    OK = 0
    APP_NOT_FOUND = 1  # 404 from Billing
    APP_INVALID = 2  # 400 from Billing
    APP_FORBIDDEN = 3  # 403 from Billing: the resource belongs to another org
    APP_ERROR = 4  # 500 from Billing
    APP_UNAVAILABLE = 5  # 503 from Billing: its payment processor is down
    GW_TOKEN_EXPIRED = 10  # 401 at the gateway, no app line
    GW_TOKEN_INVALID = 11
    GW_TOKEN_MISSING = 12
    GW_RATE_LIMITED = 13  # 429, flag RL
    GW_EXT_AUTHZ_DENIED = 14  # 403, flag UAEX
    GW_NO_ROUTE = 15  # 404, flag NR
    GW_CONNECT_FAILURE = 16  # 503, flag UF: Billing never saw it
    GW_TIMEOUT = 17  # 504, flag UT: Billing finished after Envoy gave up
    RETRIED_OK = 18  # a 503 UF attempt, then a 200, one request id


_GATEWAY_REJECTIONS: dict[int, tuple[int, str | None, str, int]] = {
    # outcome: (status, flags, response code details, bytes sent)
    Outcome.GW_TOKEN_EXPIRED: (401, None, "jwt_authn_access_denied{Jwt_is_expired}", 14),
    Outcome.GW_TOKEN_INVALID: (401, None, "jwt_authn_access_denied{Jwt_verification_fails}", 26),
    Outcome.GW_TOKEN_MISSING: (401, None, "jwt_authn_access_denied{Jwt_is_missing}", 14),
    Outcome.GW_RATE_LIMITED: (429, "RL", "request_rate_limited", 0),
    Outcome.GW_EXT_AUTHZ_DENIED: (403, "UAEX", "ext_authz_denied", 0),
    Outcome.GW_NO_ROUTE: (404, "NR", "route_not_found", 0),
}
# Tokens the gateway verified (its payload is in the dynamic metadata) before rejecting.
_VERIFIED_REJECTIONS = frozenset({Outcome.GW_RATE_LIMITED, Outcome.GW_EXT_AUTHZ_DENIED})

_APP_FAILURES: dict[int, tuple[int, str, str]] = {
    Outcome.APP_NOT_FOUND: (404, "warn", "resource not found"),
    Outcome.APP_INVALID: (400, "warn", "validation failed"),
    Outcome.APP_FORBIDDEN: (403, "warn", "forbidden: resource belongs to another organization"),
    Outcome.APP_ERROR: (500, "error", "unhandled error: database statement timeout"),
    Outcome.APP_UNAVAILABLE: (503, "error", "payment processor unavailable"),
}
_SUCCESS_MSG = {
    "invoice.read": "invoice retrieved",
    "invoice.list": "invoices listed",
    "charge.create": "charge created",
    "customer.read": "customer retrieved",
    "refund.create": "refund created",
}
# Typical Billing handler time per action, ms.
_LATENCY_MS = {"invoice.read": 14.0, "invoice.list": 38.0, "charge.create": 140.0, "customer.read": 10.0,
               "refund.create": 110.0}  # fmt: skip
_LOW_128_BITS = (1 << 128) - 1
_GATEWAY_PEERS = {pod: {"ip": pod, "spiffe_id": GATEWAY_IDENTITY} for pod in GATEWAY_PODS}


class Builder:
    """Turns request descriptions into records; owns the cached time formatting."""

    def __init__(self) -> None:
        self.clock = Clock()

    def gateway_record(
        self,
        ts: float,
        rid: str | None,
        method: str,
        path: str,
        status: int,
        client_ip: str,
        port: int,
        user_agent: str | None,
        protocol: str = "HTTP/1.1",
        tls_version: str | None = "TLSv1.3",
        flags: str | None = None,
        details: str | None = "via_upstream",
        bytes_received: int = 0,
        bytes_sent: int = 0,
        duration_ms: int = 0,
        upstream_ms: int | None = None,
        upstream: bool = True,
        cluster: bool = True,
        route: str | None = None,
        token: Token | None = None,
    ) -> dict[str, Any]:
        """One access-log line, keyed by Envoy command operators; ``None`` where Envoy logs ``-``."""
        return {
            "START_TIME": self.clock.millis(ts),
            "REQ(:METHOD)": method,
            "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": path,
            "PROTOCOL": protocol,
            "RESPONSE_CODE": status,
            "RESPONSE_FLAGS": flags,
            "RESPONSE_CODE_DETAILS": details,
            "BYTES_RECEIVED": bytes_received,
            "BYTES_SENT": bytes_sent,
            "DURATION": duration_ms,
            "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)": None if upstream_ms is None else str(upstream_ms),
            "REQ(X-FORWARDED-FOR)": client_ip,
            "REQ(USER-AGENT)": user_agent,
            "REQ(X-REQUEST-ID)": rid,
            "REQ(:AUTHORITY)": AUTHORITY,
            "UPSTREAM_HOST": BILLING_HOST if upstream else None,
            "UPSTREAM_CLUSTER": BILLING_CLUSTER if cluster else None,
            "ROUTE_NAME": route,
            "DOWNSTREAM_REMOTE_ADDRESS": f"{client_ip}:{port}",
            "DOWNSTREAM_PEER_URI_SAN": None,
            "DOWNSTREAM_TLS_VERSION": tls_version,
            JWT_JTI: None if token is None else token.jti,
            JWT_SUB: None if token is None else token.sub,
            JWT_ORG: None if token is None else token.org,
            JWT_EXP: None if token is None else token.exp,
            JWT_IAT: None if token is None else token.iat,
        }

    def app_record(
        self,
        true_ts: float,
        rid: str | None,
        method: str | None,
        path: str | None,
        status: int | None,
        latency_ms: float | None,
        user_id: str | None,
        org_id: str | None,
        action: str | None,
        token: Token | None,
        peer: dict[str, Any],
        level: str,
        msg: str,
    ) -> dict[str, Any]:
        """One Billing JSON line. Top-level keys with no value are left out, as Billing's logger does."""
        record: dict[str, Any] = {"ts": self.clock.micros(true_ts + APP_CLOCK_SKEW_SECS), "level": level, "msg": msg}
        if rid is not None:
            record["request_id"] = rid
        if method is not None:
            record["method"] = method
            record["path"] = path
        if status is not None:
            record["status"] = status
            record["latency_ms"] = latency_ms
            record["outcome"] = "success" if status < 400 else "failure"
        if user_id is not None:
            record["user_id"] = user_id
        if org_id is not None:
            record["org_id"] = org_id
        if action is not None:
            record["action"] = action
        if token is not None:
            record["token"] = {"jti": token.jti, "sub": token.sub, "org": token.org, "exp": token.exp,
                               "iat": token.iat}  # fmt: skip
        record["peer"] = dict(peer)
        return record

    def request(
        self,
        rng: random.Random,
        ts: float,
        user: User,
        route: Route,
        path: str,
        resource_org: str | None,
        token: Token | None,
        outcome: int = Outcome.OK,
        gateway: bool = True,
        pod: str | None = None,
    ) -> list[Emission]:
        """The emissions of one request through the gateway to Billing.

        ``resource_org`` is the org owning the resource (``None`` if it does
        not exist); ``gateway=False`` drops the gateway's line (a request the
        gateway forwarded without logging it).
        """
        rand = rng.random
        bits = rng.getrandbits(152)
        rid = uuid_from_bits(bits & _LOW_128_BITS)
        port = 1024 + ((bits >> 128) % 64000)
        method = route.method
        out: list[Emission] = []
        status, level, msg = 200, "info", _SUCCESS_MSG[route.action]
        org = resource_org
        if outcome:  # the common case (OK, 0) skips all of this
            rejection = _GATEWAY_REJECTIONS.get(outcome)
            if rejection is not None:
                status, flags, details, sent = rejection
                verified = token if outcome in _VERIFIED_REJECTIONS else None
                record = self.gateway_record(
                    ts, rid, method, path, status, user.ip, port, user.user_agent, user.protocol,
                    user.tls_version, flags, details, _body_bytes(rand, method), sent, int(rand() * 2), None,
                    False, False, None if outcome == Outcome.GW_NO_ROUTE else route.name, verified,
                )  # fmt: skip
                return [(ts, GATEWAY, record)]
            if outcome == Outcome.RETRIED_OK or outcome == Outcome.GW_CONNECT_FAILURE:
                # Envoy found no connection to Billing; a retry 25 ms later may go through.
                first_ms = 1 + int(rand() * 3)
                record = self.gateway_record(
                    ts, rid, method, path, 503, user.ip, port, user.user_agent, user.protocol, user.tls_version,
                    "UF", "upstream_reset_before_response_started{connection_failure}", _body_bytes(rand, method),
                    91, first_ms, None, True, True, route.name, token,
                )  # fmt: skip
                if outcome == Outcome.GW_CONNECT_FAILURE:
                    return [(ts, GATEWAY, record)]
                out.append((ts, GATEWAY, record))
                ts += first_ms / 1000.0 + 0.025
                outcome = Outcome.OK
            failure = _APP_FAILURES.get(outcome)
            if failure is not None:
                status, level, msg = failure
            if outcome == Outcome.APP_NOT_FOUND:
                org = None

        # Billing handles it: app lines, then the gateway line with the outcome.
        action = route.action
        latency = _LATENCY_MS[action] * (0.5 + rand())
        if rand() < 0.02:
            latency *= 6.0  # the slow tail: cold caches, lock waits
        if outcome == Outcome.GW_TIMEOUT:
            latency = 15_000.0 + rand() * 400.0
        latency = round(latency, 1)
        received = ts + 0.0008 + rand() * 0.0015
        if org is None and route.resource is None and outcome != Outcome.APP_NOT_FOUND:
            org = user.org  # lists and new charges belong to the caller's org
        pod = pod or GATEWAY_PODS[int(rand() * 3)]
        peer = _GATEWAY_PEERS.get(pod) or {"ip": pod, "spiffe_id": GATEWAY_IDENTITY}
        done = received + latency / 1000.0
        app = self.app_record
        user_id = user.id
        lines = route.app_lines
        if lines >= 3:
            out.append((received, APP, app(received, rid, method, path, None, None, user_id, org, action, token,
                                           peer, "info", "request received")))  # fmt: skip
        if lines >= 2 and status == 200:
            mid = received + latency * 0.0008
            out.append((mid, APP, app(mid, rid, method, path, None, None, user_id, org, action, token, peer,
                                      "info", msg)))  # fmt: skip
            msg = "response sent"
        out.append((done, APP, app(done, rid, method, path, status, latency, user_id, org, action, token, peer,
                                   level, msg)))  # fmt: skip
        if not gateway:
            return out
        if outcome == Outcome.GW_TIMEOUT:
            record = self.gateway_record(
                ts, rid, method, path, 504, user.ip, port, user.user_agent, user.protocol, user.tls_version,
                "UT", "upstream_response_timeout", _body_bytes(rand, method), 24, 15_000, None,
                True, True, route.name, token,
            )  # fmt: skip
        else:
            upstream_ms = int(latency) + 1 + int(rand() * 2)
            record = self.gateway_record(
                ts, rid, method, path, status, user.ip, port, user.user_agent, user.protocol, user.tls_version,
                None, "via_upstream", _body_bytes(rand, method), _response_bytes(rand, action, status),
                upstream_ms + int(rand() * 2), upstream_ms, True, True, route.name, token,
            )  # fmt: skip
        out.append((ts, GATEWAY, record))
        return out

    def app_only(
        self,
        ts: float,
        rid: str | None,
        method: str,
        path: str,
        status: int,
        latency_ms: float,
        peer_ip: str,
        peer_identity: str | None,
        action: str | None,
        msg: str,
        org_id: str | None = None,
        user_id: str | None = None,
        token: Token | None = None,
        level: str = "info",
    ) -> Emission:
        """One summary line of a request that reached Billing without the gateway."""
        peer = {"ip": peer_ip, "spiffe_id": peer_identity}
        done = ts + latency_ms / 1000.0
        record = self.app_record(done, rid, method, path, status, latency_ms, user_id, org_id, action, token, peer,
                                 level, msg)  # fmt: skip
        return (done, APP, record)


def _body_bytes(rand: Any, method: str) -> int:
    return 0 if method == "GET" else 180 + int(rand() * 700)


def _response_bytes(rand: Any, action: str, status: int) -> int:
    if status >= 400:
        return 60 + int(rand() * 80)
    if action == "invoice.list":
        return 4_000 + int(rand() * 12_000)
    return 350 + int(rand() * 2_400)
