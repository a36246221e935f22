"""gateway_bypass: Billing served a request that never passed the gateway.

Three ways to tell, each a ``reason``:

- ``untrusted_peer`` (app event, on arrival): the peer that connected to the
  app is not the gateway (mTLS identity, else gateway network). A request
  writes several app lines: its findings share the request id as ``key``, so
  it counts once in the peer's alert.
- ``no_request_id`` (app event, on arrival): a served request without a request id from a
  peer that is not the gateway — Envoy sets ``x-request-id`` on every request
  it proxies, so its absence from a gateway peer is a logging gap, not a bypass.
  Lines without a request id cannot be grouped: one finding per line.
- ``no_gateway_record`` (transaction): an app-only transaction whose peer is the
  gateway, or is not logged: the gateway never wrote a line for the request.
  One with a known non-gateway peer was already reported as ``untrusted_peer``.
  So is an app line more than the slack (``correlate.join_window_secs``, at
  least ``ATTEMPT_SLACK_SECS``) outside every span (start to start + duration)
  the gateway logged for its request id: another request under a reused id.
  Only the join can tell that no gateway line is coming, so this reason waits
  for the transaction to close; the other two go out as their line arrives.

An app line counts as a served request when it has a status, a method or a
path; lines without any ("cache warmed") are the app talking to itself.
Allowlisted paths (health checks) and internal callers are skipped. Without
any configured gateway identity or network the peer-based reasons stay silent
(every peer would look foreign); ``no_gateway_record`` still works.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from detectors.base import Detector, DetectorConfig, Example, Finding, Severity
from detectors.sample import app_event, gateway_event, transaction
from ingest.records import Dataset, Event, Transaction


class GatewayBypass(Detector):
    """A request served by the app without passing the gateway."""

    rule_id = "gateway_bypass"
    counts = "requests"
    severity = Severity.HIGH
    datasets = frozenset({Dataset.APP})

    class Config(DetectorConfig):
        """No thresholds: one served request from a foreign peer is enough."""

    config: Config

    def wants(self, hook: str) -> bool:
        if hook == "observe_arrival" and not self.context.trust.knows_gateway:
            return False  # the peer-based reasons need a gateway identity or network; no_gateway_record does not
        return super().wants(hook)

    def observe_arrival(self, event: Event) -> Iterable[Finding]:
        trust = self.context.trust
        # Nearly every app line is a request the gateway proxied: that test goes first.
        if trust.peer_is_gateway(event) or event.dataset is Dataset.GATEWAY or not _is_served(event):
            return ()
        if not trust.knows_gateway:
            return ()  # no trust.gateway_identities / gateway_networks: every peer would look foreign
        if trust.is_allowlisted_path(event.path) or trust.is_internal_caller(event):
            return ()
        peer = _peer(event)
        if not event.request_id:
            return (self._finding(event, peer, "no_request_id", event.ts, ()),)
        if peer is None:
            return ()  # cannot judge an unlogged peer; the app-only transaction will tell
        return (self._finding(event, peer, "untrusted_peer", event.ts, (event.request_id,)),)

    def observe_transaction(self, txn: Transaction) -> Iterable[Finding]:
        app: Sequence[Event] = txn.app
        if not app:
            return ()
        if txn.gateway:
            # The gateway saw this id, but an app line far outside each of its attempts is another request
            # under a reused id (a red-team trial kept one open for ten minutes of direct calls). Every joined
            # request comes here: lines within the slack of the first attempt's start need no more.
            start = txn.gateway[0].ts
            slack = attempt_slack_secs(self.context.join_window_secs)
            for event in app:
                if not -slack <= event.ts - start <= slack:
                    break
            else:
                return ()
            app = _outside_attempts(app, txn.gateway, slack)
            if not app:
                return ()
        trust = self.context.trust
        served = [e for e in app if _is_served(e)]
        paths = {e.path for e in served if e.path is not None}
        if not served or (paths and all(trust.is_allowlisted_path(path) for path in paths)):
            return ()  # a health check, however many lines it logged
        # A line on an allowlisted path does not excuse the request's other paths: a direct POST /v1/refunds
        # sharing its request id with a /healthz call must still be seen (a red-team trial).
        served = [e for e in served if not trust.is_allowlisted_path(e.path)]
        for event in served:
            if trust.is_internal_caller(event):
                return ()
            if trust.knows_gateway and _peer(event) is not None and not trust.peer_is_gateway(event):
                return ()  # reported as untrusted_peer
        first = served[0]
        ts = first.ts if txn.gateway else txn.first_ts
        return (self._finding(first, _peer(first), "no_gateway_record", ts, (txn.request_id,), bool(txn.gateway)),)

    def _finding(
        self, event: Event, peer: tuple[str, str] | None, reason: str, ts: float, request_ids: tuple[str, ...],
        reused: bool = False,
    ) -> Finding:
        entity_type, entity = peer or ("event.dataset", str(event.dataset))
        request = request_ids[0] if request_ids else "?"
        who = {
            "untrusted_peer": f"from peer {_describe(event)}, which is not the gateway",
            "no_request_id": f"without a request id, which Envoy sets on every request it proxies, "
            f"from peer {_describe(event)}",
            "no_gateway_record": f"from peer {_describe(event)}, but the gateway logged no record of request "
            + (f"{request} at that time: its id was reused" if reused else request),
        }[reason]
        return self.finding(
            entity_type,
            entity,
            ts,
            f"Billing served {event.method or '?'} {event.path or '?'} ({event.status or 'no status'}) {who}.",
            request_ids,
            reason=reason,
            key=request_ids[0] if request_ids else None,
            details={
                "peer_ip": event.source_ip,
                "peer_identity": event.peer_identity,
                "method": event.method,
                "path": event.path,
                "status": event.status,
            },
        )

    @classmethod
    def examples(cls) -> Iterable[Example]:
        gw = {"source_ip": "10.0.0.5", "peer_identity": "spiffe://billing.example/ns/edge/sa/ambassador"}
        rogue = {"source_ip": "10.9.9.9", "peer_identity": "spiffe://billing.example/ns/dev/sa/debug-shell"}
        invoices = {"method": "GET", "path": "/v1/invoices", "status": 200}
        direct = (
            app_event(10, request_id="r-1", **invoices, **rogue),
            app_event(10.2, request_id="r-1", path="/v1/invoices", message="invoices listed", **rogue),
        )
        yield Example(
            "served a request from a peer that is not the gateway",
            (*direct, transaction("r-1", app=direct)),
            alerts=frozenset({"10.9.9.9"}),
            reason="untrusted_peer",
        )
        yield Example(
            "served a request without a request id",
            (app_event(10, method="POST", path="/v1/charges", status=201, source_ip="10.9.9.9"),),
            alerts=frozenset({"10.9.9.9"}),
            reason="no_request_id",
        )
        orphan = app_event(10, request_id="r-2", **invoices, **gw)
        yield Example(
            "gateway peer, but the gateway never logged the request",
            (orphan, transaction("r-2", app=(orphan,))),
            alerts=frozenset({"10.0.0.5"}),
            reason="no_gateway_record",
        )
        probe = app_event(10, request_id="r-3", method="GET", path="/healthz", status=200, source_ip="10.1.2.3")
        yield Example("kubelet health check", (probe, transaction("r-3", app=(probe,))), alerts=frozenset())
        internal = app_event(
            10, request_id="r-4", method="POST", path="/v1/reconcile", status=200,
            source_ip="10.2.0.8", peer_identity="spiffe://billing.example/ns/ops/sa/reconciler",
        )  # fmt: skip
        yield Example("internal reconciler", (internal, transaction("r-4", app=(internal,))), alerts=frozenset())
        twin = app_event(10, request_id="r-7", method="GET", path="/healthz", status=200)
        refund = app_event(10.2, request_id="r-7", method="POST", path="/v1/refunds", status=201)
        yield Example(
            "a direct call sharing its request id with a health check",
            (twin, refund, transaction("r-7", app=(twin, refund))),
            alerts=frozenset({"billing.app"}),
            reason="no_gateway_record",
        )
        seen = gateway_event(10, request_id="r-8", source_ip="203.0.113.7", duration_ms=150.0, **invoices)
        proxied_seen = app_event(10.1, request_id="r-8", **invoices, **gw)
        reused = app_event(200, request_id="r-8", method="POST", path="/v1/refunds", status=201)
        yield Example(
            "a direct call reusing a request id the gateway logged minutes before",
            (seen, proxied_seen, reused, transaction("r-8", (seen,), (proxied_seen, reused))),
            alerts=frozenset({"billing.app"}),
            reason="no_gateway_record",
        )
        slow = gateway_event(10, request_id="r-9", source_ip="203.0.113.7", duration_ms=90_000.0, **invoices)
        streamed = (app_event(10.1, request_id="r-9", **invoices, **gw), app_event(95, request_id="r-9", status=200, **gw))
        yield Example(
            "a 90-second request whose app lines span it", (slow, *streamed, transaction("r-9", (slow,), streamed)),
            alerts=frozenset(),
        )
        probe_lines = (probe, app_event(10.1, request_id="r-3", status=200, message="request done"))
        yield Example(
            "a health check logged in two lines", (*probe_lines, transaction("r-3", app=probe_lines)), alerts=frozenset()
        )
        edge = gateway_event(10, request_id="r-5", source_ip="203.0.113.7", **invoices)
        proxied = app_event(10.05, request_id="r-5", **invoices, **gw)
        yield Example(
            "normal proxied request", (edge, proxied, transaction("r-5", (edge,), (proxied,))), alerts=frozenset()
        )
        refused = gateway_event(10, request_id="r-6", source_ip="203.0.113.7", method="GET", path="/v1/x", status=401)
        yield Example("rejected at the gateway", (refused, transaction("r-6", (refused,))), alerts=frozenset())
        yield Example("app's own log line", (app_event(10, level="info", message="cache warmed"),), alerts=frozenset())


ATTEMPT_SLACK_SECS = 30.0
"""How far outside a gateway attempt's span (start to start + duration) its app lines may be at least: the two
hosts' clocks, and lines an app writes after it answered."""


def attempt_slack_secs(join_window_secs: float) -> float:
    """The slack around a gateway attempt's span: the join window, which the README says to raise for clock
    skew (a 45 s skew under a 90 s window is one request, not a reused id), and at least ATTEMPT_SLACK_SECS."""
    return max(ATTEMPT_SLACK_SECS, join_window_secs)


def _outside_attempts(app: Sequence[Event], attempts: Sequence[Event], slack: float) -> list[Event]:
    """The app lines outside every gateway attempt's span, start to start + duration, give or take ``slack``."""
    spans = []
    for attempt in attempts:
        if attempt.duration_ms is None:
            return []  # a format without %DURATION%: the attempt's end is not known
        spans.append((attempt.ts - slack, attempt.ts + attempt.duration_ms / 1000 + slack))
    # The spans merged and searched, not each line against each span: a request id held open has thousands of
    # attempts and lines (5,000 of each took 1.6 s of CPU).
    starts: list[float] = []
    ends: list[float] = []
    for start, end in sorted(spans):
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return [e for e in app if (i := bisect.bisect_right(starts, e.ts) - 1) < 0 or e.ts > ends[i]]


def _is_served(event: Event) -> bool:
    return event.status is not None or event.method is not None or event.path is not None


def _peer(event: Event) -> tuple[str, str] | None:
    if event.source_ip:
        return ("source.ip", event.source_ip)
    if event.peer_identity:
        return ("peer.identity", event.peer_identity)
    return None


def _describe(event: Event) -> str:
    parts = [p for p in (event.source_ip, event.peer_identity) if p]
    return " / ".join(parts) if parts else "(not logged)"
