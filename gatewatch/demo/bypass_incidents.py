"""Requests that reach Billing without the gateway, and the app-only traffic that is fine.

Attacks (``gateway_bypass``, one per reason):

- ``untrusted_peer``: a pod at 10.9.9.9 calls Billing directly, no mTLS
  identity, with request ids it made up;
- ``no_request_id``: a pod at 10.9.9.8 posts charges without any request id;
- ``no_gateway_record``: requests forwarded by gateway pod 10.0.0.11 (the
  right identity) that the gateway never logged.

Benign app-only traffic: kubelet probes and Prometheus scrapes (allowlisted
paths, no request id), the reconciler (an internal caller with its own
identity), and every gateway pod's late-delivered lines.
"""

from __future__ import annotations

import random

from gatewatch.demo.builder import Builder, Emission
from gatewatch.demo.plan import (
    NO_REQUEST_ID_IP,
    ROGUE_PEER_IP,
    SILENT_POD_IP,
    Incident,
    Plan,
    Source,
    own_request,
    sorted_source,
)
from gatewatch.demo.scenario import Injection, LookAlike
from gatewatch.demo.world import (
    GATEWAY_PODS,
    KUBELET_IP,
    PROMETHEUS_IP,
    RECONCILER_IDENTITY,
    RECONCILER_IP,
    uuid_from_bits,
)

Requests = list[tuple[float, list[Emission]]]


def plan_untrusted_peer(p: Plan) -> Incident:
    start = p.at(0.20, 180.0)
    world = p.world

    def build(b: Builder) -> Requests:
        rng = p.rng("untrusted_peer")
        out: Requests = []
        for i in range(12):
            t = start + i * 15.0 + rng.random() * 5.0
            org = world.orgs[int(rng.random() * len(world.orgs))]
            pool = world.resources[org]["customers"]
            rid = f"00000000-0000-4000-8000-{i + 1:012d}"  # typed by hand, not by Envoy
            path = f"/v1/customers/{pool[int(rng.random() * len(pool))]}"
            latency = round(6.0 + rng.random() * 10.0, 1)
            out.append((t, [b.app_only(t, rid, "GET", path, 200, latency, ROGUE_PEER_IP, None, "customer.read",
                                       "customer retrieved", org_id=org)]))  # fmt: skip
        return out

    injection = Injection(
        "gateway_bypass", "source.ip", ROGUE_PEER_IP, start, start + 185.0,
        f"{ROGUE_PEER_IP} (no mTLS identity) reads 12 customers of random orgs straight from Billing, "
        "with made-up request ids",
        reason="untrusted_peer",
    )  # fmt: skip
    return Incident((injection,), source=sorted_source(build))


def plan_no_request_id(p: Plan) -> Incident:
    start = p.at(0.22, 60.0)
    world = p.world

    def build(b: Builder) -> Requests:
        rng = p.rng("no_request_id")
        out: Requests = []
        for i in range(6):
            t = start + i * 10.0 + rng.random() * 3.0
            org = world.orgs[int(rng.random() * len(world.orgs))]
            latency = round(90.0 + rng.random() * 120.0, 1)
            out.append((t, [b.app_only(t, None, "POST", "/v1/charges", 200, latency, NO_REQUEST_ID_IP, None,
                                       "charge.create", "charge created", org_id=org)]))  # fmt: skip
        return out

    injection = Injection(
        "gateway_bypass", "source.ip", NO_REQUEST_ID_IP, start, start + 63.0,
        f"{NO_REQUEST_ID_IP} (no mTLS identity) creates 6 charges directly, without request ids",
        reason="no_request_id",
    )  # fmt: skip
    return Incident((injection,), source=sorted_source(build))


def plan_no_gateway_record(p: Plan) -> Incident:
    start = p.at(0.78, 120.0)
    user = p.world.actor(9005, p.org(60), "198.51.100.205")

    def build(b: Builder) -> Requests:
        rng = p.rng("no_gateway_record")
        out: Requests = []
        for i in range(15):
            t = start + i * 8.0 + rng.random() * 4.0
            token = p.world.token_at(user, t)
            out.append((t, own_request(b, rng, p.world, user, t, token, pod=SILENT_POD_IP, gateway=False)))
        return out

    injection = Injection(
        "gateway_bypass", "source.ip", SILENT_POD_IP, start, start + 125.0,
        f"15 requests forwarded by gateway pod {SILENT_POD_IP} (gateway identity) that the gateway never logged",
        reason="no_gateway_record",
    )  # fmt: skip
    return Incident((injection,), source=sorted_source(build))


def plan_probes(p: Plan) -> Incident:
    """Kubelet liveness/readiness probes every 10 s and a Prometheus scrape every 15 s: no request id."""

    def source(b: Builder) -> Source:
        rng = random.Random(f"{p.world.seed}:probes")
        # Three periodic series, merged by hand (each is strictly periodic).
        series = [(p.start + 1.3, 10.0, KUBELET_IP, "/healthz"), (p.start + 6.3, 10.0, KUBELET_IP, "/readyz"),
                  (p.start + 4.1, 15.0, PROMETHEUS_IP, "/metrics")]  # fmt: skip
        next_at = [s[0] for s in series]
        while True:
            i = min(range(3), key=next_at.__getitem__)
            t = next_at[i]
            if t >= p.end:
                return
            _, period, ip, path = series[i]
            next_at[i] = t + period
            latency = round(0.2 + rng.random() * (3.0 if path == "/metrics" else 0.4), 1)
            msg = "metrics scraped" if path == "/metrics" else "health check"
            yield t, [b.app_only(t, None, "GET", path, 200, latency, ip, None, None, msg, level="debug")]

    desc = "kubelet probes (/healthz, /readyz) and Prometheus scrapes (/metrics): app-only, no request id"
    return Incident(
        look_alikes=(
            LookAlike("gateway_bypass", "source.ip", KUBELET_IP, p.start, p.end, desc),
            LookAlike("gateway_bypass", "source.ip", PROMETHEUS_IP, p.start, p.end, desc),
        ),
        source=source,
    )


def plan_reconciler(p: Plan) -> Incident:
    """The internal reconciler calls Billing directly every minute, with its own identity and request ids."""
    world = p.world

    def source(b: Builder) -> Source:
        rng = random.Random(f"{world.seed}:reconciler")
        t = p.start + 20.0
        while t < p.end - 5.0:
            emissions: list[Emission] = []
            for i in range(3):
                org = world.orgs[int(rng.random() * len(world.orgs))]
                rid = uuid_from_bits(rng.getrandbits(128))
                latency = round(30.0 + rng.random() * 60.0, 1)
                emissions.append(b.app_only(t + i * 0.15, rid, "GET", f"/v1/invoices?status=open&org={org}", 200,
                                            latency, RECONCILER_IP, RECONCILER_IDENTITY, "invoice.list",
                                            "invoices listed", org_id=org))  # fmt: skip
            yield t, emissions
            t += 60.0

    look = LookAlike("gateway_bypass", "source.ip", RECONCILER_IP, p.start, p.end,
                     "the reconciler (an internal caller) lists open invoices every minute, bypassing the gateway "
                     "by design")  # fmt: skip
    return Incident(look_alikes=(look,), source=source)


def plan_late_delivery(p: Plan, attacks: bool) -> Incident:
    """Name the gateway pods whose (2%) late-delivered app lines must still join their gateway line."""
    pods = [pod for pod in GATEWAY_PODS if not attacks or pod != SILENT_POD_IP]
    return Incident(
        look_alikes=tuple(
            LookAlike("gateway_bypass", "source.ip", pod, p.start, p.end,
                      "~2% of the app lines this pod's requests produced are delivered up to 60 s late")
            for pod in pods
        )  # fmt: skip
    )
